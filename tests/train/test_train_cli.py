"""`nonsense-hpc train` under a real mpirun: a rank that dies takes the job down with a
clear error (no hang), and the next launch resumes from the checkpoint; while it runs,
the dashboard shows every rank's heartbeat and memory."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
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
    proc = subprocess.run([CLI, "workflow", "dashboard", "--out", str(tmp_path), "--wait",
                           "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no running Forwarder in" in proc.stderr, proc.stderr


def _state(url):
    with urllib.request.urlopen(url + "api/state", timeout=10) as resp:
        return json.loads(resp.read())


def test_dashboard_shows_every_rank_while_training(tmp_path):
    """Issue 8 point 2 in the main job: `nonsense-hpc workflow dashboard --out RUN` finds
    the run's supervised Forwarder and shows every rank's heartbeat and memory."""
    from nonsense_hpc.train.monitor import start_monitor, stop_monitor

    prepare_shards(tmp_path / "data", 2)
    info = start_monitor(tmp_path / "monitor", timeout=60)
    train = mpirun_command(2, [CLI, "train", "--data", str(tmp_path / "data"), "--out",
                               str(tmp_path / "out"), "--steps", "10000000",
                               "--checkpoint-every", "0", "--trace-step", "0",
                               "--heartbeat", "0.2", "--publish", info["in"]])
    procs = []
    try:
        dash = subprocess.Popen([CLI, "workflow", "dashboard", "--out", str(tmp_path),
                                 "--port", "0", "--wait", "10"], stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        procs.append(dash)
        line = dash.stderr.readline()  # "dashboard: URL (run ..., Forwarder ADDR)"
        assert line.startswith("dashboard: http://") and info["out"] in line, line
        url = line.split()[1]
        job = subprocess.Popen(train, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=mpi_environment(allow_root=True),
                               start_new_session=True)
        procs.append(job)
        deadline = time.monotonic() + 90
        while True:
            state = _state(url)
            ranks = {r["rank"]: r for r in state["ranks"]}
            # >= 3 beats: more than the one the trainer sends at the start.
            if all(r in ranks and ranks[r]["beats"] >= 3 and ranks[r]["rss"] > 2**20
                   for r in (0, 1)):
                break
            assert job.poll() is None, job.communicate(timeout=30)
            assert time.monotonic() < deadline, ranks
            time.sleep(0.2)
        assert "train/loss" in state["series"], sorted(state["series"])
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=60)
        stop_monitor(tmp_path / "monitor")
