"""Supervisor events: what happened to which child, as plain data.

Kinds: ``start`` (the supervisor is up), ``spawn`` (a child process started), ``exit``
(a child ended: exit ``status`` or ``signal``), ``heartbeat_timeout`` (a child fell
silent and is being killed), ``restart`` (the strategy restarted ``restarted``, in
order), ``give_up`` (restart intensity exceeded: the supervisor stops its children and
fails upward) and ``stop`` (the supervisor stopped).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EVENT_KINDS", "Event"]

EVENT_KINDS = ("start", "spawn", "exit", "heartbeat_timeout", "restart", "give_up", "stop")


@dataclass(frozen=True)
class Event:
    """One supervisor event.

    Attributes:
        kind: one of :data:`EVENT_KINDS`.
        supervisor: name of the supervisor that saw it.
        child: the child's id (``None`` for supervisor-wide events).
        pid: the child's pid (spawn, exit, heartbeat_timeout).
        status: exit status (exit), ``None`` when killed by a signal.
        signal: name of the killing signal (exit), e.g. ``"SIGKILL"``.
        reason: ``"crash"`` (an exit the supervisor did not ask for), ``"shutdown"`` (it
            stopped the child), ``"heartbeat"`` or ``"start_failed"``; for give_up and
            stop, a human sentence.
        restarted: ids restarted in order (restart).
        time: ``time.time()`` when the supervisor saw it.
    """

    kind: str
    supervisor: str
    child: str | None = None
    pid: int | None = None
    status: int | None = None
    signal: str | None = None
    reason: str | None = None
    restarted: tuple[str, ...] = ()
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (``restarted`` as a list)."""
        data = asdict(self)
        data["restarted"] = list(self.restarted)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = cls.__dataclass_fields__
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["restarted"] = tuple(kwargs.get("restarted", ()))
        return cls(**kwargs)

    @property
    def topic(self) -> str:
        """ZeroMQ topic: ``supervise.<supervisor>.<kind>``."""
        return f"supervise.{self.supervisor}.{self.kind}"

    def __str__(self) -> str:
        parts = [f"[{self.supervisor}] {self.kind}"]
        if self.child is not None:
            parts.append(self.child)
        if self.pid is not None:
            parts.append(f"pid={self.pid}")
        if self.signal is not None:
            parts.append(f"signal={self.signal}")
        elif self.status is not None:
            parts.append(f"status={self.status}")
        if self.reason:
            parts.append(f"({self.reason})")
        if self.restarted:
            parts.append("restarted=" + ",".join(self.restarted))
        return " ".join(parts)
