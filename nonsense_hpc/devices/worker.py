"""The worker side of the Broker (Paranoid Pirate) and of a plain Streamer.

:class:`BrokerWorker` keeps its DEALER socket in a background I/O thread that heartbeats
the Broker while the calling thread computes, so a long task does not look like a dead
worker. When the Broker goes silent for ``liveness`` heartbeats the thread reconnects
with exponential back-off (up to ``max_backoff`` seconds) and says ``ready`` again.

:class:`StreamWorker` pulls tasks from a Streamer's output and pushes results to a sink:
no acknowledgement, so a task held by a dying worker is lost (use the Broker for that).

Both offer ``get(timeout) -> Message | None`` and ``reply(task, data, arrays=...)``.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.devices import security
from nonsense_hpc.errors import DeviceError, WireError

__all__ = ["BrokerWorker", "StreamWorker"]


class BrokerWorker:
    """A worker connected to a :class:`~nonsense_hpc.devices.broker.Broker`.

    Args:
        address: the Broker's worker address (its ``backend``).
        heartbeat: seconds between heartbeats (match the Broker's).
        liveness: Broker heartbeats missed before reconnecting.
        max_backoff: longest pause between reconnection attempts.
        curve_dir: CURVE keys (client ``client``) when the Broker serves CURVE.
        job_id: stamped on results. rank: stamped on results.

    Example:
        >>> with BrokerWorker("tcp://127.0.0.1:5562") as w:      # doctest: +SKIP
        ...     while (task := w.get(timeout=10)) is not None:
        ...         w.reply(task, {"square": task.data["x"] ** 2})
    """

    def __init__(self, address: str, *, heartbeat: float = 0.5, liveness: int = 3,
                 max_backoff: float = 8.0, curve_dir: str | None = None,
                 job_id: str | None = None, rank: int | None = None) -> None:
        import zmq

        self.address = security.normalize_address(address)
        self.heartbeat, self.liveness, self.max_backoff = heartbeat, liveness, max_backoff
        self.curve_dir = curve_dir
        self.encoder = wire.Encoder(job_id=job_id, rank=rank)
        self.reconnects = 0
        self._ctx: Any = zmq.Context()
        tag = uuid.uuid4().hex[:12]
        self._pipe = self._ctx.socket(zmq.PAIR)
        self._pipe.bind(f"inproc://worker-{tag}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._io, args=(f"inproc://worker-{tag}",),
                                        name="nonsense-broker-worker", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- caller side
    def get(self, timeout: float | None = None) -> wire.Message | None:
        """The next task, or None when none arrives within ``timeout`` seconds."""
        if not self._thread.is_alive():
            raise DeviceError("the worker's I/O thread has stopped")
        if not self._pipe.poll(None if timeout is None else int(timeout * 1000)):
            return None
        return wire.decode(self._pipe.recv_multipart(copy=False))

    def reply(self, task: wire.Message, data: Any = None, **kwargs: Any) -> None:
        """Send the result of ``task`` (acknowledges it); ``kwargs`` as for wire.encode."""
        if task.task_id is None:
            raise WireError("cannot reply to a task without task_id")
        kwargs.setdefault("step", task.step)
        frames = self.encoder.encode(task.topic.replace("tasks", "results", 1), data,
                                     kind="result", task_id=task.task_id, **kwargs)
        self._pipe.send_multipart(frames, copy=False)

    def close(self) -> None:
        """Stop the I/O thread and close the sockets."""
        self._stop.set()
        self._thread.join(5)
        self._pipe.close(0)
        self._ctx.term()

    def __enter__(self) -> BrokerWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- I/O thread
    def _connect(self, zmq: Any) -> Any:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve_dir:
            security.configure_client(sock, self.curve_dir)
        sock.connect(self.address)
        return sock

    def _io(self, pipe_address: str) -> None:
        import zmq

        pipe = self._ctx.socket(zmq.PAIR)
        pipe.connect(pipe_address)
        dealer = self._connect(zmq)
        ready = True
        # heartbeats get their own encoder: the caller's thread owns self.encoder
        beats = wire.Encoder(job_id=self.encoder.job_id, rank=self.encoder.rank,
                             source=f"{self.encoder.source}/io")
        dealer.send_multipart(beats.encode("ready", {"cmd": "ready"}, kind="control"))
        poller = zmq.Poller()
        poller.register(pipe, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        expiry = time.monotonic() + self.heartbeat * self.liveness
        next_beat = time.monotonic() + self.heartbeat
        backoff = self.heartbeat
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(int(self.heartbeat * 250) + 1))
                now = time.monotonic()
                if dealer in events:
                    frames = dealer.recv_multipart(copy=False)
                    expiry = now + self.heartbeat * self.liveness
                    backoff = self.heartbeat
                    try:
                        msg = wire.decode(frames)
                    except WireError:
                        continue
                    if msg.kind != "heartbeat":  # a task (or a stop request)
                        ready = False
                        pipe.send_multipart(frames, copy=False)
                if pipe in events:
                    dealer.send_multipart(pipe.recv_multipart(copy=False), copy=False)
                    ready = True
                if now >= next_beat:
                    dealer.send_multipart(beats.encode(
                        "heartbeat", {"ready": ready}, kind="heartbeat"))
                    next_beat = now + self.heartbeat
                if now > expiry:  # broker silent: reconnect with back-off
                    poller.unregister(dealer)
                    dealer.close(0)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    dealer = self._connect(zmq)
                    poller.register(dealer, zmq.POLLIN)
                    self.reconnects += 1
                    if ready:
                        dealer.send_multipart(beats.encode(
                            "ready", {"cmd": "ready"}, kind="control"))
                    expiry = time.monotonic() + self.heartbeat * self.liveness
        finally:
            # flush results the caller handed over just before close()
            while pipe.poll(0):
                dealer.send_multipart(pipe.recv_multipart(copy=False), copy=False)
            dealer.close(linger=2000)
            pipe.close(0)


class StreamWorker:
    """A worker of a plain Streamer: PULL tasks, PUSH results to a sink.

    Args:
        tasks: the Streamer's output address.
        results: the sink's address.
        curve_dir: CURVE keys when the devices serve CURVE.
        job_id: stamped on results. rank: stamped on results.
    """

    def __init__(self, tasks: str, results: str, *, curve_dir: str | None = None,
                 job_id: str | None = None, rank: int | None = None) -> None:
        import zmq

        self._ctx: Any = zmq.Context()
        self.encoder = wire.Encoder(job_id=job_id, rank=rank)
        self._pull = self._ctx.socket(zmq.PULL)
        self._push = self._ctx.socket(zmq.PUSH)
        for sock, addr in ((self._pull, tasks), (self._push, results)):
            sock.setsockopt(zmq.LINGER, 5000)
            if curve_dir:
                security.configure_client(sock, curve_dir)
            sock.connect(security.normalize_address(addr))

    def get(self, timeout: float | None = None) -> wire.Message | None:
        """The next task, or None when none arrives within ``timeout`` seconds."""
        if not self._pull.poll(None if timeout is None else int(timeout * 1000)):
            return None
        return wire.decode(self._pull.recv_multipart(copy=False))

    def reply(self, task: wire.Message, data: Any = None, **kwargs: Any) -> None:
        """Push the result of ``task`` to the sink; ``kwargs`` as for wire.encode."""
        kwargs.setdefault("step", task.step)
        self.encoder.send(self._push, task.topic.replace("tasks", "results", 1), data,
                          kind="result", task_id=task.task_id, **kwargs)

    def close(self) -> None:
        """Close the sockets (pending results are flushed for up to 5 s)."""
        self._pull.close(0)
        self._push.close()
        self._ctx.term()

    def __enter__(self) -> StreamWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
