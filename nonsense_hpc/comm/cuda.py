"""CUDA tensors handed straight to a CUDA-aware MPI library.

With an MPI built against CUDA (Open MPI with ``--with-cuda``, MVAPICH2-GDR, a cluster's
UCX build), device buffers can be passed to ``MPI_Allreduce`` as they are: the library
moves them GPU to GPU (NVLink, GPUDirect RDMA) with no stop in host memory. This module
answers whether the loaded library can, and runs the reduction that way: tensors of one
dtype are packed into one device buffer (the Tree's fusion, on the GPU), reduced in
place by the library, and copied back.

Without a CUDA-aware library, the Tree stages CUDA tensors through pinned host memory
and runs its own shared-memory tree (see :mod:`nonsense_hpc.comm.buffers`).

Reduction order on this path is the MPI library's, not the Tree's fixed rank order: set
``NONSENSE_CUDA=staged`` where results must be bit-identical to the CPU path.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import Any

from nonsense_hpc.comm.ops import ReduceOp
from nonsense_hpc.errors import ConfigError

__all__ = ["DIRECT_DTYPES", "cuda_aware_mpi", "direct_allreduce", "direct_eligible",
           "use_direct"]

# MPI has no standard float16/bfloat16 reductions: those stay on the staged path.
DIRECT_DTYPES = ("float32", "float64", "int32", "int64")


def _libmpi_paths() -> list[str]:
    """Paths of the MPI libraries mapped into this process (after mpi4py loaded one)."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                name = path.rsplit("/", 1)[-1]
                if name.startswith(("libmpi.so", "libmpi_")) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    return paths


@lru_cache(maxsize=1)
def cuda_aware_mpi() -> bool:
    """Whether the MPI library in use accepts CUDA device buffers.

    Asks the library through ``MPIX_Query_cuda_support`` (Open MPI, MPICH >= 4.1), which
    is true only when it was built with CUDA and the runtime supports it. A library
    without the query counts as not CUDA-aware. Call after MPI is initialised.
    """
    from mpi4py import MPI

    if not MPI.Is_initialized():
        return False
    for path in [*_libmpi_paths(), ""]:
        try:
            lib = ctypes.CDLL(path or None)
            query = lib.MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype = ctypes.c_int
        query.argtypes = []
        return bool(query())
    return False


def use_direct(mode: str, aware: bool | None = None) -> bool:
    """Decide, from the ``cuda`` setting, whether CUDA tensors go to MPI directly.

    Args:
        mode: ``auto``, ``direct`` or ``staged``.
        aware: whether the library is CUDA-aware (default: ask it).

    Raises:
        ConfigError: ``direct`` was asked for and the library is not CUDA-aware.
    """
    if mode == "staged":
        return False
    aware = cuda_aware_mpi() if aware is None else aware
    if mode == "direct" and not aware:
        raise ConfigError("NONSENSE_CUDA=direct asked for, but this MPI library is not "
                          "CUDA-aware (MPIX_Query_cuda_support() returned 0 or is "
                          "missing); use NONSENSE_CUDA=auto or staged, or a CUDA build of "
                          "MPI (docs/mpi.md)")
    return aware


def direct_eligible(spec: Any, op: ReduceOp) -> bool:
    """Whether a value of this spec can be reduced by the library on the GPU.

    Every leaf must be a CUDA tensor of a dtype MPI reduces, and the op a builtin.
    """
    if not op.builtin:
        return False
    return _all_cuda(spec)


def _all_cuda(spec: Any) -> bool:
    kind = spec[0]
    if kind == "dict":
        return bool(spec[1]) and all(_all_cuda(v) for _, v in spec[1])
    if kind in ("list", "tuple"):
        return bool(spec[1]) and all(_all_cuda(v) for v in spec[1])
    return kind == "torch" and spec[3] == "cuda" and spec[1] in DIRECT_DTYPES


def _tensors(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [t for k in sorted(value, key=str) for t in _tensors(value[k])]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return [value]


def _mpi_op(name: str) -> Any:
    from mpi4py import MPI

    return {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN,
            "prod": MPI.PROD}[name]


def direct_allreduce(comm: Any, value: Any, op: ReduceOp, n_data: int,
                     bucket_bytes: int) -> None:
    """Reduce the CUDA tensors of ``value`` in place through a CUDA-aware MPI.

    Tensors of one dtype and device are packed into device buffers of at most
    ``bucket_bytes`` (one tensor at least as large travels alone, in place when
    contiguous); the current stream is synchronised before the library reads them.

    Args:
        comm: the communicator (the Tree's private one).
        value: a CUDA tensor or a dict/list/tuple of them (see :func:`direct_eligible`).
        op: a builtin op; ``avg`` divides by ``n_data`` afterwards.
        n_data: how many ranks contributed data (for ``avg``).
        bucket_bytes: fusion bucket size.
    """
    import torch
    from mpi4py import MPI

    mpi_op = _mpi_op(op.name)
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for t in _tensors(value):
        groups.setdefault((t.dtype, t.device), []).append(t)
    for (dtype, device), tensors in groups.items():
        with torch.cuda.device(device):
            for bucket in _buckets(tensors, bucket_bytes):
                alone = len(bucket) == 1 and bucket[0].is_contiguous()
                flat = bucket[0].detach().view(-1) if alone else torch.cat(
                    [t.detach().reshape(-1) for t in bucket])
                torch.cuda.current_stream().synchronize()
                comm.Allreduce(MPI.IN_PLACE, flat, op=mpi_op)
                if op.name == "avg" and n_data > 1:
                    if dtype.is_floating_point:
                        flat.div_(n_data)
                    else:
                        flat.floor_divide_(n_data)
                if not alone:
                    offset = 0
                    for t in bucket:
                        n = t.numel()
                        t.detach().copy_(flat[offset:offset + n].view(t.shape))
                        offset += n
        torch.cuda.current_stream(device).synchronize()


def _buckets(tensors: list[Any], bucket_bytes: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if nbytes * 2 >= bucket_bytes:
            out.append([t])
            continue
        if current and size + nbytes > bucket_bytes:
            out.append(current)
            current, size = [], 0
        current.append(t)
        size += nbytes
    if current:
        out.append(current)
    return out
