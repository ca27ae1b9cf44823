"""The SLURM_*/launcher mapping table and the torchrun variables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nonsense_hpc.cluster import (
    JobEnvironment,
    allocation_environment,
    apply_torchrun_environment,
    expand_hostlist,
    master_port,
    torchrun_environment,
)
from nonsense_hpc.errors import ConfigError
from nonsense_hpc.launch import find_mpirun, mpi_environment

SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "1234",
        "SLURM_JOB_NODELIST": "gpu[08-09]", "SLURM_RESTART_COUNT": "2"}


def test_srun_task():
    env = JobEnvironment.from_env(SRUN)
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.num_nodes) == \
        (5, 8, 1, 1, 2)
    assert env.local_world_size == 4
    assert env.hostnames == ("gpu08", "gpu09")
    assert env.restart_count == 2 and env.job_id == "1234" and env.source == "slurm"
    assert env.master_addr == "gpu08"


def test_mpirun_inside_sbatch_wins_over_the_batch_step():
    # In the batch step every process sees SLURM_PROCID=0; the launcher knows better.
    env = JobEnvironment.from_env({
        **SRUN, "SLURM_PROCID": "0", "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.source) == \
        (3, 4, 1, 1, "openmpi")


@pytest.mark.parametrize(("variables", "source"), [
    ({"PMI_RANK": "2", "PMI_SIZE": "3", "MPI_LOCALRANKID": "0"}, "pmi"),
    ({"PMIX_RANK": "2", "PMIX_SIZE": "3"}, "pmix"),
    ({"RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}, "torchrun"),
])
def test_other_launchers(variables, source):
    env = JobEnvironment.from_env(variables)
    assert (env.rank, env.world_size, env.source) == (2, 3, source)


def test_outside_any_job():
    env = JobEnvironment.from_env({})
    assert (env.rank, env.world_size, env.local_rank, env.source) == (0, 1, 0, "single")
    assert torchrun_environment(env, {})["MASTER_ADDR"] == "127.0.0.1"
    assert torchrun_environment(env, {})["MASTER_PORT"] == "29500"


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="SLURM_PROCID='x' is not an integer"):
        JobEnvironment.from_env({"SLURM_PROCID": "x", "SLURM_NTASKS": "2"})
    with pytest.raises(ConfigError, match="inconsistent ranks from slurm"):
        JobEnvironment.from_env({"SLURM_PROCID": "4", "SLURM_NTASKS": "2"})
    with pytest.raises(ConfigError, match="malformed host list"):
        expand_hostlist("n[a-b]")


def test_torchrun_variables_and_user_choice_kept():
    env = torchrun_environment(environ=SRUN)
    assert env["RANK"] == "5" and env["WORLD_SIZE"] == "8" and env["LOCAL_RANK"] == "1"
    assert env["MASTER_ADDR"] == "gpu08"
    assert env["MASTER_PORT"] == str(master_port("1234")) == str(20000 + 1234)
    chosen = torchrun_environment(environ={**SRUN, "MASTER_PORT": "4000"})
    assert chosen["MASTER_PORT"] == "4000"
    target = dict(SRUN)
    job = apply_torchrun_environment(target)
    assert target["RANK"] == "5" and job.rank == 5
    # Reading again after applying gives the same answer (the torchrun source now).
    assert JobEnvironment.from_env(target).rank == 5


@pytest.mark.parametrize(("text", "hosts"), [
    ("localhost", ["localhost"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[01-02,7],gpu1", ["n01", "n02", "n7", "gpu1"]),
    ("rack[1-2]-a", ["rack1-a", "rack2-a"]),
])
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


def test_allocation_environment_outside_a_job_is_empty():
    assert allocation_environment({}) == {}
    assert allocation_environment({"SLURM_JOB_ID": "1", "SLURM_NODELIST": "n1"}) == {}


def test_real_mpirun_ranks_map():
    code = ("import json; from nonsense_hpc.cluster import JobEnvironment as J, "
            "torchrun_environment as t; e = J.from_env(); "
            "print(json.dumps([e.rank, e.world_size, e.local_rank, e.source, t()['RANK']]))")
    env = mpi_environment(allow_root=True)
    for key in [k for k in env if k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "PMI"))]:
        del env[key]
    proc = subprocess.run([find_mpirun(), "-n", "2", "--oversubscribe", sys.executable,
                           "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = sorted(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("["))
    assert rows == [[0, 2, 0, "openmpi", "0"], [1, 2, 1, "openmpi", "1"]]
