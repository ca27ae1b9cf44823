"""The Slurm fixtures of tests/cluster/conftest.py (a real Slurm on localhost, started by
slurm/local-cluster/up.sh when we are root; the tests skip, saying why, otherwise)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_cluster_fixtures", Path(__file__).resolve().parents[1] / "cluster" / "conftest.py")
_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cluster)

slurm = _cluster.slurm
job_env = _cluster.job_env
