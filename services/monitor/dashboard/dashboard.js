"use strict";
// The coordinator's dashboard: one fetch-streamed SSE connection (the bearer token goes in the
// Authorization header, never in a URL), re-rendered on every snapshot.  Text is always set with
// textContent, so nothing from the server is ever parsed as HTML.
(function () {
  const KIND = { imaging: "影像 imaging", ecg: "心电 ECG" };
  const PRIORITY = { stat: "急诊 STAT", urgent: "加急 urgent", routine: "常规 routine" };
  const STATE = { queued: "排队 queued", claimed: "已领取 claimed", draft: "草稿 draft" };
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let token = null;
  let session = false;  // signed in with the desk's session cookie, not a pasted token
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
    for (const r of c.dead_letters) out.push(el("div", { class: "alert", "data-alert": "dead-letter" },
      "结果投递失败 delivery dead-lettered · ", r.organization || "", " · ", r.request_id || r.id,
      r.dead_letter_reason ? " · " + r.dead_letter_reason : ""));
    return el("div", { class: "alerts" }, out);
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
          el("h3", null, label("医师负荷", "readers' load")), readersTable(c))));
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

  function render(data) {
    last = data;
    if (data.timezone && data.timezone !== zone) { zone = data.timezone; formats.clear(); }
    $("centres").replaceChildren(...data.centres.map(centreCard));
    if (data.consortium) { $("consortium").replaceChildren(...consortiumPanel(data.consortium)); $("consortium").hidden = false; }
    if (data.sites) { $("sites").replaceChildren(...sitesTable(data.sites)); $("sites").hidden = false; }
    $("clock").textContent = "更新 updated " + localTime(data.now);
    $("zone").textContent = zoneNote(data.now);
    $("zone").title = zone || "";
    document.body.dataset.updated = data.now;
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
      response = await fetch("/api/v1/monitor/stream", { headers: { ...auth(), Accept: "text/event-stream" },
                                                         cache: "no-store", signal: controller.signal });
    } catch (e) { setLive(false); retry = setTimeout(connect, 3000); return; }
    if (session && response.status === 401) { location.assign("/signin?next=/dashboard"); return; }  // it ended
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

  // A pasted token goes in the Authorization header; without one the desk's session cookie (/signin) is used.
  function auth() { return token ? { Authorization: "Bearer " + token } : {}; }

  async function signIn(candidate) {
    $("login-error").textContent = "";
    let me;
    try {
      const response = await fetch("/api/v1/me", { headers: candidate ? { Authorization: "Bearer " + candidate } : {},
                                                   cache: "no-store" });
      me = await response.json();
      if (!response.ok) throw new Error(me.detail || response.statusText);
    } catch (e) { signOut(candidate ? String(e.message || e) : ""); return; }
    if (me.role !== "coordinator" && me.role !== "admin") { signOut("需要调度员或管理员 (a coordinator's or admin's token is needed; this is " + me.role + ")"); return; }
    token = candidate;
    session = !candidate;
    if (candidate) sessionStorage.setItem("yilian.token", token);  // this tab only, gone when it closes
    $("who").textContent = me.name + " · " + (me.centre || me.role);
    $("login").hidden = true; $("board").hidden = false; $("logout").hidden = false;
    connect();
  }

  function signOut(error) {
    token = null;
    if (controller) controller.abort();
    clearTimeout(retry);
    sessionStorage.removeItem("yilian.token");
    $("board").hidden = true; $("logout").hidden = true; $("login").hidden = false;
    $("who").textContent = "";
    $("login-error").textContent = error || "";
    setLive(false, "offline");
  }

  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
  $("logout").addEventListener("click", async () => {
    if (!session) { signOut(""); return; }
    // a desk session ends on the server (DELETE /api/v1/session with its CSRF token), then to /signin
    try {
      const current = await (await fetch("/api/v1/session", { cache: "no-store" })).json();
      await fetch("/api/v1/session", { method: "DELETE", headers: { "X-CSRF-Token": current.csrf_token } });
    } finally { location.assign("/signin"); }
  });
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) history.replaceState(null, "", location.pathname);  // keep the token out of the history
  const saved = given || sessionStorage.getItem("yilian.token");
  signIn(saved || null);  // no token: the session cookie, if the user signed in at /signin
  window.yilianDashboard = { last: () => last };
})();
