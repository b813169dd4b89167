"""What every endpoint of the agent shares: the sampler and its thread, the ring buffer of serialized samples, the
profile and eBPF status read at start, the counters of the guards, and the scrape that turns them into metrics.

- A sampler thread takes a Sample every ``interval`` and keeps the last ones in a ring buffer, already serialized to
  JSON: a sample is encoded once, not once per client, so 200 dashboards cost 200 byte copies.
- ``scrape()`` does a fresh read of the raw counters (``Sampler.counters()``), never the rates: Prometheus computes
  rates from ``_total`` counters itself.
- The profile and the eBPF status are read once at start (they describe the machine, not its load).
- The node's assets and allocation ledger (node_assets.py) are read fresh for ``/v1/assets`` and each scrape.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time

from hypermesh.agent import metrics
from hypermesh.agent.config import AgentConfig
from hypermesh.agent.guards import Stats
from hypermesh.agent.node_assets import NodeAssets
from hypermesh.agent.programs import NOT_PROBED, AgentPrograms, EbpfStatus, read_ebpf_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from hypermesh.model import Counters, Sample, SystemProfile
    from hypermesh.sampling.sampler import Sampler

__all__ = ["AgentState", "as_dict"]

log = logging.getLogger("hypermesh.agent")

# A collector that keeps failing is logged again this often (and when its failure changes or ends).
FAILURE_LOG_INTERVAL_S = 600.0


class AgentState:
    """What every endpoint shares: the sampler, its history, the profile, the eBPF status, the stats."""

    def __init__(
        self,
        config: AgentConfig,
        sampler: Sampler,
        version: str,
        profile_reader: Callable[[], SystemProfile] | None = None,
        ebpf_reader: Callable[[], EbpfStatus] | None = None,
        node_assets: NodeAssets | None = None,
    ) -> None:
        self.config = config
        self.sampler = sampler
        self.version = version
        self.started = time.time()
        self.stats = Stats()
        self.samples_taken = 0
        self.sampler_error: str | None = None
        # (Unix time, JSON, sequence number). Streams follow the sequence number, not the time: the wall clock can
        # step back (NTP, a resumed VM), and a stream waiting for a later time would stall until the clock caught up.
        self._history: collections.deque[tuple[float, bytes, int]] = collections.deque(maxlen=config.history_samples)
        self._sequence = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set to end the sampler's current stream: on stop, and when a live config change sets a new interval.
        self._restart = threading.Event()
        # Live config changes (PUT /v1/config): how many were applied, and samples taken since the last one.
        self.config_generation = 0
        self.samples_since_config = 0
        # Called with the new config after a live change (the server re-registers labels in etcd).
        self.config_listeners: list[Callable[[AgentConfig], None]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_sample: asyncio.Event | None = None
        # Requests waiting in next_sample(): the sampler thread wakes the event loop only for them. At 100 Hz a wake
        # per sample with nobody waiting cost a loop iteration and two thread switches each time.
        self._waiters = 0
        self._profile_reader = profile_reader
        self._ebpf_reader = ebpf_reader or read_ebpf_status
        self.profile: SystemProfile | None = None
        self.profile_json = b"null"
        self.profile_error: str | None = None
        self.ebpf_status = NOT_PROBED
        self.programs = AgentPrograms(list(config.ebpf_programs))
        # The node's assets and allocation ledger (the ledger is opened in start()).
        self.node_assets = node_assets if node_assets is not None else NodeAssets(config.state_dir, config.root)
        # Set by the server: true once it is shutting down (streams end then).
        self.closing: Callable[[], bool] = lambda: False
        self.collectors = metrics.default_collectors(version)
        self.writer = metrics.TextWriter()
        self._failures_logged: dict[str, tuple[str, float]] = {}
        self._scrape: asyncio.Future[tuple[list[metrics.Family], list[str]]] | None = None

    # ------------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Read the profile and eBPF status, then start sampling (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._new_sample = asyncio.Event()
        reader = self._profile_reader
        if reader is None:
            from hypermesh import profile

            reader = profile
        try:
            self.profile = reader()
            self.profile_json = json.dumps(as_dict(self.profile)).encode()
        except Exception as exc:  # the agent still serves samples and metrics without a profile
            self.profile_error = f"{type(exc).__name__}: {exc}"
            log.warning("profile unavailable: %s", self.profile_error)
        self.ebpf_status = self._ebpf_reader()
        self.programs.start()
        self.node_assets.open()
        self._thread = threading.Thread(target=self._run_sampler, name="hypermesh-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._restart.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.interval_s + 2.0)
        self.programs.close()
        self.node_assets.close()
        self.sampler.close()

    def _run_sampler(self) -> None:
        while not self._stop.is_set():
            restart = self._restart
            try:
                for sample in self.sampler.stream(self.config.interval_s, stop=restart):
                    self._record(sample)
                    if self._stop.is_set():
                        return
                    if restart.is_set():
                        break
            except Exception as exc:  # keep sampling: a transient read error must not kill the agent
                self.sampler_error = f"{type(exc).__name__}: {exc}"
                log.warning("sampler error (retrying): %s", self.sampler_error)
                self._stop.wait(max(self.config.interval_s, 1.0))

    def apply_config(self, config: AgentConfig) -> None:
        """A live change (agent/live_config.py): the new interval, history and eBPF programs take effect now; blocks
        while programs load or unload (call it off the event loop)."""
        old = self.config
        with self._lock:
            self.config = config
            if config.history_samples != self._history.maxlen:
                self._history = collections.deque(self._history, maxlen=config.history_samples)
            self.config_generation += 1
            self.samples_since_config = 0
        if config.interval_s != old.interval_s:
            previous, self._restart = self._restart, threading.Event()
            previous.set()  # the sampler ends its stream and starts one at the new interval
        if tuple(config.ebpf_programs) != tuple(old.ebpf_programs):
            retired, self.programs = self.programs, AgentPrograms(list(config.ebpf_programs))
            retired.close()
            self.programs.start()
        for listener in self.config_listeners:
            listener(config)

    def _record(self, sample: Sample) -> None:
        data = json.dumps(as_dict(sample), separators=(",", ":")).encode()
        with self._lock:
            self._sequence += 1
            self._history.append((sample.timestamp, data, self._sequence))
            self.samples_taken += 1
            self.samples_since_config += 1
        self.sampler_error = None
        loop = self._loop
        # A waiter counts itself before it looks at the history (next_sample): either it is counted here, or it
        # sees the sample just appended. The loop may close between the check and the call (shutdown): nothing to
        # wake then.
        if self._waiters and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event = self._new_sample
        self._new_sample = asyncio.Event()
        if event is not None:
            event.set()

    # --------------------------------------------------------------------------------- reading

    def latest(self) -> tuple[float, bytes, int] | None:
        with self._lock:
            return self._history[-1] if self._history else None

    def since(self, since: float, limit: int, after: int = 0) -> tuple[list[bytes], int]:
        """Samples taken after Unix time ``since`` and numbered after ``after`` (at most the last ``limit``), and
        the latest sequence number.

        ``after`` follows the agent's own count, which the wall clock cannot disturb: a poller asking since=its last
        timestamp got nothing after the agent's clock stepped back, until the clock caught up.
        """
        with self._lock:
            items = list(self._history)
            latest = self._sequence
        newer = [data for ts, data, sequence in items if sequence > after and ts > since]
        return newer[-limit:], latest

    async def next_sample(self, after: int, timeout: float) -> tuple[float, bytes, int] | None:
        """The first sample after sequence number ``after``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        self._waiters += 1  # before looking: see _record
        try:
            while True:
                latest = self.latest()
                if latest is not None and latest[2] > after:
                    return latest
                remaining = deadline - time.monotonic()
                event = self._new_sample
                if remaining <= 0 or event is None:
                    return None
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return None
        finally:
            self._waiters -= 1

    def counters(self) -> Counters:
        return self.sampler.counters()

    def scrape(self) -> tuple[list[metrics.Family], list[str]]:
        stats = self.stats
        scrape = metrics.Scrape(
            self.counters,
            self.profile,
            self.ebpf_status,
            stats.snapshot(self.samples_taken),
            self.programs.readings,
            self.sampler.node_stats,
            self.sampler.unreadable_sources,
            self.node_assets.reading,
        )
        return metrics.collect(self.collectors, scrape)

    def report_failures(self, failures: list[str]) -> None:
        """Log each collector's failure when it starts or changes, and again every FAILURE_LOG_INTERVAL_S while it
        lasts; and when it ends. Prometheus scrapes every few seconds: a line per scrape would drown the log."""
        now = time.monotonic()
        failing = {}
        for failure in failures:
            area = failure.split(":", 1)[0]
            failing[area] = failure
            logged = self._failures_logged.get(area)
            if logged is None or logged[0] != failure or now - logged[1] >= FAILURE_LOG_INTERVAL_S:
                log.warning("collector failed: %s", failure)
                self._failures_logged[area] = (failure, now)
        for area in [a for a in self._failures_logged if a not in failing]:
            del self._failures_logged[area]
            log.warning("collector %s works again", area)

    async def scrape_shared(self) -> tuple[list[metrics.Family], list[str]]:
        """``scrape()`` in a worker thread, one at a time: scrapes that arrive while one runs share its result.

        A scrape can take a while by design (statvfs of a hung network mount waits up to 1 s per call); on the event
        loop it held up every endpoint, /healthz included, and no request timeout could interrupt it. Here the loop
        stays free and the guard's timeout answers 503; the thread finishes on its own and later scrapes join it
        instead of piling up more threads behind a stuck read.

        Where nothing in it can wait on anything but the kernel (no network or FUSE filesystem as of the last
        scrape, none running), the scrape runs on the loop itself: procfs, sysfs and bpf() answer in microseconds,
        and the hop to a thread and back costs 0.25-0.5 ms, a tenth of the whole scrape.
        """
        running = self._scrape
        if running is None and not self.sampler.node_stats_may_block():
            return self.scrape()
        if running is None:
            running = asyncio.ensure_future(asyncio.to_thread(self.scrape))
            self._scrape = running

            def finished(future: asyncio.Future[tuple[list[metrics.Family], list[str]]]) -> None:
                if self._scrape is future:
                    self._scrape = None
                if not future.cancelled():
                    future.exception()  # retrieved here, raised to the waiters: no "never retrieved" warning

            running.add_done_callback(finished)
        # shield: a waiter that times out must not cancel the scrape the others are waiting for.
        return await asyncio.shield(running)

    def assets(self) -> dict[str, Any]:
        """``/v1/assets``: the snapshot ``hypermesh assets --json`` prints for the same root and state directory."""
        return self.node_assets.snapshot().to_dict()


def as_dict(record: object) -> Any:
    """A model record as JSON builtins (``@record`` adds ``to_dict`` at run time, unseen by mypy)."""
    return record.to_dict()  # type: ignore[attr-defined,unused-ignore]
