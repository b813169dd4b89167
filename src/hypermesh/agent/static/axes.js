// Axis ticks a reader takes in at a glance: every value axis counts in one unit, in that unit's own round
// steps (0, 256 MiB, 512 MiB; 0, 50, 100 KiB/s; 0, 25, 50 %), and every time axis in one unit (−90 s … now,
// or −4 min … now). Used by app.js's charts; the labels are HTML elements, so tests read them from the DOM.
"use strict";

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
// Steps within one binary unit: decimal-round ones and the powers of two people size memory in.
const BYTE_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 128, 200, 250, 256, 500, 512];
const MAX_INTERVALS = 4;

// Decimal steps: 1, 2, 2.5, 5 times a power of ten.
function decimalStep(max) {
  const exp = Math.pow(10, Math.floor(Math.log10(max / MAX_INTERVALS)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    const step = Number((m * exp).toPrecision(6));
    if (Math.ceil(max / step - 1e-9) <= MAX_INTERVALS) return step;
  }
  return Number((10 * exp).toPrecision(6));
}

function trimmed(value, step) {
  // As many decimals as the step has (2.5 -> 1, 0.25 -> 2), none for whole steps; no float noise.
  const digits = String(Number(step.toPrecision(6))).split(".")[1];
  return String(Number(value.toFixed(digits ? Math.min(6, digits.length) : 0)));
}

// {top, ticks: [{value, label}]}: ticks from 0 to top (>= max) in one unit. kind: "bytes", "rate" (bytes per
// second), "percent" or "number"; unit: the words after a plain number ("µs/s").
function valueTicks(max, kind, unit) {
  max = Math.max(max, Number.MIN_VALUE);
  let divisor = 1, suffix = unit || "", step;
  if (kind === "bytes" || kind === "rate") {
    let k = 0;
    // The largest unit that still has two of itself: 1 KiB/s reads 0, 256, 512, 768, 1024 B/s, not 0, 1 KiB/s.
    while (max / Math.pow(1024, k + 1) >= 2 && k < BYTE_UNITS.length - 1) k++;
    divisor = Math.pow(1024, k);
    const scaled = max / divisor;
    step = BYTE_STEPS.find((s) => Math.ceil(scaled / s - 1e-9) <= MAX_INTERVALS) || 512;
    if (scaled < 1) step = decimalStep(scaled);
    suffix = BYTE_UNITS[k] + (kind === "rate" ? "/s" : "");
  } else if (kind === "percent") {
    step = max <= 100 && max > 50 ? 25 : decimalStep(max);
    suffix = "%";
  } else {
    step = decimalStep(max);
  }
  const intervals = Math.max(1, Math.ceil(max / divisor / step - 1e-9));
  const ticks = [];
  for (let i = 0; i <= intervals; i++) {
    const inUnit = i * step;
    ticks.push({ value: inUnit * divisor, label: i === 0 ? "0" : `${trimmed(inUnit, step)}${suffix ? " " + suffix : ""}` });
  }
  return { top: intervals * step * divisor, ticks };
}

// Ticks back from now over span seconds, at most maxLabels of them (the axis' width decides), in seconds up to
// two minutes, else in minutes.
function timeTicks(span, maxLabels) {
  const room = Math.max(2, maxLabels || 7) - 1;
  const ticks = [{ ago: 0, label: "now" }];
  if (span <= 120) {
    const step = [10, 15, 20, 30, 60].find((s) => span / s <= room) || 60;
    for (let ago = step; ago <= span + 1e-6; ago += step) ticks.push({ ago, label: `−${ago} s` });
  } else {
    const step = [60, 120, 300].find((s) => span / s <= room) || 300;
    for (let ago = step; ago <= span + 1e-6; ago += step) ticks.push({ ago, label: `−${ago / 60} min` });
  }
  return ticks;
}

window.hypermeshAxes = { valueTicks, timeTicks, BYTE_STEPS };
