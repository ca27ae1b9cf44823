"""CURVE encryption and client authentication on a real device."""

from __future__ import annotations

import pytest
import zmq
from helpers import drain, socket, wait_subscribed

from nonsense_hpc import wire
from nonsense_hpc.devices import Forwarder, configure_client, generate_keys
from nonsense_hpc.errors import ConfigError

ANY = "tcp://127.0.0.1:*"


def _client(kind, directory, address, name="client", subscribe=None):
    sock = socket(kind)
    configure_client(sock, directory, name)
    if subscribe is not None:
        sock.setsockopt(zmq.SUBSCRIBE, subscribe.encode())
    sock.connect(address)
    return sock


def test_generate_keys_layout_and_refuses_overwrite(tmp_path):
    paths = generate_keys(tmp_path, clients=("alice", "bob"))
    assert (tmp_path / "server.key").exists() and (tmp_path / "alice.key_secret").exists()
    assert sorted(p.name for p in (tmp_path / "authorized").iterdir()) == ["alice.key",
                                                                           "bob.key"]
    assert (paths["server_secret"].stat().st_mode & 0o777) == 0o600
    with pytest.raises(ConfigError, match="already holds"):
        generate_keys(tmp_path)
    generate_keys(tmp_path, clients=("carol",), overwrite=True)
    assert [p.name for p in (tmp_path / "authorized").iterdir()] == ["carol.key"]
    with pytest.raises(ConfigError, match="client key name"):
        generate_keys(tmp_path / "x", clients=("server",))


def test_curve_forwarder_serves_authorised_clients_only(tmp_path):
    keys = tmp_path / "keys"
    generate_keys(keys)
    stranger = tmp_path / "stranger"
    generate_keys(stranger)
    # the stranger knows the real server key but holds an unauthorised client key
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    with Forwarder(ANY, ANY, curve_dir=str(keys)).start("process") as fwd:
        sub = _client(zmq.SUB, keys, fwd.endpoints["out"], subscribe="")
        pub = _client(zmq.PUB, keys, fwd.endpoints["in"])
        intruder = _client(zmq.SUB, stranger, fwd.endpoints["out"], subscribe="")
        wait_subscribed(pub, sub)
        wire.send(pub, "secret", {"x": 1})
        assert any(f[0] == b"secret" for f in drain(sub))
        assert drain(intruder, idle=0.3) == []
        plain = socket(zmq.SUB, connect=fwd.endpoints["out"], subscribe="")
        wire.send(pub, "secret", {"x": 2})
        assert drain(plain, idle=0.3) == []  # no CURVE handshake, no data
        for s in (sub, pub, intruder, plain):
            s.close()


def test_missing_keys_are_a_clear_error(tmp_path):
    sock = socket(zmq.SUB)
    with pytest.raises(ConfigError, match="keys generate"):
        configure_client(sock, tmp_path)
    sock.close()
