"""CUDA tensors between processes of one host as CUDA IPC handles (torch-ipc's fast path).

The sender never puts a handle to the caller's own tensor on the wire. For each CUDA
tensor of a frame it makes a *snapshot* (``clone()`` on the same GPU: device memory at
device speed, and the value sent can no longer change when the caller writes the tensor
after ``send`` returns, as with host staging) and exports the snapshot's storage with
torch's own mechanism, ``untyped_storage()._share_cuda_()`` (as
``torch.multiprocessing.reductions`` does): a ``cudaIpcMemHandle`` of the allocation, the
storage's byte offset and size in it, torch's shared-memory reference counter (name and
slot) and an IPC event that orders the receiver after the snapshot's copy kernel.

The receiver opens it with ``torch.UntypedStorage._new_shared_cuda(...)`` on its own index
of the same physical GPU (matched by UUID; when the GPU is not visible to it, on its
current device, reading through peer access), copies the data into a tensor of its own,
waits for the copy, drops the opened storage (torch then decrements the counter) and sends
an *ack* control frame. The received tensor is ordinary memory of the receiver: it stays
valid whatever the sender does later, even when the sender exits.

**Lifetime rule.** The sender holds every snapshot of a frame until the receiver's ack
(or nack) for that frame arrives; the handle is never dangling:

* ack: the receiver has copied and released; the sender drops the snapshot and torch frees
  it at once (counter 0).
* nack (the receiver could not open, or refused, the handle): the receiver lists the
  handles it opened and released itself; the sender releases the counter of the others
  (``torch.UntypedStorage._release_ipc_counter``), drops them, and stages every later CUDA
  tensor on that connection through the host.
* connection closed with frames unacknowledged: the sender drops its references but torch
  keeps each block alive (its "limbo", ``torch.cuda.ipc_collect()``) until the counter says
  the receiver released it, or the sender exits. A lost peer can cost memory, never
  correctness.
* a frame that is refused after export (its header too large) is cancelled: nothing was
  sent, the counters are released at once.

Acks are read whenever the sender touches the connection (``send`` reads the control
frames already at the front of the stream without blocking while frames await their ack
or the peer's hello has not arrived; ``recv``, ``poll`` and
:meth:`~nonsense_hpc.ipc.connection.Connection.flush` read them too). A sender whose
unacknowledged snapshots exceed :data:`PENDING_LIMIT` stages further tensors through the
host until acks come back, so a peer that never reads cannot exhaust GPU memory.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nonsense_hpc.errors import CudaIpcError, WireError

__all__ = [
    "PENDING_LIMIT",
    "CudaExport",
    "CudaIpcError",
    "Exporter",
    "FrameImport",
    "IpcHandle",
]

PENDING_LIMIT = 1 << 30
"""Bytes of unacknowledged snapshots per connection above which tensors are staged."""
REF_COUNTER_SLOTS = 10000  # torch::CUDA_IPC_REF_COUNTER_FILE_SIZE
_REF_COUNTER = re.compile(r"/torch_[A-Za-z0-9_]{1,200}")
_MAX_HANDLE = 1024
_MAX_INT = 1 << 62


class CudaExport(Protocol):
    """The hook :func:`nonsense_hpc.ipc.codec.encode` calls for the CUDA tensors of a frame.

    ``export`` is called once, after the whole value was walked (so an unsupported value
    never creates a handle), with every non-empty CUDA tensor in walk order; ``cancel`` if
    the frame is then refused, so handles that were never sent are released.
    """

    def export(self, tensors: list[Any]) -> list[dict[str, Any] | None]:
        """Return the ``$cuda_ipc`` descriptor of each tensor, None to stage it instead."""
        ...

    def cancel(self) -> None:
        """The frame will not be sent: release what ``export`` made."""
        ...


def _int(obj: dict[str, Any], key: str, upper: int = _MAX_INT) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
        raise WireError(f"CUDA IPC descriptor: {key} must be an int in [0, {upper}), "
                        f"got {value!r:.60}")
    return value


def _hex(obj: dict[str, Any], key: str, most: int) -> bytes:
    value = obj.get(key)
    try:
        if not isinstance(value, str) or len(value) > 2 * most:
            raise ValueError("too long" if isinstance(value, str) else "not a string")
        return bytes.fromhex(value)
    except ValueError as exc:
        raise WireError(f"CUDA IPC descriptor: {key} must be hex of at most {most} bytes "
                        f"({exc})") from None


@dataclass(frozen=True)
class IpcHandle:
    """The handle fields of a ``$cuda_ipc`` node: plain ints, strings and hex bytes.

    Attributes:
        frame: the sender's frame number (what the ack names).
        index: the tensor's position among the frame's CUDA IPC tensors.
        device: the sender's CUDA device index.
        uuid: that device's UUID (the receiver maps it to its own index).
        handle: the ``cudaIpcMemHandle`` of the allocation (torch's handle bytes).
        size: bytes of the storage.
        offset: byte offset of the storage in the allocation.
        ref_counter: name of torch's shared-memory reference counter file.
        ref_counter_offset: the counter's slot in that file.
        event: the ``cudaIpcEventHandle`` the receiver waits on (empty when none).
        event_sync: whether the receiver must wait on ``event``.
    """

    frame: int
    index: int
    device: int
    uuid: str
    handle: bytes
    size: int
    offset: int
    ref_counter: str
    ref_counter_offset: int
    event: bytes = b""
    event_sync: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON object put under ``$cuda_ipc`` in the frame header."""
        return {"frame": self.frame, "index": self.index, "device": self.device,
                "uuid": self.uuid, "handle": self.handle.hex(), "size": self.size,
                "offset": self.offset, "ref_counter": self.ref_counter,
                "ref_counter_offset": self.ref_counter_offset, "event": self.event.hex(),
                "event_sync": self.event_sync}

    @classmethod
    def from_json(cls, obj: Any) -> IpcHandle:
        """Validate a received ``$cuda_ipc`` object.

        Raises:
            WireError: a field is missing, of the wrong type or out of range (the counter
                name must be one of torch's ``/torch_...`` names and its slot inside the
                counter file, since the receiver's torch writes to it).
        """
        if not isinstance(obj, dict):
            raise WireError(f"CUDA IPC descriptor must be an object, got {obj!r:.60}")
        uuid, ref, sync = obj.get("uuid"), obj.get("ref_counter"), obj.get("event_sync")
        if not isinstance(uuid, str) or len(uuid) > 128:
            raise WireError(f"CUDA IPC descriptor: bad uuid {uuid!r:.60}")
        if not isinstance(ref, str) or not _REF_COUNTER.fullmatch(ref):
            raise WireError(f"CUDA IPC descriptor: bad ref_counter {ref!r:.60}")
        if not isinstance(sync, bool):
            raise WireError(f"CUDA IPC descriptor: event_sync must be a bool, got {sync!r}")
        handle = _hex(obj, "handle", _MAX_HANDLE)
        if not handle:
            raise WireError("CUDA IPC descriptor: empty handle")
        if not obj.get("size"):
            raise WireError("CUDA IPC descriptor: size must be positive")
        event = _hex(obj, "event", 256)
        if sync and not event:
            raise WireError("CUDA IPC descriptor: event_sync without an event handle")
        return cls(frame=_int(obj, "frame"), index=_int(obj, "index"),
                   device=_int(obj, "device", 1024), uuid=uuid, handle=handle,
                   size=_int(obj, "size"), offset=_int(obj, "offset"), ref_counter=ref,
                   ref_counter_offset=_int(obj, "ref_counter_offset", REF_COUNTER_SLOTS),
                   event=event, event_sync=sync)


@functools.cache
def _uuid(index: int) -> str:
    import torch

    return str(torch.cuda.get_device_properties(index).uuid)


def local_index(uuid: str) -> int | None:
    """This process's index of the GPU with ``uuid`` (None when it is not visible)."""
    import torch

    for i in range(torch.cuda.device_count()):
        if _uuid(i) == uuid:
            return i
    return None


@dataclass
class _Sent:
    snapshots: list[Any]
    counters: list[tuple[bytes, int, int]]  # (ref counter name, slot, device) per tensor
    nbytes: int


@dataclass
class Exporter:
    """The sender's side of CUDA IPC on one connection: snapshots waiting for their ack.

    Attributes:
        pending: unacknowledged frames by number.
        pending_bytes: their total size.
        disabled: why CUDA IPC was switched off on the connection (empty: it is not).
        stats: counters shared with the connection (``cuda_ipc_sent``, ``cuda_ipc_acked``).
    """

    stats: dict[str, int]
    pending: dict[int, _Sent] = field(default_factory=dict)
    pending_bytes: int = 0
    disabled: str = ""
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def frame(self, decide: Callable[[], bool]) -> FrameExport:
        """A hook for one frame; ``decide()`` says (once, when needed) whether to export."""
        return FrameExport(self, decide)

    def _export(self, tensors: list[Any]) -> tuple[int, list[dict[str, Any]]]:
        snapshots: list[Any] = []
        counters: list[tuple[bytes, int, int]] = []
        descriptors: list[dict[str, Any]] = []
        with self._lock:
            seq = self._next
            self._next += 1
        import torch

        try:
            for i, tensor in enumerate(tensors):
                t = tensor.detach()
                if t.is_conj():
                    t = t.resolve_conj()
                if t.is_neg():
                    t = t.resolve_neg()
                snap = t.clone(memory_format=torch.contiguous_format)
                (device, handle, size, offset, ref, ref_offset, event,
                 sync) = snap.untyped_storage()._share_cuda_()
                snapshots.append(snap)
                counters.append((ref, int(ref_offset), int(device)))
                desc = IpcHandle(frame=seq, index=i, device=int(device), uuid=_uuid(device),
                                 handle=bytes(handle), size=int(size), offset=int(offset),
                                 ref_counter=bytes(ref).decode(),
                                 ref_counter_offset=int(ref_offset),
                                 event=bytes(event or b""), event_sync=bool(sync))
                descriptors.append(desc.to_json())
        except BaseException:
            _release(counters)
            raise
        nbytes = sum(s.numel() * s.element_size() for s in snapshots)
        with self._lock:
            self.pending[seq] = _Sent(snapshots, counters, nbytes)
            self.pending_bytes += nbytes
            self.stats["cuda_ipc_sent"] += len(snapshots)
        return seq, descriptors

    def _pop(self, seq: int) -> _Sent | None:
        with self._lock:
            sent = self.pending.pop(seq, None)
            if sent is not None:
                self.pending_bytes -= sent.nbytes
            return sent

    def ack(self, seq: int) -> None:
        """The receiver copied and released frame ``seq``: free its snapshots."""
        sent = self._pop(seq)
        if sent is not None:
            self.stats["cuda_ipc_acked"] += len(sent.snapshots)

    def nack(self, seq: int, released: list[int]) -> None:
        """The receiver could not use frame ``seq``; it released the handles in ``released``.

        The counters of the other handles are released here (nobody else will).
        """
        sent = self._pop(seq)
        if sent is not None:
            _release([c for i, c in enumerate(sent.counters) if i not in set(released)])

    def cancel(self, seq: int) -> None:
        """Frame ``seq`` was never sent: release every counter and drop the snapshots."""
        sent = self._pop(seq)
        if sent is not None:
            self.stats["cuda_ipc_sent"] -= len(sent.snapshots)
            _release(sent.counters)

    def close(self) -> None:
        """Drop every reference; torch keeps blocks a receiver may still read (its limbo)."""
        with self._lock:
            self.pending.clear()
            self.pending_bytes = 0


def _release(counters: list[tuple[bytes, int, int]]) -> None:
    if not counters:
        return
    import torch

    for ref, slot, device in counters:
        release = torch.UntypedStorage._release_ipc_counter
        release(ref, slot, device=device)  # type: ignore[no-untyped-call]


class FrameExport:
    """The :class:`CudaExport` hook of one frame (made by :meth:`Exporter.frame`)."""

    def __init__(self, exporter: Exporter, decide: Callable[[], bool]) -> None:
        self.exporter = exporter
        self.decide = decide
        self.seq: int | None = None

    def export(self, tensors: list[Any]) -> list[dict[str, Any] | None]:
        """Snapshot and share every tensor when the connection takes CUDA IPC.

        When torch cannot export a handle here (an allocator without IPC support, out of
        memory for the snapshot), the frame is staged through the host instead and CUDA
        IPC is switched off on the connection, with the reason in ``exporter.disabled``.
        """
        if self.decide():
            try:
                self.seq, descriptors = self.exporter._export(tensors)
                return list(descriptors)
            except RuntimeError as exc:
                self.exporter.disabled = f"exporting a CUDA IPC handle failed here: {exc}"
        self.exporter.stats["cuda_staged_sent"] += len(tensors)
        return [None] * len(tensors)

    def cancel(self) -> None:
        """Release the handles of a frame that will not be sent."""
        if self.seq is not None:
            self.exporter.cancel(self.seq)


class FrameImport:
    """The receiver's side for one frame: opens ``$cuda_ipc`` nodes, then says ack or nack.

    Args:
        check: raises :class:`CudaIpcError` when this connection must refuse CUDA IPC
            (the peer is on another host, CUDA IPC is off here, no CUDA).
        stats: the connection's counters (``cuda_ipc_received``).
        peer: printable peer name for messages.
    """

    def __init__(self, check: Callable[[], None], stats: dict[str, int], peer: str) -> None:
        self.check = check
        self.stats = stats
        self.peer = peer
        self.frames: dict[int, list[int]] = {}  # frame -> indices opened and released here

    def __call__(self, node: dict[str, Any]) -> Any:
        """Open one node and return the receiver's own copy of the tensor."""
        import torch

        h = IpcHandle.from_json(node["$cuda_ipc"])
        released = self.frames.setdefault(h.frame, [])
        name = node.get("dtype")
        dtype = getattr(torch, name, None) if isinstance(name, str) else None
        shape = node.get("shape")
        if not isinstance(dtype, torch.dtype) or not isinstance(shape, list) or len(
                shape) > 64 or not all(isinstance(n, int) and not isinstance(n, bool)
                                       and n >= 0 for n in shape):
            raise WireError(f"CUDA IPC tensor with bad dtype {name!r:.40} or shape "
                            f"{shape!r:.80}")
        if math.prod(shape) * dtype.itemsize != h.size:
            raise WireError(f"CUDA IPC storage of {h.size} bytes does not hold shape "
                            f"{shape} of {name}")
        self.check()
        index = local_index(h.uuid)
        dev = torch.cuda.current_device() if index is None else index
        storage: Any
        try:
            storage = torch.UntypedStorage._new_shared_cuda(
                dev, h.handle, h.size, h.offset, h.ref_counter.encode(),
                h.ref_counter_offset, h.event or bytes(64), h.event_sync)
        except RuntimeError as exc:
            raise CudaIpcError(f"opening the CUDA IPC handle of a {name} tensor {shape} "
                               f"from {self.peer} on cuda:{dev} failed: {exc}") from None
        src = None
        error = None
        try:
            out = torch.empty(shape, dtype=dtype, device=f"cuda:{dev}")
            src = torch.empty(0, dtype=dtype, device=f"cuda:{dev}").set_(
                storage, 0, shape, out.stride())
            out.copy_(src)
            torch.cuda.current_stream(dev).synchronize()
        except RuntimeError as exc:
            error = CudaIpcError(f"copying a {name} tensor {shape} out of a CUDA IPC handle "
                                 f"from {self.peer} failed: {exc}")
        finally:
            # Dropping the last reference to the opened storage makes torch synchronize
            # the stream and decrement the sender's counter: released here.
            src = storage = None
            released.append(h.index)
        if error is not None:
            raise error
        self.stats["cuda_ipc_received"] += 1
        return out

    def replies(self, error: str = "") -> list[dict[str, Any]]:
        """The control messages to send back: one ack (or nack) per frame seen."""
        if error:
            return [{"nack": {"frame": f, "released": r, "error": error[:512]}}
                    for f, r in self.frames.items()]
        return [{"ack": f} for f in self.frames]
