"""The Tree's rooted and gathering collectives: broadcast, gather, allgather, scatter.

Each takes the :class:`~nonsense_hpc.comm.tree.Tree` whose private communicator and
timeout it uses; the Tree's methods of the same names call these. Values are tensors,
arrays or tables of them, packed into one byte buffer per rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nonsense_hpc.comm.buffers import build_zeros, flatten, spec_of, spec_text
from nonsense_hpc.comm.collectives import allgather_obj, bcast_obj
from nonsense_hpc.comm.internode import wait_requests
from nonsense_hpc.comm.values import pack, spec_nbytes, unpack
from nonsense_hpc.errors import CollectiveMismatchError

if TYPE_CHECKING:
    from nonsense_hpc.comm.tree import Tree

__all__ = ["allgather", "broadcast", "gather", "scatter"]


def broadcast(tree: Tree, value: Any = None, root: int = 0) -> Any:
    """Send ``root``'s value to every rank.

    Ranks that pass a value of the same structure receive in place; ranks that pass
    None get a new value. Returns the value on every rank.
    """
    tree._check_open()
    tree._check_root(root)
    spec = spec_of(value) if tree.rank == root else None
    spec = bcast_obj(tree.comm, spec, root, tree.timeout, "broadcast")
    flag, text = 1, ""
    if tree.rank != root and value is not None:
        try:
            mine = spec_of(value)
            text = spec_text(mine)
            if mine != spec:
                flag = 2
        except TypeError as exc:
            flag, text = -1, str(exc)
    _, n_err, _ = tree._control(0, -1 if flag < 0 else 1, "broadcast")
    bad = int(allgather_obj(tree.comm, flag == 2, tree.timeout, "broadcast").count(True)) \
        if n_err == 0 else 0
    if n_err or bad:
        items = allgather_obj(tree.comm, (flag, text or spec_text(spec)), tree.timeout,
                              "broadcast")
        parts = [f"rank {r}: {t}" for r, (f, t) in enumerate(items) if f != 1]
        raise CollectiveMismatchError(f"broadcast from rank {root} of {spec_text(spec)}: "
                                      f"receivers passed other values ({'; '.join(parts)})")
    if value is None:
        value = build_zeros(spec)
    leaves = flatten(value)
    buf = pack(leaves)
    wait_requests([tree.comm.Ibcast(buf, root=root)], tree.timeout, "broadcast")
    if tree.rank != root:
        unpack(buf, leaves)
    return value


def gather(tree: Tree, value: Any, root: int = 0) -> list[Any] | None:
    """Every rank's value, as a list in rank order on ``root`` (None elsewhere)."""
    tree._check_open()
    tree._check_root(root)
    items = tree.allgather(value) if tree.size > 1 else [value]
    return items if tree.rank == root else None


def allgather(tree: Tree, value: Any) -> list[Any]:
    """Every rank's value, as a list in rank order, on every rank.

    Values may differ in shape between ranks (not in kind: each must be a tensor,
    array or table of them).
    """
    tree._check_open()
    spec = spec_of(value)
    leaves = flatten(value)
    specs = allgather_obj(tree.comm, spec, tree.timeout, "allgather")
    payload = pack(leaves)
    sizes = [spec_nbytes(sp) for sp in specs]
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
    out = np.empty(int(sum(sizes)), dtype=np.uint8)
    from mpi4py import MPI

    wait_requests([tree.comm.Iallgatherv(payload, [out, sizes, displs, MPI.BYTE])],
                  tree.timeout, "allgather")
    result = []
    for q, sp in enumerate(specs):
        if q == tree.rank:
            result.append(value)
            continue
        item = build_zeros(sp)
        unpack(out[displs[q]:displs[q] + sizes[q]], flatten(item))
        result.append(item)
    return result


def scatter(tree: Tree, values: list[Any] | None = None, root: int = 0) -> Any:
    """Give rank ``i`` the ``values[i]`` of ``root`` (a list of ``size`` values)."""
    tree._check_open()
    tree._check_root(root)
    specs: Any = None
    if tree.rank == root:
        if not isinstance(values, list | tuple) or len(values) != tree.size:
            got = len(values) if isinstance(values, list | tuple) else type(values).__name__
            specs = ("error", f"scatter: root needs a list of {tree.size} values, got {got}")
        else:
            specs = [spec_of(v) for v in values]
    specs = bcast_obj(tree.comm, specs, root, tree.timeout, "scatter")
    if isinstance(specs, tuple) and specs[0] == "error":
        raise ValueError(specs[1])
    assert isinstance(specs, list)
    if tree.rank == root:
        assert values is not None
        reqs = [tree.comm.Isend(pack(flatten(v)), dest=q, tag=77)
                for q, v in enumerate(values) if q != root]
        wait_requests(reqs, tree.timeout, "scatter")
        return values[root]
    item = build_zeros(specs[tree.rank])
    leaves = flatten(item)
    buf = np.empty(sum(leaf.nbytes for leaf in leaves), dtype=np.uint8)
    wait_requests([tree.comm.Irecv(buf, source=root, tag=77)], tree.timeout, "scatter")
    unpack(buf, leaves)
    return item
