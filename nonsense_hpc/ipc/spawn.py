"""Start a clean Python interpreter and hand it a function by name, without pickle.

Used by :func:`nonsense_hpc.ipc.map` and :func:`nonsense_hpc.parallel.run`. The child is
``python -c "...bootstrap(fd)"``: a fresh interpreter that receives, over a Unix socket
pair and in the safe encoding of :mod:`~nonsense_hpc.ipc.codec`, the parent's
``sys.path``, the target (``module`` + ``qualname``, or source code), the arguments and a
*runner* (``"package.module:function"``) that does the role-specific work.

A target defined in the parent's main script is found the way ``multiprocessing``'s spawn
finds it: the script is run again in the child under the name ``__mp_main__`` (so its
``if __name__ == "__main__":`` block does not run). Starting workers from that import
(a script without the guard) raises a RuntimeError instead of forking without end.

The child asks the kernel to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``),
so a parent killed outright leaves no children behind; a parent that exits normally
terminates them in an ``atexit`` handler of the caller.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nonsense_hpc.ipc.connection import Connection

__all__ = ["bootstrap", "describe_target", "in_bootstrap", "resolve_target", "start"]

_BOOTSTRAPPING = False
_PR_SET_PDEATHSIG = 1


def in_bootstrap() -> bool:
    """True while a child re-imports the parent's main script (starting workers is refused)."""
    return _BOOTSTRAPPING


def describe_target(fn: Callable[..., Any] | str) -> dict[str, Any]:
    """How a child finds ``fn``: ``{"module", "qualname", "main_path"}``.

    Raises:
        TypeError: ``fn`` cannot be imported by name (lambda, closure, nested function,
            or defined in an interactive session).
    """
    if isinstance(fn, str):
        module, _, name = fn.partition(":")
        if not module or not name:
            raise TypeError(f"a function given as a string must be 'package.module:function', "
                            f"got {fn!r}")
        return {"module": module, "qualname": name, "main_path": None}
    if not callable(fn):
        raise TypeError(f"expected a function or a 'module:function' string, got "
                        f"{type(fn).__name__}")
    qualname = getattr(fn, "__qualname__", "") or ""
    module = str(getattr(fn, "__module__", None) or "")
    if not module or not qualname or "<" in qualname:
        raise TypeError(
            f"{qualname or fn!r} cannot be sent to a clean interpreter: it is imported there "
            f"by name, so define it at module level (lambdas, closures and nested functions "
            f"do not exist in the new interpreter)")
    main_path: str | None = None
    if module in ("__main__", "__mp_main__"):
        main_file = getattr(sys.modules.get(module), "__file__", None)
        # python -c, a script piped on stdin, a notebook: no file the child can run
        if not isinstance(main_file, str) or not os.path.isfile(main_file):
            raise TypeError(f"{qualname} is defined in an interactive session, stdin or "
                            f"python -c; a clean interpreter cannot import it: put it in a "
                            f"module or a script file")
        main_path = os.path.abspath(main_file)
    return {"module": module, "qualname": qualname, "main_path": main_path}


def resolve_target(desc: dict[str, Any]) -> Callable[..., Any]:
    """Import the function described by :func:`describe_target` (in the child)."""
    global _BOOTSTRAPPING
    module = desc["module"]
    if desc.get("main_path"):
        main = sys.modules.get("__mp_main__")
        if main is None or getattr(main, "__file__", None) != desc["main_path"]:
            _BOOTSTRAPPING = True
            try:
                namespace = runpy.run_path(desc["main_path"], run_name="__mp_main__")
            finally:
                _BOOTSTRAPPING = False
            main = type(sys)("__mp_main__")
            main.__dict__.update(namespace)
            sys.modules["__mp_main__"] = main
        obj: Any = main
    else:
        obj = importlib.import_module(module)
    for part in desc["qualname"].split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{module}:{desc['qualname']} is not callable")
    fn: Callable[..., Any] = obj
    return fn


def start(init: dict[str, Any], *, extra_fds: Sequence[int] = (),
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start a child interpreter and send it ``init``.

    Args:
        init: what the child needs; must hold ``"runner"`` ("module:function" called as
            ``runner(conn, init)`` in the child). ``sys_path`` is added here.
        extra_fds: file descriptors the child inherits (same numbers).
        env: extra environment variables for the child.

    Returns:
        The process and the control connection to it.
    """
    if _BOOTSTRAPPING:
        raise RuntimeError(
            "a worker process is importing the main script and that import starts workers "
            "again: put the code that starts workers under  if __name__ == '__main__':")
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = child_sock.fileno()
    code = f"from nonsense_hpc.ipc.spawn import bootstrap; bootstrap({fd})"
    child_env = dict(os.environ)
    child_env.update(env or {})
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd, *extra_fds),
                                env=child_env, close_fds=True)
    finally:
        child_sock.close()
    conn = Connection(parent_sock, f"child pid {proc.pid}")
    conn.send({**init, "sys_path": list(sys.path), "parent_pid": os.getpid()})
    return proc, conn


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def bootstrap(fd: int) -> None:
    """Child side: read the init message, import the runner and call it."""
    conn = Connection(socket.socket(fileno=fd), "parent")
    init = conn.recv(timeout=60.0)
    _die_with_parent(int(init["parent_pid"]))
    sys.path[:] = [p for p in init["sys_path"] if isinstance(p, str)]
    runner = resolve_target({"module": init["runner"].partition(":")[0],
                             "qualname": init["runner"].partition(":")[2]})
    code = 0
    try:
        code = int(runner(conn, init) or 0)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            conn.close()
    sys.exit(code)
