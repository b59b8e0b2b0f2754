// /desk/admin: the consortium's users through /api/v1/users (docs/desks.md).
import {api, esc, localTime, session} from './desk.js';

const ROLES = {clinic: '基层机构', reader: '阅片医生', coordinator: '调度员', admin: '管理员', auditor: '审计员'};
const $ = (id) => document.getElementById(id);
let users = [];
let consortium = {organizations: [], centres: []};
let editing = null;  // the user being edited, or null for a new one
let resetting = null;

function message(text, ok = true) {
  $('users-message').textContent = text;
  $('users-message').className = ok ? 'desk-hint desk-ok' : 'desk-error';
}

function row(u) {
  const state = u.disabled ? '<span class="desk-badge bad">已停用 Disabled</span>'
    : u.locked_until ? `<span class="desk-badge bad" title="${esc(localTime(u.locked_until))}">已锁定 Locked</span>`
      : '<span class="desk-badge ok">正常 Active</span>';
  const password = u.password_set ? `已设置 <small>${esc(localTime(u.password_changed_at))}</small>`
    : '<span class="desk-badge">未设置 Not set</span>';
  const centre = consortium.centres.find((c) => c.id === u.centre);
  return `<tr data-user="${esc(u.id)}" class="${u.disabled ? 'off' : ''}">
    <td data-label="用户 User"><b>${esc(u.name)}</b> <small>${esc(u.id)}${u.title ? ' · ' + esc(u.title) : ''}</small></td>
    <td data-label="角色 Role">${esc(ROLES[u.role] || u.role)} <small>${esc(u.role)}</small></td>
    <td data-label="机构 Org">${esc(u.organization_name || u.organization)}</td>
    <td data-label="中心 Centre">${centre ? esc(centre.name) : esc(u.centre || '—')}</td>
    <td data-label="密码 Password">${password}</td>
    <td data-label="状态 State">${state}</td>
    <td data-label="操作 Actions"><div class="desk-row">
      <button type="button" data-act="edit">编辑 <small>Edit</small></button>
      <button type="button" data-act="password">重置密码 <small>Reset</small></button>
      <button type="button" data-act="toggle" class="${u.disabled ? '' : 'desk-danger'}">${u.disabled
    ? '启用 <small>Enable</small>' : '停用 <small>Disable</small>'}</button></div></td></tr>`;
}

function render() {
  const q = $('users-search').value.trim().toLowerCase();
  const role = $('users-role').value;
  const shown = users.filter((u) => (!role || u.role === role) && (!q || [u.id, u.name, u.organization,
    u.organization_name || ''].some((s) => s.toLowerCase().includes(q))));
  $('users').tBodies[0].innerHTML = shown.map(row).join('')
    || '<tr><td colspan="7">没有符合条件的用户 <small>No users match</small></td></tr>';
}

async function load() {
  users = (await api('/api/v1/users')).items;
  render();
}

function fillCentres(org, selected) {
  const options = consortium.centres.filter((c) => c.organization === org);
  $('user-centre').innerHTML = '<option value="">—</option>'
    + options.map((c) => `<option value="${esc(c.id)}">${esc(c.name)}</option>`).join('');
  $('user-centre').value = selected || '';
}

function openUser(u) {
  editing = u;
  $('user-dialog-title').innerHTML = u ? `编辑用户 <small>Edit ${esc(u.id)}</small>` : '新建用户 <small>New user</small>';
  $('user-id').value = u ? u.id : '';
  $('user-id').disabled = !!u;
  $('user-name').value = u ? u.name : '';
  $('user-role').value = u ? u.role : 'clinic';
  $('user-org').value = u ? u.organization : consortium.organizations[0]?.id;
  fillCentres($('user-org').value, u && u.centre);
  $('user-title').value = u && u.title ? u.title : '';
  $('user-password-row').hidden = !!u;
  $('user-password').value = '';
  $('user-error').textContent = '';
  $('user-dialog').showModal();
  (u ? $('user-name') : $('user-id')).focus();
}

async function saveUser(ev) {
  ev.preventDefault();
  const body = {name: $('user-name').value.trim(), role: $('user-role').value, organization: $('user-org').value,
    centre: $('user-centre').value || null, title: $('user-title').value || null};
  $('user-save').disabled = true;
  try {
    if (editing) {
      await api(`/api/v1/users/${encodeURIComponent(editing.id)}`, {method: 'PATCH', body});
      message(`已保存 ${body.name} Saved`);
    } else {
      body.id = $('user-id').value.trim();
      if ($('user-password').value) body.password = $('user-password').value;
      await api('/api/v1/users', {method: 'POST', body});
      message(`已创建 ${body.name} Created`);
    }
    $('user-dialog').close();
    await load();
  } catch (err) {
    $('user-error').textContent = err.message;
  } finally {
    $('user-save').disabled = false;
  }
}

function openPassword(u) {
  resetting = u;
  $('password-who').textContent = `${u.name} (${u.id})`;
  $('password-new').value = $('password-again').value = '';
  $('password-error').textContent = '';
  $('password-dialog').showModal();
  $('password-new').focus();
}

async function savePassword(ev) {
  ev.preventDefault();
  if ($('password-new').value !== $('password-again').value) {
    $('password-error').textContent = '两次输入的密码不一致 The two passwords differ';
    return;
  }
  $('password-save').disabled = true;
  try {
    await api(`/api/v1/users/${encodeURIComponent(resetting.id)}/password`,
      {method: 'PUT', body: {password: $('password-new').value}});
    $('password-dialog').close();
    message(`已重置 ${resetting.name} 的密码 Password reset`);
    await load();
  } catch (err) {
    $('password-error').textContent = err.message;
  } finally {
    $('password-save').disabled = false;
  }
}

async function toggle(u) {
  const verb = u.disabled ? '启用 enable' : '停用 disable';
  if (!u.disabled && !confirm(`停用 ${u.name} (${u.id})? 其会话立即结束 Their sessions end now.`)) return;
  try {
    await api(`/api/v1/users/${encodeURIComponent(u.id)}`, {method: 'PATCH', body: {disabled: !u.disabled}});
    message(`已${verb} ${u.name}`);
    await load();
  } catch (err) {
    message(err.message, false);
  }
}

$('users').addEventListener('click', (ev) => {
  const button = ev.target.closest('button[data-act]');
  if (!button) return;
  const u = users.find((x) => x.id === button.closest('tr').dataset.user);
  if (button.dataset.act === 'edit') openUser(u);
  else if (button.dataset.act === 'password') openPassword(u);
  else toggle(u);
});
$('user-new').addEventListener('click', () => openUser(null));
$('user-org').addEventListener('change', () => fillCentres($('user-org').value, null));
$('user-form').addEventListener('submit', saveUser);
$('password-form').addEventListener('submit', savePassword);
for (const b of document.querySelectorAll('dialog [data-close]')) b.addEventListener('click', () => b.closest('dialog').close());
$('users-search').addEventListener('input', render);
$('users-role').addEventListener('change', render);

(async () => {
  await session();
  const doc = (await api('/api/v1/consortium')).document;
  consortium = {organizations: doc.organizations || [], centres: doc.centres || []};
  $('user-org').innerHTML = consortium.organizations.map((o) => `<option value="${esc(o.id)}">${esc(o.name)}</option>`).join('');
  await load();
})().catch((err) => message(err.message, false));
