"""nonsense_hpc: an HPC job toolkit for Slurm clusters.

The public API is re-exported here lazily, so ``import nonsense_hpc`` stays cheap (no MPI
initialisation, no torch import) until a name is used::

    from nonsense_hpc import Tree
    tree = Tree()                      # duplicates MPI.COMM_WORLD
    tree.allreduce(grads)              # in place, sum over ranks

Subpackages: ``comm`` (Tree AllReduce), ``devices`` (ZeroMQ Forwarder, Streamer, broker),
``supervise`` (supervision trees), ``cluster`` (Slurm), ``containers``, ``ipc`` and
``parallel`` (seed parity), ``train`` and ``trace``.
"""

from __future__ import annotations

import importlib
from typing import Any

from nonsense_hpc._version import __version__
from nonsense_hpc.errors import (
    ClusterError,
    CollectiveError,
    CollectiveMismatchError,
    CollectiveTimeoutError,
    ConfigError,
    ContainerError,
    CudaIpcError,
    DeviceError,
    NonsenseError,
    RemoteError,
    SupervisorError,
    WireError,
)
from nonsense_hpc.launch import quiet_embedded_mpi

__all__ = [
    "ChildSpec",
    "ClusterError",
    "CollectiveError",
    "CollectiveMismatchError",
    "CollectiveTimeoutError",
    "ConfigError",
    "ContainerError",
    "CudaIpcError",
    "DeviceError",
    "NonsenseError",
    "RemoteError",
    "Supervisor",
    "SupervisorError",
    "Topology",
    "Tree",
    "WireError",
    "__version__",
]

# The embedded Open MPI wheel prints a UCX warning for every MPI window unless told not
# to; do it here, before anything starts MPI (see launch.quiet_embedded_mpi).
quiet_embedded_mpi()

_LAZY = {
    "Tree": "nonsense_hpc.comm.tree",
    "Topology": "nonsense_hpc.comm.topology",
    "Supervisor": "nonsense_hpc.supervise.supervisor",
    "ChildSpec": "nonsense_hpc.supervise.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nonsense_hpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
