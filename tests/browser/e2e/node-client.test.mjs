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
    const ids = [await publish(srv.base, 'node.a', 'text'),
                 await publish(srv.base, 'node.b', { json: true }, { key: 'k' }),
                 await publish(srv.base, 'node.a', new Uint8Array([0, 255]))];
    assert.ok(await until(() => got.length === 3, 10000), `got ${JSON.stringify(got)}`);
    assert.deepEqual(got, [[ids[0], 'node.a', 'text'], [ids[1], 'node.b', { json: true }],
                           [ids[2], 'node.a', 'AP8=']]);
    const again = await publish(srv.base, 'node.a', 'once', { idempotencyKey: 'same' });
    assert.equal(await publish(srv.base, 'node.a', 'once', { idempotencyKey: 'same' }), again,
                 'a replay answers the original id');
  } finally {
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
    for (let i = 1; i <= 5; i++) await publish(srv.base, 'node.r', `old${i}`);
    assert.ok(await until(() => got.length === 5, 10000));
    const before = store.get('holdfast:' + srv.base + '|node.r');
    await srv.stopHoldfast();
    for (const suffix of ['', '-wal', '-shm', '-wake']) rmSync(srv.db + suffix, { force: true });
    await srv.startHoldfast();
    assert.ok(await until(() => resets.length === 1, 15000), `onReset was called:\n${log.join('\n')}`);
    await publish(srv.base, 'node.r', 'new1');
    assert.ok(await until(() => got.length === 6, 10000), `got ${got}:\n${log.join('\n')}`);
    assert.equal(got[5], 'new1', 'the new log\'s first message, though its id is below the old cursor');
    const after = store.get('holdfast:' + srv.base + '|node.r');
    assert.notEqual(after.epoch, before.epoch);
  } finally {
    sub.stop();
    await srv.stop();
  }
});
