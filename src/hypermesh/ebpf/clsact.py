"""cls_bpf filters on a clsact qdisc: the TC attach path of kernels without tcx links (before 6.6).

A filter, unlike a link, is not owned by a file descriptor: it stays on the interface when the process
that added it dies (SIGKILL, a crash). So every filter we add says whose it is, and the next run on the
interface (or ``hypermesh ebpf detach tc-IF``) removes the ones whose owner is gone:

- preference ``PRIORITY`` (0x484d, "HM"; ``tc filter show`` prints ``pref 18509``) on both hooks;
- handle: the owner's pid in bits 0-21 (pid_max is at most 2**22), a per-process sequence number in
  bits 22-30 (one process may count one interface twice), and bit 31 when that run created the clsact
  qdisc itself (so whoever removes the last filter of ours removes the qdisc too, and only then);
- the program's name: ``hm_tc_ingress`` or ``hm_tc_egress`` (tc.bpf.c).

The owner is gone when no process with that pid holds the filter's program (``/proc/PID/fdinfo``:
``prog_id``), which also sees through a pid reused by an unrelated process. A pid of another pid
namespace cannot be seen from here: such a filter counts as alive and is left alone.

Adding, querying and removing go through libbpf (``bpf_tc_*``, netlink underneath); listing the filters
of a hook, which libbpf does not offer, is a small rtnetlink dump over the socket module.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import socket
import struct
import threading

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.link import Link, raise_attach_error
from hypermesh.errors import BackendError
from hypermesh.model import Record, record

__all__ = [
    "OUR_PROGRAMS",
    "PRIORITY",
    "ClsactFilter",
    "TcFilter",
    "attach",
    "filters",
    "remove_leftovers",
]

PRIORITY = 0x484D
OUR_PROGRAMS = frozenset({"hm_tc_ingress", "hm_tc_egress"})
HOOKS = {"ingress": libbpf.TC_INGRESS, "egress": libbpf.TC_EGRESS}
# tcm_parent of the clsact qdisc's two sides: TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / _EGRESS).
PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
PID_BITS = 22
CREATED_QDISC = 1 << 31
_SEQUENCE_MASK = (1 << 9) - 1
_sequence = itertools.count(1)
_sequence_lock = threading.Lock()

# rtnetlink (include/uapi/linux/{netlink,rtnetlink,pkt_cls}.h)
_RTM_NEWTFILTER, _RTM_GETTFILTER = 44, 46
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_BPF_NAME, _TCA_BPF_ID = 7, 11
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
_NLMSGHDR = struct.Struct("=IHHII")
_TCMSG = struct.Struct("=BxxxiIII")  # family, pad, ifindex, handle, parent, info
_RTATTR = struct.Struct("=HH")


@record
class TcFilter(Record):
    """One filter on a clsact hook, as the kernel lists it; ``ours`` when it is one of hypermesh's."""

    direction: str  # "ingress" | "egress"
    priority: int
    handle: int
    kind: str  # "bpf" for cls_bpf
    program_id: int | None
    program_name: str | None
    owner_pid: int | None  # ours only: the process that added it
    owner_alive: bool | None  # ours only

    @property
    def ours(self) -> bool:
        return self.owner_pid is not None

    def describe(self) -> str:
        return (
            f"{self.direction} pref {self.priority} handle {self.handle:#x} program {self.program_name} "
            f"(id {self.program_id}) of pid {self.owner_pid}"
        )


def _hook(ifindex: int, direction: str) -> libbpf.TcHook:
    return libbpf.TcHook(sz=ctypes.sizeof(libbpf.TcHook), ifindex=ifindex, attach_point=HOOKS[direction])


def _opts(**fields: int) -> libbpf.TcOpts:
    return libbpf.TcOpts(sz=ctypes.sizeof(libbpf.TcOpts), **fields)


# -------------------------------------------------------------------------------------- listing


def _attributes(data: bytes) -> dict[int, bytes]:
    out, offset = {}, 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind & _NLA_TYPE_MASK] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return out


def _dump(ifindex: int, parent: int) -> list[tuple[int, int, dict[int, bytes]]]:
    """(handle, tcm_info, attributes) of every filter under ``parent`` (RTM_GETTFILTER dump). The kernel
    lists each preference's chain head too (handle 0, no options): callers skip entries without a program."""
    request = _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), _RTM_GETTFILTER, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    out: list[tuple[int, int, dict[int, bytes]]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        sock.sendto(header + request, (0, 0))
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise BackendError("listing tc filters: a malformed netlink message from the kernel")
                body = data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", body)
                    if err == 0:  # an acknowledgement, not an error
                        continue
                    if err == -errno.EINVAL:  # no clsact qdisc (some kernels say so instead of an empty dump)
                        return out
                    raise BackendError(f"listing tc filters: {os.strerror(-err)}")
                if kind == _RTM_NEWTFILTER and len(body) >= _TCMSG.size:
                    _family, _ifindex, handle, _parent, info = _TCMSG.unpack_from(body)
                    out.append((handle, info, _attributes(body[_TCMSG.size :])))


def _program_name(program_id: int, lib: libbpf.Lib) -> str | None:
    fd = lib.bpf_prog_get_fd_by_id(program_id)
    if fd < 0:
        return None
    try:
        # struct bpf_prog_info: the name (BPF_OBJ_NAME_LEN = 16) is at byte 64.
        info = (ctypes.c_uint8 * 80)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return None
        return bytes(info[64:80]).split(b"\0", 1)[0].decode("ascii", "replace")
    finally:
        os.close(fd)


def _holds_program(pid: int, program_id: int) -> bool:
    """Whether process ``pid`` has an fd on program ``program_id`` (unknown, e.g. not root: True)."""
    fdinfo = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(fdinfo)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    wanted = f"prog_id:\t{program_id}\n"
    for fd in fds:
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                if wanted in f.read():
                    return True
        except OSError:
            continue
    return False


def filters(ifindex: int, lib: libbpf.Lib | None = None) -> list[TcFilter]:
    """Every filter on the interface's clsact hooks (none when it has no clsact qdisc)."""
    lib = lib or libbpf.lib()
    out = []
    for direction, parent in PARENTS.items():
        for handle, info, attributes in _dump(ifindex, parent):
            kind = attributes.get(_TCA_KIND, b"").rstrip(b"\0").decode("ascii", "replace")
            options = _attributes(attributes.get(_TCA_OPTIONS, b""))
            if _TCA_BPF_ID not in options and handle == 0:
                continue  # a preference's chain head, not a filter
            program_id = struct.unpack("=I", options[_TCA_BPF_ID][:4])[0] if _TCA_BPF_ID in options else None
            name = None if program_id is None else _program_name(program_id, lib)
            priority = info >> 16
            owner = None
            if kind == "bpf" and priority == PRIORITY and name in OUR_PROGRAMS:
                owner = handle & ((1 << PID_BITS) - 1)
            out.append(
                TcFilter(
                    direction=direction,
                    priority=priority,
                    handle=handle,
                    kind=kind,
                    program_id=program_id,
                    program_name=name,
                    owner_pid=owner,
                    owner_alive=None if owner is None or program_id is None else _holds_program(owner, program_id),
                )
            )
    return out


# ------------------------------------------------------------------------------- adding, removing


def _detach(ifindex: int, direction: str, handle: int, lib: libbpf.Lib) -> int:
    """Remove our filter ``handle``; -errno (ENOENT: gone already, e.g. with its interface)."""
    return int(lib.bpf_tc_detach(_hook(ifindex, direction), _opts(handle=handle, priority=PRIORITY)))


def _remove_qdisc_if_empty(ifindex: int, lib: libbpf.Lib) -> bool:
    """Remove the clsact qdisc when no filter at all is left on it (ours or anyone's). Between the
    listing and the removal another tool could add one: that window is a netlink round trip."""
    try:
        if filters(ifindex, lib):
            return False
    except (BackendError, OSError):
        return False
    hook = libbpf.TcHook(
        sz=ctypes.sizeof(libbpf.TcHook), ifindex=ifindex, attach_point=libbpf.TC_INGRESS | libbpf.TC_EGRESS
    )
    return int(lib.bpf_tc_hook_destroy(hook)) == 0


def remove_leftovers(ifindex: int, lib: libbpf.Lib | None = None) -> list[TcFilter]:
    """Remove our filters on the interface whose owner is gone (and the clsact qdisc, if one of them had
    created it and nothing else is on it now); the filters removed."""
    lib = lib or libbpf.lib()
    gone = [f for f in filters(ifindex, lib) if f.ours and f.owner_alive is False]
    removed = [f for f in gone if _detach(ifindex, f.direction, f.handle, lib) in (0, -errno.ENOENT)]
    if any(f.handle & CREATED_QDISC for f in removed):
        _remove_qdisc_if_empty(ifindex, lib)
    return removed


class ClsactFilter(Link):
    """A cls_bpf filter of ours on one side of a clsact qdisc, closed like a link: ``close()`` removes
    it (and the qdisc, when this run created it and nothing else is left on it)."""

    def __init__(self, interface: str, ifindex: int, direction: str, handle: int, lib: libbpf.Lib) -> None:
        super().__init__("clsact", f"{interface} {direction}", lib=lib)
        self.ifindex = ifindex
        self.direction = direction
        self.handle = handle
        self._attached = True

    @property
    def closed(self) -> bool:
        return not self._attached

    def pin(self, path: str) -> None:
        raise BackendError("a clsact filter is not a bpf link and cannot be pinned (tcx links can: Linux 6.6+)")

    def close(self) -> None:
        if not self._attached:
            return
        self._attached = False
        _detach(self.ifindex, self.direction, self.handle, self._lib)
        if self.handle & CREATED_QDISC:
            _remove_qdisc_if_empty(self.ifindex, self._lib)


def _next_sequence() -> int:
    with _sequence_lock:
        return next(_sequence) & _SEQUENCE_MASK or next(_sequence) & _SEQUENCE_MASK


def attach(
    program_fds: dict[str, int], ifindex: int, interface: str, *, lib: libbpf.Lib | None = None
) -> list[ClsactFilter]:
    """Add one filter per direction (``program_fds``: direction -> program fd), creating the clsact
    qdisc when the interface has none. On failure, what was added is removed again."""
    lib = lib or libbpf.lib()
    created = lib.bpf_tc_hook_create(
        libbpf.TcHook(
            sz=ctypes.sizeof(libbpf.TcHook), ifindex=ifindex, attach_point=libbpf.TC_INGRESS | libbpf.TC_EGRESS
        )
    )
    if created not in (0, -errno.EEXIST):
        raise_attach_error(f"TC (clsact qdisc) on {interface}", created, [])
    added: list[ClsactFilter] = []
    try:
        for direction, fd in program_fds.items():
            for _ in range(_SEQUENCE_MASK):
                handle = os.getpid() | _next_sequence() << PID_BITS | (CREATED_QDISC if created == 0 else 0)
                rc = lib.bpf_tc_attach(_hook(ifindex, direction), _opts(prog_fd=fd, handle=handle, priority=PRIORITY))
                if rc != -errno.EEXIST:  # that handle is another filter of this process's: try the next
                    break
            if rc != 0:
                raise_attach_error(f"TC (clsact {direction}) on {interface}", rc, [])
            added.append(ClsactFilter(interface, ifindex, direction, handle, lib))
    except BaseException:
        for f in added:
            f.close()
        if created == 0 and not added:
            _remove_qdisc_if_empty(ifindex, lib)
        raise
    return added
