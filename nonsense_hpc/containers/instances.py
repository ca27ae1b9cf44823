"""Named container instances of the local runtime: long-running services.

"Container instances mean services": a device (a Forwarder, a broker) runs in a named
instance that outlives the command which started it. Each instance is one bubblewrap
process in its own session and PID namespace; its record (a JSON file) lives in
``$NONSENSE_SANDBOX_DIR/.instances/NAME.json`` next to its stdout/stderr logs. A record
whose process is gone is dropped when instances are listed. Stopping sends SIGTERM to the
whole process group, waits (on a pidfd, no polling) and sends SIGKILL after the timeout.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nonsense_hpc.errors import ConfigError, ContainerError

__all__ = ["InstanceInfo", "LocalInstances", "validate_instance_name"]

_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")  # Apptainer's rule for instance names
_children: dict[int, subprocess.Popen[bytes]] = {}  # instances this process started


def validate_instance_name(name: str) -> str:
    """Check an instance name (Apptainer's rule: letters, digits, ``.``, ``_``, ``-``).

    Raises:
        ConfigError: the name is empty or has other characters.
    """
    if not name or not _NAME.match(name):
        raise ConfigError(f"bad instance name {name!r}: use letters, digits, '.', '_', '-'")
    return name


@dataclass(frozen=True)
class InstanceInfo:
    """A running instance, as ``instance list`` reports it.

    Attributes:
        name: the instance name.
        pid: process id of the instance (its bwrap, or Apptainer's starter).
        image: the image it runs.
        command: what it runs (empty for an Apptainer ``%startscript``).
        runtime: ``local``, ``apptainer`` or ``singularity``.
        log_out: path of its stdout log ("" when unknown).
        log_err: path of its stderr log ("" when unknown).
        started: start time (seconds since the epoch; 0 when unknown).
    """

    name: str
    pid: int
    image: str
    command: tuple[str, ...] = ()
    runtime: str = "local"
    log_out: str = ""
    log_err: str = ""
    started: float = 0.0


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits (pidfd, no polling); True when it did within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        return bool(ready)
    finally:
        os.close(fd)
        child = _children.pop(pid, None)
        if child is not None and child.poll() is None:
            try:
                child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                _children[pid] = child


class LocalInstances:
    """The registry of local instances in one directory.

    Args:
        state_dir: where records and logs are kept.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _record(self, name: str) -> Path:
        return self.state_dir / f"{validate_instance_name(name)}.json"

    def _load(self, path: Path) -> tuple[InstanceInfo, int] | None:
        try:
            data = json.loads(path.read_text())
            ticks = int(data.pop("ticks"))
            data["command"] = tuple(data.get("command", ()))
            return InstanceInfo(**data), ticks
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def get(self, name: str) -> InstanceInfo | None:
        """The running instance called ``name``, or None (a stale record is removed)."""
        path = self._record(name)
        loaded = self._load(path)
        if loaded is None:
            return None
        info, ticks = loaded
        if _start_ticks(info.pid) != ticks:
            path.unlink(missing_ok=True)
            return None
        return info

    def list(self) -> list[InstanceInfo]:
        """Every running instance, sorted by name; records of dead ones are removed."""
        if not self.state_dir.is_dir():
            return []
        out = []
        for path in sorted(self.state_dir.glob("*.json")):
            info = self.get(path.stem)
            if info is not None:
                out.append(info)
        return out

    def start(self, name: str, argv: Sequence[str], image: str) -> InstanceInfo:
        """Start ``argv`` (a complete bwrap command line) as instance ``name``.

        Raises:
            ContainerError: an instance of that name is running, or the process could not
                be started.
        """
        existing = self.get(name)
        if existing is not None:
            raise ContainerError(f"instance {name!r} is already running (pid {existing.pid}); "
                                 f"stop it first: nonsense-hpc container instance stop {name}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.state_dir / f"{name}.out"
        err_path = self.state_dir / f"{name}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=err, start_new_session=True)
            except OSError as exc:
                raise ContainerError(f"cannot start instance {name!r}: {exc}") from None
        _children[proc.pid] = proc
        ticks = _start_ticks(proc.pid)
        info = InstanceInfo(name=name, pid=proc.pid, image=image, command=tuple(argv),
                            runtime="local", log_out=str(out_path), log_err=str(err_path),
                            started=time.time())
        record = {**asdict(info), "ticks": ticks if ticks is not None else -1}
        tmp = self._record(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self._record(name))
        return info

    def stop(self, name: str, timeout: float = 10.0) -> InstanceInfo:
        """Stop instance ``name``: SIGTERM to its process group, SIGKILL after ``timeout``.

        Raises:
            ContainerError: no instance of that name is running, or it survived SIGKILL.
        """
        info = self.get(name)
        if info is None:
            running = ", ".join(i.name for i in self.list()) or "none"
            raise ContainerError(f"no running instance called {name!r} (running: {running})")
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(info.pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(info.pid, wait):
                break
        else:
            raise ContainerError(f"instance {name!r} (pid {info.pid}) survived SIGKILL")
        self._record(name).unlink(missing_ok=True)
        return info
