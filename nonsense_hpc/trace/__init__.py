"""Message sequence traces: who sent what to whom, as diagrams and Chrome traces.

From the Tree's recorder (``Tree(trace=True)`` or ``NONSENSE_TRACE=1``) or any
:class:`Log`, merged over ranks (:func:`gather`, :func:`load`):

* :func:`to_mermaid`: Mermaid ``sequenceDiagram`` text;
* :func:`to_svg` / :func:`to_html`: a standalone diagram, no scripts, no CDN;
* :func:`to_chrome`: Chrome trace JSON for Perfetto, one track per rank;
* :func:`render`: all of them into one directory;
* :func:`tracing`: a context manager that records a block of code and renders it;
* :mod:`~nonsense_hpc.trace.hook`: per-process dump at exit for ``nonsense-hpc trace``.

Example:
    >>> from nonsense_hpc.trace import Trace, to_mermaid
    >>> t = Trace([{"op": "allreduce", "phase": "send", "rank": 1, "peer": 0,
    ...             "nbytes": 4096, "start": 0.0, "end": 0.001}])
    >>> to_mermaid(t).splitlines()[-1]
    '    p1->>p0: allreduce 4.0 KiB'

See docs/observability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nonsense_hpc.trace.chrome import to_chrome, write_chrome
from nonsense_hpc.trace.collect import as_dicts, gather, load
from nonsense_hpc.trace.context import Tracing, attach_recorder, tracing
from nonsense_hpc.trace.mermaid import to_mermaid
from nonsense_hpc.trace.model import Log, Message, Note, Trace, TraceEvent
from nonsense_hpc.trace.svg import to_html, to_svg

__all__ = [
    "FILES",
    "Log",
    "Message",
    "Note",
    "Trace",
    "TraceEvent",
    "Tracing",
    "as_dicts",
    "attach_recorder",
    "gather",
    "load",
    "render",
    "to_chrome",
    "to_html",
    "to_mermaid",
    "to_svg",
    "tracing",
    "write_chrome",
]

#: What :func:`render` writes, by key.
FILES = {"html": "trace.html", "svg": "trace.svg", "mermaid": "trace.mmd",
         "chrome": "trace.json", "events": "events.jsonl"}


def render(trace: Any, out: str | Path, *, title: str = "nonsense_hpc trace",
           max_items: int = 400, formats: tuple[str, ...] = tuple(FILES)) -> dict[str, Path]:
    """Write a trace as HTML, SVG, Mermaid, Chrome JSON and JSON lines into ``out``.

    Args:
        trace: a :class:`Trace`, a Recorder, a :class:`Log` or an iterable of events.
        out: directory (created if missing).
        title: diagram and page title.
        max_items: rows of the diagrams (the Chrome trace always has every event).
        formats: which of :data:`FILES` to write.

    Returns:
        The files written, by key (``"html"``, ``"svg"``, ``"mermaid"``, ``"chrome"``,
        ``"events"``).

    Raises:
        ConfigError: an unknown format.

    Example:
        >>> import tempfile
        >>> files = render([{"op": "x", "phase": "send", "rank": 0, "peer": 1,
        ...                  "nbytes": 1, "start": 0, "end": 1}], tempfile.mkdtemp())
        >>> sorted(files)
        ['chrome', 'events', 'html', 'mermaid', 'svg']
    """
    from nonsense_hpc.errors import ConfigError

    unknown = [f for f in formats if f not in FILES]
    if unknown:
        raise ConfigError(f"unknown trace format(s) {unknown}; valid: {sorted(FILES)}")
    t = trace if isinstance(trace, Trace) else Trace(as_dicts(trace))
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for key in formats:
        path = d / FILES[key]
        if key == "html":
            path.write_text(to_html(t, title=title, max_items=max_items), encoding="utf-8")
        elif key == "svg":
            path.write_text(to_svg(t, title=title, max_items=max_items), encoding="utf-8")
        elif key == "mermaid":
            path.write_text(to_mermaid(t, max_items=max_items) + "\n", encoding="utf-8")
        elif key == "chrome":
            write_chrome(t, path)
        else:
            t.dump(path)
        files[key] = path
    return files
