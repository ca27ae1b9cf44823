"""Preemption: the warning signal checkpoints, requeues (bounded) and the job resumes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nonsense_hpc import cluster
from nonsense_hpc.cluster import PreemptionHandler
from nonsense_hpc.errors import ConfigError

DATA = Path(__file__).parent / "data"


def _release(job):
    """Start a requeued job now instead of after Slurm's hold on it (Reason=BeginTime).

    The hold is there for a reason that bites a quick release: the requeue revokes the
    job's credential, stamped in whole seconds, and slurmd refuses a launch credential
    stamped in the same second ("Job N already killed, do not launch batch job"); the job
    then ends FAILED (exit 1, Restarts=1) and never runs again. Seeing the job PENDING
    means the requeue already happened, so the release waits for the next whole second
    of the clock (slurmctld's clock: the same machine) before ``StartTime=now``.
    """
    seen = time.time()
    time.sleep(max(0.0, math.floor(seen) + 1 - time.time()))
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"],
                   capture_output=True, timeout=30, check=True)


def _wait_for(paths, job, timeout=90.0):
    """Wait for files; release a requeued job from Slurm's requeue hold (once)."""
    deadline = time.monotonic() + timeout
    released = False
    while not all(p.exists() for p in paths):
        st = job.status()
        assert not st.finished, f"job ended early: {st}\n{job.logs()}{job.logs('stderr')}"
        if st.state == "PENDING" and st.reason == "BeginTime" and not released:
            _release(job)
            released = True
        assert time.monotonic() < deadline, f"timed out waiting for {paths}: {st}"
        time.sleep(0.1)


@pytest.mark.slurm
def test_signal_checkpoints_requeues_once_then_finishes(slurm, job_env, tmp_path,
                                                        cancel_after):
    job = cluster.submit([sys.executable, str(DATA / "job_preempt.py"), str(tmp_path)],
                         ntasks=2, time="10", partition=slurm, log_dir=tmp_path,
                         environment=job_env, max_requeues=1, job_name="preempt")
    cancel_after.append(job.job_id)
    _wait_for([tmp_path / "ready.0.0", tmp_path / "ready.0.1"], job)

    job.cancel(signal="USR1", batch_only=True)  # what --signal=B:USR1@T sends
    _wait_for([tmp_path / "ready.1.0", tmp_path / "ready.1.1"], job)
    assert (tmp_path / "ckpt").read_text() == "1"
    assert job.status().restarts == 1

    job.cancel(signal="USR1", batch_only=True)  # past the bound: checkpoint, keep going
    deadline = time.monotonic() + 60
    while (tmp_path / "ckpt").read_text() != "2":
        assert time.monotonic() < deadline, job.logs()
        time.sleep(0.1)
    (tmp_path / "finish").touch()
    st = job.wait(timeout=90)
    out, err = job.logs(), job.logs("stderr")
    assert st.state == "COMPLETED" and st.restarts == 1, out + err
    assert "rank 0 start restart 1 state 1" in out
    assert out.count("done restart 1 requeued False") == 2
    assert "done restart 0" not in out  # the first run was stopped by the requeue
    assert "requeued job" in err and "already requeued 1 times" in err


def test_handler_outside_slurm_checkpoints_and_does_not_requeue():
    calls, requeues = [], []
    with PreemptionHandler(lambda: calls.append(1), environ={},
                           requeue=requeues.append) as handler:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [1] and requeues == [] and not handler.requeued
    assert signal.getsignal(signal.SIGUSR1) is not handler._on_signal


def test_handler_deferred_acts_in_poll_and_respects_the_bound():
    env = {"SLURM_JOB_ID": "77", "SLURM_PROCID": "0", "SLURM_NTASKS": "1",
           "SLURM_RESTART_COUNT": "0", "NONSENSE_MAX_REQUEUES": "1"}
    calls, requeues = [], []
    handler = PreemptionHandler(lambda: calls.append(1), environ=env, deferred=True,
                                exit_on_requeue=False, requeue=requeues.append).install()
    try:
        assert handler.poll() is False
        os.kill(os.getpid(), signal.SIGUSR1)
        assert handler.requested and calls == []
        assert handler.poll() is True
        assert calls == [1] and requeues == ["77"] and handler.requeued
        with pytest.raises(SystemExit) as info:
            PreemptionHandler(lambda: None, environ=env, requeue=requeues.append).handle()
        assert info.value.code == 0
    finally:
        handler.uninstall()
    bounded = PreemptionHandler(lambda: None, environ={**env, "SLURM_RESTART_COUNT": "1"},
                                requeue=requeues.append)
    assert bounded.handle() is False and requeues == ["77", "77"]


def test_handler_validates_its_bound():
    with pytest.raises(ConfigError, match="max_requeues must be >= 0"):
        PreemptionHandler(lambda: None, max_requeues=-1, environ={})
    with pytest.raises(ConfigError, match="NONSENSE_MAX_REQUEUES='many'"):
        PreemptionHandler(lambda: None, environ={"NONSENSE_MAX_REQUEUES": "many"})
