// dashboard.js -- the live dashboard demo: metrics published with a
// Holdfast-Key (deploy/dashboard-publisher.sh) drawn as value tiles with
// sparklines and a CPU/memory chart, in plain SVG.
//
// A first visit asks since=0: on a channel compacted by key that is the
// latest value of every metric at once, then the tail.  The values and the
// chart's points are saved with the cursor (demo.js), so a reload draws them
// again and resumes right after them.  When retention deleted updates this
// page never saw, the notice says so and the lines break instead of
// bridging the hole.
//   dashboard.html?channel=metrics.demo&base=lp   (the defaults)
import { subscribe } from './holdfast.js';
import { demoSettings, snapshotStore, showStatus, announce, formatTime } from './demo.js';

const SPAN_MS = 120000;   // what the chart and sparklines show at most
const MIN_SPAN_MS = 20000; // the chart's width while history is shorter
const BREAK_MS = 5000;    // a longer silence breaks a line
const METRICS = {         // known metrics; others get a plain tile
  cpu: { label: 'CPU', unit: '%', digits: 1 },
  mem: { label: 'Memory', unit: '%', digits: 1 },
  load: { label: 'Load (1 min)', unit: '', digits: 2 },
  rps: { label: 'Requests/s', unit: '/s', digits: 0 },
};
const CHART = { w: 640, h: 220, left: 40, right: 12, top: 10, bottom: 26 };
const SVG_NS = 'http://www.w3.org/2000/svg';

const { base, channel, transport } = demoSettings('metrics.demo');
const storeKey = `holdfast-demo:dashboard:${base}|${channel}`;
const $ = (id) => document.getElementById(id);

// values[name] = {value, unit, time}; series[name] = [[time, value], ...]
let state = { values: {}, series: {}, count: 0 };
let sub = null;
let drawPending = false;
const store = snapshotStore(() => state);

/** {name, value, unit, time} from a metric message, or null. */
function metricOf(m) {
  const d = m.data;
  if (!d || typeof d !== 'object') return null;
  const name = m.key || d.name;
  const value = Number(d.value);
  if (!name || !Number.isFinite(value)) return null;
  return { name: String(name), value, unit: d.unit, time: m.time };
}

function record(x) {
  state.values[x.name] = { value: x.value, unit: x.unit, time: x.time };
  const s = state.series[x.name] || (state.series[x.name] = []);
  s.push([x.time, x.value]);
  while (s.length > 1 && (s[0][0] < x.time - SPAN_MS || s.length > 400)) s.shift();
}

function onMessage(m) {
  state.count += 1;
  const x = metricOf(m);
  if (x) record(x);
  announce(m);
  scheduleDraw();
}

function showNotice(text) {
  $('gap-text').textContent = text;
  $('gap-notice').hidden = false;
}

/** A first visit (cursor 0) starting past pruned history is no news; a
 *  resumed page that missed updates is. */
function onGap({ oldest, cursor }) {
  if (cursor === 0) return;
  showNotice(`Some updates were deleted by retention while this page was away ` +
             `(after #${cursor}${oldest ? `, before #${oldest}` : ''}). ` +
             `The chart has a hole there; the values shown are the latest the server holds.`);
}

function onReset() {
  showNotice('The server\'s message log was replaced; following the new one from here.');
}

// ---- drawing ----------------------------------------------------------------

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}

function draw() {
  const names = Object.keys(state.values).sort(byMetricOrder);
  names.forEach(drawTile);
  drawChart();
  $('waiting').hidden = names.length > 0;
  $('count').textContent = String(state.count);
  const pos = sub && sub.position;
  $('cursor').textContent = pos && pos.cursor !== null ? `#${pos.cursor}` : '–';
}

function byMetricOrder(a, b) {
  const order = Object.keys(METRICS);
  const ia = order.includes(a) ? order.indexOf(a) : order.length;
  const ib = order.includes(b) ? order.indexOf(b) : order.length;
  return ia - ib || a.localeCompare(b);
}

function el(tag, cls, text) {
  const e = tag === 'svg' || tag === 'polyline' || tag === 'line' || tag === 'text'
    ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  if (cls) e.setAttribute('class', cls);
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The tile of a metric, made on first use. */
function tileFor(name) {
  let t = document.querySelector(`.tile[data-metric="${CSS.escape(name)}"]`);
  if (t) return t;
  t = el('div', 'tile');
  t.dataset.metric = name;
  const value = el('div', 'value');
  value.append(el('span', 'num'), el('span', 'unit'));
  const spark = el('svg');
  spark.setAttribute('viewBox', '0 0 100 30');
  spark.setAttribute('preserveAspectRatio', 'none');
  t.append(el('div', 'label', (METRICS[name] || {}).label || name), value,
           el('div', 'updated'), spark);
  $('tiles').append(t);
  return t;
}

function drawTile(name) {
  const t = tileFor(name);
  const v = state.values[name];
  const meta = METRICS[name] || { unit: v.unit || '', digits: 2 };
  t.querySelector('.num').textContent = v.value.toFixed(meta.digits);
  t.querySelector('.unit').textContent = meta.unit || v.unit || '';
  t.querySelector('.updated').textContent = `updated ${formatTime(v.time)}`;
  const pts = state.series[name] || [];
  // Scale to the values, but to at least 10% of their size: noise stays small.
  const vals = pts.map((p) => p[1]);
  const mid = (Math.min(...vals) + Math.max(...vals)) / 2;
  const half = Math.max((Math.max(...vals) - Math.min(...vals)) / 2, Math.abs(mid) * 0.05, 1e-6);
  const lo = mid - half;
  const hi = mid + half;
  const span = Math.min(SPAN_MS, Math.max(MIN_SPAN_MS, pts.length ? v.time - pts[0][0] : 0));
  drawLines(t.querySelector('svg'), pts,
            (time) => ((time - (v.time - span)) / span) * 100,
            (val) => 28 - ((val - lo) / (hi - lo)) * 26, '');
}

/** Replace svg's polylines with one per unbroken run of points. */
function drawLines(svg, pts, x, y, cls) {
  svg.querySelectorAll(`polyline${cls ? '.' + cls : ''}`).forEach((p) => p.remove());
  for (const run of runs(pts)) {
    const line = el('polyline', cls || undefined);
    line.setAttribute('points', run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '));
    svg.append(line);
  }
}

/** Points split where the time between two exceeds BREAK_MS. */
function runs(pts) {
  const out = [];
  let cur = [];
  for (const p of pts) {
    if (cur.length && p[0] - cur[cur.length - 1][0] > BREAK_MS) { out.push(cur); cur = []; }
    cur.push(p);
  }
  if (cur.length) out.push(cur);
  return out;
}

/** The chart's right edge (the newest point) and width in ms: two minutes,
 *  or less while there is less history (but at least MIN_SPAN_MS). */
function chartWindow() {
  const times = ['cpu', 'mem'].flatMap((n) => (state.series[n] || []).map((p) => p[0]));
  if (times.length === 0) return { now: 0, span: SPAN_MS };
  const now = Math.max(...times);
  return { now, span: Math.min(SPAN_MS, Math.max(MIN_SPAN_MS, now - Math.min(...times))) };
}

function drawChart() {
  const svg = $('chart');
  const { w, h, left, right, top, bottom } = CHART;
  const { now, span } = chartWindow();
  const x = (t) => left + ((t - (now - span)) / span) * (w - left - right);
  const y = (v) => top + (1 - Math.min(100, Math.max(0, v)) / 100) * (h - top - bottom);
  svg.replaceChildren();
  drawAxes(svg, y, span);
  drawLines(svg, (state.series.cpu || []).filter((p) => p[0] >= now - span), x, y, 'cpu');
  drawLines(svg, (state.series.mem || []).filter((p) => p[0] >= now - span), x, y, 'mem');
}

/** "2 min", "45 s". */
function formatSpan(ms) {
  return ms >= 60000 && ms % 60000 === 0 ? `${ms / 60000} min` : `${Math.round(ms / 1000)} s`;
}

/** Grid lines at 0-100 % and the time labels. */
function drawAxes(svg, y, span) {
  const { w, h, left, right, bottom } = CHART;
  for (const pct of [0, 25, 50, 75, 100]) {
    const line = el('line', 'grid');
    Object.entries({ x1: left, x2: w - right, y1: y(pct), y2: y(pct) })
      .forEach(([k, v]) => line.setAttribute(k, v));
    const label = el('text', 'axis', `${pct}%`);
    label.setAttribute('x', left - 6);
    label.setAttribute('y', y(pct) + 4);
    label.setAttribute('text-anchor', 'end');
    svg.append(line, label);
  }
  [[`−${formatSpan(span)}`, left, 'start'], [`−${formatSpan(span / 2)}`, (left + w - right) / 2, 'middle'],
   ['now', w - right, 'end']].forEach(([text, at, anchor]) => {
    const label = el('text', 'axis', text);
    label.setAttribute('x', at);
    label.setAttribute('y', h - bottom + 18);
    label.setAttribute('text-anchor', anchor);
    svg.append(label);
  });
}

// ---- start ------------------------------------------------------------------

function start() {
  $('channel').textContent = `#${channel}`;
  $('gap-dismiss').addEventListener('click', () => { $('gap-notice').hidden = true; });
  const saved = store.read(storeKey);
  if (saved && saved.state && saved.state.values) state = saved.state;
  draw();
  sub = subscribe(base, {
    channels: [channel], since: 0, cursorStore: store, storeKey, transport,
    onMessage, onGap, onReset,
    onStatus: (s, d) => { showStatus($('status'), s, d); scheduleDraw(); },
  });
}

start();
