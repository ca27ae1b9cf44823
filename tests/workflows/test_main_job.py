"""The main job end to end: `nonsense-hpc run` with the local profile, and
`snakemake --profile slurm` on the local Slurm; a failing rule is a clear error and the
finished outputs are kept; running again finishes the job without redoing them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLI = str(BIN / "nonsense-hpc")


def _monitor_gone(out):
    state = out / "monitor" / "monitor.json"
    assert not state.exists(), "the run's Forwarder was not stopped"
    pids = subprocess.run(["pgrep", "-f", f"nonsense_hpc.train.monitor {out}"],
                          capture_output=True, text=True).stdout.split()
    assert not pids, f"monitor processes left behind: {pids}"


def _check_report(out, steps, compared=True):
    html = (out / "report" / "report.html").read_text()
    for png in ("loss.png", "accuracy.png", "step_time.png", "allreduce_bandwidth.png"):
        assert (out / "report" / png).exists()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    # The ranks' per-step metrics went through the supervised Forwarder.
    assert f"per-step metrics from rank(s) [0, 1] (last step {steps})" in html
    assert "heartbeats from rank(s) [0, 1]" in html
    # Issue 8: the trace of one training step (diagram embedded, Chrome trace linked)
    # and synchronous against asynchronous training (plot and table).
    assert "<img src='trace-step/trace.svg'" in html and "trace-step/trace.json" in html
    chrome = json.loads((out / "report" / "trace-step" / "trace.json").read_text())
    assert {e["args"]["name"] for e in chrome["traceEvents"]
            if e["name"] == "process_name"} == {"rank 0", "rank 1"}
    if not compared:
        assert "Not run (workflow setting <code>async=0</code>" in html
        return
    assert "<img src='sync_vs_async.png'" in html
    cmp = json.loads((out / "report" / "sync_vs_async.json").read_text())["runs"]
    assert sorted(cmp) == ["async", "sync"] and all(
        r["final"]["accuracy"] > 0.5 for r in cmp.values())
    assert "<td>sync</td>" in html and "<td>async</td>" in html


def test_nonsense_hpc_run_local_profile(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_ALLOW")}
    env["PATH"] = "/usr/bin:/bin"  # as from a fresh shell: run finds its own venv
    args = [CLI, "run", "--np", "2", "--steps", "20", "--out", str(out), "--image", "skip"]
    failed = subprocess.run([*args, "-C", "fail_rule=prepare"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert failed.returncode != 0
    last = failed.stderr.strip().splitlines()[-1]
    assert "the workflow failed" in last and "failed rule(s): prepare" in last, last
    assert "injected failure in rule prepare" in failed.stderr
    _monitor_gone(out)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"nonsense-hpc run: done; report: {out / 'report' / 'report.html'}"
    if os.geteuid() == 0:
        assert "running as root: set OMPI_ALLOW_RUN_AS_ROOT=1" in proc.stderr
    _check_report(out, 20)
    _monitor_gone(out)


@pytest.mark.slurm
def test_snakemake_profile_slurm_end_to_end(slurm, tmp_path):
    out = tmp_path / "wf"
    cmd = [str(BIN / "snakemake"), "--profile", "slurm", "--snakefile",
           str(ROOT / "workflows" / "Snakefile"), "--directory", str(out),
           "--default-resources", f"slurm_partition={slurm}", "runtime=30",
           "mem_mb_per_cpu=500", "tasks=1",
           "--slurm-init-seconds-before-status-checks", "1",
           "--seconds-between-status-checks", "1",
           # async=0: the sync-vs-async rule is checked by the local-profile test (under
           # Slurm it is one more job, about 30 s here).
           "--config", "np=2", "steps=20", "checkpoint_every=10", "image=skip", "async=0"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    # The last rule fails: a clear error, every finished output kept.
    proc = subprocess.run([*cmd, "fail_rule=report"], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "Error in rule report" in text and "finished outputs are kept" in text
    for kept in ("data/manifest.json", "train/model.pt", "train/summary.json",
                 "train/checkpoints/ckpt-00000020.pt", "eval/metrics.json"):
        assert (out / kept).exists(), kept
    assert not (out / "report" / "report.html").exists()
    logs = list((out / ".snakemake" / "slurm_logs" / "rule_report").glob("*.log"))
    assert logs and "injected failure in rule report" in logs[0].read_text()
    _monitor_gone(out)
    # Again, without the failure: only the report is made (training is not redone).
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "rule train:" not in text and "rule report:" in text
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["result"]["world_size"] == 2
    _check_report(out, 20, compared=False)
    _monitor_gone(out)
