"""A small ELF reader for symbolisation: function symbols, PT_LOAD segments and the GNU build id.

Reads ELF64 files of either byte order (every 64-bit Linux target): the section headers for
``.symtab`` (present unless stripped) and ``.dynsym`` (present in every shared object), the program
headers for the loadable segments that map a file offset to a virtual address, and the
``NT_GNU_BUILD_ID`` note that names the build (distributions file separate debug symbols under
``/usr/lib/debug/.build-id/xx/yyyy.debug`` by it). Nothing is decoded until asked for: a symbol's
name is read from the string table when a lookup lands on it.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct

__all__ = ["ElfError", "ElfSymbols", "parse_elf", "read_elf"]

PT_LOAD, PT_NOTE = 1, 4
SHT_SYMTAB, SHT_NOTE, SHT_DYNSYM = 2, 7, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10
NT_GNU_BUILD_ID = 3
MAX_ELF_BYTES = 2 << 30


class ElfError(ValueError):
    """Not an ELF file this reader understands (or a truncated one)."""


class ElfSymbols:
    """The function symbols of one ELF file, sorted by address, and its PT_LOAD segments."""

    def __init__(self, build_id: str | None, loads: list[tuple[int, int, int]], is_shared: bool) -> None:
        self.build_id = build_id
        self.loads = loads  # (p_offset, p_vaddr, p_filesz) of each PT_LOAD
        self.is_shared = is_shared  # ET_DYN: position independent, vaddrs are relative to the load base
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._names: list[bytes | str] = []

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, symbols: list[tuple[int, int, bytes | str]]) -> None:
        """Merge (start, size, name) entries; a start already known keeps its first name."""
        merged = dict(zip(self._starts, zip(self._ends, self._names, strict=True), strict=True))
        for start, size, name in symbols:
            if start not in merged or (merged[start][0] == start and size):
                merged[start] = (start + size, name)
        order = sorted(merged)
        self._starts = order
        self._ends = [merged[s][0] for s in order]
        self._names = [merged[s][1] for s in order]

    def vaddr_of_offset(self, offset: int) -> int | None:
        """The virtual address the byte at file ``offset`` is loaded at (None: in no loaded segment)."""
        for p_offset, p_vaddr, p_filesz in self.loads:
            if p_offset <= offset < p_offset + max(p_filesz, 1):
                return offset - p_offset + p_vaddr
        return None

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(function name, offset into it) for ``vaddr``; None outside every known function."""
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i < 0:
            return None
        start, end = self._starts[i], self._ends[i]
        # A symbol without a size (hand-written assembly) covers up to the next symbol.
        if end != start and vaddr >= end:
            return None
        name = self._names[i]
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
            self._names[i] = name
        return name, vaddr - start


def read_elf(path: str) -> ElfSymbols:
    """Parse the ELF file at ``path`` (mapped, not read: shared objects run to hundreds of MB)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0 or size > MAX_ELF_BYTES:
            raise ElfError(f"{path}: {size} bytes is not a plausible ELF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return parse_elf(data)


def parse_elf(data: bytes | mmap.mmap) -> ElfSymbols:
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ElfError("no ELF header")
    if data[4] != 2:
        raise ElfError("32-bit ELF is not supported")
    order = "<" if data[5] == 1 else ">"
    (e_type, _m, _v, _entry, phoff, shoff, _f, _eh, phentsize, phnum, shentsize, shnum, _shstrndx) = struct.unpack_from(
        order + "HHIQQQIHHHHHH", data, 16
    )
    loads: list[tuple[int, int, int]] = []
    notes: list[tuple[int, int]] = []
    for i in range(phnum if phentsize >= 56 else 0):
        at = phoff + i * phentsize
        if at + 56 > len(data):
            raise ElfError("program headers run past the end of the file")
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            order + "IIQQQQQQ", data, at
        )
        if p_type == PT_LOAD:
            loads.append((p_offset, p_vaddr, p_filesz))
        elif p_type == PT_NOTE:
            notes.append((p_offset, p_filesz))
    sections: list[tuple[int, int, int, int, int]] = []  # type, offset, size, link, entsize
    if shoff and shentsize >= 64 and shoff + shnum * shentsize <= len(data):
        for i in range(shnum):
            _name, sh_type, _fl, _addr, sh_offset, sh_size, sh_link, _info, _al, sh_entsize = struct.unpack_from(
                order + "IIQQQQIIQQ", data, shoff + i * shentsize
            )
            sections.append((sh_type, sh_offset, sh_size, sh_link, sh_entsize))
            if sh_type == SHT_NOTE:
                notes.append((sh_offset, sh_size))
    build_id = next((b for offset, size in notes if (b := _build_id(data, order, offset, size))), None)
    elf = ElfSymbols(build_id, loads, is_shared=e_type == 3)
    for sh_type, sh_offset, sh_size, sh_link, sh_entsize in sections:
        if sh_type in (SHT_SYMTAB, SHT_DYNSYM) and sh_link < len(sections):
            strtab = sections[sh_link]
            elf.add(_functions(data, order, sh_offset, sh_size, sh_entsize, strtab[1], strtab[2]))
    return elf


def _build_id(data: bytes | mmap.mmap, order: str, offset: int, size: int) -> str | None:
    end = min(offset + size, len(data))
    while offset + 12 <= end:
        namesz, descsz, n_type = struct.unpack_from(order + "III", data, offset)
        name_at = offset + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if n_type == NT_GNU_BUILD_ID and data[name_at : name_at + namesz].rstrip(b"\0") == b"GNU":
            return bytes(data[desc_at : desc_at + descsz]).hex() or None
        offset = desc_at + ((descsz + 3) & ~3)
    return None


def _functions(
    data: bytes | mmap.mmap, order: str, offset: int, size: int, entsize: int, str_offset: int, str_size: int
) -> list[tuple[int, int, bytes | str]]:
    if entsize != 24 or offset + size > len(data) or str_offset + str_size > len(data):
        return []
    strings = bytes(data[str_offset : str_offset + str_size])
    out: list[tuple[int, int, bytes | str]] = []
    for st_name, st_info, _other, st_shndx, st_value, st_size in struct.iter_unpack(
        order + "IBBHQQ", data[offset : offset + size]
    ):
        if st_shndx == 0 or st_value == 0 or (st_info & 0xF) not in (STT_FUNC, STT_GNU_IFUNC):
            continue
        end = strings.find(b"\0", st_name)
        name = strings[st_name : end if end >= 0 else None]
        # Versioned names in .dynsym carry no "@": the version lives in .gnu.version. A "@" here is
        # a .symtab alias such as memcpy@GLIBC_2.2.5: strip the version, the function is the same.
        out.append((st_value, st_size, name.split(b"@", 1)[0]))
    return out
