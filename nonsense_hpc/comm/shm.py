"""Shared memory inside a node: the arena, its flags, and reads from a peer's memory.

Each :class:`Arena` is one MPI shared window per node with:

* a control line per local rank (16 int64: sequence flags, header words), read and written
  through a memoryview so a flag costs tens of nanoseconds, not a numpy call;
* a small-message area, double-buffered by call parity;
* a staging area of one slot per local rank, used when a peer's memory cannot be read
  directly.

:class:`PeerReader` reads a peer's buffer directly with ``process_vm_readv`` (Linux cross
memory attach): one copy instead of copy-in plus copy-out. It is probed at start-up and
used only when every rank of the node can read every other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from mpi4py import MPI

from nonsense_hpc.errors import CollectiveTimeoutError

__all__ = ["ARRIVE", "DONE", "END", "F_ADDR", "F_FLAG", "F_HASH", "F_NBYTES", "F_PID",
           "LINE_WORDS", "MID", "STAGE", "Arena", "PeerReader"]

Array = npt.NDArray[Any]

LINE_WORDS = 16  # 128 bytes per rank: two cache lines, no false sharing between ranks
# Monotonic sequence flags (a round k sets them to k).
ARRIVE, MID, END, DONE, STAGE = 0, 1, 2, 3, 4
# Header words, double-buffered by round parity: a rank may write round k+2's words only
# after every rank said DONE for round k, so a slow reader never sees them change.
F_HASH, F_FLAG, F_NBYTES, F_ADDR = 0, 1, 2, 3
_HEADER_BASE, _HEADER_WORDS = 5, 4
F_PID = 15
_ALIGN = 4096


def _cores() -> set[int]:
    """CPUs this process may run on (its affinity mask, else all of the machine's)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _round_up(n: int, align: int = _ALIGN) -> int:
    return (n + align - 1) // align * align


class Arena:
    """One node's shared window: control lines, small slots and staging slots.

    Args:
        node: the node communicator (every rank of it must construct the arena).
        small_bytes: bytes per rank per parity in the small-message area.
        stage_bytes: total bytes of the staging area (split into one slot per rank).
        timeout: seconds a wait may take before raising CollectiveTimeoutError (0 = for
            ever).
        world_ranks: the world rank of each local rank, for error messages.
    """

    def __init__(self, node: Any, small_bytes: int, stage_bytes: int, timeout: float,
                 world_ranks: list[int]) -> None:
        self.node = node
        self.rank, self.size = node.Get_rank(), node.Get_size()
        self.timeout = timeout
        self.world_ranks = world_ranks
        p = self.size
        self.small_bytes = _round_up(max(small_bytes, 64), 64)
        self.slot_bytes = _round_up(max(stage_bytes // p, _ALIGN))
        ctrl_bytes = _round_up(p * LINE_WORDS * 8)
        small_total = 2 * p * self.small_bytes
        total = ctrl_bytes + _round_up(small_total) + p * self.slot_bytes
        self.win = MPI.Win.Allocate_shared(total if self.rank == 0 else 0, 1, comm=node)
        buf: Any = self.win.Shared_query(0)[0]
        self._mem: Array = np.frombuffer(buf, dtype=np.uint8, count=total)
        if self.rank == 0:
            self._mem[:ctrl_bytes] = 0
        self.ctrl = memoryview(buf)[:ctrl_bytes].cast("q")
        self._ctrl_bytes, self._small_total = ctrl_bytes, small_total
        self._small_base = ctrl_bytes
        self._stage_base = ctrl_bytes + _round_up(small_total)
        self.base_address = int(self._mem.ctypes.data)
        # More ranks than cores on this node (the union of the ranks' affinity masks: a
        # launcher binds each rank to one core): a spinning rank would hold the core a
        # peer needs to make progress, so waits yield the CPU from the first miss.
        cores = set().union(*node.allgather(_cores()))
        self.spins = 0 if p > len(cores) else 64
        node.Barrier()
        self.set(F_PID, os.getpid())

    # -- control words -------------------------------------------------------------
    def set(self, field: int, value: int) -> None:
        """Publish one control word of this rank."""
        self.ctrl[self.rank * LINE_WORDS + field] = value

    def get(self, rank: int, field: int) -> int:
        """Read one control word of a local rank."""
        return int(self.ctrl[rank * LINE_WORDS + field])

    def set_header(self, parity: int, word: int, value: int) -> None:
        """Publish a header word (F_HASH, F_FLAG, ...) of this rank for a round parity."""
        self.ctrl[self.rank * LINE_WORDS + _HEADER_BASE + parity * _HEADER_WORDS + word] = value

    @staticmethod
    def header_index(rank: int, parity: int, word: int) -> int:
        """Index of a header word in :attr:`ctrl` (for precomputed hot paths)."""
        return rank * LINE_WORDS + _HEADER_BASE + parity * _HEADER_WORDS + word

    def get_header(self, rank: int, parity: int, word: int) -> int:
        """Read a header word of a local rank for a round parity."""
        return int(self.ctrl[rank * LINE_WORDS + _HEADER_BASE + parity * _HEADER_WORDS + word])

    def wait(self, field: int, value: int, what: str, ranks: range | list[int] | None = None
             ) -> None:
        """Wait until ``field >= value`` on every rank in ``ranks`` (default: all).

        Spins briefly, then yields the CPU, then sleeps in short steps, so oversubscribed
        runs (more ranks than cores) still make progress.

        Raises:
            CollectiveTimeoutError: some rank did not get there within the timeout; the
                message names the world ranks that are missing.
        """
        ctrl, line = self.ctrl, LINE_WORDS
        todo = list(range(self.size) if ranks is None else ranks)
        spins = 0
        deadline = 0.0
        while todo:
            todo = [q for q in todo if ctrl[q * line + field] < value]
            if not todo:
                return
            spins += 1
            if spins < self.spins:
                continue
            if spins < 2048:
                os.sched_yield()
                continue
            now = time.monotonic()
            if deadline == 0.0:
                deadline = now + self.timeout if self.timeout > 0 else float("inf")
            elif now > deadline:
                missing = [self.world_ranks[q] for q in todo]
                raise CollectiveTimeoutError(
                    f"{what}: rank(s) {missing} did not arrive within {self.timeout:g} s "
                    "(dead, stuck, or calling a different collective); set NONSENSE_TIMEOUT "
                    "to change the limit")
            time.sleep(0.00005 if spins < 20000 else 0.001)

    # -- data areas ----------------------------------------------------------------
    def small_slot(self, parity: int, rank: int, nbytes: int) -> Array:
        """The small-message slot of ``rank`` for calls of this parity, as uint8."""
        start = self._small_base + (parity * self.size + rank) * self.small_bytes
        out: Array = self._mem[start:start + nbytes]
        return out

    def stage_slot(self, rank: int, nbytes: int | None = None) -> Array:
        """The staging slot of ``rank`` (first ``nbytes`` bytes), as uint8."""
        start = self._stage_base + rank * self.slot_bytes
        out: Array = self._mem[start:start + (self.slot_bytes if nbytes is None else nbytes)]
        return out

    def free(self) -> None:
        """Release the window (collective over the node)."""
        self.ctrl.release()
        self._mem = np.empty(0, np.uint8)
        self.win.Free()


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class PeerReader:
    """Copy bytes out of another process's memory with ``process_vm_readv``."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.process_vm_readv
        fn.restype = ctypes.c_ssize_t
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                       ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.c_ulong]
        self._fn = fn
        self._local = _IOVec()
        self._remote = _IOVec()

    def read(self, pid: int, address: int, dest: Array) -> None:
        """Fill ``dest`` (contiguous) with ``dest.nbytes`` bytes from ``pid`` at ``address``.

        Raises:
            OSError: the kernel refused (permissions, namespaces, a dead peer).
        """
        want = dest.nbytes
        if want == 0:
            return
        local, remote = self._local, self._remote
        done = 0
        base = dest.ctypes.data
        while done < want:
            local.base, local.len = base + done, want - done
            remote.base, remote.len = address + done, want - done
            got = self._fn(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if got <= 0:
                err = ctypes.get_errno()
                raise OSError(err, f"process_vm_readv from pid {pid}: {os.strerror(err)}")
            done += got

    @staticmethod
    def probe(arena: Arena) -> bool:
        """Whether every rank of the node can read every other (collective on the node).

        Each rank publishes the address of a small array holding its rank, reads its right
        neighbour's, and the node agrees on the answer.
        """
        node = arena.node
        mine = np.full(8, arena.rank + 1, dtype=np.int64)
        arena.set_header(0, F_ADDR, int(mine.ctypes.data))
        node.Barrier()
        ok = 1
        if arena.size > 1:
            peer = (arena.rank + 1) % arena.size
            got = np.zeros(8, dtype=np.int64)
            try:
                PeerReader().read(arena.get(peer, F_PID), arena.get_header(peer, 0, F_ADDR),
                                  got)
                ok = int(bool((got == peer + 1).all()))
            except (OSError, AttributeError):
                ok = 0
        result = int(node.allreduce(ok, op=MPI.MIN))
        node.Barrier()  # keep `mine` alive until every peer has read it
        del mine
        return result == 1
