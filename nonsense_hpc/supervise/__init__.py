"""Supervision trees: Erlang/OTP-style supervisors, heartbeats and a watchdog.

Children are OS commands (each in its own process group, so no grandchild outlives it)
or Python callables in their own process; nested supervisors are children of type
``supervisor``. A death is seen at once (pidfd), and handled by the strategy:

``one_for_one``         restart the dead child only
``one_for_all``         stop the others (reverse order), restart all (in order)
``rest_for_one``        restart the dead child and every child started after it
``simple_one_for_one``  dynamic children from one spec, each restarted on its own

More than ``intensity`` restarts within ``period`` seconds (default 1 in 5 s) and the
supervisor stops every child and fails upward to its parent.

Example:
    >>> from nonsense_hpc.supervise import ChildSpec, Supervisor
    >>> children = [ChildSpec(id="a", start=["sleep", "60"], shutdown="brutal_kill"),
    ...             ChildSpec(id="b", start=["sleep", "60"], shutdown=1.0)]
    >>> with Supervisor(children=children, strategy="rest_for_one", intensity=3) as sup:
    ...     sup.count_children()["active"]
    2

See docs/supervision.md.
"""

from __future__ import annotations

from nonsense_hpc.supervise.child import ChildInfo
from nonsense_hpc.supervise.configfile import load_config
from nonsense_hpc.supervise.control import request
from nonsense_hpc.supervise.events import Event
from nonsense_hpc.supervise.heart import beat, start_beating
from nonsense_hpc.supervise.process import ExitStatus
from nonsense_hpc.supervise.publish import EventPublisher, EventSubscriber
from nonsense_hpc.supervise.spec import ChildSpec, SupervisorSpec
from nonsense_hpc.supervise.supervisor import Supervisor
from nonsense_hpc.supervise.watchdog import Watchdog

__all__ = [
    "ChildInfo",
    "ChildSpec",
    "Event",
    "EventPublisher",
    "EventSubscriber",
    "ExitStatus",
    "Supervisor",
    "SupervisorSpec",
    "Watchdog",
    "beat",
    "load_config",
    "request",
    "start_beating",
]
