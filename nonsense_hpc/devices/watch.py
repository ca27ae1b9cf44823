"""Live view of metrics and events from a Forwarder (``nonsense-hpc watch``).

:class:`WatchState` folds decoded messages into a table (one row per topic and rank: last
step, values, message count, age) and a short event log, and counts losses from sequence
numbers and malformed messages. :func:`watch` subscribes and re-renders the view in place
with rich's ``Live`` every ``refresh`` seconds.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.errors import WireError

__all__ = ["WatchState", "watch"]


def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, dict):
        text = "  ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    else:
        text = _fmt(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


class WatchState:
    """What the watch view shows, updated one message at a time."""

    def __init__(self, max_events: int = 10) -> None:
        self.rows: dict[tuple[str, Any], dict[str, Any]] = {}
        self.events: collections.deque[str] = collections.deque(maxlen=max_events)
        self.tracker = wire.SequenceTracker()
        self.malformed = 0
        self.started = time.time()

    def update(self, frames: list[Any]) -> wire.Message | None:
        """Decode and record one message; malformed ones are counted and skipped."""
        try:
            msg = wire.decode(frames)
        except WireError:
            self.malformed += 1
            return None
        self.tracker.observe(msg)
        if msg.kind == "event":
            stamp = time.strftime("%H:%M:%S", time.localtime(msg.timestamp))
            self.events.append(f"{stamp} rank {msg.rank} {msg.topic} {_short(msg.data, 80)}")
            return msg
        row = self.rows.setdefault((msg.topic, msg.rank), {"count": 0})
        row["count"] += 1
        row.update(kind=msg.kind, step=msg.step, time=msg.timestamp, job=msg.job_id)
        if msg.arrays:
            row["value"] = ", ".join(f"{k}:{a.dtype}{list(a.shape)}"
                                     for k, a in msg.arrays.items())
        else:
            row["value"] = _short(msg.data)
        return msg

    def render(self) -> Any:
        """A rich renderable: the metrics table, the event log and the counters."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title="nonsense-hpc watch", expand=True)
        for col in ("topic", "rank", "step", "values", "msgs", "age"):
            table.add_column(col, no_wrap=col != "values")
        now = time.time()
        for (topic, rank), row in sorted(self.rows.items(), key=lambda kv: (kv[0][0],
                                                                           str(kv[0][1]))):
            table.add_row(topic, str(rank), str(row["step"]), row["value"], str(row["count"]),
                          f"{now - row['time']:.1f}s")
        t = self.tracker
        footer = Text(f"received {t.received}  lost {t.lost}  restarts {t.restarts}  "
                      f"malformed {self.malformed}  up {now - self.started:.0f}s",
                      style="dim")
        events = Text("\n".join(self.events) or "(no events yet)")
        return Group(table, Text("events", style="bold"), events, footer)


def watch(address: str, topics: tuple[str, ...] = ("",), *, count: int | None = None,
          duration: float | None = None, refresh: float = 1.0,
          curve_dir: str | None = None, console: Any = None) -> WatchState:
    """Subscribe to ``address`` and show a live view, re-rendered in place.

    Runs until ``count`` messages, ``duration`` seconds, or Ctrl-C.

    Args:
        address: a Forwarder's output (or any PUB socket).
        topics: topic prefixes to subscribe to ("" = everything).
        count: stop after this many messages.
        duration: stop after this many seconds.
        refresh: seconds between re-renders.
        curve_dir: CURVE client keys.
        console: a rich Console (default: stdout).

    Returns:
        The final state.
    """
    import zmq
    from rich.live import Live

    from nonsense_hpc.devices import security

    state = WatchState()
    ctx: Any = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    if curve_dir:
        security.configure_client(sub, curve_dir)
    for topic in topics:
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sub.connect(security.normalize_address(address))
    deadline = None if duration is None else time.monotonic() + duration
    seen = 0
    try:
        with Live(state.render(), console=console, refresh_per_second=max(1.0, 1 / refresh),
                  auto_refresh=False) as live:
            next_draw = time.monotonic() + refresh
            while (count is None or seen < count) and (
                    deadline is None or time.monotonic() < deadline):
                if sub.poll(int(refresh * 1000 / 4) + 1):
                    while sub.poll(0) and (count is None or seen < count):
                        state.update(sub.recv_multipart(copy=False))
                        seen += 1
                if time.monotonic() >= next_draw:
                    live.update(state.render(), refresh=True)
                    next_draw = time.monotonic() + refresh
            live.update(state.render(), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(0)
        ctx.term()
    return state
