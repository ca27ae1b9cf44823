"""Apptainer and SingularityCE through spython.

spython (the Singularity Python client) runs ``singularity``, which SingularityCE installs
and Apptainer provides as a compatibility link. ``build``, ``run`` and the instance commands
(start, list, stop) go through spython's client; the command lines it runs are exactly
those of :mod:`nonsense_hpc.containers.commands`, which tests check against spython itself.
``exec`` runs the same command line as spython's ``Client.execute`` but with our own
subprocess, because a rank needs its stdout and stderr streamed (spython captures them),
its exit status kept and a timeout.

Example:
    >>> from nonsense_hpc.containers import get_runtime
    >>> rt = get_runtime("apptainer")                             # doctest: +SKIP
    >>> rt.exec_command("job.sif", ["python", "-V"])              # doctest: +SKIP
    ['singularity', '--quiet', 'exec', 'job.sif', 'python', '-V']
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nonsense_hpc.containers import commands
from nonsense_hpc.containers.definitions import default_definition, host_build_args
from nonsense_hpc.containers.detect import RuntimeName
from nonsense_hpc.containers.hybrid import Bind, mpi_binds, passthrough_environment
from nonsense_hpc.containers.instances import InstanceInfo, validate_instance_name
from nonsense_hpc.containers.runtime import ContainerRuntime, ExecResult, as_binds
from nonsense_hpc.containers.sandbox import DEFAULT_IMAGE, sandbox_dir
from nonsense_hpc.errors import ConfigError, ContainerError

__all__ = ["ApptainerRuntime", "is_uri"]

_URI = re.compile(r"^(docker|docker-archive|oras|library|shub|http|https|instance)://")


def is_uri(image: str) -> bool:
    """Whether ``image`` is a URI Apptainer resolves itself (``docker://``, ``oras://`` ...)."""
    return bool(_URI.match(image))


class ApptainerRuntime(ContainerRuntime):
    """Apptainer or SingularityCE, driven through spython.

    Args:
        name: ``apptainer`` or ``singularity`` (which one was detected; both are run
            through the ``singularity`` command).
        environ: environment to read ``PATH`` and the MPI variables from (default:
            ``os.environ``).
    """

    def __init__(self, name: RuntimeName = "apptainer",
                 environ: Mapping[str, str] | None = None) -> None:
        if name not in ("apptainer", "singularity"):
            raise ConfigError(f"ApptainerRuntime runs apptainer or singularity, not {name!r}")
        self.name = name
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment this runtime reads."""
        return os.environ if self._environ is None else self._environ

    def _client(self) -> Any:
        """A spython client; raises ContainerError when ``singularity`` is not installed."""
        if shutil.which(commands.EXECUTABLE, path=self.environ.get("PATH", os.defpath)) is None:
            other = " (apptainer is, but its 'singularity' compatibility link is missing)" \
                if shutil.which("apptainer") else ""
            raise ContainerError(f"'{commands.EXECUTABLE}' is not on PATH{other}; spython "
                                 "drives Apptainer/SingularityCE through that command")
        from spython.main import get_client

        client = get_client(quiet=True)
        client.quiet = True  # Client.__init__ resets it from $MESSAGELEVEL
        client.debug = False
        return client

    def resolve_image(self, image: str) -> str:
        """The image file, directory or URI for ``image``.

        A bare name means ``$NONSENSE_SANDBOX_DIR/NAME.sif``.

        Raises:
            ContainerError: a local image that does not exist.
        """
        if not image:
            raise ConfigError("no image given")
        if is_uri(image):
            return image
        path = Path(image).expanduser()
        if "/" not in image and not image.endswith(".sif") and not path.exists():
            path = sandbox_dir(self.environ) / f"{image}.sif"
        if not path.exists():
            raise ContainerError(f"image {image!r} not found ({path} does not exist); build it "
                                 f"with `nonsense-hpc container build {image}`")
        return str(path.absolute())

    def _bind_specs(self, binds: Sequence[Bind | str]) -> list[str]:
        home = self.environ.get("HOME", "")
        already = ["/tmp", "/dev"] + ([home] if home not in ("", "/") else [])
        extra = mpi_binds(self.environ, already=already)  # Apptainer binds these itself
        return [b.spec() for b in [*extra, *as_binds(binds)]]

    def _env_options(self, env: Mapping[str, str] | None, clean_env: bool) -> list[str]:
        merged = dict(passthrough_environment(self.environ)) if clean_env else {}
        merged.pop("PATH", None)  # the image's PATH, from its %environment, must win
        merged.update(env or {})
        return commands.env_options(merged, clean_env=clean_env)

    def build(self, image: str | None = None, definition: str | None = None, *,
              force: bool = False, **options: Any) -> str:
        """Build a SIF image with spython's ``Client.build``.

        Args:
            image: output path or name (default ``$NONSENSE_SANDBOX_DIR/nonsense-hpc.sif``).
            definition: definition file (default ``containers/nonsense-hpc.def``).
            force: overwrite an existing image.
            **options: ``build_args`` (mapping; the host's versions are filled in by
                default, see :func:`host_build_args`), ``fakeroot`` (bool; default: when
                not root).

        Raises:
            ContainerError: the runtime is missing or the build failed.
        """
        unknown = sorted(set(options) - {"build_args", "fakeroot"})
        if unknown:
            raise ConfigError(f"unknown build option(s) for {self.name}: {', '.join(unknown)}; "
                              "valid: build_args, fakeroot")
        out, definition_path, opts = self.build_plan(image, definition, **options)
        client = self._client()
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        # spython streams the build's output to ours and has no timeout of its own.
        client.build(definition_path, out, sudo=False, force=force, options=opts, quiet=True)
        if not os.path.exists(out):
            raise ContainerError(f"{self.name} build of {out} from {definition_path} failed "
                                 "(its output is above)")
        return out

    def build_plan(self, image: str | None = None, definition: str | None = None,
                   **options: Any) -> tuple[str, str, list[str]]:
        """The output path, definition and options a build uses (see :meth:`build_command`)."""
        out = image or DEFAULT_IMAGE
        if "/" not in out and not out.endswith(".sif"):
            out = str(sandbox_dir(self.environ) / f"{out}.sif")
        definition_path = str(definition or default_definition())
        args = {**host_build_args(), **dict(options.get("build_args") or {})}
        fakeroot = options.get("fakeroot")
        if fakeroot is None:
            fakeroot = hasattr(os, "geteuid") and os.geteuid() != 0
        return str(Path(out).absolute()), definition_path, commands.build_options(
            bool(fakeroot), args)

    def build_command(self, image: str | None = None, definition: str | None = None, *,
                      force: bool = False, **options: Any) -> list[str]:
        """The ``singularity build`` command line :meth:`build` runs."""
        out, definition_path, opts = self.build_plan(image, definition, **options)
        return commands.build_command(out, definition_path, force=force, options=opts)

    def exec_command(self, image: str, argv: Sequence[str], *,
                     binds: Sequence[Bind | str] = (), env: Mapping[str, str] | None = None,
                     clean_env: bool = False, nv: bool = False) -> list[str]:
        """The ``singularity exec`` command line (as spython's ``Client.execute`` builds it).

        The MPI launcher's directories outside ``/tmp`` and ``$HOME`` are bound; with
        ``clean_env`` the MPI variables are passed with ``--env``.
        """
        if not argv:
            raise ConfigError("no command given to run in the container")
        return commands.exec_command(self.resolve_image(image), list(argv),
                                     binds=self._bind_specs(binds), nv=nv,
                                     options=self._env_options(env, clean_env))

    def run(self, image: str, args: Sequence[str] = (), *,
            binds: Sequence[Bind | str] = (), timeout: float | None = 600.0) -> ExecResult:
        """Run the image's ``%runscript`` with spython's ``Client.run``.

        ``timeout`` is not enforced on this path (spython has no timeout); use
        :meth:`exec` with ``python`` for a bounded run.
        """
        path = self.resolve_image(image)
        specs = self._bind_specs(binds)
        client = self._client()
        result = client.run(path, list(args), bind=specs or None, return_result=True,
                            quiet=True)
        message = result.get("message", "")
        text = "".join(message) if isinstance(message, list) else str(message)
        argv = commands.run_command(path, list(args), binds=specs)
        return ExecResult(tuple(argv), int(result.get("return_code", 1)), text, "")

    def shell_command(self, image: str, *, binds: Sequence[Bind | str] = ()) -> list[str]:
        """The ``singularity shell`` command line."""
        return commands.shell_command(self.resolve_image(image), binds=self._bind_specs(binds))

    def shell(self, image: str, *, binds: Sequence[Bind | str] = ()) -> None:
        """Replace this process with a shell in ``image`` (spython's ``Client.shell``)."""
        path = self.resolve_image(image)
        self._client().shell(path, bind=self._bind_specs(binds) or None, quiet=True)

    def instance_start(self, image: str, name: str, argv: Sequence[str] = (), *,
                       binds: Sequence[Bind | str] = (),
                       env: Mapping[str, str] | None = None) -> InstanceInfo:
        """Start a named instance; its ``%startscript`` runs ``argv`` (spython ``instance``).

        Raises:
            ContainerError: the runtime is missing or the instance did not start.
        """
        validate_instance_name(name)
        path = self.resolve_image(image)
        options: list[str] = []
        for spec in self._bind_specs(binds):
            options += ["--bind", spec]
        options += commands.env_options(env)
        client = self._client()
        inst = client.instance(path, start=False, name=name, quiet=True)
        inst.start(options=options, args=list(argv), quiet=True)
        for info in self.instance_list():
            if info.name == name:
                return info
        raise ContainerError(f"{self.name} instance {name!r} did not start "
                             f"(command: {' '.join(inst.cmd)})")

    def instance_list(self) -> list[InstanceInfo]:
        """The running instances, from ``instance list --json`` through spython."""
        found = self._client().instances(quiet=True)
        out = []
        for inst in found if isinstance(found, list) else []:
            out.append(InstanceInfo(name=inst.name, pid=int(getattr(inst, "pid", 0) or 0),
                                    image=str(getattr(inst, "_image", "")),
                                    runtime=self.name,
                                    log_out=str(getattr(inst, "log_out_path", "") or ""),
                                    log_err=str(getattr(inst, "log_err_path", "") or "")))
        return out

    def instance_stop(self, name: str, timeout: float = 10.0) -> InstanceInfo:
        """Stop a named instance with spython's ``Instance.stop``.

        Raises:
            ContainerError: no such instance, or the stop command failed.
        """
        validate_instance_name(name)
        running = {i.name: i for i in self.instance_list()}
        if name not in running:
            raise ContainerError(f"no running instance called {name!r} (running: "
                                 f"{', '.join(sorted(running)) or 'none'})")
        client = self._client()
        inst = client.instance(running[name].image or name, start=False, name=name, quiet=True)
        code = inst.stop(timeout=int(timeout) if timeout else None, quiet=True)
        if code != 0:
            raise ContainerError(f"{self.name} instance stop {name} exited with status {code}")
        return running[name]
