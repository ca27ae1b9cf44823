"""Reduction operators: builtin names on a vectorised fast path, or a Python callable.

Builtin ops work on flat numpy arrays of the same dtype. float16 and bfloat16 are reduced
through torch (numpy has no bfloat16, and its float16 arithmetic is slow); the memory
itself always moves as raw bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc.errors import ConfigError

__all__ = ["BUILTIN_OPS", "ReduceOp", "resolve_op"]

BUILTIN_OPS = ("sum", "avg", "max", "min", "prod")

Array = npt.NDArray[Any]

_NUMPY_BINARY: dict[str, Callable[..., Any]] = {
    "sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply,
}


class ReduceOp:
    """A reduction: either a builtin name or a user callable ``f(a, b) -> a``.

    Attributes:
        name: the builtin name, or ``"callable"``.
        fn: the user callable (None for builtins).
    """

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn: Callable[[Any, Any], Any] | None = None) -> None:
        self.name, self.fn = name, fn

    @property
    def builtin(self) -> bool:
        """Whether this is one of :data:`BUILTIN_OPS`."""
        return self.fn is None

    def combine(self, acc: Array, other: Array, torch_dtype: Any = None) -> None:
        """``acc = op(acc, other)`` in place on flat arrays (builtin ops only).

        Args:
            acc: accumulator, modified in place.
            other: the next operand (same length, same dtype).
            torch_dtype: for float16/bfloat16 data carried as uint16, the torch dtype to
                compute in.
        """
        if torch_dtype is not None:
            import torch

            a = torch.from_numpy(acc).view(torch_dtype)
            b = torch.from_numpy(other).view(torch_dtype)
            if self.name in ("sum", "avg"):
                a.add_(b)
            elif self.name == "max":
                torch.maximum(a, b, out=a)
            elif self.name == "min":
                torch.minimum(a, b, out=a)
            else:
                a.mul_(b)
            return
        _NUMPY_BINARY[self.name](acc, other, out=acc)

    def identity(self, dtype: np.dtype[Any], torch_dtype: Any = None) -> Any:
        """The value a rank with no data contributes (0 for sum, -inf for max, ...)."""
        if self.name in ("sum", "avg"):
            return 0
        if self.name == "prod":
            return 1
        if torch_dtype is not None:  # float16 / bfloat16
            return -float("inf") if self.name == "max" else float("inf")
        if np.issubdtype(dtype, np.floating):
            return -np.inf if self.name == "max" else np.inf
        info_i = np.iinfo(dtype)
        return info_i.min if self.name == "max" else info_i.max

    def __repr__(self) -> str:
        return f"ReduceOp({self.name!r})"


def resolve_op(op: str | Callable[[Any, Any], Any] | ReduceOp) -> ReduceOp:
    """Turn ``"sum"``, ``"avg"``, ... or a callable into a :class:`ReduceOp`.

    Raises:
        ConfigError: an unknown op name (the message lists the valid ones).
        TypeError: neither a name nor a callable.
    """
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        name = op.lower()
        if name == "mean":
            name = "avg"
        if name not in BUILTIN_OPS:
            raise ConfigError(f"unknown reduction {op!r}; valid: {', '.join(BUILTIN_OPS)} "
                              "or a callable f(a, b) -> a")
        return ReduceOp(name)
    if callable(op):
        return ReduceOp("callable", op)
    raise TypeError(f"op must be one of {BUILTIN_OPS} or a callable, got {type(op).__name__}")
