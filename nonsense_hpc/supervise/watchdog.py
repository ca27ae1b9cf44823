"""An external watchdog for a whole supervisor: ``nonsense-hpc watchdog -- CMD...``.

The watchdog is itself a one-child :class:`~nonsense_hpc.supervise.Supervisor`: its only
child is the supervisor command, started in a new session with a heartbeat. A
supervisor finds the heartbeat variables in its environment and beats from its event
loop, so a loop that hangs (not only a process that dies) stops the beats. After
``timeout`` seconds of silence the watchdog kills the whole session (the supervisor and
every process of its tree) and starts it again, like Erlang's ``heart``.

Example:
    >>> from nonsense_hpc.supervise import Watchdog
    >>> dog = Watchdog(["nonsense-hpc", "supervise", "services.toml"], interval=1.0,
    ...                timeout=10.0)
    >>> dog.run()                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.supervise.events import Event
from nonsense_hpc.supervise.spec import ChildSpec, SupervisorSpec
from nonsense_hpc.supervise.supervisor import Supervisor

__all__ = ["Watchdog"]


class Watchdog:
    """Watch a supervisor process through its heartbeat; restart its whole tree if silent.

    Args:
        argv: the supervisor's command line (e.g. ``nonsense-hpc supervise FILE``).
        interval: seconds between the supervisor's beats.
        timeout: silence that counts as a hang (default 10 x interval).
        intensity: restarts allowed within ``period`` before the watchdog gives up.
        period: see ``intensity``.
        shutdown: seconds the supervisor gets to stop its tree on SIGTERM.
        name: name in events.
        events: ZeroMQ address to publish the watchdog's events on.
        on_event: callback for every event (loop thread).
    """

    def __init__(self, argv: Sequence[str], *, interval: float = 1.0,
                 timeout: float | None = None, intensity: int = 3, period: float = 60.0,
                 shutdown: float = 60.0, name: str = "watchdog", events: str | None = None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        if not argv:
            raise ConfigError("the watchdog needs the supervisor's command line")
        child = ChildSpec(id="supervisor", start=list(argv), type="supervisor",
                          shutdown=shutdown, heartbeat=interval,
                          heartbeat_timeout=timeout if timeout is not None else 10 * interval,
                          new_session=True)
        self.spec = SupervisorSpec(children=(child,), intensity=intensity, period=period,
                                   name=name, events=events)
        self.supervisor = Supervisor(self.spec, on_event=on_event)

    def start(self) -> Watchdog:
        """Start watching from a background thread."""
        self.supervisor.start()
        return self

    def run(self) -> None:
        """Watch in the calling thread until stopped or given up (SupervisorError)."""
        self.supervisor.run()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the watched supervisor (SIGTERM, then SIGKILL of its session)."""
        self.supervisor.stop(timeout)

    @property
    def pid(self) -> int | None:
        """The watched supervisor's pid, if it runs."""
        children = self.supervisor.which_children()
        return children[0].pid if children else None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=300)
