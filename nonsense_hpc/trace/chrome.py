"""Chrome trace JSON (Perfetto, chrome://tracing): one track per rank, flows for messages.

The format is the Trace Event Format: every event becomes a complete event (``"ph":
"X"``) on its actor's track (one process per actor, named ``rank N`` / ``server``...,
sorted by rank), and every paired send/receive becomes a flow arrow (``"s"`` on the
sender's track, ``"f"`` on the receiver's) so Perfetto draws who waited on whom, as in
Horovod's timeline. Open the file at https://ui.perfetto.dev or chrome://tracing.

Example:
    >>> from nonsense_hpc.trace.model import Trace
    >>> t = Trace([{"op": "allreduce", "phase": "send", "rank": 0, "peer": 1,
    ...             "nbytes": 8, "start": 0.0, "end": 0.1}])
    >>> doc = to_chrome(t)
    >>> [e["ph"] for e in doc["traceEvents"] if e["ph"] == "X"]
    ['X']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nonsense_hpc.trace.model import Message, Trace

__all__ = ["to_chrome", "write_chrome"]


def to_chrome(trace: Trace) -> dict[str, Any]:
    """The trace as a Chrome trace document (a JSON-ready dict).

    Times are microseconds since the first event; ``otherData.start_unix`` keeps the
    wall-clock origin.
    """
    t0 = trace.start
    pid = {a: i for i, a in enumerate(trace.actors)}
    events: list[dict[str, Any]] = []
    for actor, i in pid.items():
        events.append({"ph": "M", "name": "process_name", "pid": i, "tid": 0,
                       "args": {"name": actor}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": i, "tid": 0,
                       "args": {"sort_index": i}})
        events.append({"ph": "M", "name": "thread_name", "pid": i, "tid": 0,
                       "args": {"name": actor}})
    for e in trace.events:
        args: dict[str, Any] = {"nbytes": e.nbytes}
        if e.peer is not None:
            args["peer"] = e.peer
        events.append({"ph": "X", "cat": e.op, "name": f"{e.op}.{e.phase}",
                       "pid": pid[e.actor], "tid": 0, "ts": (e.start - t0) * 1e6,
                       "dur": max(0.0, (e.end - e.start) * 1e6), "args": args})
    flow = 0
    for item in trace.sequence(phases=()):
        if not isinstance(item, Message):
            continue
        flow += 1
        common = {"cat": item.op, "name": item.label, "id": flow, "tid": 0}
        events.append({**common, "ph": "s", "pid": pid[item.sender],
                       "ts": (item.sent - t0) * 1e6})
        events.append({**common, "ph": "f", "bp": "e", "pid": pid[item.receiver],
                       "ts": (item.received - t0) * 1e6})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"producer": "nonsense_hpc.trace", "start_unix": t0}}


def write_chrome(trace: Trace, path: str | Path) -> Path:
    """Write :func:`to_chrome` to ``path`` and return the path."""
    p = Path(path)
    p.write_text(json.dumps(to_chrome(trace)), encoding="utf-8")
    return p
