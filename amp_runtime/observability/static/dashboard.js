// amp-runtime dashboard: plain JS, no build step, no external assets.
// Data: /ws/slots (live gauges), /ui/api/overview, /tasks/{id}, /jobs, /workers,
// /workers.get_stats and /workers.get_activity_report. The API key (when the server has one)
// is asked for once and kept in sessionStorage.
"use strict";

const KEY_ITEM = "amp-runtime.api-key";
const TERMINAL = new Set(["Completed", "Stopped", "Failed"]);
const TASK_FINAL = new Set(["completed", "failed", "timed_out", "cancelled"]);
const SLOT_HISTORY = 300;   // samples kept for the live slots chart
const RECENT_TASKS = 30;    // rows kept in "recent tasks"
const COLORS = ["#3b6fd8", "#e08a1e", "#2f9e5b", "#c8413a", "#8a4fd0", "#1a9aa5", "#7a7a7a"];

// -- API access -------------------------------------------------------------------------
let keyPrompt = null;
let keyDeclined = false;  // cancelled once: no more prompts from polling, the header button asks
function apiKey() { return sessionStorage.getItem(KEY_ITEM); }

function askForKey({ explicit = false } = {}) {
  if (keyDeclined && !explicit) return Promise.resolve(false);
  // One prompt at a time, however many calls got a 401 together.
  if (!keyPrompt) {
    keyPrompt = Promise.resolve().then(() => {
      const key = window.prompt("API key for this amp-runtime server");
      if (key) sessionStorage.setItem(KEY_ITEM, key.trim());
      keyDeclined = !key;
      return !!key;
    }).finally(() => setTimeout(() => { keyPrompt = null; }, 0));
  }
  return keyPrompt;
}

class ApiError extends Error {
  constructor(status, body) { super(`HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(path, { method = "GET", body, retried = false } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers["Authorization"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && !retried && await askForKey()) {
    return api(path, { method, body, retried: true });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// -- small DOM helpers --------------------------------------------------------------------
const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}
function bar(fraction, extraClass = "", label = "") {
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  return el("div", { class: `bar ${extraClass}`, "data-pct": pct, role: "meter", "aria-label": label || undefined,
                     "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100, title: label || undefined },
    el("span", { style: `width:${pct}%` }));
}
// A bar with its name on the left and its figure on the right.
function labelledBar(name, figure, fraction, extraClass) {
  return el("div", { class: "bar-row", "data-bar": name },
    el("span", { class: "bar-name" }, name), bar(fraction, extraClass, `${name}: ${figure}`),
    el("span", { class: "bar-figure" }, figure));
}
function fillTable(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => el("tr", cells.attrs || {}, ...cells.map((c) => el("td", {}, c)))));
}
function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return seconds < 120 ? `${seconds.toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`;
}
function unavailable(err) {
  return err instanceof ApiError && (err.status === 404 || err.status === 405)
    ? "not available on this server yet" : `error: ${err.message}`;
}

// -- SVG line chart ------------------------------------------------------------------------
// series: [{name, xs: [epoch s], ys: [number]}]; the container gets data-points = all points.
function lineChart(container, series, format = compact) {
  const W = 600, H = 150, L = 44, R = 8, T = 8, B = 18;
  const all = series.flatMap((s) => s.xs.map((x, i) => [x, s.ys[i]])).filter(([, y]) => Number.isFinite(y));
  container.replaceChildren(el("div", { class: "title" }, container.dataset.title || ""));
  container.dataset.points = all.length;
  if (!all.length) { container.append(el("div", { class: "none" }, "no data yet")); return; }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(0, ...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#ccc" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#ccc" });
  add("text", { x: 2, y: T + 8, "font-size": 10, fill: "#666" }, format(y1));
  add("text", { x: 2, y: H - B, "font-size": 10, fill: "#666" }, format(y0));
  add("text", { x: L, y: H - 4, "font-size": 10, fill: "#666" }, clock(x0));
  add("text", { x: W - R, y: H - 4, "font-size": 10, fill: "#666", "text-anchor": "end" }, clock(x1));
  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const points = s.xs.map((x, j) => [x, s.ys[j]]).filter(([, y]) => Number.isFinite(y));
    if (!points.length) return;
    add("polyline", { fill: "none", stroke: color, "stroke-width": 1.5, "vector-effect": "non-scaling-stroke",
                      points: points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ") });
    for (const [x, y] of points.slice(-60)) add("circle", { class: "pt", cx: sx(x), cy: sy(y), r: 1.8, fill: color });
    legend.append(el("span", {}, el("i", { style: `background:${color}` }), s.name));
  });
  container.append(svg, legend);
}
function compact(v) {
  const a = Math.abs(v);
  return a >= 1e9 ? `${(v / 1e9).toFixed(1)}G` : a >= 1e6 ? `${(v / 1e6).toFixed(1)}M`
    : a >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : `${Math.round(v * 10) / 10}`;
}
// Machine stats report memory in MiB (as the reference agent does).
function mebibytes(v) { return Math.abs(v) >= 1024 ? `${(v / 1024).toFixed(1)} GiB` : `${Math.round(v)} MiB`; }
function clock(epoch) { return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false }); }

// -- live slots (/ws/slots) ---------------------------------------------------------------
const slots = {};        // worker -> latest state
const slotHistory = [];  // {t, busy: {worker: n}, queued: {worker: n}}
let socketLive = false;  // while false, the overview poll updates the gauges

function renderGauges() {
  const gauges = Object.values(slots).sort((a, b) => a.worker.localeCompare(b.worker)).map((s) => {
    const busy = s.total - s.free;
    return el("div", { class: "gauge", "data-worker": s.worker, "data-busy": busy, "data-total": s.total,
                       "data-queued": s.queued },
      el("div", { class: "name" }, s.worker, s.maintenance ? el("span", { class: "maint" }, " · maintenance") : ""),
      labelledBar("slots", `${busy} / ${s.total} busy`, s.total ? busy / s.total : 0, ""),
      // Against the slot count: a full bar means as many tasks wait as can run at once.
      labelledBar("queue", `${s.queued} queued`, s.total ? Math.min(1, s.queued / s.total) : 0, "queue"));
  });
  $("#gauges").replaceChildren(...gauges);
}

function sampleSlots() {
  const busy = {}, queued = {};
  for (const s of Object.values(slots)) { busy[s.worker] = s.total - s.free; queued[s.worker] = s.queued; }
  slotHistory.push({ t: Date.now() / 1000, busy, queued });
  if (slotHistory.length > SLOT_HISTORY) slotHistory.shift();
  const workers = Object.keys(slots).sort();
  const xs = slotHistory.map((h) => h.t);
  lineChart($("#chart-slots"), [
    ...workers.map((w) => ({ name: `${w} busy`, xs, ys: slotHistory.map((h) => h.busy[w] ?? NaN) })),
    ...workers.map((w) => ({ name: `${w} queued`, xs, ys: slotHistory.map((h) => h.queued[w] ?? NaN) })),
  ]);
}

function connectSlots() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/slots`;
  const key = apiKey();
  let socket;
  try {
    socket = key ? new WebSocket(url, [key]) : new WebSocket(url);  // browsers cannot set headers
  } catch (err) {
    // A key that is not a valid subprotocol token: the overview poll feeds the gauges instead.
    setConn(false, "polling (key not usable on a WebSocket)");
    return;
  }
  socket.onopen = () => { socketLive = true; setConn(true, "live"); };
  socket.onmessage = (event) => {
    const state = JSON.parse(event.data);
    slots[state.worker] = state;
    renderGauges();
    sampleSlots();
  };
  socket.onclose = () => {
    socketLive = false;
    setConn(false, "reconnecting…");
    setTimeout(connectSlots, 1000);
  };
}
function setConn(ok, text) {
  const badge = $("#conn");
  badge.textContent = text;
  badge.className = `badge ${ok ? "ok" : "bad"}`;
}

// -- tasks (/ui/api/overview, /tasks/{id}) ------------------------------------------------
const recent = new Map();  // id -> {id, function, worker, status, duration_ms}

async function refreshTasks() {
  const overview = await api("/ui/api/overview");
  if (!socketLive) {
    for (const state of overview.workers) slots[state.worker] = state;
    renderGauges();
  }
  // Settled tasks the page did not see running (too short for a poll) join the list, oldest first.
  for (const task of [...(overview.settled || [])].reverse()) {
    if (!recent.has(task.id)) recent.set(task.id, task);
  }
  const runningIds = new Set();
  for (const task of overview.running) {
    if (!task.function) continue;  // a job's slot hold: shown under jobs
    runningIds.add(task.id);
    recent.delete(task.id);
    recent.set(task.id, { ...recent.get(task.id), ...task });
  }
  for (const [id, task] of recent) {
    if (!runningIds.has(id) && !TASK_FINAL.has(task.status)) {
      try { Object.assign(task, await api(`/tasks/${encodeURIComponent(id)}`)); }
      catch (err) { if (err.status === 404) task.status = "expired"; }
    }
  }
  while (recent.size > RECENT_TASKS) recent.delete(recent.keys().next().value);
  const rows = [...recent.values()].reverse().map((t) => Object.assign(
    [t.id.slice(0, 12), t.function, t.worker, t.status, t.duration_ms ?? ""],
    { attrs: { "data-task": t.id, "data-status": t.status } }));
  fillTable($("#recent-tasks"), rows);
  $("#recent-empty").textContent = rows.length ? "" : "No tasks yet.";
  fillTable($("#outcomes"), overview.outcomes.map((o) => [o.worker, o.function, o.mode, o.status, o.count]));
}

// Tasks started from the page: sync, so the answer carries the final state.
async function loadFunctions() {
  const health = await api("/health");
  const select = $("#run-function");
  select.replaceChildren(...(health.functions || []).map((f) =>
    el("option", { value: f.name, "data-contract": f.contract }, f.name)));
}

async function runTask(event) {
  event.preventDefault();
  const option = $("#run-function").selectedOptions[0];
  const note = $("#run-result");
  let input;
  try { input = JSON.parse($("#run-input").value || "null"); } catch (err) { note.textContent = `input: ${err.message}`; return; }
  if (!option) return;
  note.textContent = "running…";
  try {
    const result = await api("/task", { method: "POST", body: {
      function: option.value, contract: Number(option.dataset.contract), input } });
    recent.set(result.id, { id: result.id, function: option.value, worker: recent.get(result.id)?.worker ?? "",
                            status: result.status, duration_ms: result.duration_ms });
    note.textContent = `${result.status}: ${JSON.stringify(result.result ?? result.error ?? null).slice(0, 120)}`;
  } catch (err) {
    const body = err.body || {};
    note.textContent = `${err.message} ${body.error_code || ""} ${body.error_message || ""}`;
    if (body.status) recent.set(body.id, { ...body, function: option.value, worker: "" });
  }
}

// -- jobs ----------------------------------------------------------------------------------
const finalProgress = new Map();  // id -> progress of a terminal job (it no longer changes)

async function refreshJobs() {
  const list = await api("/jobs?status=all&limit=20");
  const cards = [];
  for (const job of list.jobs) {
    let progress = finalProgress.get(job.id);
    if (!progress) {
      try { progress = await api(`/jobs/${job.id}/progress`); } catch (_) { progress = { tables: {} }; }
      if (TERMINAL.has(progress.job_status)) finalProgress.set(job.id, progress);
    }
    cards.push(jobCard(job, progress));
  }
  $("#jobs").replaceChildren(...cards);
  $("#jobs-empty").textContent = cards.length ? "" : "No jobs.";
}

function jobCard(job, progress) {
  const status = TERMINAL.has(progress.job_status) ? progress.job_status : job.status;
  const d = job.descriptor;
  const span = d.end_block === null || d.end_block === undefined ? null : d.end_block - d.start_block + 1;
  const stop = el("button", { onclick: (e) => stopJob(job.id, e.target) }, "Stop");
  const tables = Object.entries(progress.tables || {}).sort().map(([name, t]) => {
    const done = t.current_block - t.start_block + 1;
    const fraction = span ? done / span : 0;
    return el("div", { class: "table-row", "data-table": name },
      el("span", {}, name),
      span ? bar(fraction, fraction >= 1 ? "done" : "") : el("span", {}, "continuous"),
      el("span", {}, `${span ? `${Math.floor(Math.min(1, fraction) * 100)}% · ` : ""}block ${t.current_block} · ${t.files_count} files`));
  });
  return el("div", { class: "job", "data-job": job.id, "data-status": status },
    el("div", { class: "head" },
      el("span", { class: "status" }, `#${job.id} ${status}`),
      el("span", { class: "desc" }, `${d.dataset} blocks ${d.start_block}–${d.end_block ?? "∞"} on ${job.node_id}`),
      TERMINAL.has(status) ? "" : stop),
    ...tables,
    job.error ? el("div", { class: "maint" }, job.error) : "");
}

async function stopJob(id, button) {
  button.disabled = true;
  try { await api(`/jobs/${id}/stop`, { method: "PUT" }); } catch (err) { button.disabled = false; alert(err.message); }
  refreshJobs().catch(() => {});
}

// -- registry: workers, stats, activity -----------------------------------------------------
async function refreshWorkers() {
  try {
    const data = await api("/workers");
    fillTable($("#workers"), data.workers.map((w) => Object.assign(
      [w.node_id, w.heartbeat_at ? ago(w.heartbeat_at) : "never"], { attrs: { "data-worker": w.node_id } })));
    $("#workers-empty").textContent = data.workers.length ? "" : "No workers registered.";
  } catch (err) {
    $("#workers-empty").textContent = `Registry: ${unavailable(err)}`;
  }
}

async function refreshStats() {
  const to = Math.floor(Date.now() / 1000), from = to - 600, interval = 5;
  try {
    const stats = await api("/workers.get_stats", { method: "POST", body: {
      from_date: from, to_date: to, interval,
      // `category` too: the reference clients name the aggregation that way.
      items: ["cpu_usage", "memory_used"].map((key) => ({ key, aggregation: "avg", category: "avg" })) } });
    const byMetric = { cpu_usage: [], memory_used: [] };
    for (const worker of stats.data.workers || []) {
      for (const m of worker.metrics || []) {
        const avg = (m.stats || []).find((s) => (s.aggregation || s.category || "avg") === "avg");
        if (avg && byMetric[m.metric]) byMetric[m.metric].push({ name: worker.worker, xs: m.dates, ys: avg.values });
      }
    }
    lineChart($("#chart-cpu"), byMetric.cpu_usage);
    lineChart($("#chart-memory"), byMetric.memory_used, mebibytes);
    const activity = (await api("/workers.get_activity_report", { method: "POST",
      body: { from_date: from, to_date: to, interval } })).data;
    lineChart($("#chart-activity"), [
      { name: "total", xs: activity.total?.dates || [], ys: activity.total?.counts || [] },
      { name: "active", xs: activity.active?.dates || [], ys: activity.active?.counts || [] }]);
    $("#stats-empty").textContent = "";
  } catch (err) {
    for (const id of ["#chart-cpu", "#chart-memory", "#chart-activity"]) lineChart($(id), []);
    $("#stats-empty").textContent = `Worker stats: ${unavailable(err)}`;
  }
}

// -- main loop -------------------------------------------------------------------------------
function every(ms, fn) {
  const tick = () => fn().catch((err) => console.warn(fn.name, err)).finally(() => setTimeout(tick, ms));
  tick();
}

async function start() {
  // One authenticated call first: it asks for the key if needed, before the socket uses it.
  try { await api("/ui/api/overview"); } catch (err) { console.warn(err); }
  $("#key-button").addEventListener("click", async () => {
    if (await askForKey({ explicit: true })) location.reload();
  });
  connectSlots();
  $("#run-form").addEventListener("submit", runTask);
  loadFunctions().catch((err) => { $("#run-result").textContent = `functions: ${err.message}`; });
  setInterval(() => { if (Object.keys(slots).length) sampleSlots(); }, 1000);
  every(1000, refreshTasks);
  every(1000, refreshJobs);
  every(2000, refreshWorkers);
  every(5000, refreshStats);
}
start();
