"""One framed, bidirectional message stream over a stream socket (TCP or Unix).

:class:`Connection` is what a :func:`~nonsense_hpc.ipc.client` returns and what a server
holds for each connected client. Messages are frames of :mod:`nonsense_hpc.ipc.codec`:
tensors are written straight from their memory with ``sendmsg`` (scatter-gather, no
copy into an intermediate bytes object) and read straight into the memory of the tensor
that is returned.

A connection made with ``cuda_ipc=True`` or ``False`` (what ``ipc.server`` and
``ipc.client`` do) first sends a hello control frame (:mod:`nonsense_hpc.ipc.handshake`)
and then carries CUDA tensors as CUDA IPC handles where the peer's hello allows it
(:mod:`nonsense_hpc.ipc.cuda_ipc`). Control frames (hello, ack, nack) are consumed inside
``send``, ``recv``, ``poll`` and :meth:`Connection.flush`; the caller only sees values.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import codec, frames, handshake
from nonsense_hpc.ipc import cuda_ipc as _cuda
from nonsense_hpc.ipc.control import HELLO_WAIT, ControlMixin
from nonsense_hpc.ipc.handshake import Hello, Transport
from nonsense_hpc.ipc.sockio import Spinner, recv_exact, recv_some, send_views

__all__ = ["HELLO_WAIT", "Connection", "send_views"]

_READ_AHEAD = 256 * 1024
class Connection(ControlMixin):
    """A message stream to one peer.

    Args:
        sock: a connected stream socket (the connection owns it from now on).
        peer: a printable name of the peer, for error messages.
        id: a number the owner gives the connection (servers number clients from 1).
        cuda_ipc: None: a plain stream (no hello; CUDA tensors staged through the host).
            True or False: send a hello now, saying whether this end takes CUDA IPC
            (True still needs ``NONSENSE_CUDA_IPC`` unset or true, torch imported and a
            GPU; see :func:`~nonsense_hpc.ipc.handshake.local_hello`).
        same_process: the peer is known to be this process (no CUDA IPC, no hello wait).
        spin: waits poll briefly before sleeping (:class:`~nonsense_hpc.ipc.sockio.Spinner`);
            False: they sleep at once (for many processes that share few CPUs).

    Attributes:
        id: the connection's number (0 for a client's own connection).
        peer: who is on the other end.
        hello: this end's hello (None for a plain stream).
        peer_hello: the peer's hello once it arrived.
        stats: counts of CUDA tensors by transport: ``cuda_ipc_sent``, ``cuda_ipc_acked``,
            ``cuda_staged_sent``, ``cuda_ipc_received``.
        last_transport: how the last CUDA tensor sent went, and why.

    Raises:
        ConfigError: ``NONSENSE_CUDA_IPC`` has an invalid value.
    """

    def __init__(self, sock: socket.socket, peer: str = "", id: int = 0, *,
                 cuda_ipc: bool | None = None, same_process: bool = False,
                 spin: bool = True) -> None:
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
        self._eof = False
        self._rtimeout: float | None = None  # of the frame being read
        self._started = False  # a byte of the frame being read was taken
        self._import: _cuda.FrameImport | None = None
        self._waiter = Spinner(sock, None if spin else 0.0)
        self.stats = {"cuda_ipc_sent": 0, "cuda_ipc_acked": 0, "cuda_staged_sent": 0,
                      "cuda_ipc_received": 0}
        self.hello: Hello | None = None
        self.peer_hello: Hello | None = None
        self.last_transport: Transport | None = None
        self._hello_seen = threading.Event()
        self._hello_waited = same_process
        self._same_process = same_process
        self._exporter = _cuda.Exporter(self.stats)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        if cuda_ipc is not None:
            self.hello = handshake.local_hello(cuda_ipc)
            try:
                send_views(self.sock, [memoryview(frames.control_frame(
                    {"hello": self.hello.to_json()}))], 30.0)
            except OSError:
                pass  # the peer is already gone: the first recv or send says so

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
        self._check_open()
        hook = None
        if self.hello is not None:
            if self.peer_hello is None or self._exporter.pending:
                self._drain()  # the peer's hello or acks already at the front of the stream
            hook = self._exporter.frame(lambda: self._decide(timeout))
        enc = codec.encode(value, cuda=hook)
        self._send_frame(enc, timeout)

    def _send_frame(self, enc: codec.Encoded, timeout: float | None) -> None:
        self._check_open()
        with self._send_lock:
            try:
                send_views(self.sock, frames.frame_buffers(enc), timeout)
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

    def message_ready(self) -> bool:
        """Whether a message (or the end of stream) can be read now, without blocking.

        Control frames at the front of the stream (hello, acks) are consumed first, so a
        peer that only said hello is not "ready". Never blocks.
        """
        if self.closed:
            return False
        if not self._recv_lock.acquire(blocking=False):
            return True  # another thread is reading; let recv sort it out
        try:
            self._drain_locked()
            return self._front() is not None
        finally:
            self._recv_lock.release()

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the peer's end of stream) is ready to be read."""
        self._check_open()
        with self._recv_lock:
            return self._wait_message_locked(timeout)

    def _wait_message_locked(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.hello is None:
                if self._rpos < self._rend or self._eof:
                    return True
            else:
                self._drain_locked()
                if self._front() is not None:
                    return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if not self._waiter.wait(left) and left is not None:
                return False
            if self.hello is None:
                return True
            self._fill_nowait()

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
            while True:
                if not self._wait_message_locked(timeout):
                    raise TimeoutError(f"no message from {self.peer} within {timeout} s")
                value = self._read_frame_locked(timeout)
                if value is not codec.CONTROL:
                    return value

    def _read_frame_locked(self, timeout: float | None) -> Any:
        self._rtimeout = timeout
        self._started = False
        self._import = None
        try:
            value = frames.read_frame(
                self._readinto, cuda_import=None if self.hello is None else self._import_node,
                on_control=None if self.hello is None else self._on_control)
        except _cuda.CudaIpcError as exc:
            self._reply(self._import, str(exc))
            raise  # the frame was read to its end: the stream stays usable
        except (WireError, ConnectionError, TimeoutError, OSError) as exc:
            self._reply(self._import, f"{type(exc).__name__}: {exc}")
            self.close()
            raise
        if self._import is not None:
            self._reply(self._import)
        return value

    def _import_node(self, node: dict[str, Any]) -> Any:
        """Open a ``$cuda_ipc`` node of the frame being read (acked once it is read)."""
        if self._import is None:
            self._import = _cuda.FrameImport(self._check_import, self.stats, self.peer)
        return self._import(node)

    def _readinto(self, view: memoryview) -> None:
        """Fill ``view`` from the read-ahead buffer, then the socket.

        Small messages are read many at a time into the buffer (one system call for
        several frames); large buffers are received straight into their destination.
        """
        total = view.nbytes
        pos = self._rpos
        if self._rend - pos >= total:  # the common case: all of it is buffered
            view[:] = self._rview[pos:pos + total]
            self._rpos = pos + total
            self._started = True
            return
        got = 0
        while got < total:
            started = self._started or got > 0
            if self._rpos < self._rend:
                n = min(total - got, self._rend - self._rpos)
                view[got:got + n] = self._rview[self._rpos:self._rpos + n]
                self._rpos += n
                got += n
            elif self._eof:
                recv_some(_ClosedSocket(), self._rview, self.peer, started, None)
            elif total - got >= _READ_AHEAD // 2:
                recv_exact(self.sock, view[got:], self.peer, started, self._rtimeout)
                break
            else:
                self._rpos = 0
                self._rend = recv_some(self.sock, self._rview, self.peer, started,
                                        self._rtimeout)
        self._started = True

    def close(self) -> None:
        """Close the connection (idempotent); the peer's next ``recv`` fails.

        Unacknowledged CUDA IPC snapshots are dropped here; torch keeps each alive until
        the peer released it (see :mod:`nonsense_hpc.ipc.cuda_ipc`).
        """
        if self.closed:
            return
        if self._exporter.pending and self._recv_lock.acquire(blocking=False):
            try:
                self._drain_locked()  # acks that already arrived free their snapshots now
            except (WireError, OSError):
                pass
            finally:
                self._recv_lock.release()
        self.closed = True
        self._exporter.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionError(f"connection to {self.peer} is closed")


class _ClosedSocket:
    """Stands for a socket whose end of stream was already seen by a non-blocking read."""

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        """Report the end of stream."""
        return 0


def _peer_name(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "peer"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "peer"
