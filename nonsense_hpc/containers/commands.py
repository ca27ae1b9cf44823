"""The Apptainer / SingularityCE command lines, as pure functions.

:class:`~nonsense_hpc.containers.apptainer.ApptainerRuntime` drives the runtime through
spython, which shells out to ``singularity`` (Apptainer installs that name as a
compatibility link). Each function here returns exactly the argument vector spython runs
for the same request, so a test can check the command lines on a machine with no Apptainer,
and ``--dry-run`` can print them.

Example:
    >>> from nonsense_hpc.containers.commands import exec_command
    >>> exec_command("job.sif", ["python", "-V"], binds=["/scratch"])
    ['singularity', '--quiet', 'exec', '--bind', '/scratch', 'job.sif', 'python', '-V']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nonsense_hpc.errors import ConfigError

__all__ = [
    "EXECUTABLE",
    "build_command",
    "build_options",
    "env_options",
    "exec_command",
    "instance_list_command",
    "instance_start_command",
    "instance_stop_command",
    "run_command",
    "shell_command",
]

#: The program spython runs (Apptainer provides it as a compatibility link).
EXECUTABLE = "singularity"
_BASE = [EXECUTABLE, "--quiet"]


def _bind_args(binds: Sequence[str]) -> list[str]:
    out: list[str] = []
    for bind in binds:
        if bind:
            out += ["--bind", bind]
    return out


def env_options(env: Mapping[str, str] | None = None, clean_env: bool = False,
                pwd: str | None = None) -> list[str]:
    """Options that set the environment and working directory of an exec, run or instance.

    Args:
        env: variables to set inside (``--env KEY=VALUE``).
        clean_env: start from a clean environment (``--cleanenv``); pass what MPI needs in
            ``env`` (see :func:`~nonsense_hpc.containers.hybrid.passthrough_environment`).
        pwd: working directory inside (``--pwd``).

    Raises:
        ConfigError: a variable name is empty or contains ``=``.
    """
    out: list[str] = []
    if clean_env:
        out.append("--cleanenv")
    for key, value in (env or {}).items():
        if not key or "=" in key:
            raise ConfigError(f"bad environment variable name {key!r}")
        out += ["--env", f"{key}={value}"]
    if pwd:
        out += ["--pwd", pwd]
    return out


def build_options(fakeroot: bool = False, build_args: Mapping[str, str] | None = None
                  ) -> list[str]:
    """Options of ``build``: ``--fakeroot`` (unprivileged users) and ``--build-arg K=V``."""
    out = ["--fakeroot"] if fakeroot else []
    for key, value in (build_args or {}).items():
        out += ["--build-arg", f"{key}={value}"]
    return out


def build_command(image: str, definition: str, *, force: bool = False,
                  options: Sequence[str] = ()) -> list[str]:
    """``singularity build``: spython's ``Client.build(definition, image, ...)``."""
    cmd = [*_BASE, "build"]
    if force:
        cmd.append("--force")
    return cmd + list(options) + [image, definition]


def exec_command(image: str, argv: Sequence[str], *, binds: Sequence[str] = (),
                 nv: bool = False, options: Sequence[str] = ()) -> list[str]:
    """``singularity exec``: spython's ``Client.execute(image, argv, bind=..., ...)``.

    Raises:
        ConfigError: ``argv`` is empty.
    """
    if not argv:
        raise ConfigError("no command given to run in the container")
    cmd = [*_BASE, "exec"]
    if nv:
        cmd.append("--nv")
    return cmd + _bind_args(binds) + list(options) + [image, *argv]


def run_command(image: str, args: Sequence[str] = (), *, binds: Sequence[str] = (),
                nv: bool = False, options: Sequence[str] = ()) -> list[str]:
    """``singularity run`` (the image's runscript): spython's ``Client.run``."""
    cmd = [*_BASE, "run"]
    if nv:
        cmd.append("--nv")
    return cmd + _bind_args(binds) + list(options) + [image, *args]


def shell_command(image: str, *, binds: Sequence[str] = (), nv: bool = False,
                  options: Sequence[str] = ()) -> list[str]:
    """``singularity shell``: spython's ``Client.shell``."""
    cmd = [*_BASE, "shell"]
    if nv:
        cmd.append("--nv")
    return cmd + _bind_args(binds) + list(options) + [image]


def instance_start_command(image: str, name: str, args: Sequence[str] = (), *,
                           options: Sequence[str] = ()) -> list[str]:
    """``singularity instance start``: spython's ``Client.instance(image, name=...)``.

    The instance runs the image's ``%startscript`` with ``args``.
    """
    return [*_BASE, "instance", "start", *options, image, name, *args]


def instance_stop_command(name: str, timeout: float | None = None) -> list[str]:
    """``singularity instance stop``: spython's ``Instance.stop(timeout=...)``."""
    cmd = [*_BASE, "instance", "stop"]
    if timeout:
        cmd += ["-t", str(int(timeout))]
    return [*cmd, name]


def instance_list_command(name: str | None = None) -> list[str]:
    """``singularity instance list --json``: spython's ``Client.instances(name)``."""
    cmd = [*_BASE, "instance", "list", "--json"]
    if name is not None:
        cmd.append(name)
    return cmd
