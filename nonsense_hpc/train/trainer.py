"""The data-parallel trainer: an MLP on the digits shards, gradients averaged by the Tree.

Every rank builds the same model (same seed), trains on its own shards, and after each
backward pass averages the gradients over all ranks with
``Tree.allreduce(grads, "avg")`` (in place), so the ranks stay identical. For comparison
``allreduce="ddp"`` wraps the model in torch's DistributedDataParallel on gloo instead.

Each step appends a record to the rank's log (:mod:`.runlog`) and, when an address is
given (``publish=`` or ``NONSENSE_PUBLISH``), publishes loss, accuracy and throughput to a
Forwarder through :class:`nonsense_hpc.devices.Publisher`. Every ``checkpoint_every``
steps rank 0 writes a checkpoint (atomically); a restarted job resumes from the latest
one instead of starting again. Under Slurm, the warning signal (SIGUSR1) makes the ranks
agree at the next step, checkpoint and requeue the job (Tree mode).

For watching a run (:mod:`.observe`): at step ``trace_step`` (Tree mode) the gradient
allreduce is traced and rendered into ``OUT/trace-step/`` (sequence diagram, Mermaid,
Chrome trace); when publishing, every rank also sends a heartbeat with its memory every
``heartbeat`` seconds, for ``nonsense-hpc dashboard``.

Example (``mpirun -n 2 python script.py``)::

    from nonsense_hpc.train import TrainConfig, train
    result = train(TrainConfig(data_dir="data", out_dir="train", steps=200))
    print(result.final_loss, result.resumed_from)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from nonsense_hpc.train.data import batch_indices, load_rank_data
from nonsense_hpc.train.model import make_model
from nonsense_hpc.train.observe import StepTrace, beat_now, start_beats
from nonsense_hpc.train.runlog import RankLog

__all__ = ["ALLREDUCE", "InjectedFailure", "TrainConfig", "TrainResult", "train"]

log = logging.getLogger(__name__)

ALLREDUCE = ("tree", "ddp")


class InjectedFailure(RuntimeError):
    """Raised by ``fail_at_step`` (tests and demonstrations of resume)."""


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how.

    Attributes:
        data_dir: prepared shards (:func:`nonsense_hpc.train.data.prepare_shards`).
        out_dir: where logs, checkpoints, ``model.pt`` and ``summary.json`` go.
        steps: total optimisation steps (a resumed run does only the missing ones).
        batch_size: samples per rank per step.
        lr: SGD learning rate.
        momentum: SGD momentum.
        hidden: hidden layer widths.
        seed: seed of the model and the batches.
        checkpoint_every: checkpoint every this many steps (0: only at the end).
        checkpoint_dir: default ``OUT/checkpoints``.
        allreduce: ``"tree"`` (nonsense_hpc Tree) or ``"ddp"`` (torch DDP on gloo).
        publish: a Forwarder input to publish metrics to (default ``NONSENSE_PUBLISH``;
            empty string: do not publish).
        threads: torch intra-op threads per rank.
        timeout: seconds a collective waits for a peer (default: the Settings').
        fail_at_step: raise :class:`InjectedFailure` after this step, in an attempt that
            started from scratch (a resumed attempt goes on: tests of resume).
        fail_rank: only this rank fails (default: every rank).
        trace_step: trace the gradient allreduce of this step (1-based) into
            ``trace_dir`` (0: no trace; Tree mode only; a step outside this attempt's
            range is not traced).
        trace_dir: default ``OUT/trace-step``.
        heartbeat: seconds between per-rank heartbeats when publishing (0: none).
    """

    data_dir: str
    out_dir: str
    steps: int = 200
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    hidden: tuple[int, ...] = (128, 128)
    seed: int = 0
    checkpoint_every: int = 50
    checkpoint_dir: str | None = None
    allreduce: str = "tree"
    publish: str | None = None
    threads: int = 1
    timeout: float | None = None
    fail_at_step: int | None = None
    fail_rank: int | None = None
    trace_step: int = 10
    trace_dir: str | None = None
    heartbeat: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"need lr > 0 and 0 <= momentum < 1, got {self.lr}, "
                              f"{self.momentum}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.allreduce not in ALLREDUCE:
            raise ConfigError(f"allreduce must be one of {', '.join(ALLREDUCE)}, "
                              f"got {self.allreduce!r}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.trace_step < 0:
            raise ConfigError(f"trace_step must be >= 0 (0: no trace), got {self.trace_step}")
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be >= 0 s (0: none), got {self.heartbeat}")

    @property
    def checkpoints(self) -> Path:
        """The checkpoint directory."""
        return Path(self.checkpoint_dir or Path(self.out_dir) / "checkpoints")

    @property
    def traces(self) -> Path:
        """The directory of the traced step."""
        return Path(self.trace_dir or Path(self.out_dir) / "trace-step")


@dataclass
class TrainResult:
    """What :func:`train` returns (the same on every rank, except ``rank``)."""

    rank: int
    world_size: int
    steps: int
    resumed_from: int
    steps_run: int
    final_loss: float
    final_accuracy: float
    median_step_time: float
    wall_time: float
    checkpoints: list[str] = field(default_factory=list)


class _Reducer:
    """Averages gradients with the Tree, or lets DDP do it; times the allreduce."""

    def __init__(self, mode: str, comm: Any, model: Any, timeout: float | None) -> None:
        import torch

        self.mode, self.comm = mode, comm
        self.tree: Any = None
        self.model = model
        if mode == "tree":
            from nonsense_hpc.comm import Tree

            self.tree = Tree(comm=comm, timeout=timeout)
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            self.grads = {name: p.grad for name, p in model.named_parameters()}
            self.stop = torch.zeros(1)
            self.grads["_stop"] = self.stop
            self.nbytes = sum(int(g.numel() * g.element_size()) for g in self.grads.values())
            # Same start on every rank, whatever the caller did before.
            self.tree.broadcast({k: v.data for k, v in model.state_dict().items()})
        else:
            self.nbytes = sum(int(p.numel() * p.element_size()) for p in model.parameters())
            self.model = _ddp(model, comm, timeout)

    def allreduce(self, stop_requested: bool) -> tuple[float | None, bool]:
        """Average the gradients; returns (seconds, whether any rank asked to stop)."""
        if self.tree is None:
            return None, False
        self.stop[0] = 1.0 if stop_requested else 0.0
        t0 = time.perf_counter()
        self.tree.allreduce(self.grads, "avg")
        return time.perf_counter() - t0, bool(self.stop[0] > 0)

    def close(self) -> None:
        if self.tree is not None:
            self.tree.close()
        else:
            from nonsense_hpc.comm.gloo import destroy_gloo

            destroy_gloo(self.comm)


def _ddp(model: Any, comm: Any, timeout: float | None) -> Any:
    """Wrap ``model`` in DDP on gloo, rendezvous address from rank 0 over MPI."""
    from torch.nn.parallel import DistributedDataParallel

    from nonsense_hpc.comm.gloo import init_gloo

    init_gloo(comm, timeout or 120)
    return DistributedDataParallel(model)


def _resume_point(cfg: TrainConfig, comm: Any) -> tuple[int, dict[str, Any] | None]:
    """Rank 0 picks the latest checkpoint; every rank loads the same one."""
    path = latest_checkpoint(cfg.checkpoints) if comm.Get_rank() == 0 else None
    name = comm.bcast(str(path) if path else None, root=0)
    if name is None:
        return 0, None
    state = load_checkpoint(name)
    return int(state["step"]), state


def _publisher(cfg: TrainConfig, comm: Any) -> Any:
    address = cfg.publish if cfg.publish is not None else os.environ.get("NONSENSE_PUBLISH")
    if not address:
        return None
    from nonsense_hpc.devices import Publisher

    # Connected early (before the model and the Tree are built) so the subscription has
    # reached this PUB socket by the first step; PUB never blocks a rank, and messages
    # sent while no Forwarder listens are dropped.
    return Publisher(address, comm=comm, who="all")


def train(cfg: TrainConfig, comm: Any = None) -> TrainResult:
    """Train on every rank of ``comm`` (default COMM_WORLD); collective.

    Raises:
        ConfigError: bad data directory, too few shards, a batch larger than a shard.
        InjectedFailure: ``fail_at_step`` was reached.
        CollectiveError: a peer failed or timed out during an allreduce.
    """
    import torch
    import torch.nn.functional as F
    from mpi4py import MPI

    from nonsense_hpc.cluster.preempt import PreemptionHandler

    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    started = time.time()
    torch.set_num_threads(cfg.threads)
    pub = _publisher(cfg, comm)
    x_np, y_np = load_rank_data(cfg.data_dir, rank, size)
    batch_indices(len(x_np), cfg.batch_size, 0, cfg.seed, rank)  # validates the size
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = make_model(cfg.hidden, cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    start, state = _resume_point(cfg, comm)
    progress = [start]
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    reducer = _Reducer(cfg.allreduce, comm, model, cfg.timeout)
    net = reducer.model
    out = Path(cfg.out_dir)
    runlog = RankLog(out, rank, start)
    written: list[str] = []

    def checkpoint(step: int) -> None:
        if rank == 0:
            path = save_checkpoint(cfg.checkpoints, step, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "config": json.dumps(asdict(cfg)), "world_size": size})
            written.append(str(path))
            if pub is not None:
                pub.event("checkpoint", step=step, path=str(path))
        comm.Barrier()

    handler = PreemptionHandler(lambda: None, deferred=True)
    if cfg.allreduce == "tree":
        handler.install()
    if pub is not None:
        pub.event("start", step=start, world_size=size, resumed_from=start,
                  allreduce=cfg.allreduce)
    step_times: list[float] = []
    loss_v = acc_v = float("nan")
    beat = start_beats(pub, cfg.heartbeat, step=lambda: progress[0])
    beat_now(pub, cfg.heartbeat, start)
    try:
        for step in range(start, cfg.steps):
            done = step + 1
            tracer = None
            with contextlib.ExitStack() as stack:
                if done == cfg.trace_step and reducer.tree is not None:
                    tracer = stack.enter_context(
                        StepTrace(reducer.tree, cfg.traces, done, cfg.timeout))
                t0 = time.perf_counter()
                idx = torch.from_numpy(batch_indices(len(x), cfg.batch_size, step,
                                                     cfg.seed, rank))
                xb, yb = x[idx], y[idx]
                opt.zero_grad(set_to_none=False)
                logits = net(xb)
                loss = F.cross_entropy(logits, yb)
                loss.backward()  # type: ignore[no-untyped-call]
                if tracer is not None:
                    tracer.mark("compute")
                ar_time, stop = reducer.allreduce(handler.requested)
                if tracer is not None:
                    tracer.mark("allreduce", reducer.nbytes)
                opt.step()
                if tracer is not None:
                    tracer.mark("apply")
            # Gathering and rendering the trace is not training time.
            dt = time.perf_counter() - t0 - (tracer.overhead if tracer else 0.0)
            progress[0] = done
            step_times.append(dt)
            loss_v = float(loss.detach())
            acc_v = float((logits.detach().argmax(1) == yb).float().mean())
            record = {"step": done, "rank": rank, "loss": loss_v, "accuracy": acc_v,
                      "samples": len(idx), "step_time": dt, "allreduce_time": ar_time,
                      "allreduce_bytes": reducer.nbytes,
                      "throughput": cfg.batch_size * size / dt, "time": time.time()}
            if tracer is not None:
                record["traced"] = True
                record["trace_time"] = tracer.overhead  # gather + render, not in step_time
                if pub is not None and rank == 0:
                    pub.event("trace", step=done, path=str(cfg.traces / "trace.json"))
            runlog.write(record)
            if pub is not None:
                pub.metric("train", {k: record[k] for k in (
                    "loss", "accuracy", "step_time", "throughput", "allreduce_time")},
                    step=done)
            if stop or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) \
                    or done == cfg.steps:
                checkpoint(done)
            if stop:
                handler.handle()  # requeues and exits when allowed; else training goes on
            if cfg.fail_at_step == done and start == 0 and cfg.fail_rank in (None, rank):
                raise InjectedFailure(f"rank {rank}: injected failure after step {done} "
                                      "(fail_at_step)")
    finally:
        handler.uninstall()
        runlog.close()
        if beat is not None:
            beat.stop()
    if rank == 0:
        _write_outputs(cfg, model, out, size)
    result = _summarise(cfg, comm, rank, size, start, step_times, loss_v, acc_v, started,
                        written)
    if pub is not None:
        beat_now(pub, cfg.heartbeat, cfg.steps)
        pub.event("done", step=cfg.steps, steps_run=result.steps_run)
        pub.close()
    reducer.close()
    return result


def _write_outputs(cfg: TrainConfig, model: Any, out: Path, size: int) -> None:
    import torch

    tmp = out / f".model.pt.{os.getpid()}.tmp"
    torch.save({"model": model.state_dict(), "hidden": list(cfg.hidden),
                "steps": cfg.steps, "world_size": size}, tmp)
    os.replace(tmp, out / "model.pt")


def _summarise(cfg: TrainConfig, comm: Any, rank: int, size: int, start: int,
               step_times: list[float], loss_v: float, acc_v: float, started: float,
               written: list[str]) -> TrainResult:
    import statistics

    med = statistics.median(step_times) if step_times else float("nan")
    mine = {"rank": rank, "median_step_time": med, "steps_run": len(step_times),
            "started": started, "loss": loss_v, "accuracy": acc_v}
    everyone = comm.allgather(mine)
    losses = [e["loss"] for e in everyone]
    accs = [e["accuracy"] for e in everyone]
    result = TrainResult(
        rank=rank, world_size=size, steps=cfg.steps, resumed_from=start,
        steps_run=len(step_times), final_loss=sum(losses) / size,
        final_accuracy=sum(accs) / size,
        median_step_time=max(e["median_step_time"] for e in everyone),
        wall_time=time.time() - min(e["started"] for e in everyone), checkpoints=written)
    if rank == 0:
        summary = {"config": asdict(cfg), "result": asdict(result), "ranks": everyone}
        path = Path(cfg.out_dir) / "summary.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)
    return result
