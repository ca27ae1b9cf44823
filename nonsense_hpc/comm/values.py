"""Helpers that move between a collective's values and flat byte buffers.

Used by the Tree's collectives: packing leaves into one buffer and back, cloning and
copying tables of tensors, dividing for "avg", the bits of an op's identity, and viewing
raw bytes as the user's kind of leaf.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc.comm.buffers import Leaf, flatten
from nonsense_hpc.comm.ops import ReduceOp

__all__ = ["as_user", "clone", "copy_into", "divide", "first_leaf", "identity_bits", "pack",
           "spec_nbytes", "unpack", "user_bytes"]

Array = npt.NDArray[Any]


def first_leaf(value: Any) -> Any:
    """The first leaf of a value in flatten() order (None for an empty table)."""
    while isinstance(value, dict | list | tuple):
        if not value:
            return None
        value = value[min(value, key=str)] if isinstance(value, dict) else value[0]
    return value


def pack(leaves: list[Leaf]) -> Array:
    """The leaves' bytes as one uint8 buffer (a view when there is one leaf)."""
    if not leaves:
        return np.empty(0, dtype=np.uint8)
    if len(leaves) == 1:
        return leaves[0].flat.view(np.uint8)
    return np.concatenate([leaf.flat.view(np.uint8) for leaf in leaves])


def unpack(buf: Array, leaves: list[Leaf]) -> None:
    """Copy a packed buffer back into the leaves (and write staged leaves back)."""
    offset = 0
    for leaf in leaves:
        dest = leaf.flat.view(np.uint8)
        if dest.ctypes.data != buf[offset:].ctypes.data:
            np.copyto(dest, buf[offset:offset + leaf.nbytes])
        offset += leaf.nbytes
        leaf.write_back()


def spec_nbytes(spec: Any) -> int:
    """Bytes of data a value of this spec holds."""
    kind = spec[0]
    if kind == "dict":
        return sum(spec_nbytes(v) for _, v in spec[1])
    if kind in ("list", "tuple"):
        return sum(spec_nbytes(v) for v in spec[1])
    itemsize = 2 if spec[1] in ("float16", "bfloat16") else np.dtype(spec[1]).itemsize
    return int(np.prod(spec[2], dtype=np.int64)) * itemsize


def copy_into(dst: Any, src: Any) -> None:
    """Copy every leaf of ``src`` into the matching leaf of ``dst``."""
    for d, s in zip(flatten(dst, "out"), flatten(src), strict=True):
        np.copyto(d.flat, s.flat)
        d.write_back()


def clone(value: Any) -> Any:
    """A deep copy of a tensor, array, or table of them."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clone(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "clone"):
        return value.clone()
    return value


def divide(flat: Array, n: int, torch_dtype: Any) -> None:
    """Divide a flat buffer by ``n`` in place (floor division for integers)."""
    if n == 1:
        return
    if torch_dtype is not None:
        import torch

        torch.from_numpy(flat).view(torch_dtype).div_(n)
    elif np.issubdtype(flat.dtype, np.integer):
        np.floor_divide(flat, n, out=flat)
    else:
        np.divide(flat, n, out=flat)


def identity_bits(op: ReduceOp, leaf: Leaf) -> Any:
    """The op's identity for a leaf, as the bits its flat buffer holds."""
    ident = op.identity(leaf.flat.dtype, leaf.torch_dtype)
    if leaf.torch_dtype is None:
        return ident
    import torch

    return torch.tensor([ident], dtype=leaf.torch_dtype).view(torch.int16).numpy() \
        .view(np.uint16)[0]


def as_user(leaf: Leaf, raw: Array) -> Any:
    """View raw bytes as the user's kind of leaf (tensor or array) and shape."""
    shape = leaf.obj.shape
    if isinstance(leaf.obj, np.ndarray):
        return raw.view(leaf.flat.dtype).reshape(shape)
    import torch

    t = torch.from_numpy(raw.view(leaf.flat.dtype))
    if leaf.torch_dtype is not None:
        t = t.view(leaf.torch_dtype)
    return t.reshape(shape)


def user_bytes(value: Any, leaf: Leaf) -> Array:
    """A value's data as the bytes of ``leaf``'s dtype (for ``zero=``/``out=``)."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value, dtype=leaf.flat.dtype).reshape(-1).view(np.uint8)
    t = value.detach().to("cpu").contiguous().reshape(-1)
    if leaf.torch_dtype is not None:
        import torch

        t = t.to(leaf.torch_dtype).view(torch.int16)
    else:
        t = t.to(leaf.obj.dtype)
    return np.asarray(t.numpy()).view(np.uint8)
