"""Feed tasks from a JSON-lines file to a Streamer or a Broker (``nonsense-hpc feed``).

Every line is one JSON value; it becomes the ``data`` of a ``kind="task"`` message. Its
``task_id`` is the line's ``"id"`` field when it is an object that has one, else the line
number (1-based). The whole file is parsed before the first task is sent, so a bad line
sends nothing. With ``results`` the feeder also binds a sink and waits for every result
(de-duplicated by task id), which is the progress it reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.devices import security
from nonsense_hpc.errors import ConfigError

__all__ = ["feed", "read_tasks"]


def read_tasks(path: str | Path) -> list[tuple[str, Any]]:
    """Parse a JSON-lines file into ``(task_id, data)`` pairs (blank lines skipped).

    Raises:
        ConfigError: a line is not JSON, or two tasks share an id (names the line).
    """
    tasks: list[tuple[str, Any]] = []
    ids: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc})") from None
            task_id = str(data["id"]) if isinstance(data, dict) and "id" in data else \
                str(number)
            if task_id in ids:
                raise ConfigError(f"{path}:{number}: task id {task_id!r} already used on "
                                  f"line {ids[task_id]}")
            ids[task_id] = number
            tasks.append((task_id, data))
    return tasks


def feed(tasks: list[tuple[str, Any]], to: str, *, topic: str = "tasks",
         results: str | None = None, timeout: float = 60.0, curve_dir: str | None = None,
         progress: Callable[[str, int, int], None] | None = None,
         on_result: Callable[[wire.Message], None] | None = None) -> dict[str, Any]:
    """Send tasks, optionally wait for their results, and report progress.

    Args:
        tasks: ``(task_id, data)`` pairs (see :func:`read_tasks`).
        to: the Streamer's or Broker's input address.
        topic: topic of the task messages.
        results: bind a sink here and wait for every result.
        timeout: seconds for the whole send, and for the results to arrive.
        curve_dir: CURVE client keys.
        progress: called as ``progress(phase, done, total)``, phase "sent"/"results".
        on_result: called with each distinct result.

    Returns:
        Summary: sent, results, duplicates, seconds.

    Raises:
        TimeoutError: nothing accepted the tasks, or results were missing at ``timeout``.
    """
    import zmq

    from nonsense_hpc.devices.sink import Sink

    started = time.monotonic()
    sink = Sink(results, curve_dir=curve_dir) if results else None
    ctx: Any = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    push.setsockopt(zmq.LINGER, int(timeout * 1000))
    push.setsockopt(zmq.IMMEDIATE, 1)  # queue only on live connections: no silent loss
    if curve_dir:
        security.configure_client(push, curve_dir)
    push.connect(security.normalize_address(to))
    enc = wire.Encoder()
    total = len(tasks)
    got = 0
    try:
        for i, (task_id, data) in enumerate(tasks, start=1):
            try:
                enc.send(push, topic, data, kind="task", task_id=task_id)
            except zmq.Again:
                raise TimeoutError(f"no device at {to} took task {i} of {total} within "
                                   f"{timeout} s") from None
            if progress is not None:
                progress("sent", i, total)
        if sink is not None:
            deadline = started + timeout
            while got < total:
                msg = sink.recv(timeout=max(0.0, deadline - time.monotonic()))
                if msg is None:
                    raise TimeoutError(f"{got} of {total} results arrived within {timeout} s")
                got += 1
                if on_result is not None:
                    on_result(msg)
                if progress is not None:
                    progress("results", got, total)
    finally:
        push.close()
        ctx.term()
        duplicates = sink.duplicates if sink is not None else 0
        if sink is not None:
            sink.close()
    return {"sent": total, "results": got, "duplicates": duplicates,
            "seconds": round(time.monotonic() - started, 3)}
