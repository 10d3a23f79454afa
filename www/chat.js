// chat.js -- the chat demo: follows one channel with holdfast.js, shows who
// said what and when, and sends with publish().  A first visit starts with
// the last 50 messages; the conversation is saved with the cursor (demo.js),
// so a reload shows the same messages and resumes right after them.
//   chat.html?channel=chat.lobby&base=lp   (the defaults)
import { subscribe, publish } from './holdfast.js';
import { demoSettings, snapshotStore, showStatus, announce, formatTime } from './demo.js';

const KEEP = 200;                 // messages saved across reloads
const { base, channel, transport } = demoSettings('chat.lobby');
const storeKey = `holdfast-demo:chat:${base}|${channel}`;
const nameKey = 'holdfast-demo:chat:name';

const $ = (id) => document.getElementById(id);
const list = $('messages');
let history = [];                 // [{id, time, name, text}], oldest first
let known = new Set();            // ids shown (a saved history may overlap an answer)
let sending = Promise.resolve();  // publishes in the order they were typed

const store = snapshotStore(() => history.slice(-KEEP));

/** A message's data as a chat entry; plain text published with curl works too. */
function entryOf(m) {
  const d = m.data;
  if (d && typeof d === 'object' && 'text' in d)
    return { id: m.id, time: m.time, name: String(d.name || 'anonymous'), text: String(d.text) };
  const text = typeof d === 'string' && m.encoding !== 'base64' ? d : JSON.stringify(d);
  return { id: m.id, time: m.time, name: 'anonymous', text };
}

function renderEntry(e) {
  const li = document.createElement('li');
  li.className = 'msg';
  li.dataset.id = e.id;
  if (e.name === $('name').value.trim()) li.classList.add('mine');
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = e.name;
  const when = document.createElement('time');
  when.className = 'when';
  when.dateTime = new Date(e.time).toISOString();
  when.textContent = formatTime(e.time);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = e.text;
  meta.append(who, when);
  li.append(meta, text);
  return li;
}

/** Add to the list, keeping the view at the bottom if it was there. */
function show(node) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(node);
  $('empty').hidden = true;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function addEntry(e) {
  if (known.has(e.id)) return;
  known.add(e.id);
  history.push(e);
  if (history.length > KEEP * 2) history = history.slice(-KEEP);
  show(renderEntry(e));
}

function divider(text) {
  const li = document.createElement('li');
  li.className = 'divider';
  li.textContent = text;
  show(li);
}

function onMessage(m) {
  addEntry(entryOf(m));
  announce(m);
}

function onGap({ oldest, cursor }) {
  if (cursor > 0)
    divider(`Some messages were deleted by retention before this page got them` +
            (oldest ? ` (continuing at #${oldest}).` : '.'));
}

function onReset() {
  history = [];
  known = new Set();
  divider('The server\'s message log was replaced; the conversation continues below.');
}

/** Queue a publish behind the previous ones, so messages keep their order. */
function send(name, text) {
  const err = $('send-error');
  sending = sending
    .then(() => publish(base, channel, { name, text }))
    .then(() => { err.hidden = true; })
    .catch((e) => {
      err.textContent = `Not sent: “${text}” (${e.code || e.message}).`;
      err.hidden = false;
    });
}

function onSubmit(ev) {
  ev.preventDefault();
  const name = $('name').value.trim();
  const text = $('text').value.trim();
  if (!name || !text) return;
  try { localStorage.setItem(nameKey, name); } catch (_) { /* not remembered */ }
  $('text').value = '';
  $('text').focus();
  send(name, text);
}

function start() {
  $('room').textContent = `#${channel}`;
  try { $('name').value = localStorage.getItem(nameKey) || ''; } catch (_) { /* none */ }
  const saved = store.read(storeKey);
  if (saved && Array.isArray(saved.state)) saved.state.forEach(addEntry);
  $('compose').addEventListener('submit', onSubmit);
  ($('name').value ? $('text') : $('name')).focus();
  subscribe(base, {
    channels: [channel], last: 50, cursorStore: store, storeKey, transport,
    onMessage, onGap, onReset,
    onStatus: (s, d) => showStatus($('status'), s, d),
  });
}

start();
