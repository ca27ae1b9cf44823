"""The repeated small allreduce on one node, compiled once into a closure.

A training loop reduces the same small tensor every step. After the first successful
one-round fold, the Tree builds a closure for that tensor with every index, slot view and
ufunc bound as a local, so a later call costs: one copy into this rank's slot, one header
word and one sequence word, a spin on the peers' words, one ufunc per extra rank. No
attribute chains, no dict lookups, no list building.

The closure speaks exactly the protocol of :meth:`NodeExchange.agree_round` (same
sequence numbers, slot parity, header words and done marks), so a rank on this path and a
rank on the general path (a first call, a new tensor, a mismatch) meet in the same round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nonsense_hpc.comm.intranode import NodeExchange
from nonsense_hpc.comm.plan import Plan
from nonsense_hpc.comm.shm import ARRIVE, DONE

__all__ = ["FastCache", "make_fast_allreduce"]

FastCall = Callable[[], Any]
# Spins on a peer's word before handing over to Arena.wait (yield, sleep, timeout).
_SPINS = 256


def make_fast_allreduce(node: NodeExchange, plan: Plan, ufunc: Any,
                        divide: Callable[[], None] | None,
                        mismatch: Callable[[Plan, int], Any]) -> FastCall:
    """Build the repeated-call closure for ``plan`` (one small, contiguous, unfused leaf).

    Args:
        node: the node exchange (one node, at least two ranks).
        plan: the plan, already folded once; ``plan.result`` is the value to return.
        ufunc: the numpy ufunc of the builtin op.
        divide: run after the fold to divide by the number of ranks ("avg"), or None.
        mismatch: called as ``mismatch(plan, k)`` when some rank passed something else in
            round ``k``; it finishes the round and raises (or returns) like the general path.

    Returns:
        A function of no arguments that runs one allreduce and returns ``plan.result``.
    """
    arena = node.arena
    ctrl = arena.ctrl  # a memoryview: Python ints, a third of numpy scalar indexing's cost
    rank, size = node.rank, node.size
    assert plan.raw is not None
    nbytes = plan.raw.nbytes
    src = memoryview(plan.raw)  # type: ignore[arg-type]
    flat = plan.buckets[0].flat
    dtype = flat.dtype
    mine = [memoryview(arena.small_slot(par, rank, nbytes))  # type: ignore[arg-type]
            for par in (0, 1)]
    views = [[arena.small_slot(par, q, nbytes).view(dtype) for q in range(size)]
             for par in (0, 1)]
    first = [(v[0], v[1]) for v in views]
    rest = [v[2:] for v in views]
    peers = [q for q in range(size) if q != rank]
    peer_arrive = [node.arrive_index[q] for q in peers]
    peer_done = [node.done_index[q] for q in peers]
    own_word = [node.word_index[par][rank] for par in (0, 1)]
    peer_words = [[node.word_index[par][q] for q in peers] for par in (0, 1)]
    my_arrive, my_done = node.arrive_index[rank], node.done_index[rank]
    word = plan.hash
    result = plan.result
    wait = arena.wait
    spin = range(_SPINS if arena.spins else 0)

    last = -1

    def fast() -> Any:
        nonlocal last
        k = node.seq + 1
        node.seq = k
        par = k & 1
        if k - 1 != last and k > 2:
            # Slots of round k-2 may still be read. After a round of this path they are
            # not: every peer arrived in round k-1, so it finished k-2 first.
            old = k - 2
            for i in peer_done:
                if ctrl[i] < old:
                    wait(DONE, old, "allreduce")
                    break
        mine[par][:] = src
        ctrl[own_word[par]] = word
        ctrl[my_arrive] = k
        for i in peer_arrive:
            if ctrl[i] < k:
                for _ in spin:
                    if ctrl[i] >= k:
                        break
                else:
                    wait(ARRIVE, k, "allreduce")
        for i in peer_words[par]:
            if ctrl[i] != word:
                return mismatch(plan, k)
        a, b = first[par]
        ufunc(a, b, out=flat)
        for v in rest[par]:
            ufunc(flat, v, out=flat)
        ctrl[my_done] = k
        last = k
        if divide is not None:
            divide()
        return result

    return fast


class FastCache:
    """Closures of recently reduced small tensors, keyed by object identity.

    An entry is used only for the same object, the same op name and (for tensors) the
    same data pointer; it holds a reference to the object, so the id cannot be recycled.
    """

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self.entries: dict[int, tuple[Any, Any, int, FastCall]] = {}

    def put(self, value: Any, op: Any, ptr: int, call: FastCall) -> None:
        """Remember ``call`` for ``value`` reduced with ``op``."""
        entries = self.entries
        if len(entries) >= self.capacity:
            entries.pop(next(iter(entries)))
        entries[id(value)] = (value, op, ptr, call)

    def clear(self) -> None:
        """Forget every closure (tracing turned on, Tree closed)."""
        self.entries.clear()
