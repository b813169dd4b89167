"""The syscall table: numbers of the x86-64 ABI, and a clear Unsupported (not a KeyError) on other machines."""

from __future__ import annotations

import pytest

from hypermesh.ebpf.syscall_names import TABLES, syscall_number, syscall_table
from hypermesh.errors import NotFound, Unsupported


def test_x86_64_numbers_are_the_abis() -> None:
    # arch/x86/entry/syscalls/syscall_64.tbl: fixed forever.
    assert [syscall_number(n, "x86_64") for n in ("read", "write", "getppid", "clone3")] == [0, 1, 110, 435]
    assert syscall_table("x86_64")[0] == "read"


@pytest.mark.parametrize("machine", ["aarch64", "riscv64", "ppc64le", "s390x"])
def test_a_machine_without_a_table_is_unsupported_by_name(machine: str) -> None:
    assert machine not in TABLES
    with pytest.raises(Unsupported) as raised:
        syscall_table(machine)
    assert machine in str(raised.value) and "x86_64" in str(raised.value)
    assert raised.value.exit_code == 4
    with pytest.raises(Unsupported):
        syscall_number("read", machine)


def test_an_unknown_syscall_is_not_found() -> None:
    with pytest.raises(NotFound):
        syscall_number("no_such_syscall", "x86_64")
