"""Local sandbox images: a Debian root filesystem made with debootstrap, cached by name.

A recipe (``containers/sandbox.yaml``) names the Debian suite, mirror, variant and extra
packages. :func:`build_sandbox` runs debootstrap into a temporary directory next to the
target and renames it into place, under a file lock, so concurrent builders (ranks, test
workers, CI steps) build at most once; a finished image carries a stamp with the recipe's
hash, and a build with an unchanged recipe returns at once.

Images live in ``NONSENSE_SANDBOX_DIR`` (default ``~/.cache/nonsense_hpc/sandboxes``): the
name ``nonsense-hpc`` means ``$NONSENSE_SANDBOX_DIR/nonsense-hpc``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError, ContainerError

__all__ = [
    "DEFAULT_IMAGE",
    "STAMP",
    "SandboxRecipe",
    "build_sandbox",
    "debootstrap_command",
    "read_stamp",
    "resolve_sandbox",
    "sandbox_dir",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "nonsense-hpc"
#: File inside a finished sandbox: the recipe it was built from, and when.
STAMP = ".nonsense-sandbox.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class SandboxRecipe:
    """What goes into a local sandbox.

    Attributes:
        suite: Debian release (``bookworm`` matches the project's machines).
        mirror: Debian mirror URL.
        variant: debootstrap variant (``minbase``: essential packages and apt only).
        include: extra Debian packages (``python3`` brings the shared libraries a host
            Python needs; the interpreter is also usable on its own).
        runscript: what ``run`` executes, with the run's arguments appended.
        startscript: what an instance runs when started without a command ([] = none).
    """

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    include: tuple[str, ...] = ("python3",)
    runscript: tuple[str, ...] = ("python",)
    startscript: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z]+", self.suite):
            raise ConfigError(f"bad Debian suite {self.suite!r} (example: bookworm)")
        if not self.mirror.startswith(("http://", "https://", "file://")):
            raise ConfigError(f"bad mirror {self.mirror!r}: must be an http(s):// or file:// URL")
        if self.variant not in ("minbase", "buildd", "fakechroot", "-"):
            raise ConfigError(f"bad debootstrap variant {self.variant!r}; valid: minbase, "
                              "buildd, fakechroot, - (the default)")
        for pkg in self.include:
            if not _PACKAGE.match(pkg):
                raise ConfigError(f"bad Debian package name {pkg!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "recipe") -> SandboxRecipe:
        """Build a recipe from parsed YAML; unknown keys are an error listing valid ones."""
        valid = [f for f in cls.__dataclass_fields__]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                              f"valid keys: {', '.join(valid)}")
        values: dict[str, Any] = dict(data)
        for key in ("include", "runscript", "startscript"):
            if key in values:
                item = values[key]
                if isinstance(item, str):
                    item = item.split()
                if not isinstance(item, list | tuple):
                    raise ConfigError(f"{source}: {key} must be a list, got {item!r}")
                values[key] = tuple(str(x) for x in item)
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SandboxRecipe:
        """Read a recipe from a YAML file.

        Raises:
            ConfigError: the file is missing or malformed.
        """
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read sandbox recipe {p}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"sandbox recipe {p} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"sandbox recipe {p} must be a mapping of keys to values")
        return cls.from_mapping(data, str(p))

    def digest(self) -> str:
        """Hash of the parts that change the root filesystem (not the scripts)."""
        key = json.dumps([self.suite, self.mirror, self.variant, sorted(self.include)])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def sandbox_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where named sandboxes live.

    ``NONSENSE_SANDBOX_DIR`` when set, else ``~/.cache/nonsense_hpc/sandboxes``.
    """
    env = os.environ if environ is None else environ
    named = env.get("NONSENSE_SANDBOX_DIR")
    if named:
        return Path(named).expanduser().absolute()
    return Path("~/.cache/nonsense_hpc/sandboxes").expanduser()


def resolve_sandbox(image: str, environ: Mapping[str, str] | None = None) -> Path:
    """Turn an image argument into a sandbox directory path (which may not exist yet).

    A path (containing ``/`` or starting with ``.``) is taken as it is; a bare name is looked
    up in :func:`sandbox_dir`.

    Raises:
        ConfigError: the argument is empty, a URI, or not a valid name.
    """
    if not image:
        raise ConfigError("no image given")
    if "://" in image:
        raise ConfigError(f"{image!r} is a URI; the local runtime runs sandbox directories "
                          "built with `nonsense-hpc container build` (URIs need Apptainer)")
    if "/" in image or image.startswith("."):
        return Path(image).expanduser().absolute()
    if not _NAME.match(image):
        raise ConfigError(f"bad image name {image!r}: use letters, digits, '.', '_', '-'")
    return sandbox_dir(environ) / image


def read_stamp(root: Path) -> dict[str, Any] | None:
    """The stamp of a finished sandbox, or None when ``root`` is not one."""
    try:
        data = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def debootstrap_command(recipe: SandboxRecipe, target: str,
                        executable: str = "debootstrap") -> list[str]:
    """The debootstrap command line that makes ``target`` from ``recipe``."""
    cmd = [executable]
    if recipe.variant != "-":
        cmd.append(f"--variant={recipe.variant}")
    if recipe.include:
        cmd.append(f"--include={','.join(recipe.include)}")
    return [*cmd, recipe.suite, target, recipe.mirror]


def _lock(path: Path, timeout: float) -> int:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise ContainerError(f"another build of {path.with_suffix('')} held the lock "
                                     f"{path} for more than {timeout:.0f} s") from None
            time.sleep(0.25)


def build_sandbox(target: Path, recipe: SandboxRecipe | None = None, *, force: bool = False,
                  timeout: float = 1200.0, debootstrap: Sequence[str] | None = None) -> Path:
    """Build (or reuse) the sandbox at ``target``.

    Args:
        target: the sandbox directory.
        recipe: what to put in (default :class:`SandboxRecipe`).
        force: rebuild even when a sandbox with the same recipe exists.
        timeout: seconds debootstrap (and waiting for a concurrent build) may take.
        debootstrap: the debootstrap program and options to use (default: found on PATH).

    Returns:
        ``target``, which now holds a finished sandbox.

    Raises:
        ContainerError: not root, debootstrap missing, or debootstrap failed (the message
            carries the end of its log).
    """
    recipe = recipe or SandboxRecipe()
    digest = recipe.digest()
    stamp = read_stamp(target)
    if stamp and stamp.get("digest") == digest and not force:
        return target
    if debootstrap is None:
        exe = shutil.which("debootstrap")
        if exe is None:
            raise ContainerError("debootstrap is not installed; to build a local sandbox run "
                                 "apt-get install -y debootstrap bubblewrap")
        debootstrap = [exe]
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ContainerError("building a local sandbox runs debootstrap, which needs root; "
                             "build it once as root (sudo nonsense-hpc container build), or "
                             "point NONSENSE_SANDBOX_DIR at a sandbox someone built")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(target.parent / f".{target.name}.lock", timeout)
    try:
        stamp = read_stamp(target)
        if stamp and stamp.get("digest") == digest and not force:
            return target  # built by someone else while we waited
        work = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        cmd = debootstrap_command(recipe, str(work), executable=debootstrap[0])
        cmd[1:1] = list(debootstrap[1:])
        log.info("building sandbox %s: %s", target, " ".join(cmd))
        logfile = target.parent / f".{target.name}.build.log"
        started = time.monotonic()
        with open(logfile, "w") as out:
            try:
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                shutil.rmtree(work, ignore_errors=True)
                raise ContainerError(f"debootstrap did not finish in {timeout:.0f} s "
                                     f"(log: {logfile})") from None
        if proc.returncode != 0:
            tail = logfile.read_text(errors="replace").splitlines()[-15:]
            shutil.rmtree(work, ignore_errors=True)
            raise ContainerError(f"debootstrap failed with status {proc.returncode} "
                                 f"(log: {logfile}):\n" + "\n".join(tail))
        data = {"digest": digest, "recipe": asdict(recipe), "built": time.time(),
                "seconds": round(time.monotonic() - started, 1), "command": cmd}
        (work / STAMP).write_text(json.dumps(data, indent=2) + "\n")
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        work.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        return target
    finally:
        os.close(fd)
