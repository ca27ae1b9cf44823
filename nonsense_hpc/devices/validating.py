"""A proxy loop that validates every message against the wire format.

Speaks the same control protocol as ``zmq.proxy_steerable`` (PAUSE, RESUME, TERMINATE,
STATISTICS on an inproc PAIR; STATISTICS answers 8 little-endian uint64 frames followed by
two more: messages dropped as malformed and as oversized), so the device's control relay
does not care which proxy runs.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.errors import WireError

__all__ = ["validating_proxy"]

log = logging.getLogger(__name__)


def validating_proxy(frontend: Any, backend: Any, control: Any, max_bytes: int,
                     hmac_key: bytes | None = None) -> None:
    """Forward frontend -> backend (and subscriptions back), dropping invalid messages.

    Args:
        frontend: the input socket (XSUB or PULL).
        backend: the output socket (XPUB or PUSH).
        control: the inproc PAIR carrying proxy commands.
        max_bytes: messages larger than this (all frames together) are dropped.
        hmac_key: when set, unsigned or badly signed messages are dropped.
    """
    import zmq

    # counters: frontend in/out, backend in/out (frames and bytes), malformed, oversized
    c = [0] * 10
    poller = zmq.Poller()
    poller.register(control, zmq.POLLIN)
    poller.register(frontend, zmq.POLLIN)
    poller.register(backend, zmq.POLLIN)
    paused = False
    pending: list[Any] | None = None  # a valid message waiting for the backend

    def arm() -> None:
        if paused:
            poller.modify(frontend, 0)
            poller.modify(backend, 0)
        elif pending is not None:  # hold the input until the output can take the message
            poller.modify(frontend, 0)
            poller.modify(backend, zmq.POLLIN | zmq.POLLOUT)
        else:
            poller.modify(frontend, zmq.POLLIN)
            poller.modify(backend, zmq.POLLIN)

    while True:
        events = dict(poller.poll())
        if control in events:
            command = control.recv()
            if command == b"STATISTICS":
                control.send_multipart([struct.pack("<Q", v) for v in c])
                continue
            control.send(b"")
            if command == b"TERMINATE":
                return
            if command in (b"PAUSE", b"RESUME"):
                paused = command == b"PAUSE"
            arm()
            continue
        if pending is not None and events.get(backend, 0) & zmq.POLLOUT:
            if _send(backend, pending, c):
                pending = None
                arm()
        elif frontend in events:
            frames = frontend.recv_multipart(copy=False)
            size = sum(len(f) for f in frames)
            c[0] += len(frames)
            c[1] += size
            if size > max_bytes:
                c[9] += 1
                continue
            try:
                wire.decode(frames, max_bytes=max_bytes, hmac_key=hmac_key)
            except WireError as exc:
                c[8] += 1
                log.debug("dropped malformed message: %s", exc)
                continue
            if not _send(backend, frames, c):
                pending = frames
                arm()
        if events.get(backend, 0) & zmq.POLLIN:
            # XPUB -> XSUB subscriptions (a PUSH backend never polls readable)
            frames = backend.recv_multipart(copy=False)
            c[4] += len(frames)
            c[5] += sum(len(f) for f in frames)
            frontend.send_multipart(frames, copy=False)
            c[2] += len(frames)
            c[3] += sum(len(f) for f in frames)


def _send(backend: Any, frames: list[Any], c: list[int]) -> bool:
    import zmq

    try:
        backend.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
    except zmq.Again:
        return False
    c[6] += len(frames)
    c[7] += sum(len(f) for f in frames)
    return True
