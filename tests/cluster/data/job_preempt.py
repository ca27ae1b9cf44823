"""A rank that checkpoints and requeues on SIGUSR1 (tests/cluster/test_preempt.py).

argv: WORKDIR. Rank 0 keeps a counter in WORKDIR/ckpt (the "model state"); each rank
touches WORKDIR/ready.RESTART.RANK once its handler is installed and then works until
WORKDIR/finish exists (at most 120 s).
"""

import sys
import time
from pathlib import Path

from nonsense_hpc.cluster import JobEnvironment, PreemptionHandler

work = Path(sys.argv[1])
job = JobEnvironment.from_env()
ckpt = work / "ckpt"
state = int(ckpt.read_text()) if ckpt.exists() else 0


def save() -> None:
    if job.rank == 0:
        ckpt.write_text(str(state + 1))
    print(f"rank {job.rank} checkpoint restart {job.restart_count} state {state + 1}",
          flush=True)


handler = PreemptionHandler(save).install()
print(f"rank {job.rank} start restart {job.restart_count} state {state}", flush=True)
(work / f"ready.{job.restart_count}.{job.rank}").touch()
deadline = time.monotonic() + 120
while not (work / "finish").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print(f"rank {job.rank} done restart {job.restart_count} requeued {handler.requeued}",
      flush=True)
