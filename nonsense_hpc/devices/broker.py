"""A reliable task broker: acknowledged tasks, worker heartbeats, re-dispatch.

The plain Streamer loses a task when the worker holding it dies. The Broker follows the
ZeroMQ guide's Paranoid Pirate pattern::

    feeders --PUSH--> [PULL frontend] Broker [ROUTER backend] <--DEALER-- workers
                                        |
                                        +--PUSH--> sink (results, de-duplicated by task_id)

* Tasks are wire messages with ``kind="task"`` and a ``task_id``; the Broker queues them
  and hands each to one idle worker (least recently used first).
* A worker says ``ready`` (kind ``control``), sends ``heartbeat`` messages while alive, and
  answers each task with a ``result`` carrying the same ``task_id``: that result is the
  acknowledgement. The Broker forwards the first result per task to the sink.
* The Broker heartbeats every worker; a worker silent for ``liveness`` heartbeats is dead,
  and its unacknowledged tasks go back to the front of the queue (re-dispatch).
* A late result from a worker declared dead still counts if it is the first one; later
  duplicates are dropped here and again at the sink (:class:`~nonsense_hpc.devices.sink.Sink`).

The Broker state lives in memory: supervise it (a restarted Broker starts empty).
"""

from __future__ import annotations

import collections
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.devices import security
from nonsense_hpc.devices.control import COMMANDS, parse_command
from nonsense_hpc.devices.runner import Launchable, endpoint_of
from nonsense_hpc.errors import ConfigError, DeviceError, WireError

__all__ = ["Broker"]


@dataclass
class _Worker:
    identity: bytes
    expiry: float
    busy: dict[str, Any] = field(default_factory=dict)  # task_id -> task frames


class Broker(Launchable):
    """Paranoid Pirate task broker.

    Args:
        frontend: address feeders PUSH tasks to (bound PULL).
        backend: address workers connect their DEALER to (bound ROUTER).
        results: address of the sink the Broker PUSHes results to (connected).
        control: address of the REP control socket (default: random 127.0.0.1 port).
        heartbeat: seconds between heartbeats.
        liveness: heartbeats a worker may miss before it is declared dead.
        max_bytes: largest message accepted.
        max_queue: tasks held before the Broker stops reading feeders (back-pressure).
        public: allow binding non-loopback interfaces.
        curve_dir: serve CURVE with these keys.

    Raises:
        ConfigError: invalid address or setting.
    """

    name = "broker"

    def __init__(self, frontend: str, backend: str, results: str, *,
                 control: str | None = None, heartbeat: float = 0.5, liveness: int = 3,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, max_queue: int = 100_000,
                 public: bool = False, curve_dir: str | None = None) -> None:
        if heartbeat <= 0 or liveness < 1 or max_queue < 1:
            raise ConfigError(f"need heartbeat > 0, liveness >= 1, max_queue >= 1; got "
                              f"{heartbeat}, {liveness}, {max_queue}")
        self.frontend = security.check_bind_address(frontend, public)
        self.backend = security.check_bind_address(backend, public)
        self.results = security.normalize_address(results)
        self.control_addr = security.check_bind_address(control or "tcp://127.0.0.1:*",
                                                        public)
        self.heartbeat, self.liveness = heartbeat, liveness
        self.max_bytes, self.max_queue, self.curve_dir = max_bytes, max_queue, curve_dir
        self._config = {"frontend": frontend, "backend": backend, "results": results,
                        "control": control, "heartbeat": heartbeat, "liveness": liveness,
                        "max_bytes": max_bytes, "max_queue": max_queue, "public": public,
                        "curve_dir": curve_dir}
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self.queue: collections.deque[tuple[str, list[Any]]] = collections.deque()
        self.workers: dict[bytes, _Worker] = {}
        self.idle: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.done: set[str] = set()
        self.counters = dict.fromkeys(
            ("tasks_in", "dispatched", "redispatched", "results", "duplicates",
             "dropped_malformed", "workers_seen", "workers_lost"), 0)
        self.last_redispatch_s: float | None = None
        self.state = "running"

    # ------------------------------------------------------------------ the loop
    def run(self, on_ready: Any = None) -> None:
        """Run the broker in the calling thread until TERMINATE.

        Raises:
            DeviceError: a socket cannot be bound.
        """
        import zmq

        self._reset()
        ctx = zmq.Context()
        auth = security.start_authenticator(ctx, self.curve_dir) if self.curve_dir else None
        socks: dict[str, Any] = {}
        try:
            for role, kind, addr, bind in (("front", zmq.PULL, self.frontend, True),
                                           ("back", zmq.ROUTER, self.backend, True),
                                           ("sink", zmq.PUSH, self.results, False),
                                           ("ctl", zmq.REP, self.control_addr, True)):
                sock = socks[role] = ctx.socket(kind)
                sock.setsockopt(zmq.LINGER, 0 if role != "sink" else 2000)
                sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
                if self.curve_dir and role in ("front", "back"):
                    security.configure_server(sock, self.curve_dir)
                try:
                    sock.bind(addr) if bind else sock.connect(addr)
                except zmq.ZMQError as exc:
                    raise DeviceError(f"broker cannot {'bind' if bind else 'connect'} "
                                      f"{addr}: {exc}") from None
            self.endpoints = {"in": endpoint_of(socks["front"]),
                              "workers": endpoint_of(socks["back"]),
                              "results": self.results, "control": endpoint_of(socks["ctl"])}
            self._started = time.time()
            if on_ready is not None:
                on_ready(dict(self.endpoints))
            self._loop(zmq, socks)
        finally:
            for sock in socks.values():
                sock.close()
            if auth is not None:
                auth.stop()
            ctx.term()

    def _loop(self, zmq: Any, socks: dict[str, Any]) -> None:
        front, back, ctl = socks["front"], socks["back"], socks["ctl"]
        poller = zmq.Poller()
        poller.register(back, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)
        reading_front = False
        next_beat = time.monotonic() + self.heartbeat
        while self.state != "terminated":
            want_front = self.state == "running" and len(self.queue) < self.max_queue
            if want_front != reading_front:
                poller.register(front, zmq.POLLIN) if want_front else poller.unregister(front)
                reading_front = want_front
            timeout = max(0.0, next_beat - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if ctl in events:
                ctl.send(json.dumps(self._command(ctl.recv())).encode())
            if back in events:
                for _ in range(1000):  # drain a burst before polling again
                    try:
                        frames = back.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._from_worker(frames, socks["sink"])
            if front in events:
                for _ in range(1000):
                    if len(self.queue) >= self.max_queue:
                        break
                    try:
                        frames = front.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._task_in(frames)
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat(back, now)
                next_beat = now + self.heartbeat
            if self.state == "running":
                self._dispatch(back)

    # ------------------------------------------------------------------ handlers
    def _task_in(self, frames: list[Any]) -> None:
        try:
            msg = wire.decode(frames, max_bytes=self.max_bytes)
        except WireError:
            self.counters["dropped_malformed"] += 1
            return
        if msg.task_id is None:
            self.counters["dropped_malformed"] += 1  # a task must say who it is
            return
        self.counters["tasks_in"] += 1
        self.queue.append((msg.task_id, frames))

    def _from_worker(self, frames: list[Any], sink: Any) -> None:
        identity, body = frames[0].bytes, frames[1:]
        try:
            msg = wire.decode(body, max_bytes=self.max_bytes)
        except WireError:
            self.counters["dropped_malformed"] += 1
            return
        expiry = time.monotonic() + self.heartbeat * self.liveness
        worker = self.workers.get(identity)
        if worker is None:
            worker = self.workers[identity] = _Worker(identity, expiry)
            self.counters["workers_seen"] += 1
            if msg.kind == "heartbeat" and not (msg.data or {}).get("ready", True):
                pass  # busy with a task we no longer track: wait for its result
            else:
                self.idle[identity] = None
        worker.expiry = expiry
        if msg.kind == "control" and isinstance(msg.data, dict) and \
                msg.data.get("cmd") == "ready":
            if not worker.busy:
                self.idle[identity] = None
        elif msg.kind == "result" and msg.task_id is not None:
            worker.busy.pop(msg.task_id, None)
            if not worker.busy:
                self.idle[identity] = None
            if msg.task_id in self.done:
                self.counters["duplicates"] += 1
                return
            self.done.add(msg.task_id)
            self._drop_queued(msg.task_id)
            self.counters["results"] += 1
            sink.send_multipart(body, copy=False)

    def _drop_queued(self, task_id: str) -> None:
        # a late result for a task already queued again: no need to run it twice
        if self.queue and any(t == task_id for t, _ in self.queue):
            self.queue = collections.deque((t, f) for t, f in self.queue if t != task_id)

    def _dispatch(self, back: Any) -> None:
        while self.queue and self.idle:
            identity, _ = self.idle.popitem(last=False)
            worker = self.workers.get(identity)
            if worker is None:
                continue
            task_id, frames = self.queue.popleft()
            if task_id in self.done:
                self.idle[identity] = None
                self.idle.move_to_end(identity, last=False)
                continue
            worker.busy[task_id] = frames
            back.send_multipart([identity, *frames], copy=False)
            self.counters["dispatched"] += 1

    def _heartbeat(self, back: Any, now: float) -> None:
        beat = wire.encode("heartbeat", kind="heartbeat", source="broker")
        for identity, worker in list(self.workers.items()):
            if worker.expiry < now:
                self._lost(worker)
                continue
            back.send_multipart([identity, *beat])

    def _lost(self, worker: _Worker) -> None:
        del self.workers[worker.identity]
        self.idle.pop(worker.identity, None)
        self.counters["workers_lost"] += 1
        for task_id, frames in reversed(list(worker.busy.items())):
            if task_id not in self.done:
                self.queue.appendleft((task_id, frames))
                self.counters["redispatched"] += 1
        self.last_redispatch_s = time.time()

    def _command(self, raw: bytes) -> dict[str, Any]:
        command = parse_command(raw)
        if command is None:
            return {"ok": False, "error": f"unknown command {raw[:40]!r}; valid: "
                                          f"{', '.join(COMMANDS)}"}
        if command == "STATISTICS":
            return {"ok": True, "state": self.state, "device": "broker", "pid": os.getpid(),
                    "endpoints": self.endpoints,
                    "uptime_s": round(time.time() - self._started, 3),
                    "queued": len(self.queue), "workers": len(self.workers),
                    "idle_workers": len(self.idle),
                    "in_flight": sum(len(w.busy) for w in self.workers.values()),
                    "last_redispatch_at": self.last_redispatch_s, **self.counters}
        self.state = {"PAUSE": "paused", "RESUME": "running",
                      "TERMINATE": "terminated"}[command]
        return {"ok": True, "state": self.state}
