"""The worker's side of the parameter server: pull parameters, push gradients.

A DEALER socket with request ids, so a timed-out request never leaves the socket stuck
(as a REQ socket would): a late reply to an abandoned request is recognised and dropped.

Example:
    >>> from nonsense_hpc.psgd.client import PSClient      # doctest: +SKIP
    >>> with PSClient("tcp://127.0.0.1:5700", worker=3) as ps:
    ...     params, version = ps.pull()
    ...     ack = ps.push(grad, version)                    # ack.params: the new ones
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc import wire
from nonsense_hpc.errors import ConfigError, ServerTimeoutError
from nonsense_hpc.trace.model import Log

__all__ = ["Ack", "PSClient", "ServerTimeoutError"]


@dataclass(frozen=True)
class Ack:
    """The server's answer to a push.

    Attributes:
        accepted: the gradient was applied (False: too stale, or the run is over).
        staleness: server version minus the version the gradient was computed on.
        version: the server's version after this push.
        stop: the server reached its update budget: stop training.
        params: the new parameters (when the push asked for them and not ``stop``).
    """

    accepted: bool
    staleness: int
    version: int
    stop: bool
    params: npt.NDArray[np.float32] | None


class PSClient:
    """Talks to a :class:`~nonsense_hpc.psgd.server.ParameterServer`.

    Args:
        address: the server's address.
        worker: this worker's id (shown in stats and traces).
        timeout: seconds to wait for each answer.
        trace: record every exchange in :attr:`log` (actor ``worker N``).
    """

    def __init__(self, address: str, worker: int | str, *, timeout: float = 30.0,
                 trace: bool = False) -> None:
        import zmq

        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        self.address, self.worker, self.timeout = address, str(worker), timeout
        self.log = Log(f"worker {worker}")
        self.trace = trace
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(address)
        self._next = 0

    def _call(self, topic: str, data: dict[str, Any], arrays: Any = None) -> wire.Message:
        self._next += 1
        rid = f"{self.worker}-{self._next}"
        self._sock.send_multipart(wire.encode(topic, {**data, "worker": self.worker},
                                              kind="task", task_id=rid, arrays=arrays),
                                  copy=False)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1):
                raise ServerTimeoutError(
                    f"parameter server {self.address} did not answer {topic} within "
                    f"{self.timeout:g} s (dead, stuck or unreachable?)")
            msg = wire.decode(self._sock.recv_multipart(copy=False))
            if msg.task_id not in (None, rid):
                continue  # the late answer to an abandoned request
            if msg.topic == "ps.error":
                raise ConfigError(f"parameter server refused {topic}: "
                                  f"{(msg.data or {}).get('error')}")
            return msg

    def pull(self) -> tuple[npt.NDArray[np.float32], int]:
        """The current parameters and their version."""
        t0 = time.time()
        msg = self._call("ps.pull", {})
        params = msg.arrays["params"]
        if self.trace:
            self.log.record("pull", "send", peer="server", nbytes=0, start=t0, end=t0)
            self.log.record("params", "recv", peer="server", nbytes=params.nbytes,
                            start=t0, end=time.time())
        return params, int(msg.data["version"])

    def push(self, grad: npt.ArrayLike, version: int, *, samples: int = 0,
             pull: bool = True) -> Ack:
        """Send a gradient computed on parameters of ``version``.

        Args:
            grad: the flat float32 gradient.
            version: the version of the parameters it was computed on.
            samples: training samples behind it (counted by the server).
            pull: ask for the new parameters in the same round trip.

        Raises:
            ServerTimeoutError: no answer within the timeout.
            ConfigError: the server refused the gradient (wrong size or version).
        """
        g = np.ascontiguousarray(grad, dtype=np.float32).reshape(-1)
        t0 = time.time()
        msg = self._call("ps.push", {"version": int(version), "samples": int(samples),
                                     "pull": pull}, arrays={"grad": g})
        d = msg.data
        params = msg.arrays.get("params")
        if self.trace:
            self.log.record("push", "send", peer="server", nbytes=g.nbytes, start=t0,
                            end=t0)
            self.log.record("ack" if params is None else "params", "recv", peer="server",
                            nbytes=0 if params is None else params.nbytes, start=t0,
                            end=time.time())
        return Ack(bool(d["accepted"]), int(d["staleness"]), int(d["version"]),
                   bool(d["stop"]), params)

    def stats(self) -> dict[str, Any]:
        """The server's counters and evaluation history."""
        return dict(self._call("ps.stats", {}).data)

    def stop_server(self) -> dict[str, Any]:
        """Ask the server to stop; returns its final stats."""
        return dict(self._call("ps.stop", {}).data)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self) -> PSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
