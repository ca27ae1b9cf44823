"""A named single-writer, many-reader work queue (torch-ipc's ``ipc.workqueue``).

The first process to open a name *owns* the queue: it writes work items and reads the
answers. Every other process that opens the same name (typically the workers of
:func:`nonsense_hpc.ipc.map`) is a *reader*: ``read()`` takes the next work item and
``write()`` sends an answer back to the owner. When the owner closes the queue, readers
get ``None`` once the remaining items are taken, which ends the seed's worker loop::

    q = ipc.workqueue("my queue")
    workers = ipc.map(2, worker)         # each worker: q = ipc.workqueue("my queue") ...
    for name in ("f1", "f2", "f3"):
        q.write(name)
    answers = [q.read() for _ in range(3)]
    q.close()
    workers.join()

Names are local to a *scope*: the environment variable ``NONSENSE_IPC_SCOPE`` if set,
else the process id of the process that first opened a queue; :func:`ipc.map` passes its
scope to its workers, so they find their parent's queues. The rendezvous is a Linux
abstract Unix socket (no file to clean up, gone when the owner exits). Items travel in
the safe encoding of :mod:`nonsense_hpc.ipc.codec`.
"""

from __future__ import annotations

import collections
import hashlib
import os
import selectors
import socket
import threading
import time
from typing import Any

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import codec, frames
from nonsense_hpc.ipc.connection import Connection, send_views

__all__ = ["SCOPE_ENV", "WorkQueue", "scope", "workqueue"]

SCOPE_ENV = "NONSENSE_IPC_SCOPE"


def scope() -> str:
    """The name scope of this process (``$NONSENSE_IPC_SCOPE``, set on first use)."""
    value = os.environ.get(SCOPE_ENV)
    if not value:
        value = str(os.getpid())
        os.environ[SCOPE_ENV] = value
    return value


_OWNED: dict[str, _Broker] = {}


def _address(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:40]
    return f"\0nonsense_hpc.wq.{scope()}.{digest}"


class WorkQueue:
    """One end of a named work queue; create it with :func:`workqueue`.

    Attributes:
        name: the queue's name.
        owner: True in the process that created the queue (the writer of work).
    """

    def __init__(self, name: str, owner: bool, sock: socket.socket) -> None:
        self.name = name
        self.owner = owner
        self.closed = False
        self._lock = threading.Lock()
        if owner:
            self._broker: _Broker | None = _Broker(sock, name)
            self._conn: Connection | None = None
        else:
            self._broker = None
            # Readers usually outnumber the CPUs and each wait is a round trip through the
            # owner's broker thread: polling while waiting would take the broker's CPU.
            self._conn = Connection(sock, f"workqueue {name!r} owner", spin=False)

    def __repr__(self) -> str:
        role = "owner" if self.owner else "reader"
        return f"<WorkQueue {self.name!r} {role}{' closed' if self.closed else ''}>"

    def __enter__(self) -> WorkQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, value: Any) -> None:
        """Queue a work item (owner) or send an answer back to the owner (reader).

        The value is encoded (and copied) now, so changing it afterwards does not change
        what is read.

        Raises:
            TypeError: the value cannot be sent; nothing is queued.
            ValueError: the owner already closed the queue.
        """
        if self._broker is not None:
            enc = codec.encode(["item", value])
            if self.closed:
                raise ValueError(f"workqueue {self.name!r} is closed")
            self._broker.put(b"".join(frames.frame_buffers(enc)))
            return
        enc = codec.encode(["write", value])
        if self._conn is None or self.closed:
            raise ConnectionError(f"workqueue {self.name!r} is closed")
        with self._lock:
            send_views(self._conn.sock, frames.frame_buffers(enc))

    def read(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the next item: an answer (owner) or a work item (reader).

        Args:
            block: wait for an item; with False, return None at once when there is none.
            timeout: seconds to wait (None: until an item comes or the queue closes).

        Returns:
            The item, or None when the queue is closed and empty (or, with
            ``block=False``, empty now).

        Raises:
            TimeoutError: nothing came within ``timeout``.
        """
        if self._broker is not None:
            return self._broker.answer(block, timeout)
        with self._lock:
            if self.closed or self._conn is None:
                return None
            try:
                self._conn.send(["read", block])
                reply = self._conn.recv(timeout=timeout)
            except ConnectionError:
                self.closed = True
                return None  # the owner is gone: the queue is over
        if not isinstance(reply, list) or not reply:
            raise WireError(f"bad reply from workqueue {self.name!r}: {reply!r}")
        return reply[1] if reply[0] == "item" else None

    def drain(self, timeout: float | None = None) -> None:
        """Owner: wait until readers took every item written so far.

        Raises:
            TimeoutError: items were still queued after ``timeout`` seconds.
        """
        if self._broker is None:
            raise ValueError("drain() is for the owner of the workqueue")
        self._broker.drain(timeout)

    def close(self) -> None:
        """Owner: no more items; readers get None once the queue is empty. Reader: leave.

        The owner keeps answering late readers (with None) until the process exits or the
        name is opened again.
        """
        if self.closed:
            return
        self.closed = True
        if self._broker is not None:
            self._broker.close()
        elif self._conn is not None:
            self._conn.close()


def workqueue(name: str, *, create: bool | None = None, timeout: float = 30.0) -> WorkQueue:
    """Open the work queue ``name``, creating it if nobody owns it yet.

    Args:
        name: any string; processes of one scope that use the same name share the queue.
        create: True: must create it (fail if it exists); False: must open an existing
            one (retrying until ``timeout``, for workers that may start first);
            None: create or open, as in torch-ipc.
        timeout: seconds to wait for an existing queue when ``create`` is False.

    Raises:
        FileExistsError: ``create=True`` and the name is taken.
        FileNotFoundError: ``create=False`` and nobody created it within ``timeout``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"workqueue name must be a non-empty string, got {name!r}")
    address = _address(name)
    deadline = time.monotonic() + timeout
    while True:
        if create is not False:
            old = _OWNED.get(address)
            if old is not None and old.closing:
                # This process owned the name and closed it; the broker kept answering
                # "closed" to late readers. Reopening the name starts a new queue.
                old.stop()
                _OWNED.pop(address, None)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(address)
                listener.listen(128)
                queue = WorkQueue(name, True, listener)
                assert queue._broker is not None
                _OWNED[address] = queue._broker
                return queue
            except OSError:
                listener.close()
                if create:
                    raise FileExistsError(f"workqueue {name!r} already exists") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            return WorkQueue(name, False, sock)
        except OSError:
            sock.close()
        if create is None:
            continue  # the owner went away between bind and connect: try again
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no workqueue {name!r} in scope {scope()} "
                                    f"within {timeout} s")
        time.sleep(0.01)  # poll for the owner to appear


class _Broker:
    """The owner's side: a thread that hands items to readers and collects answers."""

    def __init__(self, listener: socket.socket, name: str) -> None:
        self.listener = listener
        self.name = name
        self.items: collections.deque[bytes] = collections.deque()
        self.answers: collections.deque[Any] = collections.deque()
        self.cond = threading.Condition()
        self.closing = False
        self.stopping = False
        self.stopped = False
        self.readers: list[Connection] = []
        self.waiting: collections.deque[Connection] = collections.deque()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.thread = threading.Thread(target=self._run, name=f"workqueue {name}",
                                       daemon=True)
        self.thread.start()

    def put(self, frame: bytes) -> None:
        with self.cond:
            self.items.append(frame)
        self._wake()

    def answer(self, block: bool, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.answers:
                if not block or self.stopped or (self.closing and not self.readers):
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no answer on workqueue {self.name!r} within "
                                       f"{timeout} s")
                self.cond.wait(left)
            return self.answers.popleft()

    def drain(self, timeout: float | None) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: not self.items or self.stopped, timeout):
                raise TimeoutError(f"{len(self.items)} items still queued on workqueue "
                                   f"{self.name!r} after {timeout} s")

    def close(self) -> None:
        with self.cond:
            self.closing = True
        self._wake()

    def stop(self) -> None:
        """End the broker thread: readers still connected see the end of the queue."""
        self.stopping = True
        self._wake()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=10.0)

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self.stopping:
                for key, _ in sel.select():
                    if key.data == "accept":
                        sock, _ = self.listener.accept()
                        conn = Connection(sock, f"workqueue {self.name!r} reader")
                        self.readers.append(conn)
                        sel.register(sock, selectors.EVENT_READ, conn)
                    elif key.data == "wake":
                        try:
                            self.wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                    else:
                        self._serve(key.data, sel)
                        while key.data.buffered() and not key.data.closed:
                            self._serve(key.data, sel)  # frames already read ahead
                self._dispatch()
        finally:
            with self.cond:
                self.stopped = True
                self.cond.notify_all()
            for conn in self.readers:
                conn.close()
            sel.close()
            self.listener.close()
            self.wake_r.close()
            self.wake_w.close()

    def _serve(self, conn: Connection, sel: selectors.BaseSelector) -> None:
        try:
            msg = conn.recv()
        except (ConnectionError, OSError, WireError):
            self._drop(conn, sel)
            return
        if isinstance(msg, list) and msg and msg[0] == "write" and len(msg) == 2:
            with self.cond:
                self.answers.append(msg[1])
                self.cond.notify_all()
        elif isinstance(msg, list) and msg and msg[0] == "read":
            self.waiting.append(conn)
            if len(msg) > 1 and msg[1] is False:
                self._dispatch()
                if conn in self.waiting:  # nothing to give right now
                    self.waiting.remove(conn)
                    self._reply(conn, b"")
        else:
            self._drop(conn, sel)

    def _dispatch(self) -> None:
        while self.waiting:
            with self.cond:
                if self.items:
                    frame = self.items.popleft()
                    if not self.items:
                        self.cond.notify_all()
                elif self.closing:
                    frame = b""
                else:
                    return
            self._reply(self.waiting.popleft(), frame)

    def _reply(self, conn: Connection, frame: bytes) -> None:
        # Items were encoded as ["item", value] when written; b"" means "closed".
        try:
            if frame:
                send_views(conn.sock, [memoryview(frame)])
            else:
                conn.send(["closed"])
        except OSError:
            conn.close()
            if conn in self.readers:
                self.readers.remove(conn)

    def _drop(self, conn: Connection, sel: selectors.BaseSelector) -> None:
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()
        if conn in self.readers:
            self.readers.remove(conn)
        if conn in self.waiting:
            self.waiting.remove(conn)
        with self.cond:
            self.cond.notify_all()
