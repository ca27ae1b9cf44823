"""`nonsense-hpc train` under a real mpirun: a rank that dies takes the job down with a
clear error (no hang), and the next launch resumes from the checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

from nonsense_hpc.launch import mpi_environment, mpirun_command
from nonsense_hpc.train import prepare_shards

CLI = str(Path(sys.executable).with_name("nonsense-hpc"))


def _train(tmp_path, *extra, np=2, timeout=150):
    cmd = mpirun_command(np, [CLI, "train", "--data", str(tmp_path / "data"), "--out",
                              str(tmp_path / "out"), "--steps", "30",
                              "--checkpoint-every", "10", "--timeout", "30", *extra])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=mpi_environment(allow_root=True))


def test_dead_rank_aborts_the_job_then_resume(tmp_path):
    prepare_shards(tmp_path / "data", 2)
    proc = _train(tmp_path, "--fail-at-step", "20", "--fail-rank", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "rank 1: error: rank 1: injected failure after step 20" in out
    ckpts = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert ckpts[-1] == "ckpt-00000020.pt", ckpts
    proc = _train(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resumed from step 20, ran 10" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["result"]["resumed_from"] == 20
    # Each rank stamped its start (used by the overhead benchmark).
    assert (tmp_path / "out" / "ranks" / "rank-001.start").exists()


def test_bad_input_is_a_clear_error(tmp_path):
    proc = subprocess.run([CLI, "train", "--data", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
                          env=mpi_environment(allow_root=True))
    assert proc.returncode != 0
    assert "manifest.json is missing" in proc.stderr
    proc = subprocess.run([CLI, "train", "--data", "d", "--out", "o", "--hidden", "a,b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "comma-separated list of integers" in proc.stderr
