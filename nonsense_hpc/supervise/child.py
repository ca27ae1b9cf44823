"""A supervised child's mutable state (the spec stays frozen) and how it is started."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nonsense_hpc.supervise import heart
from nonsense_hpc.supervise.process import ChildProcess, ExitStatus, fork_callable, spawn_command
from nonsense_hpc.supervise.spec import ChildSpec, SupervisorSpec

__all__ = ["Child", "ChildInfo"]


@dataclass(frozen=True)
class ChildInfo:
    """What ``which_children`` and ``ctl status`` report for one child.

    Attributes:
        id: the child's id (``template.N`` for simple_one_for_one children).
        pid: the running process (``None`` when stopped).
        type: ``worker`` or ``supervisor``.
        restart: the restart type of its spec.
        restarts: how many times the supervisor restarted it.
        last_exit: how its previous process ended (``"killed by SIGKILL"``), if any.
        uptime: seconds since the current process started (0 when stopped).
    """

    id: str
    pid: int | None
    type: str
    restart: str
    restarts: int
    last_exit: str | None
    uptime: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return dict(self.__dict__)


def _run_nested(spec: SupervisorSpec) -> int:
    """Body of a nested supervisor's process: 0 after a clean stop, 1 after giving up."""
    from nonsense_hpc.errors import SupervisorError
    from nonsense_hpc.supervise.supervisor import Supervisor

    try:
        Supervisor(spec).run()
    except SupervisorError as exc:
        print(f"nonsense-hpc supervise: {exc}", file=sys.stderr)
        return 1
    return 0


class Child:
    """One child slot: its spec, its current process, its counters."""

    def __init__(self, spec: ChildSpec, key: str, args: tuple[Any, ...]) -> None:
        self.spec = spec
        self.key = key
        self.args = spec.args + args
        self.proc: ChildProcess | None = None
        self.incarnation = 0
        self.restarts = 0
        self.started = 0.0
        self.last_beat = 0.0
        self.last_exit: ExitStatus | None = None

    @property
    def running(self) -> bool:
        """Whether a process of this child is alive (not yet reaped)."""
        return self.proc is not None

    @property
    def heartbeat_token(self) -> str:
        """The token this incarnation sends with its beats."""
        return f"{self.key}#{self.incarnation}"

    @property
    def heartbeat_deadline(self) -> float:
        """Monotonic time at which silence kills the child."""
        return self.last_beat + float(self.spec.heartbeat_timeout or 0.0)

    def _environment(self, supervisor: str, heart_addr: str | None) -> dict[str, str]:
        env = dict(os.environ)
        for var in (heart.ADDR_VAR, heart.INTERVAL_VAR, heart.ID_VAR):
            env.pop(var, None)
        env.update(self.spec.env)
        env["NONSENSE_SUPERVISOR"] = supervisor
        env["NONSENSE_CHILD_ID"] = self.key
        if heart_addr is not None:
            env[heart.ADDR_VAR] = heart_addr
            env[heart.INTERVAL_VAR] = repr(self.spec.heartbeat)
            env[heart.ID_VAR] = self.heartbeat_token
        return env

    def spawn(self, supervisor: str, heart_addr: str | None) -> None:
        """Start a new process for this child.

        Raises:
            SupervisorError: the command could not be started.
        """
        spec = self.spec
        self.incarnation += 1
        env = self._environment(supervisor, heart_addr)
        start = spec.start
        if isinstance(start, SupervisorSpec):
            nested = start if start.name != "supervisor" else \
                _renamed(start, f"{supervisor}.{self.key}")
            self.proc = fork_callable(lambda: _run_nested(nested), env, spec.cwd,
                                      spec.stdout, spec.stderr, bool(spec.new_session),
                                      death_signal=signal.SIGTERM)
        elif callable(start):
            target: Callable[..., Any] = start
            args = self.args
            self.proc = fork_callable(lambda: target(*args), env, spec.cwd, spec.stdout,
                                      spec.stderr, bool(spec.new_session))
        else:
            argv = [*start, *(str(a) for a in self.args)]
            self.proc = spawn_command(argv, env, spec.cwd, spec.stdout, spec.stderr,
                                      bool(spec.new_session))
        self.started = self.last_beat = time.monotonic()

    def info(self) -> ChildInfo:
        """A snapshot for status reports."""
        return ChildInfo(id=self.key, pid=None if self.proc is None else self.proc.pid,
                         type=self.spec.type, restart=self.spec.restart,
                         restarts=self.restarts,
                         last_exit=None if self.last_exit is None else str(self.last_exit),
                         uptime=0.0 if self.proc is None else
                         round(time.monotonic() - self.started, 3))


def _renamed(spec: SupervisorSpec, name: str) -> SupervisorSpec:
    import dataclasses

    return dataclasses.replace(spec, name=name)
