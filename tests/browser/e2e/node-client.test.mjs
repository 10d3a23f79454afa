// node-client.test.mjs -- holdfast.js outside a browser, against a real
// lighttpd + holdfast serve: Node's fetch, real answers, and a reset when
// the database is replaced under a stored cursor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';

import { subscribe, publish, memoryStore } from '../../../www/holdfast.js';
import { startServer, until } from '../lib/harness.mjs';

const T = { timeout: 60000 };

test('subscribe and publish work in Node against the real server', T, async () => {
  const srv = await startServer();
  const got = [];
  const sub = subscribe(srv.base, { channels: ['node.a', 'node.b'], since: 0, cursorStore: null,
                                    onMessage: (m) => got.push([m.id, m.channel, m.data]) });
  try {
    const ids = [await publish(srv.base, 'node.a', 'text', { token: srv.key }),
                 await publish(srv.base, 'node.b', { json: true }, { key: 'k', token: srv.key }),
                 await publish(srv.base, 'node.a', new Uint8Array([0, 255]), { token: srv.key })];
    assert.ok(await until(() => got.length === 3, 10000), `got ${JSON.stringify(got)}`);
    assert.deepEqual(got, [[ids[0], 'node.a', 'text'], [ids[1], 'node.b', { json: true }],
                           [ids[2], 'node.a', 'AP8=']]);
    const again = await publish(srv.base, 'node.a', 'once', { idempotencyKey: 'same', token: srv.key });
    assert.equal(await publish(srv.base, 'node.a', 'once', { idempotencyKey: 'same', token: srv.key }), again,
                 'a replay answers the original id');
  } finally {
    sub.stop();
    await srv.stop();
  }
});

test('keys on: publishing needs the key, a private channel a token, which holdfast.js sends', T, async () => {
  const srv = await startServer();
  const got = [];
  const statuses = [];
  let asked = 0;
  const denied = subscribe(srv.base, { channels: ['private.n'], cursorStore: null,
                                       onStatus: (s, d) => statuses.push([s, d]) });
  const sub = subscribe(srv.base, { channels: ['private.n'], since: 0, cursorStore: null,
                                    token: () => { asked += 1; return srv.mintToken(['private.*'], 60); },
                                    onMessage: (m) => got.push(m.data) });
  try {
    await assert.rejects(publish(srv.base, 'node.k', 'no key'),
                         (e) => e.status === 401 && e.code === 'unauthorized');
    await assert.rejects(publish(srv.base, 'node.k', 'wrong', { token: 'not-the-key' }),
                         (e) => e.status === 403);
    assert.ok(await until(() => statuses.some(([s]) => s === 'stopped'), 10000));
    const [, detail] = statuses.find(([s]) => s === 'stopped');
    assert.equal(detail.error.status, 401);
    assert.equal(detail.error.code, 'token_missing');
    const id = await publish(srv.base, 'private.n', 'for token holders', { token: srv.key });
    assert.ok(await until(() => got.length === 1, 10000), `got ${JSON.stringify(got)}`);
    assert.deepEqual(got, ['for token holders']);
    assert.ok(asked >= 2, `the token function is asked per request (${asked})`);
    assert.ok(id > 0);
  } finally {
    denied.stop();
    sub.stop();
    await srv.stop();
  }
});

test('a cursor from a replaced database gets onReset, then the new messages', T, async () => {
  const srv = await startServer();
  const store = memoryStore();
  const got = [];
  const resets = [];
  const log = [];   // every request and its answer, for the failure message
  const t0 = Date.now();
  const fetchLogged = async (url, init) => {
    const res = await fetch(url, init);
    const body = await res.clone().text();
    log.push(`${Date.now() - t0}ms ${url.slice(srv.base.length)} -> ${res.status} ${body.slice(0, 120)}`);
    return res;
  };
  const sub = subscribe(srv.base, { channels: ['node.r'], since: 0, cursorStore: store,
                                    backoffBase: 100, backoffMax: 500, fetch: fetchLogged,
                                    onMessage: (m) => got.push(m.data), onReset: (r) => resets.push(r) });
  try {
    for (let i = 1; i <= 5; i++) await publish(srv.base, 'node.r', `old${i}`, { token: srv.key });
    assert.ok(await until(() => got.length === 5, 10000));
    const before = store.get('holdfast:' + srv.base + '|node.r');
    await srv.stopHoldfast();
    for (const suffix of ['', '-wal', '-shm', '-wake', '-limits']) rmSync(srv.db + suffix, { force: true });
    await srv.startHoldfast();
    assert.ok(await until(() => resets.length === 1, 15000), `onReset was called:\n${log.join('\n')}`);
    await publish(srv.base, 'node.r', 'new1', { token: srv.key });
    assert.ok(await until(() => got.length === 6, 10000), `got ${got}:\n${log.join('\n')}`);
    assert.equal(got[5], 'new1', 'the new log\'s first message, though its id is below the old cursor');
    const after = store.get('holdfast:' + srv.base + '|node.r');
    assert.notEqual(after.epoch, before.epoch);
  } finally {
    sub.stop();
    await srv.stop();
  }
});
