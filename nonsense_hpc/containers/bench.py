"""``nonsense-hpc bench container-startup``: what a container exec adds to starting a process.

Peers, timed in one run and interleaved (each repeat runs every peer once), all starting the
same command and waiting for it to finish:

- ``bare``: the command itself (the baseline);
- ``bwrap``: the local runtime's bubblewrap command line, started directly;
- ``cli``: ``nonsense-hpc container exec IMAGE -- COMMAND`` (Python start-up, runtime
  detection and the exec into bwrap included): what a job script runs per rank.

Commands: ``true`` (pure start-up), ``python -c "import mpi4py.MPI"`` (the rank's
interpreter and MPI library read through the read-only binds; the import runs Open MPI's
singleton ``MPI_Init``, which dominates), and a 2-rank
``mpirun ... MPI Barrier`` job, bare against one container process per rank.
Reported: median wall time per peer and its ratio to ``bare``.
"""

from __future__ import annotations

import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

__all__ = ["container_startup", "time_command"]


def time_command(argv: Sequence[str], env: dict[str, str] | None = None,
                 timeout: float = 120.0) -> float:
    """Wall-clock seconds ``argv`` takes to start and finish (it must exit 0).

    Raises:
        RuntimeError: the command failed.
    """
    start = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr[-800:]}")
    return elapsed


@click.command("container-startup")
@click.option("--image", default="nonsense-hpc", show_default=True,
              help="Local sandbox image (built if missing; needs root then).")
@click.option("--repeats", "-n", type=int, default=20, show_default=True,
              help="Runs of each peer per command (interleaved).")
@click.option("--mpi-repeats", type=int, default=8, show_default=True,
              help="Runs of each peer for the 2-rank mpirun job.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              default="benchmarks/results/container_startup.json", show_default=True,
              help="Where to write the JSON results.")
def container_startup(image: str, repeats: int, mpi_repeats: int, output: str) -> None:
    """Start-up overhead of a container exec (local runtime) against a bare process.

    \b
    Example:
      nonsense-hpc bench container-startup --repeats 20
    """
    from nonsense_hpc.containers import LocalRuntime
    from nonsense_hpc.launch import find_mpirun, mpi_environment, mpirun_command

    if repeats < 1 or mpi_repeats < 1:
        raise click.BadParameter("repeats must be >= 1")
    rt = LocalRuntime()
    rt.build(image)
    cli = [sys.executable, "-m", "nonsense_hpc.cli.main", "container", "exec", "--runtime",
           "local", image, "--"]
    env = mpi_environment(allow_root=True)
    mpi_prog = [sys.executable, "-c", "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"]
    launcher = find_mpirun()
    cases: dict[str, tuple[int, dict[str, list[str]]]] = {
        "true": (repeats, {"bare": ["true"], "bwrap": rt.exec_command(image, ["true"]),
                           "cli": [*cli, "true"]}),
        "python: import mpi4py.MPI": (repeats, {
            "bare": [sys.executable, "-c", "import mpi4py.MPI"],
            "bwrap": rt.exec_command(image, [sys.executable, "-c", "import mpi4py.MPI"]),
            "cli": [*cli, sys.executable, "-c", "import mpi4py.MPI"]}),
        "mpirun -n 2 Barrier": (mpi_repeats, {
            "bare": mpirun_command(2, mpi_prog, launcher=launcher),
            "cli": mpirun_command(2, [*cli, *mpi_prog], launcher=launcher)}),
    }
    results = []
    for name, (count, peers) in cases.items():
        times: dict[str, list[float]] = {peer: [] for peer in peers}
        for argv in peers.values():  # warm-up: page cache, first-run effects
            time_command(argv, env)
        for _ in range(count):
            for peer, argv in peers.items():
                times[peer].append(time_command(argv, env))
        base = statistics.median(times["bare"])
        for peer, values in times.items():
            med = statistics.median(values)
            results.append({"command": name, "peer": peer, "repeats": count,
                            "median_ms": round(med * 1e3, 2),
                            "min_ms": round(min(values) * 1e3, 2),
                            "ratio_to_bare": round(med / base, 2),
                            "added_ms": round((med - base) * 1e3, 2)})
    click.echo(f"{'command':<26} {'peer':<6} {'median ms':>10} {'min ms':>8} "
               f"{'x bare':>7} {'added ms':>9}")
    for r in results:
        click.echo(f"{r['command']:<26} {r['peer']:<6} {r['median_ms']:>10.1f} "
                   f"{r['min_ms']:>8.1f} {r['ratio_to_bare']:>7.2f} {r['added_ms']:>9.1f}")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "container-startup", "host": platform.node(),
                               "time": time.time(), "image": image, "results": results},
                              indent=2) + "\n")
    click.echo(f"wrote {out}")
