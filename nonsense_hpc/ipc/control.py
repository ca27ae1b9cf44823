"""Control frames of a client-server connection: hello, ack, nack, and the CUDA transport.

:class:`ControlMixin` is the part of :class:`~nonsense_hpc.ipc.connection.Connection` that
reads control frames at the front of the stream without blocking (so ``send`` sees acks
and ``recv_any`` does not mistake a hello for a message), waits for the peer's hello, picks
the transport of CUDA tensors and answers CUDA IPC frames with acks or nacks.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import codec, frames, handshake
from nonsense_hpc.ipc import cuda_ipc as _cuda
from nonsense_hpc.ipc.handshake import Hello, Transport
from nonsense_hpc.ipc.sockio import send_views

__all__ = ["HELLO_WAIT", "ControlMixin"]

HELLO_WAIT = 5.0
"""Seconds a first CUDA send waits for the peer's hello before staging through the host."""


class ControlMixin:
    """Hello, acks and the CUDA transport of a connection (state lives in the connection)."""

    sock: socket.socket
    peer: str
    closed: bool
    hello: Hello | None
    peer_hello: Hello | None
    stats: dict[str, int]
    last_transport: Transport | None
    _send_lock: threading.Lock
    _recv_lock: threading.Lock
    _rbuf: bytearray
    _rview: memoryview
    _rpos: int
    _rend: int
    _eof: bool
    _hello_seen: threading.Event
    _hello_waited: bool
    _same_process: bool
    _exporter: _cuda.Exporter

    def close(self) -> None:
        """Close the connection (the connection class does the work)."""
        raise NotImplementedError

    def cuda_transport(self) -> Transport:
        """How a CUDA tensor sent now would travel, and why (reads pending control frames).

        Returns:
            ``Transport("cuda_ipc")`` or ``Transport("host", reason)``.
        """
        self._drain()
        return self._choose()

    def _choose(self) -> Transport:
        if self.hello is None:
            return Transport("host", "a plain stream without a hello (not ipc.server/client)")
        if self._same_process:
            return Transport("host", "the peer is this process (CUDA IPC needs two processes)")
        return handshake.choose_transport(
            self.hello, self.peer_hello, disabled=self._exporter.disabled,
            pending_bytes=self._exporter.pending_bytes, pending_limit=_cuda.PENDING_LIMIT)

    def _decide(self, timeout: float | None) -> bool:
        """Called by the encoder for a frame with CUDA tensors: export them or not."""
        if self.hello is not None and self.hello.cuda_ipc and self.peer_hello is None:
            self.wait_hello(HELLO_WAIT if timeout is None else min(HELLO_WAIT, timeout))
        self.last_transport = self._choose()
        return self.last_transport.name == "cuda_ipc"

    def wait_hello(self, timeout: float) -> Hello | None:
        """Wait up to ``timeout`` s for the peer's hello (the first frame it sends).

        Only the first wait on a connection waits; later calls just look. Returns None when
        the peer sent none (not an ipc peer, or it has not accepted the connection yet).
        """
        if self.hello is None or self._hello_waited:
            self._drain()
            return self.peer_hello
        deadline = time.monotonic() + timeout
        while self.peer_hello is None and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self._recv_lock.acquire(blocking=False):
                self._hello_seen.wait(min(left, 0.05))  # a reader thread will see it
                continue
            try:
                self._drain_locked()
                if self.peer_hello is not None or self._front() is not None:
                    break  # a value came first: this peer sends no hello
                ready, _, _ = select.select([self.sock], [], [], left)
                if ready:
                    self._fill_nowait()
            finally:
                self._recv_lock.release()
        self._hello_waited = True
        return self.peer_hello

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the peer acknowledged every CUDA IPC handle sent on this connection.

        Raises:
            TimeoutError: frames are still unacknowledged after ``timeout`` seconds (the
                peer is not reading, or values it sent are in front of its acks).
        """
        deadline = time.monotonic() + timeout
        while self._exporter.pending and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self._exporter.pending)} CUDA IPC frames sent to "
                                   f"{self.peer} are not acknowledged after {timeout} s")
            with self._recv_lock:
                self._drain_locked()
                if self._exporter.pending and self._front() is None:
                    ready, _, _ = select.select([self.sock], [], [], left)
                    if ready:
                        self._fill_nowait()
                elif self._exporter.pending:
                    raise TimeoutError(f"a value from {self.peer} is in front of its acks: "
                                       f"recv it first")

    @property
    def pending(self) -> int:
        """CUDA IPC frames sent and not acknowledged yet."""
        return len(self._exporter.pending)

    def _check_import(self) -> None:
        """Refuse a CUDA IPC handle this end cannot or must not open."""
        peer, me = self.peer_hello, self.hello
        if me is None or peer is None:
            raise _cuda.CudaIpcError(f"{self.peer} sent a CUDA IPC handle before its hello")
        if peer.host != me.host or peer.pid == me.pid:
            raise _cuda.CudaIpcError(
                f"{self.peer} sent a CUDA IPC handle but is not another process of this "
                f"host (its host identity {peer.host!r}, ours {me.host!r})")
        if not me.cuda_ipc:
            raise _cuda.CudaIpcError(
                f"{self.peer} sent a CUDA IPC handle but this process does not take CUDA "
                f"IPC: {me.reason}")

    def _on_control(self, message: dict[str, Any]) -> None:
        if "hello" in message:
            self.peer_hello = Hello.from_json(message["hello"])
            self._hello_seen.set()
        if "ack" in message:
            seq = message["ack"]
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise WireError(f"malformed ack {seq!r:.60}")
            self._exporter.ack(seq)
        if "nack" in message:
            nack = message["nack"]
            seq = nack.get("frame") if isinstance(nack, dict) else None
            released = nack.get("released") if isinstance(nack, dict) else None
            if (not isinstance(seq, int) or not isinstance(released, list)
                    or not all(isinstance(i, int) for i in released)):
                raise WireError(f"malformed nack {nack!r:.120}")
            self._exporter.nack(seq, released)
            self._exporter.disabled = (f"the peer could not use a CUDA IPC handle: "
                                       f"{str(nack.get('error', ''))[:300]}")

    def _reply(self, imp: _cuda.FrameImport | None, error: str = "") -> None:
        """Send the ack (or nack) of the CUDA IPC frames just read."""
        if imp is None or not imp.frames or self.closed:
            return
        try:
            with self._send_lock:
                replies = [memoryview(frames.control_frame(m)) for m in imp.replies(error)]
                send_views(self.sock, replies, 30.0)
        except OSError:
            pass  # the sender is gone (or stuck); its handles die with it

    def _drain(self) -> None:
        """Consume the control frames at the front of the stream, without blocking."""
        if self.hello is None or self.closed:
            return
        if self._recv_lock.acquire(blocking=False):
            try:
                self._drain_locked()
            finally:
                self._recv_lock.release()

    def _drain_locked(self) -> None:
        while not self.closed:
            front = self._front()
            if front is True:
                return  # a value (or garbage, or the end) is next: recv deals with it
            if front is None:
                if not self._fill_nowait():
                    return
                continue
            # front is False: a complete control frame is at the front
            _, hlen, _, _ = codec.PREFIX.unpack_from(self._rbuf, self._rpos)
            start = self._rpos + codec.PREFIX.size
            header = bytes(self._rbuf[start:start + hlen])
            self._rpos = start + hlen
            try:
                self._on_control(frames.parse_control(header))
            except WireError:
                self.close()
                raise

    def _front(self) -> bool | None:
        """What is at the front of the read-ahead buffer.

        True: a value frame (or bytes that are no frame, or the end of stream): recv must
        read it. False: a complete control frame. None: nothing, or too little to tell.
        """
        avail = self._rend - self._rpos
        if avail < codec.PREFIX.size:
            return True if self._eof else None
        magic, hlen, nbuf, flags = codec.PREFIX.unpack_from(self._rbuf, self._rpos)
        if magic != codec.MAGIC or not flags & codec.FLAG_CONTROL or nbuf or (
                hlen > codec.MAX_CONTROL_BYTES):
            return True
        if avail < codec.PREFIX.size + hlen:
            return True if self._eof else None
        return False

    def _fill_nowait(self) -> bool:
        """Read what the socket has now into the read-ahead buffer; False if nothing."""
        if self._eof or self.closed:
            return False
        if self._rpos == self._rend:
            self._rpos = self._rend = 0
        elif self._rend == len(self._rbuf):
            n = self._rend - self._rpos
            self._rbuf[:n] = self._rbuf[self._rpos:self._rend]
            self._rpos, self._rend = 0, n
        try:
            n = self.sock.recv_into(self._rview[self._rend:], 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            n = 0
        if n == 0:
            self._eof = True
            return False
        self._rend += n
        return True
