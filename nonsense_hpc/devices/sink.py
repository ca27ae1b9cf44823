"""The end of a task pipeline: collects results and de-duplicates them by task id.

Re-dispatch (Broker) or a retried feeder can produce a task's result twice; the Sink
hands each ``task_id`` to the application once and counts the rest in
:attr:`Sink.duplicates`.
"""

from __future__ import annotations

import time
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.devices import security
from nonsense_hpc.errors import WireError

__all__ = ["Sink"]


class Sink:
    """PULL socket that yields each task's result exactly once.

    Args:
        address: where workers or the Broker push results.
        bind: bind (default, the sink is the stable end) or connect.
        public: allow binding a non-loopback interface.
        max_bytes: largest message accepted.
        curve_dir: serve CURVE with these keys.

    Example:
        >>> with Sink("tcp://127.0.0.1:*") as sink:              # doctest: +SKIP
        ...     results = sink.collect(100, timeout=60)           # task_id -> Message
    """

    def __init__(self, address: str, *, bind: bool = True, public: bool = False,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, curve_dir: str | None = None
                 ) -> None:
        import zmq

        self._ctx: Any = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        self._auth: Any = None
        if curve_dir:
            if bind:
                self._auth = security.start_authenticator(self._ctx, curve_dir)
                security.configure_server(self._sock, curve_dir)
            else:
                security.configure_client(self._sock, curve_dir)
        if bind:
            self._sock.bind(security.check_bind_address(address, public))
            raw: Any = self._sock.getsockopt(zmq.LAST_ENDPOINT)
            self.address = raw.decode() if isinstance(raw, bytes) else str(raw)
        else:
            self.address = security.normalize_address(address)
            self._sock.connect(self.address)
        self.max_bytes = max_bytes
        self.seen: set[str] = set()
        self.received = 0
        self.duplicates = 0
        self.malformed = 0

    def recv(self, timeout: float | None = None) -> wire.Message | None:
        """The next result whose task id was not seen before; None on timeout.

        Results without a task id are passed through (nothing to de-duplicate on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sock.poll(None if left is None else int(left * 1000)):
                return None
            frames = self._sock.recv_multipart(copy=False)
            self.received += 1
            try:
                msg = wire.decode(frames, max_bytes=self.max_bytes)
            except WireError:
                self.malformed += 1
                continue
            if msg.task_id is not None:
                if msg.task_id in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(msg.task_id)
            return msg

    def collect(self, count: int, timeout: float) -> dict[str, wire.Message]:
        """Receive until ``count`` distinct results arrived.

        Raises:
            TimeoutError: fewer than ``count`` arrived within ``timeout`` seconds (the
                message says how many did).
        """
        out: dict[str, wire.Message] = {}
        deadline = time.monotonic() + timeout
        while len(out) < count:
            msg = self.recv(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise TimeoutError(f"sink got {len(out)} of {count} results within "
                                   f"{timeout} s ({self.duplicates} duplicates dropped)")
            out[msg.task_id or f"#{self.received}"] = msg
        return out

    def close(self) -> None:
        """Close the socket and its context."""
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
