"""The libbpf binding's seam: errors mapped the same from a fake library (no root) as from the kernel (root).

``ObjectSpec(path, lib=...)`` and ``open_library(name, loader=...)`` take the library as an argument
whose default is the real one. The fake (tests/fixtures/libbpf/fake_libbpf.py) replays what the real
libbpf 1.1 and this 6.18 kernel printed and returned, recorded into recorded.json; each case runs
against both and must give the error recorded from the kernel, word for word (the kernel: on the
recording's kernel and libbpf; elsewhere the same error type and our part of the message). The library checks
(too old, not libbpf, lacking functions) need versions of libbpf this machine does not have: fake only.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf import libbpf
from hypermesh.ebpf.object import ObjectSpec
from hypermesh.ebpf.probe import missing_capabilities, tracefs_path
from hypermesh.errors import HypermeshError, PermissionDenied, Unsupported
from tests.conftest import require
from tests.fixtures.libbpf.fake_libbpf import FakeLibbpf, recorded, recorded_on
from tests.integration.ebpf_support import REPO, require_ebpf

PROGRAMS = Path(hypermesh.ebpf.__file__).parent / "programs"
OBJECTS = {
    "verifier_rejects": REPO / "tests" / "fixtures" / "bpf" / "invalid.bpf.o",
    "kernel_refuses_with_capabilities": REPO / "tests" / "fixtures" / "bpf" / "mixed.bpf.o",
    "unknown_tracepoint": PROGRAMS / "syscalls.bpf.o",
}
KERNEL = pytest.param("kernel", marks=[pytest.mark.ebpf, pytest.mark.root])


def _binding(library: str, case: str) -> tuple[libbpf.Lib, FakeLibbpf | None]:
    if library == "kernel":
        require_ebpf()
        return libbpf.lib(), None
    fake = FakeLibbpf.replaying(case)
    return libbpf.Lib(fake), fake


# What holds on every kernel and libbpf: the error's start, which is ours. The rest is the kernel's or
# libbpf's own words, the same as recorded only on the recording's kernel and libbpf.
PREFIXES = {
    "verifier_rejects": "the kernel's verifier rejected program 'missing_null_check' in invalid.bpf.o: ",
    "kernel_refuses_with_capabilities": "loading program 'on_vfs_read' (fentry/vfs_read) of mixed.bpf.o was refused (",
    "corrupt_object": "{path} is not a loadable BPF object (",
    "unknown_tracepoint": "attaching to tracepoint hypermesh_nosuch:nosuch failed: ",
}


def _check(case: str, path: Path, error: BaseException, lib: libbpf.Lib, fake: FakeLibbpf | None) -> None:
    """The fake gives the recorded error word for word; so does the kernel on the recording's kernel
    and libbpf, and elsewhere the same type of error, starting the same."""
    data = recorded(case)
    expected = data["error"]["message"].replace("{path}", str(path)).replace("{name}", path.name)
    assert type(error).__name__ == data["error"]["type"], error
    assert str(error).startswith(PREFIXES[case].replace("{path}", str(path))), error
    where = recorded_on()
    if fake is not None or (platform.release(), "{}.{}".format(*lib.version)) == (where["kernel"], where["libbpf"]):
        assert str(error) == expected


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.bpf.o"
    data = bytearray((PROGRAMS / "syscalls.bpf.o").read_bytes())
    data[0x3E:0x40] = (999).to_bytes(2, "little")  # e_shstrndx points at no section: libbpf refuses it
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("library", ["fake", KERNEL])
def test_verifier_rejection(library: str) -> None:
    lib, fake = _binding(library, "verifier_rejects")
    path = OBJECTS["verifier_rejects"]
    with ObjectSpec(str(path), lib=lib) as spec, pytest.raises(HypermeshError) as info:
        spec.load()
    _check("verifier_rejects", path, info.value, lib, fake)
    assert spec.refused_program == "missing_null_check"
    assert "R0 invalid mem access 'map_value_or_null'" in info.value.log_tail(3)  # type: ignore[attr-defined]
    assert fake is None or not fake.objects  # the failed load and its replay closed their handles


@pytest.mark.parametrize("library", ["fake", KERNEL])
def test_kernel_refusal_while_holding_the_capabilities(library: str) -> None:
    """The 6.18 kernel here refuses fentry programs even to root: EPERM with every capability held,
    which the error blames on lockdown or an LSM, not on a capability."""
    case = "kernel_refuses_with_capabilities"
    lib, fake = _binding(library, case)
    if library == "kernel":
        require(not hypermesh.ebpf.probe().feature("fentry").supported, "a kernel that refuses fentry programs")
    path = OBJECTS[case]
    with ObjectSpec(str(path), lib=lib) as spec, pytest.raises(PermissionDenied) as info:
        spec.load()
    assert spec.refused_program == "on_vfs_read"
    missing = missing_capabilities(("CAP_BPF", "CAP_PERFMON"))
    if not missing:
        _check(case, path, info.value, lib, fake)
    else:  # the fake, run without the capabilities: the same refusal, now blamed on what is missing
        refusal = "loading program 'on_vfs_read' (fentry/vfs_read) of mixed.bpf.o was refused (Operation not permitted)"
        assert str(info.value).startswith(f"{refusal}: missing {missing[0]}")
        assert info.value.capability == missing[0]
    assert fake is None or not fake.objects


@pytest.mark.parametrize("library", ["fake", KERNEL])
def test_corrupt_object(library: str, tmp_path: Path) -> None:
    lib, fake = _binding(library, "corrupt_object")
    path = _corrupt(tmp_path)
    with pytest.raises(HypermeshError) as info:
        ObjectSpec(str(path), lib=lib)
    _check("corrupt_object", path, info.value, lib, fake)
    assert info.value.exit_code == 2
    assert fake is None or not fake.objects


@pytest.mark.parametrize("library", ["fake", KERNEL])
def test_attach_to_a_tracepoint_that_does_not_exist(library: str) -> None:
    # The binding asks tracefs first (libbpf resolves tracepoint ids there): without it the error is
    # "tracefs is not mounted", whatever the library.
    require(tracefs_path() is not None, "tracefs mounted and readable (scripts/kernel-mounts.sh, as root)")
    lib, fake = _binding(library, "unknown_tracepoint")
    path = OBJECTS["unknown_tracepoint"]
    with ObjectSpec(str(path), lib=lib) as spec:
        spec.set_autoload("on_x64_sys_call", False)
        with spec.load() as collection, pytest.raises(HypermeshError) as info:
            collection.attach_tracepoint("on_sys_enter", "hypermesh_nosuch", "nosuch")
    _check("unknown_tracepoint", path, info.value, lib, fake)
    assert fake is None or not fake.objects


def test_open_library_names_what_is_wrong_with_the_library() -> None:
    """What HYPERMESH_LIBBPF may point at, through the loader seam: a libbpf 1.0 used to be accepted
    and then fail on its first missing function, with a traceback."""
    cases = [
        (FakeLibbpf((1, 0)), "libbpf-x.so is libbpf 1.0, older than 1.1"),
        (FakeLibbpf(missing=frozenset({"libbpf_major_version"})), "libbpf-x.so is not libbpf"),
        (
            FakeLibbpf(missing=frozenset({"ring_buffer__new", "bpf_link_create"})),
            "libbpf-x.so (libbpf 1.1) lacks bpf_link_create, ring_buffer__new",
        ),
    ]
    for fake, expected in cases:
        with pytest.raises(Unsupported) as info:
            libbpf.open_library("libbpf-x.so", loader=lambda _name, fake=fake: fake)  # type: ignore[misc]
        reason = info.value.reason
        assert reason.startswith(f"HYPERMESH_LIBBPF=libbpf-x.so: {expected}"), reason
        assert "libbpf1" in reason and "or unset it" in reason

    def absent(name: str) -> FakeLibbpf:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    with pytest.raises(Unsupported) as info:
        libbpf.open_library("/nonexistent/libbpf.so.1", loader=absent)
    assert "/nonexistent/libbpf.so.1: cannot open shared object file" in info.value.reason
    good = libbpf.open_library("libbpf-x.so", loader=lambda _name: FakeLibbpf((1, 3)))
    assert good.version == (1, 3) and good.possible_cpus == 2
    assert good.strerror(-2) == os.strerror(2)
