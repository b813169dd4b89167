"""Runs the collectors of one scrape and reports how each did, as node_exporter does.

Every step gets ``hypermesh_scrape_collector_success`` and ``hypermesh_scrape_collector_duration_seconds``
(``{collector="<area>"}``, in the order the steps ran; the two families come after every collector's). A step ends
in one of three ways:

- it returns its families: success 1;
- it raises ``NoData`` (this host has none: no PSI, no cpufreq driver): success 1, no families, and a debug log
  line, where a failure gets a warning (node_exporter logs its ``ErrNoData`` at debug level too);
- it raises anything else, or a kernel file it names in ``sources`` (relative to proc) could not be read however
  valid its output looks ("no devices" and "could not look" must not both say success): success 0, its families
  dropped, a line in the returned failures (the agent logs those).

The node stats most collectors share are read once per scrape, just before the first collector that says
``reads_node_stats = True``, as a step of its own named ``node_read``: its duration is the reading's, theirs
their own.
"""

from __future__ import annotations

import logging
import time

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Protocol

    class Collector(Protocol):
        """One area's collector. Optional class attributes the runner reads: ``sources`` (procfs files, relative
        to proc, whose being unreadable makes the collector fail) and ``reads_node_stats``."""

        area: str

        def collect(self, scrape: Scrape) -> list[Family]: ...


__all__ = ["NODE_READ", "collect"]


log = logging.getLogger(__name__)

NODE_READ = "node_read"

SUCCESS = gauge("hypermesh_scrape_collector_success", "1 if the collector succeeded in this scrape, else 0.")
DURATION = gauge("hypermesh_scrape_collector_duration_seconds", "Seconds the collector took in this scrape.", "seconds")


def collect(
    collectors: Sequence[Collector],
    scrape: Scrape,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[Family], list[str]]:
    """Run every collector; returns the families (the scrape's own two last) and the failures.

    ``clock`` times each step; the golden-file test passes a constant one.
    """
    failures: list[str] = []
    duration = DURATION.family()
    # (area, sources, families or None when it failed), in the order the steps ran.
    steps: list[tuple[str, Sequence[str], list[Family] | None]] = []
    node_read = False
    for collector in collectors:
        if not node_read and getattr(collector, "reads_node_stats", False):
            node_read = True
            steps.append((NODE_READ, (), _step(NODE_READ, _read_node_stats, scrape, clock, duration, failures)))
        area = collector.area
        produced = _step(area, collector.collect, scrape, clock, duration, failures)
        steps.append((area, getattr(collector, "sources", ()), produced))
    families: list[Family] = []
    success = SUCCESS.family()
    # Asked once the readers have run (the node stats reader learns of its files on its first read).
    unreadable = scrape.unreadable()
    for area, sources, produced in steps:
        label = (("collector", area),)
        broken = [unreadable[name] for name in sources if name in unreadable]
        if produced is not None and broken:
            failures.append(f"{area}: cannot read {'; '.join(broken)}")
        if produced is None or broken:
            success.samples.append((label, 0.0))
            continue
        for family in produced:
            family.area = area
        families.extend(produced)
        success.samples.append((label, 1.0))
    families.append(success)
    families.append(duration)
    return families, failures


def _step(
    area: str,
    run: Callable[[Scrape], list[Family]],
    scrape: Scrape,
    clock: Callable[[], float],
    duration: Family,
    failures: list[str],
) -> list[Family] | None:
    """One timed step: its families, ``[]`` for no data, None when it failed (the failure appended)."""
    produced: list[Family] | None
    start = clock()
    try:
        produced = run(scrape)
    except NoData as exc:
        log.debug("collector %s: no data: %s", area, exc)
        produced = []
    except Exception as exc:  # a broken area must not take the scrape down with it
        failures.append(f"{area}: {type(exc).__name__}: {exc}")
        produced = None
    duration.samples.append(((("collector", area),), clock() - start))
    return produced


def _read_node_stats(scrape: Scrape) -> list[Family]:
    scrape.read_node_stats()
    return []
