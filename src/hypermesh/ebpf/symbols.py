"""Symbolisation of sampled stacks: kernel addresses through /proc/kallsyms, user addresses through
the mapped files' ELF symbol tables (/proc/PID/maps) and JIT code through /tmp/perf-PID.map.

A user address becomes a name in three steps: the mapping that holds it (/proc/PID/maps), the file
offset (address - mapping start + mapping offset), the virtual address the ELF file's PT_LOAD
segments give that offset; then the function symbol that covers it. ELF tables are cached by build id
(two paths to one build share one table; a file rebuilt in place is read again) and completed from
the distribution's separate debug file for that build id when one is installed. Addresses in no file
(anonymous executable memory: a JIT) are looked up in the perf map the runtime writes (Python 3.12+
``-X perf``, node ``--perf-basic-prof``, the JVM's perf-map agent).

A process can exit before its stacks are read: ``remember(pid)`` snapshots its maps and perf map while
it runs. Whatever stays unknown is named after what is known (``libfoo.so+0x1a2b``, ``[unknown]``) and
counted, never dropped.
"""

from __future__ import annotations

import bisect
import os

from hypermesh.ebpf.elf import ElfError, ElfSymbols, parse_elf, read_elf

__all__ = ["Frame", "KernelSymbols", "Mapping", "Symbolizer", "parse_kallsyms", "parse_maps", "parse_perf_map"]

DEBUG_ROOT = "/usr/lib/debug/.build-id"
UNKNOWN = "[unknown]"


class Frame:
    """One symbolised stack frame. ``kind``: user, kernel or jit; ``symbolized``: a name was found."""

    __slots__ = ("address", "kind", "module", "name", "symbolized")

    def __init__(self, name: str, kind: str, module: str, address: int, symbolized: bool) -> None:
        self.name = name
        self.kind = kind
        self.module = module
        self.address = address
        self.symbolized = symbolized

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "module": self.module,
            "address": f"0x{self.address:x}",
            "symbolized": self.symbolized,
        }


class Mapping:
    __slots__ = ("end", "inode", "offset", "path", "start")

    def __init__(self, start: int, end: int, offset: int, inode: int, path: str) -> None:
        self.start, self.end, self.offset, self.inode, self.path = start, end, offset, inode, path


def parse_maps(text: str) -> list[Mapping]:
    """The executable mappings of /proc/PID/maps (``start-end perms offset dev inode path``), by start."""
    out = []
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 5 or "x" not in fields[1]:
            continue
        start, _, end = fields[0].partition("-")
        path = fields[5].strip() if len(fields) > 5 else ""
        out.append(Mapping(int(start, 16), int(end, 16), int(fields[2], 16), int(fields[4]), path))
    out.sort(key=lambda m: m.start)
    return out


def parse_kallsyms(text: str) -> tuple[list[int], list[str], list[str]]:
    """Text symbols of /proc/kallsyms (``address type name [module]``), sorted: (addresses, names, modules)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[1] not in ("t", "T", "w", "W"):
            continue
        module = fields[3].strip("[]") if len(fields) > 3 else ""
        entries.append((int(fields[0], 16), fields[2], module))
    entries.sort()
    return [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]


def parse_perf_map(text: str) -> list[tuple[int, int, str]]:
    """A perf map (``START SIZE name``, hexadecimal, one symbol a line) as sorted (start, size, name)."""
    out = []
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3:
            continue
        try:
            out.append((int(fields[0], 16), int(fields[1], 16), fields[2].strip()))
        except ValueError:
            continue
    out.sort()
    return out


class KernelSymbols:
    def __init__(self, text: str) -> None:
        self._addresses, self._names, self._modules = parse_kallsyms(text)
        # With kptr_restrict, a reader without CAP_SYSLOG sees every address as 0.
        self.restricted = not any(self._addresses)

    def lookup(self, address: int) -> Frame:
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0 or self.restricted:
            return Frame(UNKNOWN, "kernel", "kernel", address, False)
        return Frame(self._names[i], "kernel", self._modules[i] or "kernel", address, True)


class _Process:
    """What is known of one process: its executable mappings and its perf map, read once."""

    def __init__(self, pid: int, maps: list[Mapping], perf_map: list[tuple[int, int, str]]) -> None:
        self.pid = pid
        self.maps = maps
        self.starts = [m.start for m in maps]
        self.perf_map = perf_map
        self.perf_starts = [p[0] for p in perf_map]
        self.vdso: ElfSymbols | None = None

    def mapping(self, address: int) -> Mapping | None:
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0 and address < self.maps[i].end:
            return self.maps[i]
        return None

    def jit(self, address: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self.perf_starts, address) - 1
        if i >= 0:
            start, size, name = self.perf_map[i]
            if address < start + size:
                return name, address - start
        return None


class Symbolizer:
    """Names for kernel and user addresses (``Frame.symbolized`` False where none was found)."""

    def __init__(self, proc: str = "/proc", tmp: str = "/tmp", debug_root: str = DEBUG_ROOT) -> None:
        self.proc = proc
        self.tmp = tmp
        self.debug_root = debug_root
        self._kernel: KernelSymbols | None = None
        self._processes: dict[int, _Process] = {}
        self._files: dict[tuple[int, int, int, int], ElfSymbols | None] = {}  # (dev, ino, size, mtime)
        self._by_build_id: dict[str, ElfSymbols] = {}

    # -- kernel

    def kernel(self) -> KernelSymbols:
        if self._kernel is None:
            try:
                with open(os.path.join(self.proc, "kallsyms")) as f:
                    self._kernel = KernelSymbols(f.read())
            except OSError:
                self._kernel = KernelSymbols("")
        return self._kernel

    def kernel_frames(self, addresses: list[int]) -> list[Frame]:
        kernel = self.kernel()
        return [kernel.lookup(a) for a in addresses]

    # -- user

    def remember(self, pid: int) -> None:
        """Snapshot what symbolising ``pid`` needs, while it runs (a no-op once done)."""
        if pid in self._processes:
            return
        try:
            with open(os.path.join(self.proc, str(pid), "maps")) as f:
                maps = parse_maps(f.read())
        except OSError:
            maps = []  # gone already: its frames stay unknown, and are counted so
        process = self._processes[pid] = _Process(pid, maps, self._read_perf_map(pid))
        for m in maps:  # read the ELF files now: the process may exit, or its files be replaced
            if m.path.startswith("/"):
                self._elf(pid, m)
            elif m.path == "[vdso]":
                process.vdso = self._read_vdso(pid, m)

    def user_frames(self, pid: int, addresses: list[int]) -> list[Frame]:
        """Frames for a user stack, leaf first as the kernel records it."""
        self.remember(pid)
        process = self._processes[pid]
        frames = []
        for depth, address in enumerate(addresses):
            # Every frame but the leaf is a return address, which may already be past the end of a
            # function that ends with a call: look up the call instruction instead (as perf does).
            lookup = address if depth == 0 else address - 1
            frames.append(self._user_frame(pid, process, address, lookup))
        return frames

    def _user_frame(self, pid: int, process: _Process, address: int, lookup: int) -> Frame:
        mapping = process.mapping(lookup)
        if mapping is not None and mapping.path == "[vdso]" and process.vdso is not None:
            found = process.vdso.lookup(lookup - mapping.start)
            if found is not None:
                return Frame(found[0], "user", "[vdso]", address, True)
        if mapping is None or not mapping.path.startswith("/"):
            jit = process.jit(lookup)
            if jit is not None:
                return Frame(jit[0], "jit", "[jit]", address, True)
            module = "[unmapped]" if mapping is None else mapping.path or "[anon]"
            return Frame(UNKNOWN, "user", module, address, False)
        offset = lookup - mapping.start + mapping.offset
        elf = self._elf(pid, mapping)
        vaddr = elf.vaddr_of_offset(offset) if elf is not None else None
        found = elf.lookup(vaddr) if elf is not None and vaddr is not None else None
        if found is None:
            return Frame(f"{os.path.basename(mapping.path)}+0x{offset:x}", "user", mapping.path, address, False)
        return Frame(found[0], "user", mapping.path, address, True)

    def _elf(self, pid: int, mapping: Mapping) -> ElfSymbols | None:
        # /proc/PID/map_files/ opens exactly the mapped file, even one deleted since or in another
        # mount namespace (it needs CAP_SYS_ADMIN); /proc/PID/root/PATH and PATH are the fall backs.
        candidates = (
            os.path.join(self.proc, str(pid), "map_files", f"{mapping.start:x}-{mapping.end:x}"),
            os.path.join(self.proc, str(pid), "root", mapping.path.lstrip("/")),
            mapping.path,
        )
        for path in candidates:
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self._files:
                self._files[key] = self._read_elf(path)
            return self._files[key]
        return None

    def _read_elf(self, path: str) -> ElfSymbols | None:
        try:
            elf = read_elf(path)
        except (OSError, ElfError, ValueError):
            return None
        if elf.build_id is None:
            return elf
        known = self._by_build_id.get(elf.build_id)
        if known is not None:
            return known
        self._by_build_id[elf.build_id] = elf
        debug = os.path.join(self.debug_root, elf.build_id[:2], elf.build_id[2:] + ".debug")
        if os.path.exists(debug):
            try:
                extra = read_elf(debug)
            except (OSError, ElfError, ValueError):
                return elf
            elf.add([(s, e - s, n) for s, e, n in zip(extra._starts, extra._ends, extra._names, strict=True)])
        return elf

    def _read_vdso(self, pid: int, mapping: Mapping) -> ElfSymbols | None:
        """The vDSO is an ELF image the kernel maps into each process, with no file behind it: read it
        from the process's memory (needs ptrace access: root, or the same user)."""
        try:
            with open(os.path.join(self.proc, str(pid), "mem"), "rb") as f:
                f.seek(mapping.start)
                return parse_elf(f.read(min(mapping.end - mapping.start, 1 << 20)))
        except (OSError, ElfError, ValueError, OverflowError):
            return None

    def _read_perf_map(self, pid: int) -> list[tuple[int, int, str]]:
        # The runtime writes /tmp/perf-PID.map with its own pid: in a container that is its pid in
        # its namespace (NSpid's last field), in its own /tmp (/proc/PID/root/tmp).
        paths = [os.path.join(self.tmp, f"perf-{pid}.map")]
        nspid = self._namespace_pid(pid)
        if nspid is not None and nspid != pid:
            paths.insert(0, os.path.join(self.proc, str(pid), "root", "tmp", f"perf-{nspid}.map"))
        for path in paths:
            try:
                with open(path, errors="replace") as f:
                    return parse_perf_map(f.read())
            except OSError:
                continue
        return []

    def _namespace_pid(self, pid: int) -> int | None:
        try:
            with open(os.path.join(self.proc, str(pid), "status")) as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        return int(line.split()[-1])
        except (OSError, ValueError):
            return None
        return None
