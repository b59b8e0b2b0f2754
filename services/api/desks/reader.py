"""``/desk/reader``: the reading centre's desk — the live worklist, OHIF beside the report editor.

The page is markup only; ``static/reader.js`` fills it from the public API (``/api/v1/worklist``
and its stream, the reading-request commands, templates, priors, the ECG sheet) and frames the
OHIF Viewer (``/viewer/``) for the images.  See docs/desks.md.
"""

from __future__ import annotations

from aiohttp import web

from ...core.consortium import PRIORITIES
from ...core.http import principal
from ...workflow.commands import RETURN_REASONS
from .layout import page

routes = web.RouteTableDef()

PRIORITY_LABELS = {"stat": "危急 STAT", "urgent": "加急 Urgent", "routine": "常规 Routine"}
RETURN_LABELS = {"image_quality": "图像质量 Image quality", "wrong_exam": "检查项目不符 Wrong exam",
                 "incomplete": "检查不完整 Incomplete"}
KEYS = (("j / k", "下一条 / 上一条 Next / previous"), ("Enter", "打开或领取 Open / claim"),
        ("Ctrl+S", "保存草稿 Save draft"), ("Ctrl+Enter", "签发 Sign"), ("Esc", "返回列表 Back to list"),
        ("/", "筛选 Filter"))


def _options(values: dict[str, str], first: str) -> str:
    return f'<option value="">{first}</option>' + "".join(f'<option value="{k}">{v}</option>' for k, v in values.items())


def body() -> str:
    priorities = {p: PRIORITY_LABELS.get(p, p) for p in PRIORITIES}
    returns = {r: RETURN_LABELS.get(r, r) for r in RETURN_REASONS}
    keys = "".join(f"<span><kbd>{k}</kbd> {v}</span>" for k, v in KEYS)
    return f"""<link rel="stylesheet" href="/desk/static/reader.css">
<div class="rd" id="rd">
<section class="rd-list" id="rd-list-pane" aria-label="工作列表 Worklist">
  <div class="rd-views" role="tablist">
    <button type="button" class="rd-view" data-view="worklist" aria-selected="true">待阅 <small>Worklist</small>
      <span id="rd-count" class="rd-count"></span></button>
    <button type="button" class="rd-view" data-view="submitted">待审核 <small>Review</small></button>
    <button type="button" class="rd-view" data-view="signed">已签发 <small>Signed</small></button>
    <span id="rd-live" class="rd-live" title="实时更新 Live updates">● 实时 <small>Live</small></span>
  </div>
  <form class="rd-filters" id="rd-filters">
    <select id="f-kind" aria-label="类型 Kind">{_options({"imaging": "影像 Imaging", "ecg": "心电 ECG"},
                                                      "全部类型 All kinds")}</select>
    <select id="f-priority" aria-label="优先级 Priority">{_options(priorities, "全部优先级 All priorities")}</select>
    <input id="f-modality" placeholder="模态 Modality" maxlength="16" aria-label="模态 Modality" size="8">
    <select id="f-origin" aria-label="来源 Origin"><option value="">全部来源 All origins</option></select>
  </form>
  <div class="rd-rows" id="rd-rows" role="listbox" tabindex="0" aria-label="任务 Tasks"></div>
  <p class="rd-empty" id="rd-empty" hidden>暂无任务 <small>No tasks</small></p>
</section>
<section class="rd-task" id="rd-task" hidden aria-label="阅片 Reading">
  <div class="rd-task-head">
    <button type="button" id="rd-back" class="rd-back">← 列表 <small>List</small></button>
    <div class="rd-task-title" id="rd-task-title"></div>
    <div class="rd-lease" id="rd-lease"></div>
  </div>
  <div class="rd-work">
    <div class="rd-images">
      <div class="rd-priors" id="rd-priors"></div>
      <div class="rd-frames" id="rd-frames">
        <iframe id="rd-viewer" class="rd-viewer" title="OHIF 影像 Images" referrerpolicy="no-referrer"></iframe>
        <div id="rd-ecg" class="rd-ecg" hidden></div>
        <iframe id="rd-prior-viewer" class="rd-viewer" title="既往检查 Prior" hidden referrerpolicy="no-referrer"></iframe>
      </div>
    </div>
    <form class="rd-editor" id="rd-editor" autocomplete="off">
      <div class="rd-clinical" id="rd-clinical"></div>
      <label for="rd-template">报告模板 <small>Template</small></label>
      <select id="rd-template"><option value="">不用模板 No template</option></select>
      <div class="rd-fields" id="rd-fields"></div>
      <label for="rd-findings" id="rd-findings-label">影像所见 <small>Findings</small></label>
      <textarea id="rd-findings" rows="5" maxlength="20000"></textarea>
      <label for="rd-impression" id="rd-impression-label">诊断意见 <small>Impression</small></label>
      <textarea id="rd-impression" rows="3" maxlength="20000"></textarea>
      <div class="rd-critical">
        <label><input type="checkbox" id="rd-critical"> 危急值 <small>Critical finding</small></label>
        <input id="rd-critical-category" placeholder="危急值类别 Category (如 颅内出血)" maxlength="200"
               aria-label="危急值类别 Critical category">
      </div>
      <div class="rd-actions" id="rd-actions">
        <button type="button" id="rd-claim" class="desk-primary">领取 <small>Claim</small></button>
        <button type="button" id="rd-save">保存 <small>Save</small></button>
        <button type="button" id="rd-sign" class="desk-primary">签发 <small>Sign</small></button>
        <button type="button" id="rd-countersign" class="desk-primary" hidden>审核签发 <small>Countersign</small></button>
        <button type="button" id="rd-sendback" hidden>退回修改 <small>Send back</small></button>
        <button type="button" id="rd-escalate">上转 <small>Escalate</small></button>
        <button type="button" id="rd-return">退回重扫 <small>Re-scan</small></button>
        <button type="button" id="rd-release">放弃 <small>Release</small></button>
      </div>
      <div class="rd-reason" id="rd-reason" hidden>
        <select id="rd-return-code" aria-label="退回原因 Reason">{_options(returns, "选择原因 Choose a reason")}</select>
        <input id="rd-reason-text" maxlength="2000" placeholder="说明 Reason / comment" aria-label="说明 Reason">
        <button type="button" id="rd-reason-ok" class="desk-primary">确定 <small>OK</small></button>
        <button type="button" id="rd-reason-cancel">取消 <small>Cancel</small></button>
      </div>
      <div class="rd-addendum" id="rd-addendum" hidden>
        <label for="rd-addendum-text">补充报告 <small>Addendum</small></label>
        <textarea id="rd-addendum-text" rows="3" maxlength="20000"></textarea>
        <button type="button" id="rd-addendum-send" class="desk-primary">发送补充 <small>Add</small></button>
      </div>
      <p class="rd-status" id="rd-status" role="status" aria-live="polite"></p>
      <p class="desk-error" id="rd-error" role="alert"></p>
    </form>
  </div>
</section>
<footer class="rd-keys" id="rd-keys">快捷键 <small>Keys</small>: {keys}</footer>
</div>"""


@routes.get("/desk/reader")
async def reader_desk(request: web.Request) -> web.Response:
    who = principal(request)
    if who.role != "reader":
        raise web.HTTPSeeOther("/desk")
    return page("阅片工作台 Reader's desk", body(), scripts=("reader.js",), principal=who)
