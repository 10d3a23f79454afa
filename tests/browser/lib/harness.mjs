// harness.mjs -- what the browser tests run against: a private lighttpd +
// `holdfast serve` on a free 127.0.0.1 port in a temp dir (configured like
// deploy/demo.sh: www/ as document root, mod_fastcgi "/lp" => the pool's
// unix socket), and Debian's chromium driven by playwright-core.
//
// Lifecycle: const srv = await startServer(); ... await srv.stop();
// Every process is started here, tracked by pid and stopped by stop();
// every wait is bounded.  Nothing but 127.0.0.1 is ever contacted.
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, existsSync, rmSync, mkdirSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const TOP = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const WWW = join(TOP, 'www');
export const SCREENSHOTS = join(TOP, 'build-browser', 'screenshots');
const LIGHTTPD = '/usr/sbin/lighttpd';
const CHROMIUM = '/usr/bin/chromium';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The holdfast binary: $HOLDFAST_BIN, else the in-place build, else build/. */
export function holdfastBin() {
  if (process.env.HOLDFAST_BIN) return resolve(process.env.HOLDFAST_BIN);
  const inPlace = join(TOP, 'holdfast');
  return existsSync(inPlace) ? inPlace : join(TOP, 'build', 'holdfast');
}

/** The environment for children: no stray HOLDFAST_* settings of the caller. */
function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HOLDFAST_')) env[k] = v;
  return env;
}

/** Polls cond() every 50 ms until it is true or ms passed; returns the last value. */
export async function until(cond, ms, step = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v || Date.now() > end) return v;
    await sleep(step);
  }
}

/** A port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function canConnect(port) {
  return new Promise((ok) => {
    const c = connect({ host: '127.0.0.1', port }, () => { c.destroy(); ok(true); });
    c.on('error', () => ok(false));
    c.setTimeout(500, () => { c.destroy(); ok(false); });
  });
}

/** Resolves when child exits, or after ms (then false). */
function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return Promise.race([new Promise((ok) => child.once('exit', () => ok(true))),
                       sleep(ms).then(() => false)]);
}

/** SIGTERM, then SIGKILL if it has not gone in `ms`. */
async function terminate(child, ms = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (!(await exited(child, ms))) {
    child.kill('SIGKILL');
    await exited(child, 2000);
  }
}

// Children still running; if this test process exits early (a timeout, a
// crash) they are told to stop rather than left behind.  SIGTERM, because
// holdfast serve then stops its own workers.
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGTERM'); } catch (_) { /* gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

/** spawn, tracked in `running` until it exits. */
function spawnTracked(cmd, args, options) {
  const child = spawn(cmd, args, options);
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

/** Pids of the processes whose parent is pid (from /proc). */
function childrenOf(pid) {
  const kids = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) kids.push(Number(d));
    } catch (_) { /* gone meanwhile */ }
  }
  return kids;
}

class Server {
  constructor({ conf = '', workers = 2 } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'holdfast-browser-'));
    this.extraConf = conf;
    this.workers = workers;
    this.sock = join(this.dir, 'holdfast.sock');
    this.db = join(this.dir, 'test.db');
    this.hf = null;
    this.httpd = null;
    this.key = randomBytes(16).toString('hex');
    this.secret = randomBytes(32).toString('hex');
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get base() { return `${this.url}/lp`; }

  async start() {
    this.port = await freePort();
    // Keys on, like deploy/demo.sh: publishing needs this.key except on
    // chat.*, and private.* needs a subscribe token (this.mintToken()).
    writeFileSync(join(this.dir, 'holdfast.conf'),
      `db = ${this.db}\nlisten = unix:${this.sock}\nworkers = ${this.workers}\n` +
      `poll_timeout = 25\npublish_key = ${this.key}\ntoken_secret = ${this.secret}\n` +
      `${this.extraConf}\n` +
      '[channel chat.*]\npublish = anyone\nmax_body = 4k\n' +
      '[channel private.*]\nsubscribe = token\n', { mode: 0o600 });
    writeFileSync(join(this.dir, 'lighttpd.conf'), this.lighttpdConf());
    await this.startHoldfast();
    await this.startLighttpd();
    return this;
  }

  lighttpdConf() {
    return `server.modules = ("mod_fastcgi")
server.document-root = "${WWW}"
server.bind = "127.0.0.1"
server.port = ${this.port}
server.errorlog = "${this.dir}/lighttpd.error.log"
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html; charset=utf-8", ".js" => "text/javascript",
                   ".mjs" => "text/javascript", ".css" => "text/css", ".svg" => "image/svg+xml",
                   ".png" => "image/png", ".json" => "application/json")
server.stream-response-body = 2
fastcgi.server = ("/lp" => ((
    "socket" => "${this.sock}",
    "check-local" => "disable"
)))
`;
  }

  /** `holdfast serve` on the socket; resolves once it answers /health. */
  async startHoldfast() {
    rmSync(this.sock, { force: true });
    this.hf = spawnTracked(holdfastBin(), ['serve', '--config', join(this.dir, 'holdfast.conf')], {
      env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.hf.stderr.on('data', (d) => { this.hfLog = ((this.hfLog || '') + d).slice(-4000); });
    const up = await until(() => existsSync(this.sock), 5000);
    if (!up) throw new Error(`holdfast serve did not start: ${this.hfLog || ''}`);
    if (this.httpd) await this.waitHealthy();
  }

  async stopHoldfast() {
    await terminate(this.hf);
    this.hf = null;
  }

  /** The pids of the pool's workers (children of the supervisor). */
  workerPids() {
    return this.hf ? childrenOf(this.hf.pid) : [];
  }

  /** kill -9 every worker; the supervisor replaces them. */
  killWorkers() {
    const pids = this.workerPids();
    for (const pid of pids) {
      try { process.kill(pid, 'SIGKILL'); } catch (_) { /* already gone */ }
    }
    return pids;
  }

  async startLighttpd() {
    this.httpd = spawnTracked(LIGHTTPD, ['-D', '-f', join(this.dir, 'lighttpd.conf')], {
      env: cleanEnv(), stdio: 'ignore',
    });
    const up = await until(() => canConnect(this.port), 5000);
    if (!up) throw new Error('lighttpd did not start; see ' + join(this.dir, 'lighttpd.error.log'));
    await this.waitHealthy();
  }

  async stopLighttpd() {
    await terminate(this.httpd);
    this.httpd = null;
  }

  /** Resolves when GET /lp/health is 200 (bounded: 10 s). */
  async waitHealthy() {
    const ok = await until(async () => {
      try {
        const r = await fetch(`${this.base}/health`, { signal: AbortSignal.timeout(2000) });
        await r.arrayBuffer();
        return r.status === 200;
      } catch (_) {
        return false;
      }
    }, 10000, 100);
    if (!ok) throw new Error('holdfast is not healthy behind lighttpd');
  }

  /** `holdfast publish` straight into the database (no web server needed). */
  async publishCli(channel, data, args = []) {
    const { stdout } = await promisify(execFile)(holdfastBin(),
      ['publish', '--config', join(this.dir, 'holdfast.conf'), ...args, channel, data],
      { env: cleanEnv(), timeout: 10000 });
    return Number(stdout.trim());
  }

  /** `holdfast token` for channels (an array of patterns), valid ttl s. */
  async mintToken(channels, ttl = 60, args = []) {
    const { stdout } = await promisify(execFile)(holdfastBin(),
      ['token', '--config', join(this.dir, 'holdfast.conf'), '--channel', channels.join(','),
       '--ttl', String(ttl), ...args], { env: cleanEnv(), timeout: 10000 });
    return stdout.trim();
  }

  async stop() {
    await this.stopLighttpd();
    await this.stopHoldfast();
    if (!process.env.HOLDFAST_KEEP_TMP) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A started Server (see the class); `conf` is appended to holdfast.conf. */
export async function startServer(options) {
  const srv = new Server(options);
  try {
    return await srv.start();
  } catch (err) {
    await srv.stop();
    throw err;
  }
}

/** Debian's chromium, headless, never downloading anything, with a fresh
 *  user-data dir (so fresh localStorage): a Playwright BrowserContext whose
 *  close() also ends the browser and removes the profile.  Two of them are
 *  two independent visitors. */
export async function openBrowser() {
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(join(tmpdir(), 'holdfast-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
    viewport: { width: 1000, height: 700 },
    timeout: 30000,
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return context;
}

/** The context's first page (a persistent context opens with one). */
export async function firstPage(context) {
  return context.pages()[0] || context.newPage();
}

/** Where a screenshot named `name` goes (the directory is made). */
export function screenshotPath(name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return join(SCREENSHOTS, name);
}
