"""Heartbeats: children promise to beat; one that falls silent is killed and restarted.

A child whose :class:`~nonsense_hpc.supervise.ChildSpec` sets ``heartbeat`` gets three
environment variables from its supervisor:

``NONSENSE_HEARTBEAT_ADDR``
    the supervisor's ZeroMQ PULL socket (``ipc://...``);
``NONSENSE_HEARTBEAT_INTERVAL``
    the promised interval in seconds;
``NONSENSE_HEARTBEAT_ID``
    a token naming this incarnation of the child (beats of an older one are ignored).

The child calls :func:`beat` at least once per interval from the loop that does its real
work (so a stuck loop stops the beats), or :func:`start_beating` for a thread that beats
as long as the process lives. Any language can beat: send the two frames
``b"beat"``, ``ID`` on a ZeroMQ PUSH socket connected to the address.

Example (a worker that beats once per loop)::

    from nonsense_hpc.supervise import heart
    while True:
        do_one_unit_of_work()
        heart.beat()

A supervisor itself beats when it finds these variables in its own environment, which
is how :class:`Watchdog` (``nonsense-hpc watchdog``) watches a whole supervision tree.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from typing import Any

__all__ = [
    "ADDR_VAR",
    "ID_VAR",
    "INTERVAL_VAR",
    "HeartMonitor",
    "beat",
    "interval",
    "start_beating",
]

ADDR_VAR = "NONSENSE_HEARTBEAT_ADDR"
INTERVAL_VAR = "NONSENSE_HEARTBEAT_INTERVAL"
ID_VAR = "NONSENSE_HEARTBEAT_ID"

_lock = threading.Lock()
_state: dict[str, Any] = {"pid": None, "socket": None, "addr": None}


def _socket(addr: str) -> Any:
    import zmq

    if _state["pid"] != os.getpid() or _state["addr"] != addr:
        # A fresh context per process: never reuse one inherited through fork.
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 4)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(addr)
        _state.update(pid=os.getpid(), socket=sock, addr=addr, context=ctx)
    return _state["socket"]


def beat() -> bool:
    """Send one heartbeat to the supervisor (never blocks).

    Returns:
        False when this process has no supervisor heartbeat to send to (the variables
        are unset), True otherwise (also when a beat had to be dropped because the
        supervisor is momentarily unreachable).
    """
    import zmq

    addr = os.environ.get(ADDR_VAR)
    if not addr:
        return False
    token = os.environ.get(ID_VAR, "").encode()
    with _lock:
        sock = _socket(addr)
        try:
            sock.send_multipart([b"beat", token], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
    return True


def interval(default: float = 1.0) -> float:
    """The interval promised to the supervisor (``NONSENSE_HEARTBEAT_INTERVAL``)."""
    try:
        return float(os.environ.get(INTERVAL_VAR, default))
    except ValueError:
        return default


def start_beating(every: float | None = None) -> threading.Event:
    """Beat from a daemon thread until the returned event is set.

    This proves only that the process is alive, not that its main loop makes progress;
    prefer calling :func:`beat` from the work loop.

    Args:
        every: seconds between beats (default: half the promised interval).
    """
    period = every if every is not None else interval() / 2.0
    stop = threading.Event()

    def loop() -> None:
        while beat() and not stop.wait(period):
            pass

    threading.Thread(target=loop, name="nonsense-heartbeat", daemon=True).start()
    return stop


class HeartMonitor:
    """The supervisor's end: a PULL socket that collects beats.

    Args:
        context: the supervisor's ZeroMQ context.
        addr: where to bind (default: a fresh ``ipc://`` path in the temp directory).
    """

    def __init__(self, context: Any, addr: str | None = None) -> None:
        import zmq

        self._zmq = zmq
        self._path: str | None = None
        if addr is None:
            self._path = os.path.join(tempfile.gettempdir(),
                                      f"nonsense-heart-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            addr = f"ipc://{self._path}"
        self.addr = addr
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(addr)

    def drain(self) -> list[str]:
        """Every beat waiting on the socket: the tokens, oldest first."""
        tokens: list[str] = []
        while True:
            try:
                frames = self.socket.recv_multipart(flags=self._zmq.NOBLOCK)
            except self._zmq.Again:
                return tokens
            if len(frames) == 2 and frames[0] == b"beat":
                tokens.append(frames[1].decode("utf-8", "replace"))

    def close(self) -> None:
        """Close the socket and remove its ipc file."""
        self.socket.close(linger=0)
        if self._path is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass
