"""What the trainer adds for watching a run: a traced step and per-rank heartbeats.

* :class:`StepTrace`: one training step run inside :func:`nonsense_hpc.trace.tracing`
  (the Tree's messages plus the step's phases per rank); every rank's events are
  gathered to rank 0 and rendered as ``trace.svg``, ``trace.html``, ``trace.mmd``
  (Mermaid), ``trace.json`` (Chrome / Perfetto, one track per rank) and
  ``events.jsonl`` (docs/observability.md).
  The report embeds the diagram and links the Chrome trace.
* :func:`start_beats`: :func:`nonsense_hpc.dashboard.start_heartbeat` next to the
  rank's Publisher, so ``nonsense-hpc dashboard --from FORWARDER_OUT`` shows each rank's
  heartbeat and resident memory while the job runs; :func:`beat_now` adds a beat
  through the Publisher itself at the start and the end of the loop.

Example (inside the training loop, on every rank)::

    with StepTrace(tree, Path("train/trace-step"), step) as st:
        loss.backward()
        st.mark("compute")
        tree.allreduce(grads, "avg")
        st.mark("allreduce", nbytes)
        opt.step()
        st.mark("apply")
    step_time -= st.overhead      # gathering and rendering is not training time
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["StepTrace", "beat_now", "start_beats"]


class StepTrace:
    """Trace one training step on every rank; a context manager, collective on exit.

    Inside the block the Tree records its messages (its recorder is attached for the
    block) and :meth:`mark` adds the step's phases to this rank's track
    (``step.compute``: forward and backward, ``step.allreduce``: the whole gradient
    allreduce, ``step.apply``: the optimiser step). On a clean exit every rank's events
    are gathered to rank 0 and rendered into ``out`` there, then a barrier keeps the
    other ranks from counting rank 0's rendering as waiting in the next step;
    :attr:`overhead` is the time that took (not training time). On an exception
    nothing is gathered (the other ranks may never get here).

    Args:
        tree: the trainer's Tree.
        out: directory for the rendered trace (rank 0 only).
        step: the step number (the diagram's title).
        timeout: seconds the gather waits for the other ranks (default 60).

    Raises:
        CollectiveTimeoutError: (on exit) a rank did not finish the step in time.
    """

    def __init__(self, tree: Any, out: Path, step: int, timeout: float | None = None
                 ) -> None:
        from nonsense_hpc.trace import Log, tracing

        self.tree = tree
        self.log = Log(f"rank {tree.rank}")
        self.overhead = 0.0
        self.files: dict[str, Path] = {}
        self._cm = tracing(tree, self.log, out=out, timeout=timeout or 60.0,
                           title=f"step {step}: one training step on {tree.size} rank(s)")
        self._t = 0.0

    def __enter__(self) -> StepTrace:
        self._result = self._cm.__enter__()
        self._t = time.time()
        return self

    def mark(self, phase: str, nbytes: int = 0) -> None:
        """Record ``phase`` as lasting from the previous mark (or the start) to now."""
        now = time.time()
        self.log.record("step", phase, nbytes=nbytes, start=self._t, end=now)
        self._t = now

    def __exit__(self, *exc: Any) -> None:
        t0 = time.perf_counter()
        self._cm.__exit__(*exc)
        if exc[0] is None:
            self.tree.barrier()
            self.files = self._result.files
        self.overhead = time.perf_counter() - t0


def start_beats(pub: Any, every: float, step: Any = None) -> Any:
    """Start per-rank heartbeats beside ``pub`` (None when ``pub`` is None or ``every`` 0).

    Args:
        pub: the rank's :class:`~nonsense_hpc.devices.Publisher` (its address, job id and
            rank are copied; the heartbeat thread has its own socket).
        every: seconds between beats (0: no heartbeats).
        step: callable returning the current step (sent with each beat).

    Returns:
        The running :class:`~nonsense_hpc.dashboard.Heartbeat`, or None.
    """
    if pub is None or every <= 0:
        return None
    from nonsense_hpc.dashboard import start_heartbeat

    return start_heartbeat(pub, every=every, step=step)


def beat_now(pub: Any, every: float, step: int) -> None:
    """Publish one heartbeat through ``pub`` itself (no-op without ``pub`` or beats).

    The heartbeat thread's first beat goes out on a fresh socket, before the Forwarder's
    subscription has reached it, and is usually dropped (PUB/SUB); a job shorter than
    one interval would then show no heartbeat at all. The trainer therefore also beats
    through its long-connected Publisher when the loop starts and ends.
    """
    if pub is None or every <= 0:
        return
    from nonsense_hpc.dashboard import heartbeat_data

    pub.publish("heartbeat.rank", heartbeat_data(every), kind="heartbeat", step=step)
