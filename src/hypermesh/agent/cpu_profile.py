"""The dashboard's "profile this node for N s": ``/v1/cpu-profile`` runs the eBPF CPU profiler (hypermesh ebpf
profile, docs/ebpf.md) in the agent and serves the flame graph it draws.

- ``GET /v1/cpu-profile``: whether this agent can profile, and why not (the page's button says it on hover). It
  needs eBPF and CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN), as the command does.
- ``POST /v1/cpu-profile`` ``{"seconds": N}`` runs one profile of every process: a write (an authenticated user with
  basic auth on; loopback otherwise), one at a time (409 while one runs), at most MAX_SECONDS and within the
  request timeout. It answers with the report's figures and the flame graph's URL.
- ``GET /v1/cpu-profile/{id}.svg``: the last KEEP flame graphs. The SVG's own script (zoom, search) runs under a
  policy for that document only: inline script and style, nothing fetched, framed by this origin's pages only.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_SECONDS", "SVG_HEADERS", "CpuProfiles", "profile_support"]

MAX_SECONDS = 30.0
KEEP = 4
# Time the profile needs beyond its seconds (load, symbolise, draw): what the request timeout must leave room for.
OVERHEAD_S = 3.0
SVG_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'",
    "x-content-type-options": "nosniff",
}
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def _effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def profile_support(ebpf_available: bool, ebpf_reason: str | None) -> tuple[bool, str | None]:
    """(available, why not) for this process."""
    if not ebpf_available:
        return False, f"eBPF is not available here: {ebpf_reason}"
    caps = _effective_caps()
    if caps & (1 << CAP_SYS_ADMIN) or (caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)):
        return True, None
    return False, "the agent runs without CAP_BPF and CAP_PERFMON (or root): run it as root to profile this node"


class CpuProfiles:
    def __init__(self, request_timeout_s: float) -> None:
        self.max_seconds = max(0.5, min(MAX_SECONDS, request_timeout_s - OVERHEAD_S))
        self._lock = asyncio.Lock()
        self._svgs: collections.OrderedDict[str, str] = collections.OrderedDict()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def svg(self, profile_id: str) -> str | None:
        return self._svgs.get(profile_id)

    async def run(self, seconds: float) -> dict[str, Any]:
        async with self._lock:
            report, svg = await asyncio.to_thread(_profile, seconds)
            profile_id = secrets.token_hex(8)
            self._svgs[profile_id] = svg
            while len(self._svgs) > KEEP:
                self._svgs.popitem(last=False)
            return {
                "id": profile_id,
                "svg": f"/v1/cpu-profile/{profile_id}.svg",
                "seconds": report.duration_seconds,
                "frequency_hz": report.frequency_hz,
                "samples": report.samples,
                "lost_samples": report.lost_samples,
                "unsymbolized_frames": report.unsymbolized_frames,
                "frames": report.frames,
                "notes": list(report.notes),
            }


def _profile(seconds: float) -> tuple[Any, str]:
    import hypermesh.ebpf
    from hypermesh.ebpf.programs.profile import ProfileProgram, report_svg

    prog = hypermesh.ebpf.load("profile")
    assert isinstance(prog, ProfileProgram)
    try:
        prog.attach()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            prog.remember_processes()  # the maps of the processes seen so far, while they still run
            time.sleep(min(1.0, left))
        prog.remember_processes()
        report = prog.read()
    finally:
        prog.close()
    return report, report_svg(report)
