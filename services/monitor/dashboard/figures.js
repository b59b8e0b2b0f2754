"use strict";
// The consortium's figures (统计分析): one month's indicators, the year's trend, and (for those who
// may see it) the month's settlement statement.  The bearer token goes in the Authorization header,
// never in a URL; text is set with textContent only; charts are hand-made SVG.
(function () {
  const PRIORITY = { stat: "急诊 STAT", urgent: "加急 urgent", routine: "常规 routine" };
  const GRADE = { A: "甲", B: "乙", C: "丙", reject: "废片" };
  const LEVEL = { township: "乡镇卫生院 townships", village: "村卫生室 village clinics" };
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let token = null;

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
  const label = (zh, en) => [zh, " ", el("small", null, en)];
  const pct = (r) => (r === null || r === undefined ? "—" : (100 * r).toFixed(1) + "%");
  const yuan = (fen) => (fen / 100).toFixed(2);
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 3600) return Math.round(seconds / 60) + " 分";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " 时";
    return (seconds / 86400).toFixed(1) + " 天";
  }
  function table(head, rows, empty) {
    return el("table", null, el("thead", null, el("tr", null, head.map(([zh, en, n]) =>
      el("th", { class: n ? "n" : null }, label(zh, en))))),
      el("tbody", null, rows.length ? rows : [el("tr", null, el("td", { colspan: head.length, class: "note" }, empty))]));
  }
  function bar(rate, cls, width) {
    const span = el("span", { class: "bar " + (cls || "") });
    span.style.width = Math.round((width || 80) * (rate || 0)) + "px";  // CSSOM: allowed by the CSP
    return span;
  }

  async function api(path) {
    const resp = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    if (resp.status === 401) { signOut("令牌无效或已过期 token refused"); throw new Error("401"); }
    if (!resp.ok) { const err = new Error(String(resp.status)); err.status = resp.status; throw err; }
    return resp.json();
  }

  function tiles(f) {
    const readings = (f.readings || []).reduce((a, s) => a + s.readings, 0);
    const consultations = (f.readings || []).reduce((a, s) => a + s.consultations, 0);
    const signed = (f.turnaround || []).reduce((a, t) => a + t.count, 0);
    const onTime = signed ? (f.turnaround || []).reduce((a, t) => a + t.on_time, 0) / signed : null;
    const graded = (f.quality || []).reduce((a, q) => a + q.graded, 0);
    const aRate = graded ? (f.quality || []).reduce((a, q) => a + q.A, 0) / graded : null;
    const cov = f.coverage ? f.coverage.township.share : null;
    const crit = f.critical || {};
    const tile = (key, zh, en, value, cls) => el("div", { class: "tile " + (cls || ""), "data-tile": key },
      el("b", null, value), label(zh, en));
    $("tiles").replaceChildren(
      tile("readings", "远程诊断", "remote readings", readings),
      tile("consultations", "远程会诊", "consultations", consultations),
      tile("on_time", "按时率", "on time", pct(onTime), onTime === null ? "" : onTime >= 0.9 ? "good" : onTime >= 0.75 ? "warn" : "bad"),
      tile("a_rate", "甲片率", "A rate", pct(aRate), aRate === null ? "" : aRate >= 0.7 ? "good" : "warn"),
      tile("coverage", "乡镇覆盖率", "township coverage", pct(cov), cov === null ? "" : cov >= 1 ? "good" : "warn"),
      tile("critical", "危急值 / 确认中位", "critical / ack p50", (crit.count ?? "—") + " / " + duration(crit.p50_ack_seconds),
        crit.unacknowledged ? "bad" : ""));
  }

  function sitesChart(sites) {
    const rows = sites.filter((s) => s.readings + s.consultations > 0 || s.level !== "county");
    const W = 600, ROW = 22, L = 130, H = rows.length * ROW + 20;
    const max = Math.max(1, ...rows.map((s) => s.imaging + s.ecg + s.consultations));
    const scale = (v) => (v * (W - L - 50)) / max;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "各机构远程诊断量" });
    rows.forEach((s, i) => {
      const y = i * ROW + 4;
      chart.append(svg("text", { x: L - 6, y: y + 12, "text-anchor": "end" }, s.name || s.organization));
      let x = L;
      for (const [key, color] of [["imaging", "#3f6e9a"], ["ecg", "#e08a2c"], ["consultations", "#6a9f4b"]]) {
        const w = scale(s[key]);
        chart.append(svg("rect", { x, y, width: Math.max(0, w), height: 14, fill: color, "data-site": s.organization, "data-key": key }));
        x += w;
      }
      chart.append(svg("text", { x: x + 4, y: y + 12 }, s.readings + s.consultations));
    });
    const legend = el("div", { class: "legend" }, [["#3f6e9a", "影像 imaging"], ["#e08a2c", "心电 ECG"], ["#6a9f4b", "会诊 consultation"]]
      .map(([c, t]) => { const i = el("i"); i.style.background = c; return el("span", null, i, t); }));
    $("sites").replaceChildren(chart, legend);
  }

  function trendChart(months) {
    const W = 600, H = 160, L = 34, B = 20, T = 8;
    const max = Math.max(1, ...months.map((m) => m.readings));
    const x = (i) => L + (i * (W - L - 10)) / 11;
    const y = (v) => H - B - (v * (H - B - T)) / max;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "逐月远程诊断量" });
    chart.append(svg("line", { x1: L, y1: H - B, x2: W - 6, y2: H - B, stroke: "#9fb0c2" }));
    chart.append(svg("text", { x: L - 4, y: y(max) + 4, "text-anchor": "end" }, max));
    months.forEach((m, i) => {
      chart.append(svg("rect", { x: x(i) - 10, y: y(m.readings), width: 20, height: H - B - y(m.readings), fill: "#3f6e9a", "data-month": m.month }));
      chart.append(svg("text", { x: x(i), y: H - 6, "text-anchor": "middle" }, Number(m.month.slice(5)) + "月"));
    });
    const line = months.map((m, i) => m.on_time_share === null ? null : `${x(i)},${H - B - m.on_time_share * (H - B - T)}`).filter(Boolean);
    if (line.length > 1) chart.append(svg("polyline", { points: line.join(" "), fill: "none", stroke: "#2e7d32", "stroke-width": 2 }));
    const legend = el("div", { class: "legend" }, [["#3f6e9a", "远程诊断量 readings"], ["#2e7d32", "按时率 on-time share (0–100%)"]]
      .map(([c, t]) => { const i = el("i"); i.style.background = c; return el("span", null, i, t); }));
    $("trend").replaceChildren(chart, legend);
  }

  function turnaround(f) {
    const rows = (f.turnaround || []).map((t) => el("tr", { "data-priority": t.priority },
      el("td", null, PRIORITY[t.priority] || t.priority), el("td", { class: "n" }, t.count),
      el("td", { class: "n" }, duration(t.p50_seconds)), el("td", { class: "n" }, duration(t.p90_seconds)),
      el("td", { class: "n" + (t.on_time_share !== null && t.on_time_share < 0.9 ? " low" : "") }, pct(t.on_time_share)),
      el("td", null, bar(t.on_time_share))));
    $("turnaround").replaceChildren(table([["优先级", "priority"], ["报告", "signed", 1], ["P50", "p50", 1], ["P90", "p90", 1],
      ["按时率", "on time", 1], ["", ""]], rows, "本期无报告 no report"));
  }

  function coverage(f) {
    if (!f.coverage) { $("coverage").replaceChildren(); return; }
    const rows = Object.entries(f.coverage).map(([level, c]) => el("tr", { "data-level": level },
      el("td", null, LEVEL[level] || level), el("td", { class: "n" }, c.served + " / " + c.total),
      el("td", { class: "n" }, pct(c.share)), el("td", null, bar(c.share)),
      el("td", { class: "note" }, c.not_served_ids.length ? "未使用 " + c.not_served_ids.join(", ") : "")));
    $("coverage").replaceChildren(table([["级别", "level"], ["已使用", "served", 1], ["覆盖率", "share", 1], ["", ""],
      ["", ""]], rows, ""));
  }

  function quality(f) {
    const rows = (f.quality || []).map((q) => el("tr", { "data-site": q.organization, "data-modality": q.modality },
      el("td", null, q.organization), el("td", null, q.modality), el("td", null, q.technician || "未记录"),
      el("td", { class: "n" }, q.graded), el("td", { class: "n" }, pct(q.a_rate)), el("td", null, bar(q.a_rate)),
      el("td", { class: "n" + (q.reject_rate > 0.05 ? " low" : "") }, pct(q.reject_rate)),
      el("td", null, bar(q.reject_rate, "reject", 400)),
      el("td", { class: "note" }, Object.entries(q.reasons).map(([k, v]) => k + " " + v).join(" · "))));
    // the readers' comments on the poorest images, newest first: what a township's technicians act on
    const comments = (f.quality || []).flatMap((q) => q.comments.map((c) => ({ ...c, q })))
      .sort((a, b) => (a.graded_at < b.graded_at ? 1 : -1)).slice(0, 8)
      .map((c) => el("li", { "data-reading": c.reading_id }, el("b", null, GRADE[c.grade] || c.grade), " ",
        c.q.organization, " · ", c.q.modality, " · ", c.q.technician || "未记录", " — ", c.comment,
        el("small", null, " " + (c.reader || ""))));
    $("quality").replaceChildren(el("div", { class: "scroll" }, table([["机构", "site"], ["设备", "modality"],
      ["技师", "technician"], ["评级", "graded", 1], ["甲片率", "A rate", 1], ["", ""], ["废片率", "reject", 1], ["", ""],
      ["原因", "reasons"]], rows, "本期无质控评级 no grading yet")),
      comments.length ? el("div", { class: "comments" }, el("h3", null, label("阅片医师意见", "readers' comments")),
        el("ul", null, comments)) : null);
  }

  function peer(f) {
    const rows = (f.peer_review || []).map((p) => el("tr", { "data-reader": p.reader },
      el("td", null, p.reader), el("td", null, p.centre), el("td", { class: "n" }, p.sampled),
      el("td", { class: "n" }, p.scored), el("td", { class: "n" }, pct(p.agreement_rate)),
      el("td", { class: "n" }, p.minor), el("td", { class: "n" + (p.significant ? " low" : "") }, p.significant),
      el("td", { class: "n" }, p.upheld)));
    $("peer").replaceChildren(table([["医师", "reader"], ["中心", "centre"], ["抽查", "sampled", 1], ["已评", "scored", 1],
      ["一致率", "agreement", 1], ["轻微", "minor", 1], ["重大", "significant", 1], ["仲裁成立", "upheld", 1]], rows,
      "本期无抽查 no review sampled"));
  }

  function later(f) {
    const items = [["双向转诊", "referrals", f.referrals], ["结果互认", "result recognition", f.recognition]]
      .filter(([, , v]) => v).map(([zh, en, v]) => el("p", null, label(zh, en), ": ",
        v.available ? JSON.stringify(v) : el("span", { class: "note" }, v.note)));
    $("later").replaceChildren(...items);
    $("later-panel").hidden = !items.length;
  }

  async function settlement(month) {
    try {
      const s = await api("/api/v1/settlement/statements?month=" + month);
      const rows = s.lines.map((l) => el("tr", null, el("td", null, l.requesting_name || l.requesting),
        el("td", null, l.reading_name || l.reading), el("td", { class: "n" }, l.entries),
        el("td", { class: "n" }, yuan(l.fee_fen)), el("td", { class: "n" }, yuan(l.reading_fen)),
        el("td", { class: "n" }, yuan(l.requesting_fen))));
      $("settlement").replaceChildren(
        el("p", null, s.closed ? label("已结账", "closed") : label("未结账（实时）", "open, as of now"), " · ", s.currency,
          " · ", label("合计", "total"), " ", yuan(s.totals.fee_fen)),
        table([["申请机构", "requesting"], ["诊断机构", "reading"], ["条目", "entries", 1], ["费用", "fee", 1],
          ["诊断方", "to reading", 1], ["申请方", "to requesting", 1]], rows, "本月无结算条目 no entry"));
      $("settlement-panel").hidden = false;
    } catch (err) {
      $("settlement-panel").hidden = true;  // not this role's
    }
  }

  async function load() {
    const month = $("month").value;
    const f = await api("/api/v1/figures?period=" + month);
    $("zone").textContent = f.timezone === "Asia/Shanghai" ? "北京时间 UTC+8" : f.timezone;
    const sitesView = "readings" in f;
    for (const id of ["sites-panel", "trend-panel", "turnaround-panel", "coverage-panel", "quality-panel"])
      $(id).hidden = !sitesView;
    if (sitesView) {
      tiles(f); sitesChart(f.readings); turnaround(f); coverage(f); quality(f);
      const trend = await api("/api/v1/figures/trend?year=" + month.slice(0, 4));
      trendChart(trend.months);
    } else {
      $("tiles").replaceChildren();
    }
    peer(f); later(f);
    await settlement(month);
    document.body.dataset.loaded = month;
  }

  async function download(format) {
    const month = $("month").value;
    const path = "/api/v1/figures/export?period=" + month + "&format=" + format + (format === "csv" ? "&section=readings" : "");
    const resp = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    if (!resp.ok) return;
    const url = URL.createObjectURL(await resp.blob());
    const a = el("a", { href: url, download: `yilian-figures-${month}.${format}` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function signOut(reason) {
    token = null;
    sessionStorage.removeItem("yilian.token");
    $("board").hidden = true; $("logout").hidden = true; $("login").hidden = false;
    $("login-error").textContent = reason || "";
  }

  async function signIn(value) {
    token = value.trim();
    sessionStorage.setItem("yilian.token", token);
    $("login").hidden = true; $("board").hidden = false; $("logout").hidden = false;
    try {
      const me = await api("/api/v1/me");
      $("who").textContent = (me.name || me.id || "") + (me.role ? " · " + me.role : "");
    } catch (err) { if (!token) return; }
    try { await load(); } catch (err) {
      if (token && err.status === 403) signOut("此角色无权查看统计 this role may not see the figures");
    }
  }

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("month")) $("month").value = fragment.get("month");
  if (!$("month").value) $("month").value = new Date().toISOString().slice(0, 7);
  const given = fragment.get("token");
  if (given) history.replaceState(null, "", location.pathname);
  $("month").addEventListener("change", () => load().catch(() => {}));
  $("xlsx").addEventListener("click", () => download("xlsx"));
  $("csv").addEventListener("click", () => download("csv"));
  $("logout").addEventListener("click", () => signOut(""));
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
  const stored = given || sessionStorage.getItem("yilian.token");
  if (stored) signIn(stored); else $("login").hidden = false;
})();
