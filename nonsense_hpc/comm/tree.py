"""Tree: topology-aware collectives over torch tensors, numpy arrays and tables of them.

Example (run with ``mpirun -n 4 python script.py``)::

    import torch
    from nonsense_hpc import Tree

    tree = Tree()                                  # private duplicate of COMM_WORLD
    grads = {"w": torch.ones(1000), "b": torch.ones(10)}
    tree.allreduce(grads)                          # in place: every rank has the sum
    tree.allreduce(grads, lambda a, b: a.add_(b))  # any callable, applied in rank order
    n = tree.allreduce(None)                       # uneven steps: this rank has no data

Inside a node data moves through shared memory (direct reads of a peer's buffer where the
kernel allows it, a shared window otherwise); node leaders combine across nodes with a
binomial tree (small messages) or a pipelined ring (large ones).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc.comm import rooted
from nonsense_hpc.comm.buffers import (
    Leaf,
    build_zeros,
    flatten,
    fuse,
    spec_hash,
    spec_of,
    spec_text,
)
from nonsense_hpc.comm.collectives import allgather_obj, describe_disagreement
from nonsense_hpc.comm.cuda import direct_allreduce, direct_eligible, use_direct
from nonsense_hpc.comm.fastpath import FastCache, make_fast_allreduce
from nonsense_hpc.comm.internode import leaders_allreduce, wait_requests
from nonsense_hpc.comm.intranode import NodeExchange
from nonsense_hpc.comm.ops import BUILTIN_OPS, ReduceOp, resolve_op
from nonsense_hpc.comm.plan import (
    FLAG_DATA,
    FLAG_ERROR,
    FLAG_NONE,
    Plan,
    PlanCache,
    make_plan,
)
from nonsense_hpc.comm.recorder import Recorder
from nonsense_hpc.comm.shm import Arena, PeerReader
from nonsense_hpc.comm.topology import Topology
from nonsense_hpc.comm.values import (
    as_user,
    clone,
    copy_into,
    divide,
    first_leaf,
    identity_bits,
    user_bytes,
)
from nonsense_hpc.config import Settings, get_settings
from nonsense_hpc.errors import CollectiveError, CollectiveMismatchError, ConfigError

__all__ = ["AllreduceResult", "Tree"]

Array = npt.NDArray[Any]
Op = str | Callable[[Any, Any], Any]
_MAX_HASH = 1 << 62
_BUILTIN = {name: ReduceOp(name) for name in BUILTIN_OPS}
_BUILTIN["mean"] = _BUILTIN["avg"]
_UFUNC = {"sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum,
          "prod": np.multiply}


class AllreduceResult(int):
    """How many ranks contributed real data, with the reduced value attached.

    It is an ``int`` (``tree.allreduce(x) == tree.size`` when every rank had data), and
    :attr:`value` is the reduced value (the argument itself when reduced in place, ``out``
    when given, or a new value on a rank that passed None).
    """

    value: Any

    def __new__(cls, count: int, value: Any) -> AllreduceResult:
        """Build the result."""
        obj = super().__new__(cls, count)
        obj.value = value
        return obj


class Tree:
    """Collectives on a private duplicate of an MPI communicator.

    Args:
        comm: the communicator (default ``MPI.COMM_WORLD``); it is duplicated, so the
            Tree's messages never mix with the caller's.
        timeout: seconds to wait for a peer before raising CollectiveTimeoutError
            (default ``NONSENSE_TIMEOUT`` or 120; 0 waits for ever).
        ranks_per_node: split each machine into pretend nodes of this many ranks, to run
            the inter-node path on one machine (default ``NONSENSE_RANKS_PER_NODE``).
        trace: record every send, receive and reduction step in :attr:`recorder`.
        settings: a full :class:`~nonsense_hpc.config.Settings` (default: environment).
        transport: ``"auto"``, ``"cma"`` or ``"shm"`` (see Settings).
        cuda: ``"auto"``, ``"direct"`` or ``"staged"``: how CUDA tensors are reduced (see
            Settings and :mod:`nonsense_hpc.comm.cuda`).

    Raises:
        ConfigError: a setting is invalid, ``transport="cma"`` was asked for and the
            kernel does not allow direct reads between the ranks, or ``cuda="direct"`` was
            asked for and the MPI library is not CUDA-aware.
    """

    def __init__(self, comm: Any = None, *, timeout: float | None = None,
                 ranks_per_node: int | None = None, trace: bool | None = None,
                 settings: Settings | None = None, transport: str | None = None,
                 cuda: str | None = None) -> None:
        from mpi4py import MPI

        base = MPI.COMM_WORLD if comm is None else comm
        s = settings or get_settings()
        changes: dict[str, Any] = {}
        if timeout is not None:
            changes["timeout"] = float(timeout)
        if ranks_per_node is not None:
            changes["ranks_per_node"] = int(ranks_per_node)
        if trace is not None:
            changes["trace"] = bool(trace)
        if transport is not None:
            changes["transport"] = transport
        if cuda is not None:
            changes["cuda"] = cuda
        self.settings = s.replace(**changes) if changes else s
        # Decided before any resource is taken: "direct" raises when the MPI cannot.
        direct = use_direct("direct") if self.settings.cuda == "direct" else None
        self.comm = base.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.topology = Topology.build(self.comm, self.settings.ranks_per_node)
        self._recorder: Recorder | None = None
        topo = self.topology
        node_world = topo.node_ranks[topo.node_index]
        arena = Arena(topo.node, self.settings.small_bytes, self.settings.shm_bytes,
                      self.settings.timeout, node_world)
        wanted = self.settings.transport
        probe = wanted != "shm" and PeerReader.probe(arena)
        # One transport for the whole job: nodes must cut messages the same way.
        cma_ok = bool(self.comm.allreduce(int(probe), op=MPI.MIN))
        if wanted == "cma" and not cma_ok:
            arena.free()
            raise ConfigError("transport='cma' asked for, but ranks cannot read each other's "
                              "memory (process_vm_readv refused: ptrace scope, namespaces "
                              "or containers); use transport='shm' or 'auto'")
        self.transport = "cma" if cma_ok else "shm"
        # Limits every node computes alike (from the widest node), so nodes cut messages
        # the same way and leaders combine matching pieces.
        s = self.settings
        widest = max(len(r) for r in topo.node_ranks)
        piece = max(4096, min(s.piece_bytes, s.shm_bytes // widest) // 4096 * 4096)
        # Each rank folds every slot on the one-round path: shrink it on wide nodes.
        small_limit = s.small_bytes if widest <= 2 else max(16 * 1024,
                                                              s.small_bytes * 2 // widest)
        # Direct peer reads: always when asked for, in auto mode only from cma_bytes up.
        cma_bytes = 0 if wanted == "cma" else (s.cma_bytes or 1 << 62)
        self._node = NodeExchange(arena, self.transport, None, node_world, piece,
                                  small_limit, cma_bytes)
        self._plans = PlanCache()
        # Typed views of every rank's small slot, by (parity, bytes, dtype).
        self._slot_views: dict[tuple[int, int, Any], list[Array]] = {}
        self._direct = direct
        self._fast = FastCache()
        self._fast_entries = self._fast.entries
        self._closed = False
        if self.settings.trace:
            self.recorder = Recorder(self.rank)

    # -- housekeeping ----------------------------------------------------------------
    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the shared window and communicators (collective). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._fast.clear()
        self._node.arena.free()
        self.topology.free()
        self.comm.Free()

    def __repr__(self) -> str:
        t = self.topology
        return (f"Tree(rank={self.rank}, size={self.size}, nodes={t.nodes}, "
                f"local={t.local_rank}/{t.local_size}, transport={self.transport!r})")

    @property
    def recorder(self) -> Recorder | None:
        """The trace recorder (None when tracing is off). Set it to start or stop tracing."""
        return self._recorder

    @recorder.setter
    def recorder(self, value: Recorder | None) -> None:
        self._recorder = value
        self._node.recorder = value
        self._fast.clear()  # the repeated-call path records nothing
        if value is not None:
            # Dump at exit when NONSENSE_TRACE_FILE asks for it (nonsense-hpc trace).
            from nonsense_hpc.trace.hook import register

            register(value)

    @property
    def timeout(self) -> float:
        """Seconds a collective waits for a peer."""
        return self.settings.timeout

    def _check_open(self) -> None:
        if self._closed:
            raise CollectiveError("this Tree is closed")

    # -- agreement ---------------------------------------------------------------------
    def _control(self, hash_: int, flag: int, what: str) -> tuple[int, int, bool]:
        """Agree on (ranks with data, ranks with errors, whether all data ranks match)."""
        pairs = self._node.control(hash_, flag, what)
        hashes = [h for h, f in pairs if f == 1]
        hi = max(hashes, default=-1)
        neg_lo = -min(hashes, default=_MAX_HASH)
        n_data = sum(1 for _, f in pairs if f == 1)
        n_err = sum(1 for _, f in pairs if f < 0)
        topo = self.topology
        if topo.nodes > 1:
            words = None
            if topo.is_leader:
                a = np.array([hi, neg_lo], dtype=np.int64)
                b = np.array([n_data, n_err], dtype=np.int64)
                from mpi4py import MPI

                wait_requests([topo.leaders.Iallreduce(MPI.IN_PLACE, a, op=MPI.MAX),
                               topo.leaders.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM)],
                              self.timeout, what)
                words = [int(a[0]), int(a[1]), int(b[0]), int(b[1])]
            hi, neg_lo, n_data, n_err = self._node.share_from_leader(words, what)
        return n_data, n_err, n_data == 0 or hi == -neg_lo

    def _raise_disagreement(self, what: str, plan: Plan) -> None:
        items = allgather_obj(self.comm, (plan.flag, plan.describe()), self.timeout, what)
        errors = [(r, t) for r, (f, t) in enumerate(items) if f == FLAG_ERROR]
        if errors:
            text = "; ".join(f"rank {r}: {t}" for r, t in errors)
            raise TypeError(f"{what}: invalid value passed ({text})")
        described = [(r, t) for r, (f, t) in enumerate(items) if f == FLAG_DATA]
        raise CollectiveMismatchError(describe_disagreement(what, described))

    def _fast_mismatch(self, plan: Plan, k: int) -> AllreduceResult:
        """Finish round ``k`` of the repeated-call path after some rank passed another value.

        Every rank saw the same words, so every rank gets here (or to the same branch of
        :meth:`_agree_one_node`) and raises the same error, naming the ranks.
        """
        node = self._node
        got = [int(node.arena.ctrl[i]) for i in node.word_index[k & 1]]
        node.done(k)
        data = [w for w in got if w >= 0]
        n_err = sum(1 for w in got if w == -2)
        return self._finish(plan, plan.obj, plan.op, None, None, len(data), n_err,
                            len(set(data)) <= 1)

    def _remember_fast(self, plan: Plan, op: Op, ufunc: Any) -> None:
        """After a successful fold: compile the repeated-call path for this value."""
        if self._recorder is not None or plan.result is None:
            return
        flat = plan.buckets[0].flat
        after = partial(divide, flat, self._node.size, None) \
            if plan.op.name == "avg" else None
        call = make_fast_allreduce(self._node, plan, ufunc, after, self._fast_mismatch)
        self._fast.put(plan.obj, op, plan.ptr, call)

    def _agree_one_node(self, plan: Plan) -> tuple[int, int, bool, bool]:
        """One round on a single node: one header word each, plus the data when small.

        Every rank reads the same words, so every rank takes the same branch. When all
        ranks agree and the value is one small buffer, it is folded here from the slots,
        in rank order.

        Returns:
            (ranks with data, ranks with errors, whether data ranks agree, folded).
        """
        node = self._node
        k, par, words = node.agree_round(plan.word, plan.raw)
        mine = plan.word
        if mine >= 0 and plan.raw is not None and all(w == mine for w in words):
            bucket = plan.buckets[0]
            key = (par, plan.raw.nbytes, bucket.flat.dtype)
            views = self._slot_views.get(key)
            if views is None:
                views = [node.arena.small_slot(par, q, plan.raw.nbytes).view(
                    bucket.flat.dtype) for q in range(node.size)]
                if len(self._slot_views) >= 256:
                    self._slot_views.clear()
                self._slot_views[key] = views
            flat, tdt = bucket.flat, bucket.torch_dtype
            rec = self.recorder
            t0 = time.perf_counter() if rec is not None else 0.0
            ufunc = _UFUNC.get(plan.op.name) if tdt is None else None
            if ufunc is not None:
                ufunc(views[0], views[1], out=flat)
                for q in range(2, node.size):
                    ufunc(flat, views[q], out=flat)
            else:
                np.copyto(flat, views[0])
                for q in range(1, node.size):
                    plan.op.combine(flat, views[q], tdt)
            if rec is not None:
                # The fold read every peer's slot: show it as one read per peer.
                t1 = time.perf_counter()
                world = node.world
                for q in range(node.size):
                    if q != node.rank:
                        rec.record("allreduce", "read", world[q], plan.raw.nbytes, t0, t1)
                rec.record("allreduce", "reduce", -1, plan.raw.nbytes * node.size, t0, t1)
            node.done(k)
            return node.size, 0, True, True
        node.done(k)
        data = [w for w in words if w >= 0]
        n_err = sum(1 for w in words if w == -2)
        return len(data), n_err, len(set(data)) <= 1, False

    # -- allreduce ---------------------------------------------------------------------
    def allreduce(self, value: Any = None, op: Op = "sum", *, out: Any = None,
                  zero: Any = None) -> AllreduceResult:
        """Reduce ``value`` over every rank; every rank gets the result.

        Args:
            value: a torch tensor, numpy array, or dict/list/tuple of them. Reduced in
                place unless ``out`` is given. None means this rank has no more data (uneven
                steps): it contributes the op's identity (zeros for sum) shaped like the
                other ranks' values, and gets the result in the return value's ``.value``.
            op: "sum", "avg", "max", "min", "prod", or a callable ``f(a, b) -> a`` applied
                per tensor as ``f(...f(f(x0, x1), x2)..., x_{n-1})`` in rank order. "avg"
                divides by the number of ranks that contributed data.
            out: where to write the result instead of in place (same structure).
            zero: for a rank passing None: the value to contribute (or a callable making
                it). Default: built from the other ranks' structure, filled with the op's
                identity (zeros for sum and callables).

        Returns:
            The number of ranks that contributed data, as an :class:`AllreduceResult`
            (an int) whose ``.value`` is the reduced value.

        Raises:
            TypeError: a leaf is not a tensor or array, or has an unsupported dtype (raised
                on every rank, naming the rank).
            CollectiveMismatchError: ranks passed different structures, shapes, dtypes
                or ops (raised on every rank, naming them).
            CollectiveTimeoutError: a peer did not take part within the timeout.
        """
        entry = self._fast_entries.get(id(value))
        if entry is not None and entry[0] is value and out is None and entry[1] == op \
                and (not entry[2] or value.data_ptr() == entry[2]):
            return entry[3]()  # type: ignore[no-any-return]
        self._check_open()
        rop = _BUILTIN.get(op) if isinstance(op, str) else None
        if rop is None:
            rop = resolve_op(op)
        plan = None
        if out is None and value is not None:
            plan = self._plans.get(value, rop)
        if plan is None and out is None and rop.builtin and self._direct_value(value):
            # CUDA tensors for a CUDA-aware MPI: agree on the spec, never stage to host.
            spec = spec_of(value)
            plan = Plan(value, rop, FLAG_DATA, spec_hash((spec, rop.name)), spec)
        if plan is None:
            # The data rides with the agreement round only for an in-place builtin op.
            small = self._node.small_limit if out is None and rop.builtin else 0
            plan = make_plan(value, rop, self.settings.bucket_bytes, small)
            if out is None and rop.builtin:
                self._plans.put(plan)
        if self.topology.nodes == 1 and self.size > 1:
            n_data, n_err, uniform, folded = self._agree_one_node(plan)
            if folded:
                bucket = plan.buckets[0]
                if rop.name == "avg":
                    divide(bucket.flat, n_data, bucket.torch_dtype)
                if bucket.fused or plan.leaves[0].staged:
                    bucket.unpack()
                    for leaf in plan.leaves:
                        leaf.write_back()
                if plan.result is None:
                    plan.result = AllreduceResult(n_data, value)
                elif isinstance(op, str) and bucket.torch_dtype is None \
                        and not bucket.fused and not plan.leaves[0].staged \
                        and plan in self._plans:
                    # The second call with this tensor: worth compiling the repeated path
                    # (a tensor made fresh every step never gets here).
                    ufunc = _UFUNC.get(rop.name)
                    if ufunc is not None:
                        self._remember_fast(plan, op, ufunc)
                return plan.result  # type: ignore[no-any-return]
        elif self.size == 1:
            n_data = int(plan.flag == FLAG_DATA)
            n_err, uniform = int(plan.flag == FLAG_ERROR), True
        else:
            n_data, n_err, uniform = self._control(plan.hash, plan.flag, "allreduce")
        return self._finish(plan, value, rop, out, zero, n_data, n_err, uniform)

    def _finish(self, plan: Plan, value: Any, rop: ReduceOp, out: Any, zero: Any,
                n_data: int, n_err: int, uniform: bool) -> AllreduceResult:
        """After the agreement round: report disagreement, or move the data."""
        if n_err or not uniform:
            self._raise_disagreement("allreduce", plan)
        if n_data == 0:
            return AllreduceResult(0, None)
        spec = plan.spec
        if plan.flag == FLAG_NONE:
            spec = next(s for s in allgather_obj(self.comm, spec, self.timeout, "allreduce")
                        if s is not None)
            value = self._zero_value(spec, rop, zero)
        elif n_data < self.size:
            allgather_obj(self.comm, spec, self.timeout, "allreduce")
        # Every rank agreed on spec and op, so every rank takes the same path here.
        direct = self._direct_spec(spec, rop)
        if plan.flag == FLAG_NONE and not direct:
            plan = make_plan(value, rop, self.settings.bucket_bytes, 0)
        target, leaves, buckets = value, plan.leaves, plan.buckets
        if out is not None:
            if spec_of(out) != spec:
                raise CollectiveMismatchError(
                    f"allreduce: out= has {spec_text(spec_of(out))} but the value is "
                    f"{spec_text(spec)}")
            copy_into(out, value)
            target = out
            if not direct:
                leaves = flatten(out)
                buckets = fuse(leaves, self.settings.bucket_bytes)
        if direct:
            if self.size > 1:
                direct_allreduce(self.comm, target, rop, n_data, self.settings.bucket_bytes)
            return AllreduceResult(n_data, target)
        if self.size > 1:
            if rop.builtin:
                for bucket in buckets:
                    self._allreduce_flat(bucket.flat, rop, bucket.torch_dtype)
            else:
                self._callable_allreduce(leaves, rop)
        for bucket in buckets:
            if rop.name == "avg":
                divide(bucket.flat, n_data, bucket.torch_dtype)
            bucket.unpack()
        for leaf in leaves:
            leaf.write_back()
        return AllreduceResult(n_data, target)

    # -- CUDA tensors and a CUDA-aware MPI -------------------------------------------
    def _direct_mode(self) -> bool:
        """Whether CUDA tensors go to the MPI library directly (decided once)."""
        if self._direct is None:
            self._direct = use_direct(self.settings.cuda)
        return self._direct

    def _direct_value(self, value: Any) -> bool:
        """A quick look: is ``value`` all CUDA tensors for a CUDA-aware library?"""
        if not getattr(first_leaf(value), "is_cuda", False):
            return False
        try:
            spec = spec_of(value)
        except TypeError:
            return False  # the general path reports it on every rank
        return self._direct_spec(spec, _BUILTIN["sum"])

    def _direct_spec(self, spec: Any, op: ReduceOp) -> bool:
        return spec is not None and direct_eligible(spec, op) and self._direct_mode()

    def _zero_value(self, spec: Any, op: ReduceOp, zero: Any) -> Any:
        value = zero() if callable(zero) else zero
        if value is None:
            value = build_zeros(spec)
        elif spec_of(value) != spec:
            raise CollectiveMismatchError(
                f"allreduce: zero= is {spec_text(spec_of(value))} but the other ranks pass "
                f"{spec_text(spec)}")
        if op.builtin and op.name in ("max", "min", "prod"):
            for leaf in flatten(value):
                leaf.flat[...] = identity_bits(op, leaf)
                leaf.write_back()
        return value

    def _allreduce_flat(self, flat: Array, op: ReduceOp, torch_dtype: Any) -> None:
        topo, s = self.topology, self.settings
        internode = None
        if topo.nodes > 1:
            leaders = topo.leaders
            world = [r[0] for r in topo.node_ranks]

            def internode(buf: Array) -> None:
                leaders_allreduce(leaders, buf, op, torch_dtype, s.timeout, s.small_bytes,
                                  s.chunk_bytes, self.recorder, world)
        self._node.allreduce(flat, op, torch_dtype, internode)

    def _callable_allreduce(self, leaves: list[Leaf], op: ReduceOp) -> None:
        """Gather every rank's bytes on rank 0, fold in rank order, broadcast back."""
        payload = np.concatenate([leaf.flat.view(np.uint8) for leaf in leaves]) \
            if len(leaves) > 1 else leaves[0].flat.view(np.uint8).copy()
        n = payload.size
        gathered = np.empty((self.size, n), dtype=np.uint8) if self.rank == 0 else None
        wait_requests([self.comm.Igather(payload, gathered, root=0)], self.timeout,
                      "allreduce")
        if self.rank == 0:
            assert gathered is not None and op.fn is not None
            offsets = np.cumsum([0] + [leaf.nbytes for leaf in leaves]).tolist()
            for i, leaf in enumerate(leaves):
                lo, hi = offsets[i], offsets[i + 1]
                acc = as_user(leaf, gathered[0, lo:hi].copy())
                for q in range(1, self.size):
                    res = op.fn(acc, as_user(leaf, gathered[q, lo:hi]))
                    if res is not None:
                        acc = res
                payload[lo:hi] = user_bytes(acc, leaf)
        wait_requests([self.comm.Ibcast(payload, root=0)], self.timeout, "allreduce")
        offset = 0
        for leaf in leaves:
            np.copyto(leaf.flat.view(np.uint8), payload[offset:offset + leaf.nbytes])
            offset += leaf.nbytes

    # -- the other collectives ---------------------------------------------------------
    def reduce(self, value: Any, op: Op = "sum", root: int = 0, *, out: Any = None
               ) -> AllreduceResult:
        """Reduce to ``root`` only; other ranks' values are left unchanged.

        Returns:
            The count of contributing ranks; ``.value`` is the result on ``root`` and None
            elsewhere.
        """
        self._check_root(root)
        if self.rank == root:
            return self.allreduce(value, op, out=out)
        scratch = None if value is None else clone(value)
        res = self.allreduce(scratch, op)
        return AllreduceResult(int(res), None)

    def broadcast(self, value: Any = None, root: int = 0) -> Any:
        """Send ``root``'s value to every rank.

        Ranks that pass a value of the same structure receive in place; ranks that pass
        None get a new value. Returns the value on every rank.
        """
        return rooted.broadcast(self, value, root)

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        """Every rank's value, as a list in rank order on ``root`` (None elsewhere)."""
        return rooted.gather(self, value, root)

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's value, as a list in rank order, on every rank.

        Values may differ in shape between ranks (not in kind: each must be a tensor,
        array or table of them).
        """
        return rooted.allgather(self, value)

    def scatter(self, values: list[Any] | None = None, root: int = 0) -> Any:
        """Give rank ``i`` the ``values[i]`` of ``root`` (a list of ``size`` values)."""
        return rooted.scatter(self, values, root)

    def barrier(self) -> None:
        """Wait until every rank gets here (with the Tree's timeout)."""
        self._check_open()
        wait_requests([self.comm.Ibarrier()], self.timeout, "barrier")

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.size:
            raise ConfigError(f"root must be in 0..{self.size - 1}, got {root}")
