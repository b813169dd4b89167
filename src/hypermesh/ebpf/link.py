"""Links: a loaded program attached to a hook (tracepoint, kprobe, XDP on an interface), and the thread
that detaches them off the caller's path.

Detaching is kernel-bound: destroying a tracepoint link waits 60-90 ms for an RCU grace period, an
XDP link ~16 ms. ``detach_later()`` hands links to one background thread and returns at once with a
``threading.Event`` that is set when the kernel has let go, so an event loop never stalls.

XDP goes through ``bpf_link_create`` (detached when the link's fd closes, never left behind by a
crash); raw tracepoints, tracepoints and kprobes through libbpf's ``bpf_program__attach_*``. A raw
tracepoint (BPF_RAW_TRACEPOINT_OPEN) is named by the kernel's tracepoint name alone and needs no
tracefs; a tracefs tracepoint's id is read from tracefs, so it needs tracefs mounted. A failed attach is
replayed with libbpf's messages captured, so the error carries the lines that explain it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import threading

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.probe import TRACEFS_ACCESS_FIX, permission_refused, tracefs_path, tracefs_unreadable
from hypermesh.errors import BackendError, PermissionDenied, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

__all__ = [
    "Link",
    "detach_later",
    "kprobe",
    "lsm",
    "perf_event",
    "raise_attach_error",
    "raw_tracepoint",
    "tcx",
    "tracepoint",
    "xdp",
]

XDP_MODES = {"auto": ("native", "generic"), "native": ("native",), "generic": ("generic",)}


class Link:
    """An attachment of a program to a hook. ``close()`` detaches the program (a kernel-bound wait)."""

    def __init__(
        self, kind: str, target: str, *, lib: libbpf.Lib, ptr: int | None = None, fd: int | None = None
    ) -> None:
        self.kind = kind
        self.target = target
        self._lib = lib
        self._ptr = ptr
        self._fd = fd
        self.mode = ""  # xdp: "native" or "generic"
        self.native_refused = ""  # xdp after a fall back to generic: why native mode was refused
        self.pinned_at: str | None = None

    @property
    def fd(self) -> int:
        if self._ptr is not None:
            return int(self._lib.bpf_link__fd(self._ptr))
        return -1 if self._fd is None else self._fd

    @property
    def closed(self) -> bool:
        return self._ptr is None and self._fd is None

    def pin(self, path: str) -> None:
        """Pin at ``path`` on bpffs: the program stays attached after this process until the pin goes."""
        rc = self._lib.bpf_obj_pin(self.fd, path.encode())
        if rc != 0:
            raise BackendError(f"pinning {self.kind} link at {path}: {self._lib.strerror(rc)}")
        self.pinned_at = path

    def unpin(self) -> None:
        """Remove the pin ``pin()`` made: closing the link then detaches the program."""
        path, self.pinned_at = self.pinned_at, None
        if path is not None:
            os.unlink(path)

    def close(self) -> None:
        """Detach now. Blocks for the kernel's RCU grace period (tracepoint 60-90 ms, XDP ~16 ms)."""
        ptr, fd = self._ptr, self._fd
        self._ptr = self._fd = None
        if ptr is not None:
            self._lib.bpf_link__destroy(ptr)
        if fd is not None:
            os.close(fd)


class _Reaper:
    """One daemon thread that closes links handed over by ``detach_later``, then runs ``then``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[Link], Callable[[], None] | None, threading.Event]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, links: list[Link], then: Callable[[], None] | None) -> threading.Event:
        done = threading.Event()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hypermesh-bpf-detach", daemon=True)
                self._thread.start()
        self._queue.put((links, then, done))
        return done

    def _run(self) -> None:
        while True:
            links, then, done = self._queue.get()
            try:
                for link in links:
                    link.close()
                if then is not None:
                    then()
            finally:
                done.set()


_reaper = _Reaper()


def detach_later(links: list[Link], then: Callable[[], None] | None = None) -> threading.Event:
    """Close ``links`` (then call ``then``, e.g. the collection's close) in the background thread; the
    Event is set once done."""
    return _reaper.submit(links, then)


# ------------------------------------------------------------------------------------------ attach


def tracepoint(program: int, category: str, event: str, *, lib: libbpf.Lib) -> Link:
    """Attach the loaded program ``program`` (libbpf's bpf_program pointer) to tracepoint category:event."""
    args = (category.encode(), event.encode())
    ptr = lib.bpf_program__attach_tracepoint(program, *args)
    if not ptr:
        err = lib.errno()
        if tracefs_path() is None:  # libbpf resolves a tracepoint's id through tracefs
            unreadable = tracefs_unreadable()
            if unreadable:
                raise PermissionDenied(
                    f"attaching to tracepoint {category}:{event} needs tracefs, which is mounted at "
                    f"{unreadable} but not readable by this user: {TRACEFS_ACCESS_FIX}"
                )
            raise Unsupported(
                f"tracepoint {category}:{event}",
                "tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing",
            )
        messages = _replay(lib, lib.bpf_program__attach_tracepoint, program, *args)
        raise_attach_error(f"tracepoint {category}:{event}", err, messages)
    return Link("tracepoint", f"{category}:{event}", lib=lib, ptr=ptr)


def raw_tracepoint(program: int, name: str, *, lib: libbpf.Lib) -> Link:
    """Attach the loaded raw_tracepoint program ``program`` to the kernel tracepoint ``name``
    (``sys_enter``, ``sched_process_exec``): BPF_RAW_TRACEPOINT_OPEN, no tracefs involved."""
    ptr = lib.bpf_program__attach_raw_tracepoint(program, name.encode())
    if not ptr:
        err = lib.errno()
        messages = _replay(lib, lib.bpf_program__attach_raw_tracepoint, program, name.encode())
        raise_attach_error(f"raw tracepoint {name}", err, messages)
    return Link("raw_tracepoint", name, lib=lib, ptr=ptr)


def kprobe(program: int, function: str, *, lib: libbpf.Lib) -> Link:
    """Attach the loaded program ``program`` to a kprobe on the kernel function ``function``."""
    ptr = lib.bpf_program__attach_kprobe(program, False, function.encode())
    if not ptr:
        err = lib.errno()
        messages = _replay(lib, lib.bpf_program__attach_kprobe, program, False, function.encode())
        raise_attach_error(f"kprobe {function}", err, messages)
    return Link("kprobe", function, lib=lib, ptr=ptr)


def perf_event(program: int, perf_event_fd: int, target: str, *, lib: libbpf.Lib) -> Link:
    """Attach the loaded program ``program`` to an open perf event. The link owns ``perf_event_fd`` from
    here on (libbpf disables and closes it when the link is destroyed), on failure as on success."""
    ptr = lib.bpf_program__attach_perf_event(program, perf_event_fd)
    if not ptr:
        # No replay with messages captured, as for the other hooks: a replay that succeeded would
        # close perf_event_fd with its link. libbpf leaves the fd to the caller when it fails.
        err = lib.errno()
        os.close(perf_event_fd)
        raise_attach_error(f"perf event {target}", err, [])
    return Link("perf_event", target, lib=lib, ptr=ptr)


def lsm(program: int, hook: str, *, lib: libbpf.Lib) -> Link:
    """Attach the loaded BPF LSM program ``program`` to its hook (BPF_LSM_MAC, through a bpf_link: the
    kernel detaches it when the link's last fd closes, so a killed process leaves nothing behind)."""
    ptr = lib.bpf_program__attach_lsm(program)
    if not ptr:
        err = lib.errno()
        messages = _replay(lib, lib.bpf_program__attach_lsm, program)
        raise_attach_error(f"LSM hook {hook}", err, messages)
    return Link("lsm", hook, lib=lib, ptr=ptr)


def xdp(program_fd: int, ifindex: int, interface: str, mode: str = "auto", *, lib: libbpf.Lib) -> Link:
    """Attach through a bpf_link: native (driver) mode, falling back to generic (skb) mode in
    ``auto``. The link's ``mode`` says which one the kernel accepted and, after a fall back,
    ``native_refused`` why native mode was not had."""
    rc, native_refused = 0, ""
    for attempt in XDP_MODES[mode]:
        opts = libbpf.LinkCreateOpts(sz=ctypes.sizeof(libbpf.LinkCreateOpts))
        opts.flags = libbpf.XDP_FLAGS_DRV_MODE if attempt == "native" else libbpf.XDP_FLAGS_SKB_MODE
        rc = lib.bpf_link_create(program_fd, ifindex, libbpf.ATTACH_XDP, ctypes.byref(opts))
        if rc >= 0:
            link = Link("xdp", interface, lib=lib, fd=rc)
            link.mode = attempt
            link.native_refused = native_refused
            return link
        if rc in (-errno.EPERM, -errno.EACCES, -errno.EBUSY, -errno.EEXIST):
            break  # not a driver limitation: generic mode would fail the same way
        if attempt == "native":
            native_refused = _native_refusal(lib, program_fd, ifindex, interface, -rc)
            if mode == "native":
                _raise_native_error(interface, -rc, native_refused)
    raise_attach_error(f"XDP on {interface}", -rc, [])


def tcx(program_fd: int, ifindex: int, interface: str, direction: str, *, lib: libbpf.Lib) -> Link:
    """Attach a sched_cls program to the interface's tcx ``direction`` hook through a bpf_link (Linux
    6.6+): detached when the link's fd closes, so never left behind by a crash. Unsupported where the
    kernel has no tcx (it rejects the attach type: EINVAL)."""
    attach_type = libbpf.ATTACH_TCX_INGRESS if direction == "ingress" else libbpf.ATTACH_TCX_EGRESS
    # No relative program and no flags: appended after the tcx programs already there; ours returns
    # TCX_NEXT, so those after it still run and decide.
    opts = libbpf.LinkCreateOpts(sz=ctypes.sizeof(libbpf.LinkCreateOpts))
    rc = lib.bpf_link_create(program_fd, ifindex, attach_type, ctypes.byref(opts))
    if rc >= 0:
        return Link("tcx", f"{interface} {direction}", lib=lib, fd=rc)
    if rc == -errno.EINVAL:
        raise Unsupported(
            f"tcx links on {interface}",
            f"this kernel ({os.uname().release}) refused a tcx link (EINVAL): tcx needs Linux 6.6+; "
            "the clsact attach path works on older kernels (--attach clsact, or auto)",
        )
    raise_attach_error(f"TC (tcx {direction}) on {interface}", -rc, [])


def _replay(lib: libbpf.Lib, fn: Callable[..., int | None], *args: object) -> list[str]:
    """Attach again with libbpf's messages captured, to explain a failure (a success is undone)."""
    with lib.capture() as cap:
        ptr = fn(*args)
        if ptr:
            lib.bpf_link__destroy(ptr)
    return cap.messages


def _native_refusal(lib: libbpf.Lib, prog_fd: int, ifindex: int, interface: str, err: int) -> str:
    """Why the kernel refused native XDP, in its own words where it has some.

    Only EOPNOTSUPP means the driver has no native XDP; a driver that has it can still refuse
    (veth: ERANGE "Peer MTU is too large to set XDP"). bpf_link_create does not return the
    kernel's message (extack); the netlink attach does, so that is replayed with libbpf's
    messages captured. UPDATE_IF_NOEXIST: the replay never replaces anything; should it succeed,
    it is detached again at once."""
    if err == errno.EOPNOTSUPP:
        return f"{_driver_of(interface)} has no native (driver) XDP support"
    flags = libbpf.XDP_FLAGS_DRV_MODE | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST
    with lib.capture() as cap:
        if lib.bpf_xdp_attach(ifindex, prog_fd, flags, None) == 0:
            lib.bpf_xdp_detach(ifindex, libbpf.XDP_FLAGS_DRV_MODE, None)
    prefix = "libbpf: Kernel error message: "
    kernel_says = next((m[len(prefix) :].strip() for m in cap.messages if m.startswith(prefix)), "")
    name = errno.errorcode.get(err, str(err))
    why = f"{kernel_says} ({name}: {os.strerror(err)})" if kernel_says else f"{name}: {os.strerror(err)}"
    return f"the kernel refused native XDP on {interface}: {why}"


def _raise_native_error(interface: str, err: int, refusal: str) -> NoReturn:
    generic = "use --mode generic (or --mode auto, which falls back to generic; API: mode='generic' or 'auto')"
    if err == errno.EOPNOTSUPP:
        raise Unsupported(f"native XDP on {interface}", f"{refusal}: {generic}")
    if err == errno.ERANGE:
        hint = (
            f"lower the MTU of {interface} (and of its peer, for veth), e.g. ip link set dev {interface} "
            f"mtu 1500, or {generic}"
        )
        raise Unsupported(f"native XDP on {interface}", f"{refusal}: {hint}")
    if err == errno.EINVAL:
        raise Unsupported(
            f"native XDP on {interface}",
            f"{refusal}: the driver does not take native XDP in this configuration (its MTU, queues or "
            f"offloads); {generic}",
        )
    raise BackendError(f"attaching XDP on {interface} in native mode failed: {refusal}; or {generic}")


def raise_attach_error(what: str, err: int, messages: list[str]) -> NoReturn:
    err = abs(err)
    if err in (errno.EPERM, errno.EACCES):
        needed = "CAP_NET_ADMIN" if what.startswith(("XDP", "TC")) else "CAP_PERFMON"
        raise permission_refused(
            f"attaching to {what} was refused", ("CAP_BPF", needed), "kernel lockdown or an LSM policy forbids it"
        )
    if err in (errno.EBUSY, errno.EEXIST):
        program = "filter" if what.startswith("TC") else "XDP program"
        raise BackendError(f"attaching to {what}: another {program} is already attached there")
    if err == errno.ENODEV:
        raise BackendError(f"attaching to {what} failed: the interface is gone")
    detail = libbpf.explain(messages) or os.strerror(err)
    raise BackendError(f"attaching to {what} failed: {detail}")


def _driver_of(interface: str) -> str:
    """'the driver of eth0 (virtio_net)', or without the name where sysfs has none (lo, veth's peer)."""
    try:
        name = os.path.basename(os.readlink(f"/sys/class/net/{interface}/device/driver"))
    except OSError:
        return f"the driver of {interface}"
    return f"the driver of {interface} ({name})"
