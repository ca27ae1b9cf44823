"""The trace model: events from every rank, merged, and read as messages and notes.

A :class:`TraceEvent` is one step of one actor (a rank, a worker, a server, a device):
the Tree's :class:`~nonsense_hpc.comm.recorder.Recorder` events become trace events with
actor ``"rank N"``; other code (the parameter server, a device client) records named
actors directly with :class:`Log`. Times are wall-clock seconds, so events of processes on
one machine line up; across machines they are as good as the clocks' agreement.

:meth:`Trace.sequence` reads the events as a sequence diagram: a ``send`` of A to B is
paired with B's matching ``recv`` from A (k-th with k-th, per operation), a ``read``
(B reads A's memory directly) is a message from A to B, and every other phase
(``reduce``, ``wait``, ``copy``, ...) is a note over its actor.

Example:
    >>> log = Log("worker 0")
    >>> log.record("push", "send", peer="server", nbytes=64, start=1.0, end=1.1)
    >>> trace = Trace(log.events)
    >>> [m.label for m in trace.sequence() if isinstance(m, Message)]
    ['push 64 B']
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["LOCAL_PHASES", "Log", "Message", "Note", "Trace", "TraceEvent", "format_bytes"]

#: Phases drawn as messages between two actors; any other phase is a local note.
MESSAGE_PHASES = ("send", "recv", "read")
LOCAL_PHASES = ("reduce", "wait", "copy", "compute", "apply")


def format_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - loop always returns


def format_seconds(s: float) -> str:
    """``0.0012`` -> ``"1.2 ms"``."""
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def _actor(value: Any) -> str | None:
    """Recorder ranks are ints (peer -1 means none); names pass through."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"actor must be a rank or a name, got {value!r}")
    if isinstance(value, int):
        return None if value < 0 else f"rank {value}"
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class TraceEvent:
    """One step of one actor.

    Attributes:
        op: the operation ("allreduce", "push", ...).
        phase: "send", "recv", "read", or a local phase ("reduce", "wait", ...).
        actor: who did it ("rank 2", "server").
        peer: the other actor, or None.
        nbytes: bytes moved or processed.
        start: wall-clock start, seconds since the epoch.
        end: wall-clock end.
    """

    op: str
    phase: str
    actor: str
    peer: str | None
    nbytes: int
    start: float
    end: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraceEvent:
        """From a recorder dict (``rank``/``peer`` ints) or a trace dict (``actor``).

        Raises:
            ConfigError: a field is missing or has the wrong type.
        """
        try:
            actor = _actor(d["actor"] if "actor" in d else d["rank"])
            if actor is None:
                raise ConfigError(f"trace event has no actor: {dict(d)!r}")
            start, end = float(d["start"]), float(d["end"])
            return cls(op=str(d["op"]), phase=str(d["phase"]), actor=actor,
                       peer=_actor(d.get("peer")), nbytes=int(d.get("nbytes") or 0),
                       start=start, end=max(start, end))
        except KeyError as exc:
            raise ConfigError(f"trace event lacks field {exc.args[0]!r}: {dict(d)!r}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad trace event {dict(d)!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class Message:
    """An arrow of the sequence diagram: ``sender`` sent ``nbytes`` to ``receiver``."""

    op: str
    sender: str
    receiver: str
    nbytes: int
    sent: float
    received: float
    kind: str  # "send" (paired or one-sided) or "read"

    @property
    def label(self) -> str:
        """Text on the arrow."""
        verb = self.op if self.kind == "send" else f"{self.op} read"
        return f"{verb} {format_bytes(self.nbytes)}"

    @property
    def time(self) -> float:
        """Where it sorts in the diagram."""
        return self.sent


@dataclass(frozen=True)
class Note:
    """A local step drawn as a note over its actor."""

    op: str
    phase: str
    actor: str
    nbytes: int
    start: float
    end: float

    @property
    def label(self) -> str:
        """Text of the note."""
        size = f" {format_bytes(self.nbytes)}" if self.nbytes else ""
        return f"{self.phase}{size} ({format_seconds(self.end - self.start)})"

    @property
    def time(self) -> float:
        """Where it sorts in the diagram."""
        return self.start


class Trace:
    """Events of many actors, sorted by start time.

    Args:
        events: trace events, or dicts as written by ``Recorder.to_dicts()`` /
            :meth:`TraceEvent.to_dict`.
    """

    def __init__(self, events: Iterable[TraceEvent | Mapping[str, Any]] = ()) -> None:
        items = [e if isinstance(e, TraceEvent) else TraceEvent.from_dict(e) for e in events]
        self.events: list[TraceEvent] = sorted(items, key=lambda e: (e.start, e.end))

    def __len__(self) -> int:
        return len(self.events)

    def __add__(self, other: Trace) -> Trace:
        return Trace(self.events + other.events)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Trace:
        """Read JSON-lines files (``Recorder.dump`` or :meth:`dump` output) and merge them.

        Raises:
            ConfigError: a file is missing or a line is not a trace event.
        """
        events: list[TraceEvent] = []
        for path in paths:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"trace file not found: {p}")
            for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{p}:{lineno}: not JSON: {exc}") from None
                if not isinstance(d, dict):
                    raise ConfigError(f"{p}:{lineno}: not a JSON object")
                try:
                    events.append(TraceEvent.from_dict(d))
                except ConfigError as exc:
                    raise ConfigError(f"{p}:{lineno}: {exc}") from None
        return cls(events)

    def dump(self, path: str | Path) -> None:
        """Write the events as JSON lines (readable by :meth:`load`)."""
        with open(path, "w", encoding="utf-8") as fh:
            for e in self.events:
                fh.write(json.dumps(e.to_dict()) + "\n")

    @property
    def actors(self) -> list[str]:
        """Every actor and peer, ranks first in rank order, then names as first seen."""
        seen: dict[str, None] = {}
        for e in self.events:
            seen.setdefault(e.actor)
            if e.peer is not None:
                seen.setdefault(e.peer)
        ranks = sorted((a for a in seen if _rank_of(a) is not None),
                       key=lambda a: _rank_of(a) or 0)
        return ranks + [a for a in seen if _rank_of(a) is None]

    @property
    def start(self) -> float:
        """Earliest start (0 for an empty trace)."""
        return min((e.start for e in self.events), default=0.0)

    @property
    def end(self) -> float:
        """Latest end (0 for an empty trace)."""
        return max((e.end for e in self.events), default=0.0)

    def window(self, start: float, end: float) -> Trace:
        """The events that start within ``[start, end]``."""
        return Trace(e for e in self.events if start <= e.start <= end)

    def sequence(self, phases: Iterable[str] | None = None) -> list[Message | Note]:
        """Messages and notes in diagram order.

        Args:
            phases: local phases to keep as notes (default: all; ``()`` drops notes).
        """
        keep = None if phases is None else set(phases)
        sends: dict[tuple[str, str, str], list[TraceEvent]] = {}
        recvs: dict[tuple[str, str, str], list[TraceEvent]] = {}
        items: list[Message | Note] = []
        for e in self.events:
            if e.phase == "send" and e.peer is not None:
                sends.setdefault((e.actor, e.peer, e.op), []).append(e)
            elif e.phase == "recv" and e.peer is not None:
                recvs.setdefault((e.peer, e.actor, e.op), []).append(e)
            elif e.phase == "read" and e.peer is not None:
                items.append(Message(e.op, e.peer, e.actor, e.nbytes, e.start, e.end, "read"))
            elif keep is None or e.phase in keep:
                items.append(Note(e.op, e.phase, e.actor, e.nbytes, e.start, e.end))
        for key in sends.keys() | recvs.keys():
            out, into = sends.get(key, []), recvs.get(key, [])
            for i in range(max(len(out), len(into))):
                s = out[i] if i < len(out) else None
                r = into[i] if i < len(into) else None
                sent = s.start if s is not None else r.start  # type: ignore[union-attr]
                received = r.end if r is not None else s.end  # type: ignore[union-attr]
                nbytes = s.nbytes if s is not None else r.nbytes  # type: ignore[union-attr]
                items.append(Message(key[2], key[0], key[1], nbytes, sent, received, "send"))
        items.sort(key=lambda m: m.time)
        return items

    def summary(self) -> dict[str, dict[str, float]]:
        """Per actor: events, bytes sent, bytes received, busy seconds."""
        out: dict[str, dict[str, float]] = {
            a: {"events": 0, "sent": 0, "received": 0, "busy": 0.0} for a in self.actors}
        for e in self.events:
            row = out[e.actor]
            row["events"] += 1
            row["busy"] += e.end - e.start
            if e.phase == "send":
                row["sent"] += e.nbytes
            elif e.phase in ("recv", "read"):
                row["received"] += e.nbytes
        return out


def _rank_of(actor: str) -> int | None:
    if actor.startswith("rank ") and actor[5:].isdigit():
        return int(actor[5:])
    return None


class Log:
    """A recorder for named actors (workers, servers, devices), in wall-clock time.

    Args:
        actor: who records ("worker 0", "server").

    Example:
        >>> log = Log("server")
        >>> with log.span("apply", "apply", nbytes=128):
        ...     pass
        >>> log.events[0].phase
        'apply'
    """

    def __init__(self, actor: str) -> None:
        if not actor:
            raise ConfigError("a Log needs an actor name")
        self.actor = actor
        self.events: list[TraceEvent] = []

    def record(self, op: str, phase: str, *, peer: str | None = None, nbytes: int = 0,
               start: float, end: float) -> None:
        """Add one event (times in ``time.time()`` seconds)."""
        self.events.append(TraceEvent(op, phase, self.actor, peer, nbytes, start,
                                      max(start, end)))

    def span(self, op: str, phase: str, *, peer: str | None = None,
             nbytes: int = 0) -> _Span:
        """A context manager that records the time spent inside it."""
        return _Span(self, op, phase, peer, nbytes)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Events as dicts (for JSON lines or a gather)."""
        return [e.to_dict() for e in self.events]


class _Span:
    def __init__(self, log: Log, op: str, phase: str, peer: str | None, nbytes: int) -> None:
        self.log, self.op, self.phase, self.peer, self.nbytes = log, op, phase, peer, nbytes
        self.t0 = 0.0

    def __enter__(self) -> _Span:
        self.t0 = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.record(self.op, self.phase, peer=self.peer, nbytes=self.nbytes,
                        start=self.t0, end=time.time())
