"""`make bench`: run every bench/bench_*.py, write bench/results/latest.json and docs/benchmarks.md.

Each module exposes ``run() -> dict`` of JSON-able figures, units in the key names, peers (psutil,
node_exporter, plain libbpf, bpftrace) measured in the same run so ratios survive a noisy machine.
A section's hand-written notes (several runs, before/after, where the time goes) live in bench/notes/NAME.md and
are placed under its table on every run.
Usage: python -m bench [NAME ...]   (NAME: core, ebpf, agent; default: all)
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "latest.json"
DOC = ROOT.parent / "docs" / "benchmarks.md"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in ROOT.glob("bench_*.py"))
    _compile_bytecode()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict[str, object] = dict(previous.get("results", {}))
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            figures = importlib.import_module(f"bench.bench_{name}").run()
        except Exception as exc:  # a broken peer must not hide the other figures
            traceback.print_exc()
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        figures["bench_seconds"] = round(time.monotonic() - start, 1)
        results[name] = figures
        print(json.dumps(figures, indent=2), file=sys.stderr)
    report = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"kernel": platform.release(), "python": platform.python_version(), "cpus": _cpus()},
        "command": "make bench",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    DOC.write_text(render(report))
    print(f"bench: wrote {RESULTS.relative_to(ROOT.parent)} and {DOC.relative_to(ROOT.parent)}", file=sys.stderr)
    return 0


def _compile_bytecode() -> None:
    """Write the package's .pyc files first, as installing a wheel does.

    Whole-process and import figures are what a user's installed hypermesh costs. A checkout run under
    PYTHONDONTWRITEBYTECODE=1 (as on these machines) would otherwise compile every module from source on
    every start: about half of `hypermesh profile --json` measured here.
    """
    import compileall

    compileall.compile_dir(str(ROOT.parent / "src" / "hypermesh"), quiet=1)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def render(report: dict[str, object]) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{report['command']}` on {report['generated']} "
        f"({json.dumps(report['machine'])}). Figures are medians/percentiles over many iterations after warm-up;",
        "peers are measured in the same run, so read the ratios first: the machine is shared and noisy.",
        "Raw figures: `bench/results/latest.json`. Goals come from the issues; `goal_met` says whether this run met them.",
        "",
    ]
    results = report["results"]
    assert isinstance(results, dict)
    lines += _goal_summary(results)
    for name, figures in results.items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        for key, value in figures.items():
            if key == "notes":
                continue
            lines.append(f"| {key} | {json.dumps(value) if isinstance(value, dict | list) else value} |")
        if isinstance(figures.get("notes"), str):
            lines += ["", figures["notes"]]
        # What a person measured around the run (several runs, before/after, where the time goes): kept in
        # bench/notes/NAME.md so that the next run's table does not erase it.
        notes = ROOT / "notes" / f"{name}.md"
        if notes.exists():
            lines += ["", notes.read_text().strip()]
        lines.append("")
    return "\n".join(lines)


def _goal_summary(results: dict[str, dict[str, object]]) -> list[str]:
    """One table of every goal flag of every section: met, missed, and what the machine allows."""
    rows = []
    for section, figures in results.items():
        for key, value in figures.items():
            if isinstance(value, dict) and key.startswith("goal"):
                rows += [(section, f"{key}.{goal}", met) for goal, met in value.items() if isinstance(met, bool)]
            elif key.startswith(("goal_", "plain_libbpf_")) and isinstance(value, bool):
                rows.append((section, key, value))
    if not rows:
        return []
    out = ["## Goals at a glance", "", "| section | goal | this run |", "|---|---|---|"]
    out += [f"| {section} | {goal} | {'met' if met else 'missed'} |" for section, goal, met in rows]
    out += [
        "",
        "`goal_met_scaled_to_reference` judges an absolute goal after dividing by how much slower the peer ran here "
        "than on the machine the issue measured it on (`machine_slowdown_vs_issue_reference`: psutil for core, "
        "node_exporter for agent); `plain_libbpf_*` says whether plain libbpf itself meets an absolute eBPF goal on "
        "this run's machine.",
        "",
    ]
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
