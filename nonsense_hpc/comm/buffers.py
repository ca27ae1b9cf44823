"""Values a collective accepts, flattened to contiguous host buffers.

A value is a torch tensor, a numpy array, or a nested dict/list/tuple of them (the seed's
"table of tensors"). :func:`flatten` turns it into :class:`Leaf` objects, each with a flat
numpy view of its memory; :func:`spec_of` describes its structure, dtypes and shapes so
ranks can check they agree; :func:`fuse` packs many small leaves into buckets so they travel
in one transfer instead of one each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SUPPORTED_DTYPES", "Bucket", "Leaf", "build_zeros", "flatten", "fuse",
           "spec_hash", "spec_of", "spec_text"]

Array = npt.NDArray[Any]

SUPPORTED_DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "int64")

Spec = tuple[Any, ...]


def _torch() -> Any:
    import torch

    return torch


def _is_tensor(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("torch") and type(obj).__name__ in ("Tensor", "Parameter")


@dataclass
class Leaf:
    """One tensor or array of a value, seen as a flat contiguous host array.

    Attributes:
        obj: the user's tensor or array.
        flat: a flat numpy array over host memory holding the data (the user's own memory
            when it is contiguous on the CPU, otherwise a staging copy).
        dtype: dtype name ("float32", "bfloat16", ...).
        torch_dtype: torch dtype to compute in for float16/bfloat16, else None.
        staged: whether ``flat`` is a copy that must be written back to ``obj``.
    """

    obj: Any
    flat: Array
    dtype: str
    torch_dtype: Any
    staged: bool

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes."""
        return int(self.flat.nbytes)

    def write_back(self) -> None:
        """Copy a staged result into the user's tensor (non-contiguous or CUDA)."""
        if not self.staged:
            return
        if _is_tensor(self.obj):
            torch = _torch()
            src = torch.from_numpy(self.flat)
            if self.torch_dtype is not None:
                src = src.view(self.torch_dtype)
            self.obj.copy_(src.view(self.obj.shape))
        else:
            np.copyto(self.obj, self.flat.reshape(self.obj.shape))


def _dtype_name(dtype: Any) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


_DTYPE_NAMES: dict[Any, str] = {}


def _leaf_of(obj: Any, path: str) -> Leaf:
    if _is_tensor(obj):
        name = _dtype_name(obj.dtype)
        if name not in SUPPORTED_DTYPES:
            raise TypeError(f"{path}: tensor dtype {name} is not supported; "
                            f"supported: {', '.join(SUPPORTED_DTYPES)}")
        t = obj.detach() if obj.requires_grad else obj
        staged = not t.is_cpu or not t.is_contiguous()
        if staged:
            torch = _torch()
            pin = t.is_cuda
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
            host.copy_(t)
            t = host
        if name in ("float16", "bfloat16"):
            torch = _torch()
            flat = t.view(torch.int16).numpy().view(np.uint16).reshape(-1)
            return Leaf(obj, flat, name, t.dtype, staged)
        # numpy's reshape of a contiguous array is a view, and cheaper than torch's
        return Leaf(obj, t.numpy().reshape(-1), name, None, staged)
    if isinstance(obj, np.ndarray):
        name = obj.dtype.name
        if name not in SUPPORTED_DTYPES:
            raise TypeError(f"{path}: array dtype {name} is not supported; "
                            f"supported: {', '.join(SUPPORTED_DTYPES)}")
        staged = not (obj.flags.c_contiguous and obj.flags.writeable)
        flat = np.ascontiguousarray(obj).reshape(-1)
        if staged:
            flat = flat.copy()
        torch_dtype = _torch().float16 if name == "float16" else None
        return Leaf(obj, flat, name, torch_dtype, staged)
    raise TypeError(f"{path}: a collective takes torch tensors, numpy arrays, or dicts, "
                    f"lists and tuples of them; got {type(obj).__name__}")


def flatten(value: Any, path: str = "value") -> list[Leaf]:
    """All leaves of ``value`` in a fixed order (dict keys sorted).

    Raises:
        TypeError: a leaf is not a tensor or array, or has an unsupported dtype.
    """
    if not isinstance(value, dict | list | tuple):
        return [_leaf_of(value, path)]
    return list(_walk(value, path))


def _walk(value: Any, path: str) -> Iterator[Leaf]:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _walk(value[key], f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield _leaf_of(value, path)


def spec_of(value: Any) -> Spec:
    """A hashable description of the structure, kinds, dtypes and shapes of ``value``.

    Raises:
        TypeError: a leaf is not a tensor or array.
    """
    if isinstance(value, dict):
        return ("dict", tuple((str(k), spec_of(value[k])) for k in sorted(value, key=str)))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(spec_of(v) for v in value))
    if _is_tensor(value):
        return ("torch", _dtype_name(value.dtype), tuple(value.shape),
                "cpu" if value.is_cpu else value.device.type)
    if isinstance(value, np.ndarray):
        return ("numpy", value.dtype.name, tuple(value.shape), "cpu")
    raise TypeError(f"a collective takes torch tensors, numpy arrays, or dicts, lists and "
                    f"tuples of them; got {type(value).__name__}")


def spec_hash(spec: Spec) -> int:
    """A 62-bit hash of a spec, equal on every process (Python's hash() is salted)."""
    value = _HASHES.get(spec)
    if value is None:
        digest = hashlib.blake2b(repr(spec).encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little") >> 2
        if len(_HASHES) < 4096:  # specs of a program are few; memo them
            _HASHES[spec] = value
    return value


_HASHES: dict[Spec, int] = {}


def spec_text(spec: Spec) -> str:
    """Short human text for a spec, used in mismatch errors."""
    kind = spec[0]
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {spec_text(v)}" for k, v in spec[1]) + "}"
    if kind in ("list", "tuple"):
        inner = ", ".join(spec_text(v) for v in spec[1])
        return f"[{inner}]" if kind == "list" else f"({inner})"
    shape = "x".join(str(d) for d in spec[2]) or "scalar"
    where = "" if spec[3] == "cpu" else f"@{spec[3]}"
    return f"{kind}.{spec[1]}[{shape}]{where}"


def build_zeros(spec: Spec) -> Any:
    """A value of the given spec filled with zeros (for ranks that have no data)."""
    kind = spec[0]
    if kind == "dict":
        return {k: build_zeros(v) for k, v in spec[1]}
    if kind == "list":
        return [build_zeros(v) for v in spec[1]]
    if kind == "tuple":
        return tuple(build_zeros(v) for v in spec[1])
    if kind == "torch":
        torch = _torch()
        device = spec[3] if spec[3] == "cpu" or torch.cuda.is_available() else "cpu"
        return torch.zeros(spec[2], dtype=getattr(torch, spec[1]), device=device)
    return np.zeros(spec[2], dtype=spec[1])


@dataclass
class Bucket:
    """Leaves of one dtype packed into one contiguous buffer (or one large leaf alone).

    Attributes:
        leaves: the leaves it carries.
        flat: the buffer the collective runs on.
        fused: whether ``flat`` is a packed copy (then :meth:`unpack` copies results out).
    """

    leaves: list[Leaf]
    flat: Array
    fused: bool

    @property
    def dtype(self) -> str:
        """Dtype name of every leaf in the bucket."""
        return self.leaves[0].dtype

    @property
    def torch_dtype(self) -> Any:
        """Compute dtype for float16/bfloat16 buckets."""
        return self.leaves[0].torch_dtype

    def unpack(self) -> None:
        """Copy a fused bucket's results back into its leaves."""
        if not self.fused:
            return
        offset = 0
        for leaf in self.leaves:
            n = leaf.flat.size
            np.copyto(leaf.flat, self.flat[offset:offset + n])
            offset += n


def fuse(leaves: list[Leaf], bucket_bytes: int) -> list[Bucket]:
    """Group leaves into buckets of at most ``bucket_bytes`` per dtype, in leaf order.

    A leaf as large as half a bucket or more travels alone, without a copy.
    """
    buckets: list[Bucket] = []
    open_: dict[str, list[Leaf]] = {}
    sizes: dict[str, int] = {}

    def close(dtype: str) -> None:
        group = open_.pop(dtype, [])
        sizes.pop(dtype, None)
        if not group:
            return
        if len(group) == 1:
            buckets.append(Bucket(group, group[0].flat, False))
            return
        flat = np.concatenate([leaf.flat for leaf in group])
        buckets.append(Bucket(group, flat, True))

    for leaf in leaves:
        if leaf.nbytes * 2 >= bucket_bytes:
            buckets.append(Bucket([leaf], leaf.flat, False))
            continue
        if sizes.get(leaf.dtype, 0) + leaf.nbytes > bucket_bytes:
            close(leaf.dtype)
        open_.setdefault(leaf.dtype, []).append(leaf)
        sizes[leaf.dtype] = sizes.get(leaf.dtype, 0) + leaf.nbytes
    for dtype in list(open_):
        close(dtype)
    return buckets
