// The assets panel: capacity against what is allocated, per kind; a card per GPU; the live allocations.
// Data: /v1/assets (the assets layer's snapshot, what `hypermesh assets --json` prints) and /v1/allocations, every
// REFRESH_MS. Self-contained (its own helpers, its own stylesheet) so the rest of the dashboard can change apart.
// State for tests and debugging: window.hypermeshAssets = { refreshes, errors }.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const KINDS = ["cpu", "memory", "storage", "network", "gpu"];
  const status = { refreshes: 0, errors: [] };
  window.hypermeshAssets = status;

  const stylesheet = document.createElement("link");
  stylesheet.rel = "stylesheet";
  stylesheet.href = "/static/assets.css";
  document.head.appendChild(stylesheet);

  function node(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text != null) element.textContent = text;
    return element;
  }

  function bytes(v) {
    if (v == null || !isFinite(v)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }

  function number(v) {
    return v == null || !isFinite(v) ? "–" : String(Math.round(v * 1000) / 1000);
  }

  // An amount in an asset's unit, as a person reads it.
  function amount(value, unit) {
    if (unit === "bytes") return bytes(value);
    if (unit === "bytes_per_s") return bytes(value) + "/s";
    if (unit === "cores") return number(value) + " cores";
    if (unit === "devices") return number(value) + (value === 1 ? " device" : " devices");
    return number(value) + " " + unit;
  }

  const WORST = { ok: 0, degraded: 1, failed: 2 };

  function kindRow(kind, assets) {
    const known = assets.filter((a) => a.capacity != null);
    const capacity = known.reduce((sum, a) => sum + a.capacity, 0);
    const allocated = assets.reduce((sum, a) => sum + a.allocated, 0);
    const allocatable = known.reduce((sum, a) => sum + (a.allocatable ?? 0), 0);
    const unit = assets[0].unit;
    const health = assets.reduce((worst, a) => (WORST[a.health.status] > WORST[worst] ? a.health.status : worst), "ok");
    const row = node("div", "asset-kind");
    row.dataset.kind = kind;
    row.dataset.capacity = String(capacity);
    row.dataset.allocated = String(allocated);
    const head = node("div", "asset-head");
    const count = assets.length > 1 ? ` (${assets.length})` : "";
    head.append(node("span", "asset-name", kind + count), node("span", "asset-health " + health, health));
    const bar = node("div", "asset-bar");
    const fill = node("div", "asset-fill");
    fill.style.width = (capacity > 0 ? Math.min(100, (100 * allocated) / capacity) : 0).toFixed(1) + "%";
    bar.append(fill);
    const line = known.length
      ? `${amount(allocated, unit)} of ${amount(capacity, unit)} allocated · ${amount(allocatable, unit)} free`
      : `${amount(allocated, unit)} allocated · capacity unknown`;
    row.append(head, bar, node("div", "asset-text", line));
    const reasons = assets.filter((a) => a.health.reason).map((a) => `${a.id}: ${a.health.reason}`);
    if (reasons.length) row.append(node("div", "asset-reason", reasons.join("; ")));
    return row;
  }

  function gpuCard(asset) {
    const d = asset.details || {};
    const card = node("div", "gpu-card");
    card.dataset.uuid = asset.id;
    card.append(node("div", "gpu-model", d.model || asset.id));
    const facts = [
      ["vendor", d.vendor],
      ["pci", d.pci_bus_id],
      ["busy", d.busy_percent == null ? null : d.busy_percent.toFixed(0) + " %"],
      ["memory", d.memory_total_bytes == null ? null : `${bytes(d.memory_used_bytes)} of ${bytes(d.memory_total_bytes)}`],
      ["temperature", d.temperature_celsius == null ? null : d.temperature_celsius.toFixed(0) + " °C"],
      ["power", d.power_watts == null ? null : d.power_watts.toFixed(0) + " W"],
      ["allocated", amount(asset.allocated, asset.unit)],
      ["health", asset.health.status + (asset.health.reason ? ` (${asset.health.reason})` : "")],
    ];
    for (const [key, value] of facts) {
      if (value == null) continue;
      const fact = node("div", "gpu-fact");
      fact.append(node("span", "k", key), node("span", "v", value));
      card.append(fact);
    }
    return card;
  }

  function allocationsTable(grants, units) {
    if (!grants.length) return node("div", "muted", "no allocations");
    const table = node("table", "allocations");
    const header = node("tr");
    for (const title of ["id", "owner", "kind", "asset", "amount", "pid", "enforced"]) header.append(node("th", "", title));
    table.append(header);
    for (const g of grants) {
      const row = node("tr");
      row.dataset.id = g.id;
      const cells = [g.id, g.owner, g.kind, g.asset_id, amount(g.amount, units[g.kind]), g.pid ?? "–", g.enforced ?? "–"];
      for (const cell of cells) row.append(node("td", "", String(cell)));
      table.append(row);
    }
    return table;
  }

  function render(panel, snapshot, grants) {
    const units = {};
    const kinds = node("div", "asset-kinds");
    for (const kind of KINDS) {
      const assets = snapshot.assets.filter((a) => a.kind === kind);
      if (assets.length) {
        units[kind] = assets[0].unit;
        kinds.append(kindRow(kind, assets));
      }
    }
    const gpus = snapshot.assets.filter((a) => a.kind === "gpu");
    const cards = node("div", "gpu-cards");
    cards.id = "gpu-cards";
    if (gpus.length) for (const gpu of gpus) cards.append(gpuCard(gpu));
    else cards.append(node("div", "muted", "no GPUs on this host"));
    units.gpu = units.gpu || "devices";
    const problems = Object.entries(snapshot.errors || {}).map(([kind, reason]) => `${kind}: ${reason}`);
    panel.textContent = "";
    panel.append(node("h2", "", "Assets and allocations"), kinds);
    if (problems.length) panel.append(node("div", "asset-reason", problems.join("; ")));
    panel.append(node("h3", "", "GPUs"), cards, node("h3", "", "Allocations"));
    const list = node("div", "");
    list.id = "allocations-list";
    list.append(allocationsTable(grants, units));
    panel.append(list);
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function refresh() {
    const panel = document.getElementById("assets-panel");
    if (!panel) return;
    // While the dashboard knows the agent is gone, its own probe retries; a fetch here would only fail again
    // and log a network error in the console.
    if (window.hypermeshDashboard && !window.hypermeshDashboard.connected) return;
    try {
      const [snapshot, grants] = await Promise.all([
        getJSON("/v1/assets"),
        // a ledger the agent could not open: the assets still show, with nothing allocated
        getJSON("/v1/allocations").catch((err) => { status.errors.push(String(err)); return []; }),
      ]);
      render(panel, snapshot, grants);
      status.refreshes += 1;
    } catch (err) {
      status.errors.push(String(err));
    }
  }

  function start() {
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
