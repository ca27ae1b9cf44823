"""Tree collectives on every rank count of the matrix, on one node, on pretend nodes
(the inter-node leader path), and through the staged shared-window transport."""

import hashlib

import numpy as np
import pytest
import torch

from nonsense_hpc import CollectiveMismatchError, CollectiveTimeoutError, Tree

NP = (1, 2, 3, 4, 5, 8)
TIMEOUT = 90
VARIANTS = {
    "nodes2": {"NONSENSE_RANKS_PER_NODE": "2"},
    "shm": {"NONSENSE_TRANSPORT": "shm", "NONSENSE_SHM_BYTES": "256KiB"},
    "cma": {"NONSENSE_TRANSPORT": "cma", "NONSENSE_SMALL_BYTES": "16KiB"},
}
VARIANT_NP = {"nodes2": (3, 4, 5), "shm": (2, 3), "cma": (3,)}

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32,
          torch.int64]


def _digest(t):
    if isinstance(t, np.ndarray):
        return hashlib.sha1(t.tobytes()).hexdigest()
    return hashlib.sha1(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def test_sum_in_place_every_size(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    for n in (1, 2, 1023, 4096, 262_145, 1_048_576 + 7):
        x = torch.full((n,), float(r + 1))
        count = tree.allreduce(x)
        assert count == p
        assert torch.all(x == p * (p + 1) / 2), (n, x[:4])
    tree.close()


def test_every_dtype_exact(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    for dtype in DTYPES:
        for n in (5, 70_000):
            x = torch.full((n,), r + 1, dtype=dtype)
            tree.allreduce(x)
            assert x.dtype == dtype
            assert torch.all(x.double() == p * (p + 1) / 2), (dtype, n)
    tree.close()


def test_builtin_ops(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    for n in (3, 100_000):
        x = torch.full((n,), float(r + 1))
        tree.allreduce(x, "max")
        assert torch.all(x == p)
        x = torch.full((n,), float(r + 1))
        tree.allreduce(x, "min")
        assert torch.all(x == 1)
        x = torch.full((n,), 2.0)
        tree.allreduce(x, "prod")
        assert torch.all(x == 2.0**p)
        x = torch.full((n,), float(r + 1))
        tree.allreduce(x, "avg")
        assert torch.allclose(x, torch.full((n,), (p + 1) / 2))
    with pytest.raises(ValueError, match="unknown reduction"):
        tree.allreduce(torch.ones(2), "median")
    tree.close()


def test_numpy_and_nested_table_with_fusion(comm):
    tree = Tree(comm, settings=None)
    p, r = tree.size, tree.rank
    grads = {
        "layers": [torch.full((7, 3), float(r)) for _ in range(120)],  # many small: fused
        "embed": torch.full((300_000,), 1.0),                             # large: alone
        "count": np.full(4, r, dtype=np.int64),
        "pair": (np.ones(3, dtype=np.float64), torch.ones(2, dtype=torch.bfloat16)),
    }
    assert tree.allreduce(grads) == p
    total = sum(range(p))
    assert all(torch.all(t == total) for t in grads["layers"])
    assert torch.all(grads["embed"] == p)
    assert (grads["count"] == total).all()
    assert (grads["pair"][0] == p).all() and torch.all(grads["pair"][1] == p)
    tree.close()


def test_out_keeps_input(comm):
    tree = Tree(comm)
    x = torch.full((10,), 1.0)
    out = torch.empty(10)
    res = tree.allreduce(x, out=out)
    assert res.value is out
    assert torch.all(x == 1.0) and torch.all(out == tree.size)
    tree.close()


def test_non_contiguous_tensor(comm):
    tree = Tree(comm)
    base = torch.ones(20, 10)
    view = base[:, ::2]
    assert not view.is_contiguous()
    tree.allreduce(view)
    assert torch.all(base[:, ::2] == tree.size) and torch.all(base[:, 1::2] == 1)
    tree.close()


def test_callable_rank_order_bit_identical(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    # Non-commutative and non-associative: f(a, b) = 2a + b.
    x = torch.full((4,), float(r + 1))
    tree.allreduce(x, lambda a, b: a.mul_(2).add_(b))
    want = 1.0
    for q in range(1, p):
        want = 2 * want + (q + 1)
    assert torch.all(x == want), (x, want)
    # A callable that returns a new tensor instead of modifying a.
    y = np.full(3, r + 1.0)
    tree.allreduce(y, lambda a, b: a - b)
    assert (y == 1.0 - sum(range(2, p + 1))).all()
    tree.close()


def test_float_results_identical_on_every_rank_and_every_run(comm):
    tree = Tree(comm)
    r = tree.rank
    for n in (1000, 400_001):
        gen = torch.Generator().manual_seed(1234 + r)
        data = (torch.randn(n, generator=gen) * 10 ** torch.randint(-6, 6, (n,),
                                                                    generator=gen)).float()
        a, b = data.clone(), data.clone()
        tree.allreduce(a)
        tree.allreduce(b)
        assert torch.equal(a, b), "same input, different result from run to run"
        digests = comm.allgather(_digest(a))
        assert len(set(digests)) == 1, f"ranks disagree on the bits: {digests}"
        if tree.topology.nodes == 1:
            # One node: the fold is ((x0 + x1) + x2) ... in rank order.
            parts = comm.allgather(data.numpy())
            want = parts[0].copy()
            for q in range(1, len(parts)):
                want += parts[q]
            assert np.array_equal(a.numpy(), want)
    tree.close()


def test_uneven_steps_contribute_zeros(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    steps = r + 1  # rank r has r + 1 batches
    for step in range(p + 1):
        value = torch.full((6,), 1.0) if step < steps else None
        res = tree.allreduce(value)
        have = sum(1 for q in range(p) if step < q + 1)
        assert res == have, (step, int(res), have)
        if have:
            assert torch.all(res.value == have)
        else:
            assert res.value is None
    # max with a rank out of data: it contributes the identity, not zeros
    value = torch.full((3,), -5.0) if r == 0 else None
    res = tree.allreduce(value, "max")
    assert res == 1 and torch.all(res.value == -5.0)
    # an explicit zero
    res = tree.allreduce(None if r == 0 else torch.ones(2), zero=lambda: torch.zeros(2))
    assert res == p - 1
    if p > 1:
        assert torch.all(res.value == p - 1)
    tree.close()


def test_shape_mismatch_same_error_on_every_rank(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    if p == 1:
        pytest.skip("a mismatch needs two ranks")
    x = torch.ones(5 if r == p - 1 else 4)
    with pytest.raises(CollectiveMismatchError) as info:
        tree.allreduce(x)
    msg = str(info.value)
    assert f"[{p - 1}]" in msg and "float32[5]" in msg and "float32[4]" in msg
    assert len(set(comm.allgather(msg))) == 1, "ranks raised different errors"
    # dtype and structure mismatches too, and the Tree still works afterwards
    y = torch.ones(4, dtype=torch.float64 if r == 0 else torch.float32)
    with pytest.raises(CollectiveMismatchError, match="float64"):
        tree.allreduce(y)
    z = {"a": torch.ones(2)} if r == 0 else [torch.ones(2)]
    with pytest.raises(CollectiveMismatchError, match="rank"):
        tree.allreduce(z)
    ok = torch.ones(3)
    tree.allreduce(ok)
    assert torch.all(ok == p)
    tree.close()


def test_non_tensor_leaf_is_type_error_everywhere(comm):
    tree = Tree(comm)
    bad = {"w": torch.ones(2), "note": "not a tensor"} if tree.rank == 0 else \
        {"w": torch.ones(2), "note": torch.ones(1)}
    with pytest.raises(TypeError, match="str"):
        tree.allreduce(bad)
    with pytest.raises(TypeError):
        tree.allreduce(torch.ones(2, dtype=torch.complex64))
    tree.close()


def test_broadcast_scatter_gather_allgather_reduce(comm):
    tree = Tree(comm)
    p, r = tree.size, tree.rank
    root = p - 1
    v = {"a": torch.arange(5.0) * (r + 1), "b": np.full(3, r, dtype=np.int32)}
    tree.broadcast(v, root=root)
    assert torch.equal(v["a"], torch.arange(5.0) * p) and (v["b"] == root).all()
    got = tree.broadcast(torch.arange(3) if r == 0 else None)
    assert torch.equal(got, torch.arange(3))
    parts = tree.allgather(torch.full((r + 1,), float(r)))
    assert [t.tolist() for t in parts] == [[float(q)] * (q + 1) for q in range(p)]
    gathered = tree.gather(np.array([r]), root=0)
    if r == 0:
        assert [int(a[0]) for a in gathered] == list(range(p))
    else:
        assert gathered is None
    items = [torch.full((2,), float(q)) for q in range(p)] if r == root else None
    mine = tree.scatter(items, root=root)
    assert torch.all(mine == r)
    x = torch.full((4,), float(r + 1))
    res = tree.reduce(x, root=0)
    if r == 0:
        assert torch.all(x == p * (p + 1) / 2) and res == p
    else:
        assert torch.all(x == r + 1) and res.value is None
    tree.barrier()
    tree.close()


def test_trace_recorder_off_by_default_and_on_request(comm):
    tree = Tree(comm)
    assert tree.recorder is None
    tree.close()
    tree = Tree(comm, trace=True)
    tree.allreduce(torch.ones(300_000))
    events = tree.recorder.events
    assert all(e.rank == tree.rank and e.end >= e.start for e in events)
    if tree.size > 1:
        assert events
        assert {"reduce"} <= {e.phase for e in events}
        assert any(e.peer >= 0 and e.nbytes > 0 for e in events)
    tree.close()


def test_peer_that_never_arrives_times_out(comm):
    tree = Tree(comm, timeout=1.5)
    if tree.size == 1:
        pytest.skip("needs a peer")
    if tree.rank == 0:
        with pytest.raises(CollectiveTimeoutError, match="did not arrive"):
            tree.allreduce(torch.ones(10))
    comm.Barrier()
    # the absent rank's collective would now pair with stale state: build a fresh Tree
    tree2 = Tree(comm)
    x = torch.ones(3)
    tree2.allreduce(x)
    assert torch.all(x == tree2.size)
    tree2.close()


def test_cuda_tensors_staged_through_host(comm):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (exercised on a lent GPU machine)")
    tree = Tree(comm)
    x = torch.full((1000,), float(tree.rank + 1), device="cuda")
    tree.allreduce(x)
    assert x.is_cuda and torch.all(x == tree.size * (tree.size + 1) / 2)
    tree.close()


def test_cuda_tensors_direct_to_a_cuda_aware_mpi(comm):
    from nonsense_hpc.comm.cuda import cuda_aware_mpi

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (exercised on a lent GPU machine)")
    if not cuda_aware_mpi():
        pytest.skip("this MPI library is not CUDA-aware (MPIX_Query_cuda_support() is 0)")
    tree = Tree(comm, cuda="direct")
    p, r = tree.size, tree.rank
    dev = f"cuda:{r % torch.cuda.device_count()}"
    grads = {"w": torch.full((3, 5), float(r + 1), device=dev),
             "b": torch.full((7,), r + 1, dtype=torch.int64, device=dev),
             "big": torch.full((300_000,), 1.0, device=dev)}
    assert tree.allreduce(grads) == p
    assert grads["w"].is_cuda and torch.all(grads["w"] == p * (p + 1) / 2)
    assert torch.all(grads["b"] == p * (p + 1) // 2) and torch.all(grads["big"] == p)
    x = torch.full((4,), float(r), device=dev)
    tree.allreduce(x, "avg")
    assert torch.all(x == (p - 1) / 2)
    res = tree.allreduce(None if r == 0 else torch.ones(2, device=dev))
    assert res == p - 1
    if p > 1:
        assert res.value.is_cuda and torch.all(res.value == p - 1)
    tree.close()
