"""tracing() and gather() on real ranks: every rank's steps end up on rank 0."""

import numpy as np
import pytest

from nonsense_hpc.comm import Tree
from nonsense_hpc.errors import CollectiveTimeoutError, ConfigError
from nonsense_hpc.trace import Log, Message, gather, tracing

NP = (1, 2, 3)
TIMEOUT = 90
VARIANTS = {"nodes1": {"NONSENSE_RANKS_PER_NODE": "1"}}
VARIANT_NP = {"nodes1": (3,)}


def test_tracing_block_renders_whole_job(comm, tmp_path):
    tree = Tree(comm)  # tracing off: tracing() switches it on for the block
    assert tree.recorder is None
    x = np.full(70_000, float(tree.rank + 1), dtype=np.float32)
    tree.allreduce(x)  # outside the block: not recorded
    with tracing(tree, out=tmp_path / "step") as t:
        tree.allreduce(x)
    assert tree.recorder is None  # restored
    if tree.size > 1:  # one rank alone moves nothing
        assert {e.actor for e in t.local.events} == {f"rank {tree.rank}"}
    if tree.rank == 0:
        p = tree.size
        if p > 1:
            assert t.trace.actors[:p] == [f"rank {r}" for r in range(p)]
            msgs = [m for m in t.trace.sequence() if isinstance(m, Message)]
            assert {m.receiver for m in msgs} == {f"rank {r}" for r in range(p)}
        assert (tmp_path / "step" / "trace.html").stat().st_size > 0
        assert t.files["chrome"].name == "trace.json"
        assert t.mermaid().startswith("sequenceDiagram")
    else:
        assert t.files == {}
    tree.close()


def test_tracing_keeps_an_existing_recorder(comm):
    tree = Tree(comm, trace=True)
    tree.allreduce(np.ones(10))
    before = len(tree.recorder.events)
    with tracing(tree, gather_ranks=False) as t:
        tree.allreduce(np.ones(10))
    assert tree.recorder is not None
    assert len(t.trace) == len(tree.recorder.events) - before
    tree.close()


def test_gather_logs_of_named_actors(comm):
    log = Log(f"worker {comm.rank}")
    log.record("push", "send", peer="server", nbytes=8, start=1.0 + comm.rank, end=1.5)
    merged = gather(log, comm, root=comm.size - 1)
    if comm.rank == comm.size - 1:
        assert sorted(merged.actors) == ["server"] + [f"worker {r}" for r in range(comm.size)]
        assert len(merged) == comm.size
    else:
        assert merged is None
    with pytest.raises(ConfigError, match="root must be a rank"):
        gather(log, comm, root=comm.size)


def test_gather_times_out_when_a_rank_stays_away(comm):
    if comm.size < 2:
        pytest.skip("needs a second rank that does not take part")
    sub = comm.Dup()
    if sub.rank == 0:
        with pytest.raises(CollectiveTimeoutError, match="trace gather"):
            gather(Log("a"), sub, timeout=1.0)
    comm.Barrier()
    # The abandoned gather left requests behind on ``sub``: never reuse it.
