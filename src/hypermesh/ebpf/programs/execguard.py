"""``execguard``: a BPF LSM program on ``bprm_check_security`` that, for the tasks of one cgroup (and its
descendants), reports (``audit``) or refuses with EPERM (``enforce``) the execution of files under denied
path prefixes. Each decision is streamed through a ring buffer as a ``GuardEvent``.

What is matched is the file the kernel is about to run, resolved by ``bpf_d_path`` (symlinks, relative
names and ``/dev/fd/N`` all land on the real path), relative to the task's root directory. A prefix
matches whole path components: ``/tmp/den`` covers ``/tmp/den`` and everything below it, never
``/tmp/denied``; a trailing ``/`` changes nothing. Prefixes are resolved here (``os.path.realpath``) so
that ``/bin`` means ``/usr/bin`` where /bin is a symlink to it, as the kernel's path will say.

The cgroup must be a cgroup v2 directory: the kernel's BPF cgroup helpers look at the unified hierarchy
only. On a host whose controllers are mounted as v1, mount cgroup2 beside them (``mount -t cgroup2 none
/sys/fs/cgroup/unified``) and create the cgroup there. See execguard.bpf.c for the in-kernel choices.
"""

from __future__ import annotations

import ctypes
import os
import struct

from hypermesh.ebpf.cgroup_target import resolve_cgroup
from hypermesh.ebpf.filters import set_cgroup_filter
from hypermesh.ebpf.probe import check_capabilities, probe
from hypermesh.ebpf.ringbuf import RingProgram, RingRecord
from hypermesh.errors import InvalidInput, Unsupported
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Self

    from hypermesh.ebpf.link import Link
    from hypermesh.ebpf.object import Collection

__all__ = ["MAX_PREFIXES", "MODES", "ExecguardProgram", "GuardEvent", "GuardEvents", "GuardStats", "normalise_prefix"]

MODES = ("audit", "enforce")
MAX_PREFIXES = 16  # execguard.bpf.c
PREFIX_MAX_BYTES = 255  # PREFIX_LEN - 1 in execguard.bpf.c
HOOK = "bprm_check_security"

_HEADER = struct.Struct("<IIIIIIQ16s")  # struct guard_event up to filename
_PREFIX = struct.Struct(f"<II{PREFIX_MAX_BYTES + 1}s")  # struct guard_prefix
_RULES_HEAD = struct.Struct("<II")  # struct guard_rules: mode, count, then the prefixes
_ACTIONS = {1: "audit", 2: "deny"}
_FLAG_UNRESOLVED = 1
_NO_PREFIX = 0xFFFFFFFF
_STATS = ("checked", "matched", "lost", "no_buffer")  # enum guard_stat


@record
class GuardEvent(Record):
    pid: int
    tid: int
    uid: int
    comm: str  # the task asking for the exec: its name before the exec
    filename: str  # the resolved path (or, when unresolved, what execve was given)
    action: str  # "audit" (allowed, reported) or "deny" (refused with EPERM)
    prefix: str | None  # the denied prefix it fell under; None when unresolved
    unresolved: bool  # bpf_d_path could not produce the path (longer than 4095 bytes): failed closed
    cgroup_id: int  # the task's cgroup v2 id (the target or one of its descendants)


@record
class GuardStats(Record):
    checked: int  # execs by tasks inside the cgroup
    matched: int  # of them, decided as under a denied prefix (or unresolved)
    lost: int  # decisions whose event the full ring buffer dropped (the decision itself stood)
    no_buffer: int  # execs decided without a path buffer (no memory): refused in enforce mode


@record
class GuardEvents(Record):
    events: tuple[GuardEvent, ...]
    stats: GuardStats


def normalise_prefix(prefix: str) -> str:
    """``prefix`` as the kernel's paths spell it: absolute, normalised, symlinks resolved, no trailing '/'."""
    if not isinstance(prefix, str) or not prefix:
        raise InvalidInput(f"--deny needs an absolute path prefix such as /tmp/untrusted, got {prefix!r}")
    if "\0" in prefix:
        raise InvalidInput("--deny: a path prefix cannot contain a NUL byte")
    if not prefix.startswith("/"):
        raise InvalidInput(
            f"--deny {prefix}: not an absolute path; the kernel matches absolute paths (give /{prefix} or the full path)"
        )
    real = os.path.realpath(prefix)
    size = len(os.fsencode(real))
    if size > PREFIX_MAX_BYTES:
        raise InvalidInput(f"--deny {prefix}: {size} bytes long, more than the {PREFIX_MAX_BYTES} a prefix may have")
    return real


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class ExecguardProgram(RingProgram[GuardEvent]):
    name = "execguard"

    def __init__(self, cgroup: str, deny: Sequence[str], mode: str = "audit") -> None:
        super().__init__()
        if mode not in MODES:
            raise InvalidInput(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(deny, str) or not deny:
            raise InvalidInput("give at least one --deny PREFIX (a list of absolute path prefixes)")
        prefixes = list(dict.fromkeys(normalise_prefix(p) for p in deny))
        if len(prefixes) > MAX_PREFIXES:
            raise InvalidInput(f"{len(prefixes)} --deny prefixes: at most {MAX_PREFIXES} (deny a common parent)")
        target = resolve_cgroup(cgroup, v2_only=True)
        self.cgroup, self.cgroup_id = target.path, target.cgroup_id
        self.prefixes = tuple(prefixes)
        self.mode = mode

    def load(self) -> Self:
        # Capabilities first (exit 3), then the kernel (exit 4): LSM programs load and attach where bpf is
        # not an active LSM, and then never run; a guard that silently guards nothing must not start.
        check_capabilities(self.capabilities, what=f"the {self.name} eBPF program")
        lsm = probe().feature("lsm")
        if not lsm.supported:
            raise Unsupported("the BPF LSM exec guard", lsm.reason)
        return super().load()

    def _rules(self) -> bytes:
        out = bytearray(_RULES_HEAD.pack(1 if self.mode == "enforce" else 0, len(self.prefixes)))
        for prefix in self.prefixes:
            raw = os.fsencode(prefix)
            out += _PREFIX.pack(0 if raw == b"/" else len(raw), 0, raw)
        out += bytes(_PREFIX.size * (MAX_PREFIXES - len(self.prefixes)))
        return bytes(out)

    def _after_load(self, collection: Collection) -> None:
        collection.map("rules").update(struct.pack("<I", 0), self._rules())
        set_cgroup_filter(collection.map("target"), self.cgroup)
        self._open_reader(collection)
        self._stats = collection.map("stats")
        self._stats_key = ctypes.create_string_buffer(4)
        self._stats_value = ctypes.create_string_buffer(self._stats.value_buffer_size)

    def _parse(self, data: RingRecord) -> GuardEvent | None:
        if len(data) < _HEADER.size:
            return None
        pid, tid, uid, action, index, flags, cgroup_id, comm = _HEADER.unpack_from(data)
        return GuardEvent(
            pid=pid,
            tid=tid,
            uid=uid,
            comm=_text(comm),
            filename=_text(bytes(memoryview(data)[_HEADER.size :])),  # sent up to its NUL: a short copy
            action=_ACTIONS.get(action, str(action)),
            prefix=self.prefixes[index] if index != _NO_PREFIX and index < len(self.prefixes) else None,
            unresolved=bool(flags & _FLAG_UNRESOLVED),
            cgroup_id=cgroup_id,
        )

    def _attach(self, collection: Collection) -> list[Link]:
        return [collection.attach_lsm("check_exec", HOOK)]

    def stats(self) -> GuardStats:
        """Counts since the load, summed over CPUs."""
        with self._read_lock:
            self._require_loaded()
            counts = []
            for index in range(len(_STATS)):
                struct.pack_into("<I", self._stats_key, 0, index)
                found = self._stats.lookup_into(self._stats_key, self._stats_value)
                counts.append(sum(memoryview(self._stats_value).cast("B").cast("Q")) if found else 0)
        return GuardStats(**dict(zip(_STATS, counts, strict=True)))

    def read(self) -> GuardEvents:
        """Decisions that arrived since the last read (without waiting), and the counts so far."""
        return GuardEvents(events=tuple(self.poll(0)), stats=self.stats())


PROGRAM = ExecguardProgram
