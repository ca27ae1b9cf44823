"""``nonsense-hpc run`` (the main job), ``nonsense-hpc train`` and the workflow's steps."""

from __future__ import annotations

import json
import os
import sys
import time

import click

__all__ = ["BENCH_COMMANDS", "COMMANDS", "run", "train", "workflow"]

_T0 = time.time()  # the CLI's start: the moment "a rank is running" for the benchmarks


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Prepared shards (nonsense-hpc workflow prepare).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: ranks/*.jsonl, checkpoints/, model.pt, summary.json.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Total optimisation steps (a resumed run does only the missing ones).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Samples per rank per step.")
@click.option("--lr", type=float, default=0.05, show_default=True, help="SGD learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option("--hidden", default="128,128", show_default=True,
              help="Hidden layer widths, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Model and batch seed.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50, show_default=True,
              help="Checkpoint every N steps (0: only at the end).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint directory (default OUT/checkpoints, or "
                   "$NONSENSE_CHECKPOINT_DIR).")
@click.option("--allreduce", type=click.Choice(["tree", "ddp"]), default="tree",
              show_default=True, help="Gradient averaging: the Tree, or torch DDP on gloo.")
@click.option("--publish", metavar="ADDR", default=None,
              help="Forwarder input to publish metrics to (default $NONSENSE_PUBLISH).")
@click.option("--publish-file", type=click.Path(dir_okay=False), default=None,
              help="Read the address from this JSON file's 'in' entry (written by "
                   "`nonsense-hpc workflow forwarder start`); a missing file means "
                   "no publishing.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads per rank.")
@click.option("--timeout", type=float, default=None,
              help="Seconds an allreduce waits for a peer (default $NONSENSE_TIMEOUT/120).")
@click.option("--fail-at-step", type=click.IntRange(min=1), default=None,
              help="Fail after this step (to try checkpoint/resume).")
@click.option("--fail-rank", type=click.IntRange(min=0), default=None,
              help="With --fail-at-step: only this rank fails (default: all).")
def train(data_dir: str, out_dir: str, steps: int, batch_size: int, lr: float,
          momentum: float, hidden: str, seed: int, checkpoint_every: int,
          checkpoint_dir: str | None, allreduce: str, publish: str | None,
          publish_file: str | None, threads: int, timeout: float | None,
          fail_at_step: int | None, fail_rank: int | None) -> None:
    r"""Train the digits MLP data-parallel on every rank (launch it under mpirun).

    Resumes from the latest checkpoint in the checkpoint directory when there is one.
    A rank that fails aborts the whole job (MPI_Abort), so no rank is left waiting.

    \b
    Example:
      nonsense-hpc workflow prepare --out data --shards 2
      mpirun -n 2 nonsense-hpc train --data data --out train --steps 200
    """
    from nonsense_hpc.errors import NonsenseError
    from nonsense_hpc.train import TrainConfig
    from nonsense_hpc.train import train as run_training

    try:
        widths = tuple(int(w) for w in hidden.split(",") if w.strip())
    except ValueError:
        raise click.BadParameter(f"{hidden!r} is not a comma-separated list of integers",
                                 param_hint="--hidden") from None
    if publish is None and publish_file:
        publish = _publish_address(publish_file)
    try:
        cfg = TrainConfig(data_dir=data_dir, out_dir=out_dir, steps=steps,
                          batch_size=batch_size, lr=lr, momentum=momentum, hidden=widths,
                          seed=seed, checkpoint_every=checkpoint_every,
                          checkpoint_dir=checkpoint_dir or os.environ.get(
                              "NONSENSE_CHECKPOINT_DIR") or None,
                          allreduce=allreduce, publish=publish, threads=threads,
                          timeout=timeout, fail_at_step=fail_at_step, fail_rank=fail_rank)
    except NonsenseError as exc:
        raise _fail(exc) from None
    _stamp(out_dir)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        result = run_training(cfg, comm)
    except (NonsenseError, RuntimeError, ValueError) as exc:
        click.echo(f"nonsense-hpc train: rank {comm.Get_rank()}: error: {exc}", err=True)
        if comm.Get_size() > 1:
            comm.Abort(3)
        sys.exit(3)
    if result.rank == 0:
        click.echo(f"trained {result.steps} steps on {result.world_size} rank(s) "
                   f"(resumed from step {result.resumed_from}, ran {result.steps_run}): "
                   f"loss {result.final_loss:.4f}, batch accuracy "
                   f"{result.final_accuracy:.3f}, median step "
                   f"{result.median_step_time * 1e3:.2f} ms; model in {out_dir}/model.pt")


def _publish_address(path: str) -> str | None:
    try:
        with open(path) as fh:
            return str(json.load(fh)["in"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise click.BadParameter(f"{path}: no forwarder address ({exc})",
                                 param_hint="--publish-file") from None


def _stamp(out_dir: str) -> None:
    """Record when this rank's process started (OUT/ranks/rank-RRR.start)."""
    rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMIX_RANK") or "0"
    path = os.path.join(out_dir, "ranks", f"rank-{int(rank):03d}.start")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(repr(_T0))


COMMANDS = [train]


def _bench_commands() -> list[click.Command]:
    return []


BENCH_COMMANDS: list[click.Command] = _bench_commands()
