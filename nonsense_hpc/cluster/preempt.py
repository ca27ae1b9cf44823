"""Time limits and preemption: checkpoint on the warning signal, then requeue (bounded).

A job rendered by :func:`~nonsense_hpc.cluster.slurm.render_sbatch` asks Slurm for a
warning signal before its time limit (``--signal=B:USR1@120``); the batch shell forwards
it to the launcher, which forwards it to every rank. A :class:`PreemptionHandler` in the
program then

1. calls the checkpoint callback (each rank; usually only rank 0 writes),
2. on one rank (rank 0), runs ``scontrol requeue $SLURM_JOB_ID`` while the job has been
   requeued fewer than ``max_requeues`` times (``SLURM_RESTART_COUNT``),
3. exits (status 0) when the job was requeued; Slurm restarts it and the program resumes
   from its checkpoint. Past the bound it keeps running, so the time limit ends it.

Exiting at once is safe: ``scontrol requeue`` returns only after slurmctld has marked the
job pending (completing), and it ignores the status the old batch script reports then.

The same signal sent by hand (``scancel --batch --signal=USR1 JOBID``) preempts a job.

Example:
    >>> def save() -> None:
    ...     torch.save(state, "ckpt.pt")                      # doctest: +SKIP
    >>> handler = PreemptionHandler(save).install()           # doctest: +SKIP
    >>> for step in range(start, steps):                      # doctest: +SKIP
    ...     train_step()
    ...     handler.poll()  # deferred mode: checkpoint at a step boundary

By default (``deferred=False``) the callback runs inside the signal handler, as soon as
the signal arrives; with ``deferred=True`` the handler only records it and
:meth:`PreemptionHandler.poll` acts at a point the program chooses (between steps, where
every rank holds a consistent state).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from nonsense_hpc.cluster.env import JobEnvironment
from nonsense_hpc.errors import ConfigError

__all__ = ["PreemptionHandler"]

_log = logging.getLogger(__name__)


class PreemptionHandler:
    """Checkpoint and requeue on Slurm's warning signal, a bounded number of times.

    Args:
        checkpoint: called with no arguments when the signal arrives.
        max_requeues: requeue at most this many times in the job's life (default
            ``NONSENSE_MAX_REQUEUES`` from the job script, else 3).
        signum: the signal (``signal.SIGUSR1`` matches the rendered scripts).
        deferred: only record the signal; act in :meth:`poll`.
        requeue_rank: the rank that runs ``scontrol requeue``.
        exit_on_requeue: raise ``SystemExit(0)`` after a requeue (the job is going down).
        requeue: the function that requeues a job id (default ``scontrol requeue``).
        environ: environment to read the job id, rank and restart count from.

    Raises:
        ConfigError: a negative ``max_requeues`` or an unparsable ``NONSENSE_MAX_REQUEUES``.
    """

    def __init__(self, checkpoint: Callable[[], Any], *, max_requeues: int | None = None,
                 signum: int = signal.SIGUSR1, deferred: bool = False, requeue_rank: int = 0,
                 exit_on_requeue: bool = True,
                 requeue: Callable[[str], None] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        if max_requeues is None:
            text = env.get("NONSENSE_MAX_REQUEUES", "3")
            if not text.isdigit():
                raise ConfigError(f"NONSENSE_MAX_REQUEUES={text!r} must be an integer >= 0")
            max_requeues = int(text)
        if max_requeues < 0:
            raise ConfigError(f"max_requeues must be >= 0, got {max_requeues}")
        self.checkpoint = checkpoint
        self.max_requeues = max_requeues
        self.signum = signum
        self.deferred = deferred
        self.requeue_rank = requeue_rank
        self.exit_on_requeue = exit_on_requeue
        self.job = JobEnvironment.from_env(env)
        self._requeue = requeue or _scontrol_requeue
        self._event = threading.Event()
        self._previous: Any = None
        self._installed = False
        self.requeued = False

    @property
    def requested(self) -> bool:
        """Whether the warning signal has arrived."""
        return self._event.is_set()

    def install(self) -> PreemptionHandler:
        """Install the signal handler (main thread only); returns self."""
        self._previous = signal.signal(self.signum, self._on_signal)
        self._installed = True
        return self

    def uninstall(self) -> None:
        """Restore the previous handler."""
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def __enter__(self) -> PreemptionHandler:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()
        if not self.deferred:
            self.handle()

    def poll(self) -> bool:
        """In deferred mode, act on a recorded signal; returns whether it had arrived."""
        if not self.requested:
            return False
        self.handle()
        return True

    def may_requeue(self) -> bool:
        """Whether this job is in Slurm and below its requeue bound."""
        return self.job.job_id is not None and self.job.restart_count < self.max_requeues

    def handle(self) -> bool:
        """Checkpoint, then requeue if allowed; returns whether the job was requeued.

        Raises:
            SystemExit: after a requeue, when ``exit_on_requeue`` is set.
        """
        self._event.clear()
        _log.warning("warning signal %d: checkpointing (restart %d of at most %d)",
                     self.signum, self.job.restart_count, self.max_requeues)
        self.checkpoint()
        if not self.may_requeue():
            _log.warning("not requeueing job %s: %s", self.job.job_id,
                         "not in Slurm" if self.job.job_id is None else
                         f"already requeued {self.job.restart_count} times")
            return False
        if self.job.rank == self.requeue_rank and self.job.job_id is not None:
            self._requeue(self.job.job_id)
            _log.warning("requeued job %s", self.job.job_id)
        self.requeued = True
        if self.exit_on_requeue:
            raise SystemExit(0)
        return True


def _scontrol_requeue(job_id: str) -> None:
    from nonsense_hpc.cluster.jobs import requeue

    requeue(job_id)
