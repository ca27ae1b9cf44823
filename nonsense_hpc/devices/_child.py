"""Entry point of a process-launched device: ``python -m nonsense_hpc.devices._child SPEC``.

SPEC is JSON ``{"module", "class", "config"}``; the child rebuilds the device, runs it,
prints one JSON line (``{"endpoints": ...}`` or ``{"error": ...}``) when its sockets are
bound, and stops cleanly on SIGTERM or SIGINT through its own control socket.
"""

from __future__ import annotations

import importlib
import json
import signal
import sys
import threading
import time
import traceback
from typing import Any

from nonsense_hpc.devices.control import DeviceControl
from nonsense_hpc.errors import DeviceError

__all__: list[str] = []


def _child_main(argv: list[str]) -> int:
    """Entry of a process launcher's child: rebuild the device, run it, report."""
    spec = json.loads(argv[0])
    cls = getattr(importlib.import_module(spec["module"]), spec["class"])
    config = dict(spec["config"])
    if config.get("hmac_key"):
        config["hmac_key"] = bytes.fromhex(config["hmac_key"])
    device = cls(**config)
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        # SIGTERM/SIGINT: ask the device to stop through its own control socket.
        if not stop_requested.is_set() and device.endpoints.get("control"):
            stop_requested.set()
            threading.Thread(target=_request_stop, args=(device,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(endpoints: dict[str, str]) -> None:
        device.endpoints = endpoints
        sys.stdout.write(json.dumps({"endpoints": endpoints}) + "\n")
        sys.stdout.flush()

    try:
        device.run(on_ready=ready)
    except Exception as exc:
        if not device.endpoints:
            sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
            sys.stdout.flush()
            return 1
        traceback.print_exc()
        return 1
    return 0


def _request_stop(device: Any) -> None:
    for _ in range(3):
        try:
            DeviceControl(device.endpoints["control"], timeout=2).terminate()
            return
        except DeviceError:
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
