"""Per-rank training logs: one JSON line per step, cut back on resume.

A rank writes ``OUT/ranks/rank-RRR.jsonl``; each line is one step's record::

    {"step": 12, "rank": 0, "loss": 0.41, "accuracy": 0.88, "samples": 32,
     "step_time": 0.0031, "allreduce_time": 0.0004, "allreduce_bytes": 107560,
     "throughput": 20645.2, "time": 1718000000.1}

``step`` counts optimisation steps done (1 after the first). On a restart from a
checkpoint at step k, lines with ``step > k`` (work the checkpoint does not hold) are cut
away before new lines are appended, so the file always tells one consistent history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

__all__ = ["RankLog", "rank_log_path", "read_rank_logs"]


def rank_log_path(out_dir: str | os.PathLike[str], rank: int) -> Path:
    """``OUT/ranks/rank-RRR.jsonl``."""
    return Path(out_dir) / "ranks" / f"rank-{rank:03d}.jsonl"


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write


class RankLog:
    """Appends one rank's step records.

    Args:
        out_dir: the training output directory.
        rank: this rank.
        resume_step: keep only records with ``step <= resume_step`` (0: start afresh).
    """

    def __init__(self, out_dir: str | os.PathLike[str], rank: int, resume_step: int) -> None:
        self.path = rank_log_path(out_dir, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step > 0 and self.path.exists():
            kept = [r for r in _records(self.path) if int(r.get("step", 0)) <= resume_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self._fh: TextIO | None = open(self.path, "a")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (flushed, so a crash loses at most the current line)."""
        if self._fh is None:
            raise ValueError(f"{self.path} is closed")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_rank_logs(out_dir: str | os.PathLike[str]) -> dict[int, list[dict[str, Any]]]:
    """Every rank's records, by rank, sorted by step (the last record of a step wins)."""
    found: dict[int, list[dict[str, Any]]] = {}
    ranks = Path(out_dir) / "ranks"
    if not ranks.is_dir():
        return found
    for path in sorted(ranks.glob("rank-*.jsonl")):
        rank = int(path.stem.split("-")[1])
        by_step = {int(r["step"]): r for r in _records(path) if "step" in r}
        found[rank] = [by_step[s] for s in sorted(by_step)]
    return found
