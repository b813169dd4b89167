// The cluster page: every agent registered in etcd, from /v1/cluster (one fan-out per second at most, shared by
// every open page). A node card links to that node's own dashboard at its advertised URL.
"use strict";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

function bytes(value) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = value, i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${units[i]}`;
}

function amount(unit, value) {
  if (unit === "bytes") return bytes(value);
  if (unit === "cores") return `${+value.toFixed(2)} cores`;
  return `${+value.toFixed(2)} ${unit || ""}`.trim();
}

function pct(v) { return v === null || v === undefined ? "–" : `${v.toFixed(1)}%`; }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function row(label, value) { return el("div", { class: "row" }, el("span", {}, label), el("b", {}, value)); }

function bar(fraction) {
  const inner = el("span");
  inner.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return el("div", { class: "bar" }, inner);
}

function card(node, self) {
  const failed = node.error !== null && node.error !== undefined;
  const state = failed ? "failed" : node.stale ? "stale" : "ok";
  const dot = el("span", { class: `dot ${failed ? "down" : node.stale ? "stale" : "live"}` });
  const link = el("a", { href: `${node.url}/`, title: `open ${node.node_id}'s own dashboard` }, node.node_id);
  const head = el("h2", {}, dot, link);
  if (node.node_id === self) head.append(el("small", { class: "muted" }, "this node"));
  const box = el("article", { class: `node ${state}`, "data-node": node.node_id, "data-state": state }, head);
  box.append(row("url", node.url));
  if (failed) {
    box.append(el("div", { class: "reason" }, `${node.error.kind}: ${node.error.reason}`));
    return box;
  }
  box.append(row("status", node.status), row("version", node.version || "–"));
  const age = node.last_sample_age_s;
  box.append(row("last sample", age === null ? "never" : `${age.toFixed(1)} s ago${node.stale ? " (stale)" : ""}`));
  box.append(row("cpu", pct(node.cpu_percent)), bar((node.cpu_percent || 0) / 100));
  box.append(row("memory", pct(node.memory_percent)), bar((node.memory_percent || 0) / 100));
  for (const [kind, a] of Object.entries(node.allocated || {})) {
    box.append(row(`${kind} allocated`, `${amount(a.unit, a.allocated)} of ${amount(a.unit, a.capacity)}`));
    box.append(bar(a.capacity ? a.allocated / a.capacity : 0));
  }
  return box;
}

function render(view) {
  $("cluster-where").textContent = `etcd ${view.etcd} · seen from ${view.self}`;
  const error = $("cluster-error");
  error.hidden = !view.error;
  error.textContent = view.error || "";
  const nodes = $("cluster-nodes");
  nodes.replaceChildren(...view.nodes.map((n) => card(n, view.self)));
  if (!view.summary) return;
  const s = view.summary;
  $("c-current").textContent = `${s.current} / ${s.nodes}`;
  $("c-nodes").textContent = [s.failed.length ? `${s.failed.length} failed` : "", s.stale.length ? `${s.stale.length} stale` : ""]
    .filter(Boolean).join(", ") || "all current";
  $("c-cpu").textContent = pct(view.cpu_percent.mean);
  $("c-cpu-max").textContent = `max ${pct(view.cpu_percent.max)}`;
  $("c-mem").textContent = pct(view.memory_percent.mean);
  $("c-mem-max").textContent = `max ${pct(view.memory_percent.max)}`;
  $("c-cores").textContent = `${view.logical_cores} cores`;
  $("c-memory").textContent = bytes(view.memory_total_bytes);
}

let since = null;
async function poll() {
  try {
    const response = await fetch("/v1/cluster", { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    render(body);
    since = null;
    $("live-dot").className = "dot live";
    $("live-text").textContent = "live";
    document.body.classList.remove("disconnected");
  } catch (err) {
    since = since || new Date();
    $("live-dot").className = "dot down";
    $("live-text").textContent = `no answer from this agent since ${since.toLocaleTimeString()}: ${err.message}`;
    document.body.classList.add("disconnected");
  }
  setTimeout(poll, POLL_MS);
}
poll();
