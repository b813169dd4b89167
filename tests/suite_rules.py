"""The suite's own rules, enforced on every test run (tests/conftest.py imports these hooks).

1. Under CI=true nothing skips. ``require()`` already fails there; these hooks also turn a plain ``skipif``, an
   ``importorskip`` or a ``pytest.skip`` (in a test, a fixture or at collection) into a failure naming the
   test, so a suite cannot go green in CI by not running. ``xfail`` is left as it is.
2. A test carries the markers for what it does. What it does is observed, not read from its docstring: a
   subprocess that creates a network namespace or a veth pair (``ip netns add``, ``ip link add ... type veth``,
   ``unshare --net``) needs ``netns`` and ``root``; loading BPF programs in this process (libbpf's
   ``bpf_object__load`` or a program-type probe, seen through the binding) or in a child (``hypermesh ebpf
   run|probe``, ``bpftool prog load``, ``bpftool feature probe``, ``bpftrace``) needs ``ebpf`` and ``root``; booting a second kernel
   (``vng``) needs ``vm``; calling ``require_root()`` needs ``root``. A missing marker fails the test, naming
   the marker and what triggered it. Unknown markers already fail collection (``--strict-markers``).
3. tests/unit/ holds only tests that touch no live kernel file and spawn nothing: a unit test that opens a path
   under /proc, /sys or /dev, or starts a process, fails, naming what it did (it belongs in tests/integration).

Run a lone file under these rules with ``python -m pytest -p tests.suite_rules FILE`` from the checkout.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

# libbpf calls that put BPF programs into the kernel: an object's load, and the probe of a program type
# (libbpf loads a minimal program of that type to see whether the kernel takes it).
LOADING_CALLS = ("bpf_object__load", "libbpf_probe_bpf_prog_type")

# The proof of this rule (tests/integration/test_suite_rules.py) points it at a throwaway directory.
UNIT_DIR = Path(os.environ.get("HYPERMESH_TEST_UNIT_DIR") or Path(__file__).resolve().parent / "unit")
LIVE_PREFIXES = ("/proc/", "/sys/", "/dev/")
SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.spawn")

_current: dict[str, Any] = {"item": None, "unit": False}
_seen: dict[str, dict[str, str]] = {}  # nodeid -> marker -> what showed it was needed


def needs(marker: str, because: str) -> None:
    """Record that the running test did something that needs ``marker`` (first reason kept)."""
    item = _current["item"]
    if item is not None:
        _seen.setdefault(item.nodeid, {}).setdefault(marker, because)


def _tokens(args: object) -> list[str]:
    raw: Sequence[object] = [args] if isinstance(args, str | bytes | os.PathLike) else list(args or ())  # type: ignore[call-overload]
    out: list[str] = []
    for arg in raw:
        text = os.fsdecode(arg) if isinstance(arg, bytes | os.PathLike) else str(arg)
        if any(c.isspace() for c in text):  # a shell script (sh -c "..."): look inside it too
            try:
                out.extend(shlex.split(text))
            except ValueError:
                out.extend(text.split())
        else:
            out.append(text)
    return out


def classify(args: object) -> dict[str, str]:
    """What a command line needs, by marker: {"netns": "ip netns add x", ...}. Pure, so it is unit-tested."""
    tokens = _tokens(args)
    names = [os.path.basename(t) for t in tokens]
    found: dict[str, str] = {}
    shown = " ".join(tokens)[:200]

    def after(i: int, *words: str) -> bool:
        return tokens[i + 1 : i + 1 + len(words)] == list(words)

    for i, name in enumerate(names):
        if name == "netns" and i + 1 < len(tokens) and tokens[i + 1] == "add":
            found.setdefault("netns", shown)
        if name == "ip" and "link" in tokens[i + 1 :] and "add" in tokens[i + 1 :] and "veth" in tokens[i + 1 :]:
            found.setdefault("netns", shown)
        if name == "unshare" and any(t in ("--net", "-n") or t.startswith("--net=") for t in tokens[i + 1 :]):
            found.setdefault("netns", shown)
        if name == "ebpf" and i + 1 < len(tokens) and tokens[i + 1] in ("run", "probe"):
            found.setdefault("ebpf", shown)
        if name == "bpftool" and (after(i, "prog", "load") or "feature" in tokens[i + 1 :]):
            found.setdefault("ebpf", shown)
        if name in ("bpftrace", "vng"):
            found.setdefault("ebpf" if name == "bpftrace" else "vm", shown)
    return found


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Runs on every audit event of the process: only two are of interest, and the test must be running.
    if _current["item"] is None:
        return
    if _current["unit"]:
        if event == "open" and isinstance(args[0], str | bytes):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(LIVE_PREFIXES) and path != "/dev/null":
                needs("live", f"opened {path}")
        elif event in SPAWN_EVENTS:
            needs("live", f"{event} {str(args[1] if len(args) > 1 else args[0])[:120]}")
    if event == "subprocess.Popen":
        command: object = args[1] if args[1] is not None else args[0]
    elif event == "os.system":
        command = args[0]
    elif event in ("os.exec", "os.posix_spawn"):
        command = args[1]
    else:
        return
    for marker, because in classify(command).items():
        needs(marker, because)


def _wrap_libbpf() -> None:
    """Record in-process program loads at the binding (ctypes raises no audit event per foreign call)."""
    try:
        from hypermesh.ebpf import libbpf
    except ImportError:  # pragma: no cover - the package is installed in the suite's venv
        return
    original = libbpf.Lib.__init__
    if getattr(original, "_suite_rules", False):
        return

    def recorder(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*a: Any, **kw: Any) -> Any:
            needs("ebpf", f"libbpf {name}() in this process")
            return fn(*a, **kw)

        return call

    @functools.wraps(original)
    def init(self: Any, *a: Any, **kw: Any) -> None:
        original(self, *a, **kw)
        if not isinstance(getattr(self, "cdll", None), ctypes.CDLL):
            return  # a Lib over a recorded fake library (the seam): it loads nothing into the kernel
        for name in LOADING_CALLS:
            # A binding that no longer exposes these would make this check silently blind: fail loudly instead.
            fn = getattr(self, name, None) or getattr(getattr(self, "cdll", None), name, None)
            if fn is None:
                raise RuntimeError(f"tests/suite_rules.py: libbpf binding has no {name}; update LOADING_CALLS")
            setattr(self, name, recorder(name, fn))

    init._suite_rules = True  # type: ignore[attr-defined]
    libbpf.Lib.__init__ = init  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if not getattr(sys, "_hypermesh_suite_audit", False):
        sys.addaudithook(_audit)  # audit hooks cannot be removed: add one per process
        sys._hypermesh_suite_audit = True  # type: ignore[attr-defined]
    _wrap_libbpf()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _current["item"] = item
    _current["unit"] = item.path.is_relative_to(UNIT_DIR)
    try:
        yield
    finally:
        _current["item"] = None
        _current["unit"] = False
        _seen.pop(item.nodeid, None)


IMPLIED = {"netns": ("netns", "root"), "ebpf": ("ebpf", "root"), "root": ("root",), "vm": ("vm",)}


def missing_markers(item: pytest.Item) -> list[str]:
    have = {m.name for m in item.iter_markers()}
    problems = []
    for need, because in sorted(_seen.get(item.nodeid, {}).items()):
        if need == "live":
            problems.append(f"a unit test touches the live system ({because}): move it to tests/integration")
            continue
        lacking = [m for m in IMPLIED[need] if m not in have]
        if lacking:
            problems.append(f"missing marker(s) {', '.join(lacking)}: it ran {because!r}")
    return problems


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and IN_CI and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} skipped under CI=true, where nothing may skip: {reason}"
        return
    if report.when in ("setup", "call") and report.passed:
        problems = missing_markers(item)
        if problems:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid}: " + "; ".join(problems) + " (add them to the test or its module)"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and IN_CI:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped at collection under CI=true, where nothing may skip: {reason}"
