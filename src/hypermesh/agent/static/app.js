// hypermesh dashboard: plain JavaScript, no libraries, no network beyond this agent.
// Data: /v1/profile, /v1/assets, /v1/ebpf once; /v1/samples for history; then the /v1/stream
// server-sent events (one JSON sample per event, its id the agent's sequence number), falling back to
// polling /v1/samples?after=SEQUENCE. Every 10 s /metrics for what only it has (filesystems, which interfaces
// are up); /v1/ebpf every 2 s while the agent runs eBPF programs (their panels are panels.js's).
//
// Disconnected: the cards and charts dim and say since when; a worker (probe.js) asks /healthz until the
// agent answers, so the refused tries do not print errors in the page's console.
//
// Time: the page never compares the browser's clock with the agent's (they differ, and either may step).
// Samples are ordered by the agent's sequence number; charts are drawn in the agent's time, "now" being the
// last sample's timestamp plus the time elapsed since it arrived (measured by performance.now()); liveness
// is the time since the last arrival.
"use strict";

const WINDOW_S = 300; // seconds of history shown by each chart
const PALETTE = ["#3fb8af", "#f0b429", "#8e7cc3", "#ef5b5b", "#5aa9e6", "#7bc96f", "#e88bd1", "#c9a66b"];

const state = {
  samplesReceived: 0,
  sequence: 0, // the agent's sequence number of the last sample taken in
  lastTimestamp: 0, // its timestamp (the agent's clock)
  lastArrival: 0, // performance.now() when it arrived
  firstTimestamp: 0,
  intervalS: 1,
  transport: "none",
  connected: true, // false while the stream is gone and polls fail
  lostAt: 0, // Date.now() of the last contact, once disconnected
  errors: [],
  downInterfaces: new Set(), // hypermesh_network_up 0, from /metrics
  busyInterfaces: new Set(), // interfaces seen carrying traffic: kept in the rate legend even when down
  programs: {}, // /v1/ebpf's programs, as last read
};

function agentNow() {
  return state.lastTimestamp + (performance.now() - state.lastArrival) / 1000;
}
window.hypermeshDashboard = state; // read by the end-to-end test and handy in the console

// ----------------------------------------------------------------------------------- formatting

function fmtBytes(v) {
  if (v == null || !isFinite(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : 1)) + " " + units[i];
}
const fmtRate = (v) => fmtBytes(v) + "/s";
const fmtPct = (v) => (v == null ? "–" : v.toFixed(1) + " %");
const fmtNum = (v) => (v == null ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2));

function el(id) { return document.getElementById(id); }
function text(id, value) { const node = el(id); if (node) node.textContent = value; }

// ------------------------------------------------------------------------------------------ chart

class Chart {
  // kind: how the value axis counts ("percent", "bytes", "rate" = bytes per second, "number" in unit).
  constructor(name, format, kind, unit, fixedMax, floorMax) {
    this.name = name;
    this.canvas = el("chart-" + name);
    this.legend = el("legend-" + name);
    this.format = format;
    this.kind = kind;
    this.unit = unit;
    this.fixedMax = fixedMax;
    this.floorMax = floorMax || 1; // an idle series still gets a readable scale (1 KiB/s, not "0 B, 1 B")
    this.series = new Map(); // label -> {color, points: [[t, v], ...], valueNode}
    this.dirty = true;
    this.draws = 0;
    this.axisKey = "";
    if (this.canvas) {
      // The tick labels are HTML beside the canvas: crisp at any zoom, read by screen readers and tests.
      const plot = document.createElement("div");
      plot.className = "plot";
      this.canvas.replaceWith(plot);
      this.yAxis = document.createElement("div");
      this.yAxis.className = "axis axis-y";
      this.xAxis = document.createElement("div");
      this.xAxis.className = "axis axis-x";
      plot.append(this.canvas, this.yAxis, this.xAxis);
    }
  }

  push(label, t, value) {
    let s = this.series.get(label);
    if (!s) {
      s = { color: PALETTE[this.series.size % PALETTE.length], points: [], valueNode: null };
      this.series.set(label, s);
      this.renderLegend();
    }
    s.points.push([t, value]);
    const cutoff = t - WINDOW_S;
    while (s.points.length && s.points[0][0] < cutoff) s.points.shift();
    if (s.valueNode) s.valueNode.textContent = this.format(value);
    this.dirty = true;
  }

  remove(label) {
    if (this.series.delete(label)) {
      this.renderLegend();
      this.dirty = true;
    }
  }

  renderLegend() {
    if (!this.legend) return;
    this.legend.textContent = "";
    for (const [label, s] of this.series) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color;
      const value = document.createElement("b");
      item.append(swatch, document.createTextNode(label), value);
      s.valueNode = value;
      this.legend.append(item);
    }
  }

  labels(axis, items, key) {
    // Rewritten only when the ticks or their places change, not on every frame.
    if (axis.dataset.key === key) return;
    axis.dataset.key = key;
    axis.textContent = "";
    for (const [label, style, cls] of items) {
      const span = document.createElement("span");
      span.className = "tick" + (cls ? " " + cls : "");
      span.textContent = label;
      Object.assign(span.style, style);
      axis.append(span);
    }
  }

  draw(now) {
    if (!this.dirty || !this.canvas) return;
    this.dirty = false;
    this.draws++;
    const ratio = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (this.canvas.width !== Math.round(w * ratio)) this.canvas.width = Math.round(w * ratio);
    if (this.canvas.height !== Math.round(h * ratio)) this.canvas.height = Math.round(h * ratio);
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#8b9bab";
    if (![...this.series.values()].some((s) => s.points.length)) {
      // No scale to show before the first value: a bare axis read "1 B, 1 B, 1 B, 0 B, 0 B".
      this.labels(this.yAxis, [], "none");
      this.labels(this.xAxis, [], "none");
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(state.samplesReceived ? "no data from this agent" : "waiting for data…", w / 2, h / 2);
      return;
    }

    let max = this.fixedMax || 0;
    if (!this.fixedMax) for (const s of this.series.values()) for (const p of s.points) max = Math.max(max, p[1]);
    const axis = window.hypermeshAxes.valueTicks(Math.max(max, this.floorMax), this.kind, this.unit);
    const top_ = axis.top;
    const left = 70, right = 8, top = 8, bottom = 18;
    const pw = w - left - right, ph = h - top - bottom;
    // Show the last 5 minutes, or less while the agent has less history: a new agent fills the chart.
    const span = Math.min(WINDOW_S, Math.max(60, Math.ceil(now - (state.firstTimestamp || now))));
    const x = (t) => left + pw * (1 - (now - t) / span);
    const y = (v) => top + ph * (1 - v / top_);

    ctx.strokeStyle = "#263240";
    ctx.lineWidth = 1;
    const yLabels = [];
    for (const tick of axis.ticks) {
      const yy = Math.round(y(tick.value)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - right, yy); ctx.stroke();
      yLabels.push([tick.label, { top: yy + "px", width: left - 6 + "px" }]);
    }
    this.labels(this.yAxis, yLabels, `${h}|` + yLabels.map((l) => l[0]).join(","));
    const xLabels = window.hypermeshAxes.timeTicks(span, Math.floor(pw / 56) + 1).map((tick) => {
      const xx = Math.round(x(now - tick.ago));
      return [tick.label, { left: xx + "px", top: h - bottom + 3 + "px" }, tick.ago === 0 ? "now" : tick.ago >= span - 1e-6 ? "first" : ""];
    });
    this.labels(this.xAxis, xLabels, `${w}|${span}`);
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, pw, ph);
    ctx.clip();

    for (const s of this.series.values()) {
      if (!s.points.length) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
    }
    ctx.restore();
  }
}

const charts = {
  cpu: new Chart("cpu", (v) => v.toFixed(0) + " %", "percent", "", 100),
  memory: new Chart("memory", fmtBytes, "bytes", "", 0, 1024 * 1024),
  pressure: new Chart("pressure", fmtNum, "number", "", 0, 1),
  disk: new Chart("disk", fmtRate, "rate", "", 0, 1024),
  network: new Chart("network", fmtRate, "rate", "", 0, 1024),
};

// ---------------------------------------------------------------------------------------- samples

function sum(list, key) { return list.reduce((acc, item) => acc + (item[key] || 0), 0); }

function ingest(sample, sequence) {
  // By sequence number, not timestamp: after the agent's clock steps back, its new samples have older times.
  if (!sample || sequence <= state.sequence) return;
  state.sequence = sequence;
  state.lastTimestamp = sample.timestamp;
  state.lastArrival = performance.now();
  state.connected = true;
  if (!state.firstTimestamp) state.firstTimestamp = sample.timestamp;
  state.samplesReceived++;
  const t = sample.timestamp;
  const cpu = sample.cpu, mem = sample.memory;

  charts.cpu.push("all", t, cpu.percent);
  cpu.per_core.forEach((v, i) => charts.cpu.push("cpu" + i, t, v));
  charts.memory.push("used", t, mem.used_bytes);
  charts.memory.push("cached", t, mem.cached_bytes);
  charts.memory.push("swap used", t, mem.swap_used_bytes);
  if (mem.pressure) {
    charts.pressure.push("some", t, mem.pressure.some_stall_us_per_s);
    if (mem.pressure.full_stall_us_per_s != null) charts.pressure.push("full", t, mem.pressure.full_stall_us_per_s);
  }
  for (const d of sample.disks) {
    charts.disk.push(d.name + " read", t, d.read_bytes_per_s);
    charts.disk.push(d.name + " write", t, d.write_bytes_per_s);
  }
  for (const n of sample.network) {
    if ((n.rx_bytes_per_s > 0 || n.tx_bytes_per_s > 0) && !state.busyInterfaces.has(n.name)) {
      state.busyInterfaces.add(n.name);
      if (state.downInterfaces.has(n.name)) showDownInterfaces(); // it carries traffic: in the legend, not the note
    }
    // A down interface with no traffic is said once under the chart, not drawn as two flat lines.
    if (state.downInterfaces.has(n.name) && !state.busyInterfaces.has(n.name)) continue;
    charts.network.push(n.name + " rx", t, n.rx_bytes_per_s);
    charts.network.push(n.name + " tx", t, n.tx_bytes_per_s);
  }
  updateSummary(sample);
  updateLiveness();
}

function updateSummary(sample) {
  const cpu = sample.cpu, mem = sample.memory;
  text("stat-cpu", fmtPct(cpu.percent));
  text("stat-cpu-sub", `user ${cpu.user_percent.toFixed(0)} · sys ${cpu.system_percent.toFixed(0)} · iowait ${cpu.iowait_percent.toFixed(0)}`);
  text("stat-mem", fmtBytes(mem.used_bytes));
  text("stat-mem-sub", `of ${fmtBytes(mem.total_bytes)} · ${fmtBytes(mem.available_bytes)} available`);
  text("stat-psi", mem.pressure ? fmtPct(mem.pressure.some_avg10) : "n/a");
  text("stat-load", fmtNum(sample.load.avg1));
  text("stat-load-sub", `5m ${fmtNum(sample.load.avg5)} · 15m ${fmtNum(sample.load.avg15)}`);
  text("stat-disk", fmtRate(sum(sample.disks, "read_bytes_per_s") + sum(sample.disks, "write_bytes_per_s")));
  text("stat-net", fmtRate(sum(sample.network, "rx_bytes_per_s") + sum(sample.network, "tx_bytes_per_s")));

  const cores = el("cores");
  cpu.per_core.forEach((v, i) => {
    let node = document.getElementById("core-" + i);
    if (!node) {
      node = document.createElement("div");
      node.className = "core";
      node.id = "core-" + i;
      node.innerHTML = `<span></span><div class="bar"><div></div></div>`;
      cores.append(node);
    }
    node.firstChild.textContent = `cpu${i}  ${v.toFixed(0)} %`;
    node.querySelector(".bar div").style.width = Math.min(100, v).toFixed(1) + "%";
  });
}

// ---------------------------------------------------------------------------------------- transport

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadSamples(limit) {
  // after= follows the agent's sequence numbers; the response's "sequence" is its last sample's.
  let data = await getJSON(`/v1/samples?after=${state.sequence}&limit=${limit}`);
  if (data.sequence < state.sequence) {
    // The agent restarted and counts from 1 again: follow its new numbers.
    state.sequence = 0;
    data = await getJSON(`/v1/samples?after=0&limit=${limit}`);
  }
  state.intervalS = data.interval_s;
  const first = data.sequence - data.samples.length + 1;
  data.samples.forEach((sample, i) => ingest(sample, first + i));
  return data;
}

async function loadHistory() {
  if (state.sequence === 0) {
    // The first call learns the interval: then ask for the chart's window worth of samples.
    const probe = await getJSON("/v1/samples?limit=1");
    state.intervalS = probe.interval_s;
  }
  await loadSamples(Math.max(1, Math.min(3600, Math.ceil(WINDOW_S / state.intervalS) + 1)));
}

let prober = null; // probe.js, started while the agent answers (starting it later would itself fail)

function probeAgent() {
  return new Promise((resolve) => {
    if (!prober) {
      getJSON("/healthz").then(() => resolve(true), () => resolve(false));
      return;
    }
    prober.onmessage = (event) => resolve(event.data === true);
    prober.onerror = () => resolve(false);
    prober.postMessage("/healthz");
  });
}

function markLost() {
  if (!state.connected) return;
  state.connected = false;
  // The last contact: the last sample's arrival, on the browser's wall clock (for "since 14:03:07").
  state.lostAt = state.lastArrival ? Date.now() - (performance.now() - state.lastArrival) : Date.now();
  updateLiveness();
}

function markConnected() {
  state.connected = true;
  state.lostAt = 0;
  updateLiveness();
}

let reconnecting = false;
function reconnect() {
  // Until the agent answers, only the worker tries (1 s, 2 s, … up to 10 s apart); then the page reloads
  // the history it missed and opens the stream again.
  if (reconnecting) return;
  reconnecting = true;
  let tries = 0;
  const attempt = async () => {
    if (!(await probeAgent())) {
      tries++;
      setTimeout(attempt, Math.min(10000, 1000 * tries));
      return;
    }
    try {
      await loadHistory();
    } catch (err) {
      tries++;
      setTimeout(attempt, Math.min(10000, 1000 * tries));
      return;
    }
    reconnecting = false;
    markConnected();
    refreshEbpf();
    refreshMetrics();
    startStream();
  };
  attempt();
}

async function streamFailed() {
  // The agent restarted, stopped, refused (503 when busy) or the network blinked. If it still answers, poll
  // until the stream is back; if not, it is disconnected.
  if (await probeAgent()) startPolling();
  else {
    markLost();
    reconnect();
  }
}

function startStream() {
  if (!window.EventSource) return startPolling();
  const source = new EventSource("/v1/stream");
  state.transport = "sse";
  source.onmessage = (event) => ingest(JSON.parse(event.data), Number(event.lastEventId));
  source.onerror = () => {
    source.close(); // EventSource would retry on its own, each refused try an error in the console
    streamFailed();
  };
}

let polling = false;
function startPolling() {
  if (polling) return;
  polling = true;
  state.transport = "polling";
  let polls = 0;
  const tick = async () => {
    try {
      await loadHistory();
      state.connected || markConnected();
      if (++polls % 30 === 0 && window.EventSource) {
        polling = false;
        return startStream(); // try the push channel again now and then
      }
    } catch (err) {
      polling = false;
      markLost(); // the stream is gone and the agent does not answer either
      return reconnect();
    }
    setTimeout(tick, Math.max(1000, state.intervalS * 1000));
  };
  setTimeout(tick, 1000);
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function updateLiveness() {
  // The time since the last sample arrived, on the browser's own monotonic clock.
  const age = (performance.now() - state.lastArrival) / 1000;
  const limit = Math.max(3, state.intervalS * 3);
  let status, words;
  const since = state.lostAt ? `since ${clock(state.lostAt)}` : "";
  if (state.sequence === 0) {
    status = state.connected ? "" : "down";
    words = state.connected ? "waiting for the first sample…" : `disconnected ${since} · the agent does not answer`;
  } else if (!state.connected || age >= 30) {
    status = "down";
    const when = since || `since ${clock(Date.now() - age * 1000)}`;
    words = `disconnected ${when} (${ago(age)}) · retrying`;
  } else if (age >= limit) {
    status = "stale";
    words = `stale · no sample for ${age.toFixed(1)}s · ${state.transport}`;
  } else {
    status = "live";
    words = `live · every ${state.intervalS}s · ${state.transport}`;
  }
  el("live-dot").className = "dot " + status;
  state.status = status || "waiting";
  text("live-text", words);
  // Every card and chart says it shows old numbers, not only the dot in the corner.
  const offline = status === "down";
  document.body.classList.toggle("offline", offline);
  const note = offline ? words.split(" · ")[0].replace("disconnected since", "no data since") : null;
  for (const card of document.querySelectorAll(".card, .stat")) {
    // The summary tiles are small: the time alone.
    if (offline) card.dataset.offline = card.classList.contains("stat") ? note.split(" (")[0] : note;
    else delete card.dataset.offline;
  }
}

function ago(seconds) {
  return seconds < 120 ? `${seconds.toFixed(0)} s ago` : `${(seconds / 60).toFixed(0)} min ago`;
}

function frame() {
  const now = agentNow();
  for (const chart of Object.values(charts)) chart.draw(now);
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------------------------ static cards

function kv(container, rows) {
  // rows: [key, value (text or a DOM node), class, title (shown on hover)].
  container.textContent = "";
  container.classList.remove("muted");
  for (const [key, value, cls, title] of rows) {
    const k = document.createElement("div");
    k.className = "k";
    k.textContent = key;
    const v = document.createElement("div");
    v.className = "v" + (cls ? " " + cls : "");
    if (value instanceof Node) v.append(value);
    else v.textContent = value;
    if (title) {
      v.title = title;
      v.classList.add("why");
    }
    container.append(k, v);
  }
}

function showProfile(profile) {
  const os = profile.os, cpu = profile.cpu;
  text("hostname", os.hostname);
  // One element per fact: at 420 px the line breaks between facts, never inside one or before a "·".
  const detail = el("host-detail");
  detail.textContent = "";
  const facts = [os.distribution || os.system, `kernel ${os.release}`, cpu.model || cpu.architecture,
    `${cpu.logical_cores} CPUs`, `${fmtBytes(profile.memory.total_bytes)} RAM`];
  for (const fact of facts.filter(Boolean)) {
    const span = document.createElement("span");
    span.textContent = fact;
    detail.append(span);
  }
  document.title = `${os.hostname} · hypermesh`;
}

async function refreshEbpf() {
  if (!state.connected) return; // the reconnect refreshes it
  try {
    const status = await getJSON("/v1/ebpf");
    state.programs = status.programs || {};
    kv(el("ebpf"), window.hypermeshPanels.ebpfRows(status));
    window.hypermeshPanels.showPrograms(state.programs);
  } catch (err) {
    state.errors.push(String(err));
  }
}

function showDownInterfaces() {
  const quiet = [...state.downInterfaces].filter((name) => !state.busyInterfaces.has(name)).sort();
  window.hypermeshPanels.note("legend-network", "network-down", quiet.length ? `down: ${quiet.join(", ")}` : "");
}

async function refreshMetrics() {
  // What only /metrics has: filesystems, and which interfaces are up.
  if (!state.connected) return;
  try {
    const response = await fetch("/metrics", { cache: "no-store" });
    if (!response.ok) throw new Error(`/metrics: HTTP ${response.status}`);
    const metrics = window.hypermeshPanels.parseMetrics(await response.text());
    window.hypermeshPanels.showFilesystems(metrics, fmtBytes);
    const down = new Set();
    for (const [labels, value] of metrics.get("hypermesh_network_up") || []) if (value === 0) down.add(labels.interface);
    state.downInterfaces = down;
    for (const name of down) {
      if (state.busyInterfaces.has(name)) continue;
      charts.network.remove(name + " rx");
      charts.network.remove(name + " tx");
    }
    showDownInterfaces();
  } catch (err) {
    state.errors.push(String(err));
  }
}

function showAssets(snapshot) {
  // /v1/assets is the assets layer's snapshot; the assets panel (assets.js) shows it whole
  const rows = [];
  for (const a of snapshot.assets) {
    if (a.kind === "cpu") rows.push(["cpu", `${a.capacity} cores`]);
    if (a.kind === "memory") rows.push(["memory", fmtBytes(a.capacity)]);
  }
  const gpus = snapshot.assets.filter((a) => a.kind === "gpu").length;
  rows.push(["gpu", gpus ? `${gpus}` : "none"]);
  kv(el("assets"), rows);
}

async function main() {
  requestAnimationFrame(frame);
  setInterval(updateLiveness, 500);
  if (window.Worker) prober = new Worker("/static/probe.js");
  const optional = (promise, show) => promise.then(show).catch((err) => state.errors.push(String(err)));
  optional(getJSON("/v1/profile"), showProfile);
  // Program readings change by the second (their panels are live); the probe does not.
  const ebpfTick = () => {
    const running = Object.values(state.programs).some((entry) => entry.loaded);
    setTimeout(() => refreshEbpf().finally(ebpfTick), running ? 2000 : 10000);
  };
  refreshEbpf().finally(ebpfTick);
  refreshMetrics();
  setInterval(refreshMetrics, 10000);
  optional(getJSON("/v1/assets"), showAssets);
  // With basic auth on, /healthz names the version only to a client whose credentials the agent has verified.
  optional(getJSON("/healthz"), (h) => h.version && text("footer-version", "agent " + h.version));
  try {
    await loadHistory();
  } catch (err) {
    state.errors.push(String(err));
  }
  startStream();
}

main();
