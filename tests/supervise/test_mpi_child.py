"""An mpirun job as a supervised child: killed, restarted, resumed from its checkpoint."""

import os
import signal
import sys
from pathlib import Path

from supervise_helpers import Events, alive, wait_for

from nonsense_hpc.launch import mpi_environment, mpirun_command
from nonsense_hpc.supervise import ChildSpec, Supervisor
from nonsense_hpc.supervise.process import list_processes

COUNTER = str(Path(__file__).with_name("mpi_counter.py"))


def _log(path):
    if not path.exists():
        return []
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines() if line]


def test_killed_mpirun_job_is_restarted_and_resumes(tmp_path, monkeypatch):
    for key, value in mpi_environment(allow_root=True).items():
        monkeypatch.setenv(key, value)
    checkpoint, log = tmp_path / "counter.ckpt", tmp_path / "counter.log"
    argv = mpirun_command(2, [sys.executable, COUNTER, str(checkpoint), str(log), "60"])
    job = ChildSpec(id="job", start=argv, restart="transient", new_session=True,
                    shutdown=10.0)
    events = Events()
    with Supervisor(children=[job], intensity=3, period=60, on_event=events.put) as sup:
        first = sup.which_children()[0].pid
        wait_for(lambda: len(_log(log)) >= 10, timeout=60, what="ten checkpointed steps")

        def in_session():
            return [p.pid for p in list_processes() if p.sid == first and p.pid != first]

        wait_for(lambda: len(in_session()) >= 2, timeout=30,
                 what="mpirun's two ranks in its session")
        ranks = in_session()
        os.kill(first, signal.SIGKILL)
        assert events.wait("exit", "job").signal == "SIGKILL"
        events.wait("restart", "job", timeout=30)
        wait_for(lambda: not any(alive(p) for p in ranks), timeout=10,
                 what="the killed job's ranks gone")
        # the transient job finishes its 60 steps and is not restarted after exit 0
        done = events.wait("exit", "job", timeout=120)
        assert done.status == 0
    entries = _log(log)
    counters = [c for _, c in entries]
    pids = [p for p, _ in entries]
    boundary = next(i for i in range(1, len(pids)) if pids[i] != pids[i - 1])
    # the second incarnation resumed where the checkpoint left off, not from zero
    # (the kill may land between writing the checkpoint and the log line: +1 or +2)
    assert counters[boundary - 1] + 1 <= counters[boundary] <= counters[boundary - 1] + 2
    assert counters[boundary - 1] >= 10 and counters[-1] == 60
    assert counters == sorted(counters)
    assert int(checkpoint.read_text()) == 60


def test_supervised_training_job_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """The main job's trainer under a supervisor: killed mid-run, it resumes, not restarts."""
    import json
    import subprocess

    for key, value in mpi_environment(allow_root=True).items():
        monkeypatch.setenv(key, value)
    cli = str(Path(sys.executable).with_name("nonsense-hpc"))
    data, out = tmp_path / "data", tmp_path / "train"
    subprocess.run([cli, "workflow", "prepare", "--out", str(data), "--shards", "2"],
                   check=True, capture_output=True, timeout=120)
    argv = mpirun_command(2, [cli, "train", "--data", str(data), "--out", str(out),
                              "--steps", "4000", "--checkpoint-every", "100",
                              "--publish", "", "--trace-step", "0"])
    job = ChildSpec(id="train", start=argv, restart="transient", new_session=True,
                    shutdown=10.0)
    events = Events()
    ckpts = out / "checkpoints"
    with Supervisor(children=[job], intensity=3, period=60, on_event=events.put) as sup:
        first = sup.which_children()[0].pid
        wait_for(lambda: ckpts.is_dir() and any(ckpts.glob("ckpt-*.pt")), timeout=120,
                 what="a first training checkpoint")
        os.kill(first, signal.SIGKILL)
        assert events.wait("exit", "train").signal == "SIGKILL"
        events.wait("restart", "train", timeout=30)
        done = events.wait("exit", "train", timeout=300)
        assert done.status == 0
    result = json.loads((out / "summary.json").read_text())["result"]
    assert result["steps"] == 4000
    # resumed from the checkpoint: the second incarnation ran only the missing steps
    assert result["resumed_from"] >= 100, result
    assert result["steps_run"] == 4000 - result["resumed_from"], result
