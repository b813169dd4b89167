"""What one scrape reads, each source read at most once, and ``NoData``: what a collector raises when the host has none.

A collector never checks whether a source exists: ``scrape.node_stats`` raises ``NoData`` when this scrape has no
node-stats reader, and a collector whose kernel feature is absent here (no PSI, no cpufreq driver, no softirqs file)
raises ``NoData`` itself. The runner reports that as success with no families, not as a failure (node_exporter's
``ErrNoData``); a file that exists but cannot be read is a failure (the runner's ``sources`` check).
"""

from __future__ import annotations

from hypermesh.model import Counters, SystemProfile
from hypermesh.model_node import NodeStats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hypermesh.agent.guards import AgentStats
    from hypermesh.agent.node_assets import AssetReading
    from hypermesh.agent.programs import EbpfStatus, ProgramState

__all__ = ["NoData", "Scrape"]


class NoData(Exception):  # node_exporter's ErrNoData: an outcome, not an error
    """This host has nothing for the collector (the kernel lacks the feature, the scrape lacks the reader)."""


class Scrape:
    """Everything one scrape reads, read at most once: the counters, the node stats, the profile, the eBPF status."""

    __slots__ = (
        "_assets",
        "_counters",
        "_node_stats",
        "_node_stats_error",
        "_read_assets",
        "_read_counters",
        "_read_node_stats",
        "_read_programs",
        "_read_unreadable",
        "ebpf_status",
        "profile",
        "stats",
    )

    def __init__(
        self,
        read_counters: Callable[[], Counters],
        profile: SystemProfile | None,
        ebpf_status: EbpfStatus,
        stats: AgentStats,
        read_programs: Callable[[], dict[str, ProgramState]] | None = None,
        read_node_stats: Callable[[], NodeStats] | None = None,
        read_unreadable: Callable[[], dict[str, str]] | None = None,
        read_assets: Callable[[], AssetReading] | None = None,
    ) -> None:
        self._read_assets = read_assets
        self._assets: AssetReading | None = None
        self._read_counters = read_counters
        self._read_unreadable = read_unreadable
        self._read_node_stats = read_node_stats
        self._node_stats: NodeStats | None = None
        self._node_stats_error: str | None = None
        self._counters: Counters | None = None
        self._read_programs = read_programs
        self.profile = profile
        self.ebpf_status = ebpf_status
        self.stats = stats

    def unreadable(self) -> dict[str, str]:
        """Sources the readers could not read, ``{"diskstats": "/proc/diskstats: Permission denied"}``."""
        return self._read_unreadable() if self._read_unreadable is not None else {}

    def programs(self) -> dict[str, ProgramState]:
        """The eBPF programs the agent keeps loaded, each with its latest reading."""
        return self._read_programs() if self._read_programs is not None else {}

    def read_node_stats(self) -> NodeStats:
        """Read the node stats the node collectors share (the runner times this as its own step, ``node_read``).

        A failed read is remembered: the collectors that need it fail with its reason instead of reading again.
        """
        if self._read_node_stats is None:
            raise NoData("this scrape has no node stats reader")
        try:
            stats = self._node_stats = self._read_node_stats()
        except Exception as exc:
            self._node_stats_error = f"{type(exc).__name__}: {exc}"
            raise
        return stats

    @property
    def node_stats(self) -> NodeStats:
        """The node's other kernel statistics, read once; ``NoData`` when the scrape has no reader."""
        stats = self._node_stats
        if stats is None:
            if self._node_stats_error is not None:
                raise RuntimeError(f"the node stats could not be read: {self._node_stats_error}")
            stats = self.read_node_stats()  # a collector run on its own, outside the runner
        return stats

    @property
    def assets(self) -> AssetReading:
        """The node's assets and allocations, read once per scrape; ``NoData`` when the scrape has no reader."""
        if self._assets is None:
            if self._read_assets is None:
                raise NoData("this scrape has no asset reader")
            self._assets = self._read_assets()
        return self._assets

    @property
    def counters(self) -> Counters:
        if self._counters is None:
            self._counters = self._read_counters()
        return self._counters
