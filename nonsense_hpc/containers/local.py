r"""The local runtime: sandboxes built with debootstrap, run with bubblewrap.

Where neither Apptainer nor SingularityCE is installed (this project's machines, laptops),
a Debian root filesystem is the image and bubblewrap runs commands in it. For the hybrid
MPI model the host's Python environment is bind-mounted read-only at the same paths (see
:func:`~nonsense_hpc.containers.hybrid.host_python_binds`), so the ranks run the host's
Python, Open MPI and this package from inside the container's filesystem; the host's
``mpirun`` starts one sandboxed process per rank.

Example:
    >>> from nonsense_hpc.containers import get_runtime
    >>> rt = get_runtime("local")
    >>> rt.build()                                       # doctest: +SKIP
    '/root/.cache/nonsense_hpc/sandboxes/nonsense-hpc'
    >>> rt.exec("nonsense-hpc", ["python", "-c", "print(1)"]).stdout  # doctest: +SKIP
    '1\\n'
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nonsense_hpc.containers.bwrap import bwrap_command
from nonsense_hpc.containers.definitions import default_recipe
from nonsense_hpc.containers.hybrid import Bind, host_python_binds
from nonsense_hpc.containers.instances import InstanceInfo, LocalInstances
from nonsense_hpc.containers.runtime import ContainerRuntime, ExecResult, as_binds
from nonsense_hpc.containers.sandbox import (
    DEFAULT_IMAGE,
    STAMP,
    SandboxRecipe,
    build_sandbox,
    read_stamp,
    resolve_sandbox,
    sandbox_dir,
)
from nonsense_hpc.errors import ConfigError, ContainerError

__all__ = ["LocalRuntime"]


class LocalRuntime(ContainerRuntime):
    """Sandboxes made with debootstrap, run with bubblewrap.

    Args:
        environ: environment to read ``NONSENSE_SANDBOX_DIR``, ``PATH``, ``HOME`` and the
            MPI variables from (default: ``os.environ`` at each call).
        host_python: bind the host's Python environment into every container (default
            True; without it only the sandbox's own Debian Python is there).
    """

    name = "local"

    def __init__(self, environ: Mapping[str, str] | None = None, host_python: bool = True
                 ) -> None:
        self._environ = environ
        self.host_python = host_python

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment this runtime reads."""
        return os.environ if self._environ is None else self._environ

    @property
    def instances(self) -> LocalInstances:
        """The registry of this runtime's named instances."""
        return LocalInstances(sandbox_dir(self.environ) / ".instances")

    def _bwrap(self) -> str:
        exe = shutil.which("bwrap", path=self.environ.get("PATH", os.defpath))
        if exe is None:
            raise ContainerError("bubblewrap (bwrap) is not installed; the local runtime "
                                 "needs it: apt-get install -y bubblewrap")
        return exe

    def resolve_image(self, image: str) -> str:
        """The sandbox directory of ``image`` (a name in NONSENSE_SANDBOX_DIR, or a path).

        Raises:
            ContainerError: there is no finished sandbox there.
        """
        path = resolve_sandbox(image, self.environ)
        if path.is_file():
            raise ContainerError(f"image {image!r} is a file ({path}); the local runtime runs "
                                 "sandbox directories. SIF images need Apptainer or "
                                 "SingularityCE")
        if read_stamp(path) is None:
            hint = image if "/" not in image else "NAME"
            what = "is not a finished sandbox" if path.exists() else "does not exist"
            raise ContainerError(f"image {image!r} not found: {path} {what}; build it with "
                                 f"`nonsense-hpc container build --runtime local {hint}`")
        return str(path)

    def build(self, image: str | None = None, definition: str | None = None, *,
              force: bool = False, **options: Any) -> str:
        """Build (or reuse) the sandbox ``image`` from a recipe.

        Args:
            image: name or path (default ``nonsense-hpc``).
            definition: a sandbox recipe (YAML, default ``containers/sandbox.yaml``). An
                Apptainer ``.def`` file is an error here: it needs Apptainer.
            force: rebuild even when a sandbox with the same recipe exists.
            **options: ``include`` (extra Debian packages), ``timeout`` (seconds).

        Returns:
            The sandbox directory.

        Raises:
            ConfigError: bad recipe or options.
            ContainerError: debootstrap missing or failed, or not root.
        """
        unknown = sorted(set(options) - {"include", "timeout"})
        if unknown:
            raise ConfigError(f"unknown build option(s) for the local runtime: "
                              f"{', '.join(unknown)}; valid: include, timeout")
        if definition is not None and str(definition).endswith(".def"):
            raise ConfigError(f"{definition} is an Apptainer definition; the local runtime "
                              "builds from a sandbox recipe (containers/sandbox.yaml). Use "
                              "--runtime apptainer where Apptainer is installed")
        source = definition or default_recipe()
        recipe = SandboxRecipe.load(source) if source else SandboxRecipe()
        extra = tuple(options.get("include") or ())
        if extra:
            recipe = SandboxRecipe.from_mapping(
                {**recipe.__dict__, "include": (*recipe.include, *extra)})
        target = resolve_sandbox(image or DEFAULT_IMAGE, self.environ)
        timeout = float(options.get("timeout") or 1200.0)
        return str(build_sandbox(target, recipe, force=force, timeout=timeout))

    def _base_binds(self) -> list[Bind]:
        return host_python_binds() if self.host_python else []

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """With the host's Python bound, put its environment first on PATH inside.

        So ``python`` in the container is the interpreter that runs nonsense-hpc, with the
        same packages and MPI, whether or not the virtual environment was activated.
        """
        out: dict[str, str] = {}
        if self.host_python and sys.prefix != sys.base_prefix:
            path = self.environ.get("PATH", os.defpath)
            venv_bin = os.path.join(sys.prefix, "bin")
            if path.split(":")[0] != venv_bin:
                path = f"{venv_bin}:{path}"
            out = {"PATH": path, "VIRTUAL_ENV": sys.prefix}
        out.update(env or {})
        return out

    def exec_command(self, image: str, argv: Sequence[str], *,
                     binds: Sequence[Bind | str] = (), env: Mapping[str, str] | None = None,
                     clean_env: bool = False, nv: bool = False) -> list[str]:
        """The bwrap command line that runs ``argv`` in ``image``.

        The host environment (MPI and PMIx variables included) passes through, or with
        ``clean_env`` only what a rank needs. ``nv`` is accepted for symmetry: the sandbox
        sees the host's ``/dev`` (and so its GPUs) anyway.

        Raises:
            ContainerError: the image is missing or bwrap is not installed.
            ConfigError: empty command or bad binds.
        """
        if not argv:
            raise ConfigError("no command given to run in the container")
        rootfs = self.resolve_image(image)
        return bwrap_command(rootfs, argv, binds=as_binds(binds),
                             base_binds=self._base_binds(), env=self._env(env),
                             clean_env=clean_env, environ=self.environ,
                             executable=self._bwrap())

    def _script(self, image: str, key: str) -> list[str]:
        stamp = read_stamp(Path(self.resolve_image(image))) or {}
        return list((stamp.get("recipe") or {}).get(key) or [])

    def run(self, image: str, args: Sequence[str] = (), *,
            binds: Sequence[Bind | str] = (), timeout: float | None = 600.0) -> ExecResult:
        """Run the sandbox's runscript (from its recipe, e.g. ``python``) with ``args``.

        Raises:
            ContainerError: the image is missing or has no runscript.
        """
        script = self._script(image, "runscript")
        if not script:
            raise ContainerError(f"image {image!r} has no runscript (see {STAMP} inside)")
        return self.exec(image, [*script, *args], binds=binds, timeout=timeout)

    def shell_command(self, image: str, *, binds: Sequence[Bind | str] = ()) -> list[str]:
        """The command line of an interactive bash in ``image``."""
        return self.exec_command(image, ["/bin/bash", "-l"], binds=binds)

    def instance_start(self, image: str, name: str, argv: Sequence[str] = (), *,
                       binds: Sequence[Bind | str] = (),
                       env: Mapping[str, str] | None = None) -> InstanceInfo:
        """Start ``argv`` in ``image`` as the named service ``name``.

        The instance gets its own session and PID namespace and keeps running after this
        process exits; its output goes to log files (see :class:`InstanceInfo`).

        Raises:
            ContainerError: the image is missing, the name is taken, or there is no command
                (and the recipe has no startscript).
        """
        command = list(argv) or self._script(image, "startscript")
        if not command:
            raise ContainerError(f"instance {name!r}: no command given and image {image!r} "
                                 "has no startscript; pass the service command after --")
        self.instances._record(name)  # validate the name before doing anything
        rootfs = self.resolve_image(image)
        cmd = bwrap_command(rootfs, command, binds=as_binds(binds),
                            base_binds=self._base_binds(), env=self._env(env),
                            environ=self.environ, instance=True, executable=self._bwrap())
        return self.instances.start(name, cmd, rootfs)

    def instance_list(self) -> list[InstanceInfo]:
        """The running local instances."""
        return self.instances.list()

    def instance_stop(self, name: str, timeout: float = 10.0) -> InstanceInfo:
        """Stop instance ``name`` (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        return self.instances.stop(name, timeout)
