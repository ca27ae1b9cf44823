"""The run report: one HTML page with PNG plots, written from the run's files.

Inputs (any may be missing; the report says so instead of failing, except the training
logs, which it needs):

* ``TRAIN/ranks/rank-*.jsonl`` and ``TRAIN/summary.json`` (:mod:`.trainer`),
* the evaluation metrics JSON (:mod:`.evaluate`),
* the recorder's ``messages.jsonl`` (:mod:`.monitor`): what reached the Forwarder,
* the image step's JSON (whether the job ran in a container),
* the traced training step (``TRAIN/trace-step/``, :mod:`.observe`): the sequence
  diagram is embedded, the Chrome trace linked (:mod:`.sections`),
* the sync-vs-async comparison (``nonsense-hpc ps-train --mode both``): its plot of
  accuracy against wall-clock time, updates and samples, and a table.

Plots: loss and accuracy per step (mean over ranks, each rank faint), step time per rank,
allreduce bandwidth per rank (algorithm bandwidth: gradient bytes / allreduce time).

Example:
    >>> write_report("report", train_dir="train", eval_json="eval/metrics.json",
    ...              messages="monitor/messages.jsonl")        # doctest: +SKIP
    PosixPath('report/report.html')
"""

from __future__ import annotations

import html
import json
import os
import statistics
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.train.runlog import read_rank_logs
from nonsense_hpc.train.sections import comparison_section, trace_section

__all__ = ["write_report"]


def _load_json(path: str | os.PathLike[str] | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _series(logs: dict[int, list[dict[str, Any]]], key: str
            ) -> tuple[list[int], list[float]]:
    """Mean over ranks of ``key`` per step."""
    by_step: dict[int, list[float]] = {}
    for records in logs.values():
        for r in records:
            if r.get(key) is not None:
                by_step.setdefault(int(r["step"]), []).append(float(r[key]))
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def _plots(logs: dict[int, list[dict[str, Any]]], out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append((name, caption))

    for key, label in (("loss", "training loss"), ("accuracy", "batch accuracy")):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for rank, records in sorted(logs.items()):
            ax.plot([r["step"] for r in records], [r[key] for r in records], lw=0.6,
                    alpha=0.35, label=f"rank {rank}")
        steps, mean = _series(logs, key)
        ax.plot(steps, mean, color="black", lw=1.5, label="mean over ranks")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        save(fig, f"{key}.png", f"{label.capitalize()} per step")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for rank, records in sorted(logs.items()):
        ax.plot([r["step"] for r in records], [r["step_time"] * 1e3 for r in records],
                lw=0.8, label=f"rank {rank}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("step time (ms)")
    ax.legend(fontsize=7)
    save(fig, "step_time.png", "Step time per rank (forward, backward, allreduce, update)")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    any_bw = False
    for rank, records in sorted(logs.items()):
        pts = [(r["step"], r["allreduce_bytes"] / r["allreduce_time"] / 1e6)
               for r in records if r.get("allreduce_time")]
        if pts:
            any_bw = True
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=f"rank {rank}")
    ax.set_xlabel("step")
    ax.set_ylabel("allreduce bandwidth (MB/s)")
    if any_bw:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no separate allreduce (DDP overlaps it with backward)",
                ha="center", transform=ax.transAxes)
    save(fig, "allreduce_bandwidth.png",
         "Allreduce algorithm bandwidth per rank (gradient bytes / allreduce time)")
    return made


def _rank_table(logs: dict[int, list[dict[str, Any]]]) -> str:
    rows = []
    for rank, records in sorted(logs.items()):
        times = [r["step_time"] for r in records[1:]] or [r["step_time"] for r in records]
        ar = [r["allreduce_time"] for r in records[1:] if r.get("allreduce_time")]
        nbytes = records[-1].get("allreduce_bytes", 0)
        ar_ms = f"{statistics.median(ar) * 1e3:.3f}" if ar else "-"
        bw = f"{nbytes / statistics.median(ar) / 1e6:.1f}" if ar else "-"
        rows.append(f"<tr><td>{rank}</td><td>{len(records)}</td>"
                    f"<td>{statistics.median(times) * 1e3:.2f}</td><td>{ar_ms}</td>"
                    f"<td>{bw}</td></tr>")
    return ("<table><tr><th>rank</th><th>steps logged</th><th>median step (ms)</th>"
            "<th>median allreduce (ms)</th><th>allreduce bandwidth (MB/s)</th></tr>"
            + "".join(rows) + "</table>")


def _messages_text(messages: list[dict[str, Any]] | None) -> str:
    if messages is None:
        return "<p>No Forwarder recording found (the run published nothing).</p>"
    metrics = [m for m in messages if m.get("kind") == "metric"]
    events = [m for m in messages if m.get("kind") == "event"]
    ranks = sorted({m["rank"] for m in metrics if m.get("rank") is not None})
    last = max((m["step"] for m in metrics if m.get("step") is not None), default=None)
    beats = [m for m in messages if m.get("kind") == "heartbeat"]
    beat_ranks = sorted({m["rank"] for m in beats if m.get("rank") is not None})
    rss = [m["data"]["rss"] for m in beats if isinstance(m.get("data"), dict)
           and isinstance(m["data"].get("rss"), int | float)]
    memory = f", resident memory up to {max(rss) / 2**20:.0f} MiB" if rss else ""
    return (f"<p>The supervised Forwarder passed {len(messages)} messages to its recorder: "
            f"{len(metrics)} per-step metrics from rank(s) {ranks or '-'} (last step "
            f"{last}), {len(events)} events "
            f"({', '.join(sorted({str(e['topic']) for e in events})) or '-'}) and "
            f"{len(beats)} heartbeats from rank(s) {beat_ranks or '-'}{memory} (what "
            "<code>nonsense-hpc dashboard</code> shows live, docs/workflow.md).</p>")


def write_report(out_dir: str | os.PathLike[str], *, train_dir: str | os.PathLike[str],
                 eval_json: str | os.PathLike[str] | None = None,
                 messages: str | os.PathLike[str] | None = None,
                 image_json: str | os.PathLike[str] | None = None,
                 trace_dir: str | os.PathLike[str] | None = None,
                 comparison_dir: str | os.PathLike[str] | None = None,
                 title: str = "nonsense_hpc main job") -> Path:
    """Write ``OUT/report.html`` and its PNG plots.

    Args:
        out_dir: the report directory (``report.html``, PNGs, copied trace files).
        train_dir: the training output (``ranks/``, ``summary.json``).
        eval_json: evaluation metrics.
        messages: the Forwarder recorder's ``messages.jsonl``.
        image_json: the image step's decision.
        trace_dir: the traced step's files (default: the trainer's ``trace_dir``
            from ``summary.json``, else ``TRAIN/trace-step``).
        comparison_dir: ``ps-train --mode both`` output (None: no comparison).
        title: page title.

    Raises:
        ConfigError: no training logs in ``train_dir``.
    """
    logs = read_rank_logs(train_dir)
    if not logs or not any(logs.values()):
        raise ConfigError(f"no training logs in {train_dir}/ranks: nothing to report "
                          "(did training run?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(logs, out)
    summary = _load_json(Path(train_dir) / "summary.json") or {}
    result = summary.get("result", {})
    config = summary.get("config", {})
    metrics = _load_json(eval_json)
    image = _load_json(image_json)
    msg_list = None
    if messages is not None and Path(messages).exists():
        msg_list = [json.loads(line) for line in Path(messages).read_text().splitlines()
                    if line.strip()]
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em}"
             "img{max-width:100%}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    parts.append("<h2>Run</h2><ul>"
                 f"<li>ranks: {result.get('world_size', len(logs))}, steps: "
                 f"{result.get('steps', '?')}, gradient averaging: "
                 f"{esc(str(config.get('allreduce', '?')))}</li>"
                 f"<li>resumed from step {result.get('resumed_from', 0)} "
                 f"(ran {result.get('steps_run', '?')} steps in this attempt)</li>"
                 f"<li>container: {esc(_image_text(image))}</li></ul>")
    if metrics:
        parts.append("<h2>Evaluation (held-out test set)</h2>"
                     f"<p>accuracy <b>{metrics['accuracy']:.4f}</b>, loss "
                     f"{metrics['loss']:.4f} on {metrics['samples']} samples</p>")
    else:
        parts.append("<h2>Evaluation</h2><p>No evaluation metrics found.</p>")
    parts.append("<h2>Published metrics</h2>" + _messages_text(msg_list))
    parts.append("<h2>Ranks</h2>" + _rank_table(logs))
    for name, caption in plots:
        parts.append(f"<h3>{esc(caption)}</h3><img src='{esc(name)}' alt='{esc(caption)}'>")
    if trace_dir is None:
        trace_dir = config.get("trace_dir") or Path(train_dir) / "trace-step"
    traced = [r["step"] for records in logs.values() for r in records if r.get("traced")]
    parts.append(trace_section(trace_dir, out, traced[0] if traced else None))
    parts.append(comparison_section(comparison_dir, out))
    parts.append("</body></html>\n")
    path = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text("\n".join(parts))
    os.replace(tmp, path)
    return path


def _image_text(image: Any) -> str:
    if not isinstance(image, dict):
        return "none (no image step)"
    if image.get("used"):
        return f"{image.get('runtime')} image {image.get('image')}"
    return f"none ({image.get('reason', 'skipped')})"
