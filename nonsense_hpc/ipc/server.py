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

Both ends send a hello first (:mod:`nonsense_hpc.ipc.handshake`); between two processes of
one host that both have CUDA, CUDA tensors then travel as CUDA IPC handles instead of
through host memory (:mod:`nonsense_hpc.ipc.cuda_ipc`). ``cuda_ipc=False`` or
``NONSENSE_CUDA_IPC=0`` opts out.
"""

from __future__ import annotations

import select
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from nonsense_hpc.ipc import codec, handshake
from nonsense_hpc.ipc.connection import Connection
from nonsense_hpc.ipc.sockio import wait_fd

__all__ = ["Server", "client", "server"]

_LISTENING: set[tuple[str, int]] = set()  # (address, port) of this process's servers


class Server:
    """A listening TCP socket and the clients connected to it.

    Args:
        host: address to listen on ("127.0.0.1", "0.0.0.0", a host name).
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        backlog: connections the kernel queues before they are accepted.
        cuda_ipc: send and take CUDA tensors as CUDA IPC handles with clients on this
            host that allow it (False: always through host memory).

    Attributes:
        host: the address listened on.
        port: the port listened on.
        cuda_ipc: the ``cuda_ipc`` option.

    Raises:
        ConfigError: ``NONSENSE_CUDA_IPC`` has an invalid value.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128,
                 cuda_ipc: bool = True) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        handshake.env_cuda_ipc()  # a bad NONSENSE_CUDA_IPC fails here, not at accept
        self.cuda_ipc = bool(cuda_ipc)
        self._listener = socket.create_server((host, port), backlog=backlog)
        self._listener.setblocking(False)
        self._pending = select.poll()  # says when a client waits to be accepted
        self._pending.register(self._listener, select.POLLIN)
        self.host: str = self._listener.getsockname()[0]
        self.port: int = self._listener.getsockname()[1]
        self._address = (self.host, self.port)
        _LISTENING.add(self._address)
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
        try:
            sock, addr = self._listener.accept()  # the listener does not block
        except BlockingIOError:
            if timeout is not None and timeout <= 0:
                return None
            if not wait_fd(self._listener, select.POLLIN, timeout):
                return None
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return None
        conn = Connection(sock, f"client #{self._next_id} ({addr[0]}:{addr[1]})",
                          self._next_id, cuda_ipc=self.cuda_ipc)
        self._next_id += 1
        self._conns.append(conn)
        return conn

    def _accept_pending(self) -> None:
        # A zero-time poll costs far less than a failed non-blocking accept (an exception).
        while self._pending.poll(0) and self.accept(0.0) is not None:
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

        CUDA tensors are staged through the host once for all clients, except for clients
        that take CUDA IPC: they get their own handles.

        Returns:
            How many clients it was sent to.

        Raises:
            TypeError: the value cannot be sent (nothing is written to anybody).
        """
        probe = _CudaProbe()
        enc = codec.encode(value, cuda=probe)
        self._accept_pending()
        conns = self.connections
        for conn in conns:
            if probe.count and conn.cuda_transport().name == "cuda_ipc":
                conn.send(value, timeout=timeout)
                continue
            conn.stats["cuda_staged_sent"] += probe.count
            conn._send_frame(enc, timeout)
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
            ready = [c for c in self._conns if c.buffered() and c.message_ready()]
            try:
                if not ready:  # only what is more than control frames (hello, acks)
                    ready = [key.data for key, _ in sel.select(left)
                             if key.data is not None and key.data.message_ready()]
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
        _LISTENING.discard(self._address)

    def _prune(self) -> None:
        self._conns = [c for c in self._conns if not c.closed]

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionError(f"server {self.host}:{self.port} is closed")


class _CudaProbe:
    """A codec hook that stages every CUDA tensor and counts them."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, tensors: list[Any]) -> list[dict[str, Any] | None]:
        self.count += len(tensors)
        return [None] * len(tensors)

    def cancel(self) -> None:
        pass


def server(host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128,
           cuda_ipc: bool = True) -> Server:
    """Listen for clients on ``host:port`` (torch-ipc's ``ipc.server``).

    ``cuda_ipc=False`` sends and takes CUDA tensors through host memory only; by default
    they travel as CUDA IPC handles to and from clients on this host that allow it.

    Example:
        >>> from nonsense_hpc import ipc
        >>> with ipc.server("127.0.0.1", 0) as srv, ipc.client("127.0.0.1", srv.port) as c:
        ...     c.send({"x": [1, 2.5, None]})
        ...     srv.recv_any()
        {'x': [1, 2.5, None]}
    """
    return Server(host, port, backlog=backlog, cuda_ipc=cuda_ipc)


def client(host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0,
           cuda_ipc: bool = True) -> Connection:
    """Connect to a server (torch-ipc's ``ipc.client``), retrying until ``timeout``.

    Retrying lets a client start before its server is listening.

    Args:
        host: the server's address.
        port: the server's port.
        timeout: seconds to keep trying.
        cuda_ipc: send and take CUDA tensors as CUDA IPC handles when the server is
            another process on this host that allows it (False: through host memory).

    Raises:
        ConnectionError: no server accepted within ``timeout`` seconds.
        ConfigError: ``NONSENSE_CUDA_IPC`` has an invalid value.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    handshake.env_cuda_ipc()
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(0.1, timeout))
            return Connection(sock, f"server {host}:{port}", cuda_ipc=cuda_ipc,
                              same_process=_is_own_server(sock))
        except OSError as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(f"cannot connect to {host}:{port} within {timeout} s: "
                                      f"{exc}") from exc
            time.sleep(delay)  # back off before the next attempt (server not up yet)
            delay = min(delay * 2, 0.5)


def _is_own_server(sock: socket.socket) -> bool:
    """Whether ``sock`` is connected to a server of this very process."""
    try:
        peer, port = sock.getpeername()[:2]
        local = sock.getsockname()[0]
    except OSError:
        return False
    return any(p == port and (a == peer or (a in ("0.0.0.0", "::") and peer == local))
               for a, p in _LISTENING)
