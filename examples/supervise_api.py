"""The Python API: a rest_for_one supervisor with a callable child and live events.

    python examples/supervise_api.py
"""

import os
import queue
import signal
import time

from nonsense_hpc.supervise import ChildSpec, Supervisor


def producer(n):
    for _ in range(n):
        time.sleep(1.0)
    return 0


events = queue.Queue()
children = [
    ChildSpec(id="db", start=["sleep", "3600"], shutdown="brutal_kill"),
    ChildSpec(id="api", start=["sleep", "3600"], shutdown=2.0),
    ChildSpec(id="producer", start=producer, args=(3600,), restart="transient"),
]
with Supervisor(children=children, strategy="rest_for_one", intensity=3, period=5,
                on_event=events.put, name="app") as sup:
    for info in sup.which_children():
        print(info)
    os.kill(sup.which_children()[1].pid, signal.SIGKILL)     # kill "api"
    while (event := events.get(timeout=10)).kind != "restart":
        pass
    print("restarted:", event.restarted)                    # ('api', 'producer')
