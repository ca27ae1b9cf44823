"""nonsense-hpc submit / status / cancel / logs / mpirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nonsense_hpc.cli.main import cli
from nonsense_hpc.cluster import PARAMETERS


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_misspelled_option_lists_every_valid_one():
    result = run("submit", "--ntask", "2", "--", "true")
    assert result.exit_code == 2
    assert "--ntask (did you mean --ntasks?)" in result.output
    for option in ("--nodes", "--ntasks", "--time", "--partition", "--container"):
        assert option in result.output
    for name in PARAMETERS:
        assert name in result.output


def test_misspelled_resource_lists_every_valid_one():
    result = run("submit", "-r", "gress=gpu:1", "--", "true")
    assert result.exit_code == 1
    assert "did you mean 'gres'?" in result.output
    assert all(name in result.output for name in PARAMETERS)


def test_dry_run_renders_the_script(tmp_path):
    result = run("submit", "--nodes", "1", "--ntasks", "2", "--time", "10", "--partition",
                 "debug", "--container", "img.sif", "-r", "qos=low", "--log-dir",
                 str(tmp_path), "--dry-run", "--", "python", "-c", "print(1)")
    assert result.exit_code == 0, result.output
    for line in ("#SBATCH --ntasks=2", "#SBATCH --nodes=1", "#SBATCH --time=10",
                 "#SBATCH --partition=debug", "#SBATCH --qos=low",
                 f"#SBATCH --output={tmp_path}/%x-%j.out"):
        assert line in result.output
    assert "container exec img.sif -- python -c 'print(1)' &" in result.output


def test_bad_values_are_clear():
    assert "not NAME=VALUE" in run("submit", "-r", "qos", "--", "true").output
    assert "not a Slurm time limit" in run("submit", "-t", "soon", "--dry-run", "--",
                                           "true").output


@pytest.mark.parametrize("name", ["submit", "status", "cancel", "logs", "mpirun"])
def test_help_teaches_with_examples(name):
    result = run(name, "--help")
    assert result.exit_code == 0 and "Examples:" in result.output


@pytest.mark.slurm
def test_submit_wait_status_logs_through_the_cli(slurm, job_env, tmp_path):
    env = {**os.environ, **job_env}
    base = [sys.executable, "-m", "nonsense_hpc"]
    proc = subprocess.run(
        [*base, "submit", "-n", "2", "-t", "5", "-p", slurm, "--log-dir", str(tmp_path),
         "--wait", "--timeout", "120", "--", sys.executable, "-c",
         "import os; print('hello from', os.environ['OMPI_COMM_WORLD_RANK'])"],
        capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.splitlines()[0]
    assert sorted(proc.stdout.splitlines()[1:]) == ["hello from 0", "hello from 1"]
    status = subprocess.run([*base, "status", job_id, "--json", "--log-dir", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(status.stdout)[0]["state"] == "COMPLETED"
    logs = subprocess.run([*base, "logs", job_id, "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert "hello from 0" in logs.stdout
    cancel = subprocess.run([*base, "cancel", "999999"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert cancel.returncode == 1 and "Invalid job id" in cancel.stderr


@pytest.mark.slurm
def test_failing_job_exit_status_passes_through(slurm, job_env, tmp_path):
    env = {**os.environ, **job_env}
    proc = subprocess.run(
        [sys.executable, "-m", "nonsense_hpc", "submit", "--launcher", "none", "-p", slurm,
         "--log-dir", str(tmp_path), "--wait", "--timeout", "60", "--", "sh", "-c",
         "echo oops >&2; exit 5"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 5
    assert "oops" in proc.stderr and "FAILED (exit 5)" in proc.stderr


@pytest.mark.slurm
def test_impossible_request_through_the_cli(slurm, tmp_path):
    result = run("submit", "-n", "100000", "--log-dir", str(tmp_path), "--", "true")
    assert result.exit_code == 1
    assert "Slurm refused the job: " in result.output
