"""``ipc.map``: run a function in n clean worker interpreters and join their results.

After torch-ipc's ``ipc.map(n, fn, ...)``. Each worker is a fresh Python interpreter
(see :mod:`nonsense_hpc.ipc.spawn`: nothing of the caller's state leaks in), so ``fn`` must be
importable by name: a function defined at module level (in a module, or in the main
script under an ``if __name__ == "__main__":`` guard), or a ``"package.module:function"``
string. Lambdas and closures cannot cross into a clean interpreter and are refused with a
TypeError before any process starts.

``fn`` is called as ``fn(*args, mapid)``, mapid running from 1 to n as in the seed (where
it indexes a Lua table). The arguments and the results travel in the safe encoding of
:mod:`nonsense_hpc.ipc.codec`, never pickled.

Example:
    >>> from nonsense_hpc import ipc
    >>> ipc.map(3, "operator:mul", 10).join()     # 10*1, 10*2, 10*3
    [10, 20, 30]
"""

from __future__ import annotations

import atexit
import selectors
import subprocess
import time
import weakref
from collections.abc import Callable
from typing import Any

from nonsense_hpc.errors import RemoteError, WireError
from nonsense_hpc.ipc import codec, frames, remote, spawn
from nonsense_hpc.ipc.connection import Connection, send_views
from nonsense_hpc.ipc.workqueue import SCOPE_ENV, scope

__all__ = ["MapJob", "map", "run_worker"]

_LIVE: weakref.WeakSet[MapJob] = weakref.WeakSet()


def run_worker(conn: Connection, init: dict[str, Any]) -> int:
    """Child side of one map worker: call the target, send the result or the error."""
    mapid = int(init["mapid"])
    try:
        fn = spawn.resolve_target(init["target"])
        result = fn(*init["args"], mapid)
        try:
            reply = codec.encode(["ok", result])
        except TypeError as exc:
            raise TypeError(f"map worker {mapid} returned a value that cannot be sent "
                            f"back: {exc}") from None
    except BaseException as exc:
        reply = codec.encode(["error", remote.describe(exc)])
    try:
        send_views(conn.sock, frames.frame_buffers(reply))
    except OSError:
        return 1  # the parent is gone; nobody to tell
    return 0


class MapJob:
    """The n workers started by :func:`map`.

    Attributes:
        n: number of workers.
        processes: the ``multiprocessing`` processes (worker ``i`` has mapid ``i + 1``).
    """

    def __init__(self, n: int, fn: Callable[..., Any] | str, args: tuple[Any, ...]) -> None:
        target = spawn.describe_target(fn)
        codec.encode(list(args))  # TypeError here: nothing started yet
        self.n = n
        self.processes: list[subprocess.Popen[bytes]] = []
        self._conns: list[Connection | None] = []
        self._results: dict[int, Any] = {}
        self._error: RemoteError | None = None
        env = {SCOPE_ENV: scope()}
        try:
            for mapid in range(1, n + 1):
                init = {"runner": "nonsense_hpc.ipc.map:run_worker", "target": target,
                        "args": list(args), "mapid": mapid}
                proc, conn = spawn.start(init, env=env)
                self.processes.append(proc)
                self._conns.append(conn)
        except BaseException:
            self.terminate()
            raise
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<MapJob n={self.n} done={len(self._results)}>"

    def _collect(self, timeout: float | None) -> bool:
        """Take whatever results are ready within ``timeout``; True when all are in."""
        pending = {c: i for i, c in enumerate(self._conns) if c is not None}
        if not pending:
            return True
        sel = selectors.DefaultSelector()
        for conn in pending:
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        try:
            ready = [key.data for key, _ in sel.select(timeout)]
        finally:
            sel.close()
        for conn in ready:
            i = pending[conn]
            proc = self.processes[i]
            where = f"map worker {i + 1} (pid {proc.pid})"
            try:
                status, value = conn.recv(timeout=60.0)
            except (ConnectionError, TimeoutError, WireError, ValueError):
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5.0)
                status, value = "died", proc.returncode
            conn.close()
            self._conns[i] = None
            if status == "ok":
                self._results[i] = value
            elif self._error is None:
                self._error = (remote.rebuild(value, where) if status == "error" else
                               RemoteError(f"{where} died with exit code {value} before "
                                           f"returning a result"))
        return all(c is None for c in self._conns)

    def check_errors(self) -> None:
        """Raise now if a worker already failed (torch-ipc's ``checkErrors``); never waits.

        Raises:
            RemoteError: a worker raised (or died); the other workers are stopped.
        """
        self._collect(0.0)
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            self.terminate()
            raise self._error

    def join(self, timeout: float | None = None) -> list[Any]:
        """Wait for every worker and return their results, in mapid order.

        Args:
            timeout: seconds to wait in total (None: for ever).

        Returns:
            ``[result of mapid 1, ..., result of mapid n]``.

        Raises:
            RemoteError: a worker raised (also an instance of the worker's builtin
                exception type, e.g. ValueError) or died; its traceback is in the message
                and in ``remote_traceback``. The other workers are terminated.
            TimeoutError: not all workers finished in time (they keep running; join again
                or call :meth:`terminate`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = self._collect(left)
            self._raise_error()
            if done:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.n - len(self._results)} of {self.n} map workers "
                                   f"still running after {timeout} s")
        for proc in self.processes:
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
        _LIVE.discard(self)
        return [self._results[i] for i in range(self.n)]

    def terminate(self) -> None:
        """Stop every worker still running (SIGTERM, then SIGKILL after 2 s)."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=2.0)
        for i, conn in enumerate(self._conns):
            if conn is not None:
                conn.close()
                self._conns[i] = None
        _LIVE.discard(self)

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers, in mapid order."""
        return [p.pid for p in self.processes]


def map(n: int, fn: Callable[..., Any] | str, *args: Any) -> MapJob:
    """Start ``n`` workers, each calling ``fn(*args, mapid)`` in a clean interpreter.

    Args:
        n: number of workers (>= 1).
        fn: a module-level function, or a ``"package.module:function"`` string.
        *args: arguments for every worker (values the codec accepts: primitives, lists,
            dicts, tensors, arrays).

    Returns:
        The running job; ``job.join()`` returns the n results in mapid order.

    Raises:
        TypeError: ``fn`` cannot be imported by a clean interpreter, or an argument
            cannot be sent (before any worker starts).
        ValueError: ``n`` < 1.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return MapJob(n, fn, args)


@atexit.register
def _stop_all() -> None:
    for job in list(_LIVE):
        job.terminate()
