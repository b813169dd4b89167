"""The rooms stay rooms (docs/architecture.md): no import cycle between modules, no module past ~600 lines
(generated tables aside), the CLI imports no web framework, and data flows one way (platform never imports a
consumer). Read from the source with ast: nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_LINES = 600
GENERATED = {"hypermesh.ebpf.syscall_names"}


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every hypermesh module ``path`` imports, wherever the import stands (top, function, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known:
                    found.add(full)
                elif node.module in known:
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(cycles(edges)) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    edges = graph()
    # Package __init__ files re-export their modules: an edge from a module up to its own package is not a
    # cycle of rooms, so only edges into non-package modules count.
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    rooms = {name: {t for t in targets if t not in packages} for name, targets in edges.items()}
    assert cycles(rooms) == []


def test_no_module_is_past_the_line_limit():
    long = {
        name: count
        for name, path in modules().items()
        if name not in GENERATED and (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_cli_imports_no_web_framework_and_platform_no_consumer():
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        names = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        if name.startswith("hypermesh.cli"):
            assert not names & {"uvicorn", "starlette"}, name
    edges = graph()
    for name, targets in edges.items():
        if name.startswith(("hypermesh.platform", "hypermesh.sampling", "hypermesh.model")):
            upward = {t for t in targets if t.startswith(("hypermesh.agent", "hypermesh.cli", "hypermesh.ebpf"))}
            assert upward == set(), name


def exported(path: Path) -> set[str] | None:
    """The module's ``__all__`` (None when it has none)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return None


def runtime_imports(tree: ast.Module) -> list[ast.ImportFrom]:
    """``from hypermesh... import`` statements outside ``if TYPE_CHECKING:`` blocks (types may name anything)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(inner) for inner in ast.walk(node))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and id(node) not in skip
    ]


def surface_violations(consumers: tuple[str, ...]) -> list[str]:
    known = modules()
    found = []
    for name, path in known.items():
        if not name.startswith(consumers):
            continue
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in runtime_imports(tree):
            target = node.module or ""
            if target not in known:
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
                    continue
                public = exported(known[target])
                if public is None or alias.name not in public:
                    found.append(f"{name} imports {alias.name} from {target}, which does not export it")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                target = aliases[node.value.id]
                public = exported(known[target])
                if public is None or node.attr not in public:
                    found.append(f"{name} uses {target}.{node.attr}, which {target} does not export")
    return sorted(set(found))


def test_the_cli_and_the_agent_use_only_what_a_module_exports():
    """httpx's rule: a module says what it offers in ``__all__``; the CLI and the agent take nothing else."""
    assert surface_violations(("hypermesh.cli", "hypermesh.agent")) == []


def test_the_surface_check_sees_an_unexported_name(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('__all__ = ["kept"]\nkept = 1\nhidden = 2\n')
    assert exported(module) == {"kept"}
    tree = ast.parse("from hypermesh.x import a\nif TYPE_CHECKING:\n    from hypermesh.y import b\n")
    assert [n.module for n in runtime_imports(tree)] == ["hypermesh.x"]
