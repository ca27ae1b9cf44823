"""Carry an exception from a worker process to its parent without pickle.

The worker sends :func:`describe` (type name, message, traceback text: plain data); the
parent calls :func:`rebuild`, which returns a :class:`~nonsense_hpc.errors.RemoteError`.
When the original type is a builtin exception (``ValueError``, ``KeyError``,
``ZeroDivisionError``...), the returned error is an instance of *both* RemoteError and
that type, so ``except ValueError`` in the caller still works, and the message ends with
the worker's traceback.
"""

from __future__ import annotations

import builtins
import traceback
from typing import Any

from nonsense_hpc.errors import RemoteError

__all__ = ["describe", "rebuild"]

_HYBRIDS: dict[str, type[RemoteError]] = {}


def describe(exc: BaseException) -> list[Any]:
    """Plain-data description of an exception: ``[module, qualname, message, traceback]``."""
    kind = type(exc)
    text = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    return [kind.__module__, kind.__qualname__, str(exc), text]


def _hybrid(name: str) -> type[RemoteError]:
    cls = _HYBRIDS.get(name)
    if cls is not None:
        return cls
    base = getattr(builtins, name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        return RemoteError
    try:
        cls = type(name, (RemoteError, base), {"__module__": "nonsense_hpc.errors",
                                                "__str__": BaseException.__str__})
    except TypeError:
        return RemoteError
    _HYBRIDS[name] = cls
    return cls


def rebuild(desc: Any, where: str) -> RemoteError:
    """The exception to raise in the parent for a worker's :func:`describe` output.

    Args:
        desc: what :func:`describe` produced (anything malformed gives a plain
            RemoteError).
        where: who raised it, for the message ("map worker 2 (pid 1234)").
    """
    if not (isinstance(desc, list | tuple) and len(desc) == 4
            and all(isinstance(x, str) for x in desc)):
        return RemoteError(f"{where} failed (unreadable error report: {desc!r})")
    module, qualname, message, text = desc
    cls = _hybrid(qualname) if module == "builtins" else RemoteError
    full = qualname if module == "builtins" else f"{module}.{qualname}"
    err = cls(f"{where} raised {full}: {message}", text)
    err.remote_type = full  # type: ignore[attr-defined]
    return err
