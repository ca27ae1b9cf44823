"""An asynchronous worker: pull, compute a gradient on its shard, push, repeat.

Run one per process (``python -m nonsense_hpc.psgd.worker --help``); :func:`train_async`
starts them. The worker prints one JSON line with its counters when it ends, and with
``--trace-file`` writes its side of every exchange as JSON lines for ``nonsense-hpc
trace --input``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["WorkerResult", "main", "run_worker"]


@dataclass
class WorkerResult:
    """What one worker did.

    Attributes:
        worker: its id.
        steps: gradients pushed.
        accepted: gradients the server applied.
        dropped: gradients the server found too stale.
        mean_staleness: mean staleness of its gradients.
        seconds: wall time of its loop.
    """

    worker: int
    steps: int
    accepted: int
    dropped: int
    mean_staleness: float
    seconds: float


def run_worker(address: str, data_dir: str, worker: int, workers: int, *,
               batch_size: int = 32, hidden: Sequence[int] = (128, 128), seed: int = 0,
               timeout: float = 60.0, delay: float = 0.0, max_steps: int | None = None,
               trace_file: str | None = None) -> WorkerResult:
    """Train against the parameter server at ``address`` until it says stop.

    Args:
        address: the server.
        data_dir: prepared shards (``nonsense-hpc workflow prepare``).
        worker: this worker's id, 0 .. workers-1 (picks its shards).
        workers: how many workers share the data.
        batch_size: samples per gradient.
        hidden: hidden layer widths (must match the server's parameters).
        seed: batch order seed.
        timeout: seconds to wait for each answer of the server.
        delay: extra seconds per step, to play a slow worker (a straggler).
        max_steps: stop after this many pushes even if the server does not say stop.
        trace_file: write this worker's exchanges here as JSON lines.

    Raises:
        ServerTimeoutError: the server stopped answering.
        ConfigError: bad data, or parameters that do not fit the model.
    """
    import torch
    import torch.nn.functional as F

    from nonsense_hpc.psgd.client import PSClient
    from nonsense_hpc.psgd.model import flat_grads, set_flat_params
    from nonsense_hpc.train.data import batch_indices, load_rank_data
    from nonsense_hpc.train.model import make_model

    torch.set_num_threads(1)
    x_np, y_np = load_rank_data(data_dir, worker, workers)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = make_model(tuple(hidden), seed)
    steps = accepted = dropped = stale_sum = 0
    t0 = time.time()
    with PSClient(address, worker, timeout=timeout, trace=trace_file is not None) as ps:
        params, version = ps.pull()
        try:
            while max_steps is None or steps < max_steps:
                set_flat_params(model, params)
                idx = torch.from_numpy(batch_indices(len(x), batch_size, steps, seed, worker))
                model.zero_grad(set_to_none=False)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                if delay:
                    time.sleep(delay)  # a slow worker on purpose (--delay)
                ack = ps.push(flat_grads(model), version, samples=len(idx))
                steps += 1
                stale_sum += ack.staleness
                accepted += int(ack.accepted)
                dropped += int(not ack.accepted and not ack.stop)
                if ack.stop:
                    break
                if ack.params is not None:
                    params, version = ack.params, ack.version
        finally:
            if trace_file:
                with open(trace_file, "w", encoding="utf-8") as fh:
                    for row in ps.log.to_dicts():
                        fh.write(json.dumps(row) + "\n")
    return WorkerResult(worker, steps, accepted, dropped, stale_sum / max(steps, 1),
                        time.time() - t0)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: run one worker and print its result as JSON."""
    p = argparse.ArgumentParser(prog="python -m nonsense_hpc.psgd.worker",
                                description="One asynchronous parameter-server worker.")
    p.add_argument("--address", required=True, help="the parameter server's address")
    p.add_argument("--data", required=True, help="prepared data directory")
    p.add_argument("--worker", type=int, required=True, help="this worker's id")
    p.add_argument("--workers", type=int, required=True, help="number of workers")
    p.add_argument("--batch-size", type=int, default=32, help="samples per gradient")
    p.add_argument("--hidden", default="128,128", help="hidden widths, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="batch order seed")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per answer")
    p.add_argument("--delay", type=float, default=0.0, help="extra seconds per step")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N pushes")
    p.add_argument("--trace-file", default=None, help="write exchanges as JSON lines")
    a = p.parse_args(argv)
    hidden = [int(h) for h in a.hidden.split(",") if h.strip()]
    res = run_worker(a.address, a.data, a.worker, a.workers, batch_size=a.batch_size,
                     hidden=hidden, seed=a.seed, timeout=a.timeout, delay=a.delay,
                     max_steps=a.max_steps, trace_file=a.trace_file)
    out: dict[str, Any] = asdict(res)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
