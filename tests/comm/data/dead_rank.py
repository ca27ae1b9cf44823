"""Rank 1 dies after the first allreduce; the others must raise, naming it."""

import os
import sys
import time

import torch

from nonsense_hpc import CollectiveTimeoutError, Tree

tree = Tree(timeout=float(sys.argv[1]))
x = torch.ones(1000)
tree.allreduce(x)
if tree.rank == 1:
    os._exit(3)
t0 = time.monotonic()
try:
    tree.allreduce(torch.ones(int(sys.argv[2])))
    print(f"rank {tree.rank}: NO ERROR", flush=True)
    code = 1
except CollectiveTimeoutError as exc:
    print(f"rank {tree.rank}: raised after {time.monotonic() - t0:.2f} s: {exc}", flush=True)
    code = 0
os._exit(code)  # MPI_Finalize would wait for the dead rank
