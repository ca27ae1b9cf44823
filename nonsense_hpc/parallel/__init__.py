"""Seed parity with Lua *parallel*: run code in child processes, talk through shared memory.

Example (the seed's "simple example", in Python)::

    import torch
    from nonsense_hpc import parallel

    parallel.set_shared_size("256KiB")
    worker = '''
    parallel.print("Im a worker, my ID is:", parallel.id)
    for i in range(5):
        t = parallel.parent.receive()
        parallel.print("received object with norm:", float(t["data"].norm()))
    '''
    parallel.print("Im the parent, my ID is:", parallel.id)
    for _ in range(4):
        parallel.run(worker)
    t = {"name": "my variable", "data": torch.randn(100, 100)}
    for _ in range(5):
        for child in parallel.children:
            child.send(t)
    parallel.children.join()

In Python idiom: ``parallel.children`` is a sequence indexed from 0 (``children[0].id`` is
1), methods are called with a dot, ``set_shared_size`` replaces ``setSharedSize``.

* :func:`run` starts a child: a code string (run with ``parallel`` and ``args`` in its
  globals) or a module-level function (called with the arguments), in a clean
  interpreter.
* ``parallel.id`` (0 in the top process), ``parallel.parent`` (None in the top process),
  ``parallel.children``.
* ``send`` / ``receive`` move any supported value (primitives, lists, dicts, tensors,
  arrays) through two shared-memory segments per child; larger values stream through
  them. Both block, ``receive`` takes a ``timeout``.
* :func:`join` / ``children.join()`` / ``child.join()`` wait; a child that raised or
  died raises :class:`~nonsense_hpc.errors.RemoteError` there, with its traceback.
* Children never outlive the parent: they are terminated at exit and, if the parent is
  killed, by the kernel (parent-death signal).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from nonsense_hpc.config import parse_size
from nonsense_hpc.parallel.process import Child, Children, Parent, start_child

__all__ = [
    "DEFAULT_SHARED_SIZE",
    "Child",
    "Children",
    "Parent",
    "children",
    "id",
    "join",
    "parent",
    "print",
    "run",
    "set_shared_size",
    "shared_size",
]

DEFAULT_SHARED_SIZE = 4 * 1024**2
MIN_SHARED_SIZE = 64

id: int = 0
"""This process's parallel id: 0 in the top process, 1, 2, ... in children."""
parent: Parent | None = None
"""The parent (None in the top process)."""
children: Children = Children()
"""The children this process started, in order."""

_shared_size = DEFAULT_SHARED_SIZE
_next_id = 1


def set_shared_size(size: int | str) -> None:
    """Set the size of the shared-memory segments of children started from now on.

    Each child gets two segments of this size (one per direction). Values larger than a
    segment still go through, in pieces; larger segments mean fewer round trips.

    Args:
        size: bytes, or a size string such as ``"256KiB"`` or ``"4MiB"``.

    Raises:
        ConfigError: not a size. ValueError: smaller than 64 bytes.
    """
    global _shared_size
    value = parse_size(size)
    if value < MIN_SHARED_SIZE:
        raise ValueError(f"shared size must be at least {MIN_SHARED_SIZE} bytes, got {value}")
    _shared_size = value


def shared_size() -> int:
    """The current shared segment size in bytes."""
    return _shared_size


def run(code: str | Callable[..., Any], *args: Any) -> Child:
    """Start a child process running ``code`` (``parallel.run(code, ...)``).

    Args:
        code: Python source (run with the globals ``parallel`` and ``args``), or a
            function defined at module level (called as ``code(*args)``).
        *args: arguments, any value ``send`` accepts.

    Returns:
        The child; it is also appended to :data:`children`.

    Raises:
        TypeError: ``code`` cannot run in a clean interpreter or an argument cannot be
            sent (no process is started).
        SyntaxError: ``code`` is a string that does not compile.
    """
    global _next_id
    is_code = isinstance(code, str)
    if isinstance(code, str):
        compile(code, "<parallel.run>", "exec")  # fail here, not in the child
    child = start_child(_next_id, id, code, args, _shared_size, is_code)
    _next_id += 1
    children.append(child)
    return child


def join(timeout: float | None = None) -> None:
    """Wait for every child (same as ``parallel.children.join()``)."""
    children.join(timeout)


def print(*args: Any, sep: str = " ", end: str = "\n", file: Any = None) -> None:
    """Print with this process's id in front: ``<parallel#003> message``."""
    out = sys.stdout if file is None else file
    line = sep.join([f"<parallel#{id:03d}>", *(str(a) for a in args)]) + end
    out.write(line)  # one write per line, so lines of concurrent processes do not mix
    out.flush()


def _become_child(new_id: int, new_parent: Parent) -> None:
    """Called in a child before its code runs."""
    global id, parent, children, _next_id
    id = new_id
    parent = new_parent
    children = Children()
    _next_id = 1
