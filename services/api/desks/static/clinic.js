// The clinic's desk (docs/desks.md): studies sent and their state, reading / consultation
// requests, the live results inbox (危急值 stand out and are acknowledged by a person), the report
// as printed, consultations and orders.  Only the public API, with the session cookie.
import {api, events, localTime, esc, session} from './desk.js';

const $ = (id) => document.getElementById(id);
const STATE = {
  received: '已接收 received', requested: '已申请 requested', queued: '阅片中 in reading', claimed: '阅片中 in reading',
  draft: '阅片中 in reading', submitted: '审核中 in review', signed: '已签发 signed', escalated: '已上转 escalated',
  returned: '退回重扫 returned', cancelled: '已取消 cancelled',
};
const RETURN_REASON = {image_quality: '图像质量 image quality', wrong_exam: '检查不符 wrong exam', incomplete: '不完整 incomplete'};
const CONSULT = {
  requested: '已申请 requested', triaged: '已分诊 triaged', scheduled: '已排期 scheduled', in_progress: '进行中 in progress',
  concluded: '已完成 concluded', withdrawn: '已撤回 withdrawn', cancelled: '已取消 cancelled', no_show: '未到 no show',
};
const ORDER = {scheduled: '已预约 scheduled', in_progress: '检查中 in progress', completed: '已完成 completed',
               discontinued: '中止 discontinued', cancelled: '已取消 cancelled'};
const KIND = {imaging: '影像', ecg: '心电', consultation: '会诊'};

const name = (pn) => String(pn || '').split('=').pop().replace(/\^/g, ' ').trim() || '—';
const chip = (text, cls) => `<span class="clinic-chip ${cls || ''}">${esc(text)}</span>`;
let results = [];
let shown = null;  // the result open in the report dialog
let me = {user: null, name: null};
session().then((s) => { me = s; }).catch(() => {});
// Who acknowledged: the person's name when it is the one signed in here, else the user id.
const ackBy = (r) => { const by = r.acknowledgement && r.acknowledgement.by; return by && by === me.user ? `${me.name} (${by})` : by; };

// --- studies sent -----------------------------------------------------------------------------
function studyState(study) {
  const requests = study.reading_requests || [];
  if (!requests.length) return chip(STATE.received, 'st-received');
  return requests.map((r) => {
    let text = STATE[r.state] || r.state;
    if (r.state === 'returned' && r.return)
      text += ' · ' + (RETURN_REASON[r.return.reason_code] || r.return.reason_code) + (r.return.comment ? ' · ' + r.return.comment : '');
    return chip(text, 'st-' + r.state) + (r.green_channel ? chip('绿色通道 ' + r.green_channel, 'green') : '');
  }).join(' ');
}

async function loadStudies() {
  const page = await api('/api/v1/studies?limit=100');
  $('studies').tBodies[0].innerHTML = page.items.length ? page.items.map((s) => `
    <tr data-study="${esc(s.id)}" data-state="${esc(((s.reading_requests || []).slice(-1)[0] || {}).state || 'received')}">
      <td>${esc(name(s.patient_name))}<br><small>${esc(s.patient_id || '')}</small></td>
      <td>${esc((s.modalities || []).join('/'))} ${esc(s.study_description || '')}<br><small>${esc(localTime(s.first_received_at || s.last_update_at))}</small></td>
      <td data-col="state">${studyState(s)}</td>
      <td><button type="button" data-request="${esc(s.id)}" data-patient="${esc(s.patient_id || '')}"
        data-modalities="${esc((s.modalities || []).join(','))}">申请 <small>request</small></button></td>
    </tr>`).join('') : '<tr class="empty"><td colspan="4">尚无检查 <small>no study sent yet</small></td></tr>';
}

async function loadRefusals() {
  const page = await api('/api/v1/gateway/refusals?limit=20');
  $('refusals').tBodies[0].innerHTML = page.items.length ? page.items.map((r) => `
    <tr data-refusal="${esc(r.id)}" class="${r.kind === 'quarantined' ? 'quarantined' : 'refused'}">
      <td>${esc(localTime(r.at))}</td><td>${esc(r.calling_ae)}</td>
      <td>${r.kind === 'quarantined' ? chip('已隔离 quarantined', 'st-returned') : chip('拒收 refused ' + (r.status || ''), 'st-critical')}
        ${esc(r.reason)}<br><small>${esc(r.sop_instance_uid)}</small></td>
    </tr>`).join('') : '<tr class="empty"><td colspan="3">无 <small>none</small></td></tr>';
}

function openRequest(button) {
  const form = $('request-form');
  form.reset();
  form.dataset.study = button.dataset.request;
  form.dataset.patient = button.dataset.patient;
  $('request-kind').value = button.dataset.modalities.split(',').includes('ECG') ? 'ecg' : 'imaging';
  $('request-study').textContent = button.dataset.request;
  $('request-error').textContent = '';
  toggleWhat();
  $('request-dialog').showModal();
}

function toggleWhat() {
  const consult = $('request-form').what.value === 'consultation';
  $('reading-fields').hidden = $('reading-extras').hidden = consult;
  $('consultation-fields').hidden = !consult;
}

async function submitRequest() {
  const form = $('request-form');
  const priority = $('request-priority').value;
  $('request-submit').disabled = true;
  try {
    if (form.what.value === 'consultation') {
      await api('/api/v1/consultations', {method: 'POST', body: {
        chief_complaint: $('request-complaint').value.trim(), question: $('request-consult-question').value.trim(),
        urgency: priority, patient_id: form.dataset.patient || null, study_uids: [form.dataset.study]}});
      loadConsultations();
    } else {
      await api('/api/v1/reading-requests', {method: 'POST', body: {
        study_uid: form.dataset.study, kind: $('request-kind').value, priority,
        clinical_question: $('request-question').value.trim(), green_channel: $('request-green').value || null,
        signed_resident: $('request-resident').checked}});
    }
    $('request-dialog').close();
    await loadStudies();
  } catch (err) {
    $('request-error').textContent = err.message;  // the API's detail: nothing was requested
  } finally {
    $('request-submit').disabled = false;
  }
}

// --- results ----------------------------------------------------------------------------------
function resultState(r) {
  if (r.source === 'returned') return chip(STATE.returned, 'st-returned');
  if (r.acknowledged_at) {
    const by = ackBy(r);
    return chip('已确认 acknowledged', 'st-acked') + (by ? `<br><small>${esc(by)} · ${esc(localTime(r.acknowledged_at))}</small>` : '');
  }
  return r.critical ? chip('待确认 to acknowledge', 'st-critical') : chip('未确认 unacknowledged', 'st-new');
}

function renderResults() {
  const onlyOpen = $('results-unacked').checked;
  const list = results.filter((r) => !onlyOpen || !r.acknowledged_at);
  $('results').tBodies[0].innerHTML = list.length ? list.map((r) => {
    const critical = r.critical && !r.acknowledged_at;
    const impression = r.source === 'returned'
      ? (RETURN_REASON[r.return_reason_code] || r.return_reason_code || '') + (r.return_comment ? ' · ' + r.return_comment : '')
      : r.impression;
    return `
    <tr data-result="${esc(r.id)}" class="${critical ? 'critical' : ''} ${r.critical ? 'was-critical' : ''}">
      <td>${r.critical ? '<b class="clinic-crit">危急值</b> ' : ''}${esc(name(r.patient_name))}<br><small>${esc(r.patient_id || '')}</small></td>
      <td>${esc(KIND[r.kind] || r.kind)}${r.critical_category ? '<br><b class="clinic-crit-cat">' + esc(r.critical_category) + '</b>' : ''}</td>
      <td class="clinic-impression">${esc(impression || '')}</td>
      <td>${esc(r.reader_name || '')}<br><small>${esc(localTime(r.signed_at))}</small></td>
      <td data-col="state">${resultState(r)}</td>
      <td><button type="button" data-open="${esc(r.id)}">查看 <small>open</small></button></td>
    </tr>`;
  }).join('') : '<tr class="empty"><td colspan="6">暂无结果 <small>no result</small></td></tr>';
  const waiting = results.filter((r) => r.critical && !r.acknowledged_at);
  const banner = $('critical-banner');
  banner.hidden = !waiting.length;
  banner.innerHTML = waiting.length ? `危急值 ${waiting.length} 条待确认 <small>critical result(s) waiting for a person to acknowledge</small>: `
    + waiting.map((r) => `<button type="button" data-open="${esc(r.id)}">${esc(name(r.patient_name))} · ${esc(r.critical_category || '')}</button>`).join(' ') : '';
  document.body.dataset.results = String(results.length);
}

async function loadResults() {
  const page = await api('/api/v1/results?limit=100');
  results = page.items;
  renderResults();
  if (shown) { const again = results.find((r) => r.id === shown.id); if (again) showReport(again); }
}

function showReport(r) {
  shown = r;
  const returned = r.source === 'returned';
  $('report-body').innerHTML = `
    <h2>${r.critical ? '<b class="clinic-crit">危急值 critical</b> ' : ''}${returned ? '退回重扫 Returned for re-scan' : '诊断报告 Report'}</h2>
    <dl class="clinic-report-grid">
      <dt>患者 <small>patient</small></dt><dd>${esc(name(r.patient_name))} · ${esc(r.patient_id || '')}</dd>
      <dt>检查 <small>exam</small></dt><dd>${esc(KIND[r.kind] || r.kind)} · ${esc(r.accession_number || r.study_uid || '')}</dd>
      ${r.critical_category ? `<dt>危急值 <small>category</small></dt><dd class="clinic-crit-cat">${esc(r.critical_category)}</dd>` : ''}
      ${returned ? `<dt>原因 <small>reason</small></dt><dd>${esc(RETURN_REASON[r.return_reason_code] || r.return_reason_code || '')} ${esc(r.return_comment || '')}</dd>` : `
      <dt>所见 <small>findings</small></dt><dd class="clinic-text">${esc(r.findings)}</dd>
      <dt>印象 <small>impression</small></dt><dd class="clinic-text">${esc(r.impression)}</dd>`}
      <dt>报告医生 <small>signed by</small></dt><dd>${esc(r.reader_name || '')} · ${esc(localTime(r.signed_at))}</dd>
      ${r.acknowledged_at ? `<dt>确认 <small>acknowledged</small></dt><dd data-ack>${esc(ackBy(r) || '')} · ${esc(localTime(r.acknowledged_at))}</dd>` : ''}
    </dl>`;
  $('report-pdf').href = '/api/v1/results/' + encodeURIComponent(r.id) + '/pdf';
  $('report-pdf').hidden = $('report-print').hidden = returned;
  $('report-ack').hidden = $('ack-note').hidden = $('ack-note-label').hidden = Boolean(r.acknowledged_at);
  $('report-error').textContent = '';
  if (!$('report-dialog').open) { $('ack-note').value = ''; $('report-dialog').showModal(); }
}

async function acknowledge() {
  $('report-ack').disabled = true;
  try {
    const note = $('ack-note').value.trim();
    const done = await api('/api/v1/results/' + encodeURIComponent(shown.id) + '/acknowledge',
                           {method: 'POST', body: note ? {note} : {}});
    results = results.map((r) => (r.id === done.id ? done : r));
    renderResults();
    showReport(done);
  } catch (err) {
    $('report-error').textContent = err.message;
  } finally {
    $('report-ack').disabled = false;
  }
}

async function printReport() {
  // The signed PDF is what is printed (the paper the patient takes home); it opens in the
  // browser's viewer, whose print button prints it.  Before the PDF exists, say why.
  try {
    const resp = await fetch($('report-pdf').href, {method: 'GET', credentials: 'same-origin'});
    if (!resp.ok) { const p = await resp.json().catch(() => ({})); throw new Error(p.detail || resp.statusText); }
    const url = $('report-pdf').href;  // same origin (the page's CSP allows frames of 'self' only)
    const frame = document.createElement('iframe');
    frame.className = 'clinic-print-frame';
    frame.src = url;
    frame.addEventListener('load', () => { try { frame.contentWindow.print(); } catch (_) { window.open(url); } });
    document.body.append(frame);
    document.body.dataset.printed = shown.id;
  } catch (err) {
    $('report-error').textContent = '报告单尚未生成 (the printed report is not ready): ' + err.message;
  }
}

// --- consultations and orders -----------------------------------------------------------------
async function loadConsultations() {
  const page = await api('/api/v1/consultations?limit=50');
  $('consultations').tBodies[0].innerHTML = page.items.length ? page.items.map((c) => `
    <tr data-consultation="${esc(c.id)}">
      <td>${esc(name(c.patient_name))}</td><td>${esc(c.question || c.chief_complaint || '')}</td>
      <td>${esc(CONSULT[c.state] || c.state)}</td>
      <td>${c.slot_start ? esc(localTime(c.slot_start)) + ' – ' + esc(localTime(c.slot_end).slice(11)) : '—'}</td>
      <td>${c.meeting_url && /^https?:\/\//.test(c.meeting_url)
        ? `<a href="${esc(c.meeting_url)}" target="_blank" rel="noopener">进入会议 <small>join</small></a>` : '—'}</td>
    </tr>`).join('') : '<tr class="empty"><td colspan="5">暂无会诊 <small>no consultation</small></td></tr>';
}

async function loadOrders() {
  const page = await api('/api/v1/orders?limit=50');
  $('orders').tBodies[0].innerHTML = page.items.length ? page.items.map((o) => `
    <tr data-order="${esc(o.id)}">
      <td>${esc(name(o.patient_name))}<br><small>${esc(o.patient_id)}</small></td>
      <td>${esc(o.modality)} ${esc(o.procedure_name || o.procedure_code || '')}<br><small>${esc(o.accession_number)}</small></td>
      <td>${esc(ORDER[o.state] || o.state)}</td><td>${esc(localTime(o.created_at))}</td>
    </tr>`).join('') : '<tr class="empty"><td colspan="4">暂无申请单 <small>no order</small></td></tr>';
}

function live(state) {
  const el = $('clinic-live');
  el.className = 'clinic-live' + (state === 'open' ? '' : ' off');
  el.innerHTML = state === 'open' ? '实时 <small>live</small>' : '重连中 <small>reconnecting</small>';
}

function guard(load, where) {
  return load().catch((err) => { where.textContent = err.message; });
}

document.addEventListener('click', (e) => {
  const open = e.target.closest('[data-open]');
  if (open) { const r = results.find((x) => x.id === open.dataset.open); if (r) showReport(r); return; }
  const request = e.target.closest('button[data-request]');
  if (request) openRequest(request);
});
$('request-form').addEventListener('change', (e) => { if (e.target.name === 'what') toggleWhat(); });
$('request-form').addEventListener('submit', (e) => { e.preventDefault(); submitRequest(); });
$('request-cancel').addEventListener('click', () => $('request-dialog').close());
$('report-close').addEventListener('click', () => { shown = null; $('report-dialog').close(); });
$('report-ack').addEventListener('click', acknowledge);
$('report-print').addEventListener('click', printReport);
$('results-unacked').addEventListener('change', renderResults);
$('studies-refresh').addEventListener('click', () => { loadStudies(); loadRefusals(); });

const errors = $('request-error');
Promise.all([guard(loadResults, errors), guard(loadStudies, errors), guard(loadRefusals, errors),
             guard(loadConsultations, errors), guard(loadOrders, errors)]).then(() => { document.body.dataset.ready = 'true'; });
// Results arrive live: any pushed change reloads the inbox (a summary names no findings).
events('/api/v1/results/stream', () => { loadResults(); loadStudies(); }, {onState: live});
// Studies arrive from the modality, which pushes nothing here: look again every 15 s while shown.
setInterval(() => { if (!document.hidden) { loadStudies().catch(() => {}); loadRefusals().catch(() => {}); } }, 15000);
