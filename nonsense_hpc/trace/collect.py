"""Collect events from every rank: a gather over MPI, or per-rank JSON-lines files.

Over MPI the events travel as JSON text (never pickle), with the Tree's non-blocking
requests and timeout, so a dead rank raises
:class:`~nonsense_hpc.errors.CollectiveTimeoutError` instead of hanging.

Example (every rank of ``mpirun -n 4``)::

    from nonsense_hpc.trace import gather
    trace = gather(tree.recorder, tree.comm)   # the merged Trace on rank 0, None elsewhere
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.trace.model import Log, Trace, TraceEvent

__all__ = ["as_dicts", "files_of", "gather", "load"]

Source = Any  # Recorder, Log, Trace, or an iterable of events/dicts


def as_dicts(source: Source) -> list[dict[str, Any]]:
    """Events of a Recorder, :class:`Log`, :class:`Trace` or iterable, as trace dicts.

    Raises:
        ConfigError: ``source`` holds something that is not an event.
    """
    if source is None:
        return []
    if isinstance(source, Trace):
        return [e.to_dict() for e in source.events]
    if isinstance(source, Log) or hasattr(source, "to_dicts"):
        return [TraceEvent.from_dict(d).to_dict() for d in source.to_dicts()]
    out = []
    for item in source:
        if isinstance(item, TraceEvent):
            out.append(item.to_dict())
        elif isinstance(item, Mapping):
            out.append(TraceEvent.from_dict(item).to_dict())
        else:
            raise ConfigError(f"not a trace event: {item!r}")
    return out


def gather(source: Source, comm: Any, root: int = 0, timeout: float = 60.0) -> Trace | None:
    """Gather every rank's events to ``root`` (collective over ``comm``).

    Args:
        source: this rank's events (a Recorder, a :class:`Log`, a Trace or dicts).
        comm: an mpi4py communicator (the Tree's ``tree.comm`` is a good choice).
        root: the rank that gets the merged trace.
        timeout: seconds to wait for the other ranks (0: for ever).

    Returns:
        The merged :class:`Trace` on ``root``, None on the other ranks.

    Raises:
        CollectiveTimeoutError: a rank did not take part within ``timeout``.
        ConfigError: ``root`` is not a rank of ``comm``.
    """
    from mpi4py import MPI

    from nonsense_hpc.comm.internode import wait_requests

    size, rank = comm.Get_size(), comm.Get_rank()
    if not 0 <= root < size:
        raise ConfigError(f"root must be a rank of the communicator (0..{size - 1}), "
                          f"got {root}")
    data = np.frombuffer(json.dumps(as_dicts(source)).encode(), dtype=np.uint8).copy()
    sizes = np.zeros(size, dtype=np.int64)
    what = "trace gather"
    wait_requests([comm.Igather(np.array([data.size], dtype=np.int64), sizes, root=root)],
                  timeout, what)
    if rank != root:
        wait_requests([comm.Igatherv(data, None, root=root)], timeout, what)
        return None
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    wait_requests([comm.Igatherv(data, [out, sizes.tolist(), displs.tolist(), MPI.BYTE],
                                 root=root)], timeout, what)
    events: list[dict[str, Any]] = []
    for d, s in zip(displs.tolist(), sizes.tolist(), strict=True):
        events += json.loads(out[d:d + s].tobytes().decode())
    return Trace(events)


def files_of(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories (their ``*.jsonl``) and glob patterns into sorted files.

    Raises:
        ConfigError: a path matches nothing.
    """
    found: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found += sorted(p.glob("*.jsonl"))
        elif p.is_file():
            found.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item)))
            if not matches:
                raise ConfigError(f"no trace files at {item}")
            found += matches
    return found


def load(paths: Iterable[str | Path]) -> Trace:
    """Merge the JSON-lines files (or directories of them) into one :class:`Trace`."""
    return Trace.load(files_of(paths))
