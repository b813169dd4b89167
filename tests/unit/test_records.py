"""The ``record`` decorator: what every model class is built from (immutability, to_dict, lazy compilation)."""

from __future__ import annotations

import json
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
