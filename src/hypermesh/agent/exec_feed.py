"""The agent's execsnoop: a thread drains the program's ring buffer into counts by command, the recent events, and
a bounded queue per ``/v1/events`` client.

The ring buffer is read once, here, whoever listens: each event is encoded to JSON once and handed to every
subscriber's queue. A client that does not keep up loses the events its queue has no room for (counted, and told
in its next event's ``dropped``), never the agent's memory or another client's events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time

from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from hypermesh.ebpf.programs.execsnoop import ExecEvent, ExecsnoopProgram

__all__ = ["ExecFeed", "ExecSummary", "Subscriber"]

log = logging.getLogger("hypermesh.agent")

RECENT = 50  # events kept for /v1/ebpf and the page's "recent execs"
QUEUE = 256  # events waiting per /v1/events client
MAX_COMMS = 1000  # distinct command names counted; the rest count as OTHER (a label per name in /metrics)
OTHER = "(other)"
POLL_S = 0.2  # how long one ring-buffer poll waits: the thread's stop latency


@record
class RecentExec(Record):
    timestamp: float  # Unix time the agent read the event (within POLL_S of the exec)
    pid: int
    ppid: int
    uid: int
    comm: str
    filename: str


@record
class ExecSummary(Record):
    total: int
    by_comm: Mapping[str, int]
    lost: int  # dropped by the kernel: the ring buffer was full
    recent: tuple[RecentExec, ...]  # newest last


class Subscriber:
    """One /v1/events client: a bounded queue filled from the feed's thread, read on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)
        self.dropped = 0

    def offer(self, data: bytes) -> None:  # on the loop
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1


class ExecFeed:
    """An attached ExecsnoopProgram and the thread that reads it; ``close()`` stops the thread, then the program."""

    def __init__(self, program: ExecsnoopProgram) -> None:
        self.program = program
        self._lock = threading.Lock()
        self._by_comm: dict[str, int] = {}
        self._total = 0
        self._recent: collections.deque[RecentExec] = collections.deque(maxlen=RECENT)
        self._subscribers: set[Subscriber] = set()
        self._stop = threading.Event()
        self.error: str | None = None
        self._lost = 0
        self._thread = threading.Thread(target=self._run, name="hypermesh-execsnoop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self.program.poll(POLL_S)
            except Exception as exc:  # the program closed under us, or the ring broke: say so in read()
                if not self._stop.is_set():
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning("execsnoop stopped reading: %s", self.error)
                return
            if events:
                self._take(events, time.time())
            # Read here, not in read(): the program's lock is held through each poll (up to POLL_S), and read()
            # runs in a scrape, on the event loop.
            try:
                self._lost = self.program.lost()
            except Exception as exc:
                if not self._stop.is_set():
                    self.error = f"{type(exc).__name__}: {exc}"
                return

    def _take(self, events: list[ExecEvent], now: float) -> None:
        encoded = []
        with self._lock:
            for event in events:
                comm = event.comm if event.comm in self._by_comm or len(self._by_comm) < MAX_COMMS else OTHER
                self._by_comm[comm] = self._by_comm.get(comm, 0) + 1
                self._total += 1
                recent = RecentExec(
                    timestamp=now,
                    pid=event.pid,
                    ppid=event.ppid,
                    uid=event.uid,
                    comm=event.comm,
                    filename=event.filename,
                )
                self._recent.append(recent)
                if self._subscribers:
                    encoded.append(json.dumps(recent.to_dict(), separators=(",", ":")).encode())
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            for data in encoded:
                with contextlib.suppress(RuntimeError):  # its loop closed: the server is shutting down
                    subscriber.loop.call_soon_threadsafe(subscriber.offer, data)

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscriber:
        subscriber = Subscriber(loop)
        with self._lock:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def read(self) -> ExecSummary:
        if self.error is not None:
            raise RuntimeError(f"execsnoop stopped reading: {self.error}")
        with self._lock:
            return ExecSummary(
                total=self._total, by_comm=dict(self._by_comm), lost=self._lost, recent=tuple(self._recent)
            )

    def close(self) -> object:
        self._stop.set()
        self._thread.join(timeout=POLL_S * 10)
        return self.program.close()
