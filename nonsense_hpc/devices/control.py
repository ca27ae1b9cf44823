"""The control socket of a device: pause, resume, terminate, statistics.

Every device (Forwarder, Streamer, Broker) binds a REP control socket. A request is one
frame holding a command word; the reply is one JSON object::

    PAUSE       -> {"ok": true, "state": "paused"}
    RESUME      -> {"ok": true, "state": "running"}
    TERMINATE   -> {"ok": true, "state": "terminated"}
    STATISTICS  -> {"ok": true, "state": ..., "device": ..., "frontend": {...}, ...}
    anything    -> {"ok": false, "error": "unknown command ...; valid: ..."}

Any REQ socket can drive it; :class:`DeviceControl` is the Python client, with a timeout on
every request. For the libzmq proxy devices, :class:`ControlRelay` (a thread inside the
device) validates commands before they reach ``zmq.proxy_steerable``'s own control socket
and adds counters from a socket monitor, so the per-message path never leaves libzmq.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any

from nonsense_hpc.errors import DeviceError

__all__ = ["COMMANDS", "ControlRelay", "DeviceControl", "side_stats"]

COMMANDS = ("PAUSE", "RESUME", "TERMINATE", "STATISTICS")
_ALIASES = {"STATS": "STATISTICS", "STOP": "TERMINATE"}


def parse_command(raw: bytes) -> str | None:
    """Return the canonical command for a request frame, or None if unknown."""
    try:
        word = raw.decode("ascii").strip().upper()
    except UnicodeDecodeError:
        return None
    word = _ALIASES.get(word, word)
    return word if word in COMMANDS else None


def side_stats(values: list[int]) -> dict[str, dict[str, int]]:
    """Turn libzmq's 8 STATISTICS counters into ``{"frontend": ..., "backend": ...}``."""
    keys = ("frames_in", "bytes_in", "frames_out", "bytes_out")
    return {"frontend": dict(zip(keys, values[0:4], strict=True)),
            "backend": dict(zip(keys, values[4:8], strict=True))}


def _libzmq_swaps_pause() -> bool:
    import zmq

    return tuple(zmq.zmq_version_info()) <= (4, 3, 5)


class DeviceControl:
    """Client of a device's control socket.

    Example:
        >>> ctl = DeviceControl("tcp://127.0.0.1:5570", timeout=2.0)  # doctest: +SKIP
        >>> ctl.stats()["frontend"]["frames_in"]                        # doctest: +SKIP
        1200
    """

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout

    def request(self, command: str) -> dict[str, Any]:
        """Send one command and return the JSON reply.

        Raises:
            DeviceError: no reply within the timeout (device dead or stuck), the reply is
                not JSON, or the device answered ``ok: false``.
        """
        import zmq

        ctx: Any = zmq.Context.instance()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.address)
            sock.send(command.encode("ascii", "replace"))
            if not sock.poll(int(self.timeout * 1000)):
                raise DeviceError(f"no reply from control socket {self.address} within "
                                  f"{self.timeout} s to {command!r} (device dead or stuck?)")
            raw = sock.recv()
        finally:
            sock.close()
        try:
            reply = json.loads(raw)
        except ValueError:
            raise DeviceError(f"control socket {self.address} replied non-JSON {raw[:80]!r}"
                              ) from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise DeviceError(f"control socket {self.address} refused {command!r}: "
                              f"{reply.get('error') if isinstance(reply, dict) else reply}")
        return reply

    def pause(self) -> dict[str, Any]:
        """Stop forwarding (messages queue up to the high-water mark)."""
        return self.request("PAUSE")

    def resume(self) -> dict[str, Any]:
        """Forward again after :meth:`pause`."""
        return self.request("RESUME")

    def terminate(self) -> dict[str, Any]:
        """Stop the device; its sockets close."""
        return self.request("TERMINATE")

    def stats(self) -> dict[str, Any]:
        """Counters: frames and bytes per side, drops, connections, state."""
        return self.request("STATISTICS")


class ControlRelay(threading.Thread):
    """Serves the REP control socket of a proxy device and watches its sockets' monitors.

    Runs inside the device's worker (thread or process). It owns its sockets, creating
    them in :meth:`run`; it talks to ``zmq.proxy_steerable`` over an inproc PAIR.
    """

    def __init__(self, context: Any, control: Any, proxy_address: str,
                 monitors: dict[str, str], info: dict[str, Any],
                 libzmq_proxy: bool = True) -> None:
        super().__init__(name="nonsense-device-control", daemon=True)
        self.context = context
        self.control = control  # bound REP socket, handed over by the worker
        self.proxy_address = proxy_address
        self.monitor_addresses = monitors
        self.info = info
        self.state = "running"
        self.started = time.time()
        self.counters = {f"{side}_{what}": 0 for side in monitors
                         for what in ("connections", "disconnects")}
        self.finished = threading.Event()
        # libzmq <= 4.3.5 swaps PAUSE and RESUME in zmq_proxy_steerable (fixed upstream in
        # zeromq/libzmq#4600); translate so that our PAUSE always pauses.
        self.swap_pause = libzmq_proxy and _libzmq_swaps_pause()

    def _proxy_call(self, pair: Any, command: str) -> list[bytes]:
        pair.send(command.encode())
        if not pair.poll(5000):
            raise DeviceError(f"proxy did not answer {command}")
        return list(pair.recv_multipart())

    def _count_event(self, side: str, frames: list[bytes]) -> None:
        import zmq

        event = struct.unpack("=hi", frames[0][:6])[0]
        if event in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
            self.counters[f"{side}_connections"] += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self.counters[f"{side}_disconnects"] += 1

    def statistics(self, pair: Any) -> dict[str, Any]:
        """Ask the proxy for its counters and merge ours."""
        values = [struct.unpack("<Q", f)[0] for f in self._proxy_call(pair, "STATISTICS")]
        out: dict[str, Any] = {"ok": True, "state": self.state, **self.info,
                               "uptime_s": round(time.time() - self.started, 3)}
        out.update(side_stats(values))
        out["frames"] = out["frontend"]["frames_in"]
        out["bytes"] = out["frontend"]["bytes_in"]
        out["dropped_malformed"] = values[8] if len(values) > 8 else 0
        out["dropped_oversized"] = values[9] if len(values) > 9 else 0
        out.update(self.counters)
        return out

    def run(self) -> None:  # noqa: D102 - thread body
        import zmq

        pair = self.context.socket(zmq.PAIR)
        pair.connect(self.proxy_address)
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        monitors: dict[Any, str] = {}
        for side, address in self.monitor_addresses.items():
            mon = self.context.socket(zmq.PAIR)
            mon.connect(address)
            poller.register(mon, zmq.POLLIN)
            monitors[mon] = side
        try:
            while self.state != "terminated":
                for sock, _ in poller.poll(200):
                    if sock in monitors:
                        self._count_event(monitors[sock], sock.recv_multipart())
                        continue
                    self._serve(pair, sock.recv())
        finally:
            for mon in monitors:
                mon.close(0)
            pair.close(0)
            self.control.close(0)
            self.finished.set()

    def _serve(self, pair: Any, raw: bytes) -> None:
        command = parse_command(raw)
        try:
            if command is None:
                reply: dict[str, Any] = {
                    "ok": False, "error": f"unknown command {raw[:40]!r}; valid: "
                                          f"{', '.join(COMMANDS)}"}
            elif command == "STATISTICS":
                reply = self.statistics(pair)
            else:
                sent = command
                if self.swap_pause and command in ("PAUSE", "RESUME"):
                    sent = "RESUME" if command == "PAUSE" else "PAUSE"
                self._proxy_call(pair, sent)
                self.state = {"PAUSE": "paused", "RESUME": "running",
                              "TERMINATE": "terminated"}[command]
                reply = {"ok": True, "state": self.state}
        except DeviceError as exc:
            reply = {"ok": False, "error": str(exc)}
        self.control.send(json.dumps(reply).encode())
