"""A torch.distributed gloo process group over the ranks of an MPI communicator.

The comparison peer of the Tree (``bench allreduce``, ``train --allreduce ddp``): rank 0
picks a free port and tells the others over MPI, so no MASTER_ADDR/MASTER_PORT is
needed, and teardown is ordered so that it cannot deadlock.
"""

from __future__ import annotations

import datetime
import socket
from typing import Any

__all__ = ["destroy_gloo", "init_gloo"]


def init_gloo(comm: Any, timeout: float | None = None) -> Any:
    """Join every rank of ``comm`` in torch's default gloo process group; collective.

    Args:
        comm: an mpi4py communicator; its ranks become the group's ranks.
        timeout: seconds gloo waits for a peer (torch's default when None).

    Returns:
        The ``torch.distributed`` module, ready for ``all_reduce`` and DDP.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return dist
    addr = None
    if comm.Get_rank() == 0:
        alone = comm.Get_size() == 1
        with socket.socket() as s:
            s.bind(("127.0.0.1" if alone else "", 0))
            port = s.getsockname()[1]
        addr = f"tcp://{'127.0.0.1' if alone else socket.gethostname()}:{port}"
    addr = comm.bcast(addr, root=0)
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout)
    dist.init_process_group("gloo", init_method=addr, rank=comm.Get_rank(),
                            world_size=comm.Get_size(), **kwargs)
    return dist


def destroy_gloo(comm: Any) -> None:
    """Tear the group down one rank at a time, rank 0 (the store) last; collective.

    Destroying it on every rank at once can deadlock inside gloo: a rank's connection
    destructor waits for its event loop while that loop handles the peer's close, and it
    does so holding the GIL, so nothing in Python can even time it out (seen once in CI
    at np=2). In turn, with MPI barriers between, no rank tears down while a peer closes
    its end; the p barriers cost milliseconds, once per run.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    comm.Barrier()
    for turn in reversed(range(comm.Get_size())):
        if comm.Get_rank() == turn:
            dist.destroy_process_group()
        comm.Barrier()
