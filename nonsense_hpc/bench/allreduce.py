"""``nonsense-hpc bench allreduce``: the Tree against its peers, in one run.

Run under mpirun (``mpirun -n 2 nonsense-hpc bench allreduce``). For each size, on the same
float32 buffers, it times: this Tree, native ``comm.Allreduce``, mpi4py's pickle-based
``comm.allreduce``, ``torch.distributed.all_reduce`` on gloo, and a memcpy of the same size
(the memory-bandwidth floor). Each iteration starts after a barrier; its time is the
slowest rank's; the median over iterations is reported. algbw = bytes / time and
busbw = algbw * 2(p-1)/p, as nccl-tests defines them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nonsense_hpc.bench.plotting import save_figure

__all__ = ["DEFAULT_SIZES", "PEERS", "Row", "run_benchmark", "write_plot"]

PEERS = ("tree", "native", "pickle", "gloo", "memcpy")
DEFAULT_SIZES = [8, 64, 512, 4096, 32768, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20]


@dataclass
class Row:
    """One measurement: implementation x size.

    ``seconds`` is the median over iterations of the slowest rank's time (the latency);
    ``latency_us`` is the same in microseconds; bandwidths are in GB/s.
    """

    impl: str
    nbytes: int
    ranks: int
    iters: int
    seconds: float
    algbw: float
    busbw: float
    latency_us: float = 0.0

    def __post_init__(self) -> None:
        if not self.latency_us:
            self.latency_us = self.seconds * 1e6


def _iters_for(nbytes: int, budget: float, first: float) -> int:
    if first <= 0:
        return 200
    return int(max(5, min(2000, budget / first)))


def _time(comm: Any, fn: Callable[[], object], nbytes: int, budget: float) -> tuple[int, float]:
    from mpi4py import MPI

    fn()  # warm up (allocations, connections)
    comm.Barrier()
    t0 = time.perf_counter()
    fn()
    first = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    iters = _iters_for(nbytes, budget, first)
    times = np.empty(iters)
    for i in range(iters):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
    return iters, float(statistics.median(times.tolist()))


def run_benchmark(sizes: list[int], peers: list[str], budget: float = 0.25,
                  progress: Callable[[str], None] | None = None) -> list[Row]:
    """Measure every peer at every size; collective over COMM_WORLD.

    Args:
        sizes: message sizes in bytes (rounded down to whole float32 elements, >= 1).
        peers: names from :data:`PEERS`.
        budget: seconds to spend per (peer, size), which sets the iteration count.
        progress: called with a line of text after each measurement (rank 0 prints it).

    Returns:
        The rows (identical on every rank).
    """
    import torch
    from mpi4py import MPI

    from nonsense_hpc.comm import Tree
    from nonsense_hpc.comm.gloo import destroy_gloo, init_gloo

    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; valid: {', '.join(PEERS)}")
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD.Dup()
    p = comm.Get_size()
    tree = Tree(comm) if "tree" in peers else None
    dist = init_gloo(comm) if "gloo" in peers and p > 1 else None
    rows: list[Row] = []
    factor = 2 * (p - 1) / p if p > 1 else 1.0
    for nbytes in sizes:
        n = max(1, nbytes // 4)
        real = n * 4
        t = torch.zeros(n, dtype=torch.float32)
        arr = t.numpy()
        dst = np.empty_like(arr)
        impls: dict[str, Callable[[], object]] = {}
        if tree is not None:
            impls["tree"] = partial(tree.allreduce, t)
        impls["native"] = partial(comm.Allreduce, MPI.IN_PLACE, arr, op=MPI.SUM)
        impls["pickle"] = partial(comm.allreduce, arr, op=MPI.SUM)
        if dist is not None:
            impls["gloo"] = partial(dist.all_reduce, t)
        impls["memcpy"] = partial(np.copyto, dst, arr)
        for name in peers:
            if name not in impls:
                continue
            spend = budget if not (name == "pickle" and real >= 16 << 20) else budget / 2
            iters, secs = _time(comm, impls[name], real, spend)
            algbw = real / secs / 1e9
            # memcpy is a per-rank copy, not a collective: report its plain bandwidth.
            busbw = algbw * (factor if name != "memcpy" else 1.0)
            rows.append(Row(name, real, p, iters, secs, algbw, busbw))
            if progress is not None and comm.Get_rank() == 0:
                progress(f"{name:>7} {_fmt_size(real):>8}  {secs * 1e6:11.1f} us  "
                         f"busbw {busbw:7.3f} GB/s  ({iters} iters)")
    if tree is not None:
        tree.close()
    if dist is not None:
        destroy_gloo(comm)
    comm.Free()
    return rows


def _fmt_size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def summary(rows: list[Row]) -> tuple[str, dict[str, Any]]:
    """A table of latency and busbw with the Tree's ratios, and the target verdicts."""
    by = {(r.impl, r.nbytes): r for r in rows}
    sizes = sorted({r.nbytes for r in rows})
    impls = [i for i in PEERS if any(r.impl == i for r in rows)]
    head = f"{'size':>8} " + " ".join(f"{i + ' us':>12}" for i in impls)
    head += "   tree/native busbw  tree/gloo busbw  tree/native latency"
    lines = [head]
    ratios: dict[str, Any] = {}
    for n in sizes:
        cells = [f"{by[(i, n)].seconds * 1e6:12.1f}" if (i, n) in by else f"{'-':>12}"
                 for i in impls]
        tr, na, gl = by.get(("tree", n)), by.get(("native", n)), by.get(("gloo", n))
        r_nat = tr.busbw / na.busbw if tr and na else float("nan")
        r_gloo = tr.busbw / gl.busbw if tr and gl else float("nan")
        r_lat = tr.seconds / na.seconds if tr and na else float("nan")
        ratios[str(n)] = {"tree_vs_native_busbw": r_nat, "tree_vs_gloo_busbw": r_gloo,
                          "tree_vs_native_latency": r_lat}
        lines.append(f"{_fmt_size(n):>8} " + " ".join(cells) +
                     f"   {r_nat:17.2f}x  {r_gloo:14.2f}x  {r_lat:18.2f}x")
    return "\n".join(lines), ratios


def targets(rows: list[Row]) -> list[tuple[str, bool, str]]:
    """The issue's targets at p = 2, each with a verdict and the measured figure."""
    by = {(r.impl, r.nbytes): r for r in rows}
    out = []

    def ratio(a: str, b: str, n: int, field: str = "busbw") -> float | None:
        x, y = by.get((a, n)), by.get((b, n))
        if x is None or y is None:
            return None
        return float(getattr(x, field) / getattr(y, field))

    sizes = sorted({r.nbytes for r in rows})
    for n in sizes:
        if n == 1 << 20:
            v = ratio("tree", "native", n)
            if v is not None:
                out.append(("busbw >= 1.0x native at 1 MiB", v >= 1.0, f"{v:.2f}x"))
        if n >= 16 << 20:
            v = ratio("tree", "native", n)
            if v is not None:
                out.append((f"busbw >= 1.5x native at {_fmt_size(n)}", v >= 1.5, f"{v:.2f}x"))
        if n >= 1 << 20:
            v = ratio("tree", "gloo", n)
            if v is not None:
                out.append((f"busbw >= 2x gloo at {_fmt_size(n)}", v >= 2.0, f"{v:.2f}x"))
        if n <= 4096:
            v = ratio("tree", "native", n, "seconds")
            if v is not None:
                out.append((f"latency <= 2x native at {_fmt_size(n)}", v <= 2.0, f"{v:.2f}x"))
    return out


def write_json(rows: list[Row], path: Path, command: str) -> None:
    """Save rows with the machine and command that produced them."""
    _, ratios = summary(rows)
    doc = {
        "command": command,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "ranks": rows[0].ranks if rows else 0,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "targets": [{"target": t, "met": ok, "measured": m} for t, ok, m in targets(rows)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def write_plot(rows: list[Row], path: Path) -> None:
    """Busbw and latency against size, one line per implementation (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for impl in PEERS:
        pts = sorted((r.nbytes, r.busbw, r.seconds) for r in rows if r.impl == impl)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax1.plot(xs, [p[1] for p in pts], marker="o", label=impl)
        ax2.plot(xs, [p[2] * 1e6 for p in pts], marker="o", label=impl)
    p = rows[0].ranks if rows else 0
    for ax, title, unit in ((ax1, "bus bandwidth", "GB/s"), (ax2, "latency", "us")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(unit)
        ax.set_title(f"allreduce {title}, {p} ranks (memcpy = one rank's copy)")
    save_figure(fig, (ax1, ax2), path)
