// tests/conformance/client.test.mjs -- @durable-streams/client (pinned in
// package.json) against holdfast behind a real web server, through the
// client's public API only; plus the cross-surface contract: a stream NAME is
// the holdfast channel NAME: /sub reads what the client appended, and what
// /pub publishes is stream data the client reads.
//
//   DS_BASE_URL=http://127.0.0.1:PORT/lp node --test client.test.mjs
//
// (run.sh starts the nginx deployment and sets DS_BASE_URL.)  Every wait is
// bounded; every stream is cancelled at the end of its test.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DurableStream, stream } from '@durable-streams/client'

const base = process.env.DS_BASE_URL
if (!base) throw new Error('DS_BASE_URL (e.g. http://127.0.0.1:8080/lp) is required')
const TIMEOUT = 20_000

let serial = 0
// A stream name unique to this run (names: [A-Za-z0-9._:@-]{1,120}).
const fresh = (what) => `interop-${what}-${process.pid}-${Date.now()}-${++serial}`
const urlOf = (name) => `${base}/v1/stream/${name}`
const MESSAGES = [
  { n: 1, text: 'one', tags: ['a'] },
  { n: 2, text: 'two: ünïcödé ✓', nested: { ok: true } },
  { n: 3, text: 'three', nothing: null },
]

// fetch that records each request's URL (which live mode the client used)
// and whether the request had been sent when the caller looks.
function recordingFetch() {
  const calls = []
  const f = (input, init) => {
    calls.push(String(input instanceof Request ? input.url : input))
    return fetch(input, init)
  }
  return { calls, fetch: f }
}
const liveOf = (u) => new URL(u).searchParams.get('live')

function within(ms, promise, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
async function until(cond, ms, what) {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(20)
  }
}

async function createJson(name) {
  const handle = await DurableStream.create({
    url: urlOf(name),
    contentType: 'application/json',
    batching: false,
  })
  assert.equal(handle.contentType, 'application/json', 'the created stream is a JSON stream')
  return handle
}

async function appendAll(handle, values) {
  for (const v of values) await handle.append(JSON.stringify(v))
}

test('catch-up: create a JSON stream, append 3 messages, read exactly them back', { timeout: TIMEOUT }, async () => {
  const name = fresh('catchup')
  const handle = await createJson(name)
  await appendAll(handle, MESSAGES.slice(0, 1))
  const afterFirst = (await handle.head()).offset
  assert.ok(afterFirst, 'HEAD: a tail offset after the first message')
  await appendAll(handle, MESSAGES.slice(1))

  const meta = await handle.head()
  assert.equal(meta.exists, true, 'HEAD finds the stream')
  assert.match(meta.contentType ?? '', /^application\/json/, 'HEAD: its content type')
  assert.ok(meta.offset && meta.offset !== afterFirst, 'HEAD: the tail offset moved')

  const res = await stream({ url: urlOf(name), live: false })
  const items = await within(TIMEOUT / 2, res.json(), 'catch-up read')
  assert.deepEqual(items, MESSAGES, 'the three messages, in order, nothing else')
  assert.equal(res.upToDate, true, 'the catch-up read ends up to date')
  assert.equal(res.offset, meta.offset, "the read ends at HEAD's tail offset")

  // Resume from the offset after the first: exactly the other two.
  const rest = await stream({ url: urlOf(name), offset: afterFirst, live: false })
  assert.deepEqual(await within(TIMEOUT / 2, rest.json(), 'resumed read'), MESSAGES.slice(1),
    'from the offset after the first message: the second and third')
})

async function liveRead(mode) {
  const name = fresh(mode)
  const handle = await createJson(name)
  await appendAll(handle, [MESSAGES[0]])
  const { offset } = await handle.head()
  assert.ok(offset, 'HEAD: a tail offset to read live from')

  const rec = recordingFetch()
  const got = []
  const res = await stream({
    url: urlOf(name),
    offset,
    live: mode,
    fetch: rec.fetch,
    sseResilience: { logWarnings: false },
  })
  try {
    res.subscribeJson(async (batch) => {
      got.push(...batch.items)
    })
    // Append only once the live request is out (and has had time to park).
    await until(() => rec.calls.some((u) => liveOf(u) === mode), 5_000, `a live=${mode} request`)
    await sleep(300)
    assert.deepEqual(got, [], 'nothing before the append: the read started at the tail')
    const live = { n: 4, text: `appended while a ${mode} read waited`, at: Date.now() }
    await handle.append(JSON.stringify(live))
    await until(() => got.length > 0, 10_000, `the appended message through ${mode}`)
    await sleep(200)      // anything extra would have come by now
    assert.deepEqual(got, [live], 'exactly the appended message, once')
    const modes = rec.calls.slice(1).map(liveOf)
    assert.ok(modes.length > 0, 'live requests after the first read')
    assert.deepEqual(modes.filter((m) => m !== mode), [],
      `every request after the first was live=${mode} (no fallback): ${rec.calls.join(' ')}`)
  } finally {
    res.cancel()
  }
}

test('live long-poll: a message appended after the read started arrives', { timeout: TIMEOUT }, () =>
  liveRead('long-poll'))

test('live SSE: a message appended after the read started arrives', { timeout: TIMEOUT }, () =>
  liveRead('sse'))

test('cross-surface: the stream is channel NAME on /sub, and /pub appends to it', { timeout: TIMEOUT }, async () => {
  // Every character a stream name may have besides letters and digits.
  const name = `${fresh('cross')}.x_y:z@w`
  const handle = await createJson(name)
  await appendAll(handle, MESSAGES)

  const channel = name
  const sub = await fetch(`${base}/sub/${channel}?since=0&timeout=0`)
  const text = await sub.text()
  assert.equal(sub.status, 200, `GET /sub/${channel}: ${text.slice(0, 300)}`)
  assert.match(sub.headers.get('content-type') ?? '', /^application\/json/, '/sub answers JSON')
  const body = JSON.parse(text)
  assert.ok(Array.isArray(body.messages), `"messages" is an array: ${text.slice(0, 300)}`)
  assert.deepEqual(body.messages.map((m) => m.data), MESSAGES,
    'the appended messages, in order, as their JSON values')
  assert.deepEqual(body.messages.map((m) => m.channel), MESSAGES.map(() => channel),
    `each message is on ${channel}`)
  const ids = body.messages.map((m) => m.id)
  assert.ok(ids.every((id, i) => Number.isInteger(id) && (i === 0 || id > ids[i - 1])),
    `ids increase: ${ids}`)
  assert.ok(body.cursor >= ids[ids.length - 1], `the cursor (${body.cursor}) is not before the last id`)

  const extra = { n: 99, text: 'through /pub' }
  const pub = await fetch(`${base}/pub/${channel}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(extra),
  })
  const pubText = await pub.text()
  assert.equal(pub.status, 201, `POST /pub/${channel}: ${pubText.slice(0, 300)}`)
  assert.ok(JSON.parse(pubText).id > ids[ids.length - 1], 'the publish comes after the appends')

  // The publish is the stream's next message, for the client and for /sub.
  const again = await stream({ url: urlOf(name), live: false })
  assert.deepEqual(await within(TIMEOUT / 2, again.json(), 're-read'), [...MESSAGES, extra],
    'the client reads the three appends, then the publish')
  const sub2 = await (await fetch(`${base}/sub/${channel}?since=0&timeout=0`)).json()
  assert.deepEqual(sub2.messages.map((m) => m.data), [...MESSAGES, extra], '/sub shows the four')

  // A publish obeys the stream: another content type is refused, and appends nothing.
  const wrong = await fetch(`${base}/pub/${channel}`, {
    method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'not json' })
  assert.equal(wrong.status, 409, `a text/plain publish to a JSON stream: ${await wrong.text()}`)
  const third = await stream({ url: urlOf(name), live: false })
  assert.deepEqual(await within(TIMEOUT / 2, third.json(), 're-read'), [...MESSAGES, extra],
    'still the four')
})
