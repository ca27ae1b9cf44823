"""The bridge from MPI ranks to ZeroMQ: a Publisher and a TaskFarm.

Addresses come from arguments or from environment variables, so a job script wires them::

    NONSENSE_PUBLISH   a Forwarder's input, where Publishers connect (PUB)
    NONSENSE_TASKS     a Streamer's output, where TaskFarm ranks pull tasks
    NONSENSE_RESULTS   the sink where TaskFarm ranks push results (with NONSENSE_TASKS)
    NONSENSE_BROKER    a Broker's worker address (instead of NONSENSE_TASKS/RESULTS)
    NONSENSE_JOB_ID    stamped on every message (default: SLURM_JOB_ID)
    NONSENSE_CURVE_DIR CURVE keys when the devices serve CURVE

Example (every node leader publishes; ``mpirun -n 8 python train.py``)::

    from nonsense_hpc.devices import Publisher
    pub = Publisher(who="leaders")            # address from NONSENSE_PUBLISH
    pub.metric("loss", {"loss": 0.31}, step=10)
    pub.event("checkpoint", path="/ckpt/10")
    pub.tensor("grad_norm_hist", hist, step=10)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nonsense_hpc import wire
from nonsense_hpc.devices import security
from nonsense_hpc.devices.worker import BrokerWorker, StreamWorker
from nonsense_hpc.errors import ConfigError

__all__ = ["WHO", "Publisher", "Result", "TaskFarm"]

log = logging.getLogger(__name__)

WHO = ("all", "leaders", "root")


def _env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def _job_id(job_id: str | None) -> str | None:
    return job_id or _env("NONSENSE_JOB_ID") or _env("SLURM_JOB_ID")


def _publishes(comm: Any, who: str, ranks_per_node: int | None = None
               ) -> tuple[int | None, bool]:
    """(rank, whether this rank publishes) for ``who``; collective for ``leaders``."""
    if who not in WHO:
        raise ConfigError(f"who must be one of {WHO}, got {who!r}")
    if comm is None:
        if who == "all":
            return None, True
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if who == "all":
        return rank, True
    if who == "root":
        return rank, rank == 0
    from nonsense_hpc.comm.topology import Topology
    from nonsense_hpc.config import get_settings

    rpn = get_settings().ranks_per_node if ranks_per_node is None else ranks_per_node
    topo = Topology.build(comm, rpn)
    try:
        return rank, topo.local_rank == 0
    finally:
        topo.free()


class Publisher:
    """Publishes metrics, events and tensors from ranks to a Forwarder.

    Args:
        address: the Forwarder's input (default ``NONSENSE_PUBLISH``).
        comm: the MPI communicator (needed for ``who="leaders"``/``"root"``; default
            COMM_WORLD then). Construction is collective for ``"leaders"``.
        who: which ranks publish: ``"all"``, ``"leaders"`` (local rank 0 of each node,
            honouring ``NONSENSE_RANKS_PER_NODE``) or ``"root"`` (rank 0). The others get a
            Publisher whose calls do nothing and return False.
        job_id: stamped on messages (default ``NONSENSE_JOB_ID`` or ``SLURM_JOB_ID``).
        hwm: messages queued before the PUB socket drops (it never blocks the rank).
        hmac_key: sign every message.
        curve_dir: CURVE client keys when the Forwarder serves CURVE.
        max_bytes: refuse larger messages (WireError) before sending.
        ranks_per_node: pretend node size for ``who="leaders"`` (default
            ``NONSENSE_RANKS_PER_NODE``; 0 = real nodes).

    Raises:
        ConfigError: no address given and ``NONSENSE_PUBLISH`` unset, or bad ``who``.
    """

    def __init__(self, address: str | None = None, *, comm: Any = None, who: str = "all",
                 job_id: str | None = None, hwm: int = 1000, hmac_key: bytes | None = None,
                 curve_dir: str | None = None, max_bytes: int = wire.DEFAULT_MAX_BYTES,
                 ranks_per_node: int | None = None) -> None:
        address = address or _env("NONSENSE_PUBLISH")
        if address is None:
            raise ConfigError("Publisher needs an address: pass one or set NONSENSE_PUBLISH "
                              "(a Forwarder's input, e.g. tcp://127.0.0.1:5559)")
        self.address = security.normalize_address(address)
        self.who = who
        self.rank, self.active = _publishes(comm, who, ranks_per_node)
        self.encoder = wire.Encoder(job_id=_job_id(job_id), rank=self.rank,
                                    hmac_key=hmac_key, max_bytes=max_bytes)
        self._sock: Any = None
        self._ctx: Any = None
        self._mon: Any = None
        self._connected = False
        if self.active:
            import zmq

            self._ctx = zmq.Context()
            self._sock = self._ctx.socket(zmq.PUB)
            self._sock.setsockopt(zmq.LINGER, 1000)
            self._sock.setsockopt(zmq.SNDHWM, hwm)
            curve = curve_dir or _env("NONSENSE_CURVE_DIR")
            if curve:
                security.configure_client(self._sock, curve)
            # Watch before connecting: on loopback the handshake can finish before a
            # monitor attached afterwards would see it.
            self._mon = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            self._sock.connect(self.address)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until the connection to the Forwarder is up (True) or ``timeout`` passes.

        Messages published before a connection and a subscription exist are dropped (that
        is PUB/SUB); this helps a short job whose first messages matter.
        """
        if not self.active:
            return False
        if self._connected:
            return True
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self._mon.poll(int(left * 1000) + 1) and \
                    recv_monitor_message(self._mon)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected = True
                self._stop_monitor()
                return True
        return False

    def _stop_monitor(self) -> None:
        if self._mon is not None:
            self._sock.disable_monitor()
            self._mon.close(0)
            self._mon = None

    def publish(self, topic: str, data: Any = None, *, kind: str = "metric",
                step: int | None = None, arrays: Any = None, **kwargs: Any) -> bool:
        """Publish one message (see :func:`nonsense_hpc.wire.encode`).

        Returns:
            True if this rank publishes, False on ranks ``who`` leaves out.

        Raises:
            WireError: the message is invalid or too large.
        """
        if not self.active:
            return False
        self.encoder.send(self._sock, topic, data, kind=kind, step=step, arrays=arrays,
                          **kwargs)
        return True

    def metric(self, name: str, values: Any, step: int | None = None) -> bool:
        """Publish metrics on ``metrics.<name>`` (a dict, or one number as ``{name: v}``)."""
        data = values if isinstance(values, Mapping) else {name: values}
        return self.publish(f"metrics.{name}", dict(data), kind="metric", step=step)

    def event(self, name: str, step: int | None = None, **fields: Any) -> bool:
        """Publish an event on ``events.<name>`` with ``fields`` as data."""
        return self.publish(f"events.{name}", {"event": name, **fields}, kind="event",
                            step=step)

    def tensor(self, name: str, value: Any, step: int | None = None,
               data: Any = None) -> bool:
        """Publish an array/tensor (or a dict of them) on ``tensors.<name>``, zero-copy."""
        return self.publish(f"tensors.{name}", data, kind="tensor", step=step, arrays=value)

    def close(self) -> None:
        """Close the socket (queued messages get up to 1 s to leave)."""
        if self._sock is not None:
            self._stop_monitor()
            self._sock.close()
            self._ctx.term()
            self._sock = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Result:
    """What a TaskFarm function may return to send arrays with its result."""

    data: Any = None
    arrays: Any = None


class TaskFarm:
    """Ranks pull tasks from a Streamer or a Broker, process them, and push results.

    Args:
        tasks: a Streamer's output (default ``NONSENSE_TASKS``).
        results: the sink's address (default ``NONSENSE_RESULTS``); needed with ``tasks``.
        broker: a Broker's worker address (default ``NONSENSE_BROKER``); results go back
            through the Broker, acknowledged.
        comm: the MPI communicator (needed for ``mode="collective"``).
        mode: ``"independent"``: every rank is a worker; ``"collective"``: rank 0 pulls
            each task, every rank processes it together (``fn(task, comm)``, e.g. with a
            Tree), rank 0 pushes the result.
        tree: a :class:`~nonsense_hpc.comm.Tree` used to broadcast task arrays in
            collective mode (default: ``comm.bcast``).
        job_id: stamped on results.
        heartbeat: Broker heartbeat interval.
        curve_dir: CURVE client keys.

    Raises:
        ConfigError: no source of tasks, or a Streamer without a results address.
    """

    def __init__(self, *, tasks: str | None = None, results: str | None = None,
                 broker: str | None = None, comm: Any = None, mode: str = "independent",
                 tree: Any = None, job_id: str | None = None, heartbeat: float = 0.5,
                 curve_dir: str | None = None) -> None:
        if mode not in ("independent", "collective"):
            raise ConfigError(f"mode must be 'independent' or 'collective', got {mode!r}")
        if mode == "collective" and comm is None:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        self.comm, self.mode, self.tree = comm, mode, tree
        self.rank = comm.Get_rank() if comm is not None else None
        broker = broker or (None if tasks else _env("NONSENSE_BROKER"))
        tasks = tasks or (None if broker else _env("NONSENSE_TASKS"))
        results = results or _env("NONSENSE_RESULTS")
        if broker is None and tasks is None:
            raise ConfigError("TaskFarm needs tasks: pass broker= (or NONSENSE_BROKER) or "
                              "tasks= and results= (or NONSENSE_TASKS, NONSENSE_RESULTS)")
        if broker is None and results is None:
            raise ConfigError("TaskFarm with a Streamer needs results= or NONSENSE_RESULTS "
                              "(the sink's address)")
        self.source = f"broker {broker}" if broker else f"streamer {tasks}"
        self._args: dict[str, Any] = {"broker": broker, "tasks": tasks, "results": results,
                      "job_id": _job_id(job_id), "heartbeat": heartbeat,
                      "curve_dir": curve_dir or _env("NONSENSE_CURVE_DIR")}
        self.processed = 0

    def _worker(self) -> Any:
        a = self._args
        if a["broker"]:
            return BrokerWorker(a["broker"], heartbeat=a["heartbeat"], curve_dir=a["curve_dir"],
                                job_id=a["job_id"], rank=self.rank)
        return StreamWorker(a["tasks"], a["results"], curve_dir=a["curve_dir"],
                            job_id=a["job_id"], rank=self.rank)

    def run(self, fn: Callable[..., Any], *, max_tasks: int | None = None,
            idle_timeout: float = 10.0) -> int:
        """Process tasks until none arrives for ``idle_timeout`` s, or ``max_tasks``.

        A task ``kind="control"`` with data ``{"cmd": "stop"}`` also stops (this rank in
        independent mode, every rank in collective mode).

        Args:
            fn: ``fn(task)`` (independent) or ``fn(task, comm)`` (collective); returns the
                result data, or a :class:`Result` to send arrays too.
            max_tasks: stop after this many tasks (per rank, or per group if collective).
            idle_timeout: seconds without a task before stopping.

        Returns:
            The number of tasks this rank (or group) processed.
        """
        if self.mode == "collective":
            return self._run_collective(fn, max_tasks, idle_timeout)
        with self._worker() as worker:
            while max_tasks is None or self.processed < max_tasks:
                task = worker.get(timeout=idle_timeout)
                if task is None:
                    break
                if _is_stop(task):
                    worker.reply(task, {"stopped": True, "rank": self.rank})
                    break
                self._reply(worker, task, fn(task))
                self.processed += 1
        return self.processed

    def _run_collective(self, fn: Callable[..., Any], max_tasks: int | None,
                        idle_timeout: float) -> int:
        comm = self.comm
        worker = self._worker() if comm.Get_rank() == 0 else None
        try:
            while max_tasks is None or self.processed < max_tasks:
                task = worker.get(timeout=idle_timeout) if worker is not None else None
                if worker is not None and task is not None and _is_stop(task):
                    worker.reply(task, {"stopped": True, "rank": self.rank})
                    task = None
                head = None if task is None else (task.topic, task.kind, task.data,
                                                  task.header, list(task.arrays))
                head = comm.bcast(head, root=0)
                if head is None:
                    break
                arrays = task.arrays if task is not None else None
                if self.tree is not None and head[4]:
                    arrays = self.tree.broadcast(arrays, root=0)
                elif head[4]:
                    arrays = comm.bcast(arrays, root=0)
                msg = wire.Message(topic=head[0], kind=head[1], data=head[2],
                                   arrays=dict(arrays or {}), header=head[3])
                out = fn(msg, comm)
                if worker is not None:
                    self._reply(worker, msg, out)
                self.processed += 1
        finally:
            if worker is not None:
                worker.close()
        return self.processed

    @staticmethod
    def _reply(worker: Any, task: wire.Message, out: Any) -> None:
        if isinstance(out, Result):
            worker.reply(task, out.data, arrays=out.arrays)
        else:
            worker.reply(task, out)


def _is_stop(task: wire.Message) -> bool:
    return task.kind == "control" and isinstance(task.data, dict) and \
        task.data.get("cmd") == "stop"
