"""An off-by-default recorder of every send, receive and reduction step.

The Tree calls :meth:`Recorder.record` only when a recorder is attached, so tracing costs
one ``is None`` test per step when off. The observability tools render the events as
sequence diagrams and Chrome traces.

Example:
    >>> rec = Recorder(rank=0)
    >>> rec.record("allreduce", "reduce", peer=1, nbytes=64, start=0.0, end=1e-6)
    >>> rec.events[0].phase
    'reduce'
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Event", "Recorder"]


@dataclass(frozen=True)
class Event:
    """One step of a collective.

    Attributes:
        op: the collective ("allreduce", "broadcast", ...).
        phase: the step ("send", "recv", "read", "reduce", "wait", "copy").
        rank: the rank that did it (world rank of the Tree's communicator).
        peer: the other rank involved, or -1.
        nbytes: bytes moved or reduced.
        start: start time, seconds (time.perf_counter() clock).
        end: end time, seconds.
    """

    op: str
    phase: str
    rank: int
    peer: int
    nbytes: int
    start: float
    end: float


class Recorder:
    """Collects :class:`Event` objects for one rank.

    Args:
        rank: the rank the events belong to.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.events: list[Event] = []
        # perf_counter is process-local; keep a wall-clock anchor to align ranks.
        self.anchor_wall = time.time()
        self.anchor_perf = time.perf_counter()

    def record(self, op: str, phase: str, peer: int, nbytes: int, start: float,
               end: float) -> None:
        """Add one event."""
        self.events.append(Event(op, phase, self.rank, peer, nbytes, start, end))

    def clear(self) -> None:
        """Forget all events."""
        self.events.clear()

    def to_dicts(self) -> list[dict[str, object]]:
        """Events as dicts, with times converted to wall-clock seconds."""
        shift = self.anchor_wall - self.anchor_perf
        out = []
        for e in self.events:
            d = asdict(e)
            d["start"] = e.start + shift
            d["end"] = e.end + shift
            out.append(d)
        return out

    def dump(self, path: str | Path) -> None:
        """Write the events as JSON lines."""
        with open(path, "w", encoding="utf-8") as fh:
            for d in self.to_dicts():
                fh.write(json.dumps(d) + "\n")
