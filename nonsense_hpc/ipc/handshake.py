"""The hello that ``ipc.server`` / ``ipc.client`` peers exchange, and the CUDA transport rule.

Each end of a client-server connection sends one *hello* control frame as the very first
frame of its stream, without waiting for the other (a server accepts lazily, inside its
own calls, so a client can never wait for the server's hello when it connects). A hello
says who the process is and whether it takes CUDA IPC::

    {"hello": {"version": 1, "host": "<host identity>", "pid": 1234,
               "cuda_ipc": true, "reason": ""}}

The **host identity** is the kernel's boot id (``/proc/sys/kernel/random/boot_id``: the
same for every process of one running kernel, containers included), the host name and
the IPC and PID namespaces of the process. Two processes with equal identities run on the
same machine, see the same ``/dev/shm`` names and can open each other's CUDA IPC handles;
anything else (another machine, another container) is "another host" and CUDA tensors go
through host memory. A name alone (hostname, or an address that looks local) is never
trusted: containers share addresses and rename hosts.

A process takes CUDA IPC (``cuda_ipc`` true) when all of these hold: the connection was
made with ``cuda_ipc=True`` (the default), the ``NONSENSE_CUDA_IPC`` environment variable
is unset or true, the platform is Linux, torch is already imported and
``torch.cuda.is_available()``. torch is never imported just to answer: a process that has
not imported torch when it connects (or accepts) takes CUDA tensors by host staging.

:func:`choose_transport` is the sender's rule for one CUDA tensor; the reason it gives is
what a user reads when the fast path was not taken.

Example:
    >>> me = Hello(host="h1", pid=10, cuda_ipc=True)
    >>> choose_transport(me, Hello(host="h1", pid=11, cuda_ipc=True)).name
    'cuda_ipc'
    >>> choose_transport(me, Hello(host="h2", pid=11, cuda_ipc=True)).reason
    'the peer is on another host'
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from nonsense_hpc.errors import ConfigError, WireError

__all__ = [
    "ENV",
    "PROTOCOL_VERSION",
    "Hello",
    "Transport",
    "choose_transport",
    "env_cuda_ipc",
    "host_identity",
    "local_hello",
]

ENV = "NONSENSE_CUDA_IPC"
PROTOCOL_VERSION = 1
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_MAX_TEXT = 1024


@dataclass(frozen=True)
class Hello:
    """What one end of a connection says about itself.

    Attributes:
        host: the host identity (:func:`host_identity`).
        pid: the process id.
        cuda_ipc: whether the process takes (and sends) CUDA tensors as CUDA IPC handles.
        reason: why not, when ``cuda_ipc`` is false.
        version: the protocol version.
    """

    host: str
    pid: int
    cuda_ipc: bool
    reason: str = ""
    version: int = PROTOCOL_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object sent in the hello control frame."""
        return {"version": self.version, "host": self.host, "pid": self.pid,
                "cuda_ipc": self.cuda_ipc, "reason": self.reason}

    @classmethod
    def from_json(cls, obj: Any) -> Hello:
        """Validate a received hello.

        Raises:
            WireError: a field is missing or of the wrong type.
        """
        if not isinstance(obj, dict):
            raise WireError(f"malformed hello: expected an object, got {obj!r}")
        version, host, pid = obj.get("version"), obj.get("host"), obj.get("pid")
        cuda_ipc, reason = obj.get("cuda_ipc"), obj.get("reason", "")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise WireError(f"malformed hello: version {version!r}")
        if not isinstance(host, str) or not 0 < len(host) <= _MAX_TEXT:
            raise WireError(f"malformed hello: host {host!r}")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise WireError(f"malformed hello: pid {pid!r}")
        if not isinstance(cuda_ipc, bool):
            raise WireError(f"malformed hello: cuda_ipc {cuda_ipc!r}")
        if not isinstance(reason, str) or len(reason) > _MAX_TEXT:
            raise WireError(f"malformed hello: reason {reason!r}")
        return cls(host=host, pid=pid, cuda_ipc=cuda_ipc, reason=reason, version=version)


@dataclass(frozen=True)
class Transport:
    """How a CUDA tensor travels on one connection.

    Attributes:
        name: ``"cuda_ipc"`` (a CUDA IPC handle, the data stays on the GPU) or ``"host"``
            (copied to host memory, sent through the socket, copied back).
        reason: why ``"host"`` was chosen (empty for ``"cuda_ipc"``).
    """

    name: str
    reason: str = ""


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _namespace(kind: str) -> str:
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return f"{kind}:?"


@functools.cache
def host_identity() -> str:
    """This process's host identity: boot id, host name, IPC and PID namespaces.

    Equal identities mean one running kernel, one IPC namespace (``/dev/shm``, CUDA IPC)
    and one PID namespace (so equal pids mean the same process).
    """
    boot = _read("/proc/sys/kernel/random/boot_id") or "no-boot-id"
    return f"{boot}/{socket.gethostname()}/{_namespace('ipc')}/{_namespace('pid')}"


def env_cuda_ipc(environ: dict[str, str] | None = None) -> bool | None:
    """``NONSENSE_CUDA_IPC`` as a bool (None when unset or empty).

    Raises:
        ConfigError: the value is not one of 1/0, true/false, yes/no, on/off.
    """
    text = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{ENV}={text!r}: expected 1/0, true/false, yes/no or on/off")


def local_hello(cuda_ipc: bool = True, environ: dict[str, str] | None = None) -> Hello:
    """The hello this process sends on a new connection.

    Args:
        cuda_ipc: the ``cuda_ipc`` option of the server or client (False opts out).
        environ: the environment to read ``NONSENSE_CUDA_IPC`` from (default: os.environ).

    Raises:
        ConfigError: ``NONSENSE_CUDA_IPC`` has an invalid value.
    """
    env = env_cuda_ipc(environ)
    ok, reason = True, ""
    if not cuda_ipc:
        ok, reason = False, "CUDA IPC is disabled (cuda_ipc=False)"
    elif env is False:
        ok, reason = False, f"CUDA IPC is disabled ({ENV}=0)"
    elif not sys.platform.startswith("linux"):
        ok, reason = False, f"CUDA IPC is only used on Linux (this is {sys.platform})"
    else:
        torch = sys.modules.get("torch")
        if torch is None:
            ok, reason = False, "torch was not imported when the connection was made"
        elif not torch.cuda.is_available():
            ok, reason = False, "torch.cuda.is_available() is False"
    return Hello(host=host_identity(), pid=os.getpid(), cuda_ipc=ok, reason=reason)


def choose_transport(local: Hello, peer: Hello | None, *, disabled: str = "",
                     pending_bytes: int = 0, pending_limit: int | None = None) -> Transport:
    """Decide how a CUDA tensor goes to ``peer`` (the sender's rule).

    Args:
        local: this process's hello on the connection.
        peer: the peer's hello, None when it has not arrived (or never will).
        disabled: non-empty when CUDA IPC was switched off on this connection (the peer
            failed to open a handle): the reason.
        pending_bytes: bytes of CUDA IPC snapshots the peer has not acknowledged yet.
        pending_limit: above this, new tensors are staged through the host instead.

    Returns:
        ``Transport("cuda_ipc")`` or ``Transport("host", reason)``.
    """
    if not local.cuda_ipc:
        return Transport("host", local.reason or "CUDA IPC is disabled here")
    if disabled:
        return Transport("host", disabled)
    if peer is None:
        return Transport("host", "the peer has not announced itself (no hello received)")
    if peer.host != local.host:
        return Transport("host", "the peer is on another host")
    if peer.pid == local.pid:
        return Transport("host", "the peer is this process (CUDA IPC needs two processes)")
    if not peer.cuda_ipc:
        return Transport("host", f"the peer does not take CUDA IPC: {peer.reason or 'no reason'}")
    if pending_limit is not None and pending_bytes > pending_limit:
        return Transport("host", f"{pending_bytes} bytes of earlier CUDA IPC sends are not "
                                 f"acknowledged yet (limit {pending_limit})")
    return Transport("cuda_ipc")
