"""Synchronous and asynchronous runs side by side.

Accuracy against wall-clock time, against optimiser updates and against training samples.

Each history is a list of points ``{"time", "updates", "samples", "accuracy", "loss"}``
(``history.jsonl`` of :func:`~nonsense_hpc.psgd.run.train_async` and
:func:`~nonsense_hpc.psgd.sync.train_sync`).

Example:
    >>> a = [{"time": 0, "updates": 0, "samples": 0, "accuracy": 0.1},
    ...      {"time": 1, "updates": 50, "samples": 1600, "accuracy": 0.9}]
    >>> compare({"async": a})["runs"]["async"]["time_to"]["0.8"]
    1
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["THRESHOLDS", "compare", "load_history"]

THRESHOLDS = (0.8, 0.9, 0.95)
AXES = (("time", "wall-clock time (s)"), ("updates", "optimiser updates"),
        ("samples", "training samples"))


def load_history(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``history.jsonl``.

    Raises:
        ConfigError: the file is missing or a line is not a JSON object with ``accuracy``.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no history at {p}")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}:{n}: not JSON: {exc}") from None
        if not isinstance(d, dict) or "accuracy" not in d:
            raise ConfigError(f"{p}:{n}: not a history point (needs 'accuracy')")
        out.append(d)
    return out


def _first_reaching(points: Sequence[Mapping[str, Any]], key: str,
                    level: float) -> float | None:
    for p in points:
        if float(p["accuracy"]) >= level:
            return p[key]  # type: ignore[no-any-return]
    return None


def compare(histories: Mapping[str, Sequence[Mapping[str, Any]]],
            out_dir: str | Path | None = None,
            thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Summarise runs and, with ``out_dir``, write ``comparison.json`` and ``.png``.

    Args:
        histories: label -> evaluation points.
        out_dir: where to write the files (None: only return the summary).
        thresholds: accuracies whose first crossing is reported (time, updates, samples).

    Returns:
        ``{"runs": {label: {"final": point, "best_accuracy", "time_to", "updates_to",
        "samples_to"}}, "files": {...}}``.

    Raises:
        ConfigError: no runs, or a run without points.
    """
    if not histories:
        raise ConfigError("nothing to compare: give at least one history")
    runs: dict[str, Any] = {}
    for label, points in histories.items():
        if not points:
            raise ConfigError(f"run {label!r} has no evaluation points")
        pts = sorted(points, key=lambda p: p["time"])
        runs[label] = {
            "final": dict(pts[-1]),
            "best_accuracy": max(float(p["accuracy"]) for p in pts),
            **{f"{key}_to": {str(t): _first_reaching(pts, key, t) for t in thresholds}
               for key, _ in AXES}}
    summary: dict[str, Any] = {"runs": runs, "thresholds": list(thresholds), "files": {}}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        png = _plot(histories, out / "comparison.png")
        summary["files"] = {"json": str(out / "comparison.json"), "png": str(png)}
        (out / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _plot(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (key, label) in zip(axes, AXES, strict=True):
        for run, points in histories.items():
            pts = sorted(points, key=lambda p: p[key])
            ax.plot([p[key] for p in pts], [p["accuracy"] for p in pts], marker=".",
                    label=run)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend()
    fig.suptitle("synchronous Tree AllReduce vs asynchronous parameter server")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
