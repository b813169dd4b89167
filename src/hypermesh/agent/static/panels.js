// The dashboard's cards built from /v1/ebpf and /metrics (app.js fetches, these show): the eBPF status in
// words, one panel per eBPF program the agent runs (each only while it is loaded), filesystems per mount.
"use strict";

(function () {
  const make = (tag, cls, textContent) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (textContent != null) node.textContent = textContent;
    return node;
  };
  const count = (v) => Math.round(v).toLocaleString("en-US");

  // ------------------------------------------------------------------------------ eBPF status in words

  // kernel.unprivileged_bpf_disabled (Documentation/admin-guide/sysctl/kernel.rst).
  const UNPRIVILEGED = {
    0: ["allowed for every user (0)", "no"],
    1: ["disabled for users until reboot (1)", "ok"],
    2: ["disabled for users (2)", "ok"],
  };
  const FEATURES = {
    xdp_generic: "XDP (generic)", xdp_native: "XDP (native)", tracepoint: "tracepoints",
    raw_tp: "raw tracepoints", fentry: "fentry", kprobe: "kprobes", ringbuf: "ring buffers",
  };
  const featureName = (name) => FEATURES[name] || name.replace(/_/g, " ");

  function featureList(features) {
    const list = make("span", "features");
    for (const f of features) {
      const item = make("span", f.supported ? "ok" : "no why", featureName(f.name));
      if (f.reason) item.title = f.reason; // why it is (not) supported, on hover
      list.append(item);
    }
    return list;
  }

  function ebpfRows(status) {
    const rows = [["status", status.available ? "available: this agent can load eBPF programs" : "unavailable",
      status.available ? "ok" : "no", status.reason]];
    if (status.reason) rows.push(["why", status.reason, "no"]);
    const probe = Object.assign({}, status.probe || {});
    const take = (key) => { const value = probe[key]; delete probe[key]; return value; };
    const kernel = take("kernel_release"), libbpf = take("libbpf_version");
    if (kernel || libbpf) rows.push(["versions", [kernel && `kernel ${kernel}`, libbpf && `libbpf ${libbpf}`].filter(Boolean).join(" · ")]);
    if ("unprivileged_bpf_disabled" in probe) {
      const level = take("unprivileged_bpf_disabled");
      const [words, cls] = UNPRIVILEGED[level] || [`kernel.unprivileged_bpf_disabled = ${level}`, ""];
      rows.push(["unprivileged eBPF", words, cls, "kernel.unprivileged_bpf_disabled: who may call bpf() without CAP_BPF"]);
    }
    if ("btf_present" in probe) {
      const present = take("btf_present");
      rows.push(["kernel types (BTF)", present ? "present" : "missing: programs that read kernel structures cannot load",
        present ? "ok" : "no"]);
    }
    if ("bpffs_mounted" in probe) {
      const mounted = take("bpffs_mounted");
      rows.push(["BPF filesystem", mounted ? "mounted (/sys/fs/bpf): pins work" : "not mounted: nothing can be pinned",
        mounted ? "ok" : "no", mounted ? "" : "mount -t bpf bpf /sys/fs/bpf"]);
    }
    if ("tracefs_mounted" in probe) {
      const mounted = take("tracefs_mounted"), path = take("tracefs_path");
      rows.push(["tracing filesystem", mounted ? `mounted (${path || "tracefs"})` : "not mounted: tracepoints are found by name only with it",
        mounted ? "ok" : "no", mounted ? "" : "mount -t tracefs tracefs /sys/kernel/tracing"]);
    }
    const caps = take("capabilities");
    if (caps && typeof caps === "object") {
      const held = Object.keys(caps).filter((c) => caps[c]), missing = Object.keys(caps).filter((c) => !caps[c]);
      rows.push(["capabilities", held.length ? `held: ${held.join(", ")}` : "none of the eBPF ones", held.length ? "ok" : "no"]);
      if (missing.length) rows.push(["missing", missing.join(", "), "no", "run the agent as root or grant these capabilities"]);
    }
    const features = take("features");
    if (Array.isArray(features)) {
      const yes = features.filter((f) => f && f.supported), no = features.filter((f) => f && f.supported === false);
      if (yes.length) rows.push(["supported", featureList(yes)]);
      if (no.length) rows.push(["not supported", featureList(no), "", "hover over each for why"]);
    }
    for (const [key, value] of Object.entries(probe)) { // what a newer agent adds, in its own words
      if (value == null || typeof value === "object") continue;
      rows.push([key.replace(/_/g, " "), typeof value === "boolean" ? (value ? "yes" : "no") : String(value)]);
    }
    for (const [name, entry] of Object.entries(status.programs || {})) {
      if (entry.loaded && !entry.error) rows.push([name, "running", "ok"]);
      else rows.push([name, entry.loaded ? `running, but its last read failed: ${entry.error}` : `not running: ${entry.error || "not loaded"}`, "no", entry.error]);
    }
    return rows;
  }

  // ---------------------------------------------------------------------------------- program panels

  function card(id, title, sub, after, kind) {
    let node = document.getElementById(id);
    if (node) return node.querySelector(".panel-body");
    node = make("article", "card " + kind);
    node.id = id;
    const heading = make("h2", "", title);
    if (sub) heading.append(make("small", "", sub));
    node.append(heading, make("div", "panel-body"));
    after.after(node);
    return node.querySelector(".panel-body");
  }

  function bars(body, rows, format) {
    // rows: [[label, value, title?]]: a live bar list, the longest bar the largest value.
    body.textContent = "";
    const list = make("div", "barlist");
    const max = Math.max(1, ...rows.map((r) => r[1]));
    for (const [label, value, title] of rows) {
      const row = make("div", "barrow");
      const bar = make("div", "bar");
      const fill = make("div");
      fill.style.width = ((100 * value) / max).toFixed(1) + "%";
      bar.append(fill);
      row.append(make("span", "name", label), bar, make("span", "num", format(value)));
      if (title) row.title = title;
      list.append(row);
    }
    body.append(list);
  }

  const previous = new Map(); // program -> {at, reading}: rates between two readings

  function showSyscalls(body, reading, name) {
    const now = performance.now(), last = previous.get(name);
    previous.set(name, { at: now, reading });
    const rows = Object.entries(reading.syscalls || {});
    let shown, unit;
    if (last && now > last.at) {
      const seconds = (now - last.at) / 1000, before = last.reading.syscalls || {};
      shown = rows.map(([call, n]) => [call, Math.max(0, n - (before[call] || 0)) / seconds]);
      unit = "/s";
    } else {
      shown = rows; // the first reading: counts since the program loaded, until there are two to compare
      unit = "";
    }
    shown.sort((a, b) => b[1] - a[1]);
    bars(body, shown.slice(0, 8), (v) => count(v) + unit);
    body.append(make("div", "note", `${count(reading.total)} calls since loaded · ${reading.attach_type}`));
  }

  function showXdp(body, reading) {
    const rows = Object.entries(reading.packets || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    bars(body, rows.map(([proto, n]) => [proto.replace("_", " "), n, `${count(reading.bytes[proto])} bytes`]), count);
    body.append(make("div", "note", `${count(reading.total_packets)} packets received since attached · ${reading.mode} mode`));
  }

  function showTc(body, reading) {
    const rows = [];
    for (const direction of ["ingress", "egress"]) {
      const counts = reading[direction];
      if (!counts) continue;
      for (const [proto, n] of Object.entries(counts.packets || {})) {
        if (n > 0) rows.push([`${direction === "ingress" ? "in" : "out"} ${proto.replace("_", " ")}`, n, `${count(counts.bytes[proto])} bytes`]);
      }
    }
    bars(body, rows.sort((a, b) => b[1] - a[1]), count);
    body.append(make("div", "note", `attached through ${reading.attach}`));
  }

  function latencyText(us) {
    return us >= 1e6 ? `${+(us / 1e6).toPrecision(3)} s` : us >= 1000 ? `${+(us / 1000).toPrecision(3)} ms` : `${us} µs`;
  }

  function showBiolatency(body, reading) {
    body.textContent = "";
    if (!(reading.devices || []).length) body.append(make("div", "note", "no block I/O completed since the program loaded"));
    for (const device of reading.devices || []) {
      // A heat strip: one cell per log2 latency slot, darker the more requests took that long.
      const row = make("div", "heat");
      const strip = make("div", "strip");
      const max = Math.max(1, ...device.buckets.map((b) => b.count));
      for (const b of device.buckets) {
        const cell = make("span", "cell");
        const share = b.count ? 0.15 + 0.85 * (Math.log1p(b.count) / Math.log1p(max)) : 0;
        cell.style.background = b.count ? `rgba(63, 184, 175, ${share.toFixed(3)})` : "";
        cell.dataset.count = b.count;
        cell.title = `${latencyText(b.low_us)} – ${latencyText(b.high_us + 1)}: ${count(b.count)} requests`;
        strip.append(cell);
      }
      const last = device.buckets.length ? device.buckets[device.buckets.length - 1] : { high_us: 1 };
      const scale = make("div", "scale");
      scale.append(make("span", "", "< 2 µs"), make("span", "", `${latencyText(last.high_us + 1)}`));
      const mean = device.total ? device.sum_ns / device.total / 1000 : 0;
      row.append(make("div", "name", `${device.name || device.device} · ${count(device.total)} requests` +
        (device.total ? ` · mean ${latencyText(Math.round(mean))}` : "")), strip, scale);
      body.append(row);
    }
  }

  function showExecs(body, reading) {
    body.textContent = "";
    const list = make("div", "execs");
    const recent = (reading.recent || []).slice(-12).reverse();
    for (const e of recent) {
      const row = make("div", "exec");
      const at = new Date(e.timestamp * 1000).toLocaleTimeString([], { hour12: false });
      row.append(make("span", "muted", at), make("b", "", e.comm), make("span", "muted", `pid ${e.pid}`), make("span", "file", e.filename));
      list.append(row);
    }
    if (!recent.length) list.append(make("div", "note", "no program executed since the agent started"));
    body.append(list, make("div", "note", `${count(reading.total)} execs since loaded` + (reading.lost ? ` · ${count(reading.lost)} lost` : "")));
  }

  const PANELS = {
    syscalls: ["Top syscalls", "calls per second, machine-wide", showSyscalls],
    xdp: ["XDP", "packets by protocol", showXdp],
    tc: ["TC", "packets by direction and protocol", showTc],
    biolatency: ["Block I/O latency", "requests by latency", showBiolatency],
    execsnoop: ["Recent execs", "programs started", showExecs],
  };

  function showPrograms(programs) {
    const anchor = document.getElementById("ebpf").closest(".card");
    let after = anchor;
    const wanted = new Set();
    for (const [name, entry] of Object.entries(programs)) {
      const panel = PANELS[entry.program || name.split(":")[0]];
      if (!panel || !entry.loaded || !entry.reading) continue;
      const id = "panel-" + name.replace(/[^A-Za-z0-9_-]/g, "-");
      wanted.add(id);
      const sub = entry.argument ? `${panel[1]} on ${entry.argument}` : panel[1];
      const body = card(id, panel[0], sub, after, "program");
      panel[2](body, entry.reading, name);
      after = document.getElementById(id);
    }
    for (const node of document.querySelectorAll("article.program")) if (!wanted.has(node.id)) node.remove();
  }

  // ------------------------------------------------------------------------------------ /metrics text

  function parseMetrics(textBody) {
    // name -> [[labels, value]]: enough of the text format for the families the page reads.
    const out = new Map();
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const row of textBody.split("\n")) {
      if (!row || row[0] === "#") continue;
      const m = line.exec(row);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(label)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push([labels, Number(m[3])]);
    }
    return out;
  }

  function showFilesystems(metrics, fmtBytes) {
    const sizes = metrics.get("hypermesh_filesystem_size_bytes") || [];
    const free = new Map((metrics.get("hypermesh_filesystem_free_bytes") || []).map(([l, v]) => [l.mountpoint, v]));
    const avail = new Map((metrics.get("hypermesh_filesystem_avail_bytes") || []).map(([l, v]) => [l.mountpoint, v]));
    const rows = sizes.filter(([, size]) => size > 0).sort((a, b) => a[0].mountpoint.localeCompare(b[0].mountpoint));
    if (!rows.length) return;
    const anchor = document.getElementById("legend-disk").closest(".card");
    const body = card("panel-filesystems", "Filesystems", "used / free per mount", anchor, "filesystems");
    body.textContent = "";
    const list = make("div", "barlist fs");
    for (const [labels, size] of rows) {
      const used = size - (free.get(labels.mountpoint) ?? size);
      const available = avail.get(labels.mountpoint) ?? size - used;
      const row = make("div", "barrow");
      const bar = make("div", "bar");
      const fill = make("div");
      fill.style.width = ((100 * used) / size).toFixed(1) + "%";
      if (used / size > 0.9) fill.className = "full";
      bar.append(fill);
      row.append(make("span", "name", labels.mountpoint), bar,
        make("span", "num", `${fmtBytes(used)} used · ${fmtBytes(available)} free of ${fmtBytes(size)}`));
      row.title = `${labels.device} (${labels.fstype})`;
      list.append(row);
    }
    body.append(list);
  }

  function note(afterId, id, words) {
    let node = document.getElementById(id);
    if (!words) { if (node) node.remove(); return; }
    if (!node) {
      node = make("div", "note");
      node.id = id;
      document.getElementById(afterId).after(node);
    }
    node.textContent = words;
  }

  window.hypermeshPanels = { ebpfRows, showPrograms, parseMetrics, showFilesystems, note };
})();
