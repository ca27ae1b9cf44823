"""Socket I/O of :mod:`nonsense_hpc.ipc`: scatter-gather writes and reads with timeouts.

Connection sockets stay in blocking mode for their whole life. A wait with a timeout is
a non-blocking attempt first (``MSG_DONTWAIT``) and a ``poll`` only when the kernel has
nothing: one system call per read or write in the common case, instead of toggling the
socket's mode and polling before every call as ``socket.settimeout`` does.
"""

from __future__ import annotations

import math
import select
import socket
from typing import Any

from nonsense_hpc.errors import WireError

__all__ = ["recv_exact", "recv_once", "recv_some", "send_views", "wait_fd"]

_IOV_MAX = 512
_DONTWAIT = socket.MSG_DONTWAIT


def wait_fd(sock: socket.socket, event: int, timeout: float | None) -> bool:
    """Wait until ``sock`` is ready for ``event`` (or hung up); False after ``timeout``."""
    poller = select.poll()
    poller.register(sock, event)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(poller.poll(ms))


def send_views(sock: socket.socket, views: list[memoryview],
               timeout: float | None = None) -> None:
    """Write every byte of ``views`` with as few ``sendmsg`` calls as the kernel allows.

    Args:
        sock: a connected stream socket.
        views: the bytes to write, in order.
        timeout: seconds each wait for the peer to make room may last (None: the
            socket's own mode decides; a blocking socket waits for ever).

    Raises:
        ConnectionError: the peer closed the connection.
        TimeoutError: the timeout (or the socket's own) expired while the peer was not
            reading.
    """
    pending = [v if v.format == "B" and v.ndim == 1 else v.cast("B") for v in views if v.nbytes]
    flags = 0 if timeout is None else _DONTWAIT
    while pending:
        try:
            sent = sock.sendmsg(pending[:_IOV_MAX], (), flags)
        except BlockingIOError:
            if not wait_fd(sock, select.POLLOUT, timeout):
                raise TimeoutError(f"the peer took no bytes within {timeout} s") from None
            continue
        while sent:
            head = pending[0]
            if sent >= head.nbytes:
                sent -= head.nbytes
                pending.pop(0)
            else:
                pending[0] = head[sent:]
                sent = 0



def recv_once(sock: Any, view: memoryview, peer: str, timeout: float | None) -> int:
    """One ``recv_into`` on a blocking socket.

    With a timeout the read does not block: when nothing is there it waits for at most
    ``timeout`` seconds first (one system call when data is already waiting).

    Raises:
        TimeoutError: nothing arrived within ``timeout``.
    """
    if timeout is None:
        n: int = sock.recv_into(view)
        return n
    while True:
        try:
            n = sock.recv_into(view, 0, _DONTWAIT)
            return n
        except BlockingIOError:
            if not wait_fd(sock, select.POLLIN, timeout):
                raise TimeoutError(f"message from {peer} stalled after it started; "
                                   f"connection closed") from None


def recv_exact(sock: socket.socket, view: memoryview, peer: str, started: bool,
               timeout: float | None) -> None:
    """Fill ``view`` completely from ``sock``.

    Raises:
        ConnectionResetError: the peer closed before anything of a message came.
        WireError: the peer closed in the middle of a message.
        TimeoutError: a wait took longer than ``timeout``.
    """
    got = 0
    total = view.nbytes
    while got < total:
        n = recv_once(sock, view[got:], peer, timeout)
        if n == 0:
            if not started and got == 0:
                raise ConnectionResetError(f"{peer} closed the connection")
            raise WireError(f"{peer} closed the connection in the middle of a message")
        got += n


def recv_some(sock: Any, view: memoryview, peer: str, started: bool,
              timeout: float | None) -> int:
    """Read what ``sock`` has (at least one byte) into ``view``; returns the count.

    Raises:
        ConnectionResetError: the peer closed before anything of a message came.
        WireError: the peer closed in the middle of a message.
        TimeoutError: nothing came within ``timeout``.
    """
    n = recv_once(sock, view, peer, timeout)
    if n == 0:
        if not started:
            raise ConnectionResetError(f"{peer} closed the connection")
        raise WireError(f"{peer} closed the connection in the middle of a message")
    return n
