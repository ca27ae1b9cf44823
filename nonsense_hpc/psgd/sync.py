"""The synchronous baseline: gradients averaged by the Tree AllReduce every step.

The same model, data and test set as the asynchronous run; every rank waits for the
slowest one at each step.

Run under MPI (``mpirun -n 4 python -m nonsense_hpc.psgd.sync --data D --out O``), or
let :func:`run_sync` launch it. Rank 0 evaluates the test set every ``eval_every``
steps and writes ``history.jsonl`` in the same format as the asynchronous run, so
:func:`~nonsense_hpc.psgd.compare.compare` can put the two side by side. This is a
compact loop for the comparison; the main job's full trainer (checkpoints, requeue,
DDP) is ``nonsense-hpc train``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["main", "run_sync", "train_sync"]


def train_sync(data_dir: str, out_dir: str, *, steps: int = 200, batch_size: int = 32,
               lr: float = 0.05, momentum: float = 0.9, hidden: Sequence[int] = (128, 128),
               seed: int = 0, eval_every: int = 10, delays: Sequence[float] = (),
               comm: Any = None) -> list[dict[str, Any]]:
    """Train on every rank of ``comm`` (collective); returns the history on rank 0.

    ``updates`` in the history counts optimiser steps (one per allreduce, each
    ``batch_size x ranks`` samples); ``time`` starts when the ranks start the loop.
    ``delays`` adds seconds per step on the given ranks (a straggler).
    """
    import torch
    import torch.nn.functional as F
    from mpi4py import MPI

    from nonsense_hpc.comm import Tree
    from nonsense_hpc.psgd.model import evaluator, flat_grads, flat_params
    from nonsense_hpc.train.data import batch_indices, load_rank_data
    from nonsense_hpc.train.model import make_model

    torch.set_num_threads(1)
    tree = Tree(MPI.COMM_WORLD if comm is None else comm)
    rank, size = tree.rank, tree.size
    x_np, y_np = load_rank_data(data_dir, rank, size)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = make_model(tuple(hidden), seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    evaluate = evaluator(data_dir, hidden, seed) if rank == 0 else None
    history: list[dict[str, Any]] = []

    def point(step: int, t: float) -> None:
        if evaluate is not None:
            history.append({"time": t, "updates": step, "samples": step * batch_size * size,
                            **evaluate(flat_params(model))})

    delay = delays[rank] if rank < len(delays) else 0.0
    tree.barrier()
    t0 = time.time()
    point(0, 0.0)
    for step in range(steps):
        idx = torch.from_numpy(batch_indices(len(x), batch_size, step, seed, rank))
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x[idx]), y[idx]).backward()  # type: ignore[no-untyped-call]
        if delay:
            time.sleep(delay)  # a slow rank on purpose
        grad = flat_grads(model)
        tree.allreduce(grad)
        grad /= size
        offset = 0
        for p in model.parameters():
            n = p.numel()
            p.grad.copy_(torch.from_numpy(grad[offset:offset + n]).view_as(p))
            offset += n
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            point(step + 1, time.time() - t0)
    tree.close()
    if rank == 0:
        from nonsense_hpc.psgd.run import write_history

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_history(out / "history.jsonl", history, "sync")
        (out / "summary.json").write_text(json.dumps({
            "mode": "sync", "config": {"ranks": size, "steps": steps, "batch_size": batch_size,
                                       "lr": lr, "momentum": momentum, "hidden": list(hidden),
                                       "seed": seed, "delays": list(delays)},
            "wall_time": history[-1]["time"], "final": history[-1]}, indent=2) + "\n")
    return history


def run_sync(data_dir: str | Path, out_dir: str | Path, *, ranks: int = 2,
             timeout: float = 600.0, **kwargs: Any) -> list[dict[str, Any]]:
    """Launch :func:`train_sync` under ``mpirun -n ranks`` and read its history.

    Raises:
        ConfigError: the MPI job failed or timed out (its stderr tail is in the message).
    """
    from nonsense_hpc.launch import mpi_environment, mpirun_command

    argv = [sys.executable, "-m", "nonsense_hpc.psgd.sync", "--data", str(data_dir),
            "--out", str(out_dir)]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        argv += [flag, str(value)]
    cmd = mpirun_command(ranks, argv)
    try:
        proc = subprocess.run(cmd, env=mpi_environment(), capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"synchronous run did not finish within {timeout} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ConfigError(f"synchronous run failed (exit {proc.returncode}):\n{tail}")
    path = Path(out_dir) / "history.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (run under mpirun)."""
    p = argparse.ArgumentParser(prog="python -m nonsense_hpc.psgd.sync",
                                description="Synchronous Tree-AllReduce baseline.")
    p.add_argument("--data", required=True, help="prepared data directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=32, help="samples per rank per step")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--hidden", default="128,128", help="hidden widths, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="model and batch seed")
    p.add_argument("--eval-every", type=int, default=10, help="steps between evaluations")
    p.add_argument("--delays", default="", help="seconds per step per rank, e.g. 0,0.02")
    a = p.parse_args(argv)
    train_sync(a.data, a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
               momentum=a.momentum, hidden=[int(h) for h in a.hidden.split(",") if h],
               seed=a.seed, eval_every=a.eval_every,
               delays=[float(d) for d in a.delays.split(",") if d])
    return 0


if __name__ == "__main__":
    sys.exit(main())
