"""Which container runtime to use: Apptainer, SingularityCE, or the local sandbox.

Order: ``NONSENSE_CONTAINER_RUNTIME`` when set (``apptainer``, ``singularity`` or
``local``); otherwise ``apptainer`` on ``PATH``; otherwise ``singularity`` on ``PATH``;
otherwise the local runtime when bubblewrap (``bwrap``) is installed.

Example:
    >>> from nonsense_hpc.containers.detect import detect_runtime
    >>> detect_runtime({"NONSENSE_CONTAINER_RUNTIME": "local"})
    'local'
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Literal

from nonsense_hpc.errors import ConfigError, ContainerError

__all__ = ["RUNTIMES", "RuntimeName", "detect_runtime", "find_tool", "validate_runtime"]

RuntimeName = Literal["apptainer", "singularity", "local"]
RUNTIMES: tuple[RuntimeName, ...] = ("apptainer", "singularity", "local")

INSTALL_HINT = (
    "install Apptainer (https://apptainer.org/docs/admin/main/installation.html) or, for the "
    "local runtime, the Debian packages: apt-get install -y debootstrap bubblewrap"
)


def validate_runtime(name: str) -> RuntimeName:
    """Check a runtime name (case-insensitive) and return it in canonical form.

    Raises:
        ConfigError: the name is not one of ``apptainer``, ``singularity``, ``local``.
    """
    low = name.strip().lower()
    if low not in RUNTIMES:
        raise ConfigError(f"unknown container runtime {name!r}; valid runtimes: "
                          f"{', '.join(RUNTIMES)} (or 'auto' to detect)")
    return low


def find_tool(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Full path of executable ``name`` on the ``PATH`` of ``environ`` (default: ours)."""
    env = os.environ if environ is None else environ
    return shutil.which(name, path=env.get("PATH", os.defpath))


def detect_runtime(environ: Mapping[str, str] | None = None) -> RuntimeName:
    """Pick the container runtime for this machine.

    Args:
        environ: environment to read ``NONSENSE_CONTAINER_RUNTIME`` and ``PATH`` from
            (default: ``os.environ``).

    Returns:
        ``"apptainer"``, ``"singularity"`` or ``"local"``.

    Raises:
        ConfigError: ``NONSENSE_CONTAINER_RUNTIME`` names no runtime.
        ContainerError: no runtime is installed; the message says what to install.
    """
    env = os.environ if environ is None else environ
    named = env.get("NONSENSE_CONTAINER_RUNTIME", "").strip()
    if named and named.lower() != "auto":
        return validate_runtime(named)
    if find_tool("apptainer", env):
        return "apptainer"
    if find_tool("singularity", env):
        return "singularity"
    if find_tool("bwrap", env):
        return "local"
    raise ContainerError(f"no container runtime found (neither apptainer, singularity nor "
                         f"bwrap is on PATH): {INSTALL_HINT}")
