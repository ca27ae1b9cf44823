"""Report from real training-log files; the image step's decisions."""

import json

import pytest

from nonsense_hpc.errors import ConfigError, ContainerError
from nonsense_hpc.train.image import exec_prefix, prepare_image
from nonsense_hpc.train.report import write_report
from nonsense_hpc.train.runlog import RankLog, read_rank_logs


def _logs(out, ranks=2, steps=20, allreduce=True):
    for rank in range(ranks):
        log = RankLog(out, rank, 0)
        for s in range(1, steps + 1):
            log.write({"step": s, "rank": rank, "loss": 2.0 / s, "accuracy": s / steps,
                       "samples": 32, "step_time": 0.004 + 0.001 * rank,
                       "allreduce_time": 0.001 if allreduce else None,
                       "allreduce_bytes": 100_000, "throughput": 1e4, "time": 0.0})
        log.close()


def test_report_has_plots_and_numbers(tmp_path):
    _logs(tmp_path / "train")
    (tmp_path / "eval.json").write_text(json.dumps(
        {"accuracy": 0.93, "loss": 0.2, "samples": 359}))
    (tmp_path / "messages.jsonl").write_text(
        json.dumps({"kind": "metric", "rank": 0, "step": 1, "topic": "metrics.train"}) + "\n")
    path = write_report(tmp_path / "report", train_dir=tmp_path / "train",
                        eval_json=tmp_path / "eval.json",
                        messages=tmp_path / "messages.jsonl")
    text = path.read_text()
    for png in ("loss.png", "accuracy.png", "step_time.png", "allreduce_bandwidth.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
        assert png in text
    assert "0.9300" in text and "1 per-step metrics" in text
    assert "100.0" in text  # 100 kB in 1 ms = 100 MB/s


def test_report_without_allreduce_times_and_inputs(tmp_path):
    _logs(tmp_path / "train", ranks=1, allreduce=False)
    text = write_report(tmp_path / "r", train_dir=tmp_path / "train").read_text()
    assert "No evaluation metrics" in text and "No Forwarder recording" in text


def test_report_needs_training_logs(tmp_path):
    with pytest.raises(ConfigError, match="no training logs"):
        write_report(tmp_path / "r", train_dir=tmp_path / "nothing")


def test_resume_cuts_the_log_back(tmp_path):
    _logs(tmp_path, ranks=1, steps=30)
    log = RankLog(tmp_path, 0, 20)
    log.write({"step": 21, "rank": 0, "loss": 9.0})
    log.close()
    steps = [r["step"] for r in read_rank_logs(tmp_path)[0]]
    assert steps == list(range(1, 22))


def test_image_skip_and_no_runtime(tmp_path, monkeypatch):
    info = prepare_image(tmp_path / "skip.json", "skip")
    assert info["used"] is False and exec_prefix(tmp_path / "skip.json") == []
    monkeypatch.setenv("PATH", str(tmp_path))  # no apptainer, singularity or bwrap
    monkeypatch.delenv("NONSENSE_CONTAINER_RUNTIME", raising=False)
    info = prepare_image(tmp_path / "auto.json", "auto")
    assert info["used"] is False and "no container runtime" in info["reason"]
    with pytest.raises(ContainerError):
        prepare_image(tmp_path / "build.json", "build")
    with pytest.raises(ConfigError, match="image mode"):
        prepare_image(tmp_path / "x.json", "sometimes")


def test_image_prefix(tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        exec_prefix(tmp_path / "none.json")
    (tmp_path / "i.json").write_text(json.dumps(
        {"used": True, "runtime": "local", "image": "/img"}))
    assert exec_prefix(tmp_path / "i.json") == [
        "nonsense-hpc", "container", "exec", "--runtime", "local", "/img", "--"]
