"""``nonsense-hpc trace -- mpirun ...`` on a real MPI job, and the exit hook alone."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nonsense_hpc.comm.recorder import Recorder
from nonsense_hpc.launch import find_mpirun
from nonsense_hpc.trace import hook
from nonsense_hpc.trace.runner import run_traced

PROGRAM = textwrap.dedent("""
    import numpy as np
    from nonsense_hpc.comm import Tree
    tree = Tree()                      # NONSENSE_TRACE=1 from the CLI turns recording on
    assert tree.recorder is not None
    x = np.full(50_000, float(tree.rank), dtype=np.float32)
    tree.allreduce(x)
    tree.close()
""")


def _cli(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "nonsense_hpc", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    p = tmp_path_factory.mktemp("prog") / "step.py"
    p.write_text(PROGRAM)
    return p


def test_trace_an_mpirun_job(program, tmp_path):
    mpirun = find_mpirun()
    out = tmp_path / "out"
    res = _cli(["trace", "-o", str(out), "--mermaid", "--timeout", "90", "--",
                mpirun, "--oversubscribe", "-n", "3", "-x", "NONSENSE_RANKS_PER_NODE=1",
                sys.executable, str(program)])
    assert res.returncode == 0, res.stderr
    raw = sorted((out / "raw").glob("*.jsonl"))
    assert len(raw) == 3
    assert res.stdout.startswith("sequenceDiagram")
    for r in range(3):
        assert f"participant p{r} as rank {r}" in res.stdout
    doc = json.loads((out / "trace.json").read_text())
    tracks = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert tracks == {"rank 0", "rank 1", "rank 2"}
    assert any(e["ph"] == "s" for e in doc["traceEvents"])  # leader messages as flows
    assert "<svg" in (out / "trace.html").read_text()
    # the files can be rendered again later
    again = _cli(["trace", "--input", str(out / "raw"), "-o", str(tmp_path / "again")])
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "trace.mmd").read_text() == (out / "trace.mmd").read_text()


def test_exit_status_and_no_events(tmp_path):
    res = _cli(["trace", "-o", str(tmp_path), "--", sys.executable, "-c",
                "import sys; sys.exit(3)"])
    assert res.returncode == 3
    assert "no events were recorded" in res.stderr


def test_timeout_kills_the_command(tmp_path):
    res = run_traced([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path,
                     timeout=1.0)
    assert res.returncode == 124 and len(res.trace) == 0


def test_bad_usage_is_explained(tmp_path):
    res = _cli(["trace", "-o", str(tmp_path)])
    assert res.returncode != 0 and "nothing to run" in res.stderr
    res = _cli(["trace", "-o", str(tmp_path), "--", "/no/such/program"])
    assert res.returncode != 0 and "cannot run" in res.stderr
    res = _cli(["trace", "--input", str(tmp_path / "none.jsonl")])
    assert res.returncode != 0 and "no trace files" in res.stderr


def test_hook_dumps_registered_and_live_recorders(tmp_path, monkeypatch):
    monkeypatch.setenv(hook.TRACE_FILE_VAR, str(tmp_path) + os.sep)
    a, b = Recorder(0), Recorder(5)
    a.record("allreduce", "send", 1, 8, 0.0, 1.0)
    b.record("allreduce", "recv", 0, 8, 0.0, 1.0)
    hook.register(a)  # b is found as a live Recorder
    written = hook.dump_all()
    names = sorted(Path(p).name for p in written)
    # (other live Recorders of this test process may be written too)
    assert {f"trace-0-{os.getpid()}.jsonl", f"trace-5-{os.getpid()}.jsonl"} <= set(names)
    assert hook.path_for("/x/t-{rank}.jsonl", 3) == Path("/x/t-3.jsonl")
    assert hook.path_for("/x/t.jsonl", 3, pid=9) == Path("/x/t-3-9.jsonl")
