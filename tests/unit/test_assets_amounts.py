"""Human amounts for allocations, against hand-computed values."""

from __future__ import annotations

import pytest

from hypermesh.assets.amounts import parse_amount
from hypermesh.errors import InvalidInput


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("cpu", "2", 2.0),
        ("cpu", "0.5", 0.5),
        ("cpu", "500m", 0.5),
        ("gpu", "1", 1.0),
        ("memory", "1.5GiB", 1.5 * 2**30),
        ("memory", "500MB", 500e6),
        ("memory", "512Mi", 512 * 2**20),
        ("memory", "4096", 4096.0),
        ("storage", "10 GiB", 10 * 2**30),
        ("network", "1Gbit", 125e6),
        ("network", "100Mbit/s", 12.5e6),
        ("network", "125MB", 125e6),
    ],
)
def test_amounts(kind: str, text: str, expected: float) -> None:
    assert parse_amount(kind, text) == expected


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("memory", "1.5XB", "bad memory amount '1.5XB': use bytes: 1.5GiB, 512MiB, 500MB"),
        ("cpu", "2GiB", "bad cpu amount '2GiB': use cores: 2, 0.5 or 500m"),
        ("cpu", "0", "bad cpu amount '0': it must be more than 0"),
        ("memory", "", "bad memory amount ''"),
        ("memory", "-1", "bad memory amount '-1'"),
        ("tpu", "1", "unknown asset kind 'tpu'"),
    ],
)
def test_bad_amounts_name_the_right_form(kind: str, text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_amount(kind, text)
    assert str(err.value).startswith(message) and err.value.exit_code == 2
