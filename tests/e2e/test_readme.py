"""The README's examples are what the current code prints: each command shown in a ```text block is run, and its
output must have the shown shape (headings, keys, JSON fields), not the shown values (those are one machine's).

Commands that would start something long-running (``hypermesh agent``) or need it (``curl``) are left out here: the
agent's start line and metrics are checked in tests/integration (test_agent_*.py).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ebpf_support import require_ebpf

REPO = Path(__file__).resolve().parents[2]
HYPERMESH = str(Path(sys.executable).with_name("hypermesh"))
NOT_RUN_HERE = ("agent",)  # long-running; see the module docstring
BOX = set("┏┓┗┛━┃┡┩╇┳┻│└┘┴┬─╷╵ ")


def examples() -> list[tuple[str, list[str]]]:
    """(command, shown output lines) for every `$ hypermesh ...` line in the README's ```text blocks."""
    text = (REPO / "README.md").read_text()
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```text\n(.*?)```", text, re.DOTALL):
        current: tuple[str, list[str]] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = re.sub(r"\s{2,}(#.*|\(.*\))$", "", line[2:]).strip()  # a comment or "(wrapped here)"
                current = (command, [])
                if command.startswith("hypermesh ") and shlex.split(command)[1] not in NOT_RUN_HERE:
                    out.append(current)
            elif current is not None:
                current[1].append(line)
    return out


def shape(value: Any) -> Any:
    """A JSON value's shape: dicts by their keys (recursively), lists by their first element's shape."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if not isinstance(value, int | float) else "number"


def first_segment(line: str) -> str:
    """A row's key: the text before the first run of two or more spaces ("host        vm" -> "host")."""
    return re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]


def line_pattern(line: str) -> re.Pattern[str]:
    """The shown line with its numbers free: "total 151 syscalls (tracepoint)" matches "total 9 syscalls (...)"."""
    parts = re.split(r"\d+(?:\.\d+)?", line.strip())
    return re.compile(r"\d+(?:\.\d+)?".join(re.escape(p) for p in parts))


def check_text(shown: list[str], actual: str) -> None:
    actual_lines = [line.rstrip() for line in actual.splitlines()]
    keys = {first_segment(line) for line in actual_lines if line.strip()}
    in_table = False  # below a header of capitals (SYSCALL COUNT, PID COMM COUNT) until a blank line
    for line in shown:
        body = line.rstrip()
        if not body.strip():
            in_table = False
            continue
        if body.strip() == "..." or set(body) <= BOX or body.lstrip().startswith("│"):
            continue  # elisions, frames and table data rows
        if in_table and re.fullmatch(r"\S+(\s+\S+)*\s+[0-9]+", body.strip()):
            continue  # a data row ending in a count (syscall, pid): this run's rows are others
        in_table = body.strip().replace(" ", "").isupper()
        if body.lstrip().startswith("┃"):  # a table's header row: the same columns
            cells = [c.strip() for c in body.strip("┃ ").split("┃")]
            assert any([c.strip() for c in a.strip("┃ ").split("┃")] == cells for a in actual_lines), body
        elif re.search(r"\S\s{2,}\S", body.strip()):  # "key    value": the key must be there
            assert first_segment(body) in keys, (body, sorted(keys))
        else:
            pattern = line_pattern(body)
            assert any(pattern.fullmatch(a.strip()) for a in actual_lines), (body, actual)


def cases() -> list[Any]:
    """One case per example; an ``ebpf`` command carries the markers of what it does (the suite checks them)."""
    out = []
    for command, shown in examples():
        ebpf = shlex.split(command)[1] == "ebpf"
        marks = [pytest.mark.ebpf, pytest.mark.root] if ebpf else []
        out.append(pytest.param(command, shown, marks=marks, id=command))
    return out


@pytest.mark.parametrize(("command", "shown"), cases())
def test_readme_example_has_the_shape_the_command_prints(command: str, shown: list[str]) -> None:
    args = shlex.split(command)[1:]
    if args[:2] == ["ebpf", "run"]:
        require_ebpf()
    result = subprocess.run([HYPERMESH, *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    if shown and shown[0].startswith("{"):  # JSON, wrapped in the README: the shown fields, nested alike
        assert shape(json.loads(result.stdout.splitlines()[0])) == shape(json.loads("".join(shown)))
    else:
        check_text(shown, result.stdout + result.stderr)


def test_the_readme_shows_the_commands_a_newcomer_runs_first() -> None:
    commands = {shlex.split(c)[1] for c, _ in examples()}
    assert {"profile", "sample", "ebpf"} <= commands
    text = (REPO / "README.md").read_text()
    assert "../shared" not in text  # a clone has only its own docs
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (REPO / link).exists(), link
