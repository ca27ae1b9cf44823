"""Run an asynchronous training: a parameter server here, workers as processes.

:func:`train_async` starts the server in a thread of the calling process and one
``python -m nonsense_hpc.psgd.worker`` process per worker, waits for them (each with a
deadline), and writes ``history.jsonl`` (test accuracy and loss against time, updates
and samples), ``summary.json`` and, with ``trace=True``, the sequence diagram of the
first exchanges (``trace/``).

A worker that dies does not stop the others: the server keeps applying the survivors'
gradients, and the summary names the dead worker and its exit status.

Example:
    >>> from nonsense_hpc.train.data import prepare_shards      # doctest: +SKIP
    >>> prepare_shards("data", shards=4)                         # doctest: +SKIP
    >>> res = train_async("data", "runs/async", workers=4, updates=800)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["AsyncResult", "train_async", "write_history"]


@dataclass
class AsyncResult:
    """Outcome of :func:`train_async`.

    Attributes:
        history: evaluation points: ``time`` (s since start), ``updates``, ``samples``,
            ``accuracy``, ``loss``.
        stats: the server's final counters (version, dropped, staleness histogram).
        workers: each worker's result, or ``{"worker": i, "returncode": rc, "error": ...}``.
        wall_time: seconds from the server's start to the last worker's end.
        out_dir: where the files are.
    """

    history: list[dict[str, Any]]
    stats: dict[str, Any]
    workers: list[dict[str, Any]]
    wall_time: float
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def write_history(path: str | Path, history: list[dict[str, Any]], mode: str) -> Path:
    """Write evaluation points as JSON lines, each tagged with ``mode``."""
    p = Path(path)
    with open(p, "w", encoding="utf-8") as fh:
        for point in history:
            fh.write(json.dumps({"mode": mode, **point}) + "\n")
    return p


def train_async(data_dir: str | Path, out_dir: str | Path, *, workers: int = 2,
                updates: int = 400, batch_size: int = 32, lr: float = 0.05,
                momentum: float = 0.9, hidden: Sequence[int] = (128, 128), seed: int = 0,
                max_staleness: int | None = None, staleness_lr: str = "constant",
                eval_every: int = 20, publish: str | None = None,
                delays: Sequence[float] = (), timeout: float = 600.0,
                trace: bool = False) -> AsyncResult:
    """Train the main job's model asynchronously with ``workers`` processes.

    Args:
        data_dir: prepared shards (at least ``workers`` of them).
        out_dir: output directory.
        workers: worker processes.
        updates: gradients the server applies before it tells the workers to stop.
        batch_size: samples per gradient.
        lr: learning rate.
        momentum: server-side momentum.
        hidden: hidden layer widths.
        seed: model and batch seed.
        max_staleness: drop gradients staler than this (default: 2 x workers).
        staleness_lr: ``"constant"`` or ``"inverse"``.
        eval_every: updates between two test evaluations.
        publish: Forwarder input for live metrics (``metrics.async``).
        delays: extra seconds per step for each worker (a straggler, e.g. ``(0, 0.02)``).
        timeout: seconds the whole run may take before workers are killed.
        trace: record exchanges and render ``trace/`` (first 400 steps drawn).

    Returns:
        An :class:`AsyncResult`.

    Raises:
        ConfigError: bad arguments or data; every worker failed.
    """
    from nonsense_hpc.psgd.model import evaluator, flat_params
    from nonsense_hpc.psgd.server import ParameterServer
    from nonsense_hpc.train.data import load_manifest
    from nonsense_hpc.train.model import make_model

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if len(delays) > workers:
        raise ConfigError(f"{len(delays)} delays for {workers} workers")
    shards = int(load_manifest(data_dir)["shards"])
    if shards < workers:
        raise ConfigError(f"{shards} shard(s) in {data_dir} for {workers} workers: prepare "
                          f"at least one shard per worker (--shards {workers})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if max_staleness is None:
        max_staleness = 2 * workers
    import torch

    torch.set_num_threads(1)
    init = flat_params(make_model(tuple(hidden), seed))
    server = ParameterServer(init, lr=lr, momentum=momentum, max_staleness=max_staleness,
                             staleness_lr=staleness_lr, max_updates=updates,
                             evaluate=evaluator(str(data_dir), hidden, seed),
                             eval_every=eval_every, publish=publish, trace=trace).start()
    raw = out / "trace-raw"
    if trace:
        raw.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        for w in range(workers):
            cmd = [sys.executable, "-m", "nonsense_hpc.psgd.worker", "--address",
                   server.address, "--data", str(data_dir), "--worker", str(w),
                   "--workers", str(workers), "--batch-size", str(batch_size), "--hidden",
                   ",".join(str(h) for h in hidden), "--seed", str(seed),
                   "--delay", str(delays[w] if w < len(delays) else 0.0)]
            if trace:
                cmd += ["--trace-file", str(raw / f"worker-{w}.jsonl")]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        results = _wait_all(procs, time.monotonic() + timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        stats = server.stats()
        server.stop()
    wall = max((r.get("seconds", 0.0) for r in results), default=0.0)
    result = AsyncResult(list(server.history), stats, results, stats["elapsed"], out)
    result.files["history"] = write_history(out / "history.jsonl", result.history, "async")
    summary = {"mode": "async", "config": {
        "workers": workers, "updates": updates, "batch_size": batch_size, "lr": lr,
        "momentum": momentum, "hidden": list(hidden), "seed": seed,
        "max_staleness": max_staleness, "staleness_lr": staleness_lr,
        "eval_every": eval_every, "delays": list(delays)},
        "stats": {k: v for k, v in stats.items() if k != "history"},
        "workers": results, "wall_time": result.wall_time, "worker_seconds": wall,
        "final": result.history[-1] if result.history else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    result.files["summary"] = out / "summary.json"
    if trace:
        from nonsense_hpc.trace import Trace, load, render

        events = Trace(server.log.events)
        if any(raw.glob("*.jsonl")):
            events = events + load([raw])
        result.files.update({f"trace_{k}": v for k, v in render(
            events, out / "trace", title="parameter server exchanges").items()})
    if not any("error" not in r for r in results):
        raise ConfigError(f"every worker failed: {results}")
    return result


def _wait_all(procs: list[subprocess.Popen[str]], deadline: float) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for w, p in enumerate(procs):
        left = max(0.1, deadline - time.monotonic())
        try:
            stdout, stderr = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
            results.append({"worker": w, "returncode": None,
                            "error": "killed: the run exceeded its timeout"})
            continue
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if p.returncode == 0 and lines:
            results.append(json.loads(lines[-1]))
        else:
            tail = stderr.strip().splitlines()[-1:] or [""]
            results.append({"worker": w, "returncode": p.returncode, "error": tail[0]})
    return results


def result_dict(result: AsyncResult) -> dict[str, Any]:
    """JSON-ready view of an :class:`AsyncResult`."""
    d = asdict(result)
    d["out_dir"] = str(result.out_dir)
    d["files"] = {k: str(v) for k, v in result.files.items()}
    return d
