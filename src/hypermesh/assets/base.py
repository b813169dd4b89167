"""The adapter protocol and what every adapter reads from: one Sampler reading and the node's roots.

An adapter answers one question, "what assets of my kind are there now": ``read(ctx)`` returns one Reading per
asset. Health bookkeeping (since when), allocation arithmetic and error isolation are the inventory's, so an
adapter is a list of what it reports, nothing more.
"""

from __future__ import annotations

from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from hypermesh.model import Sample

    class Adapter(Protocol):
        kind: str

        def read(self, ctx: Context) -> list[Reading]: ...

        def close(self) -> None: ...


__all__ = ["Context", "Reading"]


@record
class Reading(Record):
    """One asset as its adapter sees it now; ``problem`` (with ``failed``) makes it degraded or failed."""

    id: str
    unit: str
    capacity: float | None
    usage: float | None
    details: dict[str, Any]
    problem: str | None = None
    failed: bool = False


class Context:
    """What one snapshot reads from. ``sample`` is None when the Sampler failed (its reason in ``sample_error``):
    adapters that need it fail with that reason, the others read on."""

    __slots__ = ("proc", "sample", "sample_error", "sys")

    def __init__(self, sample: Sample | None, sample_error: str | None, proc: str, sys: str) -> None:
        self.sample = sample
        self.sample_error = sample_error
        self.proc = proc
        self.sys = sys

    def need_sample(self) -> Sample:
        if self.sample is None:
            raise RuntimeError(f"no sample: {self.sample_error}")
        return self.sample
