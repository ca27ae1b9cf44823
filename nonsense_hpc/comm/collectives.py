"""Small helpers: object exchange over MPI buffers with timeouts, and mismatch reports.

Object exchange (specs, error texts) uses pickle between ranks of one MPI job only, never
on a network socket. Every wait has the Tree's timeout.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from mpi4py import MPI

from nonsense_hpc.comm.internode import wait_requests

__all__ = ["allgather_obj", "bcast_obj", "describe_disagreement", "gather_obj"]


def bcast_obj(comm: Any, obj: Any, root: int, timeout: float, what: str) -> Any:
    """Broadcast a small picklable object from ``root``."""
    rank = comm.Get_rank()
    data = pickle.dumps(obj) if rank == root else b""
    size = np.array([len(data)], dtype=np.int64)
    wait_requests([comm.Ibcast(size, root=root)], timeout, what)
    buf = np.frombuffer(data, dtype=np.uint8).copy() if rank == root else \
        np.empty(int(size[0]), dtype=np.uint8)
    wait_requests([comm.Ibcast(buf, root=root)], timeout, what)
    return obj if rank == root else pickle.loads(buf.tobytes())


def allgather_obj(comm: Any, obj: Any, timeout: float, what: str) -> list[Any]:
    """Every rank's small picklable object, in rank order."""
    data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8).copy()
    sizes = np.empty(comm.Get_size(), dtype=np.int64)
    wait_requests([comm.Iallgather(np.array([data.size], dtype=np.int64), sizes)], timeout,
                  what)
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    wait_requests([comm.Iallgatherv(data, [out, sizes.tolist(), displs.tolist(), MPI.BYTE])],
                  timeout, what)
    return [pickle.loads(out[d:d + s].tobytes())
            for d, s in zip(displs.tolist(), sizes.tolist(), strict=True)]


def gather_obj(comm: Any, obj: Any, root: int, timeout: float, what: str) -> list[Any] | None:
    """Every rank's object on ``root`` (None elsewhere)."""
    items = allgather_obj(comm, obj, timeout, what)
    return items if comm.Get_rank() == root else None


def describe_disagreement(what: str, items: list[tuple[int, str]]) -> str:
    """Group ranks by what they passed: ``ranks [0, 2]: X; ranks [1]: Y``."""
    groups: dict[str, list[int]] = {}
    for rank, text in items:
        groups.setdefault(text, []).append(rank)
    parts = [f"rank{'s' if len(r) > 1 else ''} {r}: {t}" for t, r in groups.items()]
    return f"{what}: ranks disagree on the value they pass; " + "; ".join(parts)
