"""A ``.bpf.o`` opened (``ObjectSpec``: what the file declares) and loaded (``Collection``: what the kernel
holds), as cilium/ebpf splits CollectionSpec and Collection.

Opening needs no privileges: libbpf parses the ELF file and its BTF, and the spec answers what programs
and maps the file declares, and which programs load (``set_autoload``). ``ObjectSpec.load()`` asks the
kernel for them and returns a ``Collection`` owning the programs' fds and the maps; it has ``close()``.
A failed load says what the kernel objected to: the verifier's log (``VerifierError``), the missing
capability, or libbpf's own explanation.

libbpf loads a ``bpf_object`` once: the spec hands its handle to the first collection and opens the
file again for whatever comes after (another load, or ``info()``), so a spec stays usable and the usual
open-then-load costs one open.
"""

from __future__ import annotations

import ctypes
import errno
import os

from hypermesh._files import FileReadError, FileTooLarge, NotRegularFile, read_regular_file
from hypermesh.ebpf import libbpf, link
from hypermesh.ebpf.maps import Map
from hypermesh.ebpf.probe import permission_refused
from hypermesh.errors import BackendError, InvalidInput, NotFound, PermissionDenied, VerifierError
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, NoReturn, Self

__all__ = ["Collection", "MapInfo", "ObjectInfo", "ObjectSpec", "ProgramInfo", "check_elf"]

_EM_BPF = 247
MAX_OBJECT_BYTES = 64 << 20  # far above any real .bpf.o (ours are < 40 KiB; large ones are a few MiB)
REBUILD_HINT = "rebuild it: clang -target bpf -O2 -g -c FILE.bpf.c -o FILE.bpf.o (the built-in programs: make bpf)"


@record
class ProgramInfo(Record):
    name: str
    section: str
    type: str
    instructions: int


@record
class MapInfo(Record):
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int


@record
class ObjectInfo(Record):
    path: str
    programs: tuple[ProgramInfo, ...]
    maps: tuple[MapInfo, ...]
    loaded: bool


def check_elf(path: str) -> None:
    """A regular file of sane size holding a complete BPF ELF header, before libbpf sees it."""
    try:
        got = read_regular_file(path, MAX_OBJECT_BYTES, prefix=64)
    except FileNotFoundError:
        raise NotFound(f"no such BPF object file: {path}") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a BPF ELF object (.bpf.o)") from None
    except PermissionError as exc:
        raise PermissionDenied(f"cannot read {path}: {exc.strerror}") from None
    except NotRegularFile as exc:
        raise InvalidInput(
            f"{path} is {exc.kind}, not a BPF ELF object: give the path of a regular .bpf.o file"
        ) from None
    except FileTooLarge as exc:
        size = exc.size if exc.size is not None else exc.limit
        raise InvalidInput(
            f"{path} is {size / (1 << 20):.0f} MiB, larger than any BPF object "
            f"(limit {MAX_OBJECT_BYTES >> 20} MiB): give the path of a .bpf.o file"
        ) from None
    except FileReadError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.error.strerror or exc.error}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open {path}: {exc.strerror}; give the path of a .bpf.o file") from None
    head, file_size = got.data, got.size
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise InvalidInput(f"{path} is not a BPF ELF object: no ELF header (build one with clang -target bpf)")
    order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    if machine != _EM_BPF:
        raise InvalidInput(f"{path} is an ELF file for machine {machine}, not BPF ({_EM_BPF}): not a .bpf.o")
    # The section header table (clang puts it at the end of the file) must lie inside the file.
    if head[4] == 2 and len(head) >= 64:  # ELFCLASS64, the only class clang emits for BPF
        shoff = int.from_bytes(head[0x28:0x30], order)
        shentsize, shnum = int.from_bytes(head[0x3A:0x3C], order), int.from_bytes(head[0x3C:0x3E], order)
    elif head[4] == 1 and len(head) >= 52:
        shoff = int.from_bytes(head[0x20:0x24], order)
        shentsize, shnum = int.from_bytes(head[0x2E:0x30], order), int.from_bytes(head[0x30:0x32], order)
    else:
        raise InvalidInput(
            f"{path} is truncated or not a complete BPF object (its ELF header is cut short): " + REBUILD_HINT
        )
    end = shoff + shentsize * shnum
    if shoff == 0 or end > file_size:
        raise InvalidInput(
            f"{path} is truncated or not a complete BPF object ({file_size} bytes, its section table "
            f"ends at byte {end}): " + REBUILD_HINT
        )


def _verifier_log(text: str) -> str:
    start = text.find("-- BEGIN PROG LOAD LOG --")
    if start < 0:
        return ""
    end = text.find("-- END PROG LOAD LOG --", start)
    return text[start + len("-- BEGIN PROG LOAD LOG --") : end if end >= 0 else None].strip("\n")


def _programs_of(lib: libbpf.Lib, ptr: int) -> dict[str, int]:
    out = {}
    prog = lib.bpf_object__next_program(ptr, None)
    while prog:
        out[lib.bpf_program__name(prog).decode()] = prog
        prog = lib.bpf_object__next_program(ptr, prog)
    return out


def _maps_of(lib: libbpf.Lib, ptr: int) -> dict[str, int]:
    out = {}
    m = lib.bpf_object__next_map(ptr, None)
    while m:
        out[lib.bpf_map__name(m).decode()] = m
        m = lib.bpf_object__next_map(ptr, m)
    return out


def _info(lib: libbpf.Lib, path: str, programs: dict[str, int], maps: dict[str, int], loaded: bool) -> ObjectInfo:
    return ObjectInfo(
        path=path,
        programs=tuple(
            ProgramInfo(
                name=name,
                section=lib.bpf_program__section_name(p).decode(),
                type=libbpf.prog_type_name(lib.bpf_program__type(p)),
                instructions=int(lib.bpf_program__insn_cnt(p)),
            )
            for name, p in programs.items()
        ),
        maps=tuple(
            MapInfo(
                name=name,
                type=libbpf.map_type_name(lib.bpf_map__type(m)),
                key_size=int(lib.bpf_map__key_size(m)),
                value_size=int(lib.bpf_map__value_size(m)),
                max_entries=int(lib.bpf_map__max_entries(m)),
            )
            for name, m in maps.items()
        ),
        loaded=loaded,
    )


_options_by_btf: dict[str, libbpf.ObjectOpenOpts] = {}


def _open_options(btf_custom_path: str) -> libbpf.ObjectOpenOpts:
    """Open options naming ``btf_custom_path``, made once per path: libbpf only reads them (it copies
    the path), so one struct serves every open, in every thread."""
    opts = _options_by_btf.get(btf_custom_path)
    if opts is None:
        opts = libbpf.ObjectOpenOpts(sz=ctypes.sizeof(libbpf.ObjectOpenOpts))
        opts.btf_custom_path = btf_custom_path.encode()  # the struct keeps the bytes alive
        _options_by_btf[btf_custom_path] = opts
    return opts


class ObjectSpec:
    """What one ``.bpf.o`` declares, opened by libbpf without the kernel. ``load()`` -> ``Collection``.

    ``lib`` is the libbpf binding (default: the process's; a test passes one over a fake library)."""

    def __init__(
        self, path: str, *, btf_custom_path: str | None = None, lib: libbpf.Lib | None = None, check: bool = True
    ) -> None:
        if check:
            check_elf(path)
        self.path = path
        self.btf_custom_path = btf_custom_path
        self._lib = lib or libbpf.lib()
        self._autoload: dict[str, bool] = {}
        self.refused_program: str | None = None  # after a failed load: the program the kernel refused
        self._ptr: int | None = None
        # What the handle holds, by name, walked on first use: a built-in's load needs only the few
        # programs it configures, and each libbpf call through ctypes costs ~1-2 us (a map walk alone
        # was ~10 us of a load that plain libbpf does in ~0.35 ms).
        self._programs: dict[str, int] | None = None
        self._maps: dict[str, int] | None = None
        self._program_names: tuple[str, ...] | None = None
        self._map_names: tuple[str, ...] | None = None
        self._reopen()

    @property
    def programs(self) -> tuple[str, ...]:
        """The names of the programs the file declares, in the file's order."""
        if self._program_names is None:
            self._program_names = tuple(self._program_ptrs())
        return self._program_names

    @property
    def maps(self) -> tuple[str, ...]:
        """The names of the maps the file declares (.rodata/.bss and such among them), in order."""
        if self._map_names is None:
            self._map_names = tuple(self._map_ptrs())
        return self._map_names

    def _program_ptrs(self) -> dict[str, int]:
        ptr = self._handle()
        if self._programs is None:
            self._programs = _programs_of(self._lib, ptr)
        return self._programs

    def _map_ptrs(self) -> dict[str, int]:
        ptr = self._handle()
        if self._maps is None:
            self._maps = _maps_of(self._lib, ptr)
        return self._maps

    def _open(self) -> int | None:
        # NULL options (libbpf's defaults) unless a BTF is given: then options made once per BTF path.
        opts = _open_options(self.btf_custom_path) if self.btf_custom_path else None
        ptr: int | None = self._lib.bpf_object__open_file(self.path.encode(), opts)
        return ptr

    def _reopen(self) -> int:
        """A fresh libbpf handle on the file, held by the spec, with the autoload choices applied."""
        lib = self._lib
        ptr = self._open()
        if not ptr:
            err = lib.errno()
            with lib.capture() as cap:  # replay to collect libbpf's explanation
                replay = self._open()
            if replay:
                lib.bpf_object__close(replay)
            detail = libbpf.explain(cap.messages) or lib.strerror(err)
            raise InvalidInput(
                f"{self.path} is not a loadable BPF object ({detail}): the file is truncated, corrupt or not a "
                "complete BPF object; " + REBUILD_HINT
            )
        self._ptr, self._programs, self._maps = ptr, None, None
        if self._autoload:
            programs = self._program_ptrs()
            for name, autoload in self._autoload.items():
                lib.bpf_program__set_autoload(programs[name], autoload)
        return ptr

    def _handle(self) -> int:
        return self._reopen() if self._ptr is None else self._ptr

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> ObjectInfo:
        """The programs (name, section, type, instructions) and maps the file declares."""
        return _info(self._lib, self.path, self._program_ptrs(), self._map_ptrs(), loaded=False)

    def set_autoload(self, program: str, autoload: bool) -> None:
        """Whether ``load()`` loads ``program`` (all do by default)."""
        ptr = self._ptr
        if ptr is None:
            if program not in self.programs:
                raise NotFound(f"no program {program!r} in {self.path}", list(self.programs))
        else:
            # One lookup by name rather than a walk of every program (two calls each).
            prog = (
                self._programs.get(program)
                if self._programs is not None
                else self._lib.bpf_object__find_program_by_name(ptr, program.encode())
            )
            if not prog:
                raise NotFound(f"no program {program!r} in {self.path}", list(self.programs))
            self._lib.bpf_program__set_autoload(prog, autoload)
        self._autoload[program] = autoload

    def load(self) -> Collection:
        """Load every autoload program and create the maps; errors say what the kernel objected to."""
        lib = self._lib
        ptr = self._handle()
        programs, maps = self._programs, self._maps
        self._ptr, self._programs, self._maps = None, None, None  # the collection owns this handle now
        rc = lib.bpf_object__load(ptr)
        if rc != 0:
            try:
                self._raise_load_error(
                    rc, self._replay_load(), _programs_of(lib, ptr) if programs is None else programs
                )
            finally:
                lib.bpf_object__close(ptr)
        self.refused_program = None
        return Collection(self.path, ptr, programs, maps, lib)

    def _replay_load(self) -> list[str]:
        """Load a fresh copy of the object with libbpf's messages captured (the verifier log among
        them). libbpf marks a failed object as loaded, so it cannot simply be retried; a failed load
        leaves nothing in the kernel, so the replay is free of side effects."""
        lib = self._lib
        with lib.capture() as cap:
            replay = self._open()
            if replay:
                try:
                    for name, prog in _programs_of(lib, replay).items():
                        autoload = self._autoload.get(name)
                        if autoload is not None:
                            lib.bpf_program__set_autoload(prog, autoload)
                    lib.bpf_object__load(replay)
                finally:
                    lib.bpf_object__close(replay)
        return cap.messages

    def _raise_load_error(self, rc: int, messages: list[str], programs: dict[str, int]) -> NoReturn:
        text = "".join(messages)
        log = _verifier_log(text)
        name = os.path.basename(self.path)
        # libbpf names the program it was loading when the kernel said no: "prog 'x': failed to load".
        prog = next(
            (m.split("'")[1] for m in messages if m.startswith("libbpf: prog '") and "failed to load" in m), None
        ) or next((m.split("'")[1] for m in messages if m.startswith("libbpf: prog '")), None)
        self.refused_program = prog
        if log:
            lines = [line for line in log.splitlines() if line.strip() and not line.startswith("processed ")]
            why = f": {lines[-1].strip()}" if lines else ""
            where = f"program {prog!r} in {name}" if prog else f"a program in {name}"
            raise VerifierError(f"the kernel's verifier rejected {where}{why}", log=log)
        what = name
        if prog is not None:
            section = self._lib.bpf_program__section_name(programs[prog]).decode() if prog in programs else ""
            what = f"program {prog!r} ({section}) of {name}" if section else f"program {prog!r} of {name}"
        if rc in (-errno.EPERM, -errno.EACCES):
            raise permission_refused(
                f"loading {what} was refused ({self._lib.strerror(rc)})",
                ("CAP_BPF", "CAP_PERFMON"),
                "kernel lockdown, an LSM policy or the kernel's configuration forbids it",
            )
        detail = libbpf.explain(messages) or self._lib.strerror(rc)
        raise BackendError(f"loading {what} failed: {detail}")

    def close(self) -> None:
        """Release libbpf's handle (a collection loaded from this spec is not affected)."""
        ptr, self._ptr = self._ptr, None
        self._programs, self._maps = None, None
        if ptr is not None:
            self._lib.bpf_object__close(ptr)


class Collection:
    """The programs and maps of one object, loaded into the kernel. ``close()`` unloads them (links made
    from it keep their program alive until they are closed too: the kernel counts references)."""

    def __init__(
        self, path: str, ptr: int, programs: dict[str, int] | None, maps: dict[str, int] | None, lib: libbpf.Lib
    ) -> None:
        self.path = path
        self._lib = lib
        self._ptr: int | None = ptr
        # By name, walked on first use when the spec had not (see ObjectSpec). Once walked they stay
        # after close(), for the names a NotFound lists; never walked, a closed collection lists none.
        self._program_by_name = programs
        self._map_by_name = maps
        # Made on first use: six libbpf calls per map, and a load uses few of them before attach.
        self._maps: dict[str, Map] = {}

    @property
    def _programs(self) -> dict[str, int]:
        if self._program_by_name is None:
            self._program_by_name = {} if self._ptr is None else _programs_of(self._lib, self._ptr)
        return self._program_by_name

    @property
    def _map_ptrs(self) -> dict[str, int]:
        if self._map_by_name is None:
            self._map_by_name = {} if self._ptr is None else _maps_of(self._lib, self._ptr)
        return self._map_by_name

    @property
    def maps(self) -> dict[str, Map]:
        """Every map of the collection, by name ({} once closed)."""
        if self._ptr is None:
            return {}
        for name in self._map_ptrs:
            self.map(name)
        return self._maps

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def info(self) -> ObjectInfo:
        self._require_open()
        return _info(self._lib, self.path, self._programs, self._map_ptrs, loaded=True)

    def _require_open(self) -> None:
        if self._ptr is None:
            raise InvalidInput(f"{self.path} is closed")

    def _program(self, name: str) -> int:
        self._require_open()
        try:
            return self._programs[name]
        except KeyError:
            raise NotFound(f"no program {name!r} in {self.path}", list(self._programs)) from None

    def program_fd(self, program: str) -> int:
        return int(self._lib.bpf_program__fd(self._program(program)))

    def map(self, name: str) -> Map:
        m = self._maps.get(name)
        if m is not None:
            return m
        if self._ptr is None or name not in self._map_ptrs:
            raise NotFound(f"no map {name!r} loaded from {self.path}", list(self._map_ptrs))
        m = self._maps[name] = Map(self._map_ptrs[name], self._lib)
        return m

    def attach_tracepoint(self, program: str, category: str, event: str) -> link.Link:
        return link.tracepoint(self._program(program), category, event, lib=self._lib)

    def attach_raw_tracepoint(self, program: str, name: str) -> link.Link:
        return link.raw_tracepoint(self._program(program), name, lib=self._lib)

    def attach_kprobe(self, program: str, function: str) -> link.Link:
        return link.kprobe(self._program(program), function, lib=self._lib)

    def attach_perf_event(self, program: str, perf_event_fd: int, target: str) -> link.Link:
        return link.perf_event(self._program(program), perf_event_fd, target, lib=self._lib)

    def attach_lsm(self, program: str, hook: str) -> link.Link:
        return link.lsm(self._program(program), hook, lib=self._lib)

    def attach_xdp(self, program: str, ifindex: int, interface: str, mode: str = "auto") -> link.Link:
        return link.xdp(self.program_fd(program), ifindex, interface, mode, lib=self._lib)

    def attach_tcx(self, program: str, ifindex: int, interface: str, direction: str) -> link.Link:
        return link.tcx(self.program_fd(program), ifindex, interface, direction, lib=self._lib)

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        self._maps = {}
        if ptr is not None:
            self._lib.bpf_object__close(ptr)
