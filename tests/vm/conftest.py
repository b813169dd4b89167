"""The second-kernel boots of the selected VM tests start at collection, in the background (tests/vm/second_kernel.py):
they overlap the host's tests instead of adding their minutes after them."""

from __future__ import annotations

import pytest

from tests.vm import second_kernel, test_cgroup_v2_enforce, test_second_kernel

# Longest first: the cgroup-v2 boot takes about a minute, the 6.1 selection several.
_EARLY = {
    test_second_kernel.test_kprobe_path_and_co_re_on_a_second_kernel: test_second_kernel.guest_boot,
    test_cgroup_v2_enforce.test_enforced_grants_on_cgroup_v2: test_cgroup_v2_enforce.guest_boot,
}


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    selected = {getattr(item, "function", None) for item in session.items}
    second_kernel.start_in_background([boot() for test, boot in _EARLY.items() if test in selected])


def pytest_sessionfinish(session: pytest.Session) -> None:
    second_kernel.stop_background()
