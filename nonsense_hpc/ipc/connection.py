"""One framed, bidirectional message stream over a stream socket (TCP or Unix).

:class:`Connection` is what a :func:`~nonsense_hpc.ipc.client` returns and what a server
holds for each connected client. Messages are frames of :mod:`nonsense_hpc.ipc.codec`:
tensors are written straight from their memory with ``sendmsg`` (scatter-gather, no
copy into an intermediate bytes object) and read straight into the memory of the tensor
that is returned.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import codec

__all__ = ["Connection", "send_views"]

_IOV_MAX = 512
_READ_AHEAD = 256 * 1024


def send_views(sock: socket.socket, views: list[memoryview]) -> None:
    """Write every byte of ``views`` with as few ``sendmsg`` calls as the kernel allows.

    Raises:
        ConnectionError: the peer closed the connection.
        TimeoutError: the socket's timeout expired while the peer was not reading.
    """
    pending = [v.cast("B") if v.format != "B" or v.ndim != 1 else v for v in views if v.nbytes]
    while pending:
        sent = sock.sendmsg(pending[:_IOV_MAX])
        while sent:
            head = pending[0]
            if sent >= head.nbytes:
                sent -= head.nbytes
                pending.pop(0)
            else:
                pending[0] = head[sent:]
                sent = 0


class Connection:
    """A message stream to one peer.

    Args:
        sock: a connected stream socket (the connection owns it from now on).
        peer: a printable name of the peer, for error messages.
        id: a number the owner gives the connection (servers number clients from 1).

    Attributes:
        id: the connection's number (0 for a client's own connection).
        peer: who is on the other end.
    """

    def __init__(self, sock: socket.socket, peer: str = "", id: int = 0) -> None:
        self.sock = sock
        self.peer = peer or _peer_name(sock)
        self.id = id
        self.closed = False
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._rbuf = bytearray(_READ_AHEAD)
        self._rview = memoryview(self._rbuf)
        self._rpos = 0
        self._rend = 0
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection #{self.id} to {self.peer} ({state})>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The socket's file descriptor (so a connection can be passed to ``select``)."""
        return self.sock.fileno()

    def send(self, value: Any, *, timeout: float | None = None) -> None:
        """Send one value.

        Args:
            value: any value :func:`nonsense_hpc.ipc.codec.encode` accepts.
            timeout: seconds the peer may take to accept the bytes (None: no limit).

        Raises:
            TypeError: the value cannot be sent (raised before any byte is written).
            ConnectionError: the connection is closed or the peer went away.
            TimeoutError: the peer did not read within ``timeout``; the connection is
                closed, since a partly written message cannot be taken back.
        """
        enc = codec.encode(value)
        self._check_open()
        with self._send_lock:
            self.sock.settimeout(timeout)
            try:
                send_views(self.sock, codec.frame_buffers(enc))
            except (TimeoutError, OSError) as exc:
                self.close()
                if isinstance(exc, TimeoutError):
                    raise TimeoutError(f"{self.peer} did not accept a message within "
                                       f"{timeout} s; connection closed") from None
                raise ConnectionError(f"sending to {self.peer} failed: {exc}") from exc

    def buffered(self) -> bool:
        """Whether bytes of a next message were already read ahead from the socket.

        A ``select`` on the socket does not see them: check this first.
        """
        return self._rpos < self._rend

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the peer's end of stream) is ready to be read."""
        self._check_open()
        if self._rpos < self._rend:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)

    def recv(self, *, timeout: float | None = None) -> Any:
        """Receive one value.

        Args:
            timeout: seconds to wait for the message to start (None: wait for ever).
                Once it has started, the rest must arrive within the same time.

        Raises:
            TimeoutError: no message started within ``timeout`` (the connection stays
                usable).
            ConnectionError: the peer closed the connection (``EOFError`` semantics).
            WireError: the bytes received are not a valid frame (connection closed).
        """
        self._check_open()
        with self._recv_lock:
            if timeout is not None and not self.poll(timeout):
                raise TimeoutError(f"no message from {self.peer} within {timeout} s")
            self.sock.settimeout(timeout)
            started = False

            def readinto(view: memoryview) -> None:
                nonlocal started
                self._readinto(view, started)
                started = True

            try:
                return codec.read_frame(readinto)
            except (WireError, ConnectionError, TimeoutError, OSError):
                self.close()
                raise

    def _readinto(self, view: memoryview, started: bool) -> None:
        """Fill ``view`` from the read-ahead buffer, then the socket.

        Small messages are read many at a time into the buffer (one system call for
        several frames); large buffers are received straight into their destination.
        """
        total = view.nbytes
        got = 0
        while got < total:
            if self._rpos < self._rend:
                n = min(total - got, self._rend - self._rpos)
                view[got:got + n] = self._rview[self._rpos:self._rpos + n]
                self._rpos += n
                got += n
            elif total - got >= _READ_AHEAD // 2:
                _recv_exact(self.sock, view[got:], self.peer, started or got > 0)
                return
            else:
                self._rpos = 0
                self._rend = _recv_some(self.sock, self._rview, self.peer,
                                        started or got > 0)

    def close(self) -> None:
        """Close the connection (idempotent); the peer's next ``recv`` fails."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionError(f"connection to {self.peer} is closed")


def _recv_exact(sock: socket.socket, view: memoryview, peer: str, started: bool) -> None:
    got = 0
    total = view.nbytes
    while got < total:
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            raise TimeoutError(f"message from {peer} stalled after it started; "
                               f"connection closed") from None
        if n == 0:
            if not started and got == 0:
                raise ConnectionResetError(f"{peer} closed the connection")
            raise WireError(f"{peer} closed the connection in the middle of a message")
        got += n


def _recv_some(sock: socket.socket, view: memoryview, peer: str, started: bool) -> int:
    try:
        n = sock.recv_into(view)
    except TimeoutError:
        raise TimeoutError(f"message from {peer} stalled after it started; "
                           f"connection closed") from None
    if n == 0:
        if not started:
            raise ConnectionResetError(f"{peer} closed the connection")
        raise WireError(f"{peer} closed the connection in the middle of a message")
    return n


def _peer_name(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "peer"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "peer"
