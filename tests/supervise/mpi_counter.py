"""An MPI job that counts and checkpoints, and resumes from its checkpoint.

Usage: mpi_counter.py CHECKPOINT LOG [LIMIT]

Every step all ranks agree on the counter (allreduce), rank 0 writes it atomically to
CHECKPOINT and appends "pid counter" to LOG. On start it resumes from CHECKPOINT.
It exits 0 when the counter reaches LIMIT.
"""

import os
import sys
import time

from mpi4py import MPI

checkpoint, log = sys.argv[1], sys.argv[2]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
comm = MPI.COMM_WORLD
start = 0
if comm.rank == 0 and os.path.exists(checkpoint):
    with open(checkpoint) as fh:
        start = int(fh.read().strip() or 0)
counter = comm.bcast(start, root=0)
while counter < limit:
    counter = comm.allreduce(1, op=MPI.SUM) // comm.size + counter
    if comm.rank == 0:
        tmp = checkpoint + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(counter))
        os.replace(tmp, checkpoint)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {counter}\n")
    time.sleep(0.02)
