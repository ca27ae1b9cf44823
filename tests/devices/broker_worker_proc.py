"""A broker worker process for the reliability tests: squares x after `ms` of work."""

import sys
import time

from nonsense_hpc.devices.worker import BrokerWorker

address, heartbeat = sys.argv[1], float(sys.argv[2])
with BrokerWorker(address, heartbeat=heartbeat, liveness=3) as worker:
    print("up", flush=True)
    while (task := worker.get(timeout=60)) is not None:
        deadline = time.monotonic() + task.data.get("ms", 0) / 1000
        while time.monotonic() < deadline:  # busy work, so a kill lands mid-task
            pass
        worker.reply(task, {"y": task.data["x"] ** 2})
