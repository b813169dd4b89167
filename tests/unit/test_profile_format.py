"""The profiler's pure parts: the ELF reader on an ELF file built here byte by byte, the /proc text
formats (maps, kallsyms, perf maps), cgroup targets over a fixture /proc, folded stacks and the SVG."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hypermesh.ebpf.cgroup_target import resolve_cgroup
from hypermesh.ebpf.elf import ElfError, parse_elf
from hypermesh.ebpf.flamegraph import parse_folded, render_svg
from hypermesh.ebpf.programs.profile import ProfileReport, ProfileStack, folded
from hypermesh.ebpf.symbols import Frame, KernelSymbols, parse_maps, parse_perf_map
from hypermesh.errors import InvalidInput, NotFound

SVG = "{http://www.w3.org/2000/svg}"


def _elf(symbols: list[tuple[str, int, int, int]], build_id: bytes, *, load_offset: int, load_vaddr: int) -> bytes:
    """An ELF64 shared object: one PT_LOAD (file offset ``load_offset`` at ``load_vaddr``), a GNU build-id
    note, and ``symbols`` (name, value, size, st_info) in .symtab."""
    strtab = b"\0" + b"".join(name.encode() + b"\0" for name, *_ in symbols)
    syms = [struct.pack("<IBBHQQ", 0, 0, 0, 0, 0, 0)]
    at = 1
    for name, value, size, info in symbols:
        syms.append(struct.pack("<IBBHQQ", at, info, 0, 1, value, size))
        at += len(name) + 1
    symtab = b"".join(syms)
    note = struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id
    body_at = 64 + 2 * 56
    symtab_at, strtab_at = body_at, body_at + len(symtab)
    note_at = strtab_at + len(strtab)
    shoff = (note_at + len(note) + 7) & ~7
    header = struct.pack(
        "<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1, 0, 64, shoff, 0, 64, 56, 2, 64, 4, 0
    )
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, load_offset, load_vaddr, load_vaddr, 0x10000, 0x10000, 0x1000)
    phdrs += struct.pack("<IIQQQQQQ", 4, 4, note_at, 0, 0, len(note), len(note), 4)
    sections = [
        struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack("<IIQQQQIIQQ", 0, 2, 0, 0, symtab_at, len(symtab), 2, 1, 8, 24),  # .symtab -> 2
        struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, strtab_at, len(strtab), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 0, 7, 0, 0, note_at, len(note), 0, 0, 4, 0),
    ]
    body = header + phdrs + symtab + strtab + note
    return body + bytes(shoff - len(body)) + b"".join(sections)


def test_elf_reader_symbols_segments_and_build_id() -> None:
    func, obj = 0x12, 0x11  # STB_GLOBAL + STT_FUNC / STT_OBJECT
    data = _elf(
        [("first", 0x1100, 0x40, func), ("a_variable", 0x1150, 8, obj), ("second", 0x1200, 0x10, func)],
        bytes.fromhex("00112233445566778899aabbccddeeff01020304"),
        load_offset=0x1000,
        load_vaddr=0x1000,
    )
    elf = parse_elf(data)
    assert elf.build_id == "00112233445566778899aabbccddeeff01020304"
    assert elf.is_shared and elf.loads == [(0x1000, 0x1000, 0x10000)]
    assert len(elf) == 2  # the object symbol is not a function
    assert elf.lookup(0x1100) == ("first", 0)
    assert elf.lookup(0x113F) == ("first", 0x3F)
    assert elf.lookup(0x1140) is None  # past first's size, before second
    assert elf.lookup(0x1205) == ("second", 5)
    assert elf.lookup(0x10FF) is None
    assert elf.vaddr_of_offset(0x1234) == 0x1234
    assert elf.vaddr_of_offset(0x20) is None  # the headers are in no PT_LOAD here


def test_elf_segment_maps_file_offset_to_vaddr() -> None:
    # A segment loaded at a different address than its file offset (as a PIE's second segment is).
    elf = parse_elf(_elf([("f", 0x401000, 0x20, 0x12)], b"\x01" * 20, load_offset=0x1000, load_vaddr=0x401000))
    vaddr = elf.vaddr_of_offset(0x1010)
    assert vaddr == 0x401010 and elf.lookup(vaddr) == ("f", 0x10)


def test_elf_reader_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ElfError):
        parse_elf(b"not an elf file at all, but long enough to have a header here, yes" * 2)
    with pytest.raises(ElfError):
        parse_elf(b"\x7fELF\x01\x01\x01" + bytes(80))  # 32-bit


def test_maps_kallsyms_and_perf_map_formats() -> None:
    maps = parse_maps(
        "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/x\n"
        "55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234 /usr/bin/x\n"
        "7f0000000000-7f0000001000 rwxp 00000000 00:00 0 \n"
        "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]\n"
        "7f1000000000-7f1000001000 r-xp 00002000 08:01 99 /opt/with space/lib.so\n"
    )
    assert [(m.start, m.offset, m.path) for m in maps] == [
        (0x7FFD1000, 0, "[vdso]"),
        (0x55D0C0A01000, 0x1000, "/usr/bin/x"),
        (0x7F0000000000, 0, ""),
        (0x7F1000000000, 0x2000, "/opt/with space/lib.so"),
    ]
    kernel = KernelSymbols(
        "ffffffff81000000 T _stext\nffffffff81000100 t do_thing\nffffffff81000200 D some_data\n"
        "ffffffffc0000000 t mod_func\t[e1000]\n"
    )
    assert kernel.lookup(0xFFFFFFFF81000150).name == "do_thing"
    assert kernel.lookup(0xFFFFFFFFC0000010).module == "e1000"
    assert not kernel.lookup(0x10).symbolized
    assert KernelSymbols("0000000000000000 T _stext\n0000000000000000 t x\n").restricted
    assert parse_perf_map("7f00 20 py::f:/a.py\nbad line here\n7e00 10 [jit] x y\n") == [
        (0x7E00, 0x10, "[jit] x y"),
        (0x7F00, 0x20, "py::f:/a.py"),
    ]


def _fixture_proc(tmp_path: Path, mounts: list[str]) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text("".join(mounts))
    (proc / "cgroups").write_text(
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t2\t1\ncpu\t1\t2\t1\nmemory\t4\t30\t1\n"
        "net_cls\t0\t1\t1\n"
    )
    return proc


def test_cgroup_targets_over_a_fixture_proc(tmp_path: Path) -> None:
    v1 = tmp_path / "cg" / "cpu"
    v2 = tmp_path / "cg" / "unified"
    named = tmp_path / "cg" / "systemd"
    for d in (v1 / "a" / "b", v2 / "web", named / "x"):
        d.mkdir(parents=True)
    proc = _fixture_proc(
        tmp_path,
        [
            f"32 31 0:29 / {v1} rw,relatime - cgroup cgroup rw,cpu\n",
            f"33 31 0:30 / {v2} rw,relatime - cgroup2 cgroup2 rw\n",
            f"34 31 0:31 / {named} rw,relatime - cgroup cgroup rw,name=systemd\n",
        ],
    )
    target = resolve_cgroup(str(v1 / "a" / "b"), proc=str(proc))
    assert (target.version, target.hierarchy_id, target.level) == (1, 1, 2)
    assert target.cgroup_id == (v1 / "a" / "b").stat().st_ino
    unified = resolve_cgroup(str(v2 / "web"), proc=str(proc))
    assert (unified.version, unified.level) == (2, 1)
    assert resolve_cgroup(str(v2), proc=str(proc)).level == 0
    with pytest.raises(InvalidInput, match="no controller"):
        resolve_cgroup(str(named / "x"), proc=str(proc))
    with pytest.raises(InvalidInput, match="not in a cgroup file system"):
        resolve_cgroup(str(tmp_path), proc=str(proc))
    # v2_only (the BPF cgroup helpers): a v2 directory passes; a v1 one, named or not, is refused with the
    # fixture's own cgroup2 mount as the place to look; whatever the mode, one wording per problem.
    assert resolve_cgroup(str(v2 / "web"), v2_only=True, proc=str(proc)) == unified
    for v1_dir in (v1 / "a", named / "x"):
        with pytest.raises(InvalidInput) as refused:
            resolve_cgroup(str(v1_dir), v2_only=True, proc=str(proc))
        assert str(refused.value) == (
            f"{v1_dir} is a cgroup v1 directory, and BPF sees cgroup v2 only: "
            f"the cgroup v2 hierarchy is mounted at {v2}: give a directory under it"
        )
    with pytest.raises(InvalidInput) as refused:
        resolve_cgroup(str(tmp_path), v2_only=True, proc=str(proc))
    assert str(refused.value).startswith(
        f"{tmp_path} is not in a cgroup file system: the cgroup v2 hierarchy is mounted at {v2}"
    )
    absent = tmp_path / "absent"
    for v2_only in (False, True):
        with pytest.raises(NotFound) as missing:
            resolve_cgroup(str(absent), v2_only=v2_only, proc=str(proc))
        assert str(missing.value) == f"no such cgroup directory: {absent} (create it: mkdir {absent})"


def _report(stacks: list[ProfileStack], lost: int = 0) -> ProfileReport:
    frames = [f for s in stacks for f in s.frames]
    return ProfileReport(
        frequency_hz=99,
        duration_seconds=1.0,
        pid_filter=None,
        cgroup_filter=None,
        cpus=(0,),
        samples=sum(s.count for s in stacks) + lost,
        recorded_samples=sum(s.count for s in stacks),
        lost_samples=lost,
        idle_samples=0,
        lost_stacks={},
        frames=len(frames),
        unsymbolized_frames=sum(1 for f in frames if not f.symbolized),
        stacks=tuple(stacks),
    )


def test_folded_merges_marks_kinds_and_shows_losses() -> None:
    main = Frame("main", "user", "/bin/x", 1, True)
    spin = Frame("spin;odd", "user", "/bin/x", 2, True)
    sys_read = Frame("ksys_read", "kernel", "kernel", 3, True)
    jit = Frame("py::f", "jit", "[jit]", 4, True)
    lost = Frame("[kernel stack lost: collision]", "lost", "", 0, False)
    report = _report(
        [
            ProfileStack(pid=1, comm="x", count=5, frames=(main, spin)),
            ProfileStack(pid=2, comm="x", count=3, frames=(main, spin)),  # same comm, same frames: merged
            ProfileStack(pid=1, comm="x", count=2, frames=(main, sys_read)),
            ProfileStack(pid=3, comm="py", count=1, frames=(jit, lost)),
        ],
        lost=4,
    )
    assert folded(report).splitlines() == [
        "x;main;spin:odd 8",
        "[lost samples: counts map full] 4",
        "x;main;ksys_read_[k] 2",
        "py;py::f_[j];[kernel stack lost: collision] 1",
    ]
    assert parse_folded(folded(report))[0] == (["x", "main", "spin:odd"], 8)


def test_svg_is_well_formed_proportional_and_escaped() -> None:
    svg = render_svg([(["a", 'b<&>"c'], 3), (["a", "d"], 1), (["e"], 4)], title="t & <u>")
    root = ET.fromstring(svg)  # well-formed XML, special characters escaped
    frames = {g.get("data-n"): g for g in root.iter(f"{SVG}g") if g.get("class") == "f"}
    assert set(frames) == {"all", "a", 'b<&>"c', "d", "e"}
    width = float(root.get("data-width") or 0)

    def w(name: str) -> float:
        rect = frames[name].find(f"{SVG}rect")
        assert rect is not None
        return float(rect.get("width") or 0)

    assert w("all") == pytest.approx(width, abs=0.01)
    assert w("a") == pytest.approx(width / 2, abs=0.01) and w("e") == pytest.approx(width / 2, abs=0.01)
    assert w('b<&>"c') == pytest.approx(3 * w("d"), abs=0.01)
    assert root.get("data-total") == "8"
    assert "<script" in svg and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    titles = [t.text for t in root.iter(f"{SVG}title")]
    assert 'b<&>"c (3 samples, 37.50%)' in titles
