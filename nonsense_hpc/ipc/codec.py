"""Safe encoding of Python values and tensors: a JSON header plus raw buffers, no pickle.

One message is a *frame*::

    prefix    16 bytes: magic b"NHI1", header length u32, buffer count u32, flags u32
    lengths   8 bytes per buffer (u64, little-endian)
    header    UTF-8 JSON, the value's structure (below)
    buffers   raw bytes: tensor and array data (C order), bytes objects

The header is a JSON tree where every JSON *object* is a tag, so user data can never be
mistaken for structure:

    None, bool, int, str        themselves (ints of any size)
    float                       itself; {"$f": "nan" | "inf" | "-inf"} when not finite
    list                        a JSON array
    tuple                       {"$tuple": [...]}
    dict                        {"$dict": [[key, value], ...]} (keys: str, int, float,
                                bool, None, bytes, tuples of these)
    bytes / bytearray           {"$bytes": buffer index}
    numpy array / scalar        {"$nd": index, "dtype": descr, "shape": [...], "scalar": b}
    torch tensor                {"$torch": index, "dtype": "float32", "shape": [...],
                                "device": "cpu" | "cuda:0"}; a CUDA tensor also says
                                "transport": "host" (staged through host memory)
    CUDA tensor by CUDA IPC     {"$cuda_ipc": {handle fields}, "dtype": ..., "shape": ...,
                                "device": "cuda:0", "transport": "cuda_ipc"}
                                (see :mod:`nonsense_hpc.ipc.cuda_ipc`)

A *control* frame (flag bit 1 in the prefix) carries no value: its header is a JSON
object for the connection itself (hello, ack, nack; see
:mod:`nonsense_hpc.ipc.handshake`). It has no buffers and at most
:data:`MAX_CONTROL_BYTES` of header.

Tensors and arrays of any dtype and shape are accepted; non-contiguous ones are made
contiguous (the only copy), contiguous CPU ones are sent straight from their memory. The
dtype names follow :mod:`nonsense_hpc.wire` (numpy names, ``bfloat16``) so a tensor
descriptor reads the same everywhere in the package. CUDA tensors are staged through the
host and land on the same device index when the receiver has it (else on the CPU), unless
``encode`` gets a ``cuda`` hook that sends them as CUDA IPC handles (only ``ipc.server`` /
``ipc.client`` connections pass one, after their hello; see docs/ipc.md).

:func:`encode` walks the whole value first and raises :class:`TypeError` for anything it
cannot carry, so nothing is ever sent half-way. Frames are written and read by
:mod:`nonsense_hpc.ipc.frames`, whose ``read_frame`` validates everything it reads and
raises :class:`~nonsense_hpc.errors.WireError` for malformed input.

Example:
    >>> import numpy as np
    >>> enc = encode({"name": "w", "data": np.arange(6.0).reshape(2, 3).T})
    >>> out = decode(enc.header, enc.buffers)
    >>> out["name"], out["data"].shape, float(out["data"][2, 1])
    ('w', (3, 2), 5.0)
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nonsense_hpc.errors import WireError

if TYPE_CHECKING:
    from nonsense_hpc.ipc.cuda_ipc import CudaExport

__all__ = [
    "CONTROL",
    "FLAG_CONTROL",
    "MAGIC",
    "MAX_CONTROL_BYTES",
    "MAX_HEADER_BYTES",
    "PREFIX",
    "Encoded",
    "decode",
    "encode",
]

# Framing (prefix, lengths, control frames, reading a frame) lives in
# nonsense_hpc.ipc.frames; these names stay reachable here, resolved on first use.
_FRAME_NAMES = ("control_frame", "frame_buffers", "from_bytes", "parse_control",
                "read_frame", "to_bytes")


def __getattr__(name: str) -> Any:
    if name in _FRAME_NAMES:
        from nonsense_hpc.ipc import frames

        value = getattr(frames, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

MAGIC = b"NHI1"
MAX_HEADER_BYTES = 64 * 1024**2
MAX_BUFFERS = 1 << 20
MAX_DEPTH = 200
_PREFIX = struct.Struct("<4sIII")
PREFIX = _PREFIX
FLAG_CONTROL = 1
MAX_CONTROL_BYTES = 64 * 1024
CONTROL: Any = type("ControlFrame", (), {"__repr__": lambda self: "CONTROL"})()
"""What :func:`read_frame` returns for a control frame (after ``on_control`` saw it)."""
_KEY_SCALARS = (str, int, float, bool, type(None), bytes)
_JSON_OUT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_JSON_IN = json.JSONDecoder()
_DIM = r"(?:0|[1-9][0-9]{0,18})"
_BARE_TENSOR = re.compile(  # the header encode() writes for a bare CPU tensor
    rf'\{{"\$torch":0,"dtype":"([a-z0-9_]{{1,32}})","shape":\[((?:{_DIM},){{0,63}}{_DIM})?\],'
    r'"device":"cpu"\}')


@dataclass
class Encoded:
    """An encoded value: the JSON header and the raw buffers it refers to.

    Attributes:
        header: UTF-8 JSON bytes.
        buffers: byte views (zero-copy where the source was contiguous CPU memory).
        keep: objects that own the memory of ``buffers`` (kept alive until sent).
    """

    header: bytes
    buffers: list[memoryview] = field(default_factory=list)
    keep: list[Any] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Total size of the frame (prefix, lengths, header and buffers)."""
        return (_PREFIX.size + 8 * len(self.buffers) + len(self.header)
                + sum(b.nbytes for b in self.buffers))


class _Encoder:
    def __init__(self, cuda: CudaExport | None = None) -> None:
        self.buffers: list[memoryview] = []
        self.keep: list[Any] = []
        self.path: set[int] = set()
        self.cuda = cuda
        self.cuda_nodes: list[tuple[dict[str, Any], Any]] = []

    def add(self, view: memoryview, owner: Any) -> int:
        self.buffers.append(view)
        self.keep.append(owner)
        return len(self.buffers) - 1

    def walk(self, value: Any, depth: int, where: str) -> Any:
        if depth > MAX_DEPTH:
            raise TypeError(f"value nested deeper than {MAX_DEPTH} levels at {where}")
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            return {"$f": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if isinstance(value, bytes | bytearray | memoryview):
            view = memoryview(value).cast("B") if isinstance(value, memoryview) else (
                memoryview(value))
            if isinstance(value, memoryview) and not value.c_contiguous:
                raise TypeError(f"non-contiguous memoryview at {where}")
            return {"$bytes": self.add(view, value)}
        if isinstance(value, list | tuple):
            ident = id(value)
            if ident in self.path:
                raise TypeError(f"circular reference at {where}")
            self.path.add(ident)
            items = [self.walk(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value)]
            self.path.discard(ident)
            return items if isinstance(value, list) else {"$tuple": items}
        if isinstance(value, dict):
            ident = id(value)
            if ident in self.path:
                raise TypeError(f"circular reference at {where}")
            self.path.add(ident)
            pairs = []
            for k, v in value.items():
                _check_key(k, where)
                pairs.append([self.walk(k, depth + 1, f"{where} key {k!r}"),
                              self.walk(v, depth + 1, f"{where}[{k!r}]")])
            self.path.discard(ident)
            return {"$dict": pairs}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            return self.tensor(value, torch, where)
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.ndarray | np.generic):
            return self.ndarray(value, np, where)
        raise TypeError(
            f"cannot send a value of type {type(value).__module__}.{type(value).__qualname__}"
            f" at {where}: supported are None, bool, int, float, str, bytes, list, tuple, "
            f"dict, numpy arrays and torch tensors")

    def ndarray(self, value: Any, np: Any, where: str) -> Any:
        scalar = isinstance(value, np.generic)
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"numpy array of dtype {arr.dtype} (Python objects) at {where}")
        descr = _numpy_descr(arr.dtype)
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        flat = arr.reshape(-1).view(np.uint8) if arr.size else np.empty(0, np.uint8)
        return {"$nd": self.add(memoryview(flat), arr), "dtype": descr,
                "shape": list(arr.shape), "scalar": scalar}

    def tensor(self, value: Any, torch: Any, where: str) -> Any:
        if value.layout != torch.strided:
            raise TypeError(f"torch tensor with layout {value.layout} at {where}: only dense "
                            f"(strided) tensors can be sent; call .to_dense() first")
        if value.is_cpu and not value.is_quantized:
            return self.stage(value, torch)
        if value.is_quantized or value.device.type == "meta":
            raise TypeError(f"quantized or meta torch tensor at {where}")
        if value.is_cuda and self.cuda is not None and value.numel():
            node = {"dtype": str(value.dtype).removeprefix("torch."),
                    "shape": list(value.shape), "device": str(value.device)}
            self.cuda_nodes.append((node, value))  # exported after the walk succeeded
            return node
        return self.stage(value, torch)

    def stage(self, value: Any, torch: Any) -> dict[str, Any]:
        cpu = value.is_cpu
        device = "cpu" if cpu else str(value.device)
        t = value.detach() if value.requires_grad else value
        if not cpu:
            t = t.to("cpu")  # staged through the host
        if not t.is_contiguous():
            t = t.contiguous()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        dtype, numpy_ok = _torch_dtype(t.dtype)
        if numpy_ok and t.numel():
            view = memoryview(t.numpy()).cast("B")  # C-contiguous: checked above
        elif t.numel():
            view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
        else:
            view = memoryview(b"")
        node = {"$torch": self.add(view, t), "dtype": dtype, "shape": list(t.shape),
                "device": device}
        if not cpu:
            node["transport"] = "host"
        return node

    def export_cuda(self) -> None:
        if not self.cuda_nodes or self.cuda is None:
            return
        import torch

        descriptors = self.cuda.export([t for _, t in self.cuda_nodes])
        for (node, t), desc in zip(self.cuda_nodes, descriptors, strict=True):
            if desc is None:
                node.update(self.stage(t, torch))
            else:
                node.update({"$cuda_ipc": desc, "transport": "cuda_ipc"})


@functools.cache
def _torch_dtype(dtype: Any) -> tuple[str, bool]:
    """A torch dtype's wire name and whether ``Tensor.numpy()`` supports it."""
    import torch

    try:
        torch.zeros(1, dtype=dtype).numpy()
        numpy_ok = True
    except (TypeError, RuntimeError):
        numpy_ok = False  # bfloat16, complex32, float8 ...: sent as raw bytes
    return str(dtype).removeprefix("torch."), numpy_ok


@functools.cache
def _numpy_descr(dtype: Any) -> Any:
    import numpy as np

    return np.lib.format.dtype_to_descr(dtype)


def _check_key(key: Any, where: str) -> None:
    if isinstance(key, _KEY_SCALARS):
        if isinstance(key, float) and math.isnan(key):
            raise TypeError(f"dict key NaN at {where} cannot be looked up after transfer")
        return
    if isinstance(key, tuple):
        for k in key:
            _check_key(k, where)
        return
    raise TypeError(f"dict key of type {type(key).__name__} at {where}: keys must be str, "
                    f"int, float, bool, None, bytes or tuples of these")


def encode(value: Any, *, cuda: CudaExport | None = None) -> Encoded:
    """Encode a value; nothing is sent, so an unsupported value fails here, before any I/O.

    Args:
        value: None, bool, int, float, str, bytes, list, tuple, dict, numpy array or scalar,
            torch tensor, nested freely.
        cuda: sends non-empty CUDA tensors as CUDA IPC handles where it says so (None:
            every CUDA tensor is staged through host memory).

    Returns:
        The header and the buffers.

    Raises:
        TypeError: the value (or something inside it) cannot be carried; the message
            names where (``value['key'][2]``).
    """
    enc = _Encoder(cuda)
    torch = sys.modules.get("torch")
    if torch is not None and type(value) is torch.Tensor and value.is_cpu and (
            value.layout == torch.strided and not value.is_quantized):
        # The commonest message, a bare CPU tensor: the same header without the walk
        # and the JSON encoder (a dtype name and ints need no escaping).
        node = enc.stage(value, torch)
        shape = ",".join(map(str, node["shape"]))
        text = f'{{"$torch":0,"dtype":"{node["dtype"]}","shape":[{shape}],"device":"cpu"}}'
        return Encoded(text.encode(), enc.buffers, enc.keep)
    tree = enc.walk(value, 0, "value")
    enc.export_cuda()
    try:
        header = _JSON_OUT.encode(tree).encode()
        if len(header) > MAX_HEADER_BYTES:
            raise TypeError(f"value structure encodes to {len(header)} bytes of header, more "
                            f"than {MAX_HEADER_BYTES}; put bulk data in arrays or bytes")
    except BaseException:
        if enc.cuda_nodes and cuda is not None:
            cuda.cancel()
        raise
    return Encoded(header, enc.buffers, enc.keep)


def decode(header: bytes | bytearray | memoryview | str, buffers: Sequence[Any], *,
           cuda_import: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """Rebuild a value from its header and buffers (the inverse of :func:`encode`).

    Args:
        header: the JSON header (UTF-8 bytes, or text).
        buffers: the raw buffers in order (numpy uint8 arrays are used without copying).
        cuda_import: opens a ``$cuda_ipc`` node into a tensor (None: such a node is a
            WireError: only a connection that negotiated CUDA IPC may carry one).

    Raises:
        WireError: the header is malformed or does not match the buffers.
    """
    try:
        text = header if isinstance(header, str) else str(header, "utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"ipc header is not UTF-8 JSON: {exc}") from None
    bare = _BARE_TENSOR.fullmatch(text)
    if bare is not None:  # what encode writes for a bare CPU tensor: no JSON parse needed
        shape = [int(n) for n in bare[2].split(",")] if bare[2] else []
        return _Decoder(buffers, cuda_import).tensor(
            {"$torch": 0, "dtype": bare[1], "shape": shape, "device": "cpu"})
    try:
        tree = _JSON_IN.decode(text)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"ipc header is not UTF-8 JSON: {exc}") from None
    try:
        return _Decoder(buffers, cuda_import).walk(tree)
    except RecursionError:
        raise WireError("ipc header nested too deeply") from None


class _Decoder:
    def __init__(self, buffers: Sequence[Any],
                 cuda_import: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.buffers = buffers
        self.cuda_import = cuda_import

    def buffer(self, index: Any) -> Any:
        if not isinstance(index, int) or isinstance(index, bool) or not (
                0 <= index < len(self.buffers)):
            raise WireError(f"header refers to buffer {index!r}; the frame has "
                            f"{len(self.buffers)}")
        return self.buffers[index]

    def walk(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            return [self.walk(n) for n in node]
        if not isinstance(node, dict) or len(node) == 0:
            raise WireError(f"malformed ipc header node {node!r}")
        if "$dict" in node:
            out = {}
            for pair in _as_list(node["$dict"]):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise WireError(f"malformed dict entry {pair!r}")
                key = self.walk(pair[0])
                try:
                    out[key] = self.walk(pair[1])
                except TypeError:
                    raise WireError(f"unhashable dict key {key!r}") from None
            return out
        if "$tuple" in node:
            return tuple(self.walk(n) for n in _as_list(node["$tuple"]))
        if "$f" in node:
            if node["$f"] not in ("nan", "inf", "-inf"):
                raise WireError(f"malformed float {node!r}")
            return float(node["$f"])
        if "$bytes" in node:
            return bytes(self.buffer(node["$bytes"]))
        if "$nd" in node:
            return self.ndarray(node)
        if "$torch" in node:
            return self.tensor(node)
        if "$cuda_ipc" in node:
            if self.cuda_import is None:
                raise WireError("a CUDA IPC handle arrived on a channel that did not "
                                "negotiate CUDA IPC (only ipc.server/ipc.client connections do)")
            return self.cuda_import(node)
        raise WireError(f"unknown tag in ipc header: {sorted(node)}")

    def ndarray(self, node: dict[str, Any]) -> Any:
        import numpy as np

        buf = np.asarray(self.buffer(node["$nd"]), dtype=np.uint8)
        try:
            dtype = np.lib.format.descr_to_dtype(_descr(node.get("dtype")))
        except (TypeError, ValueError) as exc:
            raise WireError(f"bad numpy dtype {node.get('dtype')!r}: {exc}") from None
        shape = _shape(node.get("shape"), dtype.itemsize, buf.nbytes)
        arr = buf.view(dtype).reshape(shape) if buf.nbytes else np.empty(shape, dtype)
        return arr[()] if node.get("scalar") else arr

    def tensor(self, node: dict[str, Any]) -> Any:
        import torch

        buf = self.buffer(node["$torch"])
        name = node.get("dtype")
        known = _torch_dtype_named(name) if isinstance(name, str) else None
        if known is None:
            raise WireError(f"bad torch dtype {name!r}")
        dtype, np_dtype = known
        nbytes = buf.nbytes if hasattr(buf, "nbytes") else memoryview(buf).nbytes
        shape = _shape(node.get("shape"), dtype.itemsize, nbytes)
        if not nbytes:
            t = torch.empty(shape, dtype=dtype)
        elif np_dtype is not None and hasattr(buf, "view") and not isinstance(
                buf, torch.Tensor):
            t = torch.from_numpy(buf.view(np_dtype).reshape(shape))
        else:
            raw = torch.from_numpy(buf) if not isinstance(buf, torch.Tensor) else buf
            t = raw.view(dtype).reshape(shape)
        device = node.get("device", "cpu")
        if device != "cpu" and isinstance(device, str) and device.startswith("cuda") and (
                torch.cuda.is_available()):
            index = int(device.partition(":")[2] or 0)
            if index < torch.cuda.device_count():
                t = t.to(f"cuda:{index}")
        return t


_TORCH_DTYPES: dict[str, tuple[Any, Any]] = {}


def _torch_dtype_named(name: str) -> tuple[Any, Any] | None:
    """The torch dtype called ``name`` and its numpy dtype (None: no numpy twin)."""
    known = _TORCH_DTYPES.get(name)
    if known is None:
        import torch

        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            return None  # nothing is cached for names that are no dtype
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype if _torch_dtype(dtype)[1] else None
        known = _TORCH_DTYPES[name] = (dtype, np_dtype)
    return known


def _as_list(node: Any) -> list[Any]:
    if not isinstance(node, list):
        raise WireError(f"malformed ipc header: expected a list, got {node!r}")
    return node


def _descr(descr: Any) -> Any:
    # dtype_to_descr gives a str or a list of (name, descr[, shape]) for structured dtypes;
    # JSON turns tuples into lists, so turn them back.
    if isinstance(descr, str):
        return descr
    if isinstance(descr, list):
        return [tuple(_descr(x) if isinstance(x, list) and i == 1 else
                      (tuple(x) if isinstance(x, list) else x)
                      for i, x in enumerate(field)) for field in descr]
    raise WireError(f"bad numpy dtype description {descr!r}")


def _shape(shape: Any, itemsize: int, nbytes: int) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > 64 or not all(
            type(n) is int and n >= 0 for n in shape):
        raise WireError(f"bad shape {shape!r}")
    if math.prod(shape) * itemsize != nbytes:
        raise WireError(f"buffer of {nbytes} bytes does not hold shape {shape} of "
                        f"{itemsize}-byte items")
    return tuple(shape)
