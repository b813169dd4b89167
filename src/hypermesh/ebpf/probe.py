"""Feature and privilege probes, cached per process: each answers "supported" or "unsupported because".

Program types and map types are probed by libbpf loading a trivial program/creating a tiny map in the
running kernel (``libbpf_probe_bpf_prog_type``), so the answer is the kernel's, not a version guess.
Attach points that exist independently of the program type are checked where the kernel exposes them:
kprobes need the ``kprobe`` perf PMU (absent when CONFIG_KPROBES is off, even though kprobe *programs*
still load), tracepoints need tracefs to resolve their ids, fentry needs vmlinux BTF. BPF LSM programs
load and attach even where ``bpf`` is not an active LSM, and then never run: ``lsm`` needs both the
active list (/sys/kernel/security/lsm) to name bpf and a real LSM program to load.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import threading

from hypermesh.errors import PermissionDenied
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from hypermesh.ebpf.libbpf import Lib

__all__ = [
    "Feature",
    "ProbeReport",
    "active_lsms",
    "bpf_lsm_inactive_reason",
    "check_capabilities",
    "kernel_config",
    "kprobes_absent_reason",
    "missing_capabilities",
    "permission_refused",
    "probe",
    "raw_tracepoints",
]

CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
BTF_PATH = "/sys/kernel/btf/vmlinux"
BPFFS = "/sys/fs/bpf"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe/type"
LSM_LIST = "/sys/kernel/security/lsm"
SECURITYFS = "/sys/kernel/security"


@record
class Feature(Record):
    name: str
    supported: bool
    reason: str  # why not (or a note when supported)


@record
class ProbeReport(Record):
    kernel_release: str
    libbpf_version: str | None
    btf_present: bool
    bpffs_mounted: bool
    tracefs_mounted: bool
    tracefs_path: str | None
    capabilities: Mapping[str, bool]
    unprivileged_bpf_disabled: int | None
    features: tuple[Feature, ...]
    lsm_modules: tuple[str, ...] | None = None  # the active LSMs, in order (None: securityfs not readable)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def feature_flags(self) -> dict[str, bool]:
        """Every yes/no the probe found, by name: ``btf_present``, ``capabilities.CAP_BPF``, ``xdp_generic``, ..."""
        flags = {"btf_present": self.btf_present, "bpffs_mounted": self.bpffs_mounted}
        flags["tracefs_mounted"] = self.tracefs_mounted
        flags.update({f"capabilities.{name}": held for name, held in self.capabilities.items()})
        flags.update({f.name: f.supported for f in self.features})
        return flags

    # The verdict is derived, not stored: ``hypermesh ebpf probe --json`` prints the fields above, unchanged.
    @property
    def available(self) -> bool:
        """Whether this process can load eBPF programs here: at least one program type loads.

        Without CAP_BPF none does (each feature says why), and nothing built on eBPF may claim it can.
        """
        return any(f.supported for f in self.features)

    @property
    def reason(self) -> str:
        """Why eBPF is not available (each distinct feature reason once), or "" when it is."""
        if self.available:
            return ""
        reasons = "; ".join(dict.fromkeys(f.reason for f in self.features if f.reason))
        return "no eBPF program type can be loaded here: " + (reasons or "the probe found none")


def _status_capabilities(field: bytes) -> int:
    """A capability set from /proc/self/status (CapEff, CapBnd, ...) as a bit mask."""
    with open("/proc/self/status", "rb") as f:
        status = f.read()
    start = status.find(b"\n" + field + b":")
    if start < 0:
        return 0
    return int(status[start + len(field) + 2 : status.index(b"\n", start + 1)].strip(), 16)


def effective_capabilities() -> int:
    return _status_capabilities(b"CapEff")


def held_capabilities() -> dict[str, bool]:
    eff = effective_capabilities()
    return {name: bool(eff >> bit & 1) for name, bit in CAPABILITIES.items()}


def missing_capabilities(needed: tuple[str, ...]) -> list[str]:
    """Capabilities of ``needed`` this process lacks. CAP_SYS_ADMIN stands in for all of them
    (kernels before 5.8, which have no CAP_BPF/CAP_PERFMON, require it)."""
    held = held_capabilities()
    if held["CAP_SYS_ADMIN"]:
        return []
    return [cap for cap in needed if not held.get(cap, False)]


def setcap_command() -> str:
    """The command that grants this interpreter the eBPF capabilities, ready to paste: setcap needs
    the real file, not the venv's symlink (it applies to every user of that interpreter)."""
    return f"setcap cap_bpf,cap_perfmon,cap_net_admin+ep {shlex.quote(os.path.realpath(sys.executable))}"


def capability_fix(missing: list[str]) -> str:
    """How to get the ``missing`` capabilities, ready to paste. A process that is root already and
    still lacks them was started without them (a container runtime, setpriv, capsh): "run as root"
    would change nothing, and neither would setcap when the bounding set lacks them."""
    if os.geteuid() != 0:
        return f"run as root, or grant them to the interpreter: {setcap_command()}"
    bounding = _status_capabilities(b"CapBnd")
    unbounded = [cap for cap in missing if not bounding >> CAPABILITIES[cap] & 1]
    if unbounded:
        return (
            f"this process runs as root, but {', '.join(unbounded)} {_is_are(unbounded)} not in its capability "
            "bounding set (dropped by what started it: a container runtime, setpriv or capsh), which neither being root "
            "nor file capabilities can undo: start it with the capability kept (e.g. docker run --cap-add "
            f"{unbounded[0].removeprefix('CAP_')})"
        )
    return (
        f"this process runs as root, but {', '.join(missing)} {_is_are(missing)} not in its effective set "
        "(root's capabilities were withheld, e.g. by the SECBIT_NOROOT securebit or a uid change): start it "
        "as root with its capabilities"
    )


def _is_are(items: list[str]) -> str:
    return "is" if len(items) == 1 else "are"


_held: set[tuple[str, ...]] = set()


def check_capabilities(needed: tuple[str, ...], what: str) -> None:
    """PermissionDenied naming what is missing and how to get it, before a bpf() call the kernel
    would refuse. A set found held is remembered (reading /proc/self/status at every load was a
    measurable part of one): should the process drop a capability later, the kernel's EPERM is
    explained by ``permission_refused`` all the same."""
    if needed in _held:
        return
    missing = missing_capabilities(needed)
    if not missing:
        _held.add(needed)
        return
    raise PermissionDenied(
        f"{what} needs {', '.join(needed)}; missing {', '.join(missing)}: {capability_fix(missing)}",
        capability=missing[0],
    )


def permission_refused(refusal: str, needed: tuple[str, ...], blame: str) -> PermissionDenied:
    """The error for a bpf() call the kernel refused (EPERM/EACCES): which capabilities of ``needed``
    this process lacks and how to get them; or, holding them all, ``blame``: what else forbids it."""
    missing = missing_capabilities(needed)
    if missing:
        return PermissionDenied(
            f"{refusal}: missing {', '.join(missing)}; {capability_fix(missing)}", capability=missing[0]
        )
    return PermissionDenied(f"{refusal} although this process holds {' and '.join(needed)}: {blame}")


# What the kernel demands to load each program type we probe (kernel/bpf/syscall.c, bpf_prog_load):
# CAP_BPF for all of them (unprivileged_bpf_disabled is set, or the type is not one unprivileged users
# may load at all), CAP_NET_ADMIN for networking types such as XDP, CAP_PERFMON for tracing types
# (kprobe, tracepoint, raw_tp, fentry). CAP_SYS_ADMIN stands in for each (missing_capabilities).
XDP_NEEDS = ("CAP_BPF", "CAP_NET_ADMIN")
TRACING_NEEDS = ("CAP_BPF", "CAP_PERFMON")
MAP_NEEDS = ("CAP_BPF",)


def _not_permitted(kind: str, needs: tuple[str, ...]) -> str | None:
    """Why this process cannot tell whether the kernel supports ``kind``: a capability the kernel
    requires for it is missing (the kernel's EPERM would otherwise read as "unsupported")."""
    missing = missing_capabilities(needs)
    if not missing:
        return None
    return (
        f"this process lacks {', '.join(missing)}, which {kind} needs ({' + '.join(needs)}); {capability_fix(missing)}"
    )


def tracefs_path() -> str | None:
    for path in TRACEFS:
        if os.path.exists(os.path.join(path, "events")):
            return path
    return None


def tracefs_unreadable() -> str | None:
    """A tracefs mount this process may not search (it is mode 0700 root by default): mounted, yet
    unusable here, which mounting it again would not change."""
    for path in TRACEFS:
        if os.path.ismount(path) and not os.path.exists(os.path.join(path, "events")):
            return path
    return None


TRACEFS_ACCESS_FIX = "run as root, or let this user read it (tracefs mount options gid=GROUP,mode=0750)"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


PROC_CONFIG = "/proc/config.gz"  # CONFIG_IKCONFIG_PROC


def kernel_config(option: str) -> tuple[str | None, str | None]:
    """(value of CONFIG_<option>, the file it came from): "n" when the option is not set, (None,
    None) when no configuration of the running kernel is readable (/proc/config.gz, then
    /boot/config-<release>): then nothing may be claimed about it."""
    import gzip

    for path in (PROC_CONFIG, f"/boot/config-{platform.release()}"):
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt", errors="replace") as f:
                    text = f.read()
            else:
                with open(path, errors="replace") as f:
                    text = f.read()
        except (OSError, EOFError):  # absent, unreadable, or not gzip (gzip.BadGzipFile is an OSError)
            continue
        if "CONFIG_" not in text:  # empty or not a kernel configuration
            continue
        for line in text.splitlines():
            if line.startswith(f"CONFIG_{option}="):
                return line.split("=", 1)[1].strip(), path
            if line.startswith(f"# CONFIG_{option} is not set"):
                return "n", path
        return "n", path  # options whose dependencies are off are left out entirely
    return None, None


_kprobes_absent: list[str | None] = []


def kprobes_absent_reason() -> str | None:
    """Why this kernel has no kprobes, or None when it has the kprobe perf PMU. Needs no privileges:
    the PMU's sysfs entry is world-readable, so this is answered before any capability check. Cached
    per process: the kernel's configuration does not change under it, and reading /proc/config.gz
    costs milliseconds (syscalls asks at every load)."""
    if not _kprobes_absent:
        _kprobes_absent.append(_kprobes_absent_reason())
    return _kprobes_absent[0]


def _kprobes_absent_reason() -> str | None:
    if os.path.exists(KPROBE_PMU):
        return None
    pmu = f"the kernel has no kprobe perf PMU ({os.path.dirname(KPROBE_PMU)} is absent)"
    value, source = kernel_config("KPROBES")
    if value == "n":
        return f"CONFIG_KPROBES is off ({source}): {pmu}"
    if value is None:
        return (
            f"{pmu}, as in a kernel built without CONFIG_KPROBES (its configuration is not readable here to "
            f"confirm: neither {PROC_CONFIG} nor /boot/config-{platform.release()})"
        )
    return f"CONFIG_KPROBES={value} ({source}) but {pmu}"


def active_lsms(path: str = LSM_LIST) -> tuple[str, ...] | None:
    """The active LSMs in the kernel's order (/sys/kernel/security/lsm), None when it is not readable
    (securityfs not mounted). Needs no privileges: the file is world-readable."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return tuple(name for name in text.strip().split(",") if name)


def bpf_lsm_inactive_reason(modules: tuple[str, ...] | None) -> str | None:
    """Why BPF LSM programs would never run here, with how to change it; None when bpf is active.

    The kernel builds its LSM list at boot from the ``lsm=`` parameter (else CONFIG_LSM); a program
    attached to an LSM hook while bpf is not in it loads, attaches, and is never called."""
    if modules is None:
        return (
            f"cannot tell whether BPF LSM is active: {LSM_LIST} is not readable (securityfs is not mounted: "
            f"mount -t securityfs securityfs {SECURITYFS})"
        )
    if "bpf" in modules:
        return None
    value, source = kernel_config("BPF_LSM")
    if value == "n":
        return f"the kernel is built without CONFIG_BPF_LSM ({source}): BPF LSM programs need a kernel built with it"
    listed = ",".join(modules)
    return (
        f"BPF LSM is not active (active LSMs: {listed or 'none'}, from {LSM_LIST}): add bpf to the lsm= boot "
        f"parameter, lsm={listed + ',' if listed else ''}bpf (e.g. in GRUB_CMDLINE_LINUX, then update-grub), and reboot"
    )


def _probe_lsm(lib: Lib, modules: tuple[str, ...] | None) -> tuple[bool, str]:
    """BPF LSM: active in the kernel's list, and a real LSM program loads (trampoline-based, as fentry:
    some kernels refuse those with EPERM even to root)."""
    inactive = bpf_lsm_inactive_reason(modules)
    if inactive:
        return False, inactive
    listed = ",".join(modules or ())
    ok, why = _load_probe_object(lib, "probe_lsm.bpf.o")
    if ok:
        return True, f"bpf is an active LSM ({listed})"
    refused = (
        f"bpf is an active LSM ({listed}) but the kernel refuses to load an LSM program on bprm_check_security ({why})"
    )
    if "not permitted" in why:  # EPERM to a process holding CAP_BPF and CAP_PERFMON (checked before)
        refused += ": LSM programs attach through BPF trampolines, as fentry programs do, and this kernel refuses those"
    return False, refused


_cache: ProbeReport | None = None
_cache_lock = threading.Lock()


def probe(refresh: bool = False) -> ProbeReport:
    """What this kernel and process can do with eBPF; computed once per process."""
    global _cache
    with _cache_lock:
        if _cache is None or refresh:
            _cache = _probe()
        return _cache


_raw_tracepoints: Feature | None = None


def raw_tracepoints() -> Feature:
    """Whether this kernel loads raw tracepoint programs (BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17), which
    attach by the tracepoint's name with no tracefs. One program-type probe, cached per process: the
    built-ins ask it at every load, and the whole ``probe()`` costs tens of milliseconds."""
    global _raw_tracepoints
    if _raw_tracepoints is not None:
        return _raw_tracepoints
    if _cache is not None:
        _raw_tracepoints = _cache.feature("raw_tp")
        return _raw_tracepoints
    from hypermesh.ebpf import libbpf
    from hypermesh.errors import Unsupported

    try:
        lib = libbpf.lib()
    except Unsupported as exc:
        return Feature("raw_tp", False, exc.reason)
    not_permitted = _not_permitted("loading a raw_tp program", TRACING_NEEDS)
    if not_permitted:
        return Feature("raw_tp", False, not_permitted)  # not cached: a capability may come later
    rc = lib.libbpf_probe_bpf_prog_type(libbpf.PROG_TYPE_RAW_TRACEPOINT, None)
    why = "" if rc == 1 else "the kernel rejects raw tracepoint programs (Linux < 4.17)"
    if rc < 0:
        why = f"probe failed: {libbpf.strerror(rc)}"
    _raw_tracepoints = Feature("raw_tp", rc == 1, why)
    return _raw_tracepoints


def _load_probe_object(lib: Lib, name: str) -> tuple[bool, str]:
    """Load (not attach) one of the probe objects in programs/: (loaded, libbpf's error text)."""
    import ctypes

    from hypermesh.ebpf import libbpf

    path = os.path.join(os.path.dirname(__file__), "programs", name)
    opts = libbpf.ObjectOpenOpts(sz=ctypes.sizeof(libbpf.ObjectOpenOpts))
    obj = lib.bpf_object__open_file(path.encode(), ctypes.byref(opts))
    if not obj:
        return False, f"cannot open {path}: {libbpf.strerror(libbpf.get_errno())}"
    try:
        rc = lib.bpf_object__load(obj)
    finally:
        lib.bpf_object__close(obj)
    return (True, "") if rc == 0 else (False, libbpf.strerror(rc))


def _probe_fentry(lib: Lib) -> tuple[bool, str]:
    """Load (not attach) a real fentry program on vfs_read: libbpf's generic type probe cannot answer
    for tracing programs, which need an attach target in the kernel's BTF to load at all."""
    ok, why = _load_probe_object(lib, "probe_fentry.bpf.o")
    if ok or why.startswith("cannot open"):
        return ok, why
    return False, f"the kernel refuses to load an fentry program on vfs_read ({why})"


def _probe() -> ProbeReport:
    from hypermesh.ebpf import libbpf
    from hypermesh.errors import Unsupported

    caps = held_capabilities()
    btf = os.path.exists(BTF_PATH)
    bpffs = os.path.ismount(BPFFS)
    tracefs = tracefs_path()
    lib: libbpf.Lib | None
    try:
        lib = libbpf.lib()
        lib_reason = ""
    except Unsupported as exc:
        lib, lib_reason = None, exc.reason

    def prog_type(ptype: int, kind: str, needs: tuple[str, ...]) -> tuple[bool, str]:
        if lib is None:
            return False, lib_reason
        not_permitted = _not_permitted(kind, needs)
        if not_permitted:
            return False, not_permitted
        rc = lib.libbpf_probe_bpf_prog_type(ptype, None)
        if rc == 1:
            return True, ""
        if rc == 0:
            return False, "the kernel rejects this program type (too old, or disabled in its config)"
        return False, f"probe failed: {libbpf.strerror(rc)}"

    features: list[Feature] = []
    ok, why = prog_type(libbpf.PROG_TYPE_XDP, "loading an XDP program", XDP_NEEDS)
    features.append(Feature("xdp_generic", ok, why or "works on every interface (skb mode)"))
    features.append(
        Feature("xdp_native", ok, why or "decided per interface by its driver; the attach reports the mode used")
    )
    ok, why = prog_type(libbpf.PROG_TYPE_TRACEPOINT, "loading a tracepoint program", TRACING_NEEDS)
    unreadable = tracefs_unreadable() if tracefs is None else None
    if ok and unreadable:
        ok, why = False, f"tracefs is mounted at {unreadable} but this user cannot read it: {TRACEFS_ACCESS_FIX}"
    elif ok and tracefs is None:
        ok, why = False, "tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing"
    features.append(Feature("tracepoint", ok, why))
    ok, why = prog_type(libbpf.PROG_TYPE_RAW_TRACEPOINT, "loading a raw_tp program", TRACING_NEEDS)
    features.append(Feature("raw_tp", ok, why))
    if lib is None:
        ok, why = False, lib_reason
    elif not btf:
        ok, why = False, f"needs kernel BTF ({BTF_PATH} is absent: CONFIG_DEBUG_INFO_BTF is off)"
    elif not_permitted := _not_permitted("loading an fentry program", TRACING_NEEDS):
        ok, why = False, not_permitted
    else:
        ok, why = _probe_fentry(lib)
    features.append(Feature("fentry", ok, why))
    # kprobe programs load even where CONFIG_KPROBES is off; attaching needs the kprobe PMU. Its
    # absence is checked first: it needs no privileges, and no capability would change it.
    no_kprobes = kprobes_absent_reason()
    if no_kprobes is not None:
        ok, why = False, no_kprobes
    else:
        ok, why = prog_type(libbpf.PROG_TYPE_KPROBE, "loading a kprobe program", TRACING_NEEDS)
    features.append(Feature("kprobe", ok, why))
    if lib is None:
        ok, why = False, lib_reason
    elif not_permitted := _not_permitted("creating a BPF map", MAP_NEEDS):
        ok, why = False, not_permitted
    else:
        rc = lib.libbpf_probe_bpf_map_type(libbpf.MAP_TYPE_RINGBUF, None)
        ok = rc == 1
        why = "" if ok else "BPF ring buffers need Linux >= 5.8"
    features.append(Feature("ringbuf", ok, why))
    lsm_modules = active_lsms()
    if lib is None:
        ok, why = False, lib_reason
    elif not btf:
        ok, why = False, f"needs kernel BTF ({BTF_PATH} is absent: CONFIG_DEBUG_INFO_BTF is off)"
    elif (inactive := bpf_lsm_inactive_reason(lsm_modules)) is not None:
        ok, why = False, inactive  # checked before the capabilities: no capability would change it
    elif not_permitted := _not_permitted("loading a BPF LSM program", TRACING_NEEDS):
        ok, why = False, not_permitted
    else:
        ok, why = _probe_lsm(lib, lsm_modules)
    features.append(Feature("lsm", ok, why))

    return ProbeReport(
        kernel_release=platform.release(),
        libbpf_version=None if lib is None else "{}.{}".format(*lib.version),
        btf_present=btf,
        bpffs_mounted=bpffs,
        tracefs_mounted=tracefs is not None or unreadable is not None,
        tracefs_path=tracefs,
        capabilities=caps,
        unprivileged_bpf_disabled=_read_int("/proc/sys/kernel/unprivileged_bpf_disabled"),
        features=tuple(features),
        lsm_modules=lsm_modules,
    )
