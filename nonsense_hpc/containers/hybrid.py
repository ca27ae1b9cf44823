"""The hybrid MPI model: what a container process per rank needs from the host.

The host's ``mpirun`` (or Slurm) starts one container process per rank. The rank inside
must reach the launcher's PMIx server and its peers, so a container exec passes through:

* the environment the launcher set (``OMPI_*``, ``PMIX_*``, ``PRTE_*``, ``OPAL_*``,
  ``SLURM_*`` ...), see :func:`passthrough_environment`;
* the directories the launcher keeps its rendezvous files and shared-memory segments in
  (``PMIX_SERVER_TMPDIR``, ``PMIX_SYSTEM_TMPDIR``, the Open MPI session directory, and
  ``/dev/shm``), see :func:`mpi_binds`;
* the host's network, process and IPC namespaces (neither runtime unshares them).

For the local runtime, :func:`host_python_binds` names the host's Python environment (the
virtual environment, its base interpreter and this project's source tree) so that it can
be bind-mounted read-only at the same paths: the same Python, MPI and package inside as
outside. The Apptainer definition installs them into the image instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nonsense_hpc.errors import ConfigError

__all__ = [
    "PASSTHROUGH_NAMES",
    "PASSTHROUGH_PREFIXES",
    "Bind",
    "host_python_binds",
    "mpi_binds",
    "passthrough_environment",
]

#: Environment variable prefixes a rank needs from its launcher.
PASSTHROUGH_PREFIXES: tuple[str, ...] = (
    "OMPI_", "PMIX_", "PRTE_", "OPAL_", "HWLOC_", "UCX_", "I_MPI_", "MPICH_", "HYDRA_",
    "PMI_", "SLURM_", "NONSENSE_", "MPI4PY_", "CUDA_", "NCCL_", "TORCH_", "OMP_",
)
#: Single variables passed through as they are.
PASSTHROUGH_NAMES: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TZ", "TMPDIR",
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "PYTHONPATH", "PYTHONUNBUFFERED", "VIRTUAL_ENV",
)

# Variables whose value is (or contains) a directory the launcher shares with its ranks.
_MPI_DIR_VARIABLES = ("PMIX_SERVER_TMPDIR", "PMIX_SYSTEM_TMPDIR", "OMPI_FILE_LOCATION",
                      "PRTE_MCA_prte_tmpdir_base", "OMPI_MCA_prte_tmpdir_base", "TMPDIR")
_SYSTEM_PREFIXES = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc")


@dataclass(frozen=True)
class Bind:
    """One bind mount: host ``src`` appears at ``dst`` inside the container.

    Attributes:
        src: absolute host path.
        dst: absolute path inside the container.
        readonly: mount read-only.
    """

    src: str
    dst: str
    readonly: bool = False

    def __post_init__(self) -> None:
        for label, path in (("source", self.src), ("destination", self.dst)):
            if not path or not os.path.isabs(path):
                raise ConfigError(f"bind {label} must be an absolute path, got {path!r}")
            if ":" in path or "," in path:
                raise ConfigError(f"bind {label} {path!r} may not contain ':' or ','")

    @classmethod
    def parse(cls, spec: str) -> Bind:
        """Parse Apptainer's bind syntax ``SRC[:DST[:ro|rw]]``.

        Raises:
            ConfigError: the spec is malformed or a path is relative.
        """
        parts = spec.split(":")
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise ConfigError(f"bad bind {spec!r}: use SRC[:DST[:ro|rw]] with absolute paths")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise ConfigError(f"bad bind {spec!r}: the mode must be 'ro' or 'rw', got {mode!r}")
        src = os.path.abspath(parts[0])
        dst = parts[1] if len(parts) >= 2 and parts[1] else src
        return cls(src, dst, mode == "ro")

    def spec(self) -> str:
        """The bind in Apptainer's ``SRC:DST[:ro]`` syntax."""
        text = self.src if self.src == self.dst else f"{self.src}:{self.dst}"
        if self.readonly:
            text = f"{self.src}:{self.dst}:ro"
        return text


def passthrough_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` that a rank inside a container needs.

    Used when the container starts with a clean environment (``clean_env``); otherwise both
    runtimes pass the whole host environment through anyway.
    """
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if k in PASSTHROUGH_NAMES or k.startswith(PASSTHROUGH_PREFIXES)}


def _covered(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def mpi_binds(environ: Mapping[str, str] | None = None,
              already: Iterable[str] = ("/tmp", "/dev")) -> list[Bind]:
    """Directories the MPI launcher shares with its ranks, as read-write binds.

    Args:
        environ: the rank's environment as the launcher set it (default: ours).
        already: container paths the runtime binds anyway; directories below them are
            left out.

    Returns:
        One bind per existing directory, at the same path, in a stable order.
    """
    env = os.environ if environ is None else environ
    roots = list(already)
    out: list[Bind] = []
    seen: set[str] = set()
    for key in _MPI_DIR_VARIABLES:
        value = env.get(key)
        if not value or not os.path.isabs(value):
            continue
        path = os.path.normpath(value)
        # OMPI_FILE_LOCATION names a per-job subdirectory; bind the session's top.
        if not os.path.isdir(path):
            continue
        if path in seen or _covered(path, roots) or path == "/":
            continue
        seen.add(path)
        out.append(Bind(path, path, False))
    return out


def _package_root() -> Path:
    import nonsense_hpc

    return Path(nonsense_hpc.__file__).resolve().parent.parent


def host_python_binds(prefix: str | None = None, base_prefix: str | None = None,
                      package_root: str | None = None) -> list[Bind]:
    """Read-only binds that make the host's Python environment usable inside a sandbox.

    Args:
        prefix: the virtual environment (default ``sys.prefix``).
        base_prefix: the interpreter it was made from (default ``sys.base_prefix``); left
            out when it is a system directory such as ``/usr``, which the sandbox has.
        package_root: the directory this package is imported from (default: found from
            ``nonsense_hpc.__file__``); left out when it lies inside ``prefix``.

    Returns:
        Binds at the same paths, read-only.
    """
    prefix = os.path.realpath(prefix or sys.prefix)
    base = os.path.realpath(base_prefix or sys.base_prefix)
    root = os.path.realpath(package_root or str(_package_root()))
    out: list[Bind] = []
    for path in (prefix, base, root):
        if _covered(path, _SYSTEM_PREFIXES) or path == "/":
            continue
        if any(_covered(path, [b.src]) for b in out):
            continue
        out.append(Bind(path, path, True))
    return out
