"""``/desk/clinic``: a township or village clinic's desk (docs/desks.md).

What the clinic sent and where each study stands, reading and consultation requests, the live
results inbox with critical results (危急值) to acknowledge and the report as printed, its
consultations and orders.  The page is a shell; ``static/clinic.js`` fills it from the public
API with the session cookie (``GET /api/v1/studies``, ``/results`` and its stream, ...), so the
scope is the API's: another clinic's data cannot reach it.
"""

from __future__ import annotations

from aiohttp import web

from ...core.http import principal
from .layout import page

routes = web.RouteTableDef()

BODY = """
<link rel="stylesheet" href="/desk/static/clinic.css">
<div class="clinic" id="clinic">
<section class="desk-card clinic-results" id="results-card">
  <div class="clinic-head">
    <h2>结果 <small>Results</small></h2>
    <span id="clinic-live" class="clinic-live off">未连接 <small>offline</small></span>
    <label class="clinic-filter"><input type="checkbox" id="results-unacked"> 只看未确认 <small>unacknowledged</small></label>
  </div>
  <div id="critical-banner" class="clinic-critical-banner" role="alert" hidden></div>
  <div class="clinic-scroll"><table class="clinic-table" id="results">
    <thead><tr><th>患者 <small>patient</small></th><th>检查 <small>exam</small></th><th>印象 <small>impression</small></th>
      <th>签发 <small>signed</small></th><th>状态 <small>state</small></th><th></th></tr></thead>
    <tbody></tbody>
  </table></div>
</section>

<section class="desk-card clinic-studies" id="studies-card">
  <div class="clinic-head">
    <h2>已发送检查 <small>Studies sent</small></h2>
    <button type="button" id="studies-refresh">刷新 <small>refresh</small></button>
  </div>
  <div class="clinic-scroll"><table class="clinic-table" id="studies">
    <thead><tr><th>患者 <small>patient</small></th><th>检查 <small>study</small></th><th>状态 <small>state</small></th>
      <th></th></tr></thead>
    <tbody></tbody>
  </table></div>
  <h3 class="clinic-sub">网关拒收 / 隔离 <small>refused or quarantined at the gateway</small></h3>
  <div class="clinic-scroll clinic-short"><table class="clinic-table" id="refusals">
    <thead><tr><th>时间 <small>when</small></th><th>设备 <small>modality AE</small></th><th>原因 <small>why</small></th></tr></thead>
    <tbody></tbody>
  </table></div>
</section>

<section class="desk-card clinic-consultations" id="consultations-card">
  <h2>远程会诊 <small>Consultations</small></h2>
  <div class="clinic-scroll"><table class="clinic-table" id="consultations">
    <thead><tr><th>患者 <small>patient</small></th><th>问题 <small>question</small></th><th>状态 <small>state</small></th>
      <th>时间 <small>schedule</small></th><th>会议 <small>meeting</small></th></tr></thead>
    <tbody></tbody>
  </table></div>
</section>

<section class="desk-card clinic-orders" id="orders-card">
  <h2>检查申请单 <small>Orders</small></h2>
  <div class="clinic-scroll"><table class="clinic-table" id="orders">
    <thead><tr><th>患者 <small>patient</small></th><th>检查项目 <small>procedure</small></th><th>状态 <small>state</small></th>
      <th>申请时间 <small>ordered</small></th></tr></thead>
    <tbody></tbody>
  </table></div>
</section>
</div>

<dialog id="request-dialog" class="clinic-dialog">
  <form id="request-form" method="dialog">
    <h2>申请 <small>Request</small></h2>
    <p id="request-study" class="desk-hint"></p>
    <div class="clinic-tabs">
      <label><input type="radio" name="what" value="reading" checked> 远程阅片 <small>reading</small></label>
      <label><input type="radio" name="what" value="consultation"> 远程会诊 <small>consultation</small></label>
    </div>
    <div id="reading-fields">
      <label for="request-kind">类型 <small>kind</small></label>
      <select id="request-kind"><option value="imaging">影像 imaging</option><option value="ecg">心电 ECG</option></select>
      <label for="request-question">临床问题 <small>clinical question</small></label>
      <textarea id="request-question" rows="2" maxlength="2000"></textarea>
    </div>
    <div id="consultation-fields" hidden>
      <label for="request-complaint">主诉 <small>chief complaint</small></label>
      <input id="request-complaint" maxlength="2000">
      <label for="request-consult-question">会诊问题 <small>question</small></label>
      <textarea id="request-consult-question" rows="2" maxlength="2000"></textarea>
    </div>
    <label for="request-priority">优先级 <small>priority</small></label>
    <select id="request-priority"><option value="routine">常规 routine</option><option value="urgent">加急 urgent</option>
      <option value="stat">急诊 STAT</option></select>
    <div id="reading-extras">
      <label for="request-green">绿色通道 <small>green channel</small></label>
      <select id="request-green"><option value="">无 none</option><option value="胸痛">胸痛 chest pain</option>
        <option value="卒中">卒中 stroke</option><option value="高危孕产妇">高危孕产妇 high-risk pregnancy</option>
        <option value="危重新生儿">危重新生儿 critical newborn</option></select>
      <label class="clinic-check"><input type="checkbox" id="request-resident"> 签约居民 <small>signed resident</small></label>
    </div>
    <p id="request-error" class="desk-error" role="alert"></p>
    <div class="clinic-buttons">
      <button type="button" id="request-cancel">取消 <small>cancel</small></button>
      <button type="submit" id="request-submit" class="desk-primary">提交 <small>submit</small></button>
    </div>
  </form>
</dialog>

<dialog id="report-dialog" class="clinic-dialog clinic-report">
  <div id="report-body"></div>
  <label for="ack-note" id="ack-note-label">确认备注 <small>note (optional)</small></label>
  <input id="ack-note" maxlength="2000" placeholder="例如:已电话通知患者 (e.g. patient called)">
  <p id="report-error" class="desk-error" role="alert"></p>
  <div class="clinic-buttons">
    <button type="button" id="report-close">关闭 <small>close</small></button>
    <a id="report-pdf" class="clinic-button" target="_blank" rel="noopener">报告单 PDF <small>as printed</small></a>
    <button type="button" id="report-print">打印 <small>print</small></button>
    <button type="button" id="report-ack" class="desk-primary">确认已阅 <small>acknowledge</small></button>
  </div>
</dialog>
"""


@routes.get("/desk/clinic")
async def clinic_desk(request: web.Request) -> web.Response:
    who = principal(request)
    if who.role != "clinic":
        raise web.HTTPSeeOther("/desk")  # every role has its own desk
    return page("基层工作台 Clinic desk", BODY, scripts=("clinic.js",), principal=who)
