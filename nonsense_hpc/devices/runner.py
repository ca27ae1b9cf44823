"""Launchers shared by every device: run in a thread, or in a child process.

A :class:`Launchable` implements ``run(on_ready)`` (blocking, creates its sockets there)
and keeps its constructor arguments in ``self._config`` (plain JSON values). ``start``
runs it in a daemon thread, or in a fresh interpreter
(``python -m nonsense_hpc.devices._child``) that rebuilds the device from that config;
the child prints one JSON line with its endpoints when ready. A child process has its
own zmq Context and no inherited sockets, and needs no ``if __name__ == "__main__"``
guard in the caller's script.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
from typing import Any, ClassVar

from nonsense_hpc.devices.control import DeviceControl
from nonsense_hpc.errors import ConfigError, DeviceError

__all__ = ["LAUNCHERS", "Launchable", "endpoint_of"]

LAUNCHERS = ("thread", "process")


def endpoint_of(sock: Any) -> str:
    """The address a socket actually bound (wildcard ports resolved)."""
    import zmq

    raw: Any = sock.getsockopt(zmq.LAST_ENDPOINT)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Launchable:
    """Mixin: thread/process launchers and control-socket shortcuts."""

    name: ClassVar[str] = "device"
    _config: dict[str, Any]

    def __init__(self) -> None:
        self.endpoints: dict[str, str] = {}
        self.launcher: str | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def run(self, on_ready: Any = None) -> None:  # pragma: no cover - abstract
        """Run in the calling thread until terminated."""
        raise NotImplementedError

    def start(self, launcher: str = "thread", timeout: float = 30.0) -> Any:
        """Start in a background thread or a child process.

        Args:
            launcher: ``"thread"`` or ``"process"``.
            timeout: seconds to wait until every socket is bound.

        Returns:
            self, with :attr:`endpoints` filled in.

        Raises:
            ConfigError: unknown launcher.
            DeviceError: already running, or the device failed to start (bind error).
        """
        if launcher not in LAUNCHERS:
            raise ConfigError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
        if self.is_alive():
            raise DeviceError(f"{self.name} is already running")
        self.launcher = launcher
        report = self._start_thread(timeout) if launcher == "thread" else \
            self._start_process(timeout)
        if "error" in report:
            self.join(timeout)
            raise DeviceError(f"{self.name} failed to start: {report['error']}")
        self.endpoints = report["endpoints"]
        return self

    def _start_thread(self, timeout: float) -> dict[str, Any]:
        reports: queue.Queue[dict[str, Any]] = queue.Queue()
        started = threading.Event()

        def body() -> None:
            def ready(endpoints: dict[str, str]) -> None:
                started.set()
                reports.put({"endpoints": endpoints})
            try:
                self.run(on_ready=ready)
            except BaseException as exc:
                if not started.is_set():
                    reports.put({"error": f"{exc}"})
                else:
                    raise

        self._thread = threading.Thread(target=body, name=f"nonsense-{self.name}",
                                        daemon=True)
        self._thread.start()
        try:
            return reports.get(timeout=timeout)
        except queue.Empty:
            raise DeviceError(f"{self.name} did not start within {timeout} s") from None

    def _start_process(self, timeout: float) -> dict[str, Any]:
        spec = {"module": type(self).__module__, "class": type(self).__qualname__,
                "config": self._config}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nonsense_hpc.devices._child", json.dumps(spec)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if self._proc.stdout is None:
            raise DeviceError("no pipe to the device process")
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else b""
        if not line:
            self.kill()
            raise DeviceError(f"{self.name} process did not start within {timeout} s "
                              f"(exit code {self._proc.returncode})")
        return dict(json.loads(line))

    # ---------------------------------------------------------- control shortcuts
    def control(self, timeout: float = 5.0) -> DeviceControl:
        """A client of this device's control socket."""
        if "control" not in self.endpoints:
            raise DeviceError(f"{self.name} is not running")
        return DeviceControl(self.endpoints["control"], timeout=timeout)

    def stats(self) -> dict[str, Any]:
        """Counters from the control socket."""
        return self.control().stats()

    def pause(self) -> None:
        """Stop forwarding until :meth:`resume`."""
        self.control().pause()

    def resume(self) -> None:
        """Forward again."""
        self.control().resume()

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop through the control socket and wait; a stuck process is killed.

        Raises:
            DeviceError: the device did not stop within ``timeout`` (it was killed).
        """
        if not self.is_alive():
            self.join(0)
            return
        try:
            self.control(timeout=timeout).terminate()
        except DeviceError:
            self.kill()
        self.join(timeout)
        if self.is_alive():
            self.kill()
            raise DeviceError(f"{self.name} did not stop within {timeout} s; killed")

    def kill(self) -> None:
        """SIGKILL a process device (a crash, for tests); terminate a thread device."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        elif self._thread is not None and self._thread.is_alive():
            try:
                self.control(timeout=2).terminate()
            except DeviceError:
                pass
            self._thread.join(10)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker to end."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return
            if self._proc.stdout is not None:
                self._proc.stdout.close()

    def is_alive(self) -> bool:
        """Whether the worker is running."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """The worker's process id (the child for a process launcher)."""
        if self._proc is not None:
            return self._proc.pid
        return os.getpid() if self._thread is not None else None

    def __enter__(self) -> Any:
        if not self.is_alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()
