// client.test.mjs -- unit tests of www/holdfast.js's loop logic under
// node --test: a scripted fake fetch answers each request, a fake sleep
// records every back-off instead of waiting, and a fixed random makes the
// jitter predictable.  No network, no timers longer than a few ms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import { subscribe, publish, memoryStore, defaultStore, HoldfastError } from '../../../www/holdfast.js';

const WWW = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'www');
const EPOCH = 'e1e1e1e1';

// ---- fakes ----------------------------------------------------------------

function json(status, body, headers = {}) {
  return new Response(typeof body === 'string' ? body : JSON.stringify(body),
                      { status, headers: { 'Content-Type': 'application/json', ...headers } });
}

function answer(cursor, ids = [], extra = {}) {
  const messages = ids.map((id) => ({ id, channel: 'c', time: 1000 + id, type: 'text/plain', data: `m${id}` }));
  return json(200, { cursor, epoch: EPOCH, messages, gap: false, ...extra });
}

/** A promise that never settles until signal aborts (then an AbortError). */
function hang(signal) {
  return new Promise((_, reject) => {
    const fail = () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
    if (signal.aborted) fail();
    else signal.addEventListener('abort', fail);
  });
}

/** fetch that answers with steps in turn: a Response, an Error to reject
 *  with, or a function (url, init) -> either; once they run out it holds
 *  the request open until aborted, like a parked poll. */
function scriptedFetch(steps) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url: new URL(url, 'http://test.invalid'), init });
    let step = steps.shift();
    if (step === undefined) return hang(init.signal);
    if (typeof step === 'function') step = await step(url, init);
    if (step instanceof Error) throw step;
    return step;
  };
  fn.calls = calls;
  return fn;
}

/** Waits (bounded) until cond() holds; fails the test otherwise. */
async function waitFor(cond, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A subscription with every callback recorded. */
function recorded(steps, opts = {}) {
  const rec = { messages: [], gaps: [], resets: [], statuses: [], delays: [] };
  const fetch = scriptedFetch(steps);
  const sub = subscribe(opts.base || '/lp', {
    channels: ['c'],
    cursorStore: memoryStore(),
    fetch,
    random: () => 0.5,
    sleep: async (ms) => { rec.delays.push(ms); },
    onMessage: (m) => rec.messages.push(m.id),
    onGap: (g) => rec.gaps.push(g),
    onReset: (r) => rec.resets.push(r),
    onStatus: (s, d) => rec.statuses.push([s, d]),
    ...opts,
  });
  return { sub, fetch, rec };
}

const statusNames = (rec) => rec.statuses.map(([s]) => s);

// ---- subscribe: delivery and cursors ------------------------------------------

test('delivers each message once in id order, dropping ids at or below the last delivered', async () => {
  const { sub, fetch, rec } = recorded([
    answer(3, [1, 2, 3]),
    answer(5, [2, 3, 4, 5]),     // an answer overlapping what was delivered
    answer(6, [5, 6]),
  ], { last: 10 });
  await waitFor(() => fetch.calls.length === 4, 'the fourth poll');
  sub.stop();
  assert.deepEqual(rec.messages, [1, 2, 3, 4, 5, 6]);
});

test('sends back the cursor and epoch of each answer; first request is a probe', async () => {
  const { sub, fetch } = recorded([answer(3, [1, 2, 3]), answer(9, [9])], { last: 5, timeout: 20 });
  await waitFor(() => fetch.calls.length === 3, 'the third poll');
  sub.stop();
  const q = fetch.calls.map((c) => Object.fromEntries(c.url.searchParams));
  assert.equal(fetch.calls[0].url.pathname, '/lp/sub/c');
  assert.deepEqual(q[0], { last: '5', timeout: '0' });
  assert.deepEqual(q[1], { since: '3', epoch: EPOCH, timeout: '20' });
  assert.deepEqual(q[2], { since: '9', epoch: EPOCH, timeout: '20' });
});

test('several channels go in one path; a trailing slash of the base is ignored', async () => {
  const { sub, fetch } = recorded([], { base: '/lp/holdfast.fcgi/', channels: ['news', 'chat.x'] });
  await waitFor(() => fetch.calls.length === 1, 'the first poll');
  sub.stop();
  assert.equal(fetch.calls[0].url.pathname, '/lp/holdfast.fcgi/sub/news,chat.x');
  assert.throws(() => subscribe('/lp', { channels: ['bad name'], fetch }), TypeError);
});

test('without since or last it starts at the head, learned at once by a probe', async () => {
  const { sub, fetch, rec } = recorded([answer(40), answer(41, [41])]);
  await waitFor(() => fetch.calls.length === 3, 'the third poll');
  sub.stop();
  assert.deepEqual(Object.fromEntries(fetch.calls[0].url.searchParams), { timeout: '0' });
  assert.equal(fetch.calls[1].url.searchParams.get('since'), '40');
  assert.deepEqual(rec.messages, [41]);
  assert.deepEqual(statusNames(rec), ['connecting', 'live', 'stopped']);
});

test('a gap calls onGap with the oldest id held and the cursor we had, then delivers', async () => {
  const { sub, fetch, rec } = recorded([answer(30, [17, 30], { gap: true, oldest: 17 })], { since: 2 });
  await waitFor(() => fetch.calls.length === 2, 'the second poll');
  sub.stop();
  assert.deepEqual(rec.gaps, [{ oldest: 17, cursor: 2 }]);
  assert.deepEqual(rec.messages, [17, 30]);
});

test('a reset calls onReset and follows from the new cursor, with ids restarting', async () => {
  const store = memoryStore();
  store.set('holdfast:/lp|c', { cursor: 100, epoch: 'old0old0' });
  const { sub, fetch, rec } = recorded([
    json(200, { cursor: 4, epoch: 'new1new1', messages: [], gap: false, reset: true, head: 4 }),
    answer(6, [5, 6]),
  ], { cursorStore: store });
  await waitFor(() => fetch.calls.length === 3, 'the third poll');
  sub.stop();
  assert.equal(fetch.calls[0].url.searchParams.get('epoch'), 'old0old0');
  assert.deepEqual(rec.resets, [{ head: 4, cursor: 4 }]);
  const q1 = fetch.calls[1].url.searchParams;
  assert.equal(q1.get('since'), '4');
  assert.equal(q1.get('epoch'), 'new1new1');
  assert.deepEqual(rec.messages, [5, 6], 'ids below the old cursor are delivered after a reset');
});

// ---- subscribe: failures ----------------------------------------------------

test('a 502 or 504 after a good answer is retried at once, a second in a row backs off', async () => {
  const { sub, fetch, rec } = recorded([
    answer(1), json(502, 'bad gateway'), answer(2), json(504, 'gateway timeout'),
    json(504, 'again'), answer(3),
  ]);
  await waitFor(() => fetch.calls.length === 7, 'the seventh poll');
  sub.stop();
  assert.deepEqual(rec.delays, [750], 'only the second 504 in a row waited (attempt 2)');
  const timeouts = fetch.calls.map((c) => c.url.searchParams.get('timeout'));
  assert.deepEqual(timeouts, ['0', '25', '0', '25', '0', '0', '25'], 'each retry is a probe');
  assert.deepEqual(statusNames(rec), ['connecting', 'live', 'reconnecting', 'live', 'stopped']);
});

test('network errors and 5xx back off exponentially with jitter, capped', async () => {
  const failures = [new TypeError('Failed to fetch'), json(500, { error: 'x' }), new TypeError('x'),
                    json(503, 'no retry-after'), new TypeError('x'), new TypeError('x')];
  let r = 0;
  const randoms = [0, 1, 0.5, 0, 1, 0];
  const { sub, fetch, rec } = recorded([...failures, answer(1)], {
    random: () => randoms[r++ % randoms.length], backoffBase: 100, backoffMax: 1000,
  });
  await waitFor(() => fetch.calls.length === 8, 'the eighth poll');
  sub.stop();
  // cap = min(1000, 100 * 2^(n-1)); delay = cap/2 + random*cap/2
  assert.deepEqual(rec.delays, [50, 200, 300, 400, 1000, 500]);
  const reconnecting = rec.statuses.filter(([s]) => s === 'reconnecting');
  assert.equal(reconnecting.length, 6);
  assert.deepEqual(reconnecting.map(([, d]) => d.attempt), [1, 2, 3, 4, 5, 6]);
  assert.equal(reconnecting[1][1].error.status, 500);
  assert.equal(reconnecting[0][1].error.status, 0, 'a network error has status 0');
  assert.equal(statusNames(rec).at(-2), 'live', 'live again after the answer');
});

test('Retry-After is honoured on 503 and 429 (seconds, plus at most 20%)', async () => {
  let random = 0;
  const { sub, fetch, rec } = recorded([
    json(503, { error: 'full' }, { 'Retry-After': '7' }),
    json(429, { error: 'slow down' }, { 'Retry-After': '2' }),
    answer(1),
  ], { random: () => random++ });   // 0 on the first draw, 1 on the second
  await waitFor(() => fetch.calls.length === 4, 'the fourth poll');
  sub.stop();
  assert.deepEqual(rec.delays, [7000, 2400]);
});

test('a request error (4xx) stops the loop and says why', async () => {
  const { fetch, rec } = recorded([json(400, { error: 'bad_channel', detail: 'no' })]);
  await waitFor(() => statusNames(rec).includes('stopped'), 'stopped');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(fetch.calls.length, 1);
  const [, detail] = rec.statuses.at(-1);
  assert.ok(detail.error instanceof HoldfastError);
  assert.equal(detail.error.code, 'bad_channel');
  assert.equal(detail.error.status, 400);
});

test('a token string is sent as a bearer; a 401 with it stops the loop', async () => {
  const { fetch, rec } = recorded([answer(1), json(401, { error: 'token_expired', detail: 'x' })],
                                  { token: 'tok-1', headers: { 'X-A': 'a' } });
  await waitFor(() => statusNames(rec).includes('stopped'), 'stopped');
  assert.equal(fetch.calls.length, 2);
  for (const c of fetch.calls) {
    assert.equal(c.init.headers.Authorization, 'Bearer tok-1');
    assert.equal(c.init.headers['X-A'], 'a');
  }
  assert.equal(rec.statuses.at(-1)[1].error.code, 'token_expired');
});

test('a token function is asked before every request, and a 401 asks it again', async () => {
  let n = 0;
  const { sub, fetch, rec } = recorded(
    [answer(1), json(401, { error: 'token_expired', detail: 'x' }), answer(2, [2])],
    { token: async () => `tok-${++n}` });
  await waitFor(() => rec.messages.length === 1, 'the message after the fresh token');
  sub.stop();
  assert.deepEqual(fetch.calls.slice(0, 3).map((c) => c.init.headers.Authorization),
                   ['Bearer tok-1', 'Bearer tok-2', 'Bearer tok-3']);
  assert.ok(statusNames(rec).includes('reconnecting'), 'the 401 backed off');
  assert.equal(rec.delays.length, 1);
});

test('an answer that is not a subscribe answer is a failure, not a crash', async () => {
  const { sub, fetch, rec } = recorded([json(200, '<html>proxy</html>'), json(200, { cursor: 'x' }),
                                        answer(1, [1])]);
  await waitFor(() => fetch.calls.length === 4, 'the fourth poll');
  sub.stop();
  assert.equal(rec.delays.length, 2);
  assert.deepEqual(rec.messages, [1]);
});

// ---- subscribe: stopping ----------------------------------------------------

test('stop() aborts the request in flight and no callback fires after it', async () => {
  let late;
  const { sub, fetch, rec } = recorded([
    answer(1),
    (url, init) => new Promise((resolve) => { late = () => resolve(answer(9, [5, 9])); }), // ignores abort
  ]);
  await waitFor(() => fetch.calls.length === 2, 'the second poll');
  sub.stop();
  assert.equal(fetch.calls[1].init.signal.aborted, true, 'the poll in flight was aborted');
  late();
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(rec.messages, []);
  assert.deepEqual(statusNames(rec), ['connecting', 'live', 'stopped']);
  assert.equal(fetch.calls.length, 2, 'no request after stop');
  sub.stop();
  assert.equal(statusNames(rec).length, 3, 'a second stop() is silent');
});

test('stop() from inside onMessage ends delivery of the same answer', async () => {
  const seen = [];
  const fetch = scriptedFetch([answer(3, [1, 2, 3])]);
  const sub = subscribe('/lp', {
    channels: 'c', since: 0, cursorStore: null, fetch,
    onMessage: (m) => { seen.push(m.id); if (m.id === 2) sub.stop(); },
  });
  await waitFor(() => seen.length >= 2, 'two messages');
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(seen, [1, 2]);
  assert.equal(fetch.calls.length, 1);
});

test('stop() during a back-off ends the wait and sends nothing more', async () => {
  const fetch = scriptedFetch([new TypeError('down')]);
  const statuses = [];
  const sub = subscribe('/lp', {
    channels: 'c', cursorStore: null, fetch, backoffBase: 60000,
    onStatus: (s) => statuses.push(s),
  });
  await waitFor(() => statuses.includes('reconnecting'), 'reconnecting');
  const t0 = Date.now();
  sub.stop();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(Date.now() - t0 < 1000);
  assert.deepEqual(statuses, ['connecting', 'reconnecting', 'stopped']);
  assert.equal(fetch.calls.length, 1);
});

test('going offline drops the held poll at once; coming online ends the back-off', async () => {
  const events = new EventTarget();
  globalThis.addEventListener = events.addEventListener.bind(events);
  globalThis.removeEventListener = events.removeEventListener.bind(events);
  try {
    const waits = [];
    const { sub, fetch, rec } = recorded([answer(1)], {
      sleep: (ms, signal) => new Promise((resolve) => {   // waits until woken
        waits.push(ms);
        signal.addEventListener('abort', resolve);
      }),
    });
    await waitFor(() => fetch.calls.length === 2, 'the held poll');
    events.dispatchEvent(new Event('offline'));
    await waitFor(() => statusNames(rec).includes('reconnecting'), 'reconnecting');
    assert.equal(fetch.calls[1].init.signal.aborted, true);
    assert.equal(fetch.calls.length, 2, 'waiting, not polling');
    events.dispatchEvent(new Event('online'));
    await waitFor(() => fetch.calls.length === 3, 'a poll once online');
    sub.stop();
    assert.equal(waits.length, 1);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

// ---- subscribe: the cursor store -------------------------------------------

test('the store keeps {cursor, epoch} per channel set and a new subscribe resumes from it', async () => {
  const store = memoryStore();
  const first = recorded([answer(3, [1, 2, 3]), answer(7, [7])],
                         { cursorStore: store, channels: ['b', 'a'], last: 50 });
  await waitFor(() => first.fetch.calls.length === 3, 'the third poll');
  first.sub.stop();
  assert.deepEqual(store.get('holdfast:/lp|a,b'), { cursor: 7, epoch: EPOCH });

  const second = recorded([answer(8, [7, 8])], { cursorStore: store, channels: ['a', 'b'], last: 50 });
  await waitFor(() => second.fetch.calls.length === 2, 'the resumed poll');
  second.sub.stop();
  const q = Object.fromEntries(second.fetch.calls[0].url.searchParams);
  assert.deepEqual(q, { since: '7', epoch: EPOCH, timeout: '0' }, 'stored cursor wins over last');
  assert.deepEqual(second.rec.messages, [8], 'nothing at or below the stored cursor again');
});

test('an async store and a corrupt stored value are handled', async () => {
  const values = new Map([['holdfast:/lp|c', { cursor: 'junk' }]]);
  const store = { get: async (k) => values.get(k), set: async (k, v) => { values.set(k, v); } };
  const { sub, fetch } = recorded([answer(5, [5])], { cursorStore: store, since: 4 });
  await waitFor(() => fetch.calls.length === 2, 'the second poll');
  sub.stop();
  assert.equal(fetch.calls[0].url.searchParams.get('since'), '4', 'a corrupt value is ignored');
  assert.deepEqual(values.get('holdfast:/lp|c'), { cursor: 5, epoch: EPOCH });
});

test('the default store uses localStorage when usable and memory when not', () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'localStorage');
  try {
    const data = new Map();
    globalThis.localStorage = {
      getItem: (k) => (data.has(k) ? data.get(k) : null),
      setItem: (k, v) => data.set(k, String(v)),
      removeItem: (k) => data.delete(k),
    };
    defaultStore().set('k', { cursor: 1, epoch: 'e' });
    assert.equal(data.get('k'), '{"cursor":1,"epoch":"e"}');
    Object.defineProperty(globalThis, 'localStorage', {
      configurable: true, get() { throw new Error('SecurityError'); },
    });
    const s = defaultStore();
    s.set('k', { cursor: 2, epoch: 'e' });
    assert.deepEqual(s.get('k'), { cursor: 2, epoch: 'e' });
  } finally {
    delete globalThis.localStorage;
    if (saved) Object.defineProperty(globalThis, 'localStorage', saved);
  }
});

// ---- publish ----------------------------------------------------------------

test('publish retries network errors and 5xx with the same idempotency key', async () => {
  const delays = [];
  const fetch = scriptedFetch([new TypeError('reset'), json(502, 'bad gateway'),
                               json(200, { id: 42, channel: 'news', time: 1 })]);
  const id = await publish('/lp', 'news', { headline: 'hi' }, {
    fetch, random: () => 0, sleep: async (ms) => { delays.push(ms); },
  });
  assert.equal(id, 42);
  assert.equal(fetch.calls.length, 3);
  const keys = fetch.calls.map((c) => c.init.headers['Idempotency-Key']);
  assert.ok(keys[0] && keys[0].length >= 16, 'a key was generated');
  assert.deepEqual(keys, [keys[0], keys[0], keys[0]]);
  assert.equal(fetch.calls[0].url.pathname, '/lp/pub/news');
  assert.equal(fetch.calls[0].init.method, 'POST');
  assert.equal(fetch.calls[0].init.headers['Content-Type'], 'application/json');
  assert.equal(fetch.calls[0].init.body, '{"headline":"hi"}');
  assert.deepEqual(delays, [125, 250]);
});

test('publish sends strings as UTF-8 text, with the given key, type and headers', async () => {
  const fetch = scriptedFetch([json(201, { id: 1 }), json(201, { id: 2 })]);
  await publish('/lp/', 'chat', 'héllo', {
    fetch, idempotencyKey: 'k1', key: 'cpu', headers: { Authorization: 'Bearer s' },
  });
  await publish('/lp', 'chat', '<p/>', { fetch, type: 'text/html' });
  const h = fetch.calls[0].init.headers;
  assert.equal(h['Content-Type'], 'text/plain;charset=utf-8');
  assert.equal(h['Idempotency-Key'], 'k1');
  assert.equal(h['Holdfast-Key'], 'cpu');
  assert.equal(h.Authorization, 'Bearer s');
  assert.equal(fetch.calls[0].init.body, 'héllo');
  assert.equal(fetch.calls[1].init.headers['Content-Type'], 'text/html');
  assert.notEqual(fetch.calls[1].init.headers['Idempotency-Key'], 'k1');
});

test('publish sends options.token as a bearer, asking a function on every attempt', async () => {
  const fetch = scriptedFetch([json(201, { id: 1 }), json(503, { error: 'busy' }), json(201, { id: 2 })]);
  await publish('/lp', 'c', 'x', { fetch, token: 'the-key' });
  let n = 0;
  await publish('/lp', 'c', 'y', { fetch, token: () => `t${++n}`, sleep: async () => {} });
  assert.deepEqual(fetch.calls.map((c) => c.init.headers.Authorization),
                   ['Bearer the-key', 'Bearer t1', 'Bearer t2']);
  assert.equal(fetch.calls[1].init.headers['Idempotency-Key'],
               fetch.calls[2].init.headers['Idempotency-Key'], 'the retry keeps its key');
});

test('publish does not retry a request error and gives up after its retries', async () => {
  const bad = scriptedFetch([json(400, { error: 'invalid_json', detail: 'line 1' })]);
  await assert.rejects(publish('/lp', 'c', 'x', { fetch: bad }),
                       (e) => e instanceof HoldfastError && e.code === 'invalid_json' && e.status === 400);
  assert.equal(bad.calls.length, 1);
  const down = scriptedFetch([new TypeError('a'), new TypeError('b'), new TypeError('c')]);
  await assert.rejects(publish('/lp', 'c', 'x', { fetch: down, retries: 2, sleep: async () => {} }),
                       (e) => e instanceof HoldfastError && e.status === 0);
  assert.equal(down.calls.length, 3);
});

test('publish honours Retry-After', async () => {
  const delays = [];
  const fetch = scriptedFetch([json(503, { error: 'full' }, { 'Retry-After': '3' }), json(201, { id: 5 })]);
  const id = await publish('/lp', 'c', 'x', { fetch, random: () => 0, sleep: async (ms) => { delays.push(ms); } });
  assert.equal(id, 5);
  assert.deepEqual(delays, [3000]);
});

// ---- the classic-script build -------------------------------------------------

// ---- the event-stream transport, with a fake EventSource -------------------

/** A fake EventSource class recording each instance; the test drives them. */
function fakeEventSource() {
  const made = [];
  class FakeES {
    constructor(url, init) {
      this.url = new URL(url, 'http://test.invalid');
      this.init = init;
      this.closed = false;
      this.listeners = {};
      made.push(this);
    }
    addEventListener(name, fn) { (this.listeners[name] ||= []).push(fn); }
    close() { this.closed = true; }
    open() { this.onopen?.({}); }
    message(m) { this.onmessage?.({ data: JSON.stringify(m) }); }
    named(name, data) { for (const fn of this.listeners[name] || []) fn({ data: JSON.stringify(data) }); }
    fail() { this.onerror?.({}); }
  }
  FakeES.made = made;
  return FakeES;
}

function msg(id) {
  return { id, channel: 'c', time: 1000 + id, type: 'text/plain', data: `m${id}` };
}

function streamed(ES, opts = {}) {
  const rec = { messages: [], gaps: [], resets: [], statuses: [], delays: [] };
  const sub = subscribe('/lp', {
    channels: ['c'],
    cursorStore: opts.store || memoryStore(),
    transport: 'auto',
    EventSource: ES,
    random: () => 0.5,
    sleep: async (ms) => { rec.delays.push(ms); },
    onMessage: (m) => rec.messages.push(m.id),
    onGap: (g) => rec.gaps.push(g),
    onReset: (r) => rec.resets.push(r),
    onStatus: (s) => rec.statuses.push(s),
    ...opts,
  });
  return { sub, rec };
}

test('sse: events are delivered once in id order, the cursor stored, a new stream resumes from it', async () => {
  const ES = fakeEventSource();
  const store = memoryStore();
  const { sub, rec } = streamed(ES, { store, since: 0 });
  await waitFor(() => ES.made.length === 1, 'a stream');
  const es = ES.made[0];
  assert.equal(es.url.pathname, '/lp/sub/c');
  assert.equal(es.url.searchParams.get('since'), '0');
  es.open();
  assert.equal(sub.status, 'live');
  for (const id of [3, 5, 5, 4, 8]) es.message(msg(id));
  assert.deepEqual(rec.messages, [3, 5, 8]);
  assert.equal(sub.position.cursor, 8);
  es.fail(); // sse_max ended it, or a worker restarted: a new stream at once, from 8
  await waitFor(() => ES.made.length === 2, 'a second stream');
  assert.ok(es.closed, 'the first EventSource is closed, never left to reconnect itself');
  assert.equal(ES.made[1].url.searchParams.get('since'), '8');
  assert.deepEqual(rec.delays, []);
  sub.stop();
  assert.ok(ES.made[1].closed);
  const again = streamed(ES, { store });
  await waitFor(() => ES.made.length === 3, 'a resumed stream');
  assert.equal(ES.made[2].url.searchParams.get('since'), '8');
  again.sub.stop();
});

test('sse: gap and reset events reach onGap and onReset; a reset restarts ids', async () => {
  const ES = fakeEventSource();
  const { sub, rec } = streamed(ES, { since: 10 });
  await waitFor(() => ES.made.length === 1, 'a stream');
  const es = ES.made[0];
  es.open();
  es.named('gap', { oldest: 15 });
  es.message(msg(15));
  es.named('reset', { epoch: 'e2', head: 3, cursor: 3 });
  es.message(msg(2));
  es.message(msg(4));
  assert.deepEqual(rec.gaps, [{ oldest: 15, cursor: 10 }]);
  assert.deepEqual(rec.resets, [{ head: 3, cursor: 3 }]);
  assert.deepEqual(rec.messages, [15, 4]);
  assert.deepEqual(sub.position, { cursor: 4, epoch: 'e2' });
  sub.stop();
});

test('sse: a stream that never opens (406 with sse = off) falls back to long-poll from the same cursor', async () => {
  const ES = fakeEventSource();
  const fetch = scriptedFetch([answer(7, [7])]);
  const rec = { messages: [] };
  const sub = subscribe('/lp', {
    channels: ['c'], cursorStore: memoryStore(), since: 6, transport: 'sse', EventSource: ES,
    fetch, sleep: async () => {}, onMessage: (m) => rec.messages.push(m.id),
  });
  await waitFor(() => ES.made.length === 1, 'a stream');
  ES.made[0].fail();
  await waitFor(() => fetch.calls.length >= 1, 'a long-poll');
  assert.equal(fetch.calls[0].url.searchParams.get('since'), '6');
  await waitFor(() => rec.messages.length === 1, 'the message');
  assert.equal(ES.made.length, 1, 'no second stream');
  sub.stop();
});

test('sse: a stream that is held back (no open within sseOpenTimeout) falls back too', async () => {
  const ES = fakeEventSource();
  const fetch = scriptedFetch([]);
  const sub = subscribe('/lp', {
    channels: ['c'], cursorStore: memoryStore(), transport: 'sse', EventSource: ES,
    sseOpenTimeout: 20, fetch, sleep: async () => {},
  });
  await waitFor(() => fetch.calls.length >= 1, 'a long-poll after the open timeout');
  assert.ok(ES.made[0].closed);
  sub.stop();
});

test('sse: auto stays on long-poll with a token function, custom headers or no EventSource', async () => {
  const ES = fakeEventSource();
  // (a token function keeps even transport 'sse' on long-poll: no way to send it)
  for (const extra of [{ token: () => 't', transport: 'sse' }, { headers: { 'X-A': '1' } },
                       { EventSource: undefined, transport: 'sse' }, {}]) {
    const sub = subscribe('/lp', { channels: ['c'], cursorStore: memoryStore(), transport: 'auto',
                                   EventSource: ES, fetch: scriptedFetch([]), ...extra });
    await new Promise((r) => setTimeout(r, 20));
    sub.stop();
  }
  assert.equal(ES.made.length, 0);
  const sub = subscribe('/lp', { channels: ['c'], cursorStore: memoryStore(), transport: 'auto',
                                 EventSource: ES });
  await waitFor(() => ES.made.length === 1, 'a stream');
  sub.stop();
  assert.equal(ES.made.length, 1, 'and uses an event stream otherwise');
});

test('sse: a token string goes as ?token= (EventSource sends no headers)', async () => {
  const ES = fakeEventSource();
  const { sub } = streamed(ES, { token: 'abc' });
  await waitFor(() => ES.made.length === 1, 'a stream');
  assert.equal(ES.made[0].url.searchParams.get('token'), 'abc');
  sub.stop();
});

test('holdfast.umd.js is generated from holdfast.js and defines a global', () => {
  execFileSync(process.execPath, [join(WWW, 'build-umd.mjs'), '--check'], { stdio: 'pipe' });
  const sandbox = { URLSearchParams, AbortController, setTimeout, clearTimeout };
  sandbox.globalThis = sandbox;
  vm.runInNewContext(readFileSync(join(WWW, 'holdfast.umd.js'), 'utf8'), sandbox);
  assert.equal(typeof sandbox.holdfast.subscribe, 'function');
  assert.equal(typeof sandbox.holdfast.publish, 'function');
  assert.equal(typeof sandbox.holdfast.HoldfastError, 'function');
});
