// Vigil dashboard: polls /api/state every 2 s and draws everything as inline SVG. No external assets.
"use strict";

const POLL_MS = 2000;
const FETCH_TIMEOUT_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
const COLOR = {score: "#3b6ea8", anom: "#d63c3c", thr: "#2f9e62", label: "#f0a030", dlq: "#8a4fd0", vol: "#dfe5ec"};
// the entity picked by the user ("" follows the newest alert); ?entity=... in the address picks one
let chosen = new URLSearchParams(location.search).get("entity") ?? "";
let polls = 0;
let entityKey = "";       // the picker's options as last built (rebuilt only when they change)
let timer = null;

const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
const fmtInt = (n) => (n ?? 0).toLocaleString("en-US");
const fmtPct = (x, digits = 2) => (x == null ? "–" : `${(100 * x).toFixed(digits)} %`);
function fmtScore(x) {
  if (x == null) return "–";
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : x.toPrecision(3);
}
const isoUtc = (ms) => new Date(ms).toISOString();
const hms = (ms) => isoUtc(ms).slice(11, 19);
function shortTime(text, ms) {
  if (ms != null) return isoUtc(ms).slice(0, 19).replace("T", " ");
  return text ? String(text).slice(0, 19).replace("T", " ") : "–";
}

function tail(text, n) {  // the end of a long name: "…telemetry@2" (the version is at the end)
  text = String(text ?? "");
  return text.length > n ? `…${text.slice(text.length - n + 1)}` : text;
}
function feedTime(text, ms) {  // HH:MM:SS: the date is in the tooltip
  return shortTime(text, ms).slice(11);
}

// --- SVG helpers -----------------------------------------------------------------------------------
function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}
function svgBox(width, height) {
  return el("svg", {viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "xMidYMid meet", role: "img"});
}
function timeStep(spanMs, ticks) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
  return steps.find((s) => spanMs / s <= ticks) ?? steps[steps.length - 1];
}
function niceStep(span, ticks) {
  const raw = span / ticks;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => span / s <= ticks) ?? 10 * p;
}
function timeLabel(ms, stepMs) {
  return stepMs >= 60000 ? isoUtc(ms).slice(11, 16) : hms(ms);
}
function message(svg, width, height, text) {
  svg.appendChild(el("text", {x: width / 2, y: height / 2, "text-anchor": "middle"}, text));
  return svg;
}

// --- the score chart: one entity's scores, log scale, with each model version's threshold -----------
function scoreChart(entity, width) {
  const W = width, H = 240, L = 52, R = 14, T = 10, B = 34;
  const svg = svgBox(W, H);
  const points = (entity?.series ?? []).filter((r) => r[0] != null && r[1] != null);
  if (!points.length) return message(svg, W, H, entity ? "no scored readings for this entity yet" : "no scored readings yet");
  const thresholds = entity.thresholds ?? {};
  const floor = 1e-6;
  const lg = (v) => Math.log10(Math.max(v, floor));
  let lo = Infinity, hi = -Infinity;
  for (const r of points) { lo = Math.min(lo, lg(r[1])); hi = Math.max(hi, lg(r[1])); }
  for (const v of Object.values(thresholds)) if (v != null) { lo = Math.min(lo, lg(v)); hi = Math.max(hi, lg(v)); }
  if (hi - lo < 0.5) { const mid = (hi + lo) / 2; lo = mid - 0.25; hi = mid + 0.25; }
  lo -= 0.1; hi += 0.1;
  let t0 = points[0][0], t1 = points[points.length - 1][0];
  if (t1 - t0 < 1000) { t0 -= 30000; t1 += 30000; }
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - (lg(v) - lo) / (hi - lo));
  // y grid: decades, plus 2 and 5 when the range is narrow
  const mults = hi - lo < 2.5 ? [1, 2, 5] : [1];
  for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) {
    for (const m of mults) {
      const v = m * Math.pow(10, d), lv = Math.log10(v);
      if (lv < lo || lv > hi) continue;
      svg.appendChild(el("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
      svg.appendChild(el("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"}, v >= 1 ? String(v) : v.toPrecision(1)));
    }
  }
  const step = timeStep(t1 - t0, 7);
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    svg.appendChild(el("line", {class: "grid", x1: x(t), x2: x(t), y1: T, y2: H - B}));
    svg.appendChild(el("text", {x: x(t), y: H - B + 15, "text-anchor": "middle"}, timeLabel(t, step)));
  }
  svg.appendChild(el("text", {x: L, y: H - 3}, `event time (UTC), ${isoUtc(t0).slice(0, 10)}`));
  svg.appendChild(el("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
  // labelled readings (the simulator's ground truth), as a band under the plot
  for (const r of points) {
    if (r[4]) svg.appendChild(el("rect", {x: x(r[0]) - 1.5, y: H - B - 6, width: 3, height: 6, fill: COLOR.label}));
  }
  // thresholds: one dashed segment per run of readings scored by the same version
  let runStart = 0;
  for (let i = 1; i <= points.length; i++) {
    if (i < points.length && points[i][3] === points[runStart][3]) continue;
    const version = points[runStart][3], thr = thresholds[version];
    if (thr != null) {
      const xa = x(points[runStart][0]), xb = Math.max(x(points[i - 1][0]), xa + 2);
      svg.appendChild(el("line", {x1: xa, x2: xb, y1: y(thr), y2: y(thr), stroke: COLOR.thr, "stroke-width": 1.6,
        "stroke-dasharray": "6 4"}));
    }
    runStart = i;
  }
  const path = points.map((r, i) => `${i ? "L" : "M"}${x(r[0]).toFixed(1)},${y(r[1]).toFixed(1)}`).join("");
  svg.appendChild(el("path", {d: path, fill: "none", stroke: COLOR.score, "stroke-width": 1.3}));
  for (const r of points) {
    if (r[2]) svg.appendChild(el("circle", {cx: x(r[0]), cy: y(r[1]), r: 3.2, fill: COLOR.anom}));
  }
  return svg;
}

// --- the rate chart: per minute of arrival ---------------------------------------------------------
function ratesChart(minutes, width) {
  const W = width, H = 240, L = 46, R = 50, T = 12, B = 34;
  const svg = svgBox(W, H);
  if (!minutes.length) return message(svg, W, H, "nothing has arrived yet");
  let t0 = minutes[0].minute_ms, t1 = minutes[minutes.length - 1].minute_ms;
  const span = Math.max(t1 - t0, 60000);
  const slot = (W - L - R) / (span / 60000 + 1);
  const x = (t) => L + slot / 2 + (W - L - R - slot) * (t - t0) / span;
  let top = 0, vol = 1;
  for (const m of minutes) {
    top = Math.max(top, m.anomaly_rate ?? 0, m.dead_letter_rate ?? 0);
    vol = Math.max(vol, m.scored + m.dead_letters);
  }
  top = Math.max(top * 1.15, 0.01);
  const step = niceStep(top, 5);
  top = Math.ceil(top / step) * step;
  const y = (r) => T + (H - T - B) * (1 - r / top);
  const yv = (n) => T + (H - T - B) * (1 - n / vol);
  for (let r = 0; r <= top + 1e-12; r += step) {
    svg.appendChild(el("line", {class: "grid", x1: L, x2: W - R, y1: y(r), y2: y(r)}));
    svg.appendChild(el("text", {x: L - 6, y: y(r) + 4, "text-anchor": "end"}, `${+(100 * r).toFixed(2)}%`));
  }
  svg.appendChild(el("text", {x: W - R + 6, y: yv(vol) + 4}, fmtInt(vol)));
  svg.appendChild(el("text", {x: W - R + 6, y: yv(0) + 4}, "0"));
  const barW = Math.max(2, Math.min(slot * 0.7, 40));
  for (const m of minutes) {
    const n = m.scored + m.dead_letters;
    svg.appendChild(el("rect", {x: x(m.minute_ms) - barW / 2, y: yv(n), width: barW, height: yv(0) - yv(n), fill: COLOR.vol}));
  }
  const tstep = Math.max(timeStep(span, 7), 60000);
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    svg.appendChild(el("text", {x: x(t), y: H - B + 15, "text-anchor": "middle"}, timeLabel(t, tstep)));
  }
  svg.appendChild(el("text", {x: L, y: H - 3}, "minute of arrival (UTC)"));
  svg.appendChild(el("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
  for (const [key, color] of [["anomaly_rate", COLOR.anom], ["dead_letter_rate", COLOR.dlq]]) {
    const pts = minutes.filter((m) => m[key] != null);
    if (!pts.length) continue;
    const d = pts.map((m, i) => `${i ? "L" : "M"}${x(m.minute_ms).toFixed(1)},${y(m[key]).toFixed(1)}`).join("");
    svg.appendChild(el("path", {d, fill: "none", stroke: color, "stroke-width": 2}));
    for (const m of pts) svg.appendChild(el("circle", {cx: x(m.minute_ms), cy: y(m[key]), r: 2.6, fill: color}));
  }
  return svg;
}

// --- the panels ------------------------------------------------------------------------------------
function renderTiles(s) {
  const t = s.totals;
  $("t-scored").textContent = fmtInt(t.scored);
  $("t-anomalies").textContent = fmtInt(t.anomalies);
  $("t-anomaly-rate").textContent = t.scored ? `${fmtPct(t.anomalies / t.scored)} of scored` : "";
  $("t-alerts").textContent = fmtInt(t.alerts);
  $("t-dead").textContent = fmtInt(t.dead_letters);
  $("t-dead-rate").textContent = t.scored + t.dead_letters ? `${fmtPct(t.dead_letters / (t.scored + t.dead_letters), 3)} of input` : "";
  $("t-entities").textContent = fmtInt(t.entities);
  $("t-versions").textContent = fmtInt(s.versions.length);
}

function renderStatus(s, failed) {
  const pill = $("status");
  const st = s?.status ?? {};
  let text = "live", cls = "pill-live", title = "";
  if (failed) { text = "no connection"; cls = "pill-bad"; title = failed; }
  else if (st.error) { text = "consumer error"; cls = "pill-bad"; title = st.error; }
  else if (!st.caught_up) { text = "reading backlog…"; cls = "pill-wait"; }
  pill.textContent = text; pill.className = `pill ${cls}`; pill.title = title;
  const missing = st.missing_topics ?? [];
  $("note").textContent = missing.length ? `waiting for ${missing.join(", ")}` : (st.error ?? "");
}

function renderAlerts(s, selected) {
  const body = $("alerts").tBodies[0];
  const label = s.fields.label;
  if (!s.alerts.length) { body.innerHTML = `<tr><td colspan="6" class="muted">no alerts yet</td></tr>`; return; }
  body.innerHTML = s.alerts.slice(0, 200).map((a) => `
    <tr data-entity="${esc(a.entity)}" class="${a.entity === selected ? "selected" : ""}" title="${esc(a.source)}, ${esc(a.status === "closed" ? `closed at ${a.ended_at}` : "open")}${a.anomalies > 1 ? `, ${a.anomalies} anomalous readings, peak ${fmtScore(a.max_score)}` : ""}">
      <td class="mono" title="${esc(a.event_time)}">${esc(feedTime(a.event_time, a.event_ms))}</td>
      <td class="mono">${esc(a.entity)}</td>
      <td class="num">${esc(fmtScore(a.max_score ?? a.score))}</td>
      <td><span class="chip ${a.status === "open" ? "" : "chip-none"}">${esc(a.status ?? "")}</span> ${esc(a.anomalies ?? "")}</td>
      <td>${label ? (a.label ? `<span class="chip">${esc(a.label)}</span>` : `<span class="chip chip-none">none</span>`) : ""}</td>
      <td class="mono model" title="${esc(a.model_version)}">${esc(tail(a.model_version, 13))}</td>
    </tr>`).join("");
}

function renderPicker(s, selected) {
  const select = $("entity");
  const key = JSON.stringify([s.default_entity, s.entities.map((e) => [e.entity, e.alerts])]);
  if (key !== entityKey) {
    entityKey = key;
    const options = [`<option value="">newest alert (${esc(s.default_entity ?? "none")})</option>`];
    for (const e of s.entities) {
      options.push(`<option value="${esc(e.entity)}">${esc(e.entity)}${e.alerts ? ` · ${e.alerts} alert${e.alerts > 1 ? "s" : ""}` : ""}</option>`);
    }
    select.innerHTML = options.join("");
  }
  select.value = chosen && s.entities.some((e) => e.entity === chosen) ? chosen : "";
  const e = s.entity;
  $("entity-summary").innerHTML = e
    ? `<span class="mono">${esc(e.entity)}</span>: last ${fmtInt(e.series.length)} readings shown; ${fmtInt(e.scored)} scored,
       ${fmtInt(e.anomalies)} above threshold, ${fmtInt(e.alerts)} alert${e.alerts === 1 ? "" : "s"}` +
      Object.entries(e.thresholds).sort().map(([v, t]) =>
        ` · <span class="thr">threshold ${esc(v)}: ${t == null ? "unknown" : esc(fmtScore(t))}</span>`).join("")
    : "";
  $("legend-label").style.display = s.fields.label ? "" : "none";
}

function renderDeadLetters(d) {
  const stages = Object.entries(d.by_stage);
  const most = Math.max(1, ...stages.map(([, n]) => n));
  $("stages").innerHTML = stages.map(([stage, n]) => `
    <div class="stage"><span class="mono">${esc(stage)}</span>
      <div><div class="bar ${n ? "" : "zero"}" style="width:${(100 * n / most).toFixed(1)}%"></div></div>
      <span class="n">${fmtInt(n)}</span></div>`).join("");
  $("reasons").innerHTML = d.latest.length ? d.latest.slice(0, 4).map((r) => `
    <li title="${esc(r.reason)}"><code>${esc(r.reason)}</code><br>
      <span class="where">${esc(r.source)} · arrived ${r.arrival_ms ? esc(hms(r.arrival_ms)) : "–"}</span></li>`).join("")
    : `<li class="muted">no dead letters</li>`;
}

function renderVersions(versions) {
  const body = $("versions").tBodies[0];
  body.innerHTML = versions.length ? versions.map((v) => `
    <tr><td class="mono"><div class="clip" title="${esc(v.model_version)}">${esc(v.model_version)}</div></td><td class="num">${fmtInt(v.scored)}</td>
      <td class="num">${fmtInt(v.anomalies)}</td><td class="num">${fmtPct(v.scored ? v.anomalies / v.scored : null)}</td>
      <td class="num">${v.threshold == null ? `<span class="muted" title="not found in the model registry">unknown</span>` : esc(fmtScore(v.threshold))}</td>
      <td class="num">${v.first_arrival_ms ? esc(shortTime(null, v.first_arrival_ms)) : "–"}</td>
      <td class="num">${v.last_arrival_ms ? esc(shortTime(null, v.last_arrival_ms)) : "–"}</td></tr>`).join("")
    : `<tr><td colspan="7" class="muted">nothing scored yet</td></tr>`;
}

function render(s) {
  $("input").textContent = s.input;
  document.title = `Vigil · ${s.input}`;
  const selected = s.entity?.entity ?? null;
  renderTiles(s);
  renderAlerts(s, selected);
  renderPicker(s, selected);
  // charts are drawn at the width they get, so their text stays at its CSS size
  $("score-chart").replaceChildren(scoreChart(s.entity, Math.max(400, $("score-chart").clientWidth || 880)));
  $("rates-chart").replaceChildren(ratesChart(s.rates.minutes, Math.max(300, $("rates-chart").clientWidth || 560)));
  renderDeadLetters(s.dead_letters);
  renderVersions(s.versions);
  $("updated").textContent = hms(s.generated_ms);
}

async function poll() {
  try {
    const response = await fetch(`/api/state?entity=${encodeURIComponent(chosen)}`,
      {cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS)});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const state = await response.json();
    render(state);
    renderStatus(state, null);
  } catch (err) {
    renderStatus(null, String(err));
  } finally {
    polls += 1;
    document.body.dataset.polls = String(polls);
    clearTimeout(timer);  // a poll the user triggered and the regular one never both schedule
    timer = setTimeout(poll, POLL_MS);
  }
}

$("entity").addEventListener("change", (ev) => { chosen = ev.target.value; poll(); });
$("alerts").addEventListener("click", (ev) => {
  const row = ev.target.closest("tr[data-entity]");
  if (row) { chosen = row.dataset.entity; poll(); }
});
poll();
