"""Run inside the container by each rank: report where it runs and what MPI computed."""

import json
import os
import sys
from pathlib import Path

from mpi4py import MPI

comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
tree_sum = None
if "--tree" in sys.argv:
    import numpy as np

    from nonsense_hpc.comm import Tree

    value = np.full(1024, float(comm.Get_rank() + 1))
    Tree(comm=comm).allreduce(value, op="sum")
    tree_sum = float(value[0])
print(json.dumps({
    "rank": comm.Get_rank(),
    "size": comm.Get_size(),
    "sum": total,
    "tree_sum": tree_sum,
    "sandbox": os.path.exists("/.nonsense-sandbox.json"),
    "os": Path("/etc/os-release").read_text().splitlines()[0],
    "library": MPI.Get_library_version().splitlines()[0],
    "prefix": sys.prefix,
}), flush=True)
