"""Devices are behaviour x launcher: Forwarder (XSUB->XPUB) and Streamer (PULL->PUSH).

A device is configured in the parent and runs in a worker: the calling thread
(:meth:`Device.run`, what the CLI does), a background thread (``start("thread")``) or a
child process (``start("process")``, spawned, with a fresh zmq Context). Sockets are
created inside the worker. The per-message path is ``zmq.proxy_steerable``: messages
never enter Python. A :class:`~nonsense_hpc.devices.control.ControlRelay` thread serves
the control socket and counts connections from socket monitors.

``validate=True`` swaps the libzmq proxy for a Python loop that decodes every message
with :mod:`nonsense_hpc.wire` and drops (and counts) malformed, oversized or, with
``hmac_key``, unsigned ones. Use it at trust boundaries; it is slower.

In both modes ZeroMQ's ``ZMQ_MAXMSGSIZE`` is set to ``max_bytes`` on the input socket:
libzmq drops a larger frame and disconnects its sender (which reconnects on its own);
that shows up in ``in_disconnects``.

Example:
    >>> from nonsense_hpc.devices import Forwarder
    >>> fwd = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start("thread")
    >>> sorted(fwd.endpoints)
    ['control', 'in', 'out']
    >>> fwd.terminate()
"""

from __future__ import annotations

import os
import uuid
from typing import Any, ClassVar

from nonsense_hpc import wire
from nonsense_hpc.devices import security
from nonsense_hpc.devices.control import ControlRelay
from nonsense_hpc.devices.runner import Launchable, endpoint_of
from nonsense_hpc.errors import ConfigError, DeviceError

__all__ = ["Device", "Forwarder", "Streamer"]


class Device(Launchable):
    """A ZeroMQ device: a stable hub between two socket types.

    Args:
        in_addr: address of the input side (publishers / feeders connect here).
        out_addr: address of the output side (subscribers / workers connect here).
        control: address of the REP control socket (default: a random 127.0.0.1 port).
        bind_in: bind the input (default) or connect it to another device.
        bind_out: bind the output (default) or connect it.
        public: allow binding a non-loopback interface.
        max_bytes: largest message accepted (``ZMQ_MAXMSGSIZE`` on the input).
        hwm: high-water mark (messages) of both sockets.
        validate: decode every message in Python and drop malformed ones (slower).
        hmac_key: with ``validate``, drop messages not signed with this key.
        curve_dir: serve CURVE with the keys in this directory (see ``keys generate``).

    Raises:
        ConfigError: an address is invalid or public without ``public=True``.
    """

    name: ClassVar[str] = "device"
    in_type: ClassVar[str] = ""
    out_type: ClassVar[str] = ""

    def __init__(self, in_addr: str, out_addr: str, *, control: str | None = None,
                 bind_in: bool = True, bind_out: bool = True, public: bool = False,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, hwm: int = 1000,
                 validate: bool = False, hmac_key: bytes | None = None,
                 curve_dir: str | None = None) -> None:
        check = security.check_bind_address
        self.in_addr = check(in_addr, public) if bind_in else security.normalize_address(in_addr)
        self.out_addr = (check(out_addr, public) if bind_out
                         else security.normalize_address(out_addr))
        self.control_addr = check(control or "tcp://127.0.0.1:*", public)
        if max_bytes <= 0 or hwm < 0:
            raise ConfigError(f"max_bytes must be > 0 and hwm >= 0, got {max_bytes}, {hwm}")
        if hmac_key is not None and not validate:
            raise ConfigError("hmac_key only takes effect with validate=True")
        self.bind_in, self.bind_out, self.public = bind_in, bind_out, public
        self.max_bytes, self.hwm, self.validate = max_bytes, hwm, validate
        self.hmac_key, self.curve_dir = hmac_key, curve_dir
        self._config = {"in_addr": in_addr, "out_addr": out_addr, "control": control,
                        "bind_in": bind_in, "bind_out": bind_out, "public": public,
                        "max_bytes": max_bytes, "hwm": hwm, "validate": validate,
                        "hmac_key": hmac_key.hex() if hmac_key else None,
                        "curve_dir": curve_dir}
        super().__init__()

    # ----------------------------------------------------------------- in the worker
    def _sockets(self, ctx: Any) -> tuple[Any, Any]:
        import zmq

        in_sock = ctx.socket(getattr(zmq, self.in_type))
        out_sock = ctx.socket(getattr(zmq, self.out_type))
        in_sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        for sock in (in_sock, out_sock):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.RCVHWM, self.hwm)
            if self.curve_dir:
                security.configure_server(sock, self.curve_dir)
        for sock, addr, bind in ((in_sock, self.in_addr, self.bind_in),
                                 (out_sock, self.out_addr, self.bind_out)):
            try:
                sock.bind(addr) if bind else sock.connect(addr)
            except zmq.ZMQError as exc:
                in_sock.close(0)
                out_sock.close(0)
                raise DeviceError(f"{self.name} cannot {'bind' if bind else 'connect'} "
                                  f"{addr}: {exc}") from None
        return in_sock, out_sock

    def run(self, on_ready: Any = None) -> None:
        """Run the device in the calling thread until it is terminated.

        Args:
            on_ready: called with the endpoints dict once every socket is bound.

        Raises:
            DeviceError: a socket cannot be bound.
        """
        import zmq

        ctx = zmq.Context()
        auth = security.start_authenticator(ctx, self.curve_dir) if self.curve_dir else None
        tag = uuid.uuid4().hex[:12]
        socks: list[Any] = []
        relay: ControlRelay | None = None
        control: Any = None
        try:
            in_sock, out_sock = self._sockets(ctx)
            socks += [in_sock, out_sock]
            control = ctx.socket(zmq.REP)
            control.setsockopt(zmq.LINGER, 0)
            try:
                control.bind(self.control_addr)
            except zmq.ZMQError as exc:
                raise DeviceError(f"{self.name} cannot bind control {self.control_addr}: "
                                  f"{exc}") from None
            pair = ctx.socket(zmq.PAIR)
            socks.append(pair)
            pair.bind(f"inproc://ctl-{tag}")
            monitors = {}
            for side, sock in (("in", in_sock), ("out", out_sock)):
                monitors[side] = f"inproc://mon-{side}-{tag}"
                sock.monitor(monitors[side], zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED
                             | zmq.EVENT_DISCONNECTED)
            self.endpoints = {"in": endpoint_of(in_sock), "out": endpoint_of(out_sock),
                              "control": endpoint_of(control)}
            info = {"device": self.name, "pid": os.getpid(), "validate": self.validate,
                    "endpoints": self.endpoints}
            relay = ControlRelay(ctx, control, f"inproc://ctl-{tag}", monitors, info,
                                 libzmq_proxy=not self.validate)
            relay.start()
            if on_ready is not None:
                on_ready(dict(self.endpoints))
            if self.validate:
                from nonsense_hpc.devices.validating import validating_proxy

                validating_proxy(in_sock, out_sock, pair, self.max_bytes, self.hmac_key)
            else:
                zmq.proxy_steerable(in_sock, out_sock, None, pair)
        finally:
            if relay is not None:
                relay.state = "terminated"
                relay.finished.wait(5)
            elif control is not None:
                control.close(0)
            for sock in socks:
                try:
                    sock.disable_monitor()
                except zmq.ZMQError:
                    pass
                sock.close(0)
            if auth is not None:
                auth.stop()
            ctx.term()

class Forwarder(Device):
    """Pub-sub hub: publishers connect to ``in`` (XSUB), subscribers to ``out`` (XPUB).

    Both sides come and go; the Forwarder is the stable part that binds. Subscriptions
    travel upstream, so publishers only send what someone subscribed to. A slow
    subscriber never blocks a publisher: XPUB drops its messages at the high-water mark.
    """

    name = "forwarder"
    in_type = "XSUB"
    out_type = "XPUB"


class Streamer(Device):
    """Pipeline hub: feeders PUSH to ``in`` (PULL), workers PULL from ``out`` (PUSH).

    Tasks are fair-queued from feeders and load-balanced to workers. A task held by a
    worker that dies is lost; use :class:`~nonsense_hpc.devices.broker.Broker` for
    acknowledged delivery.
    """

    name = "streamer"
    in_type = "PULL"
    out_type = "PUSH"
