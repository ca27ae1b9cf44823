"""The bubblewrap command line of the local runtime, as a pure function.

The sandbox root filesystem is bind-mounted as ``/`` and remounted read-only after the other
mounts are in place, as Apptainer does with a read-only image. Like Apptainer's defaults,
the container shares the host's network, process and IPC namespaces (the hybrid MPI model
needs all three) and sees ``/proc``, ``/sys``, ``/dev`` (with ``/dev/shm``), ``/tmp``,
``$HOME`` and the working directory of the host.

Example:
    >>> from nonsense_hpc.containers.bwrap import bwrap_command
    >>> cmd = bwrap_command("/srv/rootfs", ["python", "-V"], environ={}, home="",
    ...                     cwd="/", host_files=())
    >>> cmd[:3], cmd[-2:]
    (['bwrap', '--bind', '/srv/rootfs'], ['python', '-V'])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from nonsense_hpc.containers.hybrid import Bind, mpi_binds, passthrough_environment
from nonsense_hpc.errors import ConfigError

__all__ = ["HOST_FILES", "bwrap_command", "default_binds", "order_binds"]

#: Host files that make names resolve inside the sandbox as on the host (as Apptainer does).
HOST_FILES: tuple[str, ...] = ("/etc/hosts", "/etc/resolv.conf")


def default_binds(home: str, cwd: str) -> list[Bind]:
    """The read-write binds every exec gets: ``/tmp``, ``$HOME`` and the working directory.

    ``home`` and ``cwd`` are left out when they are ``/``, empty or not a directory.
    """
    out = [Bind("/tmp", "/tmp")]
    for path in (home, cwd):
        if path and path != "/" and os.path.isdir(path):
            out.append(Bind(path, path))
    return out


def order_binds(binds: Iterable[Bind]) -> list[Bind]:
    """Drop binds replaced by a later one at the same destination; parents mount first.

    A later bind wins over an earlier one at the same destination, so user binds override
    the defaults. The result is sorted by destination depth (stable), so ``/work`` is
    mounted before ``/work/main/.venv``.
    """
    by_dst: dict[str, Bind] = {}
    for bind in binds:
        by_dst.pop(bind.dst, None)
        by_dst[bind.dst] = bind
    return sorted(by_dst.values(), key=lambda b: b.dst.rstrip("/").count("/"))


def bwrap_command(
    rootfs: str,
    argv: Sequence[str],
    *,
    binds: Iterable[Bind] = (),
    base_binds: Iterable[Bind] = (),
    env: Mapping[str, str] | None = None,
    clean_env: bool = False,
    environ: Mapping[str, str] | None = None,
    home: str | None = None,
    cwd: str | None = None,
    instance: bool = False,
    host_files: Iterable[str] = HOST_FILES,
    executable: str = "bwrap",
) -> list[str]:
    """Build the ``bwrap`` command line that runs ``argv`` inside a sandbox.

    Args:
        rootfs: the sandbox root filesystem (a directory).
        argv: the program and its arguments, run inside.
        binds: extra binds (the user's); they come after the defaults and the MPI
            directories, and win over them at the same destination.
        base_binds: binds that come first, so that the defaults win over them (the host's
            Python environment, read-only: the working directory stays writable even when
            it is the bound source tree).
        env: variables to set inside (``--setenv``), on top of the inherited ones.
        clean_env: start from an empty environment, then pass through only what a rank
            needs (:func:`~nonsense_hpc.containers.hybrid.passthrough_environment`).
        environ: the host environment the command will run in (default: ``os.environ``);
            used for the MPI directories and, with ``clean_env``, the passthrough.
        home: the home directory to bind (default ``$HOME`` of ``environ``; "" for none).
        cwd: working directory, bound and entered (default: the current one).
        instance: run as a service: its own PID namespace, so stopping it stops every
            process it started.
        host_files: host files bound read-only at the same path when they exist.
        executable: the bwrap program.

    Returns:
        The argument vector, ready for ``subprocess`` or ``os.execvp``.

    Raises:
        ConfigError: ``argv`` is empty or ``rootfs`` is not absolute.
    """
    if not argv:
        raise ConfigError("no command given to run in the container")
    if not os.path.isabs(rootfs):
        raise ConfigError(f"sandbox root must be an absolute path, got {rootfs!r}")
    host_env = os.environ if environ is None else environ
    home = host_env.get("HOME", "") if home is None else home
    cwd = os.getcwd() if cwd is None else cwd
    all_binds = order_binds([*base_binds, *default_binds(home, cwd), *mpi_binds(host_env),
                             *binds])
    cmd = [executable, "--bind", rootfs, "/", "--proc", "/proc", "--dev-bind", "/dev", "/dev",
           "--ro-bind", "/sys", "/sys"]
    for path in host_files:
        if os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    for bind in all_binds:
        cmd += ["--ro-bind" if bind.readonly else "--bind", bind.src, bind.dst]
    cmd += ["--remount-ro", "/"]
    # A rank dies with its launcher; an instance must outlive the command that started it
    # (it is stopped through its process group instead).
    cmd += ["--unshare-pid"] if instance else ["--die-with-parent"]
    if clean_env:
        cmd += ["--clearenv"]
        for key, value in sorted(passthrough_environment(host_env).items()):
            cmd += ["--setenv", key, value]
    for key, value in (env or {}).items():
        if not key or "=" in key:
            raise ConfigError(f"bad environment variable name {key!r}")
        cmd += ["--setenv", key, value]
    if cwd:
        cmd += ["--chdir", cwd]
    cmd += ["--", *argv]
    return cmd
