"""Report sections for watching a run: the traced step and sync-vs-async training.

Each function copies what it shows into the report's directory (so ``report/`` stands
alone: it can be zipped, served or opened from anywhere) and returns an HTML fragment.
A missing input gives a sentence saying why, never an error: the report must still be
written.

Example:
    >>> print(trace_section(None, Path("report")))                  # doctest: +SKIP
    <h2>Trace of one training step</h2><p>No step was traced ...</p>
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["TRACE_FILES", "comparison_section", "trace_section"]

#: Files of a rendered trace the report copies (``nonsense_hpc.trace.render``).
TRACE_FILES = ("trace.svg", "trace.html", "trace.mmd", "trace.json")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def trace_section(trace_dir: str | os.PathLike[str] | None, out: Path,
                  step: int | None = None) -> str:
    """The traced training step: the diagram, the Mermaid text and the Chrome trace.

    Args:
        trace_dir: the trainer's ``trace-step`` directory (None or missing: no trace).
        out: the report directory; the files go to ``out/trace-step/``.
        step: the step that was traced, for the heading.

    Returns:
        An HTML fragment.
    """
    head = "<h2>Trace of one training step</h2>"
    src = Path(trace_dir) if trace_dir is not None else None
    if src is None or not (src / "trace.svg").is_file():
        return (head + "<p>No step was traced (<code>trace_step=0</code>, DDP mode, or "
                "training ended before the traced step).</p>")
    dest = out / "trace-step"
    for name in TRACE_FILES:
        if (src / name).is_file():
            _copy(src / name, dest / name)
    which = f"step {step}" if step is not None else "one step"
    parts = [head,
             f"<p>Every rank's events in {which}, gathered to rank 0 "
             "(<code>nonsense_hpc.trace.tracing</code>): the step's phases per rank "
             "(<i>compute</i>: forward and backward, <i>allreduce</i>: the gradient "
             "allreduce, <i>apply</i>: the optimiser step) and the Tree's messages, "
             "reads and waits. Gathering and rendering it is not counted in the step "
             "time.</p>",
             "<img src='trace-step/trace.svg' alt='sequence diagram of one training step'>",
             "<p>Chrome trace, one track per rank: <a href='trace-step/trace.json'>"
             "trace-step/trace.json</a> (open it in https://ui.perfetto.dev or "
             "chrome://tracing); standalone page: <a href='trace-step/trace.html'>"
             "trace-step/trace.html</a>.</p>"]
    mmd = dest / "trace.mmd"
    if mmd.is_file():
        parts.append("<details><summary>Mermaid source (<a href='trace-step/trace.mmd'>"
                     "trace-step/trace.mmd</a>; paste into GitHub Markdown)</summary>"
                     f"<pre>{html.escape(mmd.read_text(encoding='utf-8'))}</pre>"
                     "</details>")
    return "\n".join(parts)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not reached"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def comparison_section(comparison_dir: str | os.PathLike[str] | None, out: Path) -> str:
    """Synchronous (Tree AllReduce) against asynchronous (parameter server) training.

    Args:
        comparison_dir: the ``ps-train --mode both`` output directory, holding
            ``comparison.json`` and ``comparison.png`` (None or missing: not run).
        out: the report directory; the files are copied as ``sync_vs_async.png/.json``.

    Returns:
        An HTML fragment: the plot (accuracy against wall-clock time, updates and
        samples) and a table (final accuracy, time and updates to each threshold).
    """
    head = "<h2>Synchronous vs asynchronous training</h2>"
    not_run = (head + "<p>Not run (workflow setting <code>async=0</code>, or its rule "
               "did not finish).</p>")
    if comparison_dir is None:
        return not_run
    src = Path(comparison_dir)
    try:
        summary = json.loads((src / "comparison.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return not_run
    if not isinstance(summary, dict) or not summary.get("runs"):
        return not_run
    _copy(src / "comparison.json", out / "sync_vs_async.json")
    png = src / "comparison.png"
    runs: dict[str, Any] = summary["runs"]
    thresholds = [str(t) for t in summary.get("thresholds", [])]
    cols = "".join(f"<th>to {float(t) * 100:.0f} %: s (updates)</th>" for t in thresholds)
    rows = []
    for label in sorted(runs):
        r = runs[label]
        final = r.get("final", {})
        to = "".join(
            f"<td>{_fmt(r.get('time_to', {}).get(t), ' s')} "
            f"({_fmt(r.get('updates_to', {}).get(t))})</td>" for t in thresholds)
        rows.append(f"<tr><td>{html.escape(label)}</td>"
                    f"<td>{_fmt(final.get('accuracy'))}</td>"
                    f"<td>{_fmt(r.get('best_accuracy'))}</td>"
                    f"<td>{_fmt(final.get('time'), ' s')}</td>"
                    f"<td>{_fmt(final.get('updates'))}</td>"
                    f"<td>{_fmt(final.get('samples'))}</td>{to}</tr>")
    parts = [head,
             "<p>The same model and data trained two ways (<code>nonsense-hpc ps-train "
             "--mode both</code>): <b>sync</b>, gradients averaged over the ranks by the "
             "Tree AllReduce at every step; <b>async</b>, workers pushing gradients to a "
             "parameter server over ZeroMQ without waiting for each other (bounded "
             "staleness). Both see the same number of training samples; accuracy is on "
             "the held-out test set. An async update is one worker's gradient, a sync "
             "update one averaged step.</p>"]
    if png.is_file():
        _copy(png, out / "sync_vs_async.png")
        parts.append("<img src='sync_vs_async.png' alt='test accuracy against wall-clock "
                     "time, updates and samples, sync and async'>")
    parts.append("<table><tr><th>run</th><th>final test accuracy</th><th>best</th>"
                 "<th>wall time</th><th>updates</th><th>samples</th>" + cols + "</tr>"
                 + "".join(rows) + "</table>")
    parts.append("<p>Numbers: <a href='sync_vs_async.json'>sync_vs_async.json</a>.</p>")
    return "\n".join(parts)
