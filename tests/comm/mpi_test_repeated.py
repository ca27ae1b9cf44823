"""The repeated small allreduce (a training loop reducing the same tensor every step).

After the first call the Tree takes a compiled one-round path for that tensor; these
tests check it stays correct when values change, when ranks mix it with the general path,
when one rank passes something else, when a tensor is resized in place, and when tracing
is switched on part-way.
"""

import numpy as np
import pytest
import torch

from nonsense_hpc import CollectiveMismatchError, Tree

NP = (1, 2, 3, 4, 5, 8)
TIMEOUT = 90
VARIANTS = {"nodes2": {"NONSENSE_RANKS_PER_NODE": "2"}}
VARIANT_NP = {"nodes2": (3, 4)}


def test_same_tensor_every_step_gets_fresh_sums(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    t = torch.zeros(3)
    a = np.zeros(5, dtype=np.int64)
    for step in range(50):
        t.fill_(float(r + step))
        assert tree.allreduce(t) == p
        assert torch.all(t == sum(q + step for q in range(p))), (step, t)
        a[:] = r * step
        tree.allreduce(a, "max")
        assert (a == (p - 1) * step).all(), (step, a)
    tree.close()


def test_large_tensor_every_step_gets_fresh_sums(comm):
    # past the one-round size: the cached plan feeds the staged (and leaders') path
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    t = torch.zeros(300_001)
    a = np.zeros(70_000, dtype=np.float64)
    for step in range(6):
        t.fill_(float(r + step))
        t[-1] = r
        assert tree.allreduce(t) == p
        assert torch.all(t[:-1] == sum(q + step for q in range(p))), step
        assert t[-1] == p * (p - 1) / 2
        a[:] = r - step
        tree.allreduce(a, "min")
        assert (a == -step).all()
    t.data = torch.ones(5)  # new storage: the cached plan must not be used
    tree.allreduce(t)
    assert torch.all(t == p)
    tree.close()


def test_fresh_tensors_parameters_and_zero_dim_values(comm):
    # a loss scalar made fresh every step, a model parameter, a 0-d tensor, a view
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    for step in range(5):
        loss = torch.tensor([float(r + step)])
        tree.allreduce(loss, "avg")
        assert loss.item() == (p - 1) / 2 + step
    w = torch.nn.Parameter(torch.full((3,), float(r + 1)))
    tree.allreduce(w)
    assert w.requires_grad and torch.all(w.detach() == p * (p + 1) / 2)
    s = torch.tensor(float(r))
    tree.allreduce(s, "max")
    assert s.shape == () and s.item() == p - 1
    base = torch.zeros(4, 6)
    base[:, 1:3] = float(r)
    col = base[:, 1:3]  # not contiguous: staged and written back
    tree.allreduce(col)
    assert torch.all(base[:, 1:3] == p * (p - 1) / 2) and torch.all(base[:, 0] == 0)
    tree.close()


def test_avg_and_min_repeated(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    t = torch.zeros(4, dtype=torch.float64)
    i = np.zeros(4, dtype=np.int32)
    for step in range(20):
        t.fill_(float(2 * r + step))
        tree.allreduce(t, "avg")
        assert torch.all(t == (p - 1) + step), (step, t)
        i[:] = 7 * r + step
        tree.allreduce(i, "avg")  # integer avg rounds down
        assert (i == (7 * p * (p - 1) // 2 + p * step) // p).all()
        t.fill_(float(r - step))
        tree.allreduce(t, "min")
        assert torch.all(t == -step)
    tree.close()


def test_one_rank_on_general_path_while_others_repeat(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    kept = torch.zeros(2)
    for step in range(30):
        # rank 0 brings a new tensor every step; the others reuse theirs
        x = torch.full((2,), float(step)) if r == 0 else kept.fill_(float(step))
        tree.allreduce(x)
        assert torch.all(x == p * step), (step, x)
    tree.close()


def test_mismatch_after_warm_steps_raises_everywhere_then_recovers(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    if p == 1:
        pytest.skip("a mismatch needs two ranks")
    t = torch.ones(4)
    for _ in range(5):
        t.fill_(1.0)
        tree.allreduce(t)
    other = torch.ones(6)
    with pytest.raises(CollectiveMismatchError) as info:
        tree.allreduce(other if r == p - 1 else t)
    msg = str(info.value)
    assert "float32[6]" in msg and "float32[4]" in msg
    assert len(set(comm.allgather(msg))) == 1, "ranks raised different errors"
    t.fill_(2.0)
    tree.allreduce(t)
    assert torch.all(t == 2.0 * p)
    # a different op on the same tensor is a different call, not the cached one
    t.fill_(float(r))
    tree.allreduce(t, "max")
    assert torch.all(t == p - 1)
    tree.close()


def test_tensor_given_new_storage_is_not_served_stale(comm):
    tree = Tree(comm)
    p = tree.size
    t = torch.ones(3)
    for _ in range(3):
        t.fill_(1.0)
        tree.allreduce(t)
    t.data = torch.ones(100_000)  # same object, new storage, new shape

    tree.allreduce(t)
    assert t.shape == (100_000,) and torch.all(t == p)
    tree.close()


def test_rank_out_of_data_after_warm_steps(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    t = torch.zeros(2)
    for _ in range(4):
        t.fill_(1.0)
        assert tree.allreduce(t) == p
    res = tree.allreduce(None if r == 0 else t.fill_(1.0))
    assert res == p - 1
    if p > 1:
        assert torch.all(res.value == p - 1)
    tree.close()


def test_tracing_switched_on_part_way_records_later_calls(comm):
    from nonsense_hpc.comm.recorder import Recorder

    tree = Tree(comm)
    t = torch.ones(8)
    for _ in range(5):
        tree.allreduce(t)
    tree.recorder = Recorder(tree.rank)
    t.fill_(1.0)
    tree.allreduce(t)
    assert torch.all(t == tree.size)
    if tree.size > 1:
        assert any(e.op == "allreduce" for e in tree.recorder.events)
    tree.recorder = None
    tree.close()


def test_closed_tree_refuses_repeated_tensor(comm):
    tree = Tree(comm)
    t = torch.ones(2)
    tree.allreduce(t)
    tree.allreduce(t)
    tree.close()
    with pytest.raises(Exception, match="closed"):
        tree.allreduce(t)
