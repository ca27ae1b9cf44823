"""The control socket: ``status``, ``restart NAME``, ``stop NAME``, ``start NAME``, ``shutdown``.

Requests and replies are :mod:`nonsense_hpc.wire` messages (``kind="control"``) on a
ZeroMQ REQ/ROUTER pair: request data ``{"cmd": "restart", "name": "web"}``, reply data
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. The supervisor
answers from its own loop, between handling child deaths.

Example:
    >>> from nonsense_hpc.supervise.control import request
    >>> request("ipc:///tmp/sup.ctl", "status", timeout=5.0)      # doctest: +SKIP
    {'supervisor': 'root', 'strategy': 'one_for_one', 'children': [...]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nonsense_hpc.errors import ConfigError, SupervisorError

if TYPE_CHECKING:
    from nonsense_hpc.supervise.supervisor import Supervisor

__all__ = ["COMMANDS", "ControlServer", "request"]

#: command -> whether it needs a child NAME
COMMANDS = {"status": False, "restart": True, "stop": True, "start": True,
            "shutdown": False}


class ControlServer:
    """A ROUTER socket answering control requests for one supervisor (loop thread only)."""

    def __init__(self, context: Any, addr: str, supervisor: Supervisor) -> None:
        import zmq

        self._zmq = zmq
        self._sup = supervisor
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(addr)
        self.addr = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    def handle(self) -> None:
        """Answer every request waiting on the socket."""
        from nonsense_hpc import wire

        while True:
            try:
                frames = self.socket.recv_multipart(flags=self._zmq.NOBLOCK, copy=False)
            except self._zmq.Again:
                return
            try:
                sep = next(i for i, f in enumerate(frames) if len(f.bytes) == 0)
            except StopIteration:
                continue  # not from a REQ socket: ignore
            envelope, body = frames[:sep + 1], frames[sep + 1:]
            try:
                msg = wire.decode(body, max_bytes=1 << 20)
                reply = {"ok": True, "result": self._execute(msg.data)}
            except (SupervisorError, ConfigError, ValueError, TypeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            out = wire.encode("control.reply", reply, kind="control")
            self.socket.send_multipart([*envelope, *out], copy=False)

    def _execute(self, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("cmd"), str):
            raise ConfigError("a control request is {'cmd': ..., 'name': ...}")
        cmd, name = data["cmd"], data.get("name")
        if cmd not in COMMANDS:
            raise ConfigError(f"unknown command {cmd!r}; valid: {', '.join(COMMANDS)}")
        if COMMANDS[cmd] and not isinstance(name, str):
            raise ConfigError(f"{cmd} needs a child NAME")
        sup = self._sup
        if cmd == "status":
            return {"supervisor": sup.name, "strategy": sup.spec.strategy,
                    "intensity": sup.spec.intensity, "period": sup.spec.period,
                    "children": [c.to_dict() for c in sup.which_children()]}
        if cmd == "restart":
            return sup.restart_child(name).to_dict()  # type: ignore[arg-type]
        if cmd == "stop":
            sup.terminate_child(name)  # type: ignore[arg-type]
            return {"stopped": name}
        if cmd == "start":
            return sup.restart_child(name).to_dict()  # type: ignore[arg-type]
        sup.stop()
        return {"shutdown": sup.name}

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)


def request(addr: str, cmd: str, name: str | None = None, timeout: float = 10.0) -> Any:
    """Send one control request and return the result.

    Args:
        addr: the supervisor's control address.
        cmd: one of :data:`COMMANDS`.
        name: the child, for commands that need one.
        timeout: seconds to wait for the reply (a restart waits for the child's
            shutdown, so allow for its shutdown timeout).

    Raises:
        ConfigError: unknown command, or a missing NAME.
        TimeoutError: no reply within ``timeout`` (no supervisor at ``addr``?).
        SupervisorError: the supervisor refused the request (the reason is the message).
    """
    import zmq

    from nonsense_hpc import wire

    if cmd not in COMMANDS:
        raise ConfigError(f"unknown command {cmd!r}; valid: {', '.join(COMMANDS)}")
    if COMMANDS[cmd] and not name:
        raise ConfigError(f"{cmd} needs a child NAME")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(addr)
        wire.send(sock, "control.request", {"cmd": cmd, "name": name}, kind="control")
        try:
            msg = wire.recv(sock, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer from a supervisor at {addr} within {timeout} s"
                               ) from None
    finally:
        sock.close(linger=0)
        ctx.term()
    data = msg.data
    if not isinstance(data, dict) or "ok" not in data:
        raise SupervisorError(f"malformed reply from {addr}: {data!r}")
    if not data["ok"]:
        raise SupervisorError(str(data.get("error")))
    return data.get("result")
