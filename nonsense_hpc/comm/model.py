"""An alpha-beta-gamma cost model of the Tree's allreduce, calibrated from measurements.

Terms (seconds):

* ``alpha_sync``: one synchronisation round through a node's shared window;
* ``beta_mem``: per byte moved inside a node (a read of a peer's buffer, a copy);
* ``gamma``: per byte reduced;
* ``alpha_net`` and ``beta_net``: latency per message and time per byte between nodes.

The model follows the algorithms the Tree runs: one round for small messages on a node,
an agreement round then staged pieces with reduce-scatter plus allgather (three rounds
each) for large ones;
across nodes, the leaders'
binomial tree (small) or pipelined ring (large); then a node-wide read of the leader's
result. :meth:`CostModel.calibrate` fits the node terms from ``nonsense-hpc bench
allreduce`` output (the Tree's times and the memcpy column); the network terms default to
a typical HDR InfiniBand fabric and can be set from a cluster's own measurements.

Example:
    >>> m = CostModel(alpha_sync=2e-6, beta_mem=1e-10, gamma=1e-10, alpha_net=2e-6,
    ...               beta_net=8e-11)
    >>> round(m.allreduce(1 << 20, ranks=2, nodes=1) * 1e6)
    165
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CostModel", "load_rows"]


@dataclass(frozen=True)
class CostModel:
    """Predicts allreduce time from message size, rank count and node count."""

    alpha_sync: float
    beta_mem: float
    gamma: float
    alpha_net: float = 2.0e-6
    beta_net: float = 1.0 / 12.5e9
    small_bytes: int = 256 * 1024
    piece_bytes: int = 2 * 1024 * 1024

    def intra(self, nbytes: int, ranks: int) -> float:
        """Allreduce among ``ranks`` ranks of one node."""
        if ranks <= 1:
            return 0.0
        n, p = float(nbytes), float(ranks)
        if nbytes <= self.small_bytes:
            # write own slot, fold every slot
            return self.alpha_sync + p * n * self.beta_mem + (p - 1) * n * self.gamma
        # one agreement round, then staged pieces of three rounds each: every rank
        # publishes the (p-1)/p of its data the peers fold, folds its own block (the
        # peers' reads are in gamma) and copies the (p-1)/p it did not fold back out
        pieces = math.ceil(n / self.piece_bytes)
        f = (p - 1) / p
        return (1 + 3 * pieces) * self.alpha_sync + 2 * f * n * self.beta_mem \
            + f * n * self.gamma

    def inter(self, nbytes: int, nodes: int) -> float:
        """Allreduce among ``nodes`` node leaders."""
        if nodes <= 1:
            return 0.0
        n, m = float(nbytes), float(nodes)
        if nbytes <= self.small_bytes:
            depth = math.ceil(math.log2(m))
            return 2 * depth * (self.alpha_net + n * self.beta_net) + depth * n * self.gamma
        f = (m - 1) / m
        return 2 * (m - 1) * self.alpha_net + 2 * f * n * self.beta_net + f * n * self.gamma

    def allreduce(self, nbytes: int, ranks: int, nodes: int = 1) -> float:
        """Predicted seconds for one allreduce of ``nbytes`` over ``ranks`` on ``nodes``."""
        if ranks < 1 or nodes < 1 or nodes > ranks:
            raise ValueError(f"need 1 <= nodes <= ranks, got ranks={ranks} nodes={nodes}")
        per_node = math.ceil(ranks / nodes)
        if nodes == 1:
            return self.intra(nbytes, per_node)
        n, p = float(nbytes), float(per_node)
        f = (p - 1) / p
        if per_node > 1:
            node_reduce = 3 * self.alpha_sync + 2 * f * n * self.beta_mem + f * n * self.gamma
            node_bcast = n * self.beta_mem + self.alpha_sync
        else:
            node_reduce = node_bcast = 0.0
        return node_reduce + self.inter(nbytes, nodes) + node_bcast

    def busbw(self, nbytes: int, ranks: int, nodes: int = 1) -> float:
        """Predicted bus bandwidth (GB/s), as nccl-tests defines it."""
        t = self.allreduce(nbytes, ranks, nodes)
        return nbytes / t / 1e9 * (2 * (ranks - 1) / ranks) if t > 0 else float("inf")

    @classmethod
    def calibrate(cls, rows: list[dict[str, Any]], alpha_net: float = 2.0e-6,
                  beta_net: float = 1.0 / 12.5e9) -> CostModel:
        """Fit the node terms from one benchmark run at 2 ranks on one node.

        Args:
            rows: ``rows`` of a ``nonsense-hpc bench allreduce`` JSON file.
            alpha_net: inter-node latency per message (seconds).
            beta_net: inter-node seconds per byte.

        Raises:
            ValueError: the rows lack the Tree or memcpy measurements needed.
        """
        tree = sorted((r["nbytes"], r["seconds"]) for r in rows if r["impl"] == "tree")
        mem = sorted((r["nbytes"], r["seconds"]) for r in rows if r["impl"] == "memcpy")
        ranks = {r["ranks"] for r in rows}
        if not tree or not mem or ranks != {2}:
            raise ValueError("calibration needs tree and memcpy rows from a 2-rank run")
        big_mem = [(n, t) for n, t in mem if n >= 1 << 20] or mem[-1:]
        beta_mem = sum(t / n for n, t in big_mem) / len(big_mem)
        alpha_sync = max(1e-7, tree[0][1])
        # gamma: the value whose predictions are closest to every measured size in ratio
        # (least squares of log(predicted / measured)), so in-cache and out-of-cache
        # sizes weigh alike; a grid over 1 TB/s .. 10 MB/s is plenty for three digits
        def misfit(g: float) -> float:
            m = cls(alpha_sync=alpha_sync, beta_mem=beta_mem, gamma=g)
            return sum(math.log(m.intra(n, 2) / t) ** 2 for n, t in tree if t > 0)

        grid = [10.0 ** (-12 + 5 * i / 2000) for i in range(2001)]
        gamma = min(grid, key=misfit)
        return cls(alpha_sync=alpha_sync, beta_mem=beta_mem, gamma=gamma, alpha_net=alpha_net,
                   beta_net=beta_net)

    def to_dict(self) -> dict[str, float]:
        """The parameters, for JSON."""
        return asdict(self)


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """The ``rows`` of a benchmark JSON file."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = doc["rows"]
    return rows
