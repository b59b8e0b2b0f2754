// What every desk page shares (docs/desks.md): the session, API calls with the CSRF token,
// server-sent events with reconnect, and times in the consortium's zone.  No build step.

let sessionPromise = null;

/** The signed-in user's session (GET /api/v1/session), fetched once per page. */
export function session() {
  if (!sessionPromise) {
    sessionPromise = fetch('/api/v1/session', {credentials: 'same-origin', headers: {Accept: 'application/json'}})
      .then(async (resp) => {
        if (resp.status === 401) { toSignin(); return new Promise(() => {}); }
        if (!resp.ok) throw await problem(resp);
        return resp.json();
      });
    sessionPromise.catch(() => { sessionPromise = null; });
  }
  return sessionPromise;
}

export function toSignin() {
  const next = location.pathname + location.search + location.hash;
  location.assign('/signin?next=' + encodeURIComponent(next));
}

async function problem(resp) {
  let detail = `${resp.status} ${resp.statusText}`;
  let body = null;
  try {
    body = await resp.json();
    if (body && body.detail) detail = body.detail;
  } catch (_) { /* not JSON */ }
  const error = new Error(detail);
  error.status = resp.status;
  error.problem = body;
  return error;
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Call Yilian's API with the session cookie.  `body` (an object) is sent as JSON; a state-changing
 * method carries X-CSRF-Token.  Resolves to the parsed JSON (null for 204); on 401 goes to
 * /signin?next=…; otherwise throws an Error whose message is the problem+json `detail`
 * (error.status, error.problem).
 */
export async function api(path, {method = 'GET', body, headers = {}} = {}) {
  method = method.toUpperCase();
  const init = {method, credentials: 'same-origin', headers: {Accept: 'application/json', ...headers}};
  if (!SAFE.has(method)) init.headers['X-CSRF-Token'] = (await session()).csrf_token;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) { toSignin(); return new Promise(() => {}); }
  if (!resp.ok) throw await problem(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get('Content-Type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

/**
 * Follow a server-sent events endpoint: onEvent({type, data, id}) for each event (data parsed
 * as JSON when it is JSON).  Reconnects after a drop (1 s, growing to 30 s) with Last-Event-ID,
 * so nothing is missed; goes to /signin when the session has ended.  Returns {close()}.
 * (fetch, not EventSource: it hands over events of every name, not only the ones listened for.)
 */
export function events(path, onEvent, {onState} = {}) {
  let closed = false, lastId = null, delay = 1000, controller = null;
  const state = (s) => { if (onState) onState(s); };
  async function run() {
    while (!closed) {
      controller = new AbortController();
      try {
        const headers = {Accept: 'text/event-stream'};
        if (lastId !== null) headers['Last-Event-ID'] = lastId;
        const resp = await fetch(path, {credentials: 'same-origin', headers, signal: controller.signal});
        if (resp.status === 401) { toSignin(); return; }
        if (!resp.ok) throw await problem(resp);
        state('open');
        delay = 1000;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        if (closed) return;
        if (err && err.status >= 400 && err.status < 500 && err.status !== 429) { state('error'); console.error(err); }
      }
      if (closed) return;
      state('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }
  function dispatch(block) {
    let type = 'message', data = [], id = null;
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = val;
      else if (field === 'data') data.push(val);
      else if (field === 'id') id = val;
    }
    if (id !== null) lastId = id;
    if (!data.length) return;
    let parsed = data.join('\n');
    try { parsed = JSON.parse(parsed); } catch (_) { /* text */ }
    try { onEvent({type, data: parsed, id}); } catch (err) { console.error(err); }
  }
  run();
  return {close() { closed = true; if (controller) controller.abort(); state('closed'); }};
}

let zone = 'Asia/Shanghai';  // replaced by the consortium's zone once the session is read

/** `2026-12-02 23:44` in the consortium's zone (not the browser's); '' for no time. */
export function localTime(iso, {seconds = false} = {}) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    second: '2-digit', hourCycle: 'h23'}).formatToParts(d).map((p) => [p.type, p.value]));
  const text = `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
  return seconds ? `${text}:${parts.second}` : text;
}

/** Text for HTML built by hand: every value from data goes through this. */
export function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
}

// The header of a page with a signed-in user: names, and 退出 (sign out) ending the session on the server.
async function header() {
  const who = document.getElementById('desk-who');
  if (!who) return;
  const s = await session();
  if (s.timezone) zone = s.timezone;
  document.getElementById('desk-name').textContent = s.name || s.user;
  document.getElementById('desk-org').textContent = s.organization_name || s.organization;
  document.getElementById('desk-signout').addEventListener('click', async () => {
    try { await api('/api/v1/session', {method: 'DELETE'}); } finally { location.assign('/signin'); }
  });
}

if (document.getElementById('desk-who')) {
  session().then((s) => { if (s.timezone) zone = s.timezone; });
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', header);
  else header();
}
