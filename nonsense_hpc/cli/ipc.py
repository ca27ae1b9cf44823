"""``nonsense-hpc bench parallel | ipc | map``: the seed-parity benchmarks.

The commands live in :mod:`nonsense_hpc.bench.ipc` (torch and the workers are imported
only when a benchmark runs).
"""

from __future__ import annotations

import click

from nonsense_hpc.bench.ipc import bench_ipc, bench_map, bench_parallel

__all__ = ["BENCH_COMMANDS"]

BENCH_COMMANDS: list[click.Command] = [bench_parallel, bench_ipc, bench_map]
