"""The parameter server: holds the parameters, applies gradients as they come.

One ROUTER socket serves every worker; requests are handled one at a time in arrival
order, so workers never wait for each other, only for the server's turn. The protocol
is the wire format (docs/wire.md), JSON headers and raw float32 buffers, no pickle:

=============  =====================================  ====================================
request        fields                                 reply
=============  =====================================  ====================================
``ps.pull``    ``worker``                             ``ps.params``: ``version``, params
``ps.push``    ``worker``, ``version``, ``pull``;      ``ps.ack``: ``accepted``,
               array ``grad``                         ``staleness``, ``version``, ``stop``
                                                      (+ params when ``pull``)
``ps.stats``   -                                      ``ps.stats``: counters, history
``ps.stop``    -                                      ``ps.stats``, then the server exits
=============  =====================================  ====================================

A gradient computed on parameters of version ``v`` arriving when the server is at
version ``V`` has staleness ``V - v``. With ``max_staleness=s`` a gradient staler than
``s`` is dropped (the worker gets fresh parameters); ``staleness_lr="inverse"`` also
scales accepted gradients by ``1 / (1 + staleness)``. After ``max_updates`` applied
gradients every ack says ``stop``.

Example:
    >>> import numpy as np
    >>> ps = ParameterServer(np.zeros(4, np.float32), lr=0.5).start()
    >>> from nonsense_hpc.psgd.client import PSClient
    >>> with PSClient(ps.address, worker=0) as c:
    ...     params, version = c.pull()
    ...     ack = c.push(np.ones(4, np.float32), version)
    >>> ack.accepted, ack.version, float(ack.params[0])
    (True, 1, -0.5)
    >>> ps.stop()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc import wire
from nonsense_hpc.errors import ConfigError, DeviceError, WireError
from nonsense_hpc.trace.model import Log

__all__ = ["STALENESS_LR", "ParameterServer"]

STALENESS_LR = ("constant", "inverse")
Evaluate = Callable[[npt.NDArray[np.float32]], dict[str, float]]


class ParameterServer:
    """A parameter server in a background thread of this process.

    Args:
        params: the initial flat float32 parameter vector (copied).
        address: where to bind (``tcp://127.0.0.1:*`` picks a free port; loopback only
            unless ``public``).
        lr: SGD learning rate.
        momentum: SGD momentum (applied on the server, over every worker's gradients).
        max_staleness: drop gradients staler than this many versions (None: keep all).
        staleness_lr: ``"constant"`` or ``"inverse"`` (scale by 1 / (1 + staleness)).
        max_updates: after this many applied gradients, acks tell workers to stop.
        evaluate: called with the parameters every ``eval_every`` updates; its dict
            (e.g. test accuracy and loss) is added to :attr:`history`.
        eval_every: updates between two evaluations.
        publish: a Forwarder input to publish ``metrics.async`` to (for the dashboard).
        trace: record every exchange in :attr:`log` (actor ``server``).
        public: allow a non-loopback address.

    Raises:
        ConfigError: invalid settings or parameters.
    """

    def __init__(self, params: npt.ArrayLike, *, address: str = "tcp://127.0.0.1:*",
                 lr: float = 0.05, momentum: float = 0.0, max_staleness: int | None = None,
                 staleness_lr: str = "constant", max_updates: int | None = None,
                 evaluate: Evaluate | None = None, eval_every: int = 20,
                 publish: str | None = None, trace: bool = False,
                 public: bool = False) -> None:
        from nonsense_hpc.devices.security import check_bind_address

        flat = np.array(params, dtype=np.float32).reshape(-1)
        if flat.size == 0:
            raise ConfigError("the parameter server needs at least one parameter")
        if lr <= 0 or not 0 <= momentum < 1:
            raise ConfigError(f"need lr > 0 and 0 <= momentum < 1, got {lr}, {momentum}")
        if max_staleness is not None and max_staleness < 0:
            raise ConfigError(f"max_staleness must be >= 0 or None, got {max_staleness}")
        if staleness_lr not in STALENESS_LR:
            raise ConfigError(f"staleness_lr must be one of {STALENESS_LR}, "
                              f"got {staleness_lr!r}")
        if max_updates is not None and max_updates < 1:
            raise ConfigError(f"max_updates must be >= 1, got {max_updates}")
        if eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
        self.bind = check_bind_address(address, public)
        self.params = flat
        self._velocity = np.zeros_like(flat)
        self.lr, self.momentum = lr, momentum
        self.max_staleness, self.staleness_lr = max_staleness, staleness_lr
        self.max_updates, self.evaluate, self.eval_every = max_updates, evaluate, eval_every
        self.publish = publish
        self.log = Log("server")
        self.trace = trace
        self.version = 0
        self.samples = 0
        self.dropped = 0
        self.staleness_hist: dict[int, int] = {}
        self.workers: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.started = time.time()
        self.first_request: float | None = None
        self.address = ""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._pub: Any = None
        self._lock = threading.Lock()

    # --------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> ParameterServer:
        """Bind and serve in a background thread; :attr:`address` is then known.

        Raises:
            DeviceError: the address cannot be bound.
        """
        self._thread = threading.Thread(target=self._serve, name="nonsense-ps", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise DeviceError(f"parameter server failed to start: {self.error}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the socket. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the server stopped (``ps.stop`` or :meth:`stop`); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> ParameterServer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving
    def _serve(self) -> None:
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            try:
                sock.bind(self.bind)
            except zmq.ZMQError as exc:
                raise DeviceError(f"cannot bind {self.bind}: {exc}") from None
            self.address = str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
            if self.publish:
                from nonsense_hpc.devices import Publisher

                self._pub = Publisher(self.publish, job_id=None)
            self.started = time.time()
            self._evaluate()
            self._ready.set()
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart(copy=False)
                ident, body = frames[0], frames[1:]
                t0 = time.time()
                if self.first_request is None:
                    self.first_request = t0
                try:
                    msg = wire.decode(body)
                    with self._lock:
                        topic, data, arrays, stop = self._handle(msg, t0)
                except (WireError, ConfigError) as exc:
                    topic, data, arrays, stop = "ps.error", {"error": str(exc)}, None, False
                sock.send_multipart([ident, *wire.encode(topic, data, kind="result",
                                                         arrays=arrays)], copy=False)
                if stop:
                    break
        except BaseException as exc:
            self.error = exc
            self._ready.set()
        finally:
            self._stop.set()
            sock.close(0)
            if self._pub is not None:
                self._pub.close()
            ctx.term()

    def _handle(self, msg: wire.Message, t0: float
                ) -> tuple[str, dict[str, Any], Any, bool]:
        d = msg.data if isinstance(msg.data, dict) else {}
        worker = str(d.get("worker", msg.source))
        peer = f"worker {worker}"
        if msg.topic == "ps.pull":
            self._seen(worker, t0)
            self._record("pull", "recv", peer, 0, t0)
            self._record("params", "send", peer, self.params.nbytes, time.time())
            arrays = {"params": self.params.copy()}  # zero-copy send: never a live buffer
            return "ps.params", {"version": self.version}, arrays, False
        if msg.topic == "ps.push":
            return self._push(msg, d, worker, peer, t0)
        if msg.topic in ("ps.stats", "ps.stop"):
            return "ps.stats", self._stats(), None, msg.topic == "ps.stop"
        raise ConfigError(f"unknown request {msg.topic!r} (ps.pull, ps.push, ps.stats, "
                          "ps.stop)")

    def _push(self, msg: wire.Message, d: dict[str, Any], worker: str, peer: str,
              t0: float) -> tuple[str, dict[str, Any], Any, bool]:
        grad = msg.arrays.get("grad")
        if grad is None or grad.dtype != np.float32 or grad.size != self.params.size:
            got = "none" if grad is None else f"{grad.dtype} x {grad.size}"
            raise ConfigError(f"push needs a float32 'grad' of {self.params.size} values, "
                              f"got {got}")
        based_on = d.get("version")
        if not isinstance(based_on, int) or not 0 <= based_on <= self.version:
            raise ConfigError(f"push needs the version its gradient was computed on "
                              f"(0..{self.version}), got {based_on!r}")
        row = self._seen(worker, t0)
        self._record("push", "recv", peer, grad.nbytes, t0)
        staleness = self.version - based_on
        self.staleness_hist[staleness] = self.staleness_hist.get(staleness, 0) + 1
        done = self.max_updates is not None and self.version >= self.max_updates
        accepted = not done and (self.max_staleness is None or
                                 staleness <= self.max_staleness)
        if accepted:
            t1 = time.time()
            scale = 1.0 / (1 + staleness) if self.staleness_lr == "inverse" else 1.0
            if self.momentum:
                self._velocity *= self.momentum
                self._velocity += grad
                self.params -= (self.lr * scale) * self._velocity
            else:
                self.params -= (self.lr * scale) * grad
            self.version += 1
            self.samples += int(d.get("samples") or 0)
            row["accepted"] += 1
            self._record("push", "apply", None, grad.nbytes, t1)
            if self.version % self.eval_every == 0 or self.version == self.max_updates:
                self._evaluate()
        elif not done:
            self.dropped += 1
            row["dropped"] += 1
        stop = self.max_updates is not None and self.version >= self.max_updates
        reply = {"accepted": accepted, "staleness": staleness, "version": self.version,
                 "stop": stop}
        want = bool(d.get("pull", True)) and not stop
        self._record("params" if want else "ack", "send", peer,
                     self.params.nbytes if want else 0, time.time())
        return "ps.ack", reply, ({"params": self.params.copy()} if want else None), False

    def _seen(self, worker: str, t: float) -> dict[str, Any]:
        row = self.workers.setdefault(worker, {"accepted": 0, "dropped": 0, "requests": 0})
        row["requests"] += 1
        row["last_seen"] = t
        return row

    def _record(self, op: str, phase: str, peer: str | None, nbytes: int, t0: float) -> None:
        if self.trace:
            self.log.record(op, phase, peer=peer, nbytes=nbytes, start=t0, end=time.time())

    def _evaluate(self) -> None:
        if self.evaluate is None:
            return
        # The clock starts with the first request: worker start-up is not training time.
        origin = self.first_request if self.first_request is not None else time.time()
        point: dict[str, Any] = {"time": time.time() - origin, "updates": self.version,
                                 "samples": self.samples}
        point.update({k: float(v) for k, v in self.evaluate(self.params).items()})
        self.history.append(point)
        if self._pub is not None:
            metrics = {k: v for k, v in point.items() if k not in ("time", "updates")}
            metrics["dropped"] = self.dropped
            self._pub.metric("async", metrics, step=self.version)

    def stats(self) -> dict[str, Any]:
        """Counters: version, samples, dropped, staleness histogram, per-worker rows."""
        with self._lock:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        return {"version": self.version, "samples": self.samples, "dropped": self.dropped,
                "max_staleness": self.max_staleness,
                "staleness": {str(k): v for k, v in sorted(self.staleness_hist.items())},
                "workers": {k: dict(v) for k, v in self.workers.items()},
                "history": list(self.history), "elapsed": time.time() - self.started}
