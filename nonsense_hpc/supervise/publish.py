"""Publish supervisor events over ZeroMQ in the project's wire format.

Each :class:`~nonsense_hpc.supervise.events.Event` becomes one
:mod:`nonsense_hpc.wire` message: topic ``supervise.<supervisor>.<kind>``, header
``kind="event"``, ``data`` = the event's fields. ``nonsense-hpc watch`` and any
subscriber that reads the wire format show them.

An address is bound by default (``tcp://*:5600``, ``ipc:///tmp/sup.events``); prefix it
with ``>`` to connect instead, e.g. to the input side of a Forwarder
(``>tcp://127.0.0.1:5559``), the way many publishers share one Forwarder.
"""

from __future__ import annotations

import os
from typing import Any

from nonsense_hpc.supervise.events import Event

__all__ = ["EventPublisher", "EventSubscriber", "split_address"]


def split_address(addr: str) -> tuple[str, bool]:
    """``">tcp://h:1"`` -> ``("tcp://h:1", False)``; ``"@x"`` or ``"x"`` -> ``("x", True)``."""
    if addr.startswith(">"):
        return addr[1:], False
    if addr.startswith("@"):
        return addr[1:], True
    return addr, True


class EventPublisher:
    """A PUB socket that sends events as wire messages.

    Args:
        context: the ZeroMQ context of the publishing process.
        addr: where to bind (or connect, with a ``>`` prefix).
    """

    def __init__(self, context: Any, addr: str) -> None:
        import zmq

        from nonsense_hpc.wire import Encoder

        self._zmq = zmq
        self.socket = context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 500)
        self.socket.setsockopt(zmq.SNDHWM, 10000)
        endpoint, bind = split_address(addr)
        if bind:
            self.socket.bind(endpoint)
        else:
            self.socket.connect(endpoint)
        self.addr = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode() if bind else endpoint
        self._encoder = Encoder(job_id=os.environ.get("NONSENSE_JOB_ID"))

    def publish(self, event: Event) -> None:
        """Send one event (dropped, never blocking, if subscribers cannot keep up)."""
        frames = self._encoder.encode(event.topic, event.to_dict(), kind="event",
                                      timestamp=event.time)
        try:
            self.socket.send_multipart(frames, flags=self._zmq.NOBLOCK, copy=False)
        except self._zmq.Again:
            pass

    def close(self) -> None:
        """Close the socket (pending events get 0.5 s to leave)."""
        self.socket.close()


class EventSubscriber:
    """Receive supervisor events (for tests, ``ctl``-like tools and notebooks).

    Args:
        addr: the publisher's address (connected; ``@`` prefix binds instead).
        topic: topic prefix to subscribe to (default: every supervisor event).

    Example:
        >>> sub = EventSubscriber("tcp://127.0.0.1:5600")        # doctest: +SKIP
        >>> print(sub.recv(timeout=5.0))                         # doctest: +SKIP
        [root] spawn web pid=4242
    """

    def __init__(self, addr: str, topic: str = "supervise.") -> None:
        import zmq

        self._zmq = zmq
        self._context = zmq.Context()
        self.socket = self._context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        endpoint = addr[1:] if addr.startswith((">", "@")) else addr
        if addr.startswith("@"):
            self.socket.bind(endpoint)
        else:
            self.socket.connect(endpoint)

    def recv(self, timeout: float) -> Event:
        """The next event.

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
            WireError: a malformed message arrived.
        """
        from nonsense_hpc.wire import recv

        msg = recv(self.socket, timeout=timeout)
        return Event.from_dict(dict(msg.data))

    def close(self) -> None:
        """Close the socket and its context."""
        self.socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
