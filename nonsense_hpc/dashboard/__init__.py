"""A live web dashboard for a running job, fed through a Forwarder.

``nonsense-hpc dashboard --from tcp://127.0.0.1:5560`` subscribes to a Forwarder's output
and serves a local page (no CDN: plain HTML, CSS and JavaScript from this package) that
updates live over Server-Sent Events: loss and accuracy curves, steps per second,
per-rank heartbeats and memory, and supervisor events.

Ranks feed it with the ordinary :class:`~nonsense_hpc.devices.Publisher`
(``pub.metric("train", {"loss": l, "accuracy": a}, step=k)``) and
:func:`start_heartbeat`; supervisors publish their events to the Forwarder's input
(``events=">tcp://127.0.0.1:5559"``).

Example:
    >>> from nonsense_hpc.dashboard import Dashboard                       # doctest: +SKIP
    >>> Dashboard("tcp://127.0.0.1:5560", port=8050).serve_forever()      # doctest: +SKIP

See docs/observability.md.
"""

from nonsense_hpc.dashboard.heartbeat import Heartbeat, heartbeat_data, rss_bytes, start_heartbeat
from nonsense_hpc.dashboard.server import DEFAULT_TOPICS, Dashboard
from nonsense_hpc.dashboard.state import DashboardState, group_of

__all__ = [
    "DEFAULT_TOPICS",
    "Dashboard",
    "DashboardState",
    "Heartbeat",
    "group_of",
    "heartbeat_data",
    "rss_bytes",
    "start_heartbeat",
]
