"""What `import hypermesh` does and does not do, seen from a fresh interpreter (so nothing is imported already)."""

from __future__ import annotations

import subprocess
import sys


def test_import_compiles_no_record_code() -> None:
    """`import hypermesh` defines the classes; their code is compiled on first use (the import budget)."""
    code = (
        "import hypermesh.model as m\n"
        "lazy = [c.__name__ for c in vars(m).values() if isinstance(c, type) and issubclass(c, m.Record)"
        " and c is not m.Record and c.__init__.__name__ != 'first_init']\n"
        "print(lazy)\n"
        "m.LoadAverage(1.0, 2.0, 3.0)\n"
        "print(m.LoadAverage.__init__.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "__init__"]
