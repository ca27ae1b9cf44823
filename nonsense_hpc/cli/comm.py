"""``nonsense-hpc topology`` and ``nonsense-hpc bench allreduce``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nonsense_hpc.config import parse_size

__all__ = ["BENCH_COMMANDS", "COMMANDS", "bench_allreduce", "model", "topology"]


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
        how = "direct reads of peer memory" if tree.transport == "cma" else \
            "staged through a shared window"
        click.echo(f"intra-node transport: {tree.transport} ({how})")
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

    from nonsense_hpc.bench.allreduce import run_benchmark, summary, targets, write_json, write_plot

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


@click.command()
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("benchmarks/results/allreduce-np2.json"), show_default=True,
              help="A 2-rank `bench allreduce` JSON file to calibrate the node terms from.")
@click.option("--sizes", default="4KiB,1MiB,64MiB", show_default=True,
              help="Message sizes to predict.")
@click.option("--ranks-per-node", type=int, default=64, show_default=True,
              help="Ranks on each node of the modelled cluster.")
@click.option("--max-ranks", type=int, default=16384, show_default=True)
@click.option("--alpha-net", type=float, default=2.0, show_default=True,
              help="Inter-node latency per message, microseconds.")
@click.option("--net-gbps", type=float, default=12.5, show_default=True,
              help="Inter-node bandwidth per link, GB/s (12.5 = HDR InfiniBand 100 Gb/s).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write prediction-vs-measurement and scaling plots to this PNG.")
def model(source: Path, sizes: str, ranks_per_node: int, max_ranks: int, alpha_net: float,
          net_gbps: float, plot: Path | None) -> None:
    """Predict allreduce time from 2 to 16384 ranks with an alpha-beta-gamma model.

    The node terms come from a measured benchmark on this machine; the network terms are
    options (defaults: a typical HDR InfiniBand fabric). Runs without MPI:

    \b
      nonsense-hpc model --from benchmarks/results/allreduce-np2.json --plot model.png
    """
    from nonsense_hpc.comm.model import CostModel, load_rows

    try:
        rows = load_rows(source)
        m = CostModel.calibrate(rows, alpha_net=alpha_net * 1e-6,
                                beta_net=1.0 / (net_gbps * 1e9))
    except (ValueError, KeyError) as exc:
        raise click.ClickException(f"{source}: {exc} (make one with: mpirun -n 2 "
                                   "nonsense-hpc bench allreduce)") from None
    click.echo(f"calibrated from {source}: alpha_sync={m.alpha_sync * 1e6:.2f} us, "
               f"mem {1 / m.beta_mem / 1e9:.2f} GB/s, reduce {1 / max(m.gamma, 1e-30) / 1e9:.2f}"
               f" GB/s; network alpha={alpha_net} us, {net_gbps} GB/s")
    measured = {r["nbytes"]: r["seconds"] for r in rows if r["impl"] == "tree"}
    click.echo("\nprediction vs measurement at 2 ranks on this machine:")
    for n in sorted(measured):
        pred = m.allreduce(n, 2, 1)
        click.echo(f"  {n:>10} B  measured {measured[n] * 1e6:10.1f} us  predicted "
                   f"{pred * 1e6:10.1f} us  ({pred / measured[n]:.2f}x)")
    ranks_list = [2 ** k for k in range(1, 15) if 2 ** k <= max_ranks]
    size_list = _sizes(sizes)
    click.echo(f"\npredicted allreduce time, {ranks_per_node} ranks per node:")
    click.echo(f"{'ranks':>7} {'nodes':>6} " + " ".join(f"{n:>14}" for n in size_list))
    for ranks in ranks_list:
        nodes = max(1, -(-ranks // ranks_per_node))
        cells = " ".join(f"{m.allreduce(n, ranks, nodes) * 1e3:11.3f} ms" for n in size_list)
        click.echo(f"{ranks:>7} {nodes:>6} {cells}")
    if plot is not None:
        _plot_model(m, measured, ranks_list, size_list, ranks_per_node, plot)
        click.echo(f"wrote {plot}")


def _plot_model(m: object, measured: dict[int, float], ranks_list: list[int],
                size_list: list[int], ranks_per_node: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nonsense_hpc.bench.plotting import save_figure
    from nonsense_hpc.comm.model import CostModel

    assert isinstance(m, CostModel)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = sorted(measured)
    a1.plot(xs, [measured[n] * 1e6 for n in xs], "o", label="measured (Tree, 2 ranks)")
    a1.plot(xs, [m.allreduce(n, 2, 1) * 1e6 for n in xs], "-", label="model")
    a1.set(xscale="log", yscale="log", xlabel="bytes", ylabel="us",
           title="prediction vs measurement, this machine")
    for n in size_list:
        a2.plot(ranks_list, [m.allreduce(n, r, max(1, -(-r // ranks_per_node))) * 1e3
                             for r in ranks_list], marker=".", label=f"{n} B")
    a2.set(xscale="log", yscale="log", xlabel="ranks", ylabel="ms",
           title=f"predicted, {ranks_per_node} ranks/node")
    save_figure(fig, (a1, a2), path)


COMMANDS = [model, topology]
BENCH_COMMANDS = [bench_allreduce]
