"use strict";
// The coordinator's dashboard: one fetch-streamed SSE connection (the bearer token goes in the
// Authorization header, never in a URL; or the desk's session cookie), re-rendered on every
// snapshot.  Text is always set with textContent, so nothing from the server is ever parsed as HTML.
// The coordinator's actions (assign, move, release, re-drive) call the same public API, confirmed
// in a dialog first; the row changes with the next snapshot.
(function () {
  const KIND = { imaging: "影像 imaging", ecg: "心电 ECG" };
  const PRIORITY = { stat: "急诊 STAT", urgent: "加急 urgent", routine: "常规 routine" };
  const STATE = { queued: "排队 queued", claimed: "已领取 claimed", draft: "草稿 draft" };
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let token = null;  // a bearer token (API users), or null with a session cookie
  let csrf = null;  // the session's CSRF token (cookie mode)
  let me = null;
  let deadByResult = new Map();  // result id -> its dead-lettered deliveries (for re-drive)
  let controller = null;
  let retry = null;
  let last = null;
  let zone = null;  // IANA name of the consortium's zone, from the server

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children.flat()) if (child !== null && child !== undefined)
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }
  function label(zh, en) { return [zh, " ", el("small", null, en)]; }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.abs(seconds), sign = seconds < 0 ? "-" : "";
    if (s < 60) return sign + Math.round(s) + "s";
    if (s < 3600) return sign + Math.round(s / 60) + "m";
    if (s < 86400) return sign + Math.floor(s / 3600) + "h" + String(Math.round((s % 3600) / 60)).padStart(2, "0");
    return sign + (s / 86400).toFixed(1) + "d";
  }
  // Times in the consortium's zone (the snapshot's "timezone"), never the browser's: a coordinator's
  // laptop set to UTC or travelling must still read Beijing time.
  const ZONE_NAME = { "Asia/Shanghai": "北京时间" };
  const formats = new Map();
  function format(options) {
    const key = JSON.stringify([zone, options]);
    if (!formats.has(key))
      formats.set(key, new Intl.DateTimeFormat("zh-CN", { ...options, timeZone: zone || undefined }));
    return formats.get(key);
  }
  function localTime(iso) {
    if (!iso) return "—";
    const options = { hourCycle: "h23", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" };
    return format(options).format(new Date(iso));
  }
  function localHour(iso) {
    const parts = format({ hourCycle: "h23", hour: "numeric" }).formatToParts(new Date(iso));
    const part = parts.find((p) => p.type === "hour");
    return Number(part.value) + ":00";
  }
  function zoneNote(iso) {
    // "UTC+8" from the zone's offset at that instant (shortOffset writes "GMT+8"; "GMT" alone is UTC)
    const parts = format({ timeZoneName: "shortOffset" }).formatToParts(new Date(iso));
    const part = parts.find((p) => p.type === "timeZoneName");
    const offset = part ? part.value.replace(/^GMT/, "UTC").replace(/^UTC$/, "UTC+0") : "";
    return [ZONE_NAME[zone] || zone, offset].filter(Boolean).join(" ");
  }
  function kpi(testid, zh, en, value, cls) {
    return el("div", { class: "kpi " + (cls || ""), "data-kpi": testid }, el("b", null, value), label(zh, en));
  }

  // --- the centre card ------------------------------------------------------------------
  function queueTable(c) {
    const rows = c.queue.by.map((cell) => el("tr", { "data-kind": cell.kind, "data-priority": cell.priority },
      el("td", null, KIND[cell.kind] || cell.kind), el("td", null, PRIORITY[cell.priority] || cell.priority),
      el("td", { class: "n", "data-col": "waiting" }, cell.waiting),
      el("td", { class: "n", "data-col": "in_progress" }, cell.in_progress)));
    return el("table", { class: "queue" },
      el("thead", null, el("tr", null, el("th", null, label("类型", "kind")), el("th", null, label("优先级", "priority")),
        el("th", { class: "n" }, label("排队", "waiting")), el("th", { class: "n" }, label("阅片中", "reading")))),
      el("tbody", null, rows),
      el("tfoot", null, el("tr", null, el("th", { colspan: 2 }, label("合计", "total")),
        el("th", { class: "n", "data-col": "waiting-total" }, c.queue.waiting),
        el("th", { class: "n", "data-col": "in_progress-total" }, c.queue.in_progress))));
  }

  function riskTable(c) {
    const rows = [];
    for (const t of c.past_deadline) rows.push(["risk-past", "超时 past", t]);
    for (const t of c.at_risk) rows.push(["risk-at", "风险 at risk", t]);
    const body = rows.length ? rows.map(([cls, what, t]) => el("tr", { class: cls, "data-request": t.request_id },
      el("td", null, what), el("td", null, t.request_id), el("td", null, t.organization),
      el("td", null, (KIND[t.kind] || t.kind).split(" ")[0] + "/" + (PRIORITY[t.priority] || t.priority).split(" ")[0]),
      el("td", null, STATE[t.state] ? STATE[t.state].split(" ")[0] : t.state),
      el("td", { class: "n" }, duration(t.seconds_to_deadline)),
      el("td", { class: "n", "data-col": "deadline" }, localTime(t.deadline))))
      : [el("tr", { class: "empty" }, el("td", { colspan: 7 }, label("无风险任务", "no task at risk")))];
    return el("div", { class: "scroll" }, el("table", { class: "risk" },
      el("thead", null, el("tr", null, el("th", null, label("状态", "SLA")), el("th", null, label("申请", "request")),
        el("th", null, label("来源", "origin")), el("th", null, label("类型", "kind")), el("th", null, label("进度", "state")),
        el("th", { class: "n" }, label("剩余", "left")), el("th", { class: "n" }, label("截止", "due")))),
      el("tbody", null, body)));
  }

  function readersTable(c) {
    const max = Math.max(1, ...c.readers.map((r) => r.signed_today));
    const body = c.readers.length ? c.readers.map((r) => el("tr", { "data-reader": r.reader_id },
      el("td", null, r.name || r.reader_id, r.on_duty ? "" : el("small", null, " 非值班 off duty")),
      el("td", { class: "n", "data-col": "claimed" }, r.claimed),
      el("td", { class: "n", "data-col": "signed_today" }, r.signed_today),
      el("td", null, el("span", { class: "bar", "data-w": Math.round(60 * r.signed_today / max) }))))
      : [el("tr", { class: "empty" }, el("td", { colspan: 4 }, label("无值班医师", "no reader on duty")))];
    const table = el("table", { class: "readers" },
      el("thead", null, el("tr", null, el("th", null, label("医师", "reader")), el("th", { class: "n" }, label("在读", "load")),
        el("th", { class: "n" }, label("今日签发", "signed today")), el("th", null, ""))),
      el("tbody", null, body));
    for (const bar of table.querySelectorAll(".bar")) bar.style.width = bar.dataset.w + "px";  // CSSOM: allowed by the CSP
    return table;
  }

  function trendChart(points) {
    const W = 320, H = 120, L = 24, B = 16, T = 6;
    const n = points.length || 1;
    const max = Math.max(1, ...points.map((p) => Math.max(p.queued, p.signed, p.depth)));
    const x = (i) => L + (i * (W - L - 4)) / n;
    const y = (v) => H - B - (v * (H - B - T)) / max;
    const bw = Math.max(2, (W - L - 4) / n / 2 - 1);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "24h trend", class: "trend" });
    chart.append(svg("line", { x1: L, y1: H - B, x2: W - 2, y2: H - B, stroke: "#9fb0c2" }));
    chart.append(svg("text", { x: 2, y: T + 8 }, max), svg("text", { x: 2, y: H - B }, 0));
    points.forEach((p, i) => {
      chart.append(svg("rect", { x: x(i), y: y(p.queued), width: bw, height: H - B - y(p.queued), fill: "#9cc3e6" }));
      chart.append(svg("rect", { x: x(i) + bw, y: y(p.signed), width: bw, height: H - B - y(p.signed), fill: "#4caf50" }));
      if (i % 6 === 0) chart.append(svg("text", { x: x(i), y: H - 3 }, localHour(p.hour)));
    });
    const line = points.map((p, i) => `${i ? "L" : "M"}${(x(i) + bw).toFixed(1)},${y(p.depth).toFixed(1)}`).join(" ");
    if (points.length) chart.append(svg("path", { d: line, fill: "none", stroke: "#c62828", "stroke-width": 1.5 }));
    const legend = el("div", { class: "legend" },
      el("span", null, el("i", { class: "lg-q" }), "入队 queued"), el("span", null, el("i", { class: "lg-s" }), "签发 signed"),
      el("span", null, el("i", { class: "lg-d" }), "积压 depth"));
    legend.querySelector(".lg-q").style.background = "#9cc3e6";
    legend.querySelector(".lg-s").style.background = "#4caf50";
    legend.querySelector(".lg-d").style.background = "#c62828";
    return el("div", null, chart, legend);
  }

  function alerts(c) {
    const out = [];
    for (const r of c.critical_unacknowledged) out.push(el("div", { class: "alert", "data-alert": "critical" },
      "危急值未确认 critical finding unacknowledged · ", r.organization || "", " · ", r.request_id || r.id));
    for (const r of c.dead_letters) {
      const dead = deadByResult.get(r.result_id) || [];
      out.push(el("div", { class: "alert", "data-alert": "dead-letter", "data-result": r.result_id || null },
        "结果投递失败 delivery dead-lettered · ", r.organization || "", " · ", r.request_id || r.id,
        r.dead_letter_reason ? " · " + r.dead_letter_reason : "",
        dead.map((d) => button("redrive", "重投", "re-drive", { delivery: d.id, channel: d.channel })),
        r.result_id && !dead.length && deadLoaded ? el("span", { class: "done" }, "重投中 re-driven, pending") : null));
    }
    return el("div", { class: "alerts" }, out);
  }

  // --- the coordinator's actions -----------------------------------------------------------
  function button(action, zh, en, data) {
    const attrs = { type: "button", "data-action": action };
    for (const [k, v] of Object.entries(data)) attrs["data-" + k] = v;
    return el("button", attrs, zh, " ", el("small", null, en));
  }

  function tasksTable(c) {
    const rows = (c.tasks || []).map((t) => {
      const held = t.state === "claimed" || t.state === "draft";
      const data = { request: t.request_id, home: c.centre, kind: t.kind };  // not data-centre: that names a card
      return el("tr", { "data-task": t.request_id, "data-state": t.state, class: held ? "held" : null },
        el("td", null, t.request_id), el("td", null, t.organization),
        el("td", null, (KIND[t.kind] || t.kind).split(" ")[0] + "/" + (PRIORITY[t.priority] || t.priority).split(" ")[0]),
        el("td", { "data-col": "state" }, STATE[t.state] ? STATE[t.state].split(" ")[0] : t.state),
        el("td", { "data-col": "reader" }, held ? readerName(c, t.claimed_by) : "—"),
        el("td", { class: "n" }, held && t.claimed_at ? localTime(t.claimed_at) : "—"),
        el("td", { class: "n" }, duration(t.seconds_to_deadline)),
        el("td", { class: "act-cell" },
          t.state === "submitted" ? null : button("assign", "分派", "assign", data),
          t.state === "submitted" ? null : button("move", "转中心", "move", data),
          held ? button("release", "释放", "release", data) : null));
    });
    const more = c.tasks_count > (c.tasks || []).length
      ? el("p", null, el("small", null, `显示 ${c.tasks.length} / ${c.tasks_count} (shown, nearest deadline first)`)) : null;
    return el("div", { class: "tasks" }, el("h3", null, label("任务与调度", "open tasks and actions")),
      el("div", { class: "scroll" }, el("table", { class: "task-list" },
        el("thead", null, el("tr", null, el("th", null, label("申请", "request")), el("th", null, label("来源", "origin")),
          el("th", null, label("类型", "kind")), el("th", null, label("进度", "state")), el("th", null, label("医师", "reader")),
          el("th", { class: "n" }, label("领取于", "held since")), el("th", { class: "n" }, label("剩余", "left")),
          el("th", null, label("操作", "actions")))),
        el("tbody", null, rows.length ? rows
          : [el("tr", { class: "empty" }, el("td", { colspan: 8 }, label("无待办任务", "no open task")))]))), more);
  }

  function readerName(c, id) {
    const r = (c.readers || []).find((x) => x.reader_id === id);
    return r && r.name ? r.name : id || "—";
  }

  let pending = null;  // the action the dialog asks to confirm
  function ask(target) {
    const a = target.dataset, c = (last && last.centres || []).find((x) => x.centre === a.home);
    const choice = $("act-choice");
    choice.replaceChildren();
    $("act-error").textContent = "";
    $("act-reason").value = "";
    let title, needsChoice = false, needsReason = false;
    if (a.action === "assign") {
      title = label("分派给医师", "assign to a reader");
      needsChoice = needsReason = true;
      $("act-choice-name").replaceChildren(...label("医师", "reader"));
      for (const r of (c ? c.readers : [])) choice.append(el("option", { value: r.reader_id },
        (r.name || r.reader_id) + (r.on_duty ? "" : " (非值班 off duty)") + " · 在读 " + r.claimed));
    } else if (a.action === "move") {
      title = label("转到其他中心", "move to another centre");
      needsChoice = needsReason = true;
      $("act-choice-name").replaceChildren(...label("中心", "centre"));
      for (const t of (c ? c.move_targets : []).filter((t) => t.kinds.includes(a.kind)))
        choice.append(el("option", { value: t.id }, (t.name || t.id) + " · " + t.id));
    } else if (a.action === "release") {
      title = label("释放领取", "release the lease");
    } else {
      title = label("重新投递", "re-drive the delivery");
    }
    $("act-title").replaceChildren(...title);
    $("act-what").textContent = a.action === "redrive" ? `${a.delivery} · ${a.channel}` : a.request;
    $("act-choice-label").hidden = !needsChoice;
    $("act-reason-label").hidden = !needsReason;
    $("act-reason").required = needsReason;
    choice.required = needsChoice;
    $("act-confirm").disabled = needsChoice && !choice.options.length;
    if (needsChoice && !choice.options.length) $("act-error").textContent = "没有可选项 nothing to choose from";
    pending = { ...a };
    $("act").showModal();
  }

  async function confirmAction() {
    const a = pending, reason = $("act-reason").value.trim(), choice = $("act-choice").value;
    const base = "/api/v1/reading-requests/" + encodeURIComponent(a.request || "");
    const calls = {
      assign: () => call("POST", base + "/assign", { reader_id: choice, reason }),
      move: () => call("POST", base + "/move", { centre: choice, reason }),
      release: () => call("POST", base + "/release", {}),
      redrive: () => call("POST", "/api/v1/deliveries/" + encodeURIComponent(a.delivery) + "/redrive", {}),
    };
    $("act-confirm").disabled = true;
    try {
      await calls[a.action]();
    } catch (e) {
      $("act-error").textContent = String(e.message || e);
      $("act-confirm").disabled = false;
      return;
    }
    $("act").close();
    pending = null;
    toast(label("已完成", "done · " + a.action));
    if (a.action === "redrive") await loadDeadLetters(true);
  }

  function toast(content) {
    const t = el("div", { class: "toast", role: "status" }, content);
    document.body.append(t);
    setTimeout(() => t.remove(), 3000);
  }

  // The API every client uses: a bearer token, or the session cookie with its CSRF token.
  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    else if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store",
                                         body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || response.status + " " + response.statusText);
    return data;
  }

  let deadLoaded = false, deadKey = "";
  async function loadDeadLetters(force) {
    // The monitor names dead-lettered results; re-drive needs their deliveries' ids.
    const ids = (last ? last.centres : []).flatMap((c) => c.dead_letters.map((r) => r.result_id)).filter(Boolean);
    const key = ids.join(",");
    if (!force && key === deadKey) return;
    deadKey = key;
    if (!ids.length) { deadByResult = new Map(); deadLoaded = true; return; }
    try {
      const found = await call("GET", "/api/v1/deliveries/dead-letters?limit=500");
      deadByResult = new Map();
      for (const d of found.items) {
        if (!deadByResult.has(d.result_id)) deadByResult.set(d.result_id, []);
        deadByResult.get(d.result_id).push(d);
      }
      deadLoaded = true;
    } catch (e) { deadLoaded = false; }
    if (last) render(last, true);
  }

  function centreCard(c) {
    const tat = c.turnaround;
    const alarm = c.past_deadline_count > 0 || c.critical_unacknowledged.length > 0 || c.dead_letters.length > 0;
    return el("section", { class: "centre" + (alarm ? " alarm" : ""), "data-centre": c.centre },
      el("div", { class: "centre-head" }, el("h2", null, c.name || c.centre), el("small", null, c.centre),
        el("small", null, (c.kinds || []).map((k) => KIND[k] || k).join(" · "))),
      el("div", { class: "centre-grid" },
        el("div", null,
          el("div", { class: "kpis" },
            kpi("waiting", "排队", "waiting", c.queue.waiting),
            kpi("in_progress", "阅片中", "reading", c.queue.in_progress),
            kpi("at_risk", "风险", "at risk", c.at_risk_count, c.at_risk_count ? "warn" : ""),
            kpi("past_deadline", "超时", "past SLA", c.past_deadline_count, c.past_deadline_count ? "bad" : ""),
            kpi("oldest", "最久等待", "oldest", c.oldest_waiting ? duration(c.oldest_waiting.waiting_seconds) : "—"),
            kpi("tat_p50", "今日P50", "TAT today", duration(tat.today.p50_seconds)),
            kpi("tat_p90", "今日P90", "TAT today", duration(tat.today.p90_seconds)),
            kpi("signed_today", "今日签发", "signed", c.signed_today),
            kpi("tat7_p50", "7天P50", "TAT 7d", duration(tat["7d"].p50_seconds)),
            kpi("tat7_p90", "7天P90", "TAT 7d", duration(tat["7d"].p90_seconds)),
            kpi("overflow_in", "分流入", "overflow in", c.overflow.in_today + " / " + c.overflow.in),
            kpi("overflow_out", "分流出", "overflow out", c.overflow.out_today + " / " + c.overflow.out)),
          queueTable(c)),
        el("div", null, el("h3", null, label("SLA 风险", "tasks at risk and past deadline")), riskTable(c), alerts(c)),
        el("div", null, el("h3", null, label("24小时趋势", "last 24 h")), trendChart(c.trend),
          el("h3", null, label("医师负荷", "readers' load")), readersTable(c))),
      tasksTable(c));
  }

  // --- township edges (前置机) ------------------------------------------------------------
  // Heartbeats are not events, so they are not in the monitor's stream: the panel polls
  // GET /api/v1/edges (at most every 10 s, twice per silence period), and between polls each row
  // ages here, so an edge turns red when its silence passes the limit, not at the next poll.
  const EDGE_BACKLOG = { backlog_studies: ["检查", "studies"], backlog_instances: ["图像", "instances"],
                         bytes_pending: ["数据", "bytes"], results_pending: ["待回传结果", "results"],
                         results_refused: ["终端拒收", "refused by terminal"],
                         procedure_steps_pending: ["待发MPPS", "MPPS"] };
  const EDGE_NOT_BACKLOG = new Set(["seconds_since_heartbeat", "rate_bytes_per_second"]);
  let edges = null, edgesAt = 0, edgesPoll = null, edgesTick = null, edgesOn = false;

  async function loadEdges() {
    clearTimeout(edgesPoll);
    let next = 10;
    try {
      edges = await call("GET", "/api/v1/edges");
      edgesAt = performance.now();
      next = Math.min(10, Math.max(1, (edges.silent_after_seconds || 20) / 2));
    } catch (e) { /* keep the last answer; its rows go on ageing and turn red if it lasts */ }
    if (!edgesOn) return;  // signed out meanwhile
    renderEdges();
    edgesPoll = setTimeout(loadEdges, next * 1000);
  }
  function startEdges() { edgesOn = true; loadEdges(); edgesTick = setInterval(renderEdges, 1000); }
  function stopEdges() { edgesOn = false; clearTimeout(edgesPoll); clearInterval(edgesTick); edges = null; }

  function bytes(n) {
    const units = ["B", "kB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
  }
  function secondsTime(iso) {
    if (!iso) return "—";
    const options = { hourCycle: "h23", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" };
    return format(options).format(new Date(iso)) + " " + zoneNote(iso).split(" ").pop();
  }
  function backlogOf(item) {
    // Whatever numeric backlog the heartbeat carries: the known ones named, any newer one by its key.
    const keys = Object.keys(EDGE_BACKLOG).filter((k) => k in item).concat(Object.keys(item).filter((k) =>
      !(k in EDGE_BACKLOG) && !EDGE_NOT_BACKLOG.has(k) && typeof item[k] === "number" && Number.isFinite(item[k])));
    return keys.filter((k) => typeof item[k] === "number").map((k) => {
      const [zh, en] = EDGE_BACKLOG[k] || [k.replace(/_/g, " "), ""];
      return el("span", { class: "backlog" + (item[k] > 0 ? " some" : ""), "data-backlog": k },
        zh, " ", el("b", null, k === "bytes_pending" ? bytes(item[k]) : item[k]), en ? el("small", null, " " + en) : null);
    });
  }

  function renderEdges() {
    const panel = $("edges");
    if (!edges || !zone) return;  // times wait for the consortium's zone (the first snapshot)
    if (!edges.items.length) { panel.hidden = true; return; }
    const elapsed = (performance.now() - edgesAt) / 1000, limit = edges.silent_after_seconds;
    const rows = edges.items.map((item) => {
      const age = item.seconds_since_heartbeat + elapsed, silent = item.silent || age > limit;
      return { item, age, silent };
    });
    const silentCount = rows.filter((r) => r.silent).length;
    panel.className = "panel edges" + (silentCount ? " alarm" : "");
    panel.replaceChildren(
      el("div", { class: "centre-head" }, el("h2", null, label("前置机", "Edges")),
        el("small", null, edges.items.length + " 台 edges"),
        silentCount ? el("span", { class: "silent-count", "data-silent": silentCount },
          "失联 " + silentCount + " ", el("small", null, "silent")) : null,
        el("small", null, "超过 " + duration(limit) + " 无心跳即为失联 silent after " + duration(limit))),
      el("div", { class: "scroll-x" }, el("table", { class: "edge-list" },
        el("thead", null, el("tr", null, el("th", null, label("机构", "site")), el("th", null, label("状态", "state")),
          el("th", null, label("最近心跳", "last heartbeat")), el("th", null, label("积压", "backlog")),
          el("th", { class: "n" }, label("速率", "rate")), el("th", null, label("最近成功", "last success")),
          el("th", null, label("最近错误", "last error")))),
        el("tbody", null, rows.map(({ item, age, silent }) => el("tr", { class: silent ? "silent" : "", "data-edge": item.edge,
          "data-organization": item.organization },
          el("td", { "data-col": "site" }, item.organization_name || item.organization, el("small", null, " " + item.edge)),
          el("td", { "data-col": "state" }, silent ? label("失联", "silent") : label("正常", "alive")),
          el("td", { "data-col": "heartbeat" }, secondsTime(item.received_at), el("small", null, " · " + duration(age) + " 前 ago")),
          el("td", { "data-col": "backlog", class: "backlog-cell" }, backlogOf(item)),
          el("td", { class: "n", "data-col": "rate" }, bytes(item.rate_bytes_per_second || 0) + "/s"),
          el("td", { "data-col": "last_success" }, secondsTime(item.last_success_at)),
          el("td", { "data-col": "error", class: "edge-error" }, item.last_error || "—")))))));
    panel.hidden = false;
  }

  // --- admin: consortium and sites --------------------------------------------------------
  function consortiumPanel(k) {
    const max = Math.max(1, ...k.remote_readings_per_township.map((t) => t.remote_readings));
    const W = 420, rowH = 16, H = rowH * k.remote_readings_per_township.length + 4;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "remote readings per township" });
    k.remote_readings_per_township.forEach((t, i) => {
      const w = Math.round((t.remote_readings / max) * (W - 200));
      chart.append(svg("text", { x: 0, y: i * rowH + 12 }, t.name));
      chart.append(svg("rect", { x: 130, y: i * rowH + 3, width: w, height: 10, fill: "#5b8cbf" }));
      chart.append(svg("text", { x: 134 + w, y: i * rowH + 12 }, `${t.remote_readings} (今日 ${t.remote_readings_today})`));
    });
    const share = k.share_of_townships_served === null ? "—" : Math.round(k.share_of_townships_served * 100) + "%";
    return [el("div", { class: "kpis" },
      kpi("served", "乡镇覆盖", "townships served", `${share}`),
      kpi("served_n", "覆盖/总数", "served / all", `${k.townships_served}/${k.townships}`),
      kpi("median_today", "今日中位", "median TAT", duration(k.median_turnaround_seconds.today)),
      kpi("median_7d", "7天中位", "median TAT", duration(k.median_turnaround_seconds["7d"]))),
      el("div", null, el("h3", null, label("各乡镇远程诊断量", "remote readings per township")), chart)];
  }

  function sitesTable(sites) {
    return [el("h3", null, label("各机构", "per site")), el("table", { class: "sites" },
      el("thead", null, el("tr", null, el("th", null, label("机构", "site")), el("th", null, label("级别", "level")),
        el("th", { class: "n" }, label("发送检查", "studies sent")), el("th", { class: "n" }, label("申请阅片", "readings requested")),
        el("th", { class: "n" }, label("已签发", "signed")), el("th", { class: "n" }, label("结果送达", "delivered")),
        el("th", { class: "n" }, label("已确认", "acknowledged")))),
      el("tbody", null, sites.map((s) => el("tr", { "data-site": s.organization },
        el("td", null, s.name), el("td", null, s.level), el("td", { class: "n" }, s.studies_sent),
        el("td", { class: "n" }, s.readings_requested), el("td", { class: "n" }, s.readings_signed),
        el("td", { class: "n" }, s.results_delivered), el("td", { class: "n" }, s.results_acknowledged)))))];
  }

  function render(data, again) {
    last = data;
    if (!again) loadDeadLetters(false);
    if (data.timezone && data.timezone !== zone) { zone = data.timezone; formats.clear(); }
    $("centres").replaceChildren(...data.centres.map(centreCard));
    if (data.consortium) { $("consortium").replaceChildren(...consortiumPanel(data.consortium)); $("consortium").hidden = false; }
    if (data.sites) { $("sites").replaceChildren(...sitesTable(data.sites)); $("sites").hidden = false; }
    $("clock").textContent = "更新 updated " + localTime(data.now);
    $("zone").textContent = zoneNote(data.now);
    $("zone").title = zone || "";
    document.body.dataset.updated = data.now;
    renderEdges();
  }

  // --- the stream: SSE over fetch ----------------------------------------------------------
  function setLive(on, text) {
    $("live").className = "live" + (on ? "" : " off");
    $("live").replaceChildren(...(on ? label("实时", "live") : label("重连中", text || "reconnecting")));
  }

  async function connect() {
    clearTimeout(retry);
    if (controller) controller.abort();
    controller = new AbortController();
    let response;
    try {
      const headers = { Accept: "text/event-stream" };
      if (token) headers.Authorization = "Bearer " + token;
      response = await fetch("/api/v1/monitor/stream", { headers, credentials: "same-origin",
                                                         cache: "no-store", signal: controller.signal });
    } catch (e) { setLive(false); retry = setTimeout(connect, 3000); return; }
    if (csrf && response.status === 401) { location.assign("/signin?next=/dashboard"); return; }  // the session ended
    if (response.status === 401 || response.status === 403) {
      const problem = await response.json().catch(() => ({}));
      signOut(problem.detail || "token refused (" + response.status + ")");
      return;
    }
    if (!response.ok || !response.body) { setLive(false); retry = setTimeout(connect, 3000); return; }
    setLive(true);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) render(JSON.parse(data));
        }
      }
    } catch (e) { /* aborted or dropped */ }
    setLive(false);
    retry = setTimeout(connect, 3000);
  }

  function show(who) {
    me = who;
    $("who").textContent = who.name + " · " + (who.centre || who.role);
    $("login").hidden = true; $("board").hidden = false; $("logout").hidden = false;
    connect();
    startEdges();
  }

  async function signIn(candidate) {
    $("login-error").textContent = "";
    let me;
    try {
      const response = await fetch("/api/v1/me", { headers: { Authorization: "Bearer " + candidate }, cache: "no-store" });
      me = await response.json();
      if (!response.ok) throw new Error(me.detail || response.statusText);
    } catch (e) { signOut(String(e.message || e)); return; }
    if (me.role !== "coordinator" && me.role !== "admin") { signOut("需要调度员或管理员 (a coordinator's or admin's token is needed; this is " + me.role + ")"); return; }
    token = candidate;
    sessionStorage.setItem("yilian.token", token);  // this tab only, gone when it closes
    show(me);
  }

  async function fromSession() {
    // Signed in at /signin: the session cookie authorises the stream and the actions.
    let session;
    try {
      const response = await fetch("/api/v1/session", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) { signOut(""); return; }
      session = await response.json();
    } catch (e) { signOut(""); return; }
    if (session.role !== "coordinator" && session.role !== "admin") {
      signOut("需要调度员或管理员 (a coordinator or an admin signs in here; you are " + session.role + ")");
      return;
    }
    csrf = session.csrf_token;
    show({ name: session.name, centre: session.centre, role: session.role });
  }

  function signOut(error) {
    if (csrf) {  // end the session on the server, then the sign-in page
      const headers = { "X-CSRF-Token": csrf };
      csrf = null;
      fetch("/api/v1/session", { method: "DELETE", headers, credentials: "same-origin" })
        .finally(() => location.assign("/signin"));
    }
    token = null;
    stopEdges();
    if (controller) controller.abort();
    clearTimeout(retry);
    sessionStorage.removeItem("yilian.token");
    $("board").hidden = true; $("logout").hidden = true; $("login").hidden = false;
    $("who").textContent = "";
    $("login-error").textContent = error || "";
    setLive(false, "offline");
  }

  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
  $("logout").addEventListener("click", () => signOut(""));
  $("centres").addEventListener("click", (e) => {
    const target = e.target.closest("button[data-action]");
    if (target) ask(target);
  });
  $("act-form").addEventListener("submit", (e) => { e.preventDefault(); confirmAction(); });
  $("act-cancel").addEventListener("click", () => { pending = null; $("act").close(); });
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) history.replaceState(null, "", location.pathname);  // keep the token out of the history
  const saved = given || sessionStorage.getItem("yilian.token");
  if (saved) signIn(saved); else fromSession();
  window.yilianDashboard = { last: () => last };
})();
