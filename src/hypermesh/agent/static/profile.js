// "Profile this node for N s": POST /v1/cpu-profile, then show the flame graph the agent drew (same origin, in an
// iframe: the SVG's own script gives zoom and search). The button is off, with the reason on hover, when the agent
// cannot profile (no eBPF, no CAP_BPF + CAP_PERFMON).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const button = $("profile-run"), status = $("profile-status"), seconds = $("profile-seconds"), frame = $("profile-frame");

  async function availability() {
    try {
      const response = await fetch("/v1/cpu-profile", { cache: "no-store" });
      const body = await response.json();
      seconds.max = String(Math.floor(body.max_seconds));
      if (!body.available) {
        button.disabled = true;
        button.title = body.reason;
        status.textContent = `off: ${body.reason}`;
        return;
      }
      button.disabled = false;
      button.title = `samples every process's stacks at 99 Hz for up to ${body.max_seconds} s`;
      status.textContent = body.running ? "a profile is running" : "ready";
    } catch (err) {
      status.textContent = "the agent did not answer; try again";
    }
  }

  $("profile-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const n = Number(seconds.value);
    button.disabled = true;
    status.textContent = `profiling for ${n} s…`;
    try {
      const response = await fetch("/v1/cpu-profile", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ seconds: n }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      status.textContent = `${body.samples} samples, ${body.lost_samples} lost, ` +
        `${body.unsymbolized_frames} of ${body.frames} frames unnamed`;
      frame.hidden = false;
      frame.src = body.svg;
    } catch (err) {
      status.textContent = `the profile failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });

  availability();
})();
