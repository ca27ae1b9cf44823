"""A sequence diagram as standalone SVG, and an HTML page around it (no scripts, no CDN).

Actors are columns with lifelines; every message is an arrow and every local step a
note, one row each, in time order (like Mermaid), with the time since the start of the
trace in the left margin. Hovering an arrow shows its exact times (an SVG ``<title>``).

Example:
    >>> from nonsense_hpc.trace.model import Trace
    >>> t = Trace([{"op": "allreduce", "phase": "send", "rank": 0, "peer": 1,
    ...             "nbytes": 8, "start": 0.0, "end": 0.1}])
    >>> to_svg(t).startswith("<svg")
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from nonsense_hpc.trace.mermaid import to_mermaid
from nonsense_hpc.trace.model import Message, Note, Trace, format_bytes, format_seconds

__all__ = ["to_html", "to_svg"]

COL_W = 170
ROW_H = 26
HEAD_H = 44
LEFT = 90
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d",
           "#4d7c0f")


def _colour(op: str, ops: list[str]) -> str:
    return PALETTE[ops.index(op) % len(PALETTE)] if op in ops else PALETTE[0]


def to_svg(trace: Trace, *, max_items: int = 400, phases: Iterable[str] | None = None,
           title: str = "") -> str:
    """Render the trace as one SVG document.

    Args:
        trace: the merged trace.
        max_items: at most this many rows (the rest is counted in a last row).
        phases: local phases drawn as notes (default all; ``()`` draws arrows only).
        title: text above the diagram.

    Returns:
        The SVG text (UTF-8, self-contained).
    """
    actors = trace.actors
    items = trace.sequence(phases)
    shown = items[:max_items]
    extra = len(items) - len(shown)
    ops = sorted({i.op for i in items})
    x = {a: LEFT + COL_W // 2 + i * COL_W for i, a in enumerate(actors)}
    top = HEAD_H + (24 if title else 0)
    rows = len(shown) + (1 if extra else 0)
    width = LEFT + COL_W * max(1, len(actors)) + 20
    height = top + 20 + rows * ROW_H + HEAD_H
    t0 = trace.start
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           "<defs>"]
    for op in ops or ["-"]:
        c = _colour(op, ops)
        out.append(f'<marker id="arr{c[1:]}" viewBox="0 0 10 10" refX="10" refY="5" '
                   f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
                   f'<path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>')
    out.append("</defs>")
    out.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    if title:
        out.append(f'<text x="10" y="18" font-size="15" font-weight="bold">'
                   f'{escape(title)}</text>')
    bottom = height - HEAD_H
    for a in actors:
        cx = x[a]
        out.append(f'<line x1="{cx}" y1="{top}" x2="{cx}" y2="{bottom}" stroke="#9ca3af" '
                   f'stroke-dasharray="4 3"/>')
        for y in (top - HEAD_H + 8, bottom + 4):
            out.append(f'<rect x="{cx - COL_W // 2 + 10}" y="{y}" width="{COL_W - 20}" '
                       f'height="28" rx="4" fill="#eef2ff" stroke="#4f46e5"/>'
                       f'<text x="{cx}" y="{y + 18}" text-anchor="middle" '
                       f'class="actor">{escape(a)}</text>')
    for row, item in enumerate(shown):
        y = top + 20 + row * ROW_H
        out.append(f'<text x="6" y="{y + 4}" fill="#6b7280" font-size="10">'
                   f'+{(item.time - t0) * 1e3:.3f} ms</text>')
        c = _colour(item.op, ops)
        if isinstance(item, Message):
            out.append(_arrow(item, x[item.sender], x[item.receiver], y, c, t0))
        elif isinstance(item, Note):
            cx = x[item.actor]
            w = COL_W - 30
            out.append(f'<g class="note"><title>{escape(item.op)} {escape(item.label)}'
                       f'</title><rect x="{cx - w // 2}" y="{y - 10}" width="{w}" '
                       f'height="18" fill="#fef9c3" stroke="#ca8a04"/>'
                       f'<text x="{cx}" y="{y + 3}" text-anchor="middle" font-size="10">'
                       f'{escape(item.label)}</text></g>')
    if extra:
        y = top + 20 + len(shown) * ROW_H
        out.append(f'<text x="{LEFT}" y="{y + 4}" fill="#6b7280">... {extra} more steps '
                   f'(see the Chrome trace)</text>')
    out.append("</svg>")
    return "\n".join(out)


def _arrow(m: Message, x1: int, x2: int, y: int, colour: str, t0: float) -> str:
    dash = ' stroke-dasharray="5 3"' if m.kind == "read" else ""
    tip = (f"{m.sender} -> {m.receiver}: {m.label}, sent +{(m.sent - t0) * 1e3:.3f} ms, "
           f"received +{(m.received - t0) * 1e3:.3f} ms")
    marker = f'marker-end="url(#arr{colour[1:]})"'
    if x1 == x2:  # a message to itself: a small loop
        path = (f'<path d="M{x1},{y - 6} h30 v12 h-30" fill="none" stroke="{colour}"{dash} '
                f'{marker}/>')
        text_x = x1 + 36
        anchor = "start"
    else:
        path = (f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" '
                f'stroke-width="1.5"{dash} {marker}/>')
        text_x = (x1 + x2) // 2
        anchor = "middle"
    return (f'<g class="message"><title>{escape(tip)}</title>{path}'
            f'<text x="{text_x}" y="{y - 4}" text-anchor="{anchor}" fill="{colour}" '
            f'font-size="11">{escape(m.label)}</text></g>')


def to_html(trace: Trace, *, title: str = "nonsense_hpc trace", max_items: int = 400,
            phases: Iterable[str] | None = None) -> str:
    """A standalone HTML page: the SVG diagram, a per-actor summary and the Mermaid text.

    Args:
        trace: the merged trace.
        title: page and diagram title.
        max_items: rows of the diagram (see :func:`to_svg`).
        phases: local phases drawn as notes.

    Returns:
        The HTML text; it loads nothing from the network.
    """
    rows = []
    for actor, s in trace.summary().items():
        rows.append(f"<tr><td>{escape(actor)}</td><td>{int(s['events'])}</td>"
                    f"<td>{format_bytes(int(s['sent']))}</td>"
                    f"<td>{format_bytes(int(s['received']))}</td>"
                    f"<td>{format_seconds(s['busy'])}</td></tr>")
    span = format_seconds(trace.end - trace.start)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #111827; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #d1d5db; padding: 3px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
pre {{ background: #f3f4f6; padding: 1em; overflow: auto; max-height: 30em; }}
.diagram {{ overflow: auto; border: 1px solid #e5e7eb; }}
</style></head><body>
<h1>{escape(title)}</h1>
<p>{len(trace)} events from {len(trace.actors)} actors over {span}.
Arrows: messages (dashed: direct reads of a peer's memory); yellow boxes: local steps.</p>
<div class="diagram">
{to_svg(trace, max_items=max_items, phases=phases)}
</div>
<h2>Per actor</h2>
<table><tr><th>actor</th><th>events</th><th>sent</th><th>received</th><th>busy</th></tr>
{"".join(rows)}
</table>
<details><summary>Mermaid source</summary>
<pre>{escape(to_mermaid(trace, max_items=max_items, phases=phases))}</pre></details>
</body></html>
"""
