"""What the dashboard shows, folded from wire messages into one JSON-ready snapshot.

Messages are read by what the rest of the package publishes (docs/wire.md):

* ``kind="metric"`` (``Publisher.metric``): every number in ``data`` becomes a series
  ``<topic suffix>/<key>`` (``metrics.train`` + ``{"loss": 0.3}`` -> ``train/loss``),
  plotted against ``step``; series whose key contains ``loss`` go to the loss chart,
  ``acc`` to the accuracy chart. Steps per second come from how fast ``step`` grows.
* ``kind="heartbeat"`` (:func:`nonsense_hpc.dashboard.start_heartbeat`): per-rank
  liveness and memory (``data.rss``, bytes). Any message carrying a rank also counts as
  a sign of life for that rank.
* topics ``supervise.*`` (supervisor events) and ``events.*`` (``Publisher.event``): the
  event log, with crashes, heartbeat timeouts and give-ups marked as errors.

Example:
    >>> from nonsense_hpc import wire
    >>> st = DashboardState()
    >>> st.add(wire.decode(wire.encode("metrics.train", {"loss": 0.5}, kind="metric",
    ...                                rank=0, step=1)))
    >>> st.snapshot()["series"]["train/loss"]["points"][0][:2]
    [1, 0.5]
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from nonsense_hpc import wire

__all__ = ["DashboardState", "group_of"]

_ERROR_KINDS = {"heartbeat_timeout", "give_up"}
_RATE_WINDOW = 10.0


def group_of(key: str) -> str:
    """Chart a series belongs to: ``loss``, ``accuracy``, ``speed`` or ``other``."""
    low = key.lower()
    if "loss" in low:
        return "loss"
    if "acc" in low:
        return "accuracy"
    if "per_s" in low or "throughput" in low:
        return "speed"
    return "other"


class DashboardState:
    """Thread-safe fold of wire messages; :meth:`snapshot` is what the page draws.

    Args:
        max_points: points kept per series (older ones are thinned by half).
        max_events: events kept in the log.
    """

    def __init__(self, max_points: int = 2000, max_events: int = 200) -> None:
        self.max_points = max_points
        self.started = time.time()
        self.version = 0
        self.messages = 0
        self.malformed = 0
        self.lost = 0
        self.changed = threading.Condition()
        self._tracker = wire.SequenceTracker()
        self._series: dict[str, dict[str, Any]] = {}
        self._ranks: dict[str, dict[str, Any]] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._progress: deque[tuple[float, float]] = deque()
        self._rate_history: deque[list[float]] = deque(maxlen=max_points)
        self._last_step: dict[tuple[Any, Any], float] = {}
        self._jobs: set[str] = set()

    # ------------------------------------------------------------------ input
    def add(self, msg: wire.Message) -> None:
        """Fold one decoded message in and wake the streams."""
        h = msg.header
        with self.changed:
            self.messages += 1
            known = msg.source in self._tracker.last
            gap = self._tracker.observe(msg)
            if known:  # messages sent before we connected are not lost
                self.lost += gap
            if h.get("job_id"):
                self._jobs.add(str(h["job_id"]))
            ts = float(h.get("timestamp") or time.time())
            rank = h.get("rank")
            if rank is not None:
                self._alive(str(rank), rank, h, ts)
            kind = h.get("kind")
            topic = msg.topic
            if topic.startswith(("supervise.", "events.")) or kind == "event":
                self._event(topic, msg.data, ts)
            elif kind == "heartbeat" or topic.startswith("heartbeat."):
                self._heartbeat(msg.data, h, ts)
            elif kind == "metric":
                self._metric(topic, msg.data, h, ts)
            self.version += 1
            self.changed.notify_all()

    def add_malformed(self) -> None:
        """Count a message that did not decode."""
        with self.changed:
            self.malformed += 1
            self.version += 1
            self.changed.notify_all()

    def _alive(self, key: str, rank: Any, h: dict[str, Any], ts: float) -> dict[str, Any]:
        row = self._ranks.setdefault(key, {"rank": rank, "source": h.get("source"),
                                           "job_id": h.get("job_id"), "beats": 0,
                                           "rss": None, "memory": [], "interval": None})
        row["last_seen"] = max(ts, row.get("last_seen", 0.0))
        return row

    def _heartbeat(self, data: Any, h: dict[str, Any], ts: float) -> None:
        d = data if isinstance(data, dict) else {}
        rank = h.get("rank")
        row = self._alive(str(rank) if rank is not None else str(h.get("source")),
                          rank, h, ts)
        row["beats"] += 1
        for key in ("host", "pid", "interval", "rss", "cpu", "gpu_memory"):
            if key in d:
                row[key] = d[key]
        if isinstance(d.get("rss"), int | float):
            row["memory"].append([ts, d["rss"]])
            if len(row["memory"]) > 300:
                del row["memory"][: len(row["memory"]) - 300]

    def _event(self, topic: str, data: Any, ts: float) -> None:
        d = data if isinstance(data, dict) else {"data": data}
        kind = str(d.get("kind") or d.get("event") or topic.rsplit(".", 1)[-1])
        level = "info"
        if kind in _ERROR_KINDS or (kind == "exit" and d.get("reason") == "crash"):
            level = "error"
        elif kind in ("restart", "exit"):
            level = "warn"
        if topic.startswith("supervise."):
            from nonsense_hpc.supervise.events import Event

            try:
                text = str(Event.from_dict(d))
            except TypeError:
                text = f"{topic} {d}"
        else:
            fields = " ".join(f"{k}={v}" for k, v in d.items() if k != "event")
            text = f"{kind} {fields}".strip()
        self._events.append({"time": float(d.get("time") or ts), "topic": topic,
                             "kind": kind, "level": level, "text": text})

    def _metric(self, topic: str, data: Any, h: dict[str, Any], ts: float) -> None:
        step = h.get("step")
        name = topic.split(".", 1)[1] if "." in topic else topic
        values = data if isinstance(data, dict) else {name: data}
        rank = h.get("rank")
        x = step if step is not None else round(ts - self.started, 3)
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            label = key if key == name else f"{name}/{key}"
            if rank not in (None, 0):
                label += f"@r{rank}"
            s = self._series.setdefault(label, {"group": group_of(label), "points": []})
            v = float(value)
            s["points"].append([x, v if math.isfinite(v) else None, ts])
            if len(s["points"]) > self.max_points:
                s["points"] = s["points"][::2]
        if step is not None:
            self._steps(h, float(step), ts)

    def _steps(self, h: dict[str, Any], step: float, ts: float) -> None:
        key = (h.get("job_id"), h.get("rank"))
        if step <= self._last_step.get(key, -math.inf):
            return
        self._last_step[key] = step
        # Progress of the job: the furthest step any publisher reached, over time.
        best = max(self._last_step.values())
        self._progress.append((ts, best))
        while self._progress and self._progress[0][0] < ts - _RATE_WINDOW:
            self._progress.popleft()
        rate = self.steps_per_s()
        if rate is not None:
            self._rate_history.append([ts, rate])

    def steps_per_s(self) -> float | None:
        """Steps per second over the last 10 s of progress (None before two points)."""
        if len(self._progress) < 2:
            return None
        (t0, s0), (t1, s1) = self._progress[0], self._progress[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    # ----------------------------------------------------------------- output
    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws, JSON-ready."""
        with self.changed:
            now = time.time()
            ranks = []
            for key, row in sorted(self._ranks.items(),
                                   key=lambda kv: (kv[1]["rank"] is None, kv[1]["rank"]
                                                   if kv[1]["rank"] is not None else kv[0])):
                item = {k: v for k, v in row.items() if k != "memory"}
                item["key"] = key
                item["age"] = now - row.get("last_seen", now)
                item["memory"] = list(row["memory"])
                ranks.append(item)
            last_steps = list(self._last_step.values())
            return {
                "version": self.version, "now": now, "started": self.started,
                "messages": self.messages, "malformed": self.malformed, "lost": self.lost,
                "jobs": sorted(self._jobs),
                "step": max(last_steps) if last_steps else None,
                "steps_per_s": self.steps_per_s(),
                "rate_history": list(self._rate_history),
                "series": {k: {"group": v["group"], "points": list(v["points"])}
                           for k, v in self._series.items()},
                "ranks": ranks,
                "events": list(self._events),
            }

    def wait_change(self, version: int, timeout: float) -> int:
        """Block until :attr:`version` differs from ``version`` or ``timeout`` passes."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version
