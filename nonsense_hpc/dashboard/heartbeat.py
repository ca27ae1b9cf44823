"""Per-rank heartbeats with memory, published for the dashboard.

A rank calls :func:`start_heartbeat` once with its
:class:`~nonsense_hpc.devices.Publisher`; a daemon thread publishes on
``heartbeat.rank`` (``kind="heartbeat"``) every ``every`` seconds with the host, pid,
resident memory (``rss``, bytes) and CPU seconds used. The dashboard marks a rank stale
when it misses three beats.

Example (every rank of ``mpirun -n 4 python train.py``)::

    from nonsense_hpc.devices import Publisher
    from nonsense_hpc.dashboard import start_heartbeat
    pub = Publisher()                   # NONSENSE_PUBLISH: the Forwarder's input
    beat = start_heartbeat(pub, every=1.0)   # its own socket, same address and rank
    ...
    beat.stop()
"""

from __future__ import annotations

import os
import resource
import socket
import threading
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["Heartbeat", "heartbeat_data", "rss_bytes", "start_heartbeat"]


def rss_bytes() -> int:
    """Resident memory of this process in bytes (``/proc/self/statm``, else peak RSS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def heartbeat_data(interval: float) -> dict[str, Any]:
    """The payload of one heartbeat."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"host": socket.gethostname(), "pid": os.getpid(), "interval": interval,
            "rss": rss_bytes(), "cpu": usage.ru_utime + usage.ru_stime}


class Heartbeat:
    """A thread that publishes heartbeats on its own socket until :meth:`stop`.

    ZeroMQ sockets are not thread-safe, so the thread never touches the rank's
    Publisher socket: it opens its own PUB socket to the same Forwarder, stamped with
    the same job id and rank.

    Args:
        target: a :class:`~nonsense_hpc.devices.Publisher` (its address, job id, rank
            and whether it publishes are copied) or a Forwarder input address.
        every: seconds between beats.
        step: optional callable returning the current training step (sent as ``step``).
        rank: the rank to stamp (default: the Publisher's).
        job_id: the job id to stamp (default: the Publisher's, or ``NONSENSE_JOB_ID``).

    Raises:
        ConfigError: ``every`` is not positive.
    """

    def __init__(self, target: Any, every: float = 1.0, step: Any = None, *,
                 rank: int | None = None, job_id: str | None = None) -> None:
        if every <= 0:
            raise ConfigError(f"heartbeat interval must be > 0 s, got {every}")
        if isinstance(target, str):
            self.address, self.active = target, True
        else:
            self.address = target.address
            self.active = bool(getattr(target, "active", True))
            enc = getattr(target, "encoder", None)
            rank = rank if rank is not None else getattr(target, "rank", None)
            job_id = job_id or getattr(enc, "job_id", None)
        self.rank = rank
        self.job_id = job_id or os.environ.get("NONSENSE_JOB_ID") or None
        self.every, self.step = every, step
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nonsense-dashboard-beat",
                                        daemon=True)

    def start(self) -> Heartbeat:
        """Start beating (the first beat goes out at once); a no-op on silent ranks."""
        if self.active:
            self._thread.start()
        return self

    def _run(self) -> None:
        import zmq

        from nonsense_hpc import wire

        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 16)
        # Its own source: the rank's Publisher numbers its messages separately, and a shared
        # source would make consumers count the other's messages as lost.
        enc = wire.Encoder(job_id=self.job_id, rank=self.rank,
                           source=f"{wire.default_source()}/heartbeat")
        try:
            sock.connect(self.address)
            while not self._stop.is_set():
                step = self.step() if callable(self.step) else None
                try:
                    enc.send(sock, "heartbeat.rank", heartbeat_data(self.every),
                             kind="heartbeat", step=step, flags=zmq.NOBLOCK)
                    self.beats += 1
                except zmq.Again:
                    pass
                self._stop.wait(self.every)
        finally:
            sock.close(0)
            ctx.term()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def start_heartbeat(target: Any, every: float = 1.0, step: Any = None, *,
                    rank: int | None = None, job_id: str | None = None) -> Heartbeat:
    """Start a :class:`Heartbeat` thread and return it (see its arguments)."""
    return Heartbeat(target, every, step, rank=rank, job_id=job_id).start()
