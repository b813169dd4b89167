"""The ``record`` decorator: what every model class is built from (immutability, to_dict, lazy compilation)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from hypermesh.model import Record, record


def make_class() -> type:
    @record
    class Point(Record):
        x: int
        y: float = 0.5
        tags: list[str] = []  # noqa: RUF012 (a default shared on purpose: records never mutate it)

    return Point


def test_a_record_works_from_its_first_use_in_any_order() -> None:
    Point = make_class()
    p = Point(1)  # the first call compiles __init__ and to_dict
    assert (p.x, p.y, p.tags) == (1, 0.5, [])
    assert p.to_dict() == {"x": 1, "y": 0.5, "tags": []}
    assert Point(x=2, y=1.0) == Point(2, 1.0) != p
    assert repr(p) == "Point(x=1, y=0.5, tags=[])"
    with pytest.raises(AttributeError, match="immutable"):
        p.x = 3
    with pytest.raises(TypeError):
        Point()
    Other = make_class()
    assert json.dumps(Other(5).to_dict()) == '{"x": 5, "y": 0.5, "tags": []}'  # to_dict before any __init__ call


def test_first_use_from_many_threads_at_once() -> None:
    Point = make_class()
    barrier = threading.Barrier(10)
    got: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def build(n: int) -> None:
        try:
            barrier.wait()
            got.append(Point(n, float(n)).to_dict())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(d["x"] for d in got) == list(range(10))  # type: ignore[type-var]


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
