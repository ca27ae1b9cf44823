"""The dashboard: a SUB socket on a Forwarder's output and a small local web server.

One thread subscribes (``metrics.``, ``heartbeat.``, ``events.`` and ``supervise.`` by
default: tensors are left on the wire) and folds messages into a
:class:`~nonsense_hpc.dashboard.state.DashboardState`; a standard-library HTTP server
serves the page (plain HTML, CSS and JavaScript shipped in the package, nothing from the
network) and pushes snapshots with Server-Sent Events:

``/``               the page
``/api/state``      the current snapshot as JSON
``/api/stream``     ``text/event-stream``: a ``state`` event at most every ``push_every`` s
``/healthz``        ``ok``

Example:
    >>> from nonsense_hpc.devices import Forwarder
    >>> fwd = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start("thread")
    >>> dash = Dashboard(fwd.endpoints["out"], port=0).start()
    >>> dash.url.startswith("http://127.0.0.1:")
    True
    >>> dash.stop(); fwd.terminate()
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from nonsense_hpc.dashboard.state import DashboardState
from nonsense_hpc.errors import ConfigError, DeviceError

__all__ = ["DEFAULT_TOPICS", "Dashboard"]

DEFAULT_TOPICS = ("metrics.", "heartbeat.", "events.", "supervise.")
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _static(name: str) -> bytes:
    return resources.files("nonsense_hpc.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    """Subscribe to one or more publishers and serve the live page.

    Args:
        addresses: Forwarder outputs (or any PUB sockets) to subscribe to.
        host: interface for the web server (loopback by default).
        port: TCP port (0: any free one; see :attr:`url`).
        topics: topic prefixes to subscribe to.
        public: allow ``host`` to be a non-loopback interface.
        push_every: least seconds between two pushed snapshots per browser.
        hmac_key: drop messages not signed with this key.
        state: an existing state to fold into (tests, notebooks).

    Raises:
        ConfigError: no address, or a public host without ``public=True``.
    """

    def __init__(self, addresses: str | list[str], *, host: str = "127.0.0.1",
                 port: int = 8050, topics: tuple[str, ...] = DEFAULT_TOPICS,
                 public: bool = False, push_every: float = 0.25,
                 hmac_key: bytes | None = None, state: DashboardState | None = None) -> None:
        from nonsense_hpc.devices.security import normalize_address

        addrs = [addresses] if isinstance(addresses, str) else list(addresses)
        if not addrs:
            raise ConfigError("the dashboard needs an address to subscribe to "
                              "(a Forwarder's output, e.g. tcp://127.0.0.1:5560)")
        self.addresses = [normalize_address(a) for a in addrs]
        if host not in _LOOPBACK and not public:
            raise ConfigError(f"refusing to serve the dashboard on {host!r} without "
                              "public=True (--public): anyone on the network could read it")
        self.host, self.port, self.topics = host, port, topics
        self.push_every, self.hmac_key = push_every, hmac_key
        self.state = state or DashboardState()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._sub_error: BaseException | None = None

    @property
    def url(self) -> str:
        """The page's address (after :meth:`start`)."""
        if self._httpd is None:
            raise DeviceError("the dashboard is not running")
        host, port = self._httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name if ':' not in name else f'[{name}]'}:{port}/"

    # ------------------------------------------------------------- subscriber
    def _subscribe(self) -> None:
        import zmq

        from nonsense_hpc import wire
        from nonsense_hpc.errors import WireError

        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10000)
        try:
            for topic in self.topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            for addr in self.addresses:
                sock.connect(addr)
            self._ready.set()
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart(copy=False)
                try:
                    self.state.add(wire.decode(frames, hmac_key=self.hmac_key))
                except WireError:
                    self.state.add_malformed()
        except BaseException as exc:  # surfaced by start() / the page
            self._sub_error = exc
            self._ready.set()
        finally:
            sock.close(0)
            ctx.term()

    # ----------------------------------------------------------------- server
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        dash = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: a library writes no logs of its own to stderr."""

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in _STATIC:
                    name, ctype = _STATIC[path]
                    self._send(200, _static(name), ctype)
                elif path == "/api/state":
                    self._send(200, json.dumps(dash.snapshot()).encode(),
                               "application/json")
                elif path == "/api/stream":
                    self._stream()
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                seen = -1
                try:
                    while not dash._stop.is_set():
                        version = dash.state.wait_change(seen, timeout=1.0)
                        if version == seen:
                            self.wfile.write(b": keep-alive\n\n")
                        else:
                            seen = version
                            data = json.dumps(dash.snapshot())
                            self.wfile.write(f"event: state\ndata: {data}\n\n".encode())
                        self.wfile.flush()
                        dash._stop.wait(dash.push_every)
                except (BrokenPipeError, ConnectionResetError):
                    return

        return Handler

    def snapshot(self) -> dict[str, Any]:
        """The state snapshot plus what the dashboard itself knows."""
        snap = self.state.snapshot()
        snap["sources"] = self.addresses
        snap["subscriber_error"] = None if self._sub_error is None else str(self._sub_error)
        return snap

    # -------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> Dashboard:
        """Start the subscriber and the web server in background threads.

        Raises:
            DeviceError: the port cannot be bound or the subscriber failed to start.
        """
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), self._handler())
        except OSError as exc:
            raise DeviceError(f"dashboard cannot listen on {self.host}:{self.port}: "
                              f"{exc}") from None
        self._httpd.daemon_threads = True
        sub = threading.Thread(target=self._subscribe, name="nonsense-dashboard-sub",
                               daemon=True)
        web = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                               name="nonsense-dashboard-web", daemon=True)
        self._threads = [sub, web]
        sub.start()
        if not self._ready.wait(timeout) or self._sub_error is not None:
            self.stop()
            raise DeviceError(f"dashboard subscriber failed: {self._sub_error}")
        web.start()
        return self

    def serve_forever(self) -> None:
        """Run until interrupted (what the CLI does)."""
        if self._httpd is None:
            self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads and close the sockets. Idempotent."""
        self._stop.set()
        with self.state.changed:
            self.state.changed.notify_all()
        if self._httpd is not None:
            if len(self._threads) > 1 and self._threads[1].is_alive():
                self._httpd.shutdown()  # only returns once serve_forever has run
            self._httpd.server_close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)

    def __enter__(self) -> Dashboard:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
