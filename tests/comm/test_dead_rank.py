"""A rank that dies mid-collective makes the others raise within the timeout."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nonsense_hpc.launch import mpi_environment, mpirun_command

SCRIPT = Path(__file__).parent / "data" / "dead_rank.py"


@pytest.mark.parametrize("nelems", [10, 1_000_000], ids=["small", "large"])
def test_survivors_raise_naming_the_dead_rank(nelems):
    cmd = mpirun_command(3, [sys.executable, str(SCRIPT), "2.0", str(nelems)],
                         extra=["--enable-recovery"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=mpi_environment(allow_root=True))
    out = proc.stdout + proc.stderr
    raised = re.findall(r"rank (\d): raised after ([\d.]+) s: .*rank\(s\) \[1\]", out)
    assert sorted(r for r, _ in raised) == ["0", "2"], out[-3000:]
    for _, seconds in raised:
        assert 1.9 <= float(seconds) < 20, out[-3000:]
    assert "NO ERROR" not in out
