// The reader's desk (docs/desks.md): the centre's worklist, live over /api/v1/worklist/stream; a task
// opened shows OHIF (/viewer/, same origin: the session cookie authorises its DICOMweb calls) or the
// ECG sheet beside the report editor.  Only the public API; no build step.
import {api, events, localTime, esc, session} from './desk.js';

const $ = (id) => document.getElementById(id);
const PRIORITY = {stat: '危急 STAT', urgent: '加急 Urgent', routine: '常规 Routine'};
const STATE = {requested: '待分派 Requested', queued: '待领取 Queued', claimed: '已领取 Claimed', draft: '草稿 Draft',
  submitted: '待审核 Submitted', signed: '已签发 Signed', escalated: '已上转 Escalated', returned: '已退回 Returned',
  cancelled: '已取消 Cancelled'};
const MEASURES = {heart_rate: '心率 HR', rr: 'RR间期 RR', pr: 'PR间期 PR', qrs: 'QRS时限 QRS', qt: 'QT间期 QT',
  qtc_bazett: 'QTc (Bazett)', qtc_fridericia: 'QTc (Fridericia)'};
const EDITING = new Set(['claimed', 'draft']);
const AUTOSAVE_MS = 1200, RENEW_EVERY_MS = 60_000, ACTIVE_MS = 180_000;

const st = {view: 'worklist', rows: [], index: 0, me: null, task: null, study: null, template: null,
  dirty: false, saveTimer: null, saving: null, activity: Date.now(), reason: null, origins: new Set()};

function status(text) { $('rd-status').textContent = text; }
function error(err) { $('rd-error').textContent = err ? (err.message || String(err)) : ''; }

function filters() {
  return {kind: $('f-kind').value, priority: $('f-priority').value,
    modality: $('f-modality').value.trim().toUpperCase(), origin: $('f-origin').value};
}

// --- the list -------------------------------------------------------------------------------

let reloadTimer = null;
function reloadSoon(delay = 80) {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadList().catch(error), delay);
}

async function loadList() {
  const f = filters();
  let rows;
  if (st.view === 'worklist') {
    const q = new URLSearchParams({limit: '100'});
    for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
    rows = (await api('/api/v1/worklist?' + q)).items;
  } else {  // the review queue and the signed ones (for an addendum): the centre's requests in that state
    rows = (await api(`/api/v1/reading-requests?state=${st.view}&limit=100`)).items.filter((r) =>
      (!f.kind || r.kind === f.kind) && (!f.priority || r.priority === f.priority)
      && (!f.modality || r.modality === f.modality) && (!f.origin || r.organization === f.origin));
  }
  const current = st.rows[st.index] && st.rows[st.index].id;
  st.rows = rows;
  const again = rows.findIndex((r) => r.id === current);
  st.index = again >= 0 ? again : Math.min(st.index, Math.max(rows.length - 1, 0));
  for (const r of rows) if (r.organization && !st.origins.has(r.organization)) addOrigin(r.organization);
  if (st.view === 'worklist') $('rd-count').textContent = rows.length >= 100 ? '100+' : String(rows.length);
  renderRows();
}

function addOrigin(org) {
  st.origins.add(org);
  const opt = document.createElement('option');
  opt.value = org; opt.textContent = org;
  $('f-origin').append(opt);
}

function countdown(iso) {
  if (!iso) return '';
  const left = Math.round((new Date(iso) - Date.now()) / 1000);
  const abs = Math.abs(left), h = Math.floor(abs / 3600), m = Math.floor((abs % 3600) / 60), s = abs % 60;
  const text = h ? `${h}时${String(m).padStart(2, '0')}分` : `${m}分${String(s).padStart(2, '0')}秒`;
  return left >= 0 ? `剩 ${text}` : `超时 ${text}`;
}

function rowHtml(r, i) {
  const marks = [];
  if (r.green_channel) marks.push(`<span class="rd-mark rd-green" title="绿色通道 Green channel">绿色通道 ${esc(r.green_channel)}</span>`);
  if (r.signed_resident) marks.push('<span class="rd-mark rd-resident" title="签约居民 Signed resident">签约</span>');
  if (r.sla_at_risk) marks.push('<span class="rd-mark rd-risk" title="SLA 风险 At risk">超时风险 SLA</span>');
  if (r.escalated_from) marks.push(`<span class="rd-mark">上转自 ${esc(r.escalated_from)}</span>`);
  const mine = r.claimed_by && r.claimed_by === st.me;
  const action = r.state === 'queued'
    ? `<button type="button" class="rd-claim desk-primary" data-id="${esc(r.id)}">领取 <small>Claim</small></button>`
    : `<button type="button" class="rd-open" data-id="${esc(r.id)}">打开 <small>Open</small></button>`;
  return `<div class="rd-row rd-${esc(r.priority)}${r.sla_at_risk ? ' rd-at-risk' : ''}${i === st.index ? ' rd-selected' : ''}"
    role="option" data-id="${esc(r.id)}" data-index="${i}" aria-selected="${i === st.index}">
  <span class="rd-prio">${esc(PRIORITY[r.priority] || r.priority)}</span>
  <span class="rd-who"><b>${esc(r.patient_name || r.patient_id || '')}</b> <small>${esc(r.patient_id || '')}</small></span>
  <span class="rd-exam">${esc(r.modality || r.kind)} · ${esc(r.study_description || '')}</span>
  <span class="rd-origin" title="来源 Origin">${esc(r.organization || '')}</span>
  <span class="rd-deadline" data-deadline="${esc(r.deadline || '')}" title="${esc(localTime(r.deadline))}">${esc(countdown(r.deadline))}</span>
  <span class="rd-state">${esc(STATE[r.state] || r.state)}${r.claimed_by_name ? ' · ' + esc(r.claimed_by_name) : ''}${mine ? ' (我)' : ''}</span>
  <span class="rd-marks">${marks.join('')}</span>
  <span class="rd-act">${action}</span>
</div>`;
}

function renderRows() {
  $('rd-rows').innerHTML = st.rows.map(rowHtml).join('');
  $('rd-empty').hidden = st.rows.length > 0;
}

function select(i) {
  if (!st.rows.length) return;
  st.index = Math.max(0, Math.min(i, st.rows.length - 1));
  for (const el of $('rd-rows').querySelectorAll('.rd-row')) {
    const on = Number(el.dataset.index) === st.index;
    el.classList.toggle('rd-selected', on);
    el.setAttribute('aria-selected', String(on));
    if (on) el.scrollIntoView({block: 'nearest'});
  }
}

function tick() {  // countdowns move with the clock alone
  for (const el of document.querySelectorAll('[data-deadline]')) el.textContent = countdown(el.dataset.deadline);
  if (st.task) showLease();
}

// --- a task -------------------------------------------------------------------------------

async function claim(id) {
  error();
  try {
    await api(`/api/v1/reading-requests/${encodeURIComponent(id)}/claim`, {method: 'POST', body: {}});
  } catch (err) { error(err); reloadSoon(0); return; }
  await openTask(id);
  reloadSoon(0);
}

function content() {
  const fields = {};
  for (const el of $('rd-fields').querySelectorAll('[data-field]')) {
    if (el.value === '') continue;
    fields[el.dataset.field] = el.type === 'number' ? Number(el.value) : el.value;
  }
  const critical = $('rd-critical').checked;
  const body = {findings: $('rd-findings').value, impression: $('rd-impression').value, critical,
    critical_category: critical ? ($('rd-critical-category').value.trim() || null) : null};
  if (st.template) Object.assign(body, {template_id: st.template.template_id || st.template.id, template_version: st.template.version, fields});
  return body;
}

async function openTask(id) {
  error();
  const task = await api(`/api/v1/reading-requests/${encodeURIComponent(id)}`);
  const opening = !st.task || st.task.id !== task.id;
  st.task = task;
  $('rd').classList.add('rd-open');
  $('rd-task').hidden = false;
  $('rd-task-title').innerHTML = `<b>${esc(task.patient_name || task.patient_id || '')}</b>
    <span>${esc(task.modality || task.kind)} · ${esc(task.study_description || '')}</span>
    <span class="rd-prio rd-${esc(task.priority)}">${esc(PRIORITY[task.priority] || task.priority)}</span>
    <span>${esc(STATE[task.state] || task.state)}</span><span>${esc(task.organization || '')}</span>`;
  $('rd-clinical').innerHTML = `<b>临床问题 <small>Clinical question</small>:</b> ${esc(task.clinical_question || '')}
    ${task.sent_back ? `<p class="rd-sentback">退回意见 <small>Sent back</small>: ${esc(task.sent_back.comment || '')}</p>` : ''}
    ${task.returned ? `<p>退回重扫 <small>Returned</small>: ${esc(task.returned.reason_code)} ${esc(task.returned.comment || '')}</p>` : ''}`;
  showActions();
  showLease();
  if (opening) {  // section titles as the report prints them when no template says otherwise
    $('rd-findings-label').innerHTML = `${task.kind === 'ecg' ? '心电图所见' : '影像所见'} <small>Findings</small>`;
    $('rd-impression-label').innerHTML = '诊断意见 <small>Impression</small>';
    fillEditor(task.draft || {});
    await Promise.all([showImages(task), loadTemplates(task)]);
  }
}

function fillEditor(d) {
  $('rd-findings').value = d.findings || '';
  $('rd-impression').value = d.impression || '';
  $('rd-critical').checked = !!d.critical;
  $('rd-critical-category').value = d.critical_category || '';
  st.dirty = false;
  st.pendingFields = d.fields || {};
  st.pendingTemplate = d.template_id || null;
}

function showActions() {
  const t = st.task, mine = t.claimed_by === st.me, editing = mine && EDITING.has(t.state);
  const review = t.state === 'submitted', signed = t.state === 'signed';
  const show = (id, on) => { $(id).hidden = !on; };
  show('rd-claim', t.state === 'queued');
  show('rd-save', editing || review);
  show('rd-sign', editing);
  show('rd-countersign', review);
  show('rd-sendback', review);
  show('rd-escalate', editing);
  show('rd-return', editing);
  show('rd-release', editing);
  show('rd-addendum', signed && !!t.report_id);
  for (const el of $('rd-editor').querySelectorAll('textarea:not(#rd-addendum-text), input, select:not(#rd-return-code)')) {
    el.disabled = !(editing || review);
  }
  $('rd-reason').hidden = true;
}

function showLease() {
  const t = st.task;
  $('rd-lease').textContent = t && t.claimed_by === st.me && t.lease_expires_at && EDITING.has(t.state)
    ? `租约 Lease ${countdown(t.lease_expires_at)} (${localTime(t.lease_expires_at, {seconds: true})})` : '';
}

async function showImages(task) {
  const viewer = $('rd-viewer'), ecg = $('rd-ecg');
  $('rd-prior-viewer').hidden = true;
  $('rd-frames').classList.remove('rd-two');
  if (task.kind === 'ecg') {
    viewer.hidden = true; viewer.removeAttribute('src');
    ecg.hidden = false;
    await showEcg(task.study_uid);
  } else {
    ecg.hidden = true; ecg.innerHTML = '';
    viewer.hidden = false;
    viewer.src = `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(task.study_uid)}`;
  }
  await showPriors(task.study_uid);
}

async function showEcg(uid) {
  const study = await api(`/api/v1/studies/${encodeURIComponent(uid)}`);
  const inst = (study.instances || []).find((i) => /^1\.2\.840\.10008\.5\.1\.4\.1\.1\.9\./.test(i.sop_class_uid || ''))
    || (study.instances || [])[0];
  if (!inst) { $('rd-ecg').textContent = '没有心电图实例 No ECG instance'; return; }
  const base = `/api/v1/studies/${encodeURIComponent(uid)}/instances/${encodeURIComponent(inst.id)}/ecg`;
  let table = '';
  try {
    const m = await api(base + '/measurements');
    const rows = Object.entries(m.measurements || {}).map(([k, v]) => {
      const shown = v && typeof v === 'object'
        ? (v.available === false ? `不可用 n/a (${v.reason || ''})` : `${v.value}${v.unit ? ' ' + v.unit : ''}`) : v;
      return `<tr><th>${esc(MEASURES[k] || k)}</th><td>${esc(shown)}</td></tr>`;
    }).join('');
    table = `<div class="rd-preread"><h3>自动测量 · 预判，非报告 <small>Automatic pre-read, not a report</small></h3>
      <p>导联 Lead ${esc(m.lead || '')} · ${esc(m.method || '')}</p><table>${rows}</table></div>`;
  } catch (err) { table = `<p class="desk-error">${esc(err.message)}</p>`; }
  $('rd-ecg').innerHTML = `<img class="rd-ecg-sheet" alt="12导联心电图 12-lead ECG" src="${esc(base)}.svg">${table}`;
}

async function showPriors(uid) {
  const box = $('rd-priors');
  box.innerHTML = '';
  let priors = [];
  try { priors = (await api(`/api/v1/studies/${encodeURIComponent(uid)}/priors`)).items; } catch (err) { error(err); }
  if (!priors.length) { box.innerHTML = '<span class="rd-muted">无既往检查 <small>No priors</small></span>'; return; }
  box.innerHTML = '<span>既往 <small>Priors</small>:</span>' + priors.map((p) =>
    `<button type="button" class="rd-prior" data-uid="${esc(p.id)}">${esc(p.study_date || '')} ${esc((p.modalities || []).join('/'))}
     ${esc(p.study_description || '')} <small>${esc(p.organization || '')}</small>${(p.reports || []).length ? ' · 有报告' : ''}</button>`).join('');
}

// OHIF opens with its study browser beside the image; in a frame this narrow that leaves the image a
// sliver (a phone: 50 px), so the panel is folded once OHIF has drawn it (same origin: its DOM is ours
// to touch).  The reader can unfold it with OHIF's own button.
function foldStudyBrowser(frame) {
  if (frame.clientWidth >= 900) return;
  let tries = 0;
  const timer = setInterval(() => {
    let doc = null;
    try { doc = frame.contentDocument; } catch (_) { clearInterval(timer); return; }
    const panel = doc && doc.querySelector('[data-cy="studyBrowser-panel"]');
    const toggle = doc && doc.querySelector('[data-cy="side-panel-header-left"]');
    if (panel && toggle) { toggle.click(); clearInterval(timer); }
    if (++tries > 150) clearInterval(timer);
  }, 200);
}

function openPrior(uid) {
  const frame = $('rd-prior-viewer');
  frame.hidden = false;
  frame.src = `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`;
  $('rd-frames').classList.add('rd-two');
}

// --- templates and structured fields --------------------------------------------------------

async function loadTemplates(task) {
  const q = new URLSearchParams({kind: task.kind});
  if (task.modality) q.set('modality', task.modality);
  const select = $('rd-template');
  select.innerHTML = '<option value="">不用模板 No template</option>';
  st.template = null;
  $('rd-fields').innerHTML = '';
  let list = [];
  try { list = (await api('/api/v1/report-templates?' + q)).items || []; } catch (err) { error(err); }
  for (const t of list) {
    const opt = document.createElement('option');
    const id = t.template_id || t.id;  // `id` is the stored version's (`head-ct-plain@2`)
    opt.value = id; opt.textContent = `${t.name} (${id})`;
    select.append(opt);
  }
  if (st.pendingTemplate) { select.value = st.pendingTemplate; await useTemplate(st.pendingTemplate, false); }
}

async function useTemplate(id, fillNormal) {
  if (!id) { st.template = null; $('rd-fields').innerHTML = ''; return; }
  const t = await api(`/api/v1/report-templates/${encodeURIComponent(id)}`);
  st.template = t;
  const sections = t.sections || {};
  if (sections.findings && sections.findings.title) $('rd-findings-label').innerHTML = `${esc(sections.findings.title)} <small>Findings</small>`;
  if (sections.impression && sections.impression.title) $('rd-impression-label').innerHTML = `${esc(sections.impression.title)} <small>Impression</small>`;
  const values = fillNormal ? {} : (st.pendingFields || {});
  const normal = t.normal_report || {};
  $('rd-fields').innerHTML = (t.fields || []).map((f) => {
    const v = values[f.key] ?? (fillNormal ? (f.normal ?? '') : '');
    if (f.type === 'choice') {
      return `<label>${esc(f.label)}<select data-field="${esc(f.key)}"><option value=""></option>${
        (f.choices || []).map((c) => `<option${String(c) === String(v) ? ' selected' : ''}>${esc(c)}</option>`).join('')}</select></label>`;
    }
    const type = f.type === 'number' ? 'number' : 'text';
    return `<label>${esc(f.label)}${f.unit ? ` <small>(${esc(f.unit)})</small>` : ''}<input type="${type}" data-field="${esc(f.key)}"
      value="${esc(v)}"${f.min != null ? ` min="${esc(f.min)}"` : ''}${f.max != null ? ` max="${esc(f.max)}"` : ''} step="any"></label>`;
  }).join('');
  if (fillNormal) {  // 正常模板: the normal text where the reader has written nothing yet
    if (!$('rd-findings').value.trim()) $('rd-findings').value = (normal.findings ?? (sections.findings || {}).normal) || '';
    if (!$('rd-impression').value.trim()) $('rd-impression').value = (normal.impression ?? (sections.impression || {}).normal) || '';
    changed();
  }
  const editable = !$('rd-findings').disabled;
  for (const el of $('rd-fields').querySelectorAll('[data-field]')) el.disabled = !editable;
}

// --- saving, signing, the other commands -----------------------------------------------------

function changed() {
  st.dirty = true;
  st.activity = Date.now();
  status('未保存 Unsaved…');
  clearTimeout(st.saveTimer);
  st.saveTimer = setTimeout(() => save().catch(error), AUTOSAVE_MS);
}

async function save() {
  const t = st.task;
  if (!t || !st.dirty) return;
  clearTimeout(st.saveTimer);
  if (st.saving) await st.saving;
  const path = `/api/v1/reading-requests/${encodeURIComponent(t.id)}/` + (t.state === 'submitted' ? 'review' : 'draft');
  st.dirty = false;
  st.saving = api(path, {method: 'PUT', body: content()}).then((doc) => {
    if (doc && doc.lease_expires_at) t.lease_expires_at = doc.lease_expires_at;
    if (doc && doc.state) t.state = doc.state;
    status(`草稿已保存 Draft saved ${localTime(new Date().toISOString(), {seconds: true})}`);
    error();
  }, (err) => { st.dirty = true; error(err); }).finally(() => { st.saving = null; });
  await st.saving;
}

async function command(name, body, done) {
  const t = st.task;
  error();
  clearTimeout(st.saveTimer);
  if (st.saving) await st.saving;
  try {
    const doc = await api(`/api/v1/reading-requests/${encodeURIComponent(t.id)}/${name}`, {method: 'POST', body});
    st.dirty = false;
    status(done(doc || {}));
  } catch (err) { error(err); return; }
  await openTask(t.id);
  reloadSoon(0);
}

function sign() {
  if (!st.task || $('rd-sign').hidden) return;
  const body = content();
  if (body.critical && !body.critical_category) { error('危急值须填类别 A critical finding needs its category'); return; }
  command('sign', body, (doc) => doc.state === 'submitted'
    ? '已提交上级审核 Submitted for review' : '已签发 Signed');
}

function askReason(mode) {
  st.reason = mode;
  $('rd-reason').hidden = false;
  $('rd-return-code').hidden = mode !== 'return';
  $('rd-reason-text').value = '';
  $('rd-reason-text').placeholder = {return: '说明 Comment', escalate: '上转原因 Reason to escalate',
    sendback: '退回意见 Comment for the author'}[mode];
  (mode === 'return' ? $('rd-return-code') : $('rd-reason-text')).focus();
}

function reasonOk() {
  const text = $('rd-reason-text').value.trim();
  if (st.reason === 'return') {
    const code = $('rd-return-code').value;
    if (!code) { error('请选择退回原因 Choose a reason'); return; }
    command('return', {reason_code: code, comment: text}, () => '已退回重扫 Returned for re-scan');
  } else if (st.reason === 'escalate') {
    if (!text) { error('请填写上转原因 Give a reason'); return; }
    command('escalate', {reason: text}, () => '已上转上级中心 Escalated');
  } else if (st.reason === 'sendback') {
    if (!text) { error('请填写退回意见 Give a comment'); return; }
    command('send-back', {comment: text}, () => '已退回作者 Sent back');
  }
}

async function addendum() {
  const text = $('rd-addendum-text').value.trim();
  if (!text) { error('补充内容为空 The addendum is empty'); return; }
  try {
    await api(`/api/v1/reports/${encodeURIComponent(st.task.report_id)}/addenda`, {method: 'POST', body: {text}});
    $('rd-addendum-text').value = '';
    status('补充报告已发送 Addendum added');
    error();
  } catch (err) { error(err); }
}

async function renew() {  // keep the lease while the reader works on the task
  const t = st.task;
  if (!t || t.claimed_by !== st.me || !EDITING.has(t.state) || Date.now() - st.activity > ACTIVE_MS) return;
  try {
    const doc = await api(`/api/v1/reading-requests/${encodeURIComponent(t.id)}/renew`, {method: 'POST', body: {}});
    if (doc && doc.lease_expires_at) t.lease_expires_at = doc.lease_expires_at;
    showLease();
  } catch (err) { error(err); }
}

function closeTask() {
  if (st.dirty) save().catch(error);
  $('rd').classList.remove('rd-open');
  $('rd-task').hidden = true;
  $('rd-viewer').removeAttribute('src');
  $('rd-prior-viewer').removeAttribute('src');
  st.task = null;
  $('rd-rows').focus();
}

// --- wiring -----------------------------------------------------------------------------------

function typing(el) { return el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT'); }

function onKey(e) {
  st.activity = Date.now();
  const ctrl = e.ctrlKey || e.metaKey;
  if (ctrl && (e.key === 's' || e.key === 'S')) { e.preventDefault(); st.dirty = true; save().catch(error); return; }
  if (ctrl && e.key === 'Enter') { e.preventDefault(); sign(); return; }
  if (e.key === 'Escape') { if (st.task) { e.preventDefault(); closeTask(); } return; }
  if (typing(e.target) || ctrl || e.altKey) return;
  if (e.key === 'j') { e.preventDefault(); select(st.index + 1); } else if (e.key === 'k') { e.preventDefault(); select(st.index - 1); } else if (e.key === '/') { e.preventDefault(); $('f-modality').focus(); } else if (e.key === 'Enter') {
    const r = st.rows[st.index];
    if (!r) return;
    e.preventDefault();
    if (r.state === 'queued') claim(r.id); else openTask(r.id).catch(error);
  }
}

async function main() {
  const s = await session();
  st.me = s.user;
  $('rd-rows').addEventListener('click', (e) => {
    const button = e.target.closest('button[data-id]');
    const row = e.target.closest('.rd-row');
    if (row) select(Number(row.dataset.index));
    if (!button) return;
    if (button.classList.contains('rd-claim')) claim(button.dataset.id);
    else openTask(button.dataset.id).catch(error);
  });
  for (const b of document.querySelectorAll('.rd-view')) {
    b.addEventListener('click', () => {
      st.view = b.dataset.view;
      for (const o of document.querySelectorAll('.rd-view')) o.setAttribute('aria-selected', String(o === b));
      st.index = 0;
      reloadSoon(0);
    });
  }
  for (const id of ['f-kind', 'f-priority', 'f-origin']) $(id).addEventListener('change', () => reloadSoon(0));
  $('f-modality').addEventListener('input', () => reloadSoon(300));
  $('rd-filters').addEventListener('submit', (e) => { e.preventDefault(); reloadSoon(0); });
  $('rd-priors').addEventListener('click', (e) => { const b = e.target.closest('.rd-prior'); if (b) openPrior(b.dataset.uid); });
  $('rd-editor').addEventListener('input', (e) => { if (e.target.id !== 'rd-addendum-text' && !e.target.closest('#rd-reason')) changed(); });
  $('rd-template').addEventListener('change', (e) => useTemplate(e.target.value, true).catch(error));
  $('rd-claim').addEventListener('click', () => claim(st.task.id));
  $('rd-save').addEventListener('click', () => { st.dirty = true; save().catch(error); });
  $('rd-sign').addEventListener('click', sign);
  $('rd-countersign').addEventListener('click', () => command('countersign', content(), () => '已审核签发 Countersigned'));
  $('rd-sendback').addEventListener('click', () => askReason('sendback'));
  $('rd-escalate').addEventListener('click', () => askReason('escalate'));
  $('rd-return').addEventListener('click', () => askReason('return'));
  $('rd-release').addEventListener('click', () => command('release', {}, () => '已放弃 Released').then(closeTask));
  $('rd-reason-ok').addEventListener('click', reasonOk);
  $('rd-reason-cancel').addEventListener('click', () => { $('rd-reason').hidden = true; });
  $('rd-addendum-send').addEventListener('click', addendum);
  $('rd-back').addEventListener('click', closeTask);
  for (const id of ['rd-viewer', 'rd-prior-viewer']) $(id).addEventListener('load', (e) => foldStudyBrowser(e.target));
  document.addEventListener('keydown', onKey);
  for (const t of ['mousemove', 'pointerdown', 'wheel']) document.addEventListener(t, () => { st.activity = Date.now(); }, {passive: true});
  setInterval(tick, 1000);
  setInterval(renew, RENEW_EVERY_MS);
  events('/api/v1/worklist/stream', (e) => {
    reloadSoon();
    if (st.task && e.data && e.data.request_id === st.task.id && !st.dirty) openTask(st.task.id).catch(error);
  }, {onState: (s) => { $('rd-live').classList.toggle('rd-off', s !== 'open'); }});
  await loadList();
  performance.mark('rd-worklist-shown');  // bench/desks.py: the page is usable from here
  $('rd-rows').focus();
}

main().catch(error);
