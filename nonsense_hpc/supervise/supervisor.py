"""The Supervisor: starts children in order, restarts them by strategy, stops them in reverse.

One event loop owns every child. It polls the children's pidfds, the heartbeat socket,
the control socket and a wake-up pipe, so a death is handled the moment the kernel
reports it (no polling tick). Calls from other threads are queued to the loop and answered
through a future, so the loop is the only code that ever touches a child.

Example:
    >>> import sys
    >>> from nonsense_hpc.supervise import ChildSpec, Supervisor
    >>> sleeper = ChildSpec(id="sleeper", start=["sleep", "60"], shutdown="brutal_kill")
    >>> with Supervisor(children=[sleeper], name="demo") as sup:
    ...     [info.id for info in sup.which_children()]
    ['sleeper']
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nonsense_hpc.errors import ConfigError, SupervisorError
from nonsense_hpc.supervise import heart
from nonsense_hpc.supervise.child import Child, ChildInfo
from nonsense_hpc.supervise.events import Event
from nonsense_hpc.supervise.intensity import RestartIntensity
from nonsense_hpc.supervise.process import (
    ExitStatus,
    become_subreaper,
    release_subreaper,
    set_death_signal,
    sweep,
)
from nonsense_hpc.supervise.spec import ChildSpec, SupervisorSpec

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

_KILL_WAIT = 30.0  # seconds to wait for a SIGKILLed process to disappear
_SWEEP_EVERY = 0.01


class Supervisor:
    """An OTP-style supervisor of OS processes.

    Args:
        spec: a :class:`SupervisorSpec`; or give its fields as keyword arguments.
        children, strategy, intensity, period, name, events, control: as in
            :class:`SupervisorSpec` (used when ``spec`` is None).
        on_event: called in the loop thread with every :class:`Event` (keep it quick).
        reap_orphans: make this process a child subreaper, so descendants of dead
            children are reparented here, killed and reaped (no zombies even when PID 1
            does not reap). Process-wide; default True.

    Raises:
        ConfigError: invalid flags or child specs.
    """

    def __init__(self, spec: SupervisorSpec | None = None, *,
                 children: Sequence[ChildSpec] = (), strategy: str = "one_for_one",
                 intensity: int = 1, period: float = 5.0, name: str = "supervisor",
                 events: str | None = None, control: str | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 reap_orphans: bool = True) -> None:
        if spec is None:
            spec = SupervisorSpec(children=tuple(children), strategy=strategy,  # type: ignore[arg-type]
                                  intensity=intensity, period=period, name=name,
                                  events=events, control=control)
        elif not isinstance(spec, SupervisorSpec):
            raise ConfigError(f"spec must be a SupervisorSpec, got {type(spec).__name__}")
        self.spec = spec
        self.name = spec.name
        self._on_event = on_event
        self._reap_orphans = reap_orphans
        self._intensity = RestartIntensity(spec.intensity, spec.period)
        self._children: list[Child] = []
        self._dynamic = 0
        self._template = spec.children[0] if spec.strategy == "simple_one_for_one" else None
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...],
                                             concurrent.futures.Future[Any]]] = \
            queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        self._started = threading.Event()
        self._done = threading.Event()
        self._stopping = False
        self._stop_reason = "stopped"
        self._start_error: BaseException | None = None
        self.failure: SupervisorError | None = None
        self._pending_groups: set[int] = set()
        self._pending_sessions: set[int] = set()
        self._sweep_deadline = 0.0
        self._context: Any = None
        self._poller: Any = None
        self._heart: heart.HeartMonitor | None = None
        self._publisher: Any = None
        self._control: Any = None
        self._beat_self = bool(os.environ.get(heart.ADDR_VAR))
        self._next_self_beat = 0.0
        self.events_addr: str | None = None
        self.control_addr: str | None = None

    # ---------------------------------------------------------------- public API

    def start(self, timeout: float = 60.0) -> Supervisor:
        """Start the children in order and supervise them from a background thread.

        Raises:
            SupervisorError: a child could not be started (those already started are
                stopped again in reverse order), or the supervisor was already started.
        """
        if self._thread is not None:
            raise SupervisorError(f"supervisor {self.name!r} was already started")
        self._thread = threading.Thread(target=self._main, name=f"supervisor-{self.name}",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise SupervisorError(f"supervisor {self.name!r} did not start in {timeout} s")
        if self._start_error is not None:
            self._thread.join(timeout)
            raise self._start_error
        return self

    def run(self) -> None:
        """Supervise in the calling thread until stopped (SIGTERM/SIGINT stop it too).

        Raises:
            SupervisorError: a child could not be started, or the restart intensity was
                exceeded (after every child was stopped).
        """
        if self._thread is not None:
            raise SupervisorError(f"supervisor {self.name!r} was already started")
        self._thread = threading.current_thread()
        if os.environ.get("NONSENSE_SUPERVISOR"):
            # A supervised supervisor follows its parent: when the parent dies, this
            # one gets SIGTERM and stops its own subtree in order.
            set_death_signal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
        self._main()
        if self._start_error is not None:
            raise self._start_error
        if self.failure is not None:
            raise self.failure

    def stop(self, timeout: float | None = None) -> None:
        """Stop every child in reverse start order, then the loop; waits for it.

        Raises:
            TimeoutError: the loop did not finish within ``timeout``.
        """
        if self._thread is None or self._done.is_set():
            return
        self._stopping = True
        self._wake()
        if threading.get_ident() != self._loop_ident and not self._done.wait(timeout):
            raise TimeoutError(f"supervisor {self.name!r} did not stop in {timeout} s")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the supervisor has stopped; True if it did within ``timeout``."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        """Whether the loop is up and supervising."""
        return self._started.is_set() and not self._done.is_set()

    def which_children(self) -> list[ChildInfo]:
        """A snapshot of every child, in start order."""
        result: list[ChildInfo] = self._call(lambda: [c.info() for c in self._children])
        return result

    def count_children(self) -> dict[str, int]:
        """``{"specs", "active", "supervisors", "workers"}`` like OTP's count_children."""
        def count() -> dict[str, int]:
            sup = sum(1 for c in self._children if c.spec.type == "supervisor")
            return {"specs": len(self._children),
                    "active": sum(1 for c in self._children if c.running),
                    "supervisors": sup, "workers": len(self._children) - sup}
        counts: dict[str, int] = self._call(count)
        return counts

    def start_child(self, spec_or_args: ChildSpec | Sequence[Any] = ()) -> ChildInfo:
        """Add and start a child.

        Args:
            spec_or_args: a new :class:`ChildSpec`; for ``simple_one_for_one``, the extra
                arguments appended to the template's arguments.

        Raises:
            SupervisorError: the child could not be started.
            ConfigError: a duplicate id, or a spec given to simple_one_for_one.
        """
        info: ChildInfo = self._call(self._start_child, spec_or_args)
        return info

    def terminate_child(self, child_id: str) -> None:
        """Stop a child (shutdown per its spec); it stays stopped until restarted.

        For ``simple_one_for_one`` the child is also deleted (as in OTP).
        """
        self._call(self._terminate_child, child_id)

    def restart_child(self, child_id: str) -> ChildInfo:
        """Stop a child if it runs, then start it again (not counted in the intensity)."""
        info: ChildInfo = self._call(self._restart_child, child_id)
        return info

    def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec."""
        self._call(self._delete_child, child_id)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=300)

    # ------------------------------------------------------------ thread plumbing

    def _call(self, fn: Callable[..., Any], *args: Any, timeout: float = 300.0) -> Any:
        if threading.get_ident() == self._loop_ident:
            return fn(*args)
        if not self.running:
            raise SupervisorError(f"supervisor {self.name!r} is not running"
                                  + (f": {self.failure}" if self.failure else ""))
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((fn, args, future))
        self._wake()
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"supervisor {self.name!r} did not answer in {timeout} s") \
                from None

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_reason = f"received {signal.Signals(signum).name}"
        self._stopping = True
        self._wake()

    def _main(self) -> None:
        import zmq

        self._loop_ident = threading.get_ident()
        self._context = zmq.Context()
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        try:
            self._setup_sockets()
            if self._reap_orphans:
                self._subreaper = become_subreaper()
            self._emit("start", reason=f"strategy={self.spec.strategy}")
            self._start_initial()
        except BaseException as exc:
            self._start_error = exc if isinstance(exc, SupervisorError | ConfigError) else \
                SupervisorError(f"supervisor {self.name!r} failed to start: {exc}")
            self._start_error.__cause__ = exc if exc is not self._start_error else None
            self._teardown()
            self._started.set()
            self._done.set()
            return
        self._started.set()
        try:
            self._loop()
        except BaseException as exc:  # a bug: still stop every child before dying
            log.exception("supervisor %s crashed", self.name)
            self.failure = SupervisorError(f"supervisor {self.name!r} crashed: {exc!r}")
        finally:
            self._shutdown_children()
            self._emit("stop", reason=str(self.failure) if self.failure else
                       self._stop_reason)
            self._teardown()
            self._done.set()

    def _setup_sockets(self) -> None:
        import zmq

        if any(c.heartbeat for c in self.spec.children):
            self._ensure_heart()
        if self.spec.events:
            from nonsense_hpc.supervise.publish import EventPublisher

            self._publisher = EventPublisher(self._context, self.spec.events)
            self.events_addr = self._publisher.addr
        if self.spec.control:
            from nonsense_hpc.supervise.control import ControlServer

            self._control = ControlServer(self._context, self.spec.control, self)
            self.control_addr = self._control.addr
            self._poller.register(self._control.socket, zmq.POLLIN)

    def _ensure_heart(self) -> heart.HeartMonitor:
        import zmq

        if self._heart is None:
            self._heart = heart.HeartMonitor(self._context)
            self._poller.register(self._heart.socket, zmq.POLLIN)
        return self._heart

    def _teardown(self) -> None:
        if getattr(self, "_subreaper", False):
            self._subreaper = False
            release_subreaper()
        for closer in (self._heart, self._publisher, self._control):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()
        if self._context is not None:
            self._context.term()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        while not self._calls.empty():
            _, _, future = self._calls.get_nowait()
            future.set_exception(SupervisorError(f"supervisor {self.name!r} stopped"))

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        import zmq

        while not self._stopping:
            timeout = self._next_timeout()
            ready = dict(self._poller.poll(None if timeout is None else
                                           max(0, int(timeout * 1000) + 1)))
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            for child in list(self._children):
                if child.proc is not None and child.proc.fd in ready:
                    self._on_exit(child)
                    if self._stopping:
                        return
            if self._heart is not None and self._heart.socket in ready:
                self._on_beats(self._heart.drain())
            if self._control is not None and self._control.socket in ready:
                self._control.handle()
            while not self._calls.empty():
                fn, args, future = self._calls.get_nowait()
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:
                        future.set_exception(exc)
            self._on_timers()
        del zmq

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = [c.heartbeat_deadline for c in self._children
                     if c.proc is not None and c.spec.heartbeat]
        if self._pending_groups or self._pending_sessions:
            deadlines.append(self._sweep_deadline)
        if self._beat_self:
            deadlines.append(self._next_self_beat)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _on_timers(self) -> None:
        now = time.monotonic()
        for child in list(self._children):
            if child.proc is not None and child.spec.heartbeat and \
                    now >= child.heartbeat_deadline:
                self._emit("heartbeat_timeout", child, pid=child.proc.pid,
                           reason=f"no beat for {child.spec.heartbeat_timeout} s")
                child.proc.signal_group(signal.SIGKILL)
                self._wait_exit(child, _KILL_WAIT)
                self._on_exit(child, reason="heartbeat")
                if self._stopping:
                    return
        if (self._pending_groups or self._pending_sessions) and now >= self._sweep_deadline:
            skip = [c.proc.pid for c in self._children if c.proc is not None]
            if sweep(self._pending_groups, self._pending_sessions, skip):
                self._pending_groups.clear()
                self._pending_sessions.clear()
            self._sweep_deadline = now + _SWEEP_EVERY
        if self._beat_self and now >= self._next_self_beat:
            heart.beat()
            self._next_self_beat = now + heart.interval() / 2.0

    def _on_beats(self, tokens: Iterable[str]) -> None:
        now = time.monotonic()
        by_token = {c.heartbeat_token: c for c in self._children if c.proc is not None}
        for token in tokens:
            child = by_token.get(token)
            if child is not None:
                child.last_beat = now

    def _emit(self, kind: str, child: Child | None = None, **fields: Any) -> None:
        event = Event(kind=kind, supervisor=self.name,
                      child=None if child is None else child.key, **fields)
        log.info("%s", event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event callback failed for %s", event)
        if self._publisher is not None:
            self._publisher.publish(event)

    # ------------------------------------------------------- starting and stopping

    def _start_initial(self) -> None:
        if self._template is not None:
            return
        for spec in self.spec.children:
            child = Child(spec, spec.id, ())
            self._children.append(child)
            try:
                self._spawn(child)
            except SupervisorError:
                self._children.remove(child)
                self._shutdown_children()
                raise

    def _spawn(self, child: Child) -> None:
        import zmq

        monitor = self._ensure_heart() if child.spec.heartbeat else None
        child.spawn(self.name, None if monitor is None else monitor.addr)
        assert child.proc is not None
        self._poller.register(child.proc.fd, zmq.POLLIN)
        self._emit("spawn", child, pid=child.proc.pid)

    def _wait_exit(self, child: Child, timeout: float | None) -> ExitStatus | None:
        proc = child.proc
        if proc is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = select.poll()
        poll.register(proc.fd, select.POLLIN)
        while True:
            status = proc.reap()
            if status is not None:
                return status
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            poll.poll(None if left is None else max(1, int(left * 1000)))

    def _release(self, child: Child) -> None:
        """Forget a reaped child process: unregister its pidfd, kill its group's rest."""
        proc = child.proc
        if proc is None:
            return
        with contextlib.suppress(KeyError):
            self._poller.unregister(proc.fd)
        proc.close()
        if proc.signal_group(signal.SIGKILL):
            self._pending_groups.add(proc.pgid)
        if proc.new_session:
            self._pending_sessions.add(proc.pgid)
        if self._pending_groups or self._pending_sessions:
            self._sweep_deadline = time.monotonic()
        child.proc = None

    def _terminate(self, child: Child) -> None:
        """Stop one child according to its shutdown spec (blocking the loop)."""
        proc = child.proc
        if proc is None:
            return
        status = proc.reap()
        reason = "shutdown"
        if status is None:
            shutdown = child.spec.shutdown
            if shutdown == "brutal_kill":
                proc.signal_group(signal.SIGKILL)
            else:
                proc.signal_group(signal.SIGTERM)
                wait = None if shutdown == "infinity" else float(shutdown)  # type: ignore[arg-type]
                status = self._wait_exit(child, wait)
                if status is None:
                    reason = "shutdown (killed after timeout)"
                    proc.signal_group(signal.SIGKILL)
            if status is None:
                status = self._wait_exit(child, _KILL_WAIT)
        else:
            reason = "crash"
        pid = proc.pid
        self._release(child)
        child.last_exit = status
        self._emit_exit(child, pid, status, reason)

    def _emit_exit(self, child: Child, pid: int, status: ExitStatus | None,
                   reason: str) -> None:
        if status is None:
            self._emit("exit", child, pid=pid, reason=f"{reason}; not reaped: stuck in the "
                       "kernel after SIGKILL")
            return
        self._emit("exit", child, pid=pid, status=status.code, signal=status.signal_name,
                   reason=reason)

    def _shutdown_children(self) -> None:
        """Stop every child: in reverse start order (all at once for simple_one_for_one)."""
        if self._template is not None:
            for child in self._children:
                if child.proc is not None and child.spec.shutdown != "brutal_kill":
                    child.proc.signal_group(signal.SIGTERM)
        for child in reversed(self._children):
            self._terminate(child)
        if self._pending_groups or self._pending_sessions:
            deadline = time.monotonic() + 2.0
            while not sweep(self._pending_groups, self._pending_sessions) and \
                    time.monotonic() < deadline:
                time.sleep(_SWEEP_EVERY)
            self._pending_groups.clear()
            self._pending_sessions.clear()

    # ---------------------------------------------------------- death and restart

    def _on_exit(self, child: Child, reason: str = "crash") -> None:
        proc = child.proc
        if proc is None:
            return
        status = proc.reap()
        if status is None:
            return  # spurious wake-up
        pid = proc.pid
        self._release(child)
        child.last_exit = status
        self._emit_exit(child, pid, status, reason)
        self._handle_death(child, status)

    def _handle_death(self, child: Child, status: ExitStatus) -> None:
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and status.normal):
            if restart == "temporary" or self._template is not None:
                self._children.remove(child)
            return
        while True:
            if not self._intensity.add(time.monotonic()):
                self._give_up(child, status)
                return
            child.restarts += 1
            failed = self._restart_by_strategy(child)
            if failed is None:
                return
            child = failed  # a child failed to start: counts as another restart

    def _restart_by_strategy(self, child: Child) -> Child | None:
        strategy = self.spec.strategy
        if strategy in ("one_for_one", "simple_one_for_one"):
            targets = [child]
        else:
            index = self._children.index(child)
            others = (self._children if strategy == "one_for_all"
                      else self._children[index:])
            for sibling in reversed(others):
                if sibling is not child:
                    self._terminate(sibling)
            for sibling in [s for s in others if s.spec.restart == "temporary"
                            and s is not child]:
                self._children.remove(sibling)
            targets = [s for s in others if s in self._children]
        for target in targets:
            try:
                self._spawn(target)
            except SupervisorError as exc:
                self._emit("exit", target, reason=f"start_failed: {exc}")
                self._emit("restart", child, restarted=tuple(t.key for t in targets
                                                             if t.proc is not None))
                return target
        self._emit("restart", child, restarted=tuple(t.key for t in targets))
        return None

    def _give_up(self, child: Child, status: ExitStatus) -> None:
        self.failure = SupervisorError(
            f"supervisor {self.name!r} gave up: child {child.key!r} {status}; more than "
            f"{self.spec.intensity} restart(s) within {self.spec.period} s")
        self._emit("give_up", child, reason=str(self.failure))
        self._stopping = True

    # ------------------------------------------------------- child management API

    def _find(self, child_id: str) -> Child:
        for child in self._children:
            if child.key == child_id:
                return child
        known = ", ".join(c.key for c in self._children) or "none"
        raise SupervisorError(f"supervisor {self.name!r} has no child {child_id!r} "
                              f"(children: {known})")

    def _start_child(self, spec_or_args: ChildSpec | Sequence[Any]) -> ChildInfo:
        if self._template is not None:
            if isinstance(spec_or_args, ChildSpec):
                raise ConfigError("simple_one_for_one: start_child takes the extra "
                                  "arguments, not a ChildSpec")
            self._dynamic += 1
            child = Child(self._template, f"{self._template.id}.{self._dynamic}",
                          tuple(spec_or_args))
        else:
            if not isinstance(spec_or_args, ChildSpec):
                raise ConfigError(f"{self.spec.strategy}: start_child takes a ChildSpec")
            if any(c.key == spec_or_args.id for c in self._children):
                raise ConfigError(f"supervisor {self.name!r} already has a child "
                                  f"{spec_or_args.id!r}")
            child = Child(spec_or_args, spec_or_args.id, ())
        self._children.append(child)
        try:
            self._spawn(child)
        except SupervisorError:
            self._children.remove(child)
            raise
        return child.info()

    def _terminate_child(self, child_id: str) -> None:
        child = self._find(child_id)
        self._terminate(child)
        if self._template is not None or child.spec.restart == "temporary":
            self._children.remove(child)

    def _restart_child(self, child_id: str) -> ChildInfo:
        child = self._find(child_id)
        self._terminate(child)
        self._spawn(child)
        return child.info()

    def _delete_child(self, child_id: str) -> None:
        child = self._find(child_id)
        if child.proc is not None:
            raise SupervisorError(f"child {child_id!r} is running; terminate it first")
        self._children.remove(child)
