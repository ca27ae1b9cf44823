"""Topology-aware collectives: the Tree AllReduce and its parts.

``from nonsense_hpc.comm import Tree`` is the entry point; see :mod:`.tree`.
"""

from nonsense_hpc.comm.ops import BUILTIN_OPS
from nonsense_hpc.comm.recorder import Event, Recorder
from nonsense_hpc.comm.topology import Topology
from nonsense_hpc.comm.tree import AllreduceResult, Tree

__all__ = ["BUILTIN_OPS", "AllreduceResult", "Event", "Recorder", "Topology", "Tree"]
