"""The edge's status for people: what ``/status`` answers and the page at ``/`` shows.

The technician at the clinic (the box's screen, or a phone on the clinic's network) reads: is the
link to the centre up, how much waits, how fast it goes, when the last study got through, each
study's progress, and any instance the centre refused for good and why.  One status feeds the
JSON, the page and the metrics, so they never disagree.

What patient data it shows: no patient names or IDs (the page may be reachable on the clinic's
network: it binds to YILIAN_BIND_HOST like the DICOM node).  A study is named by its modality,
accession number, description and the time it came in — what the technician sees on the
modality's own screen anyway.  The page is read-only: it has no form and answers only GET.

The page works before any script runs (rendered here); a small script then fetches the same
page every few seconds and swaps its content in place, so the reader's scroll position stays
(no meta refresh).  Nothing is loaded from elsewhere: the box may be offline.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from ..core.localtime import LocalTime, utc
from ..core.store.port import Store
from .linkstate import CONNECTED, OUTAGE, REFUSED, LinkWatch
from .outbox import EDGE_STUDIES

PAGE_STUDIES = 50  # studies described in full on the page (the JSON counts them all)
RECENT = 10  # studies recently forwarded, newest first
REFRESH_SECONDS = 5.0
STUDY_FIELDS = ("modalities", "accession_number", "study_description", "study_date", "study_time")

# Why the centre refused an instance for good (PS3.4 C-STORE / PS3.18 STOW-RS failure reasons).
REFUSALS = {0x0124: ("不允许", "refused: not authorized"), 0x0122: ("SOP类不支持", "SOP class not supported")}


def refusal(code: str) -> str:
    """``0xA900`` → ``0xA900 数据集与SOP类不符 data set does not match SOP class``."""
    try:
        value = int(code, 16)
    except (TypeError, ValueError):
        return str(code)
    if value in REFUSALS:
        zh, en = REFUSALS[value]
    elif 0xA900 <= value <= 0xA9FF:
        zh, en = "数据集与SOP类不符", "data set does not match SOP class"
    elif 0xC000 <= value <= 0xCFFF:
        zh, en = "中心无法处理", "cannot understand"
    else:
        zh, en = "拒收", "refused"
    return f"{code} {zh} {en}"


async def edge_status(store: Store, forwarding: dict[str, Any], watch: LinkWatch) -> dict[str, Any]:
    """The forwarder's queue plus the link state, what each study is, and the studies recently done."""
    status = {**forwarding, "link": watch.as_dict()}
    studies = []
    for i, entry in enumerate(forwarding.get("studies", [])):
        if i < PAGE_STUDIES:
            entry = {**entry, "study": _describe(await store.get("studies", entry["id"]))}
        studies.append(entry)
    status["studies"] = studies
    done = await store.find(EDGE_STUDIES, {"state": "done"}, sort=[("completed_at", -1)], limit=RECENT)
    status["recent"] = [{"id": d["id"], "instances": d.get("instances", 0), "sent": d.get("sent", 0),
                         "refused": d.get("refused", []), "refused_reasons": d.get("refused_reasons") or {},
                         "completed_at": d.get("completed_at"),
                         "study": _describe(await store.get("studies", d["id"]))} for d in done]
    return status


def _describe(study: dict[str, Any] | None) -> dict[str, Any]:
    return {k: (study or {}).get(k) for k in STUDY_FIELDS}


# --- the page ------------------------------------------------------------------------------------
STYLE = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 "WenQuanYi Micro Hei","Microsoft YaHei","PingFang SC",
"Noto Sans CJK SC",sans-serif;color:#1d2733;background:#eef1f5}small{color:#6a7785;font-size:.8em}
header{background:#17324d;color:#fff;padding:8px 12px}header small{color:#b9c9d9}h1{font-size:18px;margin:0}
h2{font-size:15px;margin:14px 0 6px}main{padding:8px 12px;max-width:1100px}
.link{border-radius:6px;padding:8px 12px;font-weight:600;margin:8px 0}.link small{font-weight:normal}
.link.connected{background:#e3f2e4;color:#1f5a22}.link.outage,.link.refused{background:#fde3e1;color:#8e1c14}
.link.unknown{background:#fff4e0;color:#7a4a00}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:6px}
.kpi{background:#fff;border-radius:6px;padding:6px 8px}.kpi b{display:block;font-size:20px}
.kpi.text b{font-size:15px;line-height:26px;overflow-wrap:anywhere}
.study{background:#fff;border-radius:6px;padding:8px 10px;margin-bottom:8px}.study.urgent{border-left:4px solid #c62828}
.what{font-weight:600}.meta{color:#4b5968;font-size:13px}
progress{display:block;width:100%;height:14px;margin:5px 0;accent-color:#3f8f4a}
.error{color:#b3261e;font-size:13px;overflow-wrap:anywhere}.refused{font-size:13px;color:#8e1c14}
.refused li{overflow-wrap:anywhere}.empty{color:#6a7785}footer{padding:8px 12px 20px;color:#6a7785;font-size:12px}
"""
SCRIPT = """"use strict";
// Refresh in place: fetch this page again and swap <main>; the scroll position stays.
(function () {
  const every = Math.max(1, Number(document.body.dataset.refresh) || 5) * 1000;
  async function refresh() {
    try {
      const response = await fetch(location.pathname + location.search, { cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const main = fresh.getElementById("edge");
      if (main) {
        document.getElementById("edge").replaceWith(document.adoptNode(main));
        document.body.dataset.updated = fresh.body.dataset.updated;
      }
      document.getElementById("offline").hidden = true;
    } catch (e) {
      document.getElementById("offline").hidden = false;
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
"""


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; script-src 'self'; style-src {_sha(STYLE)}; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}


def size(n: float | int | None) -> str:
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render(status: dict[str, Any], *, tz: LocalTime, organization_name: str, now: str,
           refresh: float = REFRESH_SECONDS) -> str:
    """The whole page from :func:`edge_status` (pure: every value escaped)."""

    def when(iso: str | None) -> str:  # 2026-12-03 10:05:07 +08:00
        return tz.local(iso).isoformat(sep=" ", timespec="seconds").replace("+", " +") if iso else "—"

    def lasting(iso: str | None) -> str:  # how long the link has been in this state: 已 3 分钟 for 3 min
        seconds = max(0, int((utc(now) - utc(iso)).total_seconds())) if iso else 0
        for unit, zh, en in ((86400, "天", "d"), (3600, "小时", "h"), (60, "分钟", "min"), (1, "秒", "s")):
            if seconds >= unit or unit == 1:
                return f"已 {seconds // unit} {zh} <small>for {seconds // unit} {en}</small>"
        return ""

    link = status.get("link") or {}
    state = link.get("state", "unknown")
    if state == CONNECTED:
        banner = f"已连接中心 <small>Connected</small> · 自 {_e(when(link.get('since')))} 起 <small>since</small>"
    elif state == OUTAGE:
        banner = (f"中心连接中断 <small>Outage</small> · 自 {_e(when(link.get('since')))} 起 <small>since</small>"
                  f" · {lasting(link.get('since'))}<br><small>图像已安全保存在本机，恢复后自动续传 · images are safe here and are sent when the link "
                  f"returns</small>")
    elif state == REFUSED:
        banner = (f"中心拒绝本前置机 <small>The centre refuses this edge</small> · 自 {_e(when(link.get('since')))} 起"
                  f"<br><small>请联系中心检查令牌 · ask the centre to check the edge's token</small>")
    else:
        banner = "尚未联系中心 <small>Not yet in touch with the centre</small>"
    error = f"错误 <small>error</small> {_e(link.get('last_error'))}" if state != CONNECTED and link.get("last_error") \
        else ""
    kpis = [("待发检查", "studies pending", "backlog_studies", status.get("backlog_studies", 0)),
            ("待发图像", "instances pending", "backlog_instances", status.get("backlog_instances", 0)),
            ("待发数据", "bytes pending", "bytes_pending", size(status.get("bytes_pending"))),
            ("速率", "rate", "rate", size(status.get("rate_bytes_per_second")) + "/s"),
            ("最近成功", "last success", "last_success", when(status.get("last_success_at")))]
    studies = status.get("studies", [])
    pending = "".join(_study(p, when) for p in studies[:PAGE_STUDIES]) or \
        '<p class="empty">没有待发检查 <small>nothing waiting: every study is at the centre</small></p>'
    if len(studies) > PAGE_STUDIES:
        pending += f'<p class="empty">另有 {len(studies) - PAGE_STUDIES} 个检查 <small>more studies</small></p>'
    recent = "".join(_study(d, when, done=True) for d in status.get("recent", [])) or \
        '<p class="empty">暂无 <small>none yet</small></p>'
    extra = _results_and_worklist(status, when)
    offset = tz.local(now).strftime("%z")
    zone = f"UTC{offset[:3]}:{offset[3:]}"
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,"><title>医联前置机 Edge · {_e(organization_name)}</title><style>{STYLE}</style></head>
<body data-refresh="{refresh:g}" data-updated="{_e(now)}">
<header><h1>医联前置机 <small>Yilian edge</small> · {_e(organization_name)}</h1>
<small>只读状态页 read-only status · 时间为北京时间 times in {_e(tz.name)} ({zone})</small></header>
<p id="offline" class="link outage" hidden>本页暂时连不上前置机 <small>this page cannot reach the edge right now</small></p>
<main id="edge">
<div class="link {_e(state)}" data-link="{_e(state)}">{banner}</div>
{f'<p class="error">{error}</p>' if error else ''}
{_kpis(kpis)}
<h2>待发检查 <small>studies in progress</small></h2>
<div id="pending">{pending}</div>
<h2>最近送达 <small>recently at the centre</small></h2>
<div id="recent">{recent}</div>
{extra}
<p class="meta">更新于 updated {_e(when(now))}</p>
</main>
<footer>JSON: <a href="/status">/status</a> · Prometheus: <a href="/metrics">/metrics</a></footer>
<script src="/page.js"></script></body></html>"""


TEXT_KPIS = {"last_success", "terminal", "results_last", "worklist_synced"}  # a time or a name: smaller, wraps


def _kpis(items: list[tuple[str, str, str, Any]]) -> str:
    return '<div class="kpis">' + "".join(
        f'<div class="kpi{" text" if key in TEXT_KPIS else ""}" data-kpi="{key}"><b>{_e(v)}</b>{zh} <small>{en}</small></div>'
        for zh, en, key, v in items) + "</div>"


def _results_and_worklist(status: dict[str, Any], when: Any) -> str:
    """Results on their way to the clinic's terminal, and the worklist copy the modalities query."""
    out = ""
    if "results_pending" in status:
        out += ('<h2>报告回传 <small>signed results to the terminal</small></h2><div id="results">' + _kpis([
            ("终端", "terminal", "terminal", status.get("terminal") or "—"),
            ("待回传", "pending", "results_pending", status.get("results_pending", 0)),
            ("已回传", "delivered", "results_delivered", status.get("results_delivered", 0)),
            ("终端拒收", "refused", "results_refused", status.get("results_refused", 0)),
            ("最近回传", "last delivered", "results_last", when(status.get("results_last_delivered_at")))]))
        if status.get("results_last_error") and status.get("results_pending"):
            out += f'<p class="error">错误 <small>error</small> {_e(status["results_last_error"])}</p>'
        out += "</div>"
    w = status.get("worklist")
    if w:
        out += ('<h2>工作列表副本 <small>worklist copy for the modalities</small></h2><div id="worklist">' + _kpis([
            ("待检申请", "scheduled", "worklist_items", w.get("items", 0)),
            ("同步于", "synced", "worklist_synced", when(w.get("synced_at"))),
            ("待发MPPS", "MPPS pending", "steps_pending", w.get("steps_pending", 0)),
            ("中心拒收MPPS", "MPPS refused", "steps_refused", w.get("steps_refused", 0))]))
        if w.get("last_error"):
            out += (f'<p class="error">同步失败，模态仍可查询本机副本 <small>sync failed; the modalities still query the '
                    f'copy here</small> {_e(w["last_error"])}</p>')
        out += "</div>"
    return out


def _study(p: dict[str, Any], when: Any, *, done: bool = False) -> str:
    d = p.get("study") or {}
    total, refused = p.get("instances") or 0, p.get("refused") or []
    sent = p.get("sent") or 0
    share = 100 if done or not total else min(100, round(100 * (sent + len(refused)) / total))
    what = " ".join(filter(None, ["/".join(d.get("modalities") or []), d.get("study_description")])) or "检查 study"
    accession = f" · 检查号 <small>accession</small> {_e(d['accession_number'])}" if d.get("accession_number") else ""
    if done:
        meta = f"送达 <small>completed</small> {_e(when(p.get('completed_at')))}"
    else:
        meta = f"收到 <small>received</small> {_e(when(p.get('first_received_at')))}"
        if p.get("attempts"):
            meta += (f" · 重试 <small>attempts</small> {p['attempts']} · 下次 <small>next</small> "
                     f"{_e(when(p.get('next_attempt_at')))}")
    reasons = p.get("refused_reasons") or {}
    refused_html = ""
    if refused:
        items = "".join(f"<li>{_e(refusal(reasons.get(sop, '')))} · <small>{_e(sop)}</small></li>" for sop in refused)
        refused_html = (f'<div class="refused" data-refused="{len(refused)}">中心拒收 {len(refused)} 张 '
                        f'<small>refused for good</small><ul>{items}</ul></div>')
    error = (f'<p class="error">错误 <small>error</small> {_e(p["last_error"])}</p>'
             if p.get("last_error") and not done else "")
    urgent = " urgent" if p.get("rank") == 0 and not done else ""
    return (f'<div class="study{urgent}" data-study="{_e(p.get("id"))}">'
            f'<div class="what">{_e(what)}{accession}{" · 急 urgent" if urgent else ""}</div>'
            f'<progress max="100" value="{share}" title="{share}%">{share}%</progress>'
            f'<div class="meta"><span data-col="sent">{sent}/{total}</span> 张已送达 <small>instances at the centre'
            f'</small> · {meta}</div>{error}{refused_html}</div>')
