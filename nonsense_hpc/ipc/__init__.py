"""Seed parity with torch-ipc: client-server over TCP, ``map`` and ``workqueue``.

Example:
    >>> from nonsense_hpc import ipc
    >>> server = ipc.server("127.0.0.1", 0)
    >>> client = ipc.client("127.0.0.1", server.port)
    >>> client.send("hi")
    >>> server.recv_any()
    'hi'
    >>> client.close(); server.close()

Modules: :mod:`~nonsense_hpc.ipc.codec` (the safe encoding, no pickle),
:mod:`~nonsense_hpc.ipc.connection` (one framed stream), :mod:`~nonsense_hpc.ipc.server`
(server/client), :mod:`~nonsense_hpc.ipc.map` (workers in clean interpreters),
:mod:`~nonsense_hpc.ipc.workqueue` (named single-writer queue); CUDA tensors between
processes of one host: :mod:`~nonsense_hpc.ipc.handshake` (the hello, the transport rule),
:mod:`~nonsense_hpc.ipc.control` (control frames), :mod:`~nonsense_hpc.ipc.cuda_ipc`
(handles and their lifetime). See docs/ipc.md.
"""

from __future__ import annotations

from nonsense_hpc.ipc.codec import decode, encode
from nonsense_hpc.ipc.connection import Connection
from nonsense_hpc.ipc.cuda_ipc import CudaIpcError
from nonsense_hpc.ipc.map import MapJob, map
from nonsense_hpc.ipc.server import Server, client, server
from nonsense_hpc.ipc.workqueue import WorkQueue, workqueue

__all__ = [
    "Connection",
    "CudaIpcError",
    "MapJob",
    "Server",
    "WorkQueue",
    "client",
    "decode",
    "encode",
    "map",
    "server",
    "workqueue",
]
