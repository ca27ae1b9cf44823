"""Containers for jobs: Apptainer / SingularityCE through spython, or a local sandbox.

The hybrid MPI model: the host's ``mpirun`` starts one container process per rank::

    mpirun -n 2 nonsense-hpc container exec nonsense-hpc -- python -m my.training

Runtimes (:func:`detect_runtime` picks one; ``NONSENSE_CONTAINER_RUNTIME`` overrides):

* ``apptainer`` / ``singularity``: images built from ``containers/nonsense-hpc.def``,
  driven through spython (:class:`ApptainerRuntime`);
* ``local``: a Debian root filesystem made with debootstrap, run with bubblewrap
  (:class:`LocalRuntime`), for machines with neither.

Example:
    >>> from nonsense_hpc.containers import get_runtime
    >>> rt = get_runtime("local")
    >>> image = rt.build("nonsense-hpc")                                   # doctest: +SKIP
    >>> rt.exec(image, ["python", "-c", "import nonsense_hpc"]).returncode  # doctest: +SKIP
    0
"""

from __future__ import annotations

from nonsense_hpc.containers.apptainer import ApptainerRuntime, is_uri
from nonsense_hpc.containers.definitions import (
    default_definition,
    default_recipe,
    host_build_args,
    parse_definition,
)
from nonsense_hpc.containers.detect import RUNTIMES, RuntimeName, detect_runtime
from nonsense_hpc.containers.hybrid import (
    Bind,
    host_python_binds,
    mpi_binds,
    passthrough_environment,
)
from nonsense_hpc.containers.instances import InstanceInfo
from nonsense_hpc.containers.local import LocalRuntime
from nonsense_hpc.containers.runtime import ContainerRuntime, ExecResult, get_runtime
from nonsense_hpc.containers.sandbox import (
    DEFAULT_IMAGE,
    SandboxRecipe,
    build_sandbox,
    resolve_sandbox,
    sandbox_dir,
)

__all__ = [
    "DEFAULT_IMAGE",
    "RUNTIMES",
    "ApptainerRuntime",
    "Bind",
    "ContainerRuntime",
    "ExecResult",
    "InstanceInfo",
    "LocalRuntime",
    "RuntimeName",
    "SandboxRecipe",
    "build_sandbox",
    "default_definition",
    "default_recipe",
    "detect_runtime",
    "get_runtime",
    "host_build_args",
    "host_python_binds",
    "is_uri",
    "mpi_binds",
    "parse_definition",
    "passthrough_environment",
    "resolve_sandbox",
    "sandbox_dir",
]
