"""Dump every rank's recorder to a file at exit, when ``NONSENSE_TRACE_FILE`` is set.

``nonsense-hpc trace -- mpirun -n 4 python train.py`` sets ``NONSENSE_TRACE=1`` (so every
Tree records) and ``NONSENSE_TRACE_FILE`` (where each process writes its events), runs the
command, and merges the files. Inside each process :func:`install` registers an
:mod:`atexit` hook that writes the events of every registered recorder, and of every
:class:`~nonsense_hpc.comm.recorder.Recorder` still alive, as JSON lines.

``NONSENSE_TRACE_FILE`` is a path template: ``{rank}`` and ``{pid}`` are filled in; a
value ending in ``/`` (or an existing directory) means ``DIR/trace-{rank}-{pid}.jsonl``.

A program that is not started by ``nonsense-hpc trace`` can opt in itself::

    from nonsense_hpc.trace import hook
    hook.register(tree.recorder)      # also installs the atexit hook when the variable is set

The CLI makes unmodified programs dump too: it puts a directory holding a tiny
``sitecustomize.py`` (:func:`write_sitecustomize`) first on ``PYTHONPATH``; it calls
:func:`install` and then runs any ``sitecustomize`` that was there before.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any

__all__ = [
    "TRACE_FILE_VAR",
    "dump_all",
    "install",
    "path_for",
    "register",
    "write_sitecustomize",
]

TRACE_FILE_VAR = "NONSENSE_TRACE_FILE"

_lock = threading.Lock()
_registered: list[weakref.ref[Any]] = []
_installed = {"pid": -1}


def path_for(template: str, rank: int, pid: int | None = None) -> Path:
    """The file one recorder of ``rank`` writes to, from the template."""
    pid = os.getpid() if pid is None else pid
    if template.endswith(("/", os.sep)) or Path(template).is_dir():
        return Path(template) / f"trace-{rank}-{pid}.jsonl"
    if "{rank}" not in template and "{pid}" not in template:
        # One file for every process would be overwritten: keep them apart.
        base = Path(template)
        return base.with_name(f"{base.stem}-{rank}-{pid}{base.suffix or '.jsonl'}")
    return Path(template.replace("{rank}", str(rank)).replace("{pid}", str(pid)))


def register(recorder: Any) -> None:
    """Dump ``recorder`` at exit (when ``NONSENSE_TRACE_FILE`` is set).

    Args:
        recorder: a Recorder (or anything with ``rank`` and ``to_dicts()``); None is
            ignored, so ``register(tree.recorder)`` is safe when tracing is off.
    """
    if recorder is None:
        return
    with _lock:
        _registered.append(weakref.ref(recorder))
    if os.environ.get(TRACE_FILE_VAR):
        install()


def install() -> bool:
    """Register the atexit hook once per process; False when the variable is unset."""
    if not os.environ.get(TRACE_FILE_VAR):
        return False
    with _lock:
        if _installed["pid"] == os.getpid():
            return True
        _installed["pid"] = os.getpid()
    atexit.register(dump_all)
    return True


def _recorders() -> list[Any]:
    found: dict[int, Any] = {}
    with _lock:
        for ref in _registered:
            rec = ref()
            if rec is not None:
                found[id(rec)] = rec
    try:
        from nonsense_hpc.comm.recorder import Recorder
    except ImportError:  # pragma: no cover - the package is always importable
        return list(found.values())
    for obj in gc.get_objects():
        # type(), not isinstance(): lazy proxies warn when their __class__ is read.
        if issubclass(type(obj), Recorder):
            found.setdefault(id(obj), obj)
    return list(found.values())


def dump_all(template: str | None = None) -> list[Path]:
    """Write the events of every known recorder; returns the files written.

    Recorders of the same rank in one process (several Trees) share one file. A recorder
    with no events writes nothing. Errors are reported on stderr, never raised: this
    runs at interpreter exit.
    """
    template = template or os.environ.get(TRACE_FILE_VAR, "")
    if not template:
        return []
    by_path: dict[Path, list[dict[str, Any]]] = {}
    for rec in _recorders():
        try:
            rows = rec.to_dicts()
            if rows:
                by_path.setdefault(path_for(template, int(rec.rank)), []).extend(rows)
        except Exception as exc:  # never fail at exit
            os.write(2, f"nonsense_hpc.trace: cannot read a recorder: {exc}\n".encode())
    written = []
    for path, rows in by_path.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                for row in sorted(rows, key=lambda r: r["start"]):
                    fh.write(json.dumps(row) + "\n")
            written.append(path)
        except OSError as exc:
            os.write(2, f"nonsense_hpc.trace: cannot write {path}: {exc}\n".encode())
    return written


_SITECUSTOMIZE = '''"""Written by nonsense-hpc trace: dump trace recorders at exit, then chain."""
import os as _os
import sys as _sys

try:
    if _os.environ.get("NONSENSE_TRACE_FILE"):
        from nonsense_hpc.trace import hook as _hook
        _hook.install()
except Exception as _exc:  # never break the traced program
    _sys.stderr.write(f"nonsense_hpc.trace: hook not installed: {_exc}\\n")

_here = _os.path.dirname(_os.path.abspath(__file__))
_rest = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
_saved, _sys.path[:] = list(_sys.path), _rest
_me = _sys.modules.pop("sitecustomize", None)
try:
    import sitecustomize  # noqa: F401  (the one this file shadows, if any)
except ImportError:
    pass
finally:
    _sys.path[:] = _saved
    if "sitecustomize" not in _sys.modules and _me is not None:
        _sys.modules["sitecustomize"] = _me
'''


def write_sitecustomize(directory: str | Path) -> Path:
    """Write the ``sitecustomize.py`` the CLI puts first on ``PYTHONPATH``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "sitecustomize.py"
    path.write_text(_SITECUSTOMIZE, encoding="utf-8")
    return path
