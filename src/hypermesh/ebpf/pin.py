"""What hypermesh pinned on bpffs: listing it and removing it.

A program pinned with ``Program.pin()`` (``hypermesh ebpf run --pin``) is a directory
/sys/fs/bpf/hypermesh/<name>/ holding ``link-<n>-<kind>`` and ``map-<name>`` pins. Pinning itself is a
method of the pinned thing (``Link.pin``, ``Map.pin``, ``Program.pin``); this module reads back what
is pinned, from the kernel, and ``PinnedProgram.unpin()`` removes it.
"""

from __future__ import annotations

import ctypes
import os
import socket

from hypermesh.ebpf import libbpf
from hypermesh.errors import NotFound, PermissionDenied, Unsupported
from hypermesh.model import Record, record

__all__ = [
    "BPFFS",
    "PIN_ROOT",
    "PinnedObject",
    "PinnedProgram",
    "detach_pinned",
    "make_pin_dir",
    "pin_component",
    "pinned",
    "remove_pin_dir",
    "require_bpffs",
    "unpin_component",
]

PIN_ROOT = "/sys/fs/bpf/hypermesh"
BPFFS = "/sys/fs/bpf"


@record
class PinnedObject(Record):
    path: str
    kind: str  # "link" | "map" | "prog"
    id: int | None
    # Links only: whether the kernel still has it attached (an XDP link is detached by the kernel
    # when its interface is deleted), and for XDP the interface, by the ifindex the kernel holds.
    attached: bool | None = None
    interface: str | None = None


@record
class PinnedProgram(Record):
    name: str
    path: str
    objects: tuple[PinnedObject, ...]
    interface: str | None = None  # XDP: the interface its link is (or was) attached to
    attached: bool | None = None  # every pinned link still attached; None when no link is pinned

    def unpin(self) -> None:
        """Remove these pins: once no process holds them either, the kernel detaches and frees them."""
        try:
            remove_pin_dir(self.path)
        except PermissionError as exc:
            raise PermissionDenied(
                f"cannot remove the pins of {self.name} ({exc.filename}: {exc.strerror}): run as root, the "
                f"owner of {PIN_ROOT}",
                "CAP_DAC_OVERRIDE",
            ) from None


def require_bpffs(what: str) -> None:
    """Pins live on bpffs: without it mounted at /sys/fs/bpf nothing can be pinned, listed or removed
    (another mount namespace may well hold pins: "nothing pinned" would be a guess)."""
    if not os.path.ismount(BPFFS):
        raise Unsupported(what, f"bpffs is not mounted at {BPFFS}: mount -t bpf bpf {BPFFS}")


def pin_component(name: str) -> str:
    """``name`` (an interface's) as a bpffs file name: bpffs refuses names with a dot (reserved,
    EPERM), which interface names may have (eth0.100), so '.', '%' and bytes outside printable
    ASCII are written %XX."""
    return "".join(chr(b) if 0x20 < b < 0x7F and b not in (0x25, 0x2E) else f"%{b:02X}" for b in os.fsencode(name))


def unpin_component(text: str) -> str:
    """The inverse of ``pin_component``."""
    out, i = bytearray(), 0
    while i < len(text):
        code = text[i + 1 : i + 3]
        if text[i] == "%" and len(code) == 2 and all(c in "0123456789ABCDEFabcdef" for c in code):
            out.append(int(code, 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return os.fsdecode(bytes(out))


def make_pin_dir(name: str, what: str) -> str:
    """Create /sys/fs/bpf/hypermesh/<name>/ for ``what``'s pins (the caller checked the name is free);
    PermissionDenied when this user may not write the pin root."""
    path = os.path.join(PIN_ROOT, name)
    try:
        os.makedirs(path)
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot pin {what} at {path} ({exc.filename}: {exc.strerror}): run as root, the owner of {PIN_ROOT}",
            "CAP_DAC_OVERRIDE",
        ) from None
    return path


def remove_pin_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.unlink(path)
        return
    for entry in os.listdir(path):
        remove_pin_dir(os.path.join(path, entry))
    os.rmdir(path)


def _pinned_info(path: str, lib: libbpf.Lib) -> tuple[int | None, int | None, int | None]:
    """(id, type, XDP ifindex) of a pinned object, from the kernel; Nones where unknown."""
    fd = lib.bpf_obj_get(path.encode())
    if fd < 0:
        return None, None, None
    try:
        # bpf_{prog,map,link}_info all start with (type, id); a link's then has prog_id and, 8-aligned,
        # the union whose xdp member is the ifindex (0 once the kernel detached it: interface deleted).
        info = (ctypes.c_uint32 * 8)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return None, None, None
        return int(info[1]), int(info[0]), int(info[4])
    finally:
        os.close(fd)


def _pinned_object(path: str, kind: str, pin_name: str, lib: libbpf.Lib) -> PinnedObject:
    object_id, link_type, ifindex = _pinned_info(path, lib)
    if kind != "link" or object_id is None:
        return PinnedObject(path=path, kind=kind, id=object_id)
    if link_type != libbpf.LINK_TYPE_XDP:
        return PinnedObject(path=path, kind=kind, id=object_id, attached=True)
    interface = None
    if ifindex:
        try:
            interface = socket.if_indextoname(ifindex)
        except OSError:  # attached to an interface in another network namespace
            interface = f"ifindex {ifindex}"
    elif pin_name.startswith("xdp-"):
        interface = unpin_component(pin_name[4:])  # gone: the name it was pinned under
    return PinnedObject(path=path, kind=kind, id=object_id, attached=bool(ifindex), interface=interface)


def _pinned_kind(path: str, lib: libbpf.Lib) -> str:
    """ "map", "prog" or "link" for a pin of unknown origin, from the kernel's fdinfo of the object."""
    fd = lib.bpf_obj_get(path.encode())
    if fd < 0:
        return "unknown"
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            fields = {line.split(":", 1)[0] for line in f}
    except OSError:
        return "unknown"
    finally:
        os.close(fd)
    return next((kind for kind in ("link", "prog", "map") if f"{kind}_type" in fields), "unknown")


def pinned(lib: libbpf.Lib | None = None) -> list[PinnedProgram]:
    """What hypermesh pinned under /sys/fs/bpf/hypermesh/ (empty when nothing is, or bpffs is absent).

    Something another tool pinned straight into that directory (not in a program's directory) is
    listed too, under its own name, with its kind read from the kernel."""
    try:
        names = sorted(os.listdir(PIN_ROOT))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError as exc:
        raise PermissionDenied(f"cannot list {PIN_ROOT}: {exc.strerror}; run as root", "CAP_SYS_ADMIN") from None
    if not names:
        return []
    lib = lib or libbpf.lib()
    out = []
    for name in names:
        path = os.path.join(PIN_ROOT, name)
        if not os.path.isdir(path):
            objects = [_pinned_object(path, _pinned_kind(path, lib), name, lib)]
        else:
            objects = [
                _pinned_object(os.path.join(path, e), e.split("-", 1)[0], name, lib) for e in sorted(os.listdir(path))
            ]
        links = [o for o in objects if o.kind == "link"]
        out.append(
            PinnedProgram(
                name=name,
                path=path,
                objects=tuple(objects),
                interface=next((o.interface for o in links if o.interface), None),
                attached=all(bool(o.attached) for o in links) if links else None,
            )
        )
    return out


def detach_pinned(name: str) -> PinnedProgram:
    """Remove the pins of ``name``: once no process holds it either, the kernel detaches and frees it."""
    require_bpffs(f"detaching {name}")
    entries = pinned()
    for entry in entries:
        if entry.name == name:
            entry.unpin()
            return entry
    raise NotFound(f"nothing named {name!r} is pinned under {PIN_ROOT}", [p.name for p in entries])
