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


def test_report_embeds_the_traced_step_and_the_comparison(tmp_path):
    from nonsense_hpc.psgd.compare import compare
    from nonsense_hpc.trace import render

    _logs(tmp_path / "train")
    render([{"op": "step", "phase": "compute", "actor": f"rank {r}", "start": 1.0,
             "end": 1.001} for r in range(2)]
           + [{"op": "allreduce", "phase": "send", "rank": 1, "peer": 0, "nbytes": 4096,
               "start": 1.001, "end": 1.002}], tmp_path / "train" / "trace-step",
           title="step 10")
    hist = {"sync": [{"time": 0.0, "updates": 0, "samples": 0, "accuracy": 0.1},
                     {"time": 0.5, "updates": 40, "samples": 2560, "accuracy": 0.92}],
            "async": [{"time": 0.0, "updates": 0, "samples": 0, "accuracy": 0.1},
                      {"time": 0.3, "updates": 80, "samples": 2560, "accuracy": 0.85}]}
    compare(hist, tmp_path / "async")
    text = write_report(tmp_path / "report", train_dir=tmp_path / "train",
                        comparison_dir=tmp_path / "async").read_text()
    # The trace: the diagram embedded, the Chrome trace linked, the Mermaid text shown;
    # the files travel with the report.
    assert "<img src='trace-step/trace.svg'" in text
    assert "href='trace-step/trace.json'" in text and "p1-&gt;&gt;p0: allreduce 4.0 KiB" in text
    for name in ("trace.svg", "trace.json", "trace.html", "trace.mmd"):
        assert (tmp_path / "report" / "trace-step" / name).stat().st_size > 0
    # The comparison: plot plus a table with time/updates to each accuracy.
    assert "<img src='sync_vs_async.png'" in text
    assert (tmp_path / "report" / "sync_vs_async.png").stat().st_size > 1000
    assert "<td>sync</td><td>0.92</td>" in text and "<td>async</td><td>0.85</td>" in text
    assert "0.50 s (40)" in text and "not reached" in text  # async never reached 90 %


def test_report_says_when_there_is_no_trace_or_comparison(tmp_path):
    _logs(tmp_path / "train")
    (tmp_path / "async").mkdir()
    text = write_report(tmp_path / "r", train_dir=tmp_path / "train",
                        comparison_dir=tmp_path / "async").read_text()
    assert "No step was traced" in text and "Not run (workflow setting" in text
