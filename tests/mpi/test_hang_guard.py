"""The matrix's hang guard: a hung test is named with its rank count, and the job ends.

Each case writes a small ``mpi_test_*.py`` file, runs pytest on it in a subprocess (the
way CI runs the suite) and reads the report a user would see.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

HEADER = """
import ctypes
import time

NP = (2,)
TIMEOUT = 3
"""


def _run_pytest(tmp_path: Path, body: str) -> tuple[str, float]:
    test_file = tmp_path / "mpi_test_hung.py"
    test_file.write_text(textwrap.dedent(HEADER) + textwrap.dedent(body))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(test_file)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stdout, time.monotonic() - start


def test_hang_in_python_is_reported_by_name_and_rank(tmp_path: Path) -> None:
    out, seconds = _run_pytest(tmp_path, """
        def test_rank1_sleeps(comm):
            if comm.Get_rank() == 1:
                time.sleep(600)

        def test_after(comm):
            comm.Barrier()
        """)
    assert "test_rank1_sleeps at np=2: timeout on rank(s) [1]" in out, out
    assert "HANG GUARD: test_rank1_sleeps did not finish within 3 s" in out, out
    assert "test_after[np=2]" in out  # reported too, not silently lost
    assert seconds < 120, seconds


def test_hang_holding_the_gil_still_ends_the_job(tmp_path: Path) -> None:
    # libc sleep() called through PyDLL keeps the GIL, so no Python thread can run:
    # only faulthandler's C watchdog can end this rank.
    out, seconds = _run_pytest(tmp_path, """
        def test_stuck_in_c(comm):
            if comm.Get_rank() == 1:
                ctypes.PyDLL(None).sleep(600)
        """)
    assert "test_stuck_in_c at np=2: no result from rank(s) [1]" in out, out
    assert "rank(s) [1] started this test and never finished it" in out, out
    tail = out.split("mpirun output (tail)")[1]
    assert "mpi_test_hung.py\", line" in tail and "in test_stuck_in_c" in tail, out  # stack
    # The C watchdog fires at TIMEOUT + C_GUARD_GRACE, well before the job's hard limit.
    assert "mpirun exited with status" in out, out
    assert seconds < 70, seconds
