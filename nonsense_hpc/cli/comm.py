"""``nonsense-hpc topology`` and ``nonsense-hpc bench allreduce``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nonsense_hpc.config import parse_size

__all__ = ["BENCH_COMMANDS", "COMMANDS", "bench_allreduce", "topology"]


@click.command()
@click.option("--ranks-per-node", type=int, default=None,
              help="Split each machine into pretend nodes of this many ranks "
                   "(default NONSENSE_RANKS_PER_NODE).")
def topology(ranks_per_node: int | None) -> None:
    """Print the nodes, leaders and leader tree the ranks build.

    Run it under the launcher, as the job would run:

    \b
      mpirun -n 8 nonsense-hpc topology
      mpirun -n 8 nonsense-hpc topology --ranks-per-node 3
    """
    from nonsense_hpc.comm import Tree

    tree = Tree(ranks_per_node=ranks_per_node)
    if tree.rank == 0:
        click.echo(tree.topology.describe())
        click.echo(f"intra-node transport: {tree.transport} "
                   f"({'direct reads of peer memory' if tree.transport == 'cma' else 'staged through a shared window'})")
    tree.close()


def _sizes(text: str) -> list[int]:
    if ".." in text:
        lo_s, hi_s = text.split("..", 1)
        lo, hi = parse_size(lo_s), parse_size(hi_s)
        out, n = [], max(lo, 1)
        while n <= hi:
            out.append(n)
            n *= 8 if n < 4096 else 4
        return out
    return [parse_size(s) for s in text.split(",") if s.strip()]


@click.command("allreduce")
@click.option("--sizes", default="8,64,512,4KiB,32KiB,256KiB,1MiB,4MiB,16MiB,64MiB",
              show_default=True, help="Comma-separated sizes, or a range LO..HI.")
@click.option("--peers", default="tree,native,pickle,gloo,memcpy", show_default=True,
              help="Which implementations to time, in one run.")
@click.option("--budget", type=float, default=0.25, show_default=True,
              help="Seconds per (implementation, size); sets the iteration count.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("benchmarks/results"), show_default=True,
              help="Folder for allreduce-np<N>.json and allreduce-np<N>.png.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG plot.")
def bench_allreduce(sizes: str, peers: str, budget: float, out_dir: Path,
                    no_plot: bool) -> None:
    """Tree allreduce against native MPI, mpi4py pickle, torch gloo and memcpy.

    Run it under mpirun; every implementation is measured in this one run on the same
    buffers, and rank 0 prints latency, busbw and the Tree's ratios:

    \b
      mpirun -n 2 nonsense-hpc bench allreduce
      mpirun -n 2 nonsense-hpc bench allreduce --sizes 1MiB,16MiB --peers tree,native
    """
    from mpi4py import MPI

    from nonsense_hpc.bench.allreduce import run_benchmark, summary, targets, write_json, \
        write_plot

    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    if rank == 0:
        click.echo(f"allreduce benchmark: {size} rank(s), float32 sum", err=True)
    rows = run_benchmark(_sizes(sizes), [p.strip() for p in peers.split(",") if p.strip()],
                         budget, progress=lambda line: click.echo(line, err=True))
    if rank != 0:
        return
    table, _ = summary(rows)
    click.echo(table)
    verdicts = targets(rows) if size == 2 else []
    for text, ok, measured in verdicts:
        click.echo(f"  [{'met' if ok else 'MISSED'}] {text}: {measured}")
    command = f"mpirun -n {size} nonsense-hpc bench allreduce " + " ".join(sys.argv[3:])
    json_path = out_dir / f"allreduce-np{size}.json"
    write_json(rows, json_path, command.strip())
    click.echo(f"wrote {json_path}")
    if not no_plot:
        png = out_dir / f"allreduce-np{size}.png"
        write_plot(rows, png)
        click.echo(f"wrote {png}")


COMMANDS = [topology]
BENCH_COMMANDS = [bench_allreduce]
