// hypermesh dashboard: plain JavaScript, no libraries, no network beyond this agent.
// Data: /v1/profile, /v1/assets, /v1/ebpf once; /v1/samples for history; then the /v1/stream
// server-sent events (one JSON sample per event, its id the agent's sequence number), falling back to
// polling /v1/samples?after=SEQUENCE.
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
  errors: [],
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
  constructor(name, format, fixedMax, floorMax) {
    this.name = name;
    this.canvas = el("chart-" + name);
    this.legend = el("legend-" + name);
    this.format = format;
    this.fixedMax = fixedMax;
    this.floorMax = floorMax || 1; // an idle series still gets a readable scale (1 KiB/s, not "0 B, 1 B")
    this.series = new Map(); // label -> {color, points: [[t, v], ...], valueNode}
    this.dirty = true;
    this.draws = 0;
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
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(state.samplesReceived ? "no data from this agent" : "waiting for data…", w / 2, h / 2);
      return;
    }

    let max = this.fixedMax || 0;
    if (!this.fixedMax) for (const s of this.series.values()) for (const p of s.points) max = Math.max(max, p[1]);
    max = niceCeil(Math.max(max, this.floorMax));
    const left = 70, right = 8, top = 8, bottom = 18;
    const pw = w - left - right, ph = h - top - bottom;
    // Show the last 5 minutes, or less while the agent has less history: a new agent fills the chart.
    const span = Math.min(WINDOW_S, Math.max(60, now - (state.firstTimestamp || now)));
    const x = (t) => left + pw * (1 - (now - t) / span);
    const y = (v) => top + ph * (1 - v / max);

    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#263240";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - right, yy); ctx.stroke();
      ctx.fillText(this.format(v), left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let i = 0; i <= 5; i++) {
      const s = (span * i) / 5;
      ctx.textAlign = i === 0 ? "right" : i === 5 ? "left" : "center";
      const label = s >= 120 ? (s / 60).toFixed(1).replace(/\.0$/, "") + "m" : s.toFixed(0) + "s";
      ctx.fillText(i === 0 ? "now" : "-" + label, x(now - s), h - bottom + 4);
    }
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

function niceCeil(v) {
  const exp = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * exp) return m * exp;
  return 10 * exp;
}

const charts = {
  cpu: new Chart("cpu", (v) => v.toFixed(0) + " %", 100),
  memory: new Chart("memory", fmtBytes, 0, 1024 * 1024),
  pressure: new Chart("pressure", fmtNum, 0, 1),
  disk: new Chart("disk", fmtRate, 0, 1024),
  network: new Chart("network", fmtRate, 0, 1024),
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

function startStream() {
  if (!window.EventSource) return startPolling();
  const source = new EventSource("/v1/stream");
  state.transport = "sse";
  source.onmessage = (event) => ingest(JSON.parse(event.data), Number(event.lastEventId));
  source.onerror = () => {
    // The agent restarted, refused (503 when busy) or the network blinked: poll until the stream is back.
    source.close();
    startPolling();
  };
}

let polling = false;
function startPolling() {
  if (polling) return;
  polling = true;
  state.transport = "polling";
  let failures = 0, polls = 0;
  const tick = async () => {
    try {
      await loadHistory();
      failures = 0;
      state.connected = true;
      if (++polls % 30 === 0 && window.EventSource) {
        polling = false;
        return startStream(); // try the push channel again now and then
      }
    } catch (err) {
      failures++;
      state.connected = false; // the stream is gone and the agent does not answer either
    }
    setTimeout(tick, Math.min(10000, Math.max(1000, state.intervalS * 1000) * (1 + failures)));
  };
  setTimeout(tick, 1000);
}

function updateLiveness() {
  // The time since the last sample arrived, on the browser's own monotonic clock.
  const age = (performance.now() - state.lastArrival) / 1000;
  const limit = Math.max(3, state.intervalS * 3);
  let status, words;
  if (state.sequence === 0) {
    status = "";
    words = state.connected ? "waiting for the first sample…" : "disconnected · the agent does not answer";
  } else if (!state.connected || age >= 30) {
    status = "down";
    words = `disconnected · last sample ${age.toFixed(0)}s ago · retrying`;
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
}

function frame() {
  const now = agentNow();
  for (const chart of Object.values(charts)) chart.draw(now);
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------------------------ static cards

function kv(container, rows) {
  container.textContent = "";
  container.classList.remove("muted");
  for (const [key, value, cls] of rows) {
    const k = document.createElement("div");
    k.className = "k";
    k.textContent = key;
    const v = document.createElement("div");
    v.className = "v" + (cls ? " " + cls : "");
    v.textContent = value;
    container.append(k, v);
  }
}

function showProfile(profile) {
  const os = profile.os, cpu = profile.cpu;
  text("hostname", os.hostname);
  text("host-detail", `${os.distribution || os.system} · kernel ${os.release} · ${cpu.model || cpu.architecture} · ` +
    `${cpu.logical_cores} CPUs · ${fmtBytes(profile.memory.total_bytes)} RAM`);
  document.title = `${os.hostname} · hypermesh`;
}

function showEbpf(status) {
  const rows = [["status", status.available ? "available" : "unavailable", status.available ? "ok" : "no"]];
  if (status.reason) rows.push(["reason", status.reason]);
  const probe = status.probe || {};
  for (const [key, value] of Object.entries(probe)) {
    if (typeof value === "boolean") rows.push([key, value ? "yes" : "no", value ? "ok" : "no"]);
    else if (typeof value === "string" || typeof value === "number") rows.push([key, String(value)]);
    else if (Array.isArray(value)) {
      const supported = value.filter((f) => f && f.supported).map((f) => f.name);
      const missing = value.filter((f) => f && f.supported === false).map((f) => f.name);
      if (supported.length) rows.push(["supported", supported.join(", "), "ok"]);
      if (missing.length) rows.push(["not supported", missing.join(", "), "no"]);
    }
  }
  for (const [name, entry] of Object.entries(status.programs || {})) {
    if (!entry.loaded) {
      rows.push([name, entry.error || "not loaded", "no"]);
      continue;
    }
    const reading = entry.reading || {};
    if (reading.syscalls) {
      const top = Object.entries(reading.syscalls).sort((a, b) => b[1] - a[1]).slice(0, 5);
      rows.push([name, `${reading.total.toLocaleString()} calls · top: ` + top.map(([k, v]) => `${k} ${v.toLocaleString()}`).join(", "), "ok"]);
    } else {
      rows.push([name, "loaded", "ok"]);
    }
  }
  kv(el("ebpf"), rows);
}

async function refreshEbpf() {
  try {
    showEbpf(await getJSON("/v1/ebpf"));
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
  const optional = (promise, show) => promise.then(show).catch((err) => state.errors.push(String(err)));
  optional(getJSON("/v1/profile"), showProfile);
  refreshEbpf();
  setInterval(refreshEbpf, 10000); // program readings change; the probe does not
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
