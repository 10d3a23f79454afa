// demo.js -- what the chat and dashboard demos share: their settings from
// the page's URL, a cursor store that saves the page's state together with
// the cursor, and the status badge.
//
// Why state and cursor are saved together: the client calls the store's
// set() once an answer's messages have all been delivered.  Writing the
// page's state (chat history, dashboard values) in that same write means a
// reload can never find a cursor that is ahead of the state it shows (a
// message skipped) or behind it (a message shown twice).

/** Settings from the query string: ?base=/lp&channel=NAME. */
export function demoSettings(defaultChannel) {
  const q = new URLSearchParams(location.search);
  return {
    base: q.get('base') || 'lp',      // relative: works wherever www/ is mounted
    channel: q.get('channel') || defaultChannel,
    // 'auto': an event stream where the browser has EventSource, else
    // long-poll (?transport=long-poll or sse to choose)
    transport: q.get('transport') || 'auto',
  };
}

/** localStorage, or null where it is missing or forbidden. */
function webStorage() {
  try {
    const ls = globalThis.localStorage;
    ls.setItem('holdfast-demo:probe', '1');
    ls.removeItem('holdfast-demo:probe');
    return ls;
  } catch (_) {
    return null;
  }
}

/**
 * A holdfast cursor store that saves {cursor, epoch, state: snapshot()} in
 * one localStorage record.  read(key) returns the record (or null) so the
 * page can draw its saved state before subscribing.
 */
export function snapshotStore(snapshot) {
  const ls = webStorage();
  const memory = new Map();
  const read = (key) => {
    try {
      const text = ls ? ls.getItem(key) : memory.get(key);
      return text ? JSON.parse(text) : null;
    } catch (_) {
      return null;
    }
  };
  const write = (key, pos) => {
    const text = JSON.stringify({ cursor: pos.cursor, epoch: pos.epoch, state: snapshot() });
    try {
      if (ls) ls.setItem(key, text); else memory.set(key, text);
    } catch (_) { /* storage full: the page still works, it just forgets */ }
  };
  return { read, get: read, set: write };
}

const STATUS_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  stopped: 'Stopped',
};

/** Show a subscription status in el (data-status and a class carry it for
 *  styles and tests; the text says it for people). */
export function showStatus(el, status, detail) {
  let text = STATUS_TEXT[status] || status;
  if (status === 'reconnecting' && detail && detail.delay >= 1000)
    text = `Reconnecting… (retry in ${Math.round(detail.delay / 1000)} s)`;
  if (status === 'stopped' && detail && detail.error)
    text = `Stopped: ${detail.error.code || detail.error.message}`;
  el.textContent = text;
  el.dataset.status = status;
  el.className = `status status-${status}`;
  if (detail && detail.error) el.title = detail.error.message;
  else el.removeAttribute('title');
}

/** Tell other scripts on the page (and the browser tests) about a message. */
export function announce(message) {
  document.dispatchEvent(new CustomEvent('holdfast:message', { detail: message }));
}

/** "14:03:07", with the date when it is not today. */
export function formatTime(ms) {
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return d.toDateString() === new Date().toDateString()
    ? time : `${d.toLocaleDateString()} ${time}`;
}
