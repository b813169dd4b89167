"""An opened object (ObjectSpec: what the file declares) is not the loaded collection (what the kernel
holds); pin and unpin are methods of what is pinned. Checked against the kernel's own view: fdinfo of
our fds and bpftool's listings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf import Collection, ObjectSpec
from hypermesh.ebpf.programs.syscalls import SyscallsProgram
from hypermesh.errors import InvalidInput, NotFound
from tests.conftest import require_binary
from tests.integration.ebpf_support import REPO, bpftool_json, open_fds, our_kernel_links, require_ebpf

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

SYSCALLS = str(Path(hypermesh.ebpf.__file__).parent / "programs" / "syscalls.bpf.o")


def _kernel_id(fd: int, kind: str) -> int:
    """The id the kernel gave the program or map behind ``fd`` (its fdinfo: prog_id / map_id)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{kind}_id:"))


def _bpftool_one(*args: str) -> dict[str, object]:
    """One object as bpftool shows it (``show id N`` prints an object, not a list)."""
    tool = require_binary("bpftool")
    out = subprocess.run([tool, "-j", *args], check=True, capture_output=True, text=True, timeout=30).stdout
    shown: dict[str, object] = json.loads(out)
    return shown


def test_spec_declares_collections_hold() -> None:
    require_ebpf()
    fds = open_fds()
    with ObjectSpec(SYSCALLS) as spec:
        declared = spec.info()
        assert not declared.loaded
        assert spec.programs == ("on_sys_enter", "raw_sys_enter", "on_x64_sys_call")
        spec.set_autoload("on_x64_sys_call", False)
        spec.set_autoload("raw_sys_enter", False)
        with pytest.raises(NotFound):
            spec.set_autoload("nosuch", False)
        first, second = spec.load(), spec.load()  # one spec, two collections: distinct kernel objects
        assert isinstance(first, Collection) and spec.info() == declared  # the spec is still what the file says
        try:
            assert first.info().loaded and first.info().maps == declared.maps
            prog_ids = [_kernel_id(c.program_fd("on_sys_enter"), "prog") for c in (first, second)]
            map_ids = [_kernel_id(c.map("syscall_counts").fd, "map") for c in (first, second)]
            assert len(set(prog_ids)) == 2 and len(set(map_ids)) == 2
            kernel_map = _bpftool_one("map", "show", "id", str(map_ids[0]))
            counts = next(m for m in declared.maps if m.name == "syscall_counts")
            assert kernel_map["max_entries"] == counts.max_entries and kernel_map["type"] == counts.type
            kernel_prog = _bpftool_one("prog", "show", "id", str(prog_ids[0]))
            assert kernel_prog["type"] == "tracepoint"
            assert first.program_fd("on_x64_sys_call") < 0  # autoload off: not in the kernel, no fd
            first.close()
            with pytest.raises(InvalidInput):
                first.attach_tracepoint("on_sys_enter", "raw_syscalls", "sys_enter")
            assert second.map("config").lookup_into(*_buffers(second)) is True  # the other one is untouched
            assert prog_ids[0] not in {int(p["id"]) for p in bpftool_json("prog", "list")}
        finally:
            first.close()
            second.close()
    assert open_fds() == fds


def test_autoload_on_a_fresh_spec_and_lazy_listings() -> None:
    """A spec configured before anything listed its programs (a built-in's load: each program is
    looked up by name): an unknown name is still refused with what the file declares, the load holds
    only the programs left on, and the collection lists every program and map when asked."""
    require_ebpf()
    fds = open_fds()
    with ObjectSpec(SYSCALLS) as spec:
        with pytest.raises(NotFound) as refused:
            spec.set_autoload("nosuch", False)
        assert refused.value.available == ["on_sys_enter", "raw_sys_enter", "on_x64_sys_call"]
    with ObjectSpec(SYSCALLS) as spec:
        spec.set_autoload("on_sys_enter", False)
        spec.set_autoload("on_x64_sys_call", False)
        collection = spec.load()
        reloaded = spec.load()  # a second handle: the choices are applied to it too
    try:
        for loaded in (collection, reloaded):
            assert loaded.program_fd("raw_sys_enter") >= 0
            assert loaded.program_fd("on_sys_enter") < 0 and loaded.program_fd("on_x64_sys_call") < 0
        kernel_prog = _bpftool_one(
            "prog", "show", "id", str(_kernel_id(collection.program_fd("raw_sys_enter"), "prog"))
        )
        assert kernel_prog["type"] == "raw_tracepoint"
        info = collection.info()
        assert [p.name for p in info.programs] == ["on_sys_enter", "raw_sys_enter", "on_x64_sys_call"]
        assert {"config", "syscall_counts", "process_counts", "untracked"} <= set(collection.maps)
        with pytest.raises(NotFound):
            collection.map("nosuch")
    finally:
        collection.close()
        reloaded.close()
    assert open_fds() == fds


def _buffers(collection: Collection) -> tuple[object, object]:
    import ctypes

    config = collection.map("config")
    return ctypes.create_string_buffer(config.key_size), ctypes.create_string_buffer(config.value_buffer_size)


def test_a_spec_needs_no_privileges() -> None:
    """Opening and inspecting reads the file, not the kernel: as user nobody without capabilities the
    listing is the one root gets."""
    require_ebpf()
    setpriv = require_binary("setpriv")
    from tests.world_readable import path_for_others, python_for_others

    spec_file = path_for_others(SYSCALLS)
    code = f"import json; from hypermesh.ebpf import ObjectSpec; print(json.dumps(ObjectSpec({spec_file!r}).info().to_dict()))"
    result = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
         "--", *python_for_others(code)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The same file root reads: where the checkout is closed to others (under /root), a copy others can read.
    with ObjectSpec(spec_file) as spec:
        assert json.loads(result.stdout) == spec.info().to_dict()


class _UniquelyPinned(SyscallsProgram):
    @property
    def pin_name(self) -> str:
        return f"test-objects-{os.getpid()}"


def test_pin_and_unpin_are_methods_of_the_pinned_thing() -> None:
    require_ebpf()
    prog = _UniquelyPinned(attach="raw_tracepoint").load().attach()
    path = os.path.join(hypermesh.ebpf.PIN_ROOT, prog.pin_name)
    try:
        assert prog.pin() == path
        (link,) = prog.links
        assert link.pinned_at == os.path.join(path, "link-0-raw_tracepoint")
        (entry,) = [p for p in hypermesh.ebpf.pinned() if p.name == prog.pin_name]
        (pinned_link,) = [o for o in entry.objects if o.kind == "link"]
        kernel_link = _bpftool_one("link", "show", "pinned", link.pinned_at)
        assert pinned_link.id == kernel_link["id"] and entry.attached is True
        prog.unpin()
        assert not os.path.exists(path) and link.pinned_at is None
        assert kernel_link["id"] in our_kernel_links()  # still attached: this process holds it
        prog.pin()  # pin again, then remove through the listing's record, as 'hypermesh ebpf detach' does
        (entry,) = [p for p in hypermesh.ebpf.pinned() if p.name == prog.pin_name]
        entry.unpin()
        assert not os.path.exists(path)
    finally:
        prog.close()
        if os.path.exists(path):
            hypermesh.ebpf.detach_pinned(prog.pin_name)
