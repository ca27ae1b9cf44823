"""Run the test functions of one file on every rank of an MPI job.

Started by the pytest plugin as ``mpirun -n NP python -m nonsense_hpc.testing.mpirunner
FILE --report PREFIX``. Each rank appends one JSON line per test to ``PREFIX.rank<R>``:
``{"test", "outcome": passed|failed|skipped|timeout, "detail", "seconds"}``, after a
``{"test", "outcome": "started"}`` line. A hang guard
per test dumps every thread's stack and ends the rank, which ends the job, so the plugin
reports the hung test by name instead of waiting for ever.

The guard is two watchdogs. A Python timer thread writes a ``timeout`` record first; it
needs the GIL, so a test stuck in C code that holds the GIL (a library destructor, say)
would silence it. ``faulthandler``'s own C thread does not need the GIL: a little later it
prints every thread's Python stack and ends the rank whatever the interpreter is doing.
A ``started`` record written before each test names the test a rank was in even then.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

__all__ = ["main"]


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_mpi_test_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _is_skip(exc: BaseException) -> bool:
    """``pytest.skip()`` raises an exception class named Skipped."""
    return type(exc).__name__ == "Skipped"


#: Seconds the C-level watchdog waits after the Python guard's deadline.
C_GUARD_GRACE = 15.0


class _Guard:
    """Ends this rank if a test runs past its timeout, after saying which test hung."""

    def __init__(self, out: TextIO, rank: int, size: int) -> None:
        self.out, self.rank, self.size = out, rank, size
        self._timer: threading.Timer | None = None

    def arm(self, test: str, seconds: float) -> None:
        def fire() -> None:
            msg = (f"HANG GUARD: {test} did not finish within {seconds:.0f} s at np={self.size}"
                   f" (rank {self.rank}); stacks of every thread follow")
            self.out.write(json.dumps({"test": test, "outcome": "timeout", "detail": msg,
                                       "seconds": seconds}) + "\n")
            self.out.flush()
            sys.stderr.write(msg + "\n")
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
            os._exit(70)

        self._timer = threading.Timer(seconds, fire)
        self._timer.daemon = True
        self._timer.start()
        # Works with the GIL held elsewhere: prints the stacks and exits with status 1.
        sys.stderr.flush()
        faulthandler.dump_traceback_later(seconds + C_GUARD_GRACE, exit=True,
                                          file=sys.stderr)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m nonsense_hpc.testing.mpirunner")
    parser.add_argument("file")
    parser.add_argument("--report", required=True, help="path prefix for per-rank reports")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--only", default="", help="comma-separated test names")
    args = parser.parse_args(argv)

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    out = open(f"{args.report}.rank{rank}", "w", encoding="utf-8")  # noqa: SIM115
    guard = _Guard(out, rank, size)
    module = _load(args.file)
    only = {name for name in args.only.split(",") if name}
    tests = [(name, fn) for name, fn in vars(module).items()
             if name.startswith("test_") and callable(fn) and (not only or name in only)]
    timeout = float(getattr(module, "TIMEOUT", args.timeout))

    shared_root = None
    if rank == 0:
        shared_root = tempfile.mkdtemp(prefix="mpitest-")
    shared_root = world.bcast(shared_root, root=0)

    for name, fn in tests:
        world.Barrier()
        comm = world.Dup()
        kwargs: dict[str, Any] = {}
        params = inspect.signature(fn).parameters
        if "comm" in params:
            kwargs["comm"] = comm
        if "tmp_path" in params:
            path = Path(shared_root) / name
            if rank == 0:
                path.mkdir(parents=True, exist_ok=True)
            world.Barrier()
            kwargs["tmp_path"] = path
        out.write(json.dumps({"test": name, "outcome": "started"}) + "\n")
        out.flush()
        start = time.perf_counter()
        guard.arm(name, timeout)
        outcome, detail = "passed", ""
        try:
            fn(**kwargs)
        except BaseException as exc:
            if _is_skip(exc):
                outcome, detail = "skipped", str(exc)
            else:
                outcome, detail = "failed", "".join(traceback.format_exception(exc))
        finally:
            guard.disarm()
        elapsed = time.perf_counter() - start
        out.write(json.dumps({"test": name, "outcome": outcome, "detail": detail,
                              "seconds": elapsed}) + "\n")
        out.flush()
        try:
            comm.Free()
        except Exception:
            pass
    world.Barrier()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
