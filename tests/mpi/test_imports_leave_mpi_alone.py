"""Importing the package outside mpirun must not start MPI or load torch.

Snakemake, the CLI and login-node tools import nonsense_hpc in plain processes; an
MPI_Init there (mpi4py initialises on ``from mpi4py import MPI``) can fail or hang under a
cluster's PMI, and torch costs seconds. Only ``nonsense_hpc.comm`` (the MPI package itself)
may initialise MPI on import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = [
    "nonsense_hpc",
    "nonsense_hpc.cli.main",
    "nonsense_hpc.train",
    "nonsense_hpc.train.mainjob",
    "nonsense_hpc.bench.allreduce",
    "nonsense_hpc.devices",
    "nonsense_hpc.ipc",
    "nonsense_hpc.parallel",
    "nonsense_hpc.supervise",
    "nonsense_hpc.cluster",
    "nonsense_hpc.containers",
    "nonsense_hpc.trace",
    "nonsense_hpc.dashboard",
    "nonsense_hpc.psgd",
]


@pytest.mark.parametrize("module", LIGHT)
def test_import_does_not_start_mpi_or_load_torch(module: str) -> None:
    probe = (f"import sys, {module}\n"
             "print(sorted(m for m in ('mpi4py.MPI', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"import {module} loaded {proc.stdout.strip()}"
