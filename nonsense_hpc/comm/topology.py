"""Which ranks share a node, who leads each node, and the tree the leaders form.

Ranks that share memory are grouped with ``Split_type(COMM_TYPE_SHARED)``. A setting
(``ranks_per_node``, env ``NONSENSE_RANKS_PER_NODE``) splits one machine into several
pretend nodes, so the inter-node path runs in tests on one machine too.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from mpi4py import MPI

from nonsense_hpc.errors import ConfigError

__all__ = ["Topology"]


@dataclass
class Topology:
    """The node layout of a communicator, as seen by one rank.

    Attributes:
        comm: the communicator the layout describes.
        node: communicator of the ranks on this rank's node (shared memory).
        leaders: communicator of the node leaders (local rank 0 of each node), or
            ``MPI.COMM_NULL`` on other ranks.
        rank: this rank in ``comm``.
        size: ranks in ``comm``.
        local_rank: this rank in ``node``.
        local_size: ranks on this node.
        node_index: index of this rank's node (0 .. nodes-1, ordered by lowest rank).
        nodes: number of nodes.
        node_ranks: for each node, the ranks of ``comm`` on it.
        hostnames: for each node, its host name (pretend nodes share one).
        pretend: whether the nodes are pretend splits of real nodes.
    """

    comm: Any
    node: Any
    leaders: Any
    rank: int
    size: int
    local_rank: int
    local_size: int
    node_index: int
    nodes: int
    node_ranks: list[list[int]] = field(default_factory=list)
    hostnames: list[str] = field(default_factory=list)
    pretend: bool = False

    @classmethod
    def build(cls, comm: Any, ranks_per_node: int = 0) -> Topology:
        """Discover the layout of ``comm`` (collective: every rank must call it).

        Args:
            comm: an intra-communicator.
            ranks_per_node: if > 0, split each real node into pretend nodes of this many
                ranks (the last one may be smaller).

        Raises:
            ConfigError: ``ranks_per_node`` < 0.
        """
        if ranks_per_node < 0:
            raise ConfigError(f"ranks_per_node must be >= 0, got {ranks_per_node}")
        rank, size = comm.Get_rank(), comm.Get_size()
        real = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        if ranks_per_node > 0:
            real_rank = real.Get_rank()
            # Color: the lowest world rank of the real node, then the pretend block.
            lowest = real.allreduce(rank, op=MPI.MIN)
            color = lowest * size + real_rank // ranks_per_node
            node = real.Split(color % (2**31 - 1), key=rank)
            real.Free()
        else:
            node = real
        local_rank, local_size = node.Get_rank(), node.Get_size()
        first = node.allreduce(rank, op=MPI.MIN)
        leaders = comm.Split(0 if local_rank == 0 else MPI.UNDEFINED, key=rank)
        host = socket.gethostname()
        table = comm.allgather((first, rank, host))
        firsts = sorted({t[0] for t in table})
        node_ranks = [[r for f, r, _ in table if f == lead] for lead in firsts]
        hostnames = [next(h for f, _, h in table if f == lead) for lead in firsts]
        return cls(comm=comm, node=node, leaders=leaders, rank=rank, size=size,
                   local_rank=local_rank, local_size=local_size,
                   node_index=firsts.index(first), nodes=len(firsts), node_ranks=node_ranks,
                   hostnames=hostnames, pretend=ranks_per_node > 0)

    @property
    def is_leader(self) -> bool:
        """Whether this rank leads its node."""
        return self.local_rank == 0

    def leader_tree(self) -> list[tuple[int, int]]:
        """Edges (parent node, child node) of the binomial tree over node leaders."""
        edges = []
        for child in range(1, self.nodes):
            parent = child & (child - 1)  # clear the lowest set bit: binomial tree
            edges.append((parent, child))
        return edges

    def describe(self) -> str:
        """A text picture of the layout and the tree (``nonsense-hpc topology``)."""
        node_word = "node" if self.nodes == 1 else "nodes"
        kind = f"pretend {node_word} (NONSENSE_RANKS_PER_NODE)" if self.pretend else node_word
        rank_word = "rank" if self.size == 1 else "ranks"
        lines = [f"{self.size} {rank_word} on {self.nodes} {kind}"]
        for i, ranks in enumerate(self.node_ranks):
            lines.append(f"  node {i} ({self.hostnames[i]}): leader rank {ranks[0]}, "
                         f"ranks {_ranges(ranks)}  [shared memory inside the node]")
        if self.nodes > 1:
            lines.append("leader tree (binomial; small messages reduce up and broadcast "
                         "down it, large ones use ring reduce-scatter + allgather):")
            children: dict[int, list[int]] = {}
            for parent, child in self.leader_tree():
                children.setdefault(parent, []).append(child)

            def draw(n: int, indent: str) -> None:
                for c in children.get(n, []):
                    lines.append(f"{indent}`- node {c} (rank {self.node_ranks[c][0]})")
                    draw(c, indent + "   ")

            lines.append(f"  node 0 (rank {self.node_ranks[0][0]})")
            draw(0, "  ")
        return "\n".join(lines)

    def free(self) -> None:
        """Free the node and leader communicators."""
        for c in (self.node, self.leaders):
            if c != MPI.COMM_NULL:
                c.Free()


def _ranges(ranks: list[int]) -> str:
    out, start, prev = [], ranks[0], ranks[0]
    tail: list[int | None] = [*ranks[1:], None]
    for r in tail:
        if r is not None and r == prev + 1:
            prev = r
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if r is not None:
            start = prev = r
    return ",".join(out)
