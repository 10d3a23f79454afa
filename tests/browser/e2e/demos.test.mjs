// demos.test.mjs -- browser tests of the chat and dashboard demos (and so of
// holdfast.js in a real browser) against a private lighttpd + holdfast
// serve: chat both ways, every message exactly once across worker kills and
// a full server restart, a dashboard reload that neither repeats nor skips,
// an honest gap notice, the reconnecting status, and screenshots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { publish } from '../../../www/holdfast.js';
import { TOP, startServer, openBrowser, firstPage, until, screenshotPath } from '../lib/harness.mjs';

const T = { timeout: 90000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs fn({srv, open}) with a fresh server; `open()` gives a new visitor
 *  (its own browser profile).  Everything is stopped afterwards. */
async function withServer(options, fn) {
  const srv = await startServer(options);
  const contexts = [];
  const open = async () => {
    const ctx = await openBrowser();
    contexts.push(ctx);
    await ctx.addInitScript(recordInPage);
    return ctx;
  };
  try {
    await fn({ srv, open });
  } finally {
    for (const c of contexts) await c.close();
    await srv.stop();
  }
}

/** Runs in every page before its scripts: keeps the sequence of statuses
 *  the page showed, and forwards each delivered message id to the test
 *  (window.hfSeen, when the test exposed it). */
function recordInPage() {
  window.__statuses = [];
  document.addEventListener('holdfast:message', (e) => {
    if (window.hfSeen) window.hfSeen(e.detail.id);
  });
  document.addEventListener('DOMContentLoaded', () => {
    const el = document.getElementById('status');
    if (!el) return;
    const note = () => window.__statuses.push(el.dataset.status);
    note();
    new MutationObserver(note).observe(el, { attributes: true, attributeFilter: ['data-status'] });
  });
}

async function waitStatus(page, status, ms = 15000) {
  await page.waitForSelector(`#status[data-status="${status}"]`, { timeout: ms });
}

const chatTexts = (page) => page.$$eval('#messages .msg .text', (els) => els.map((e) => e.textContent));

async function say(page, name, text) {
  await page.fill('#name', name);
  await page.fill('#text', text);
  await page.click('#send');
}

// ---- (1) chat both ways -------------------------------------------------------

test('two pages chat both ways, and the history survives a reload', T, async (t) => {
  await withServer({}, async ({ srv, open }) => {
    const url = `${srv.url}/chat.html?channel=chat.t1`;
    const [a, b] = await Promise.all([open().then(firstPage), open().then(firstPage)]);
    await Promise.all([a.goto(url), b.goto(url)]);
    await Promise.all([waitStatus(a, 'live'), waitStatus(b, 'live')]);

    const lines = [[a, 'alice', 'Hi Bob! Is the long poll holding up?'],
                   [b, 'bob', 'Hi Alice — every message once, in order.'],
                   [a, 'alice', 'Even across a reload?'],
                   [b, 'bob', 'Try it: the cursor is stored with the history.']];
    for (const [page, name, text] of lines) {
      await say(page, name, text);
      for (const p of [a, b])
        await p.waitForFunction((t) => [...document.querySelectorAll('#messages .msg .text')]
          .some((e) => e.textContent === t), text, { timeout: 10000 });
    }
    const want = lines.map(([, , text]) => text);
    assert.deepEqual(await chatTexts(a), want);
    assert.deepEqual(await chatTexts(b), want);
    assert.deepEqual(await a.$$eval('#messages .msg .who', (els) => els.map((e) => e.textContent)),
                     ['alice', 'bob', 'alice', 'bob']);
    assert.equal(await a.$$eval('#messages .msg.mine', (els) => els.length), 2, "alice's own messages");

    await a.reload();
    await waitStatus(a, 'live');
    await say(b, 'bob', 'Welcome back.');
    await a.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 5, null,
                            { timeout: 10000 });
    assert.deepEqual(await chatTexts(a), [...want, 'Welcome back.'], 'same history, nothing twice');
    const shot = screenshotPath('chat.png');
    await a.screenshot({ path: shot });
    t.diagnostic(`screenshot: ${shot}`);
  });
});

// ---- (2) workers killed and the server restarted mid-stream ------------------------

test('every message exactly once, in order, across worker kills and a server restart', T, async (t) => {
  await withServer({}, async ({ srv, open }) => {
    const page = await firstPage(await open());
    await page.goto(`${srv.url}/chat.html?channel=chat.t2`);
    await waitStatus(page, 'live');
    const N = 60;
    const disruptions = [];
    let restarted = null;
    for (let i = 1; i <= N; i++) {
      if (i === 15 || i === 50) disruptions.push(`killed workers ${srv.killWorkers()}`);
      if (i === 32) {
        // Stop the whole pool; it comes back on the same socket and database
        // 1.5 s later, while the publish of n32 keeps retrying.
        await srv.stopHoldfast();
        disruptions.push('serve stopped and restarted');
        restarted = sleep(1500).then(() => srv.startHoldfast());
      }
      await publish(srv.base, 'chat.t2', { name: 'counter', text: `n${i}` },
                    { retries: 30, backoffBase: 100, backoffMax: 1000 });
      await sleep(25);
    }
    await restarted;
    const order = Array.from({ length: N }, (_, k) => `n${k + 1}`);
    await until(async () => (await chatTexts(page)).length >= N, 30000);
    await sleep(1000);   // anything delivered twice would arrive now
    assert.deepEqual(await chatTexts(page), order, disruptions.join('; '));
    await waitStatus(page, 'live');
    const statuses = await page.evaluate(() => window.__statuses);
    assert.ok(statuses.includes('reconnecting'), `the page said it was reconnecting: ${statuses}`);
    t.diagnostic(`${disruptions.join('; ')}; the page showed: ${statuses.join(', ')}`);
  });
});

test('over an event stream: every message once, in order, across worker kills and a restart', T, async (t) => {
  await withServer({}, async ({ srv, open }) => {
    const ctx = await open();
    // count the EventSources the page opens and any long-poll it falls back to
    await ctx.addInitScript(() => {
      window.__streams = 0;
      window.__polls = 0;
      const ES = window.EventSource;
      window.EventSource = class extends ES {
        constructor(...a) { super(...a); window.__streams += 1; }
      };
      const f = window.fetch.bind(window);
      window.fetch = (u, ...rest) => {
        if (String(u).includes('/sub/')) window.__polls += 1;
        return f(u, ...rest);
      };
    });
    const page = await firstPage(ctx);
    await page.goto(`${srv.url}/chat.html?channel=chat.t2s&transport=sse`);
    await waitStatus(page, 'live');
    const N = 40;
    const disruptions = [];
    let restarted = null;
    const arrivals = [];
    for (let i = 1; i <= N; i++) {
      if (i === 10 || i === 30) disruptions.push(`killed workers ${srv.killWorkers()}`);
      if (i === 20) {
        await srv.stopHoldfast();
        disruptions.push('serve stopped and restarted');
        restarted = sleep(1500).then(() => srv.startHoldfast());
      }
      await publish(srv.base, 'chat.t2s', { name: 'counter', text: `s${i}` },
                    { retries: 30, backoffBase: 100, backoffMax: 1000 });
      if (i === 5) { // one event, timed from its acknowledgement
        const t0 = Date.now();
        await until(async () => (await chatTexts(page)).length >= 5, 5000, 5);
        arrivals.push(Date.now() - t0);
      }
      await sleep(25);
    }
    await restarted;
    const order = Array.from({ length: N }, (_, k) => `s${k + 1}`);
    await until(async () => (await chatTexts(page)).length >= N, 30000);
    await sleep(1000);   // anything delivered twice would arrive now
    assert.deepEqual(await chatTexts(page), order, disruptions.join('; '));
    await waitStatus(page, 'live');
    const { streams, polls } = await page.evaluate(() => ({ streams: window.__streams,
                                                            polls: window.__polls }));
    assert.equal(polls, 0, 'the page never fell back to long-poll');
    assert.ok(streams >= 3, `a new stream after each break (${streams} opened)`);
    assert.ok(arrivals[0] < 1000, `an event arrives at once (${arrivals[0]} ms)`);
    t.diagnostic(`${disruptions.join('; ')}; ${streams} event streams opened; ` +
                 `event 5 shown ${arrivals[0]} ms after its publish`);
  });
});

// ---- (3) dashboard reload resumes ---------------------------------------------------

test('a reloaded dashboard resumes from its cursor without repeating or skipping', T, async () => {
  await withServer({}, async ({ srv, open }) => {
    const ctx = await open();
    const seen = [];
    await ctx.exposeFunction('hfSeen', (id) => { seen.push(id); });
    const page = await firstPage(ctx);
    await page.goto(`${srv.url}/dashboard.html?channel=metrics.t3`);
    await waitStatus(page, 'live');

    const published = [];
    let reloaded = false;
    for (let i = 1; i <= 40; i++) {
      published.push(await publish(srv.base, 'metrics.t3', { name: 'seq', value: i },
                                   { token: srv.key }));
      if (i === 15) {
        await until(() => seen.length === 15, 5000);
        reloaded = page.reload();   // messages 16.. are published while it reloads
      }
      await sleep(30);
    }
    await reloaded;
    await until(() => seen.length >= published.length, 15000);
    await sleep(800);
    assert.deepEqual(seen, published, 'each message once, in order, across the reload');
    assert.equal(await page.textContent('#count'), '40', 'the saved count went on from where it was');
    assert.equal(await page.textContent('.tile[data-metric="seq"] .num'), '40.00');
  });
});

// ---- (4) an honest gap ----------------------------------------------------------------

test('a dashboard that comes back after retention pruned its updates shows the gap notice', T, async (t) => {
  await withServer({ conf: 'retain_messages = 5\nprune_every = 1' }, async ({ srv, open }) => {
    const ctx = await open();
    const url = `${srv.url}/dashboard.html?channel=metrics.t4`;
    let page = await firstPage(ctx);
    await page.goto(url);
    await waitStatus(page, 'live');
    for (let i = 1; i <= 3; i++) await publish(srv.base, 'metrics.t4', { name: 'cpu', value: i }, { token: srv.key });
    await page.waitForFunction(() => document.getElementById('count').textContent === '3', null,
                               { timeout: 10000 });
    assert.equal(await page.isVisible('#gap-notice'), false);
    await page.close();

    for (let i = 4; i <= 23; i++) await publish(srv.base, 'metrics.t4', { name: 'cpu', value: i }, { token: srv.key });
    page = await ctx.newPage();
    await page.goto(url);
    await page.waitForSelector('#gap-notice', { state: 'visible', timeout: 10000 });
    assert.match(await page.textContent('#gap-text'), /deleted by retention/);
    const shot = screenshotPath('dashboard-gap.png');
    await page.screenshot({ path: shot });
    t.diagnostic(`screenshot: ${shot}`);
    await page.waitForFunction(() =>
      document.querySelector('.tile[data-metric="cpu"] .num')?.textContent === '23.0', null, { timeout: 10000 });

    // A first visit that starts past pruned history has missed nothing.
    const fresh = await firstPage(await open());
    await fresh.goto(url);
    await waitStatus(fresh, 'live');
    await fresh.waitForFunction(() => document.getElementById('count').textContent === '5', null,
                                { timeout: 10000 });
    assert.equal(await fresh.isVisible('#gap-notice'), false);
  });
});

// ---- (5) network errors -----------------------------------------------------------------

test('the status says reconnecting while the server is unreachable, then recovers', T, async () => {
  await withServer({}, async ({ srv, open }) => {
    const ctx = await open();
    const page = await firstPage(ctx);
    await page.goto(`${srv.url}/chat.html?channel=chat.t5`);
    await waitStatus(page, 'live');

    await srv.stopLighttpd();
    await waitStatus(page, 'reconnecting', 10000);
    assert.match(await page.textContent('#status'), /Reconnecting/);
    await srv.publishCli('chat.t5', '{"name":"cron","text":"sent while the web server was down"}',
                         ['--type', 'application/json']);
    await srv.startLighttpd();
    await waitStatus(page, 'live', 40000);
    await page.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 1, null,
                               { timeout: 10000 });
    assert.deepEqual(await chatTexts(page), ['sent while the web server was down']);

    await ctx.setOffline(true);
    await waitStatus(page, 'reconnecting', 10000);
    await ctx.setOffline(false);
    await waitStatus(page, 'live', 20000);
    await publish(srv.base, 'chat.t5', { name: 'net', text: 'back online' });
    await page.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 2, null,
                               { timeout: 10000 });
  });
});

// ---- the publisher script, the current state at once, and a screenshot ---------------------

test('the dashboard publisher feeds live values; a new page gets the current state at once', T, async (t) => {
  await withServer({}, async ({ srv, open }) => {
    const page = await firstPage(await open());
    await page.goto(`${srv.url}/dashboard.html`);
    await waitStatus(page, 'live');
    const script = join(TOP, 'deploy', 'dashboard-publisher.sh');
    await promisify(execFile)('sh', [script, '-u', srv.base, '-n', '48', '-i', '0.25'],
                              { timeout: 60000, env: { ...process.env, HOLDFAST_PUBLISH_KEY: srv.key } });
    // 192 were published; a live page sees about all of them, but compaction
    // may replace a value before a poll gets it, so no exact count here.
    assert.ok(await until(async () => Number(await page.textContent('#count')) >= 100, 10000),
              `most updates reached the page: ${await page.textContent('#count')}`);
    const tiles = await page.$$eval('.tile', (els) => els.map((e) => [e.dataset.metric,
      e.querySelector('.num').textContent]));
    assert.deepEqual(tiles.map(([m]) => m), ['cpu', 'mem', 'load', 'rps']);
    for (const [m, v] of tiles) assert.ok(Number.isFinite(Number(v)), `${m} shows a number: ${v}`);
    assert.ok(await page.$$eval('#chart polyline', (els) => els.length) >= 2, 'the chart has lines');
    const shot = screenshotPath('dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);

    const fresh = await firstPage(await open());
    await fresh.goto(`${srv.url}/dashboard.html`);
    await fresh.waitForFunction(() => document.querySelectorAll('.tile').length === 4, null,
                                { timeout: 10000 });
    assert.equal(await fresh.textContent('#count'), '4', 'compacted: the latest value of each key');
  });
});

// ---- the classic-script build in a browser ------------------------------------------------

test('holdfast.umd.js works as a classic script', T, async () => {
  await withServer({}, async ({ srv, open }) => {
    const page = await firstPage(await open());
    await page.goto(`${srv.url}/index.html`);
    await page.addScriptTag({ url: '/holdfast.umd.js' });
    const got = await page.evaluate(() => new Promise((resolve, reject) => {
      const sub = window.holdfast.subscribe('/lp', {
        channels: ['chat.umd'], cursorStore: null,
        onStatus: (s) => {
          if (s === 'live') window.holdfast.publish('/lp', 'chat.umd', 'from a classic script').catch(reject);
        },
        onMessage: (m) => { sub.stop(); resolve(m.data); },
      });
      setTimeout(() => reject(new Error('no message in 10 s')), 10000);
    }));
    assert.equal(got, 'from a classic script');
  });
});

// ---- a private channel in the browser -------------------------------------------------

test('a page follows a private channel with a token; without one it is refused', T, async () => {
  await withServer({}, async ({ srv, open }) => {
    const page = await firstPage(await open());
    await page.goto(`${srv.url}/index.html`);
    await page.addScriptTag({ url: '/holdfast.umd.js' });
    const token = await srv.mintToken(['private.b'], 60);
    const refused = await page.evaluate(() => new Promise((resolve) => {
      window.holdfast.subscribe('/lp', {
        channels: ['private.b'], cursorStore: null,
        onStatus: (s, d) => { if (s === 'stopped') resolve([d.error.status, d.error.code]); },
      });
    }));
    assert.deepEqual(refused, [401, 'token_missing']);
    const got = page.evaluate((tok) => new Promise((resolve, reject) => {
      const sub = window.holdfast.subscribe('/lp', {
        channels: ['private.b'], since: 0, cursorStore: null, token: tok,
        onMessage: (m) => { sub.stop(); resolve(m.data); },
      });
      setTimeout(() => reject(new Error('no message in 10 s')), 10000);
    }), token);
    await publish(srv.base, 'private.b', 'for the token holder', { token: srv.key });
    assert.equal(await got, 'for the token holder');
  });
});
