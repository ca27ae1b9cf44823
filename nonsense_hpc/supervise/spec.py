"""Frozen child and supervisor specifications (Erlang/OTP ``child_spec`` and ``sup_flags``).

A :class:`ChildSpec` says *what* to run and *how to treat its death*; it never changes
once made (``dataclasses.replace`` gives a changed copy). A :class:`SupervisorSpec` holds
the restart strategy, the restart intensity and the ordered children; it is what a
config file becomes and what a nested supervisor child runs.

Example:
    >>> from nonsense_hpc.supervise import ChildSpec, SupervisorSpec
    >>> web = ChildSpec(id="web", start=["python3", "-m", "http.server", "8000"])
    >>> web.restart, web.shutdown, web.type
    ('permanent', 5.0, 'worker')
    >>> spec = SupervisorSpec(children=(web,), strategy="one_for_all")
    >>> spec.intensity, spec.period
    (1, 5.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from nonsense_hpc.errors import ConfigError

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "RESTARTS",
    "STRATEGIES",
    "TYPES",
    "ChildSpec",
    "Restart",
    "Shutdown",
    "Start",
    "Strategy",
    "SupervisorSpec",
]

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
ChildType = Literal["worker", "supervisor"]
#: seconds to wait after SIGTERM before SIGKILL, or ``"brutal_kill"`` / ``"infinity"``.
Shutdown = float | Literal["brutal_kill", "infinity"]
#: an OS command (argv list), a Python callable run in its own process, or (for
#: ``type="supervisor"``) a :class:`SupervisorSpec` run in its own process.
Start = Union[Sequence[str], Callable[..., Any], "SupervisorSpec"]

RESTARTS: tuple[str, ...] = ("permanent", "transient", "temporary")
STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one",
                               "simple_one_for_one")
TYPES: tuple[str, ...] = ("worker", "supervisor")
BRUTAL_KILL = "brutal_kill"
INFINITY = "infinity"


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child and what to do when it dies.

    Attributes:
        id: unique name among the supervisor's children (letters, digits, ``_.-``).
        start: the argv of an OS command (run in its own process group, so no
            grandchild outlives it), a Python callable (run in a forked process of its
            own; its return value or ``SystemExit`` code is the exit status), or for
            ``type="supervisor"`` a :class:`SupervisorSpec`.
        restart: ``permanent`` (always restarted), ``transient`` (restarted only after
            an abnormal exit: non-zero status or a signal it was not sent by its
            supervisor) or ``temporary`` (never restarted, forgotten when it exits).
        shutdown: seconds between SIGTERM and SIGKILL when the supervisor stops the
            child, ``"brutal_kill"`` (SIGKILL at once) or ``"infinity"`` (wait for
            ever, the OTP default for supervisor children). Default 5 s for workers.
        type: ``worker`` or ``supervisor`` (informational for OS commands; a
            :class:`SupervisorSpec` start is always a supervisor).
        args: extra positional arguments for a callable start (for a command: appended
            to argv). ``simple_one_for_one`` appends the arguments of each
            ``start_child`` call.
        env: extra environment variables for the child.
        cwd: working directory of the child (``None``: the supervisor's).
        stdout: file to append the child's standard output to (``None``: inherit).
        stderr: file for standard error, ``"stdout"`` to merge, ``None`` to inherit.
        heartbeat: seconds between the beats the child promises to send with
            :func:`nonsense_hpc.supervise.heart.beat` (``None``: no heartbeat).
        heartbeat_timeout: silence after which the child is killed and handled like a
            crash (default 3 x ``heartbeat``; also the grace period after start).
        new_session: start the child as leader of a new session and, when it dies or
            is stopped, kill every process of that session, so a whole subtree goes
            with it even when the child itself was SIGKILLed. Default: True for
            ``type="supervisor"``, False for workers.
    """

    id: str
    start: Start
    restart: Restart = "permanent"
    shutdown: Shutdown | None = None
    type: ChildType = "worker"
    args: tuple[Any, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    heartbeat: float | None = None
    heartbeat_timeout: float | None = None
    new_session: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"child id must be a non-empty string, got {self.id!r}")
        bad = [c for c in self.id if not (c.isalnum() or c in "_.-")]
        if bad:
            raise ConfigError(f"child id {self.id!r} has invalid characters {bad!r} "
                              "(use letters, digits, '_', '.', '-')")
        _check_choice(f"child {self.id!r}: restart", self.restart, RESTARTS)
        _check_choice(f"child {self.id!r}: type", self.type, TYPES)
        start = self.start
        if isinstance(start, SupervisorSpec):
            object.__setattr__(self, "type", "supervisor")
        elif isinstance(start, str):
            raise ConfigError(f"child {self.id!r}: start must be an argv list, not a "
                              f"string ({start!r}); e.g. {start.split()!r}")
        elif callable(start):
            pass
        elif isinstance(start, Sequence):
            argv = tuple(start)
            if not argv or not all(isinstance(a, str) for a in argv):
                raise ConfigError(f"child {self.id!r}: start must be a non-empty list of "
                                  f"strings, got {start!r}")
            object.__setattr__(self, "start", argv)
        else:
            raise ConfigError(f"child {self.id!r}: start must be an argv list, a callable "
                              f"or a SupervisorSpec, got {type(start).__name__}")
        if self.shutdown is None:
            default: Shutdown = "infinity" if self.type == "supervisor" else 5.0
            object.__setattr__(self, "shutdown", default)
        elif isinstance(self.shutdown, str):
            _check_choice(f"child {self.id!r}: shutdown", self.shutdown,
                          (BRUTAL_KILL, INFINITY))
        elif isinstance(self.shutdown, bool) or not isinstance(self.shutdown, int | float):
            raise ConfigError(f"child {self.id!r}: shutdown must be seconds, "
                              f"'brutal_kill' or 'infinity', got {self.shutdown!r}")
        elif self.shutdown < 0:
            raise ConfigError(f"child {self.id!r}: shutdown must be >= 0 s")
        else:
            object.__setattr__(self, "shutdown", float(self.shutdown))
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", dict(self.env))
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError(f"child {self.id!r}: env must map strings to strings, "
                                  f"got {key!r}={value!r}")
        if self.new_session is None:
            object.__setattr__(self, "new_session", self.type == "supervisor")
        self._check_heartbeat()

    def _check_heartbeat(self) -> None:
        hb, timeout = self.heartbeat, self.heartbeat_timeout
        if hb is None:
            if timeout is not None:
                raise ConfigError(f"child {self.id!r}: heartbeat_timeout without heartbeat")
            return
        if not isinstance(hb, int | float) or hb <= 0:
            raise ConfigError(f"child {self.id!r}: heartbeat must be > 0 seconds, got {hb!r}")
        if timeout is None:
            object.__setattr__(self, "heartbeat_timeout", 3.0 * float(hb))
        elif not isinstance(timeout, int | float) or timeout < hb:
            raise ConfigError(f"child {self.id!r}: heartbeat_timeout must be >= heartbeat "
                              f"({hb}), got {timeout!r}")
        object.__setattr__(self, "heartbeat", float(hb))

    @property
    def kind(self) -> str:
        """``"command"``, ``"callable"`` or ``"supervisor"``: how the child is started."""
        if isinstance(self.start, SupervisorSpec):
            return "supervisor"
        if callable(self.start):
            return "callable"
        return "command"

    def replace(self, **changes: Any) -> ChildSpec:
        """Return a copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SupervisorSpec:
    """A supervisor's flags and its ordered children.

    Attributes:
        children: child specs, started in this order and stopped in reverse. For
            ``simple_one_for_one`` exactly one spec, the template of every dynamic child.
        strategy: ``one_for_one`` (restart only the dead child), ``one_for_all``
            (restart all), ``rest_for_one`` (restart the dead child and those started
            after it) or ``simple_one_for_one`` (dynamic children of one spec).
        intensity: at most this many restarts ...
        period: ... within this many seconds; one more and the supervisor stops all
            its children and fails (escalates to its own parent). OTP: 1 in 5 s.
        name: the supervisor's name in events and status.
        events: ZeroMQ address to publish events on (``None``: no publishing).
        control: ZeroMQ address of the control socket (``None``: none).
    """

    children: tuple[ChildSpec, ...] = ()
    strategy: Strategy = "one_for_one"
    intensity: int = 1
    period: float = 5.0
    name: str = "supervisor"
    events: str | None = None
    control: str | None = None

    def __post_init__(self) -> None:
        _check_choice("strategy", self.strategy, STRATEGIES)
        if isinstance(self.intensity, bool) or not isinstance(self.intensity, int) \
                or self.intensity < 0:
            raise ConfigError(f"intensity must be an integer >= 0, got {self.intensity!r}")
        if not isinstance(self.period, int | float) or self.period <= 0:
            raise ConfigError(f"period must be > 0 seconds, got {self.period!r}")
        object.__setattr__(self, "period", float(self.period))
        children = tuple(self.children)
        for child in children:
            if not isinstance(child, ChildSpec):
                raise ConfigError(f"children must be ChildSpec objects, got {child!r}")
        seen: set[str] = set()
        for child in children:
            if child.id in seen:
                raise ConfigError(f"duplicate child id {child.id!r} in supervisor "
                                  f"{self.name!r}")
            seen.add(child.id)
        if self.strategy == "simple_one_for_one" and len(children) != 1:
            raise ConfigError("simple_one_for_one takes exactly one child spec (the "
                              f"template), got {len(children)}")
        object.__setattr__(self, "children", children)
