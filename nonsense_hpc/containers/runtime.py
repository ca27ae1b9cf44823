"""The interface every container runtime implements, and :func:`get_runtime`.

Example:
    >>> from nonsense_hpc.containers import get_runtime
    >>> rt = get_runtime("local")
    >>> rt.name
    'local'
"""

from __future__ import annotations

import abc
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nonsense_hpc.containers.detect import RuntimeName, detect_runtime, validate_runtime
from nonsense_hpc.containers.hybrid import Bind
from nonsense_hpc.containers.instances import InstanceInfo
from nonsense_hpc.errors import ContainerError

__all__ = ["ContainerRuntime", "ExecResult", "as_binds", "get_runtime"]


@dataclass(frozen=True)
class ExecResult:
    """What a finished container command returned.

    Attributes:
        argv: the full command line that ran (runtime included).
        returncode: its exit status.
        stdout: captured standard output ("" when not captured).
        stderr: captured standard error ("" when not captured).
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    def check(self) -> ExecResult:
        """Return self, or raise ContainerError carrying stderr when the status is not 0."""
        if self.returncode != 0:
            raise ContainerError(f"container command exited with status {self.returncode}: "
                                 f"{' '.join(self.argv)}\n{self.stderr.strip()[-2000:]}")
        return self


def as_binds(binds: Sequence[Bind | str]) -> list[Bind]:
    """Accept binds as :class:`Bind` objects or ``SRC[:DST[:ro]]`` strings."""
    return [b if isinstance(b, Bind) else Bind.parse(b) for b in binds]


def run_argv(argv: Sequence[str], *, capture: bool, timeout: float | None,
             env: Mapping[str, str] | None = None) -> ExecResult:
    """Run a complete container command line and wait for it (with a timeout).

    Raises:
        ContainerError: the runtime program is missing, or the command ran past ``timeout``
            (the process is killed).
    """
    try:
        proc = subprocess.run(list(argv), capture_output=capture, text=True, timeout=timeout,
                              check=False, env=None if env is None else dict(env),
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise ContainerError(f"cannot run {argv[0]!r}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ContainerError(f"container command did not finish in {timeout} s and was "
                             f"killed: {' '.join(argv)}") from None
    return ExecResult(tuple(argv), proc.returncode, proc.stdout or "", proc.stderr or "")


class ContainerRuntime(abc.ABC):
    """Build images and run commands, shells and instances in them.

    The ``*_command`` methods are pure: they return the command line the action runs,
    without running it (``--dry-run`` prints them; tests compare them).
    """

    name: RuntimeName

    @abc.abstractmethod
    def resolve_image(self, image: str) -> str:
        """The image path or URI for ``image``; raise ContainerError when it is missing."""

    @abc.abstractmethod
    def build(self, image: str | None = None, definition: str | None = None, *,
              force: bool = False, **options: Any) -> str:
        """Build ``image`` from ``definition``; return the image's path."""

    @abc.abstractmethod
    def exec_command(self, image: str, argv: Sequence[str], *,
                     binds: Sequence[Bind | str] = (), env: Mapping[str, str] | None = None,
                     clean_env: bool = False, nv: bool = False) -> list[str]:
        """The command line that runs ``argv`` in ``image`` (MPI environment passed through)."""

    def exec(self, image: str, argv: Sequence[str], *, binds: Sequence[Bind | str] = (),
             env: Mapping[str, str] | None = None, clean_env: bool = False, nv: bool = False,
             capture: bool = True, timeout: float | None = 600.0) -> ExecResult:
        """Run ``argv`` in ``image`` and wait for it.

        Args:
            image: image name or path (see :meth:`resolve_image`).
            argv: program and arguments, run inside.
            binds: extra bind mounts (:class:`Bind` or ``SRC[:DST[:ro]]``).
            env: variables to set inside.
            clean_env: start from a clean environment plus what MPI needs.
            nv: make NVIDIA GPUs usable inside (Apptainer ``--nv``; the local runtime sees
                the host's ``/dev`` anyway).
            capture: capture stdout and stderr (otherwise they go to ours).
            timeout: seconds before the command is killed (None: no limit).

        Raises:
            ContainerError: the image is missing, the runtime cannot start, or timeout.
        """
        cmd = self.exec_command(image, argv, binds=binds, env=env, clean_env=clean_env, nv=nv)
        return run_argv(cmd, capture=capture, timeout=timeout)

    @abc.abstractmethod
    def run(self, image: str, args: Sequence[str] = (), *,
            binds: Sequence[Bind | str] = (), timeout: float | None = 600.0) -> ExecResult:
        """Run the image's runscript with ``args`` and wait for it."""

    @abc.abstractmethod
    def shell_command(self, image: str, *, binds: Sequence[Bind | str] = ()) -> list[str]:
        """The command line of an interactive shell in ``image``."""

    def shell(self, image: str, *, binds: Sequence[Bind | str] = ()) -> None:
        """Replace this process with an interactive shell in ``image`` (never returns)."""
        cmd = self.shell_command(image, binds=binds)
        os.execvp(cmd[0], cmd)

    @abc.abstractmethod
    def instance_start(self, image: str, name: str, argv: Sequence[str] = (), *,
                       binds: Sequence[Bind | str] = (),
                       env: Mapping[str, str] | None = None) -> InstanceInfo:
        """Start a named instance (a service) of ``image`` running ``argv``."""

    @abc.abstractmethod
    def instance_list(self) -> list[InstanceInfo]:
        """The running instances."""

    @abc.abstractmethod
    def instance_stop(self, name: str, timeout: float = 10.0) -> InstanceInfo:
        """Stop a named instance."""


def get_runtime(name: str | None = None, environ: Mapping[str, str] | None = None
                ) -> ContainerRuntime:
    """The runtime called ``name``, or the detected one (see :func:`detect_runtime`).

    Args:
        name: ``apptainer``, ``singularity``, ``local``, or None/``auto`` to detect.
        environ: environment to detect from (default ``os.environ``).

    Raises:
        ConfigError: unknown name.
        ContainerError: nothing to detect.
    """
    chosen = (detect_runtime(environ) if name in (None, "", "auto")
              else validate_runtime(str(name)))
    if chosen == "local":
        from nonsense_hpc.containers.local import LocalRuntime

        return LocalRuntime(environ=environ)
    from nonsense_hpc.containers.apptainer import ApptainerRuntime

    return ApptainerRuntime(chosen, environ=environ)
