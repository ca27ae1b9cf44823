"""`snakemake --profile slurm` runs a two-rule workflow (one MPI rule) on the local Slurm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = Path(__file__).parent / "data" / "workflow"


def test_profile_runs_a_two_rule_workflow(slurm, job_env, tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("snakemake is not installed in this environment (pip install .[workflow])")
    work = tmp_path / "wf"
    shutil.copytree(WORKFLOW, work)
    env = {**os.environ, **job_env}
    # From the repository root, as users run it; faster status checks for CI only.
    proc = subprocess.run(
        [str(snakemake), "--profile", "slurm", "--directory", str(work), "--snakefile",
         str(work / "Snakefile"), "--default-resources", f"slurm_partition={slurm}",
         "runtime=30", "mem_mb_per_cpu=500", "tasks=1",
         "--slurm-init-seconds-before-status-checks", "1",
         "--seconds-between-status-checks", "1"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (work / "result.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("rank 0 in job ")
    assert lines[1].startswith("rank 1 in job ")
    assert lines[0].split()[-1] == lines[1].split()[-1]  # one job, two ranks

