"""``nonsense-hpc bench submit-overhead``: time from submission to the first rank running.

Peers, in one run, each starting the same 2-rank ``mpirun`` command whose ranks write a
timestamp as their first act:

- ``sbatch``: a bare ``sbatch --parsable --wrap "mpirun -n 2 ..."`` (the baseline);
- ``cluster.submit``: :func:`nonsense_hpc.cluster.submit` (rendered script, signal
  forwarding, status file) from an already running Python;
- ``nonsense-hpc submit``: the command line, Python start-up and imports included;
- ``snakemake --profile slurm`` (with ``--snakemake``): a one-rule workflow through the
  profile in ``slurm/``, from the ``snakemake`` start.

The number is ``first rank timestamp - time just before the submitting command``;
median over ``--repeats``, each submission made with the cluster idle (no job queued,
running or completing) at a random phase of slurmctld's one-second scheduling tick.
Ratios are against the bare ``sbatch``.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["STAMP", "first_rank_time", "submit_overhead"]

#: What every rank runs: write its start time to PREFIX.RANK.
STAMP = ("import os, sys, time; t = time.time(); "
         "r = os.environ.get('OMPI_COMM_WORLD_RANK', os.environ.get('SLURM_PROCID', '0')); "
         "open(sys.argv[1] + '.' + r, 'w').write(repr(t))")

_SNAKEFILE = """\
rule all:
    input: "done.txt"

rule ranks:
    output: "done.txt"
    resources: tasks={ntasks}, mpi="{tool} mpirun", runtime=5
    shell: "{{resources.mpi}} -n {{resources.tasks}} {python} {stamp} {prefix} && touch {{output}}"
"""


def first_rank_time(prefix: str, ntasks: int, timeout: float = 120.0,
                    failed: Callable[[], bool] | None = None) -> float:
    """Wait until all ``ntasks`` ranks wrote ``PREFIX.RANK``; return the earliest time.

    Args:
        prefix: the ranks' timestamp file prefix.
        ntasks: how many ranks to wait for.
        timeout: seconds to wait at most.
        failed: called while waiting; True means the submitter gave up (stop waiting).

    Raises:
        TimeoutError: not all ranks started within ``timeout`` seconds.
        RuntimeError: ``failed`` said so.
    """
    deadline = time.monotonic() + timeout
    while True:
        stamps = []
        for rank in range(ntasks):
            try:
                text = Path(f"{prefix}.{rank}").read_text()
                stamps.append(float(text))
            except (FileNotFoundError, ValueError):
                pass
        if len(stamps) == ntasks:
            return min(stamps)
        if failed is not None and failed():
            raise RuntimeError(f"the submitter failed before the ranks of {prefix} started")
        if time.monotonic() > deadline:
            raise TimeoutError(f"ranks of {prefix} did not start within {timeout} s")
        time.sleep(0.01)


def _wait_idle(timeout: float = 120.0) -> None:
    """Wait until no job is queued, running or completing (each peer starts alike)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = subprocess.run(["squeue", "-h", "-t", "PD,R,CG,CF", "-o", "%i"],
                              capture_output=True, text=True, timeout=30).stdout.split()
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               timeout=30).stdout.split()
        if not jobs and all(n.startswith("idle") for n in nodes):
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"Slurm not idle after {timeout} s (jobs {jobs})")
        time.sleep(0.05)


def _rank_cmd(python: str, prefix: str) -> list[str]:
    stamp = Path(prefix).parent / "stamp.py"
    if not stamp.exists():
        stamp.write_text(STAMP + "\n")
    return [python, str(stamp), prefix]


def _run_sbatch(work: Path, i: int, ntasks: int, mpirun: str, env: dict[str, str]) -> float:
    from nonsense_hpc.cluster import jobs

    prefix = str(work / f"sbatch{i}")
    wrap = shlex.join([mpirun, "-n", str(ntasks), *_rank_cmd(sys.executable, prefix)])
    t0 = time.time()
    proc = subprocess.run(["sbatch", "--parsable", f"--ntasks={ntasks}",
                           f"--output={work}/sbatch-%j.out", "--wrap", wrap],
                          capture_output=True, text=True, env=env, check=True, timeout=60)
    first = first_rank_time(prefix, ntasks)
    jobs.wait(proc.stdout.strip().split(";")[0], timeout=120)
    return first - t0


def _run_api(work: Path, i: int, ntasks: int, mpirun: str, env: dict[str, str]) -> float:
    from nonsense_hpc.cluster import submit

    prefix = str(work / f"api{i}")
    t0 = time.time()
    job = submit(_rank_cmd(sys.executable, prefix), ntasks=ntasks, log_dir=work / "logs",
                 environment={k: env[k] for k in ("OMPI_ALLOW_RUN_AS_ROOT",
                                                 "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM") if k in env})
    first = first_rank_time(prefix, ntasks)
    job.wait(timeout=120)
    return first - t0


def _run_cli(work: Path, i: int, ntasks: int, mpirun: str, env: dict[str, str]) -> float:
    from nonsense_hpc.cluster import jobs

    prefix = str(work / f"cli{i}")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "nonsense_hpc", "submit", "-n", str(ntasks),
                           "--log-dir", str(work / "logs"), "--",
                           *_rank_cmd(sys.executable, prefix)],
                          capture_output=True, text=True, env=env, check=False, timeout=120)
    if proc.returncode != 0:
        raise click.ClickException(f"nonsense-hpc submit failed: {proc.stderr[-2000:]}")
    first = first_rank_time(prefix, ntasks)
    jobs.wait(proc.stdout.strip(), timeout=120, log_dir=str(work / "logs"))
    return first - t0


def _run_snakemake(work: Path, i: int, ntasks: int, mpirun: str, env: dict[str, str]
                   ) -> float:
    prefix = str(work / f"smk{i}")
    wf = work / f"smk{i}"
    wf.mkdir()
    (wf / "Snakefile").write_text(_SNAKEFILE.format(
        ntasks=ntasks, tool=os.path.join(os.path.dirname(sys.executable), "nonsense-hpc"),
        python=sys.executable,
        stamp=_rank_cmd(sys.executable, prefix)[1], prefix=prefix))
    root = Path(__file__).resolve().parents[2]
    snakemake = os.path.join(os.path.dirname(sys.executable), "snakemake")
    log = (wf / "snakemake.log").open("w")
    t0 = time.time()
    proc = subprocess.Popen([snakemake, "--profile", str(root / "slurm"), "--directory",
                             str(wf), "--snakefile", str(wf / "Snakefile"),
                             "--slurm-init-seconds-before-status-checks", "1",
                             "--seconds-between-status-checks", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        first = first_rank_time(prefix, ntasks, timeout=300,
                                failed=lambda: proc.poll() not in (None, 0))
        if proc.wait(timeout=300) != 0:
            raise click.ClickException(f"snakemake failed, see {wf / 'snakemake.log'}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return first - t0


@click.command("submit-overhead")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Submissions per peer (the median is reported).")
@click.option("--ntasks", type=click.IntRange(min=1), default=2, show_default=True,
              help="Ranks per job.")
@click.option("--snakemake/--no-snakemake", "with_snakemake", default=False,
              show_default=True,
              help="Also time a one-rule workflow through snakemake --profile slurm.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random submission phases.")
@click.option("--out", type=click.Path(dir_okay=False),
              default="benchmarks/results/cluster_submit.json", show_default=True,
              help="JSON result file.")
def submit_overhead(repeats: int, ntasks: int, with_snakemake: bool, seed: int,
                    out: str) -> None:
    """Time from submission to the first rank running: ours against a bare sbatch.

    Needs a Slurm (the local one: sudo bash slurm/local-cluster/up.sh). Every peer
    starts the same mpirun command; each rank writes its start time first thing.

    \b
    Example:
      nonsense-hpc bench submit-overhead --repeats 5 --snakemake
    """
    import shutil

    from nonsense_hpc.launch import find_mpirun, mpi_environment

    if shutil.which("sbatch") is None:
        raise click.ClickException("sbatch not found: start the local Slurm with "
                                   "sudo bash slurm/local-cluster/up.sh")
    env = mpi_environment(allow_root=os.geteuid() == 0)
    mpirun = find_mpirun()
    peers: dict[str, Callable[[Path, int, int, str, dict[str, str]], float]] = {
        "sbatch": _run_sbatch, "cluster.submit": _run_api, "nonsense-hpc submit": _run_cli}
    if with_snakemake:
        peers["snakemake --profile slurm"] = _run_snakemake
    samples: dict[str, list[float]] = {name: [] for name in peers}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="nonsense-bench-", dir=os.getcwd()) as tmp:
        work = Path(tmp)
        for i in range(repeats):  # interleave the peers so drift hits them alike
            for name, run in peers.items():
                _wait_idle()
                # slurmctld schedules on a one-second tick: submit at a random phase of
                # it, alike for every peer, or the order of the peers biases the result.
                time.sleep(rng.random())
                samples[name].append(run(work, i, ntasks, mpirun, env))
    base = statistics.median(samples["sbatch"])
    rows = []
    click.echo(f"{'peer':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'x sbatch':>9}")
    for name, values in samples.items():
        med = statistics.median(values)
        rows.append({"peer": name, "median_s": med, "min_s": min(values),
                     "max_s": max(values), "ratio_vs_sbatch": med / base,
                     "samples_s": values})
        click.echo(f"{name:<28} {med:>9.3f} {min(values):>7.3f} {max(values):>7.3f} "
                   f"{med / base:>9.2f}")
    result = {"benchmark": "submit-overhead", "ntasks": ntasks, "repeats": repeats,
              "seed": seed,
              "metric": "seconds from submit to first rank running", "results": rows,
              "host": os.uname().nodename, "cpus": os.cpu_count(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {out}")
