"""Human amounts for allocations: ``2``, ``0.5``, ``500m`` cores; ``1.5GiB``, ``500MB`` bytes; ``1Gbit`` per second.

Binary suffixes (KiB, MiB, GiB, TiB; Ki, Mi, ... as Kubernetes writes them) are powers of 1024; decimal ones
(kB/KB, MB, GB, TB; k, M, G, T) powers of 1000. ``bit`` suffixes (``100Mbit``) are for network rates and divide by 8.
"""

from __future__ import annotations

import math
import re

from hypermesh.errors import InvalidInput

__all__ = ["parse_amount"]

_AMOUNT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z/]*)\s*")
_BYTES = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_BITS = {"bit": 1 / 8, "kbit": 1000 / 8, "mbit": 1000**2 / 8, "gbit": 1000**3 / 8, "tbit": 1000**4 / 8}
_EXAMPLES = {
    "cpu": "cores: 2, 0.5 or 500m",
    "gpu": "devices: 1 or 0.5",
    "memory": "bytes: 1.5GiB, 512MiB, 500MB",
    "storage": "bytes: 10GiB, 500GB",
    "network": "bytes per second: 125MB, or bits: 1Gbit",
}


def parse_amount(kind: str, text: str) -> float:
    """The amount ``text`` means for ``kind``, in the asset's unit; InvalidInput naming the right form otherwise."""
    if kind not in _EXAMPLES:
        raise InvalidInput(f"unknown asset kind {kind!r}; choose one of: {', '.join(_EXAMPLES)}")
    bad = InvalidInput(f"bad {kind} amount {text!r}: use {_EXAMPLES[kind]}")
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise bad
    number, unit = float(match.group(1)), match.group(2).lower().removesuffix("/s").removesuffix("ps")
    if kind in ("cpu", "gpu"):
        if unit == "m" and kind == "cpu":  # millicores, as Kubernetes writes them
            number /= 1000
        elif unit:
            raise bad
        value = number
    elif kind == "network" and unit in _BITS:
        value = number * _BITS[unit]
    elif unit in _BYTES:
        value = number * _BYTES[unit]
    else:
        raise bad
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"bad {kind} amount {text!r}: it must be more than 0")
    return float(round(value)) if kind in ("memory", "storage") else value
