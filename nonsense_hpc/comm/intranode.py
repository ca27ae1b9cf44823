"""Allreduce inside one node through shared memory.

Two transports, chosen once per Tree by a probe:

* ``cma``: each rank publishes the address of its own buffer; peers read it directly with
  ``process_vm_readv``. Reduce-scatter reads block ``r`` of every peer in cache-sized
  chunks and reduces it into the rank's own buffer; allgather reads the other reduced
  blocks straight from their owners. One copy per byte, no staging.
* ``shm``: each rank copies its buffer into its slot of the node's shared window, and the
  same reduce-scatter/allgather runs on the slots (pieces of the slot size for larger
  messages).

Small messages use one round: every rank writes into its small slot and folds all slots
itself, in rank order, so each rank computes the same bits without a second round.
Reductions always fold in rank order ``((x0 . x1) . x2) ...``, so results are identical
on every rank and from run to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc.comm.internode import block_bounds
from nonsense_hpc.comm.ops import ReduceOp
from nonsense_hpc.comm.recorder import Recorder
from nonsense_hpc.comm.shm import (
    ARRIVE,
    DONE,
    END,
    F_ADDR,
    F_FLAG,
    F_HASH,
    F_NBYTES,
    F_PID,
    LINE_WORDS,
    MID,
    STAGE,
    Arena,
    PeerReader,
)

__all__ = ["CHUNK_BYTES", "NodeExchange"]

Array = npt.NDArray[Any]
Internode = Callable[[Array], None]
CHUNK_BYTES = 256 * 1024  # fits in L2: the chunk read from a peer is reduced while hot


class NodeExchange:
    """The shared-memory collectives of one node, for one Tree.

    Args:
        arena: the node's shared window.
        transport: ``"cma"`` or ``"shm"`` (see the module docstring).
        recorder: trace recorder, or None.
        world_ranks: world rank of each local rank (for traces and errors).
        piece_bytes: with ``shm``, messages move in pieces of this size; it must be the
            same on every node (leaders combine piece by piece), and fit a staging slot.
        small_limit: messages up to this size take the one-round path.
        cma_bytes: with ``cma``, messages at least this large are read from the peers'
            buffers; others go through the staging slots in cache-sized pieces. Both
            limits must be the same on every node.
    """

    def __init__(self, arena: Arena, transport: str, recorder: Recorder | None,
                 world_ranks: list[int], piece_bytes: int, small_limit: int,
                 cma_bytes: int) -> None:
        self.arena = arena
        self.transport = transport
        self.recorder = recorder
        self.world = world_ranks
        self.rank, self.size = arena.rank, arena.size
        self.seq = 0
        self.piece_bytes = min(piece_bytes, arena.slot_bytes)
        self.small_limit = min(small_limit, arena.small_bytes)
        self.cma_bytes = cma_bytes
        self.reader = PeerReader() if transport == "cma" else None
        self.pids = [arena.get(q, F_PID) for q in range(self.size)]
        # Precomputed control-word indices for the one-round agreement (hot path).
        line = LINE_WORDS
        self.arrive_index = [q * line + ARRIVE for q in range(self.size)]
        self.done_index = [q * line + DONE for q in range(self.size)]
        self.word_index = [[arena.header_index(q, par, F_HASH) for q in range(self.size)]
                       for par in (0, 1)]
        self._tmp = np.empty(2 * CHUNK_BYTES, dtype=np.uint8)

    # -- rounds ----------------------------------------------------------------------
    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def header_round(self, words: dict[int, int], payload: Array | None, what: str
                     ) -> tuple[int, int]:
        """Publish header words (and a small payload), wait for every rank's.

        Returns:
            (sequence number, parity of the small slots used). The caller reads what it
            needs, then calls :meth:`done`.
        """
        arena = self.arena
        k = self._next()
        parity = k & 1
        if k > 2:
            arena.wait(DONE, k - 2, what)  # everyone finished reading these slots
        if payload is not None:
            np.copyto(arena.small_slot(parity, self.rank, payload.nbytes), payload)
        for word, value in words.items():
            arena.set_header(parity, word, value)
        arena.set(ARRIVE, k)
        t0 = time.perf_counter() if self.recorder is not None else 0.0
        arena.wait(ARRIVE, k, what)
        if self.recorder is not None:
            self.recorder.record(what, "wait", -1, 0, t0, time.perf_counter())
        return k, parity

    def agree_round(self, word: int, payload: Array | None) -> tuple[int, int, list[int]]:
        """One round: publish one header word (and a small payload); read everyone's.

        The hot path of a small allreduce: no dicts, no numpy calls besides the payload
        copy, precomputed indices into the control lines.

        Returns:
            (sequence number, parity, every rank's word). Call :meth:`done` after reading
            the slots.
        """
        arena, ctrl = self.arena, self.arena.ctrl
        self.seq += 1
        k = self.seq
        parity = k & 1
        if k > 2:
            for i in self.done_index:
                if ctrl[i] < k - 2:
                    arena.wait(DONE, k - 2, "allreduce")
                    break
        if payload is not None:
            np.copyto(arena.small_slot(parity, self.rank, payload.nbytes), payload)
        words = self.word_index[parity]
        ctrl[words[self.rank]] = word
        ctrl[self.arrive_index[self.rank]] = k
        for i in self.arrive_index:
            if ctrl[i] < k:
                t0 = time.perf_counter() if self.recorder is not None else 0.0
                arena.wait(ARRIVE, k, "allreduce")
                if self.recorder is not None:
                    self.recorder.record("allreduce", "wait", -1, 0, t0, time.perf_counter())
                break
        return k, parity, [ctrl[i] for i in words]

    def done(self, k: int) -> None:
        """Say this rank finished reading round ``k``."""
        self.arena.set(DONE, k)

    def control(self, hash_: int, flag: int, what: str) -> list[tuple[int, int]]:
        """Exchange (hash, flag) with every rank of the node; returns them by local rank."""
        k, par = self.header_round({F_HASH: hash_, F_FLAG: flag}, None, what)
        get = self.arena.get_header
        out = [(get(q, par, F_HASH), get(q, par, F_FLAG)) for q in range(self.size)]
        self.done(k)
        return out

    def share_from_leader(self, words: list[int] | None, what: str) -> list[int]:
        """Local rank 0 publishes a few int64 words; every rank of the node returns them."""
        payload = None
        if self.rank == 0 and words is not None:
            payload = np.asarray(words, dtype=np.int64).view(np.uint8)
        n = 0 if words is None else len(words)
        k, parity = self.header_round({F_NBYTES: n * 8}, payload, what)
        count = self.arena.get_header(0, parity, F_NBYTES) // 8
        got = self.arena.small_slot(parity, 0, count * 8).view(np.int64).tolist()
        self.done(k)
        return [int(v) for v in got]

    # -- allreduce -------------------------------------------------------------------
    def allreduce(self, flat: Array, op: ReduceOp, torch_dtype: Any,
                  internode: Internode | None = None) -> None:
        """Allreduce ``flat`` in place over the node (and over nodes via ``internode``).

        Args:
            flat: contiguous 1-D array, the same size and dtype on every rank.
            op: a builtin reduction.
            torch_dtype: compute dtype for float16/bfloat16, else None.
            internode: on multi-node runs, the leaders' allreduce, called on the leader
                with the node's partial result (in place).
        """
        small = flat.nbytes <= self.small_limit
        direct = self.transport == "cma" and flat.nbytes >= self.cma_bytes
        if small or direct:
            pieces = [flat]
        else:
            # Same piece size on every node, so leaders combine matching pieces.
            step = max(1, self.piece_bytes // flat.itemsize)
            pieces = [flat[s:s + step] for s in range(0, flat.size, step)]
        for piece in pieces:
            if self.size == 1:
                if internode is not None:
                    internode(piece)
            elif small:
                self._small(piece, op, torch_dtype, internode)
            else:
                self._large(piece, op, torch_dtype, internode, staged=not direct)

    def _small(self, flat: Array, op: ReduceOp, torch_dtype: Any,
               internode: Internode | None) -> None:
        nbytes = flat.nbytes
        raw = flat.view(np.uint8)
        k, parity = self.header_round({}, raw, "allreduce")
        rec = self.recorder
        t0 = time.perf_counter() if rec is not None else 0.0
        slots = [self.arena.small_slot(parity, q, nbytes).view(flat.dtype)
                 for q in range(self.size)]
        if self.rank != 0:
            np.copyto(flat, slots[0])
        for q in range(1, self.size):
            op.combine(flat, slots[q], torch_dtype)
        self.done(k)
        if rec is not None:
            rec.record("allreduce", "reduce", -1, nbytes * self.size, t0, time.perf_counter())
        if internode is None:
            return
        if self.rank == 0:
            internode(flat)
        k, parity = self.header_round({}, raw if self.rank == 0 else None, "allreduce")
        if self.rank != 0:
            np.copyto(raw, self.arena.small_slot(parity, 0, nbytes))
        self.done(k)

    def _fetch(self, q: int, lo: int, hi: int, flat: Array, staged: bool, tmp: Array
               ) -> Array:
        """Elements [lo, hi) of rank q's buffer (a view of its slot, or read into tmp)."""
        if staged:
            view: Array = self.arena.stage_slot(q, flat.nbytes).view(flat.dtype)[lo:hi]
            if self.recorder is not None:
                now = time.perf_counter()
                self.recorder.record("allreduce", "read", self.world[q], view.nbytes, now, now)
            return view
        out = tmp[: (hi - lo) * flat.itemsize].view(flat.dtype)
        assert self.reader is not None
        t0 = time.perf_counter() if self.recorder is not None else 0.0
        self.reader.read(self.pids[q], self._addr[q] + lo * flat.itemsize, out)
        if self.recorder is not None:
            self.recorder.record("allreduce", "read", self.world[q], out.nbytes, t0,
                                 time.perf_counter())
        return out

    def _large(self, flat: Array, op: ReduceOp, torch_dtype: Any,
               internode: Internode | None, staged: bool) -> None:
        arena, r, p = self.arena, self.rank, self.size
        item = flat.itemsize
        k = self._next()
        parity = k & 1
        if k > 2:
            arena.wait(DONE, k - 2, "allreduce")  # header words of this parity are free
        blocks = block_bounds(flat.size, p)
        lo, hi = blocks[r]
        if staged:
            # Slots are free: every rank passed the END wait of the previous large round.
            # Publish only the blocks the peers fold; block r is folded here from flat,
            # and its slot region receives the reduced block before anyone reads it.
            slot = arena.stage_slot(r, flat.nbytes).view(flat.dtype)
            if lo > 0:
                np.copyto(slot[:lo], flat[:lo])
            if hi < flat.size:
                np.copyto(slot[hi:], flat[hi:])
        else:
            arena.set_header(parity, F_ADDR, int(flat.ctypes.data))
        arena.set_header(parity, F_NBYTES, flat.nbytes)
        arena.set(ARRIVE, k)
        arena.wait(ARRIVE, k, "allreduce")
        if not staged:
            self._addr = [arena.get_header(q, parity, F_ADDR) for q in range(p)]
        chunk = max(1, CHUNK_BYTES // item)
        tmp_a = self._tmp[:CHUNK_BYTES]
        tmp_b = self._tmp[CHUNK_BYTES:]
        mine = arena.stage_slot(r, flat.nbytes).view(flat.dtype) if staged else None
        t_red = time.perf_counter() if self.recorder is not None else 0.0
        # Reduce-scatter: fold block r of every rank, in rank order.
        for s in range(lo, hi, chunk):
            e = min(hi, s + chunk)
            own = flat[s:e]
            if r <= 1:
                # x0 . x1 == x1 . x0 bit for bit for builtin ops: fold straight into own.
                acc = own
                if r == 1:
                    op.combine(acc, self._fetch(0, s, e, flat, staged, tmp_b), torch_dtype)
                start = 2 if r == 1 else 1
            else:
                acc = np.copy(self._fetch(0, s, e, flat, staged, tmp_a)) if staged else \
                    self._fetch(0, s, e, flat, staged, tmp_a)
                start = 1
            for q in range(start, p):
                other = own if q == r else self._fetch(q, s, e, flat, staged, tmp_b)
                op.combine(acc, other, torch_dtype)
            if acc is not own:
                np.copyto(own, acc)
            if mine is not None:
                np.copyto(mine[s:e], own)
        if self.recorder is not None:
            self.recorder.record("allreduce", "reduce", -1, (hi - lo) * item * p, t_red,
                                 time.perf_counter())
        arena.set(MID, k)
        arena.wait(MID, k, "allreduce")
        if internode is None:
            # Allgather: read every other reduced block from its owner.
            for q in range(p):
                if q != r:
                    qlo, qhi = blocks[q]
                    self._copy_block(q, qlo, qhi, flat, staged)
        else:
            if r == 0:
                for q in range(1, p):
                    qlo, qhi = blocks[q]
                    self._copy_block(q, qlo, qhi, flat, staged)
                internode(flat)
                if staged:
                    np.copyto(arena.stage_slot(0, flat.nbytes).view(flat.dtype), flat)
                arena.set(STAGE, k)
            else:
                arena.wait(STAGE, k, "allreduce", ranks=[0])
                self._copy_block(0, 0, flat.size, flat, staged)
        arena.set(END, k)
        arena.wait(END, k, "allreduce")  # nobody reads our buffer any more
        arena.set(DONE, k)

    def _copy_block(self, q: int, lo: int, hi: int, flat: Array, staged: bool) -> None:
        if hi <= lo:
            return
        dest = flat[lo:hi]
        if staged:
            t0 = time.perf_counter() if self.recorder is not None else 0.0
            np.copyto(dest, self.arena.stage_slot(q, flat.nbytes).view(flat.dtype)[lo:hi])
            if self.recorder is not None:
                self.recorder.record("allreduce", "read", self.world[q], dest.nbytes, t0,
                                     time.perf_counter())
            return
        assert self.reader is not None
        t0 = time.perf_counter() if self.recorder is not None else 0.0
        self.reader.read(self.pids[q], self._addr[q] + lo * flat.itemsize, dest)
        if self.recorder is not None:
            self.recorder.record("allreduce", "read", self.world[q], dest.nbytes, t0,
                                 time.perf_counter())
