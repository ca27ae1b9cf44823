"""One rank of the sbatch'ed test job: where am I, Tree AllReduce, torch gloo all_reduce.

Prints one JSON line per rank to standard output.
"""

import json
import os
import sys

import numpy as np
from mpi4py import MPI

from nonsense_hpc.cluster import JobEnvironment, apply_torchrun_environment
from nonsense_hpc.comm import Tree

comm = MPI.COMM_WORLD
job = apply_torchrun_environment()
tree = Tree(comm=comm)
value = np.full(1000, float(comm.rank + 1))
tree.allreduce(value, op="sum")
tree.close()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

dist.init_process_group("gloo", init_method="env://")
tensor = torch.full((8,), float(dist.get_rank() + 1))
dist.all_reduce(tensor)
dist.destroy_process_group()

print(json.dumps({
    "rank": job.rank, "world_size": job.world_size, "local_rank": job.local_rank,
    "source": job.source, "job_id": job.job_id, "mpi_rank": comm.rank,
    "tree_sum": float(value[0]), "torch_sum": float(tensor[0]),
    "torchrun": {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                            "MASTER_ADDR", "MASTER_PORT")},
    "reread": JobEnvironment.from_env().rank,
}), flush=True)
sys.exit(0)
