"""Choosing how CUDA tensors are reduced: straight to a CUDA-aware MPI, or through host.

The GPU round trips are in mpi_test_tree.py (they run on a lent GPU machine); these run
everywhere and pin the decisions a user relies on.
"""

import pytest
from mpi4py import MPI

from nonsense_hpc import ConfigError
from nonsense_hpc.comm import Tree
from nonsense_hpc.comm.buffers import spec_of
from nonsense_hpc.comm.cuda import cuda_aware_mpi, direct_eligible, use_direct
from nonsense_hpc.comm.ops import ReduceOp, resolve_op
from nonsense_hpc.config import Settings


def _cuda_spec(dtype="float32", shape=(4,)):
    return ("torch", dtype, shape, "cuda")


def test_library_query_answers_a_bool():
    assert isinstance(cuda_aware_mpi(), bool)


def test_modes():
    assert use_direct("staged", aware=True) is False
    assert use_direct("auto", aware=True) is True
    assert use_direct("auto", aware=False) is False
    assert use_direct("direct", aware=True) is True
    with pytest.raises(ConfigError, match=r"not CUDA-aware.*NONSENSE_CUDA=auto or staged"):
        use_direct("direct", aware=False)


def test_only_cuda_tensors_of_mpi_dtypes_with_builtin_ops_go_direct():
    add = ReduceOp("sum")
    assert direct_eligible(_cuda_spec(), add)
    assert direct_eligible(("dict", (("b", _cuda_spec("int64")),
                                     ("w", _cuda_spec("float64", (2, 3))))), add)
    assert not direct_eligible(_cuda_spec("bfloat16"), add)   # MPI has no bf16 sum
    assert not direct_eligible(_cuda_spec("float16"), add)
    assert not direct_eligible(("torch", "float32", (4,), "cpu"), add)
    mixed = ("list", (_cuda_spec(), ("numpy", "float32", (4,), "cpu")))
    assert not direct_eligible(mixed, add)
    assert not direct_eligible(("list", ()), add)
    assert not direct_eligible(_cuda_spec(), resolve_op(lambda a, b: a))


def test_cpu_values_never_take_the_direct_path():
    import torch

    assert not direct_eligible(spec_of(torch.ones(3)), ReduceOp("sum"))


def test_setting_is_validated():
    with pytest.raises(ConfigError, match="cuda must be auto, direct or staged"):
        Settings.from_env({"NONSENSE_CUDA": "gpu"})
    assert Settings.from_env({"NONSENSE_CUDA": "staged"}).cuda == "staged"
    # the ipc package's own variable is not mistaken for a typo of NONSENSE_CUDA
    assert Settings.from_env({"NONSENSE_CUDA_IPC": "0"}).cuda == "auto"


@pytest.mark.skipif(cuda_aware_mpi(), reason="this MPI library is CUDA-aware")
def test_tree_refuses_direct_without_a_cuda_aware_library():
    with pytest.raises(ConfigError, match="not CUDA-aware"):
        Tree(MPI.COMM_WORLD, cuda="direct")
    tree = Tree(MPI.COMM_WORLD, cuda="staged")  # and nothing leaked: a Tree still works
    tree.close()
