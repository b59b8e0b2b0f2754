// /signin: post the user's name and password to POST /api/v1/session, then go where he was going.

const params = new URLSearchParams(location.search);

/** Only a path of this site: never `//elsewhere` or `https://…` (no open redirect). */
function nextPath() {
  const next = params.get('next') || '';
  return /^\/(?![\/\\])/.test(next) ? next : '/desk';
}

const form = document.getElementById('signin-form');
const error = document.getElementById('signin-error');
const submit = document.getElementById('signin-submit');

// Already signed in (another tab): straight on.
fetch('/api/v1/session', {credentials: 'same-origin', headers: {Accept: 'application/json'}})
  .then((resp) => { if (resp.ok) location.replace(nextPath()); })
  .catch(() => {});

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  error.textContent = '';
  const user = document.getElementById('signin-user').value.trim();
  const password = document.getElementById('signin-password').value;
  if (!user || !password) {
    error.textContent = '请输入用户名和密码 Enter your user name and password';
    return;
  }
  submit.disabled = true;
  try {
    const resp = await fetch('/api/v1/session', {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', Accept: 'application/json'},
      body: JSON.stringify({user, password}),
    });
    if (resp.ok) {
      location.replace(nextPath());
      return;
    }
    let detail = `${resp.status}`;
    try { detail = (await resp.json()).detail || detail; } catch (_) { /* not JSON */ }
    error.textContent = detail;
    document.getElementById('signin-password').value = '';
    document.getElementById('signin-password').focus();
  } catch (err) {
    error.textContent = '无法连接服务器 Cannot reach the server: ' + err.message;
  } finally {
    submit.disabled = false;
  }
});
