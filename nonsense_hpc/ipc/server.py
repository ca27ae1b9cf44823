"""Client-server messaging over TCP, after torch-ipc's ``ipc.server`` / ``ipc.client``.

Example (the seed's README, in Python)::

    from nonsense_hpc import ipc
    server = ipc.server("127.0.0.1", 0)          # port 0: pick a free port
    client = ipc.client("127.0.0.1", server.port)
    client.send("hi")
    assert server.recv_any() == "hi"
    client.close()
    server.close()

A server accepts clients lazily, inside its own calls (``clients``, ``recv_any``,
``broadcast``, ...), so there is no background thread and nothing to shut down but the
sockets. Every wait takes a ``timeout``.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from nonsense_hpc.ipc.connection import Connection

__all__ = ["Server", "client", "server"]


class Server:
    """A listening TCP socket and the clients connected to it.

    Args:
        host: address to listen on ("127.0.0.1", "0.0.0.0", a host name).
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        backlog: connections the kernel queues before they are accepted.

    Attributes:
        host: the address listened on.
        port: the port listened on.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        self._listener = socket.create_server((host, port), backlog=backlog)
        self._listener.setblocking(False)
        self.host: str = self._listener.getsockname()[0]
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[Connection] = []
        self._next_id = 1
        self._rr = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<ipc.Server {self.host}:{self.port} clients={len(self._conns)}>"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connections(self) -> list[Connection]:
        """The open client connections, in the order they connected."""
        self._prune()
        return list(self._conns)

    def accept(self, timeout: float | None = 0.0) -> Connection | None:
        """Accept one pending client, waiting up to ``timeout`` seconds (None: for ever).

        Returns:
            The new connection, or None when nobody connected in time.
        """
        self._check_open()
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                return None
        finally:
            sel.close()
        try:
            sock, addr = self._listener.accept()
        except BlockingIOError:
            return None
        conn = Connection(sock, f"client #{self._next_id} ({addr[0]}:{addr[1]})",
                          self._next_id)
        self._next_id += 1
        self._conns.append(conn)
        return conn

    def _accept_pending(self) -> None:
        while self.accept(0.0) is not None:
            pass

    def clients(self, n: int | None = None, fn: Callable[[Connection], Any] | None = None,
                *, timeout: float | None = 30.0) -> list[Connection]:
        """Wait until ``n`` clients are connected and return the connections.

        Like torch-ipc's ``server:clients(n, fn)``: ``fn`` (if given) is called with each
        connection.

        Args:
            n: how many clients to wait for (None: take whoever is connected now).
            fn: called once per connection.
            timeout: seconds to wait for the ``n`` clients.

        Raises:
            TimeoutError: fewer than ``n`` clients connected in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._accept_pending()
        self._prune()
        while n is not None and len(self._conns) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(self._conns)} of {n} clients connected to "
                                   f"{self.host}:{self.port} within {timeout} s")
            self.accept(left)
            self._prune()
        conns = list(self._conns)
        if fn is not None:
            for c in conns:
                fn(c)
        return conns

    def _target(self, client: Connection | None) -> Connection:
        if client is not None:
            return client
        conns = self.connections
        if len(conns) != 1:
            raise ValueError(f"the server has {len(conns)} clients: pass client= "
                             f"(one of server.connections) or use broadcast / recv_any")
        return conns[0]

    def send(self, value: Any, client: Connection | None = None, *,
             timeout: float | None = None) -> None:
        """Send a value to one client (the only one when ``client`` is None).

        Raises:
            TypeError: the value cannot be sent (nothing is written).
            ValueError: ``client`` is None and there is not exactly one client.
        """
        self._accept_pending()
        self._target(client).send(value, timeout=timeout)

    def recv(self, client: Connection | None = None, *, timeout: float | None = None) -> Any:
        """Receive a value from one client (the only one when ``client`` is None)."""
        self._accept_pending()
        return self._target(client).recv(timeout=timeout)

    def broadcast(self, value: Any, *, timeout: float | None = None) -> int:
        """Send a value to every connected client; the value is encoded once.

        Returns:
            How many clients it was sent to.

        Raises:
            TypeError: the value cannot be sent (nothing is written to anybody).
        """
        from nonsense_hpc.ipc import codec
        from nonsense_hpc.ipc.connection import send_views

        enc = codec.encode(value)
        self._accept_pending()
        conns = self.connections
        for conn in conns:
            with conn._send_lock:
                conn.sock.settimeout(timeout)
                try:
                    send_views(conn.sock, codec.frame_buffers(enc))
                except OSError as exc:
                    conn.close()
                    raise ConnectionError(f"broadcast to {conn.peer} failed: {exc}") from exc
        return len(conns)

    def recv_any(self, *, timeout: float | None = None,
                 return_client: bool = False) -> Any:
        """Receive the next value from whichever client speaks first.

        Clients that connect while waiting are accepted; clients that disconnect are
        dropped. Clients are served round-robin, so a chatty one cannot starve the others.

        Args:
            timeout: seconds to wait (None: for ever).
            return_client: return ``(value, connection)`` instead of the value alone.

        Raises:
            TimeoutError: no client sent anything within ``timeout``.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._accept_pending()
            self._prune()
            sel = selectors.DefaultSelector()
            sel.register(self._listener, selectors.EVENT_READ, None)
            for conn in self._conns:
                sel.register(conn.sock, selectors.EVENT_READ, conn)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = [c for c in self._conns if c.buffered()]  # read ahead already
            try:
                if not ready:
                    ready = [key.data for key, _ in sel.select(left) if key.data is not None]
            finally:
                sel.close()
            if ready:
                order = {c.id: i for i, c in enumerate(self._conns)}
                ready.sort(key=lambda c: (order[c.id] - self._rr) % max(1, len(self._conns)))
                conn = ready[0]
                self._rr = order[conn.id] + 1
                try:
                    value = conn.recv(timeout=None if left is None else max(left, 1.0))
                except ConnectionResetError:
                    continue  # that client left; wait for the others
                return (value, conn) if return_client else value
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no client of {self.host}:{self.port} sent anything "
                                   f"within {timeout} s")

    def close(self) -> None:
        """Close every client connection and stop listening (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._listener.close()

    def _prune(self) -> None:
        self._conns = [c for c in self._conns if not c.closed]

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionError(f"server {self.host}:{self.port} is closed")


def server(host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128) -> Server:
    """Listen for clients on ``host:port`` (torch-ipc's ``ipc.server``).

    Example:
        >>> from nonsense_hpc import ipc
        >>> with ipc.server("127.0.0.1", 0) as srv, ipc.client("127.0.0.1", srv.port) as c:
        ...     c.send({"x": [1, 2.5, None]})
        ...     srv.recv_any()
        {'x': [1, 2.5, None]}
    """
    return Server(host, port, backlog=backlog)


def client(host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> Connection:
    """Connect to a server (torch-ipc's ``ipc.client``), retrying until ``timeout``.

    Retrying lets a client start before its server is listening.

    Raises:
        ConnectionError: no server accepted within ``timeout`` seconds.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(0.1, timeout))
            return Connection(sock, f"server {host}:{port}")
        except OSError as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(f"cannot connect to {host}:{port} within {timeout} s: "
                                      f"{exc}") from exc
            time.sleep(delay)  # back off before the next attempt (server not up yet)
            delay = min(delay * 2, 0.5)
