"""The command that runs this checkout's ``hypermesh`` as another user (``setpriv --reuid nobody ...``).

A checkout under /root (mode 0700, the usual place on a fresh machine or in a container) cannot be entered by
nobody: the venv's site-packages and the editable install's ``src/`` are out of reach, and the CLI died with
ModuleNotFoundError. What nobody can run is tried, not guessed from modes: the plain command first; if nobody cannot
import the package that way, the checkout (and a venv outside it) is bind-mounted once at a world-traversable path
under /tmp for the test run (unmounted at exit), and the command names ``src/`` and site-packages through it.
"""

from __future__ import annotations

import atexit
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_bound: dict[str, Path] = {}


def reachable_by_others(path: Path) -> bool:
    """Every directory from / down to ``path`` lets others through (o+x), as the kernel checks on lookup."""
    return all(os.stat(directory).st_mode & stat.S_IXOTH for directory in [*reversed(path.parents), path])


def _unmount(target: Path) -> None:
    subprocess.run(["umount", "--lazy", str(target)], check=False, capture_output=True)
    try:
        target.rmdir()
        target.parent.rmdir()
    except OSError:
        pass


def _bind(source: Path) -> Path:
    if str(source) not in _bound:
        top = Path(tempfile.mkdtemp(prefix="hypermesh-world-"))
        top.chmod(0o755)
        target = top / source.name
        target.mkdir()
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True, capture_output=True)
        atexit.register(_unmount, target)
        _bound[str(source)] = target
    return _bound[str(source)]


NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]
_commands: dict[tuple[str, ...], tuple[Path, list[str]]] = {}


def _command(python: Path, paths: list[str], run: str) -> list[str]:
    """``python`` running ``run`` with ``paths`` first on sys.path. Not through `env PYTHONPATH=...`: the interpreter
    must be setpriv's own exec (a second exec as nobody, env's, is refused where the venv's python links to an
    interpreter under /root, as pyenv's does)."""
    if not paths:
        return [str(python), "-c", run] if run.startswith("import") else [str(python), "-m", run]
    return [str(python), "-c", f"import sys; sys.path[:0] = {paths!r}; {run}"]


def works_for_nobody(python: Path, paths: list[str]) -> bool:
    probe = _command(python, paths, "import hypermesh.cli.main")
    result = subprocess.run(["setpriv", *NOBODY, "--", *probe], capture_output=True, timeout=60, cwd="/", check=False)
    return result.returncode == 0


def hypermesh_for_others() -> list[str]:
    """``python -m hypermesh.cli.main`` as nobody can run it (root: it runs setpriv, and bind-mounts if it must)."""
    return command_for_others(REPO, Path(sys.executable).absolute(), Path(sys.prefix))


def python_for_others(code: str) -> list[str]:
    """``python -c CODE`` as nobody can run it, with this checkout's hypermesh importable."""
    python, paths = _interpreter(REPO, Path(sys.executable).absolute(), Path(sys.prefix))
    return _command(python, paths, code)


def command_for_others(repo: Path, python: Path, prefix: Path) -> list[str]:
    """The command for checkout ``repo`` whose venv ``prefix`` holds ``python`` (the venv's own path, not resolved:
    its pyvenv.cfg is what selects site-packages)."""
    python, paths = _interpreter(repo, python, prefix)
    if not paths:
        return _command(python, [], "hypermesh.cli.main")
    return _command(
        python, paths, "import runpy; runpy.run_module('hypermesh.cli.main', run_name='__main__', alter_sys=True)"
    )


def _interpreter(repo: Path, python: Path, prefix: Path) -> tuple[Path, list[str]]:
    """The interpreter nobody can run, and what goes first on its sys.path (nothing when the plain one works)."""
    key = (str(repo), str(python), str(prefix))
    if key not in _commands:
        _commands[key] = _find_interpreter(repo, python, prefix)
    return _commands[key]


def _find_interpreter(repo: Path, python: Path, prefix: Path) -> tuple[Path, list[str]]:
    if works_for_nobody(python, []):
        return python, []
    bound = _bind(repo)
    if prefix.is_relative_to(repo):
        prefix, python = bound / prefix.relative_to(repo), bound / python.relative_to(repo)
    elif not reachable_by_others(prefix):
        bound_prefix = _bind(prefix)
        prefix, python = bound_prefix, bound_prefix / python.relative_to(prefix)
    # The editable install's .pth names the unreachable src/: the reachable one (and site-packages) go first.
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    paths = [str(bound / "src"), str(site)]
    if not works_for_nobody(python, paths):
        raise RuntimeError(f"nobody cannot import hypermesh from {repo}, even through {bound} ({python})")
    return python, paths


def path_for_others(path: str) -> str:
    """``path`` (a file of this checkout, such as a test's .bpf.o) as nobody can reach it: through the bind mount
    that hypermesh_for_others() made, if it had to make one."""
    hypermesh_for_others()
    bound = _bound.get(str(REPO))
    if bound is not None and Path(path).is_relative_to(REPO):
        return str(bound / Path(path).relative_to(REPO))
    return path
