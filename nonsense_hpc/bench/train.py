"""Benchmarks of the main job: training step time, and the workflow's start-up overhead.

``nonsense-hpc bench train``: the digits MLP trained by ``nonsense-hpc train`` under
``mpirun`` at 1 and 2 ranks, gradients averaged by the Tree and by torch
DistributedDataParallel on gloo, in one run (interleaved, ``--repeats`` rounds). The
number per configuration is the median step time (forward, backward, gradient averaging,
update) of the slowest rank, warm-up steps left out; ratios are Tree / DDP.

``nonsense-hpc bench workflow-overhead``: the time from the submitting command's start
to the first training rank running (each rank stamps ``OUT/ranks/rank-R.start`` as its
first act), for the same 2-rank ``nonsense-hpc train`` command started by

- ``mpirun`` directly (no scheduler, no workflow),
- ``nonsense-hpc run`` (the workflow, local profile: prepare, image, Forwarder first),
- a bare ``sbatch --wrap`` (needs Slurm),
- ``snakemake --profile slurm`` on the workflow (needs Slurm).

Ratios are against the bare ``sbatch`` (the Slurm peers) and against ``mpirun`` (the
local ones). Both write JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["train_bench", "workflow_overhead"]

_RESULTS = Path("benchmarks") / "results"


def _cli() -> str:
    return str(Path(sys.executable).with_name("nonsense-hpc"))


def _env() -> dict[str, str]:
    from nonsense_hpc.launch import mpi_environment
    from nonsense_hpc.train.mainjob import job_environment

    env = job_environment()
    if os.geteuid() == 0:
        click.echo("note: running as root: setting OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) for the "
                   "benchmark's MPI jobs", err=True)
    return mpi_environment(env, allow_root=os.geteuid() == 0)


def _median_step(out: Path, warmup: int) -> tuple[float, float | None]:
    """(slowest rank's median step time, its median allreduce time) from the logs."""
    from nonsense_hpc.train.runlog import read_rank_logs

    steps, reduces = [], []
    for records in read_rank_logs(out).values():
        kept = records[warmup:] or records
        steps.append(statistics.median(r["step_time"] for r in kept))
        ar = [r["allreduce_time"] for r in kept if r.get("allreduce_time")]
        if ar:
            reduces.append(statistics.median(ar))
    return max(steps), (max(reduces) if reduces else None)


@click.command("train")
@click.option("--steps", type=click.IntRange(min=20), default=300, show_default=True,
              help="Steps per training run.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Steps left out of the medians.")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Interleaved rounds over the configurations (median of rounds).")
@click.option("--np", "nps", type=click.IntRange(min=1), multiple=True, default=(1, 2),
              show_default=True, help="Rank counts (repeatable).")
@click.option("--hidden", default="128,128", show_default=True,
              help="Hidden layer widths of the MLP.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              default=str(_RESULTS / "train.json"), show_default=True,
              help="Where to write the JSON result.")
def train_bench(steps: int, warmup: int, repeats: int, nps: tuple[int, ...], hidden: str,
                out_path: str) -> None:
    """Training step time at 1 and 2 ranks: Tree AllReduce vs torch DDP on gloo.

    \b
    Example:
      nonsense-hpc bench train --steps 300 --repeats 2
    """
    from nonsense_hpc.launch import mpirun_command
    from nonsense_hpc.train import prepare_shards

    env = _env()
    work = Path(tempfile.mkdtemp(prefix="nonsense-bench-train-"))
    try:
        prepare_shards(work / "data", max(nps))
        samples: dict[str, list[tuple[float, float | None]]] = {}
        for rnd in range(repeats):
            for np_ in nps:
                for mode in ("tree", "ddp"):
                    key = f"{mode} np={np_}"
                    out = work / f"{mode}-{np_}-{rnd}"
                    cmd = mpirun_command(np_, [
                        _cli(), "train", "--data", str(work / "data"), "--out", str(out),
                        "--steps", str(steps), "--checkpoint-every", "0", "--hidden",
                        hidden, "--allreduce", mode, "--publish", "", "--trace-step", "0"])
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                          timeout=600)
                    if proc.returncode != 0:
                        raise click.ClickException(f"{key} failed:\n{proc.stderr[-3000:]}")
                    samples.setdefault(key, []).append(_median_step(out, warmup))
                    click.echo(f"round {rnd + 1}: {key}: step "
                               f"{samples[key][-1][0] * 1e3:.3f} ms", err=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {}
    for key, vals in samples.items():
        ar = [v[1] for v in vals if v[1] is not None]
        results[key] = {"step_ms": statistics.median(v[0] for v in vals) * 1e3,
                        "allreduce_ms": statistics.median(ar) * 1e3 if ar else None,
                        "rounds_ms": [v[0] * 1e3 for v in vals]}
    ratios = {f"tree/ddp np={n}": results[f"tree np={n}"]["step_ms"]
              / results[f"ddp np={n}"]["step_ms"] for n in nps}
    _print_train(results, ratios)
    _write(out_path, {"benchmark": "train", "steps": steps, "warmup": warmup,
                      "repeats": repeats, "hidden": hidden, "results": results,
                      "ratios": ratios, "machine": _machine()})


def _print_train(results: dict[str, Any], ratios: dict[str, float]) -> None:
    click.echo(f"{'configuration':<14} {'step (ms)':>10} {'allreduce (ms)':>15}")
    for key, r in results.items():
        ar = f"{r['allreduce_ms']:.3f}" if r["allreduce_ms"] is not None else "in backward"
        click.echo(f"{key:<14} {r['step_ms']:>10.3f} {ar:>15}")
    for key, v in ratios.items():
        click.echo(f"{key}: {v:.2f}x (step time; < 1 means the Tree is faster)")


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load": os.getloadavg()[0], "python": sys.version.split()[0]}


def _write(path: str, data: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2) + "\n")
    click.echo(f"wrote {p}")


def _first_rank(out: Path, ranks: int, t0: float, timeout: float) -> float:
    """Seconds from ``t0`` to the earliest rank stamp under ``out/train*/ranks``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps = [float(p.read_text() or "nan") for p in out.glob("**/ranks/rank-*.start")]
        if len(stamps) >= ranks:
            return min(stamps) - t0
        time.sleep(0.05)
    raise click.ClickException(f"no {ranks} rank stamps under {out} within {timeout} s")


def _run_peer(name: str, cmd: list[str], out: Path, env: dict[str, str], cwd: Path,
              timeout: float) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    if proc.returncode != 0:
        raise click.ClickException(f"{name} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return _first_rank(out, 2, t0, timeout)


@click.command("workflow-overhead")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per peer (median).")
@click.option("--slurm/--no-slurm", "use_slurm", default=None,
              help="Include the Slurm peers (default: when sbatch is on PATH).")
@click.option("--partition", default=None, help="Slurm partition (default: the default one).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              default=str(_RESULTS / "workflow_overhead.json"), show_default=True,
              help="Where to write the JSON result.")
def workflow_overhead(repeats: int, use_slurm: bool | None, partition: str | None,
                      out_path: str) -> None:
    """Workflow start to first rank running, against bare mpirun / sbatch of the same command.

    \b
    Example:
      nonsense-hpc bench workflow-overhead --repeats 2
    """
    from nonsense_hpc.launch import mpirun_command
    from nonsense_hpc.train import prepare_shards
    from nonsense_hpc.train.mainjob import find_workflow

    if use_slurm is None:
        use_slurm = shutil.which("sbatch") is not None
    env = _env()
    snakefile = find_workflow()
    root = snakefile.parents[1]
    work = Path(tempfile.mkdtemp(prefix="nonsense-bench-wf-", dir=Path.cwd()))
    prepare_shards(work / "data", 2)
    cli = _cli()
    times: dict[str, list[float]] = {}

    def train_argv(out: Path) -> list[str]:
        return [cli, "train", "--data", str(work / "data"), "--out", str(out), "--steps",
                "5", "--checkpoint-every", "0", "--publish", "", "--trace-step", "0"]

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)
        click.echo(f"{name}: first rank after {seconds:.2f} s", err=True)

    sm = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
    config = ["--config", "np=2", "steps=5", "image=skip", "async=0", "trace_step=0"]
    try:
        for i in range(repeats):
            out = work / f"mpirun-{i}"
            record("mpirun", _run_peer("mpirun", mpirun_command(2, train_argv(out)), out,
                                       env, root, 300))
            out = work / f"local-{i}"
            record("workflow (local profile)", _run_peer(
                "local workflow", [*sm, "--profile", str(snakefile.parent / "profiles" /
                                                          "local"), "-d", str(out), *config],
                out, env, root, 600))
            if not use_slurm:
                continue
            part = [f"--partition={partition}"] if partition else []
            out = work / f"sbatch-{i}"
            wrap = shlex.join([cli, "mpirun", "-n", "2", *train_argv(out)])
            record("sbatch", _run_peer("sbatch", [
                "sbatch", "--parsable", "--ntasks=2", "--time=10", *part,
                f"--output={work}/sbatch-%j.out", f"--wrap={wrap}"], out, env, root, 600))
            out = work / f"slurm-{i}"
            res = ["--default-resources", f"slurm_partition={partition}", "runtime=30",
                   "mem_mb_per_cpu=500", "tasks=1"] if partition else []
            record("workflow (snakemake --profile slurm)", _run_peer(
                "slurm workflow", [*sm, "--profile", "slurm", "-d", str(out), *res,
                                   "--slurm-init-seconds-before-status-checks", "1",
                                   "--seconds-between-status-checks", "1", *config],
                out, env, root, 600))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {k: statistics.median(v) for k, v in times.items()}
    ratios = {"workflow (local profile) / mpirun":
              results["workflow (local profile)"] / results["mpirun"]}
    if "sbatch" in results:
        ratios["snakemake --profile slurm / sbatch"] = \
            results["workflow (snakemake --profile slurm)"] / results["sbatch"]
    for key, v in results.items():
        click.echo(f"{key:<40} {v:8.2f} s to the first rank")
    for key, v in ratios.items():
        click.echo(f"{key}: {v:.1f}x")
    _write(out_path, {"benchmark": "workflow-overhead", "repeats": repeats,
                      "seconds_to_first_rank": times, "median": results, "ratios": ratios,
                      "machine": _machine()})
