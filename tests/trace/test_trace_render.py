"""Rendering a trace: Mermaid, SVG/HTML and Chrome JSON from recorder-shaped events."""

import json
import xml.etree.ElementTree as ET

import pytest

from nonsense_hpc.comm.recorder import Recorder
from nonsense_hpc.errors import ConfigError
from nonsense_hpc.trace import (
    Log,
    Message,
    Note,
    Trace,
    load,
    render,
    to_chrome,
    to_html,
    to_mermaid,
    to_svg,
)


def _ring_step():
    """Two ranks exchange 1 KiB each way, then reduce, as the ring path records it."""
    recs = [Recorder(0), Recorder(1)]
    recs[0].record("allreduce", "send", 1, 1024, 0.0, 0.001)
    recs[1].record("allreduce", "send", 0, 1024, 0.0, 0.001)
    recs[1].record("allreduce", "recv", 0, 1024, 0.0005, 0.002)
    recs[0].record("allreduce", "recv", 1, 1024, 0.0005, 0.002)
    recs[0].record("allreduce", "reduce", -1, 2048, 0.002, 0.003)
    recs[1].record("allreduce", "read", 0, 512, 0.004, 0.005)
    return Trace([d for r in recs for d in r.to_dicts()])


def test_sequence_pairs_sends_with_receives():
    items = _ring_step().sequence()
    msgs = [i for i in items if isinstance(i, Message)]
    notes = [i for i in items if isinstance(i, Note)]
    assert sorted((m.sender, m.receiver, m.kind) for m in msgs) == [
        ("rank 0", "rank 1", "read"), ("rank 0", "rank 1", "send"),
        ("rank 1", "rank 0", "send")]
    paired = [m for m in msgs if m.kind == "send"]
    assert all(m.received - m.sent > 0.0019 for m in paired)  # send start -> recv end
    assert [n.phase for n in notes] == ["reduce"]
    assert [i.time for i in items] == sorted(i.time for i in items)


def test_unpaired_receive_still_draws_an_arrow():
    t = Trace([{"op": "bcast", "phase": "recv", "rank": 3, "peer": 0, "nbytes": 8,
                "start": 1.0, "end": 2.0}])
    (m,) = t.sequence()
    assert (m.sender, m.receiver) == ("rank 0", "rank 3")
    assert t.actors == ["rank 0", "rank 3"]


def test_mermaid_text():
    text = to_mermaid(_ring_step())
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert "    participant p0 as rank 0" in lines
    assert "    p0->>p1: allreduce 1.0 KiB" in lines
    assert "    p1->>p0: allreduce 1.0 KiB" in lines
    assert "    p0-->>p1: allreduce read 512 B" in lines
    assert any(ln.startswith("    Note over p0: reduce 2.0 KiB") for ln in lines)
    arrows_only = to_mermaid(_ring_step(), phases=())
    assert "Note" not in arrows_only


def test_mermaid_truncates_and_escapes():
    events = [{"op": "x;#y", "phase": "send", "actor": "w", "peer": "server", "nbytes": 1,
               "start": float(i), "end": float(i)} for i in range(10)]
    text = to_mermaid(Trace(events), max_items=3)
    assert text.count("->>") == 3
    assert "7 more steps" in text
    assert ";" not in text and "#" not in text


def test_svg_is_wellformed_and_has_every_arrow():
    svg = to_svg(_ring_step(), title="one <step>")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g") if g.get("class") == "message"]
    assert len(groups) == 3
    assert "one &lt;step&gt;" in svg
    html = to_html(_ring_step())
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_chrome_trace_one_track_per_rank_with_flows():
    doc = to_chrome(_ring_step())
    ev = doc["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in ev if e["name"] == "process_name"}
    assert names == {0: "rank 0", 1: "rank 1"}
    complete = [e for e in ev if e["ph"] == "X"]
    assert len(complete) == 6
    assert min(e["ts"] for e in complete) == 0.0
    starts = [e for e in ev if e["ph"] == "s"]
    ends = [e for e in ev if e["ph"] == "f"]
    assert len(starts) == len(ends) == 3
    assert {e["id"] for e in starts} == {e["id"] for e in ends}
    json.dumps(doc)  # serialisable


def test_render_writes_every_format_and_reloads(tmp_path):
    files = render(_ring_step(), tmp_path / "out")
    assert {p.name for p in files.values()} == {"trace.html", "trace.svg", "trace.mmd",
                                                 "trace.json", "events.jsonl"}
    again = load([files["events"]])
    assert len(again) == 6 and again.actors == ["rank 0", "rank 1"]
    with pytest.raises(ConfigError, match="unknown trace format"):
        render(_ring_step(), tmp_path, formats=("png",))


def test_recorder_dump_files_merge(tmp_path):
    for rank in range(3):
        rec = Recorder(rank)
        rec.record("allreduce", "send", (rank + 1) % 3, 64, 0.0, 1e-4)
        rec.record("allreduce", "recv", (rank - 1) % 3, 64, 0.0, 2e-4)
        rec.dump(tmp_path / f"r{rank}.jsonl")
    t = load([tmp_path])
    assert t.actors == ["rank 0", "rank 1", "rank 2"]
    msgs = [m for m in t.sequence() if isinstance(m, Message)]
    assert sorted((m.sender, m.receiver) for m in msgs) == [
        ("rank 0", "rank 1"), ("rank 1", "rank 2"), ("rank 2", "rank 0")]


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"op": "x", "phase": "send"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: .*lacks field"):
        load([bad])
    bad.write_text("not json\n")
    with pytest.raises(ConfigError, match="not JSON"):
        load([bad])
    with pytest.raises(ConfigError, match="no trace files"):
        load([tmp_path / "missing-*.jsonl"])
    with pytest.raises(ConfigError, match="needs an actor"):
        Log("")


def test_log_spans_of_named_actors():
    log = Log("worker 1")
    with log.span("push", "send", peer="server", nbytes=100):
        pass
    log.record("push", "recv", peer="server", nbytes=8, start=5.0, end=6.0)
    server = Log("server")
    server.record("push", "recv", peer="worker 1", nbytes=100, start=log.events[0].start,
                  end=log.events[0].end + 0.01)
    t = Trace(log.events + server.events)
    assert t.actors == ["worker 1", "server"]
    msgs = [m for m in t.sequence() if isinstance(m, Message)]
    assert ("worker 1", "server") in {(m.sender, m.receiver) for m in msgs}
