"""slurm/local-cluster/up.sh is idempotent; the sbatch templates are valid bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slurm
def test_up_again_is_a_quick_no_op(slurm):
    import os

    if os.geteuid() != 0:
        pytest.skip("up.sh needs root")
    proc = subprocess.run(["bash", str(ROOT / "slurm/local-cluster/up.sh")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "already up" in proc.stdout


@pytest.mark.parametrize("name", ["mpi.sbatch", "mpi-container.sbatch"])
def test_templates_parse(name):
    path = ROOT / "slurm" / "templates" / name
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --signal=B:USR1@120" in path.read_text()


def test_thin_layer_reachable_from_slurm_module():
    from nonsense_hpc.cluster import jobs, slurm

    assert slurm.submit is jobs.submit and slurm.wait is jobs.wait
    with pytest.raises(AttributeError):
        slurm.no_such_thing  # noqa: B018
