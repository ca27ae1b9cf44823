"""Addresses and CURVE keys: devices bind to 127.0.0.1 unless told otherwise.

* :func:`normalize_address` turns ``"5559"`` or ``":5559"`` into
  ``"tcp://127.0.0.1:5559"`` and checks the transport.
* :func:`check_bind_address` refuses to bind a non-loopback TCP interface (``*``,
  ``0.0.0.0``, a real NIC) unless ``public=True``: exposing a device to the network is an
  explicit decision, ideally together with CURVE.
* :func:`generate_keys` writes a CURVE key set (``nonsense-hpc keys generate DIR``)::

      DIR/server.key, DIR/server.key_secret        the device's key pair
      DIR/<client>.key, DIR/<client>.key_secret    each client's key pair
      DIR/authorized/<client>.key                  public keys the device accepts

* :func:`configure_server` / :func:`configure_client` set the keys on a socket;
  :func:`start_authenticator` makes a context accept only the authorised clients.
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = [
    "LOOPBACK",
    "check_bind_address",
    "configure_client",
    "configure_server",
    "generate_keys",
    "normalize_address",
    "start_authenticator",
]

LOOPBACK = "127.0.0.1"
_TRANSPORTS = ("tcp://", "ipc://", "inproc://")


def normalize_address(address: str) -> str:
    """Return a full ZeroMQ address; a bare port means ``tcp://127.0.0.1:PORT``.

    Raises:
        ConfigError: the address has an unknown transport or no port.
    """
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(f"empty address {address!r}")
    text = address.strip()
    if text.lstrip(":").isdigit() or text.lstrip(":") == "*":
        return f"tcp://{LOOPBACK}:{text.lstrip(':')}"
    if not text.startswith(_TRANSPORTS):
        raise ConfigError(f"address {address!r} must start with one of {', '.join(_TRANSPORTS)}"
                          f" (or be a bare port such as 5559)")
    if text.startswith("tcp://"):
        host, sep, port = text[6:].rpartition(":")
        if not sep or not host or not (port.isdigit() or port == "*"):
            raise ConfigError(f"tcp address {address!r} needs HOST:PORT "
                              f"(example: tcp://127.0.0.1:5559)")
    return text


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(address: str, public: bool = False) -> str:
    """Normalise an address a device will bind, refusing public interfaces by default.

    Args:
        address: the address (see :func:`normalize_address`).
        public: allow binding ``*``, ``0.0.0.0`` or another non-loopback interface.

    Raises:
        ConfigError: the address is invalid, or public without ``public=True``.
    """
    full = normalize_address(address)
    if full.startswith("tcp://") and not public:
        host = full[6:].rpartition(":")[0]
        if not _is_loopback(host):
            raise ConfigError(f"refusing to bind {full}: devices bind to 127.0.0.1 unless "
                              f"told otherwise (pass public=True / --public, and consider "
                              f"CURVE: nonsense-hpc keys generate DIR)")
    return full


def generate_keys(directory: str | Path, clients: tuple[str, ...] = ("client",),
                  overwrite: bool = False) -> dict[str, Path]:
    """Create a CURVE key set in ``directory``.

    Args:
        directory: where to write the keys (created if missing).
        clients: names of the client key pairs to create and authorise.
        overwrite: replace existing keys (otherwise an existing set is an error).

    Returns:
        Paths by role: ``server``, ``server_secret``, ``<client>``, ``<client>_secret``,
        ``authorized`` (the directory of accepted public keys).

    Raises:
        ConfigError: keys exist and ``overwrite`` is false, or a client name is invalid.
    """
    import zmq.auth

    root = Path(directory)
    if (root / "server.key_secret").exists() and not overwrite:
        raise ConfigError(f"{root} already holds CURVE keys; pass overwrite=True "
                          f"(--force) to replace them")
    for name in clients:
        if not name or not name.replace("-", "").replace("_", "").isalnum() or \
                name == "server":
            raise ConfigError(f"client key name must be a word other than 'server', "
                              f"got {name!r}")
    root.mkdir(parents=True, exist_ok=True)
    authorized = root / "authorized"
    if authorized.exists() and overwrite:
        shutil.rmtree(authorized)
    authorized.mkdir(exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(root), "server")
    paths = {"server": Path(pub), "server_secret": Path(sec), "authorized": authorized}
    for name in clients:
        pub, sec = zmq.auth.create_certificates(str(root), name)
        shutil.copy(pub, authorized / Path(pub).name)
        paths[name] = Path(pub)
        paths[f"{name}_secret"] = Path(sec)
    for path in root.glob("*.key_secret"):
        path.chmod(0o600)
    return paths


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.exists():
        raise ConfigError(f"CURVE key file {path} is missing "
                          f"(create a key set with: nonsense-hpc keys generate DIR)")
    public, secret_key = zmq.auth.load_certificate(str(path))
    if secret and secret_key is None:
        raise ConfigError(f"{path} holds no secret key")
    return public, secret_key


def configure_server(sock: Any, directory: str | Path) -> None:
    """Make ``sock`` a CURVE server with the key pair in ``directory``."""
    public, secret = _load(Path(directory) / "server.key_secret", secret=True)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True


def configure_client(sock: Any, directory: str | Path, name: str = "client") -> None:
    """Make ``sock`` a CURVE client of the server whose keys are in ``directory``.

    Args:
        sock: the socket (before connect).
        directory: the key directory (needs ``server.key`` and ``<name>.key_secret``).
        name: which client key pair to use.
    """
    root = Path(directory)
    public, secret = _load(root / f"{name}.key_secret", secret=True)
    server_public, _ = _load(root / "server.key", secret=False)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public


def start_authenticator(context: Any, directory: str | Path) -> Any:
    """Start a ZAP authenticator on ``context`` accepting only ``DIR/authorized/*.key``.

    Returns:
        The running ``zmq.auth.thread.ThreadAuthenticator`` (call ``.stop()`` when done).
    """
    from zmq.auth.thread import ThreadAuthenticator

    authorized = Path(directory) / "authorized"
    if not authorized.is_dir():
        raise ConfigError(f"{authorized} is missing: no client may connect "
                          f"(create keys with: nonsense-hpc keys generate {directory})")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(authorized))
    return auth
