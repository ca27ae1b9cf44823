"""Shared helpers for the device tests: real sockets, waits with deadlines."""

from __future__ import annotations

import time
from typing import Any

import zmq

from nonsense_hpc import wire


def wait_subscribed(pub: Any, sub: Any, timeout: float = 10.0, topic: str = "probe") -> int:
    """Publish probes until ``sub`` receives one (subscriptions take a moment to travel).

    Returns the number of probes sent; drains the probes that arrived.
    """
    deadline = time.monotonic() + timeout
    sent = 0
    while time.monotonic() < deadline:
        wire.send(pub, topic, {"probe": sent}, kind="control")
        sent += 1
        if sub.poll(20):
            while sub.poll(50):
                sub.recv_multipart()
            return sent
    raise TimeoutError(f"subscriber saw no probe within {timeout} s")


def drain(sock: Any, idle: float = 0.3) -> list[list[bytes]]:
    """Receive until nothing arrives for ``idle`` seconds."""
    out = []
    while sock.poll(int(idle * 1000)):
        out.append(sock.recv_multipart())
    return out


def socket(kind: int, *, connect: str | None = None, subscribe: str | None = None) -> Any:
    """A socket on the global context with LINGER 0."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if subscribe is not None:
        sock.setsockopt(zmq.SUBSCRIBE, subscribe.encode())
    if connect:
        sock.connect(connect)
    return sock
