// nonsense_hpc dashboard: draws the snapshots pushed by /api/stream (Server-Sent Events).
// Plain JavaScript and <canvas>; nothing is loaded from the network.
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2",
                "#be185d", "#4d7c0f", "#64748b", "#ea580c"];
let updates = 0;
let lastState = null;

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return v.toFixed(digits === undefined ? (a >= 100 ? 0 : a >= 10 ? 1 : 3) : digits);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(t);
  return out;
}

// series: [{name, points: [[x, y], ...]}]
function drawChart(canvas, series, xLabel) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px sans-serif";
  const pts = series.flatMap(s => s.points.filter(p => p[1] !== null));
  canvas.dataset.points = String(pts.length);
  if (pts.length === 0) {
    ctx.fillStyle = "#94a3b8";
    ctx.fillText("waiting for data...", w / 2 - 50, h / 2);
    return;
  }
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (x1 === x0) { x1 = x0 + 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const L = 52, R = 10, T = 10, B = 38;
  const X = x => L + (x - x0) / (x1 - x0) * (w - L - R);
  const Y = y => h - B - (y - y0) / (y1 - y0) * (h - T - B);
  ctx.strokeStyle = "#e2e8f0"; ctx.fillStyle = "#64748b"; ctx.lineWidth = 1;
  for (const t of niceTicks(y0, y1, 5)) {
    ctx.beginPath(); ctx.moveTo(L, Y(t)); ctx.lineTo(w - R, Y(t)); ctx.stroke();
    ctx.fillText(fmt(t), 4, Y(t) + 4);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    ctx.beginPath(); ctx.moveTo(X(t), T); ctx.lineTo(X(t), h - B); ctx.stroke();
    ctx.fillText(fmt(t), X(t) - 10, h - B + 14);
  }
  ctx.fillText(xLabel, w - R - 8 * xLabel.length, h - 4);
  let lx = L + 4;
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    ctx.strokeStyle = c; ctx.lineWidth = 1.8; ctx.beginPath();
    let pen = false;
    for (const p of s.points) {
      if (p[1] === null) { pen = false; continue; }
      if (pen) ctx.lineTo(X(p[0]), Y(p[1])); else ctx.moveTo(X(p[0]), Y(p[1]));
      pen = true;
    }
    ctx.stroke();
    ctx.fillStyle = c; ctx.fillRect(lx, h - 16, 10, 3);
    ctx.fillText(s.name, lx + 13, h - 12);
    lx += 22 + ctx.measureText(s.name).width;
  });
}

function spark(canvas, points) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const ys = points.map(p => p[1]), lo = Math.min(...ys), hi = Math.max(...ys) || 1;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  ctx.strokeStyle = "#2563eb"; ctx.beginPath();
  points.forEach((p, i) => {
    const x = (p[0] - t0) / ((t1 - t0) || 1) * (w - 2) + 1;
    const y = h - 2 - (p[1] - lo) / ((hi - lo) || 1) * (h - 4);
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
}

function seriesOf(state, group) {
  return Object.entries(state.series)
    .filter(([, s]) => s.group === group || (group === "other" && s.group === "speed"))
    .map(([name, s]) => ({name, points: s.points}));
}

function latest(state, group) {
  const s = Object.entries(state.series).filter(([, v]) => v.group === group);
  if (!s.length) return null;
  const pts = s[0][1].points;
  return pts.length ? pts[pts.length - 1][1] : null;
}

function text(el, value) { document.getElementById(el).textContent = value; }

function render(state) {
  lastState = state;
  updates += 1;
  document.body.dataset.updates = String(updates);
  document.body.dataset.version = String(state.version);
  text("step", state.step === null ? "-" : String(state.step));
  text("steps-per-s", fmt(state.steps_per_s, 2));
  text("latest-loss", fmt(latest(state, "loss"), 4));
  text("latest-accuracy", fmt(latest(state, "accuracy"), 4));
  text("counters", state.messages + " / " + state.lost + " / " + state.malformed);
  text("sources", (state.sources || []).join(", ") +
       (state.jobs.length ? "  job " + state.jobs.join(", ") : ""));
  drawChart(document.getElementById("chart-loss"), seriesOf(state, "loss"), "step");
  drawChart(document.getElementById("chart-accuracy"), seriesOf(state, "accuracy"), "step");
  drawChart(document.getElementById("chart-speed"),
            [{name: "steps/s", points: state.rate_history.map(p => [p[0] - state.started, p[1]])}],
            "time (s)");
  drawChart(document.getElementById("chart-other"), seriesOf(state, "other"), "step");
  renderRanks(state);
  renderEvents(state);
}

function renderRanks(state) {
  const body = document.querySelector("#ranks tbody");
  body.textContent = "";
  let alive = 0;
  for (const r of state.ranks) {
    const limit = 3 * (r.interval || 1);
    const stale = r.age > limit;
    if (!stale) alive += 1;
    const tr = document.createElement("tr");
    tr.className = stale ? "stale" : "alive";
    tr.dataset.rank = r.key;
    const cells = [r.rank === null ? r.key : r.rank, r.host || "-", r.pid || "-",
                   fmt(r.age, 1) + " s ago", r.beats, fmtBytes(r.rss)];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = String(c);
      if (i >= 3) td.className = "num";
      tr.appendChild(td);
    });
    const td = document.createElement("td");
    const cv = document.createElement("canvas");
    cv.width = 80; cv.height = 18; cv.style.width = "80px"; cv.style.height = "18px";
    td.appendChild(cv); tr.appendChild(td);
    body.appendChild(tr);
    spark(cv, r.memory);
  }
  text("ranks-alive", alive + " / " + state.ranks.length);
}

function renderEvents(state) {
  const ol = document.getElementById("events");
  ol.textContent = "";
  for (const e of state.events.slice().reverse()) {
    const li = document.createElement("li");
    li.className = e.level;
    const t = document.createElement("span");
    t.className = "time";
    t.textContent = new Date(e.time * 1000).toLocaleTimeString();
    li.appendChild(t);
    li.appendChild(document.createTextNode(e.text));
    ol.appendChild(li);
  }
}

function setStatus(on, msg) {
  const el = document.getElementById("status");
  el.className = "status " + (on ? "on" : "off");
  el.textContent = msg;
  document.body.dataset.connected = String(on);
}

function connect() {
  fetch("api/state").then(r => r.json()).then(render).catch(() => {});
  if (!window.EventSource) {  // very old browsers: poll
    setInterval(() => fetch("api/state").then(r => r.json()).then(render), 1000);
    return;
  }
  const es = new EventSource("api/stream");
  es.addEventListener("state", ev => { setStatus(true, "live"); render(JSON.parse(ev.data)); });
  es.onerror = () => setStatus(false, "reconnecting...");
}

window.addEventListener("resize", () => { if (lastState) render(lastState); });
connect();
