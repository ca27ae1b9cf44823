"""A two-way message channel between two processes through shared-memory segments.

Each direction has its own segment (an anonymous ``memfd`` both processes map), split into
``SLOTS`` slots. The writer copies message bytes into a free slot and sends a 9-byte token
(``b"D"`` + length) on a Unix socket pair; the reader copies the bytes straight out of the
slot into the memory of the value it is building and answers with an ack token
(``b"A"``), which frees the slot (the ack of a message's last slot rides along with the
next data token, or is sent before waiting). So:

* a message of any size *streams* through the segment slot by slot (never truncated);
  the writer pipelines: it fills the next slot while the reader empties the last one;
* the data is copied once on each side (no pickling, no kernel pipe copies);
* a peer that dies closes the socket, so a blocked ``send`` or ``receive`` fails at once
  with :class:`ConnectionError` instead of hanging;
* while a ``send`` waits for a free slot it keeps taking the *incoming* stream into a
  private spill buffer, so two processes that send large messages to each other at the
  same time do not deadlock.

Messages are frames of :mod:`nonsense_hpc.ipc.codec`.
"""

from __future__ import annotations

import collections
import mmap
import os
import socket
import struct
import threading
import time
from typing import Any

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import codec, frames
from nonsense_hpc.ipc.sockio import Spinner

__all__ = ["SLOTS", "Endpoint", "new_segment"]

SLOTS = 2
_TOKEN = struct.Struct("<cQ")


def new_segment(size: int) -> int:
    """Create an anonymous shared-memory segment of ``size`` bytes; returns its fd."""
    fd = os.memfd_create("nonsense_hpc.parallel", 0)
    os.ftruncate(fd, size)
    return fd


class Endpoint:
    """One side of a channel.

    Args:
        sock: this side's end of the token socket pair (owned from now on).
        out_fd: segment this side writes (fd; the mapping is kept, the fd is not closed).
        in_fd: segment this side reads.
        size: size of each segment in bytes.
        peer: name of the other side, for error messages.
    """

    def __init__(self, sock: socket.socket, out_fd: int, in_fd: int, size: int,
                 peer: str = "peer") -> None:
        if size < 2 * SLOTS:
            raise ValueError(f"shared segment of {size} bytes is too small")
        self.sock = sock
        sock.settimeout(None)
        self._waiter = Spinner(sock)
        self.peer = peer
        self.size = size
        self.slot = size // SLOTS
        self._out = mmap.mmap(out_fd, size)
        self._in = mmap.mmap(in_fd, size)
        self._out_view = memoryview(self._out)
        self._in_view = memoryview(self._in)
        self._free = SLOTS
        self._out_idx = 0
        self._out_fill = 0
        self._chunks: collections.deque[int] = collections.deque()
        self._in_idx = 0
        self._in_off = 0
        self._spill = bytearray()
        self._spill_pos = 0
        self._tokens = bytearray()
        self._peer_closed = False
        self._acks_off = False
        self._unacked = 0
        self._broken: str | None = None
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self.closed = False

    # -- public message API --------------------------------------------------------------
    def send(self, value: Any, timeout: float | None = None) -> None:
        """Send one value (blocks while the peer has not emptied the slots).

        Raises:
            TypeError: the value cannot be sent (before any byte is written).
            TimeoutError: the peer did not take the data within ``timeout`` seconds; the
                channel is unusable afterwards (a half-written message cannot be undone).
            ConnectionError: the peer is gone.
        """
        enc = codec.encode(value)
        with self._send_lock, self._recv_lock:
            self._check()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                for view in frames.frame_buffers(enc):
                    self._write(view.cast("B") if view.format != "B" else view, deadline)
                if self._out_fill:
                    self._flush()
            except (TimeoutError, OSError) as exc:
                self._broken = f"a send failed half-way: {exc}"
                raise

    def receive(self, timeout: float | None = None) -> Any:
        """Receive one value.

        Args:
            timeout: seconds to wait for the message (None: for ever).

        Raises:
            TimeoutError: no message started within ``timeout`` (the channel stays usable).
            ConnectionError: the peer is gone and nothing more is queued.
            WireError: the stream is corrupt.
        """
        with self._recv_lock:
            self._check()
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._available():
                self._pump(deadline)  # TimeoutError here leaves the channel intact
            try:
                return frames.read_frame(lambda view: self._readinto(view, deadline))
            except (TimeoutError, WireError) as exc:
                self._broken = f"a receive failed half-way: {exc}"
                raise

    def poll(self) -> bool:
        """Whether a message has (at least partly) arrived."""
        with self._recv_lock:
            if not self._available():
                try:
                    self._pump(time.monotonic())
                except (TimeoutError, ConnectionError):
                    return False
            return self._available()

    def close(self) -> None:
        """Close the socket and unmap the segments (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        finally:
            for view, mem in ((self._out_view, self._out), (self._in_view, self._in)):
                view.release()
                try:
                    mem.close()
                except BufferError:
                    pass  # a value still borrows the memory; the OS frees it at exit

    # -- internals -----------------------------------------------------------------------
    def _check(self) -> None:
        if self.closed:
            raise ConnectionError(f"channel to {self.peer} is closed")
        if self._broken:
            raise ConnectionError(f"channel to {self.peer} is unusable: {self._broken}")

    def _available(self) -> bool:
        return self._spill_pos < len(self._spill) or bool(self._chunks)

    def _write(self, view: memoryview, deadline: float | None) -> None:
        pos, total = 0, view.nbytes
        while pos < total:
            if self._out_fill == 0:
                while self._free == 0:
                    self._pump(deadline, spill=True)
            base = self._out_idx * self.slot + self._out_fill
            n = min(total - pos, self.slot - self._out_fill)
            self._out_view[base:base + n] = view[pos:pos + n]
            self._out_fill += n
            pos += n
            if self._out_fill == self.slot:
                self._flush()

    def _flush(self) -> None:
        self._send_acks(_TOKEN.pack(b"D", self._out_fill))
        self._free -= 1
        self._out_idx = (self._out_idx + 1) % SLOTS
        self._out_fill = 0

    def _readinto(self, view: memoryview, deadline: float | None) -> None:
        pos, total = 0, view.nbytes
        while pos < total:
            if self._spill_pos < len(self._spill):
                n = min(total - pos, len(self._spill) - self._spill_pos)
                view[pos:pos + n] = self._spill[self._spill_pos:self._spill_pos + n]
                self._spill_pos += n
                pos += n
                if self._spill_pos == len(self._spill):
                    self._spill = bytearray()
                    self._spill_pos = 0
            elif self._chunks:
                length = self._chunks[0]
                base = self._in_idx * self.slot
                n = min(total - pos, length - self._in_off)
                view[pos:pos + n] = self._in_view[base + self._in_off:base + self._in_off + n]
                self._in_off += n
                pos += n
                if self._in_off == length:
                    self._release_chunk()
                    if pos < total:
                        self._send_acks()  # mid-message: let the writer refill at once
            else:
                self._pump(deadline)

    def _release_chunk(self) -> None:
        """The first chunk is consumed: its slot goes back to the writer with the next ack."""
        self._chunks.popleft()
        self._in_off = 0
        self._in_idx = (self._in_idx + 1) % SLOTS
        self._unacked += 1

    def _send_acks(self, data: bytes = b"") -> None:
        """Send pending acks (and ``data``, a data token, in the same system call).

        Acks are held back while a message has just been completed, so that in a
        request-reply exchange they ride along with the reply's data token: one wake-up
        of the peer per message instead of two.
        """
        if self._unacked and not self._acks_off:
            data = _TOKEN.pack(b"A", self._unacked) + data
        self._unacked = 0
        if not data:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            if data[:1] == b"D" or len(data) > _TOKEN.size:
                raise
            # The writer finished and left; what it wrote is still in our mapping and its
            # last tokens may still be unread in the socket.
            self._acks_off = True

    def _pump(self, deadline: float | None, spill: bool = False) -> None:
        """Wait for tokens and apply them; with ``spill``, empty incoming slots too."""
        if spill and self._chunks:
            self._spill_all()
            return
        self._send_acks()  # never wait while holding slots the peer may be waiting for
        if self._peer_closed:
            raise ConnectionResetError(f"{self.peer} closed the channel")
        data = self._recv_tokens(deadline)
        if not data:
            self._peer_closed = True
            raise ConnectionResetError(f"{self.peer} closed the channel")
        self._tokens += data
        usable = len(self._tokens) - len(self._tokens) % _TOKEN.size
        for kind, value in _TOKEN.iter_unpack(bytes(self._tokens[:usable])):
            if kind == b"D":
                if not 0 < value <= self.slot:
                    raise WireError(f"bad chunk length {value} from {self.peer}")
                self._chunks.append(value)
            elif kind == b"A":
                self._free += value
            else:
                raise WireError(f"bad token {kind!r} from {self.peer}")
        del self._tokens[:usable]
        if spill and self._chunks:
            self._spill_all()

    def _recv_tokens(self, deadline: float | None) -> bytes:
        """Wait for the next tokens (b"" at the end of stream).

        The socket stays in blocking mode; the wait polls briefly before it sleeps
        (:class:`~nonsense_hpc.ipc.sockio.Spinner`), so a quick reply does not pay two
        process wake-ups.
        """
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._waiter.wait(left):
                raise TimeoutError(f"nothing from {self.peer} within the timeout")
            try:
                return self.sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue

    def _spill_all(self) -> None:
        """Move every received chunk into the spill buffer (frees the peer's slots)."""
        if self._spill_pos:
            del self._spill[:self._spill_pos]
            self._spill_pos = 0
        while self._chunks:
            base = self._in_idx * self.slot
            self._spill += self._in_view[base + self._in_off:base + self._chunks[0]]
            self._release_chunk()
        self._send_acks()
