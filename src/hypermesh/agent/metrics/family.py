"""The metric family model: what a family is (``Desc``, declared once per collector) and what one scrape fills in.

A ``Desc`` is node_exporter's ``typedDesc``: name, type, help and unit, checked once when the collector module is
imported. ``desc.value(v)`` is its ``mustNewConstMetric``: a family of one sample in one expression, so a collector
reads as the list of what it exports. ``desc.family()`` starts a family that a loop fills with ``samples.append``.

A histogram family's samples are its series ``_bucket``, ``_sum`` and ``_count``: each sample names its suffix in
the reserved first label ``SUFFIX`` (Prometheus' own data model keeps the series name as the label ``__name__``);
``Family.histogram()`` appends one labelled histogram.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["SUFFIX", "Desc", "Family", "Labels", "counter", "gauge", "histogram", "per_row", "snake_case"]

# Labels are kept as a tuple of (name, value) pairs sorted by name: the order both text formats use.
Labels = tuple[tuple[str, str], ...]

KINDS = ("counter", "gauge", "histogram")
# The reserved label naming a histogram sample's series suffix; it sorts before every lowercase label name.
SUFFIX = "__suffix__"


class Family:
    """One metric family: name (with ``_total`` for counters), type, help, unit and its samples."""

    __slots__ = ("area", "help", "kind", "name", "samples", "unit")

    def __init__(self, name: str, kind: str, help: str, unit: str = "") -> None:
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        self.name = name
        self.kind = kind
        self.help = help
        self.unit = unit
        self.samples: list[tuple[Labels, float]] = []
        self.area = ""  # the collector that produced it, set by the runner

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(sorted(labels.items())), value))

    def histogram(self, labels: Labels, buckets: Sequence[tuple[float, float]], total: float, count: float) -> None:
        """One labelled histogram: ``buckets`` as (upper bound, cumulative count), ascending, the last +Inf."""
        for bound, cumulative in buckets:
            le = _le_text(bound)
            # le last, as prometheus_client writes it.
            self.samples.append((((SUFFIX, "_bucket"), *labels, ("le", le)), cumulative))
        self.samples.append((((SUFFIX, "_count"), *labels), count))  # before _sum, as prometheus_client writes
        self.samples.append((((SUFFIX, "_sum"), *labels), total))


class Desc:
    """What a family is: name, type, help and unit, declared once (node_exporter's ``typedDesc``)."""

    __slots__ = ("help", "kind", "name", "unit")

    def __init__(self, name: str, kind: str, help: str, unit: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"{name}: unknown metric type {kind!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        self.name = name
        self.kind = kind
        self.help = help
        self.unit = unit

    # Both build the Family without its __init__: the description was checked once, and a scrape makes ~200 of
    # them (a quarter of the collectors' own time went to __init__'s call and check).

    def family(self) -> Family:
        """An empty family of this description, for a collector to fill."""
        family = _new(Family)
        family.name = self.name
        family.kind = self.kind
        family.help = self.help
        family.unit = self.unit
        family.samples = []
        family.area = ""
        return family

    def value(self, value: float, labels: Labels = ()) -> Family:
        """A family holding one sample (labels sorted by name)."""
        family = _new(Family)
        family.name = self.name
        family.kind = self.kind
        family.help = self.help
        family.unit = self.unit
        family.samples = [(labels, value)]
        family.area = ""
        return family


_new = object.__new__


def gauge(name: str, help: str, unit: str = "") -> Desc:
    return Desc(name, "gauge", help, unit)


def counter(name: str, help: str, unit: str = "") -> Desc:
    return Desc(name, "counter", help, unit)


def histogram(name: str, help: str, unit: str = "") -> Desc:
    return Desc(name, "histogram", help, unit)


def _le_text(bound: float) -> str:
    # prometheus_client's (and Go's) spelling of a bucket bound: 2e-06, 0.5, +Inf.
    from prometheus_client.utils import floatToGoString

    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call,unused-ignore]
    return text


def per_row(rows: Sequence[Any], columns: Sequence[tuple[Desc, str]], label: str) -> list[Family]:
    """One family per (desc, attribute) column, one sample per row labelled ``label=row.name`` (devices, NICs)."""
    families = []
    for desc, field in columns:
        family = desc.family()
        for row in rows:
            family.samples.append((((label, row.name),), getattr(row, field)))
        families.append(family)
    return families


def snake_case(kernel_name: str) -> str:
    """A kernel field name as a snake_case metric name part: ``Active(anon)`` -> ``active_anon``,
    ``SReclaimable`` -> ``s_reclaimable``, ``HugePages_Total`` -> ``huge_pages_total``, ``DirectMap4k`` ->
    ``direct_map4k`` (promtool wants snake_case; the kernel's name stays in the help text)."""
    out: list[str] = []
    prev = ""
    for i, char in enumerate(kernel_name):
        nxt = kernel_name[i + 1] if i + 1 < len(kernel_name) else ""
        ch = "_" if char in "()" else char
        if ch == "_":
            pass
        elif ch.isupper() and prev and prev != "_" and not prev.isdigit() and (prev.islower() or nxt.islower()):
            out.append("_")
        out.append(ch.lower())
        prev = ch
    return "".join(out).strip("_").replace("__", "_")
