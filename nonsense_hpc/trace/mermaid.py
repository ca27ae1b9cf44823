"""Mermaid ``sequenceDiagram`` text of a trace (who sent what to whom, in order).

The text renders in GitHub/GitLab Markdown, the Mermaid live editor and Livebook; the
standalone HTML/SVG of :mod:`nonsense_hpc.trace.svg` needs no Mermaid at all.

Example:
    >>> from nonsense_hpc.trace.model import Trace
    >>> t = Trace([{"op": "allreduce", "phase": "send", "rank": 0, "peer": 1,
    ...             "nbytes": 8, "start": 0.0, "end": 0.1}])
    >>> print(to_mermaid(t))
    sequenceDiagram
        participant p0 as rank 0
        participant p1 as rank 1
        p0->>p1: allreduce 8 B
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from nonsense_hpc.trace.model import Message, Note, Trace

__all__ = ["to_mermaid"]

_UNSAFE = re.compile(r"[;#\n\r]")


def _text(s: str) -> str:
    return _UNSAFE.sub(" ", s).strip()


def to_mermaid(trace: Trace, *, max_items: int = 300,
               phases: Iterable[str] | None = None, times: bool = False) -> str:
    """Render the trace as Mermaid sequence-diagram text.

    Args:
        trace: the merged trace.
        max_items: at most this many arrows and notes; the rest is summarised in a note
            (a diagram of thousands of arrows helps nobody: use the Chrome trace then).
        phases: local phases drawn as notes (default all; ``()`` draws arrows only).
        times: prefix every arrow with its time since the trace started.

    Returns:
        The diagram text, one statement per line.
    """
    actors = trace.actors
    ids = {a: f"p{i}" for i, a in enumerate(actors)}
    lines = ["sequenceDiagram"]
    lines += [f"    participant {ids[a]} as {_text(a)}" for a in actors]
    items = trace.sequence(phases)
    t0 = trace.start
    for item in items[:max_items]:
        stamp = f"+{(item.time - t0) * 1e3:.3f} ms " if times else ""
        if isinstance(item, Message):
            arrow = "-->>" if item.kind == "read" else "->>"
            lines.append(f"    {ids[item.sender]}{arrow}{ids[item.receiver]}: "
                         f"{_text(stamp + item.label)}")
        elif isinstance(item, Note):
            lines.append(f"    Note over {ids[item.actor]}: {_text(stamp + item.label)}")
    if len(items) > max_items and actors:
        span = ids[actors[0]] if len(actors) == 1 else f"{ids[actors[0]]},{ids[actors[-1]]}"
        lines.append(f"    Note over {span}: {len(items) - max_items} more steps "
                     f"(see the Chrome trace)")
    return "\n".join(lines)
