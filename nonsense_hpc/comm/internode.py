"""Allreduce among node leaders over MPI point-to-point messages.

Small messages reduce up a binomial tree to leader 0 and come back down it; large ones use
a ring reduce-scatter followed by a ring allgather, each block split into chunks that are
reduced as they arrive (pipelined). Every wait has a timeout, so a dead peer raises
CollectiveTimeoutError instead of hanging. Any number of leaders works.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from mpi4py import MPI

from nonsense_hpc.comm.ops import ReduceOp
from nonsense_hpc.comm.recorder import Recorder
from nonsense_hpc.errors import CollectiveTimeoutError

__all__ = ["TAG", "block_bounds", "leaders_allreduce", "ring_allreduce", "tree_allreduce",
           "wait_requests"]

Array = npt.NDArray[Any]
TAG = 0x4E53  # private tag; the Tree's communicator is a private duplicate anyway


def wait_requests(requests: list[Any], timeout: float, what: str) -> None:
    """Wait for MPI requests, raising CollectiveTimeoutError after ``timeout`` seconds."""
    if not requests:
        return
    if MPI.Request.Testall(requests):
        return
    deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
    spins = 0
    while not MPI.Request.Testall(requests):
        spins += 1
        if spins > 256:
            if time.monotonic() > deadline:
                raise CollectiveTimeoutError(
                    f"{what}: no answer from a peer within {timeout:g} s (dead or stuck?); "
                    "set NONSENSE_TIMEOUT to change the limit")
            time.sleep(0.00005 if spins < 20000 else 0.001)


def block_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``n`` elements into ``parts`` contiguous blocks whose sizes differ by <= 1."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def tree_allreduce(comm: Any, flat: Array, op: ReduceOp, torch_dtype: Any, timeout: float,
                   recorder: Recorder | None = None, world: list[int] | None = None) -> None:
    """Binomial-tree reduce to rank 0 of ``comm``, then broadcast back down, in place."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if size == 1:
        return
    tmp = np.empty_like(flat)
    # Reduce: children are rank + 2^j for every 2^j below rank's lowest set bit.
    mask = 1
    while mask < size:
        if rank & mask:
            parent = rank - mask
            t0 = time.perf_counter()
            wait_requests([comm.Isend(flat, dest=parent, tag=TAG)], timeout, "allreduce")
            if recorder is not None:
                recorder.record("allreduce", "send", _w(world, parent), flat.nbytes, t0,
                                time.perf_counter())
            break
        child = rank + mask
        if child < size:
            t0 = time.perf_counter()
            wait_requests([comm.Irecv(tmp, source=child, tag=TAG)], timeout, "allreduce")
            t1 = time.perf_counter()
            op.combine(flat, tmp, torch_dtype)
            if recorder is not None:
                recorder.record("allreduce", "recv", _w(world, child), flat.nbytes, t0, t1)
                recorder.record("allreduce", "reduce", _w(world, child), flat.nbytes, t1,
                                time.perf_counter())
        mask <<= 1
    # Broadcast down the same tree.
    mask = 1
    while mask < size and not rank & mask:
        mask <<= 1
    if rank != 0:
        t0 = time.perf_counter()
        wait_requests([comm.Irecv(flat, source=rank - mask, tag=TAG + 1)], timeout,
                      "allreduce")
        if recorder is not None:
            recorder.record("allreduce", "recv", _w(world, rank - mask), flat.nbytes, t0,
                            time.perf_counter())
    mask >>= 1
    while mask > 0:
        child = rank + mask
        if child < size:
            t0 = time.perf_counter()
            wait_requests([comm.Isend(flat, dest=child, tag=TAG + 1)], timeout, "allreduce")
            if recorder is not None:
                recorder.record("allreduce", "send", _w(world, child), flat.nbytes, t0,
                                time.perf_counter())
        mask >>= 1


def ring_allreduce(comm: Any, flat: Array, op: ReduceOp, torch_dtype: Any, timeout: float,
                   chunk_bytes: int, recorder: Recorder | None = None,
                   world: list[int] | None = None) -> None:
    """Ring reduce-scatter then ring allgather, chunked and pipelined, in place."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if size == 1:
        return
    blocks = block_bounds(flat.size, size)
    right, left = (rank + 1) % size, (rank - 1) % size
    chunk = max(1, chunk_bytes // max(flat.itemsize, 1))
    tmp = np.empty(max(b - a for a, b in blocks), dtype=flat.dtype)

    def pieces(lo: int, hi: int) -> list[tuple[int, int]]:
        return [(s, min(hi, s + chunk)) for s in range(lo, hi, chunk)] or [(lo, lo)]

    # Reduce-scatter: after size-1 steps, rank owns the full reduction of block rank+1.
    for step in range(size - 1):
        send_lo, send_hi = blocks[(rank - step) % size]
        recv_lo, recv_hi = blocks[(rank - step - 1) % size]
        t0 = time.perf_counter()
        recvs = [comm.Irecv(tmp[s - recv_lo:e - recv_lo], source=left, tag=TAG + 2)
                 for i, (s, e) in enumerate(pieces(recv_lo, recv_hi))]
        sends = [comm.Isend(flat[s:e], dest=right, tag=TAG + 2)
                 for i, (s, e) in enumerate(pieces(send_lo, send_hi))]
        spans = pieces(recv_lo, recv_hi)
        pending = set(range(len(recvs)))
        deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
        while pending:
            done = MPI.Request.Testsome(recvs) or []
            for i in done:
                if i in pending:
                    pending.discard(i)
                    s, e = spans[i]
                    op.combine(flat[s:e], tmp[s - recv_lo:e - recv_lo], torch_dtype)
            if pending and not done:
                if time.monotonic() > deadline:
                    raise CollectiveTimeoutError(
                        f"allreduce: no data from rank {_w(world, left)} within {timeout:g} s"
                        " (dead or stuck?)")
                time.sleep(0)
        wait_requests(sends, timeout, "allreduce")
        if recorder is not None:
            t1 = time.perf_counter()
            recorder.record("allreduce", "send", _w(world, right), (send_hi - send_lo) *
                            flat.itemsize, t0, t1)
            recorder.record("allreduce", "reduce", _w(world, left), (recv_hi - recv_lo) *
                            flat.itemsize, t0, t1)
    # Allgather: pass the finished blocks around the ring.
    for step in range(size - 1):
        send_lo, send_hi = blocks[(rank + 1 - step) % size]
        recv_lo, recv_hi = blocks[(rank - step) % size]
        t0 = time.perf_counter()
        reqs = [comm.Irecv(flat[s:e], source=left, tag=TAG + 1)
                for s, e in pieces(recv_lo, recv_hi)]
        reqs += [comm.Isend(flat[s:e], dest=right, tag=TAG + 1)
                 for s, e in pieces(send_lo, send_hi)]
        wait_requests(reqs, timeout, "allreduce")
        if recorder is not None:
            recorder.record("allreduce", "recv", _w(world, left), (recv_hi - recv_lo) *
                            flat.itemsize, t0, time.perf_counter())


def leaders_allreduce(comm: Any, flat: Array, op: ReduceOp, torch_dtype: Any, timeout: float,
                      small_bytes: int, chunk_bytes: int, recorder: Recorder | None = None,
                      world: list[int] | None = None) -> None:
    """Pick the tree (small) or the ring (large) by message size, and run it."""
    if flat.nbytes <= small_bytes or flat.size < comm.Get_size():
        tree_allreduce(comm, flat, op, torch_dtype, timeout, recorder, world)
    else:
        ring_allreduce(comm, flat, op, torch_dtype, timeout, chunk_bytes, recorder, world)


def _w(world: list[int] | None, r: int) -> int:
    return world[r] if world is not None else r
