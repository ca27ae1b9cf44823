"""Socket I/O of :mod:`nonsense_hpc.ipc`: scatter-gather writes and reads with timeouts.

Connection sockets stay in blocking mode for their whole life. A wait with a timeout is
a non-blocking attempt first (``MSG_DONTWAIT``) and a ``poll`` only when the kernel has
nothing: one system call per read or write in the common case, instead of toggling the
socket's mode and polling before every call as ``socket.settimeout`` does.
"""

from __future__ import annotations

import math
import os
import select
import socket
import time
from typing import Any

from nonsense_hpc.errors import WireError

__all__ = ["SPIN_LIMIT", "Spinner", "cpus_busy", "recv_exact", "recv_once", "recv_some",
           "send_views", "wait_fd"]

_IOV_MAX = 512
SPIN_LIMIT = 200e-6
"""Longest a :class:`Spinner` polls before it sleeps in the kernel, in seconds (0: never)."""
_yield = getattr(os, "sched_yield", lambda: None)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
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


class _Load:
    """The machine's count of runnable tasks, sampled at most every millisecond."""

    every = 0.001
    at = -1.0
    over = False  # the last sample saw more runnable tasks than CPUs
    busy = False
    fd = -1


def cpus_busy() -> bool:
    """Whether this machine has more runnable tasks than this process has CPUs.

    Read from the "running" count of ``/proc/loadavg`` (which includes the caller), at
    most every millisecond; busy once two samples in a row say so (one sample sees
    passing kernel threads too). False where that file cannot be read.
    """
    now = time.monotonic()
    if now - _Load.at < _Load.every:
        return _Load.busy
    _Load.at = now
    try:
        if _Load.fd < 0:
            _Load.fd = os.open("/proc/loadavg", os.O_RDONLY)
        running = int(os.pread(_Load.fd, 128, 0).split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        running = 0
    over = running > _CPUS
    _Load.busy = over and _Load.over
    _Load.over = over
    return _Load.busy


class Spinner:
    """Waits for a socket to become readable, polling briefly before sleeping.

    Waking a process that sleeps in the kernel costs tens of microseconds on both sides
    (the writer's system call wakes the reader; the reader resumes with cold caches); in
    a request-reply exchange that is most of a small message's time. So a wait first
    polls without sleeping, for about twice the recent typical wait (an average of the
    last waits), and only sleeps when that is over. Waits longer than :data:`SPIN_LIMIT`
    (an idle peer, a busy machine) turn the polling off until waits get short again; it
    is skipped while every CPU already has a runnable task (:func:`cpus_busy`: polling
    would take a CPU from a process with work, maybe the peer), and a process allowed on
    one CPU never polls.

    Args:
        sock: the socket to wait on (any object with ``fileno()``).
        limit: the longest polling phase in seconds (default: :data:`SPIN_LIMIT` as it is
            at each wait; 0: never poll, sleep at once).
    """

    def __init__(self, sock: Any, limit: float | None = None) -> None:
        self._limit = limit
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._average = self.limit / 2
        self._budget = self.limit

    @property
    def limit(self) -> float:
        """The longest polling phase now: the ``limit`` given, else :data:`SPIN_LIMIT`."""
        if _CPUS < 2:
            return 0.0
        return SPIN_LIMIT if self._limit is None else self._limit

    @property
    def budget(self) -> float:
        """How long the next wait polls before it sleeps, in seconds."""
        return min(self._budget, self.limit)

    def wait(self, timeout: float | None) -> bool:
        """Wait until the socket is readable (or hung up); False after ``timeout`` s."""
        poll = self._poller.poll
        start = time.monotonic()
        budget = self.budget if timeout is None else min(self.budget, timeout)
        if budget > 0 and not cpus_busy():
            end = start + budget
            while True:
                if poll(0):
                    self._learn(time.monotonic() - start)
                    return True
                if time.monotonic() >= end:
                    break
                _yield()  # a runnable process on this CPU (the peer?) goes first
        if timeout is None:
            ready = poll(None)
        else:
            ready = poll(max(0, math.ceil((start + timeout - time.monotonic()) * 1000)))
        if ready:
            self._learn(time.monotonic() - start)
        return bool(ready)

    def _learn(self, waited: float) -> None:
        limit = self.limit
        if not limit:
            return
        self._average += (min(waited, 4 * limit) - self._average) * 0.25
        self._budget = min(limit, 2 * self._average) if self._average < limit else 0.0
