"""Helpers shared by the supervision tests: event queues and bounded waits."""

from __future__ import annotations

import os
import queue
import select
import time
from collections.abc import Callable

from nonsense_hpc.supervise import Event


class Events:
    """Collects a supervisor's events (pass ``events.put`` as ``on_event``)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Event] = queue.Queue()
        self.seen: list[Event] = []
        self._skipped: list[Event] = []  # received, not yet matched by a wait()

    def put(self, event: Event) -> None:
        self.queue.put(event)

    def wait(self, kind: str, child: str | None = None, timeout: float = 15.0) -> Event:
        """The next event of this kind (and child), failing after ``timeout`` seconds.

        Events received but skipped by an earlier wait are searched first, so two
        children exiting in either order are both found.
        """
        for i, event in enumerate(self._skipped):
            if event.kind == kind and (child is None or event.child == child):
                del self._skipped[i]
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event for {child} within {timeout} s; "
                                     f"seen: {[str(e) for e in self.seen]}")
            try:
                event = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event.kind == kind and (child is None or event.child == child):
                return event
            self._skipped.append(event)

    def drain(self) -> list[Event]:
        while True:
            try:
                self.seen.append(self.queue.get_nowait())
            except queue.Empty:
                return self.seen


def wait_readable(fd: int, timeout: float = 15.0) -> bytes:
    """Read from a pipe, failing if nothing arrives within ``timeout``."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise AssertionError(f"nothing on fd {fd} within {timeout} s")
    return os.read(fd, 4096)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
