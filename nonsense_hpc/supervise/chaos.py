"""Chaos runs: SIGKILL random children and check the supervisor did exactly the right thing.

Used by the CI chaos test (a few hundred kills per strategy) and by ``nonsense-hpc bench
supervisor-chaos`` (the long run written up in docs/reliability.md). After every kill
the run checks that

* exactly the children the strategy names got a new process (one_for_one and
  simple_one_for_one: the victim; one_for_all: all; rest_for_one: the victim and every
  child after it), in start order, and every permanent child runs again;
* the restart event names the same children in the same order;

and at the end that no zombie and no orphan (a process of a dead child's process
group) is left, and that escalation fires exactly on restart ``intensity + 1``.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nonsense_hpc.errors import SupervisorError
from nonsense_hpc.supervise.events import Event
from nonsense_hpc.supervise.process import list_processes
from nonsense_hpc.supervise.spec import STRATEGIES, ChildSpec
from nonsense_hpc.supervise.supervisor import Supervisor

__all__ = ["ChaosReport", "expected_restarts", "leftovers", "run_chaos", "run_escalation"]


def expected_restarts(strategy: str, ids: list[str], victim: str) -> list[str]:
    """The children ``strategy`` restarts, in order, when ``victim`` dies."""
    if strategy == "one_for_all":
        return list(ids)
    if strategy == "rest_for_one":
        return ids[ids.index(victim):]
    return [victim]


@dataclass
class ChaosReport:
    """Outcome of one chaos run (all counts over the whole run)."""

    strategy: str
    children: int
    kills: int
    restarts: int = 0
    processes_started: int = 0
    wrong_sets: int = 0
    missing_children: int = 0
    zombies: int = 0
    orphans: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No wrong restart set, no missing child, no zombie, no orphan, no error."""
        return not (self.wrong_sets or self.missing_children or self.zombies
                    or self.orphans or self.errors)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (with ``ok``)."""
        return {**asdict(self), "ok": self.ok}


def leftovers(groups: set[int]) -> tuple[int, int]:
    """``(zombies, orphans)`` of the run's process groups.

    Zombies are unreaped children of ours; orphans are live processes of groups whose
    leader is gone. Only the run's own groups count: other zombies of this process (for instance
    orphans of unrelated programs a subreaper adopted) are not the supervisor's doing.
    """
    me = os.getpid()
    zombies = orphans = 0
    for proc in list_processes():
        if proc.pgid not in groups:
            continue
        if proc.state == "Z":
            zombies += proc.ppid == me
        else:
            orphans += 1
    return zombies, orphans


def _wait_event(events: queue.Queue[Event], kind: str, child: str | None,
                timeout: float) -> Event:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind} event for {child} within {timeout} s")
        event = events.get(timeout=left)
        if event.kind == kind and (child is None or event.child == child):
            return event


def _make(strategy: str, children: int, intensity: int, period: float,
          events: queue.Queue[Event], grandchildren: bool) -> Supervisor:
    # A shell that starts a grandchild in the same group: killing the shell must not
    # leave the grandchild behind.
    argv = (["sh", "-c", "sleep 3600 & wait"] if grandchildren else ["sleep", "3600"])
    if strategy == "simple_one_for_one":
        specs = [ChildSpec(id="w", start=argv, shutdown="brutal_kill")]
    else:
        specs = [ChildSpec(id=f"w{i}", start=argv, shutdown=1.0) for i in range(children)]
    sup = Supervisor(children=specs, strategy=strategy, intensity=intensity, period=period,
                     name=f"chaos-{strategy}", on_event=events.put)
    sup.start()
    if strategy == "simple_one_for_one":
        for _ in range(children):
            sup.start_child(())
    return sup


def run_chaos(strategy: str, kills: int = 300, children: int = 4, seed: int = 0,
              timeout: float = 10.0, grandchildren: bool = True) -> ChaosReport:
    """SIGKILL a random child ``kills`` times and check every restart.

    Raises:
        ValueError: unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    rng = random.Random(seed)
    events: queue.Queue[Event] = queue.Queue()
    report = ChaosReport(strategy, children, kills)
    groups: set[int] = set()
    latencies: list[float] = []
    start = time.perf_counter()
    sup = _make(strategy, children, kills + 1, 3600.0, events, grandchildren)
    try:
        for _ in range(kills):
            before = {c.id: c.pid for c in sup.which_children()}
            groups.update(p for p in before.values() if p)
            ids = list(before)
            victim = rng.choice(ids)
            pid = before[victim]
            if pid is None:
                report.errors.append(f"{victim} was not running before the kill")
                break
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            try:
                event = _wait_event(events, "restart", victim, timeout)
            except (TimeoutError, queue.Empty):
                report.errors.append(f"no restart of {victim} within {timeout} s")
                break
            latencies.append(time.perf_counter() - t0)
            after = {c.id: c.pid for c in sup.which_children()}
            expected = expected_restarts(strategy, ids, victim)
            changed = [i for i in ids if after.get(i) != before[i]]
            report.restarts += 1
            report.processes_started += len(event.restarted)
            if changed != expected or list(event.restarted) != expected:
                report.wrong_sets += 1
                report.errors.append(f"kill {victim}: expected {expected}, processes "
                                     f"changed {changed}, event said {list(event.restarted)}")
            report.missing_children += sum(1 for i in ids if after.get(i) is None)
    finally:
        final = {c.pid for c in sup.which_children() if c.pid} if sup.running else set()
        groups.update(final)
        sup.stop(timeout=60)
    report.seconds = round(time.perf_counter() - start, 3)
    report.zombies, report.orphans = _settle(groups)
    if latencies:
        ms = sorted(x * 1000 for x in latencies)
        report.latency_ms = {"median": round(statistics.median(ms), 3),
                             "p99": round(ms[int(0.99 * (len(ms) - 1))], 3),
                             "max": round(ms[-1], 3)}
    return report


def _settle(groups: set[int], timeout: float = 5.0) -> tuple[int, int]:
    """Leftovers once the kernel has delivered the last SIGKILLs (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        zombies, orphans = leftovers(groups)
        if (zombies == 0 and orphans == 0) or time.monotonic() > deadline:
            return zombies, orphans
        time.sleep(0.01)


def run_escalation(strategy: str, intensity: int = 3, children: int = 3,
                   timeout: float = 10.0) -> dict[str, Any]:
    """Kill ``intensity + 1`` times within the period; give-up must come on the last kill.

    Returns:
        ``{"restarts_before_give_up", "gave_up_on_kill", "failure", "zombies",
        "orphans", "children_left"}``.
    """
    events: queue.Queue[Event] = queue.Queue()
    sup = _make(strategy, children, intensity, 3600.0, events, grandchildren=True)
    groups: set[int] = set()
    restarts = 0
    gave_up_on: int | None = None
    for k in range(1, intensity + 2):
        infos = sup.which_children()
        groups.update(c.pid for c in infos if c.pid)
        victim = infos[0]
        if victim.pid is None:
            raise SupervisorError(f"child {victim.id} is not running before kill {k}")
        os.kill(victim.pid, signal.SIGKILL)
        event = None
        deadline = time.monotonic() + timeout
        while event is None and time.monotonic() < deadline:
            got = events.get(timeout=max(0.0, deadline - time.monotonic()))
            if got.kind in ("restart", "give_up") and got.child == victim.id:
                event = got
        if event is None:
            raise TimeoutError(f"no restart or give_up event after kill {k}")
        if event.kind == "give_up":
            gave_up_on = k
            break
        restarts += 1
    stopped = sup.wait(timeout)
    failure = sup.failure
    left = sum(1 for c in (sup.which_children() if sup.running else []) if c.pid)
    zombies, orphans = _settle(groups)
    if not stopped:
        sup.stop(timeout=60)
    return {"restarts_before_give_up": restarts, "gave_up_on_kill": gave_up_on,
            "failure": None if failure is None else str(failure),
            "failure_is_supervisor_error": isinstance(failure, SupervisorError),
            "stopped": stopped, "children_left": left, "zombies": zombies,
            "orphans": orphans}
