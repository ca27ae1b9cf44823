"""``nonsense-hpc container``: build images; exec, shell and instances in containers."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["BENCH_COMMANDS", "COMMANDS", "container"]

F = TypeVar("F", bound=Callable[..., Any])
_RUNTIMES = ["auto", "apptainer", "singularity", "local"]


def _runtime_option(func: F) -> F:
    return click.option(
        "--runtime", "-r", type=click.Choice(_RUNTIMES, case_sensitive=False),
        default="auto", envvar="NONSENSE_CONTAINER_RUNTIME", show_default=True,
        help="Container runtime. auto: apptainer, then singularity, then the local sandbox "
             "(debootstrap + bubblewrap). Env: NONSENSE_CONTAINER_RUNTIME.")(func)


def _bind_option(func: F) -> F:
    return click.option(
        "--bind", "-B", "binds", multiple=True, metavar="SRC[:DST[:ro]]",
        help="Extra bind mount (repeatable). /tmp, $HOME, the working directory and the "
             "MPI launcher's directories are bound already.")(func)


def _env_option(func: F) -> F:
    return click.option("--env", "-e", "env", multiple=True, metavar="KEY=VALUE",
                        help="Set a variable inside the container (repeatable).")(func)


def _dry_run_option(func: F) -> F:
    return click.option("--dry-run", is_flag=True,
                        help="Print the command line that would run, and exit.")(func)


def _parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


def _strip_dashes(command: tuple[str, ...]) -> list[str]:
    """Drop the ``--`` that separates our options from the container's command."""
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise click.UsageError("no command given: IMAGE -- COMMAND [ARGS]...")
    return args


def _get(runtime: str, host_python: bool = True) -> Any:
    from nonsense_hpc.containers import LocalRuntime, get_runtime

    rt = get_runtime(runtime)
    if isinstance(rt, LocalRuntime):
        rt.host_python = host_python
    return rt


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def container() -> None:
    """Build the job image and run commands, shells and services in containers.

    \b
    Runtimes: Apptainer or SingularityCE (through spython) where installed; elsewhere a
    local sandbox: a Debian root filesystem made with debootstrap, run with bubblewrap.
    MPI uses the hybrid model: the host's mpirun starts one container process per rank.

    \b
    Examples:
      nonsense-hpc container build                     # the default image, nonsense-hpc
      mpirun -n 2 nonsense-hpc container exec nonsense-hpc -- python -m my.train
      nonsense-hpc container instance start nonsense-hpc fwd -- python -m my.service
      nonsense-hpc container instance list
      nonsense-hpc container instance stop fwd
    """


@container.command()
@click.argument("image", required=False, default="nonsense-hpc")
@_runtime_option
@click.option("--definition", "-d", type=click.Path(dir_okay=False), default=None,
              help="Apptainer definition (default containers/nonsense-hpc.def) or, for the "
                   "local runtime, a sandbox recipe (default containers/sandbox.yaml).")
@click.option("--force", "-f", is_flag=True, help="Rebuild even if the image exists.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
              help="Apptainer build argument (repeatable); the host's Python, Open MPI and "
                   "mpi4py versions are passed by default.")
@click.option("--include", multiple=True, metavar="PKG",
              help="Local runtime: extra Debian package for the sandbox (repeatable).")
@click.option("--timeout", type=float, default=1200.0, show_default=True,
              help="Local runtime: seconds debootstrap may take.")
@_dry_run_option
def build(image: str, runtime: str, definition: str | None, force: bool,
          build_args: tuple[str, ...], include: tuple[str, ...], timeout: float,
          dry_run: bool) -> None:
    """Build IMAGE (a name, or a path: a .sif for Apptainer, a directory for the sandbox).

    A name is kept in NONSENSE_SANDBOX_DIR (default ~/.cache/nonsense_hpc/sandboxes). The
    local runtime needs root for debootstrap and reuses an image whose recipe is unchanged.

    \b
    Examples:
      nonsense-hpc container build                       # image "nonsense-hpc"
      nonsense-hpc container build --runtime apptainer ./job.sif
      nonsense-hpc container build --runtime local --include htop dev-sandbox
    """
    from nonsense_hpc.containers import LocalRuntime
    from nonsense_hpc.containers.sandbox import (
        SandboxRecipe,
        debootstrap_command,
        resolve_sandbox,
    )
    from nonsense_hpc.errors import NonsenseError

    try:
        rt = _get(runtime)
        if isinstance(rt, LocalRuntime):
            if dry_run:
                from nonsense_hpc.containers.definitions import default_recipe

                source = definition or default_recipe()
                recipe = SandboxRecipe.load(source) if source else SandboxRecipe()
                target = resolve_sandbox(image, rt.environ)
                click.echo(shlex.join(debootstrap_command(recipe, str(target))))
                return
            path = rt.build(image, definition, force=force, include=include, timeout=timeout)
        else:
            args = _parse_pairs(build_args, "--build-arg")
            if dry_run:
                click.echo(shlex.join(rt.build_command(image, definition, force=force,
                                                       build_args=args)))
                return
            path = rt.build(image, definition, force=force, build_args=args)
    except NonsenseError as exc:
        raise _fail(exc) from None
    click.echo(path)


@container.command("exec", context_settings={"ignore_unknown_options": True,
                                             "allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_runtime_option
@_bind_option
@_env_option
@click.option("--clean-env", is_flag=True,
              help="Start from a clean environment plus what MPI needs (OMPI_*, PMIX_*, "
                   "SLURM_*, NONSENSE_*, ...); by default the whole environment passes.")
@click.option("--nv", is_flag=True, help="Apptainer: make NVIDIA GPUs usable (--nv).")
@click.option("--no-host-python", is_flag=True,
              help="Local runtime: do not bind the host's Python environment and source tree "
                   "(then only the sandbox's own Debian python3 is there).")
@_dry_run_option
def exec_(image: str, command: tuple[str, ...], runtime: str, binds: tuple[str, ...],
          env: tuple[str, ...], clean_env: bool, nv: bool, no_host_python: bool,
          dry_run: bool) -> None:
    """Run COMMAND inside IMAGE; this process becomes the container (exit status kept).

    Usable per rank under the host's launcher (the hybrid MPI model): the MPI and PMIx
    environment and the launcher's directories are passed through.

    \b
    Examples:
      nonsense-hpc container exec nonsense-hpc -- python -c "import nonsense_hpc"
      mpirun -n 2 nonsense-hpc container exec nonsense-hpc -- python -m my.train
      srun nonsense-hpc container exec ./job.sif -- python -m my.train
      nonsense-hpc container exec --dry-run nonsense-hpc -- true   # show the command line
    """
    from nonsense_hpc.errors import NonsenseError

    try:
        rt = _get(runtime, host_python=not no_host_python)
        cmd = rt.exec_command(image, _strip_dashes(command), binds=list(binds),
                              env=_parse_pairs(env, "--env"), clean_env=clean_env, nv=nv)
    except NonsenseError as exc:
        raise _fail(exc) from None
    if dry_run:
        click.echo(shlex.join(cmd))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        raise click.ClickException(f"cannot run {cmd[0]}: {exc}") from None


@container.command()
@click.argument("image")
@_runtime_option
@_bind_option
@_dry_run_option
def shell(image: str, runtime: str, binds: tuple[str, ...], dry_run: bool) -> None:
    """Open an interactive shell in IMAGE.

    \b
    Example:
      nonsense-hpc container shell nonsense-hpc
    """
    from nonsense_hpc.errors import NonsenseError

    try:
        rt = _get(runtime)
        if dry_run:
            click.echo(shlex.join(rt.shell_command(image, binds=list(binds))))
            return
        sys.stdout.flush()
        rt.shell(image, binds=list(binds))
    except NonsenseError as exc:
        raise _fail(exc) from None


@container.group()
def instance() -> None:
    """Named container instances: services (devices) that outlive the command.

    \b
    Examples:
      nonsense-hpc container instance start nonsense-hpc fwd -- python -m my.service
      nonsense-hpc container instance list
      nonsense-hpc container instance stop fwd
    """


@instance.command("start", context_settings={"ignore_unknown_options": True,
                                              "allow_interspersed_args": False})
@click.argument("image")
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_runtime_option
@_bind_option
@_env_option
def instance_start(image: str, name: str, command: tuple[str, ...], runtime: str,
                   binds: tuple[str, ...], env: tuple[str, ...]) -> None:
    """Start COMMAND in IMAGE as the instance NAME, in the background.

    Apptainer runs the image's %startscript with COMMAND as its arguments (the job image's
    startscript runs them); the local runtime runs COMMAND in its own PID namespace and
    logs to $NONSENSE_SANDBOX_DIR/.instances/NAME.out and .err.

    \b
    Example:
      nonsense-hpc container instance start nonsense-hpc fwd -- python -m my.service
    """
    from nonsense_hpc.errors import NonsenseError

    try:
        args = list(command[1:] if command[:1] == ("--",) else command)
        info = _get(runtime).instance_start(image, name, args, binds=list(binds),
                                            env=_parse_pairs(env, "--env"))
    except NonsenseError as exc:
        raise _fail(exc) from None
    click.echo(f"started instance {info.name} (pid {info.pid})")


@instance.command("list")
@_runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
def instance_list(runtime: str, as_json: bool) -> None:
    """List the running instances.

    \b
    Example:
      nonsense-hpc container instance list --json
    """
    from dataclasses import asdict

    from nonsense_hpc.errors import NonsenseError

    try:
        found = _get(runtime).instance_list()
    except NonsenseError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps([asdict(i) for i in found], indent=2))
        return
    click.echo(f"{'NAME':<20} {'PID':>8}  {'RUNTIME':<11} IMAGE")
    for i in found:
        click.echo(f"{i.name:<20} {i.pid:>8}  {i.runtime:<11} {i.image}")


@instance.command("stop")
@click.argument("names", nargs=-1)
@_runtime_option
@click.option("--all", "-a", "stop_all", is_flag=True, help="Stop every running instance.")
@click.option("--timeout", "-t", type=float, default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def instance_stop(names: tuple[str, ...], runtime: str, stop_all: bool, timeout: float
                  ) -> None:
    """Stop the instances NAMES (SIGTERM, then SIGKILL after --timeout).

    \b
    Examples:
      nonsense-hpc container instance stop fwd
      nonsense-hpc container instance stop --all
    """
    from nonsense_hpc.errors import NonsenseError

    if not names and not stop_all:
        raise click.UsageError("name an instance to stop, or pass --all")
    try:
        rt = _get(runtime)
        targets = [i.name for i in rt.instance_list()] if stop_all else list(names)
        for name in targets:
            rt.instance_stop(name, timeout=timeout)
            click.echo(f"stopped instance {name}")
    except NonsenseError as exc:
        raise _fail(exc) from None


def _bench_commands() -> list[click.Command]:
    from nonsense_hpc.containers.bench import container_startup

    return [container_startup]


COMMANDS = [container]
BENCH_COMMANDS = _bench_commands()
