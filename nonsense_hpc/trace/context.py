"""``with tracing(tree): ...``: record one block of code and render it.

Like Livebook's ``Kino.Process.render_seq_trace(fn)``: everything the Trees (and
:class:`~nonsense_hpc.trace.model.Log` objects) given to :func:`tracing` do inside the
block is captured; on leaving, the events of every rank are gathered to rank 0 (a
collective on the first Tree's communicator) and, with ``out``, written as
``trace.html``, ``trace.svg``, ``trace.mmd``, ``trace.json`` (Chrome) and
``events.jsonl``.

Example (``mpirun -n 4 python step.py``)::

    from nonsense_hpc.comm import Tree
    from nonsense_hpc.trace import tracing

    tree = Tree()                               # tracing need not be on
    with tracing(tree, out="results/trace-step") as t:
        tree.allreduce(grads)
    if tree.rank == 0:
        print(t.mermaid())                      # the whole job's sequence diagram
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.trace.collect import as_dicts, gather
from nonsense_hpc.trace.model import Log, Trace

__all__ = ["Tracing", "attach_recorder", "tracing"]


def attach_recorder(tree: Any) -> Any:
    """Give ``tree`` a recorder if it has none; returns the recorder.

    ``Tree.recorder`` is a property: setting it also reaches the Tree's intra-node
    exchange and registers the recorder for dumping at exit.
    """
    from nonsense_hpc.comm.recorder import Recorder

    rec = getattr(tree, "recorder", None)
    if rec is None:
        rec = Recorder(int(tree.rank))
        tree.recorder = rec
    return rec


def _detach_recorder(tree: Any) -> None:
    tree.recorder = None


class Tracing:
    """What :func:`tracing` yields; filled in when the block ends.

    Attributes:
        local: this rank's events of the block.
        trace: the merged trace of every rank (on the root; the local trace elsewhere,
            or when there was no communicator to gather over).
        files: files written (root only, when ``out`` was given).
    """

    def __init__(self) -> None:
        self.local = Trace()
        self.trace = Trace()
        self.files: dict[str, Path] = {}
        self.is_root = True

    def mermaid(self, **kwargs: Any) -> str:
        """Mermaid text of :attr:`trace` (see :func:`~nonsense_hpc.trace.to_mermaid`)."""
        from nonsense_hpc.trace.mermaid import to_mermaid

        return to_mermaid(self.trace, **kwargs)

    def html(self, **kwargs: Any) -> str:
        """Standalone HTML of :attr:`trace`."""
        from nonsense_hpc.trace.svg import to_html

        return to_html(self.trace, **kwargs)

    def chrome(self) -> dict[str, Any]:
        """Chrome trace document of :attr:`trace`."""
        from nonsense_hpc.trace.chrome import to_chrome

        return to_chrome(self.trace)


@contextmanager
def tracing(*sources: Any, out: str | Path | None = None, comm: Any = None, root: int = 0,
            timeout: float = 60.0, gather_ranks: bool = True,
            title: str = "nonsense_hpc trace") -> Iterator[Tracing]:
    """Record what ``sources`` do inside the block, gather and render it on exit.

    Args:
        sources: Trees (tracing is switched on for the block if it was off) and/or
            :class:`Log` / Recorder objects.
        out: directory for the rendered files (written on ``root`` only).
        comm: communicator to gather over (default: the first Tree's ``comm``; none if
            no Tree was given). Every rank of it must leave the block.
        root: rank that receives the merged trace.
        timeout: seconds the gather waits for the other ranks.
        gather_ranks: False keeps each rank's own events only (no collective).
        title: title of the HTML page.

    Yields:
        A :class:`Tracing`, filled in when the block ends.

    Raises:
        ConfigError: a source is neither a Tree nor a recorder.
        CollectiveTimeoutError: a rank did not reach the end of the block in time.
    """
    result = Tracing()
    marks: list[tuple[Any, int, bool]] = []  # (recorder, events before, attached by us)
    for src in sources:
        if hasattr(src, "allreduce") and hasattr(src, "rank"):
            attached = getattr(src, "recorder", None) is None
            rec = attach_recorder(src)
            marks.append((rec, len(rec.events), attached))
            if comm is None:
                comm = src.comm
        elif isinstance(src, Log) or hasattr(src, "to_dicts"):
            marks.append((src, len(src.events), False))
        else:
            raise ConfigError(f"tracing() takes Trees, Logs or Recorders, got {src!r}")
    try:
        yield result
    finally:
        events: list[dict[str, Any]] = []
        for rec, start, _ in marks:
            events += as_dicts(rec.to_dicts()[start:])
        for src in sources:
            if hasattr(src, "allreduce") and any(m[2] and m[0] is src.recorder
                                                 for m in marks):
                _detach_recorder(src)
    result.local = Trace(events)
    result.trace = result.local
    if comm is not None and gather_ranks:
        merged = gather(result.local, comm, root=root, timeout=timeout)
        result.is_root = merged is not None
        if merged is not None:
            result.trace = merged
    if out is not None and result.is_root:
        from nonsense_hpc.trace import render

        result.files = render(result.trace, out, title=title)
