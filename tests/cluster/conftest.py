"""Fixtures for the cluster tests: a real Slurm on localhost.

The session fixture ``slurm`` checks that a Slurm controller answers and its node takes
jobs; when it does not and we are root, it runs slurm/local-cluster/up.sh (installs
slurm-wlm and munge, starts the daemons: about 15 s the first time) and stops the
daemons again with down.sh at the end of the session (so no process is left behind).
Otherwise the tests that need it skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "slurm" / "local-cluster" / "up.sh"
DOWN = UP.with_name("down.sh")
VENV_BIN = os.path.dirname(sys.executable)


def _usable() -> tuple[bool, str]:
    if shutil.which("scontrol") is None or shutil.which("sbatch") is None:
        return False, "Slurm commands not installed"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               timeout=20)
    except subprocess.TimeoutExpired:
        return False, "scontrol/sinfo did not answer in 20 s"
    if "is UP" not in ping.stdout:
        return False, f"no Slurm controller answers ({(ping.stdout + ping.stderr).strip()})"
    states = state.stdout.split()
    if not any(s.startswith(("idle", "mix", "alloc", "completing")) for s in states):
        return False, f"no usable Slurm node (states: {states or 'none'})"
    return True, "ok"


@pytest.fixture(scope="session")
def slurm() -> Iterator[str]:
    """Make sure a Slurm takes jobs here; yields the default partition name."""
    ok, why = _usable()
    started = False
    if not ok:
        if os.geteuid() != 0:
            pytest.skip(f"Slurm not up ({why}) and not root: run sudo bash {UP}")
        proc = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"{UP} failed:\n{proc.stdout}\n{proc.stderr}")
        started = True
        ok, why = _usable()
        if not ok:
            pytest.fail(f"Slurm still not usable after {UP}: {why}")
    # Jobs inherit the submitter's environment: make this venv's mpirun, python and
    # nonsense-hpc the ones they find.
    if not os.environ.get("PATH", "").startswith(VENV_BIN + os.pathsep):
        os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                         timeout=20).stdout.split()
    yield next((p.rstrip("*") for p in out if p.endswith("*")), out[0] if out else "")
    if started and os.environ.get("NONSENSE_KEEP_SLURM") != "1":
        subprocess.run(["bash", str(DOWN)], capture_output=True, timeout=120)


@pytest.fixture
def job_env() -> dict[str, str]:
    """Variables the test jobs need: Open MPI's run-as-root pair when we are root."""
    env = {}
    if os.geteuid() == 0:
        env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return env


@pytest.fixture
def cancel_after():
    """Collect job ids; cancel whatever is still queued or running at teardown."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
