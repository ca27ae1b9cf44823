"""CUDA tensors between processes of one host: hello, transport choice, CUDA IPC handles.

The round trips through real CUDA IPC need a GPU and are skipped without one; everything
else (the hello on real sockets, the transport rule, the opt-outs, the descriptor, a
receiver that cannot open a handle) runs on any machine, with frames crafted on raw
sockets where a peer must misbehave.
"""

import json
import os
import socket
import struct

import pytest
import torch

from nonsense_hpc import ipc
from nonsense_hpc.errors import ConfigError, WireError
from nonsense_hpc.ipc import codec, frames
from nonsense_hpc.ipc.cuda_ipc import CudaIpcError, IpcHandle
from nonsense_hpc.ipc.handshake import Hello, choose_transport, host_identity, local_hello

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: torch.cuda.is_available() is False on this machine")


# --- workers (module level: ipc.map imports them by name in clean interpreters) ---------
def hello_child(port, env, mapid):
    """Connect with NONSENSE_CUDA_IPC=env and say hi; return our own hello."""
    import torch  # noqa: F401  (imported before connecting, as a CUDA user would)

    os.environ["NONSENSE_CUDA_IPC"] = env
    with ipc.client("127.0.0.1", port) as conn:
        conn.send("hi")
        conn.recv(timeout=60)  # the parent is done with us
        return conn.hello.to_json()


def cuda_echo_child(port, env, mapid):
    """Receive CUDA tensors, check them, send one back; return what we saw."""
    import torch

    if env:
        os.environ["NONSENSE_CUDA_IPC"] = env
    with ipc.client("127.0.0.1", port) as conn:
        got = conn.recv(timeout=120)
        reply = {
            "devices": [str(t.device) for t in got.values()],
            "sums": {k: float(t.double().sum()) for k, t in got.items()},
            "contiguous": all(t.is_contiguous() for t in got.values()),
            "stats": dict(conn.stats),
            "back": got["a"] * 2,
        }
        conn.send(reply, timeout=60)
        conn.flush(timeout=60)
        reply_stats = dict(conn.stats)
        conn.recv(timeout=60)  # the parent is done with us
        del got, reply
        torch.cuda.synchronize()
        return {"stats": reply_stats, "pending": conn.pending,
                "transport": conn.last_transport.name, "reason": conn.last_transport.reason}


# --- helpers ------------------------------------------------------------------------------
def _control(message):
    return frames.control_frame(message)


def _value_frame(tree):
    header = json.dumps(tree).encode()
    return codec.PREFIX.pack(codec.MAGIC, len(header), 0, 0) + header


def _read_frame(sock, timeout=10):
    """Read one whole frame from a raw socket; return (flags, header JSON)."""
    sock.settimeout(timeout)

    def exact(n):
        out = bytearray()
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            assert chunk, "the server closed the connection"
            out += chunk
        return bytes(out)

    magic, hlen, nbuf, flags = codec.PREFIX.unpack(exact(codec.PREFIX.size))
    assert magic == codec.MAGIC
    lengths = struct.unpack(f"<{nbuf}Q", exact(8 * nbuf))
    header = json.loads(exact(hlen))
    for n in lengths:
        exact(n)
    return flags, header


def _descriptor(**changes):
    fields = {"frame": 7, "index": 0, "device": 0, "uuid": "GPU-test", "handle": bytes(64),
              "size": 16, "offset": 0, "ref_counter": "/torch_1_2_3",
              "ref_counter_offset": 5, "event": b"", "event_sync": False}
    fields.update(changes)
    return IpcHandle(**fields)


def _ipc_tree(desc):
    return {"$cuda_ipc": desc.to_json(), "dtype": "float32", "shape": [4],
            "device": "cuda:0", "transport": "cuda_ipc"}


# --- the hello and the transport rule -----------------------------------------------------
def test_hello_is_exchanged_on_real_sockets(server):
    with ipc.client("127.0.0.1", server.port) as client:
        client.send("x")
        assert server.recv_any(timeout=10) == "x"
        conn = server.connections[0]
        assert conn.peer_hello == client.hello
        server.send("y", conn)
        assert client.recv(timeout=10) == "y"
        assert client.peer_hello == conn.hello
        assert conn.hello.host == client.hello.host == host_identity()
        # One process on both ends: never CUDA IPC (it needs two processes).
        assert client.cuda_transport().name == "host"
        assert conn.cuda_transport().name == "host"
        assert conn.pending == 0
        conn.flush(timeout=1)  # nothing to wait for


def test_host_identity_names_boot_and_namespaces():
    ident = host_identity()
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    assert ident.startswith(boot + "/") and "ipc:[" in ident and "pid:[" in ident


ME = Hello(host="h1", pid=10, cuda_ipc=True)


@pytest.mark.parametrize(("peer", "kwargs", "name", "reason"), [
    (Hello("h1", 11, True), {}, "cuda_ipc", ""),
    (Hello("h2", 11, True), {}, "host", "another host"),
    (Hello("h1", 10, True), {}, "host", "this process"),
    (Hello("h1", 11, False, "CUDA IPC is disabled (NONSENSE_CUDA_IPC=0)"), {}, "host",
     "NONSENSE_CUDA_IPC=0"),
    (None, {}, "host", "no hello"),
    (Hello("h1", 11, True), {"disabled": "the peer could not use it"}, "host", "could not"),
    (Hello("h1", 11, True), {"pending_bytes": 2, "pending_limit": 1}, "host",
     "not acknowledged"),
])
def test_choose_transport(peer, kwargs, name, reason):
    got = choose_transport(ME, peer, **kwargs)
    assert got.name == name and reason in got.reason


def test_local_opt_out_wins():
    me = Hello("h1", 10, False, "CUDA IPC is disabled (cuda_ipc=False)")
    got = choose_transport(me, Hello("h1", 11, True))
    assert got.name == "host" and "cuda_ipc=False" in got.reason


def test_local_hello_reasons():
    assert "cuda_ipc=False" in local_hello(False).reason
    off = local_hello(True, {"NONSENSE_CUDA_IPC": "0"})
    assert not off.cuda_ipc and "NONSENSE_CUDA_IPC=0" in off.reason
    on = local_hello(True, {"NONSENSE_CUDA_IPC": "1"})
    assert on.cuda_ipc == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "torch.cuda.is_available() is False" in on.reason
    with pytest.raises(ConfigError, match="NONSENSE_CUDA_IPC='maybe'"):
        local_hello(True, {"NONSENSE_CUDA_IPC": "maybe"})


def test_bad_env_value_fails_when_connecting(monkeypatch, server):
    monkeypatch.setenv("NONSENSE_CUDA_IPC", "sometimes")
    with pytest.raises(ConfigError, match="NONSENSE_CUDA_IPC"):
        ipc.client("127.0.0.1", server.port)
    with pytest.raises(ConfigError, match="NONSENSE_CUDA_IPC"):
        ipc.server("127.0.0.1", 0)


def test_server_option_reaches_the_client():
    with ipc.server("127.0.0.1", 0, cuda_ipc=False) as srv, \
            ipc.client("127.0.0.1", srv.port) as client:
        client.send("x")
        srv.recv_any(timeout=10)
        srv.send("y")
        client.recv(timeout=10)
        assert client.peer_hello.cuda_ipc is False
        assert "cuda_ipc=False" in client.peer_hello.reason


def test_env_opt_out_in_another_process_reaches_the_server(server):
    job = ipc.map(1, hello_child, server.port, "0")
    value, conn = server.recv_any(timeout=60, return_client=True)
    assert value == "hi"
    assert conn.peer_hello.pid != os.getpid() and conn.peer_hello.host == host_identity()
    assert conn.peer_hello.cuda_ipc is False
    assert "NONSENSE_CUDA_IPC=0" in conn.peer_hello.reason
    assert "NONSENSE_CUDA_IPC=0" in choose_transport(
        Hello(host_identity(), os.getpid(), True), conn.peer_hello).reason
    server.send("bye", conn)
    (child_hello,) = job.join(timeout=60)
    assert Hello.from_json(child_hello) == conn.peer_hello


# --- the descriptor -------------------------------------------------------------------------
def test_descriptor_round_trips_through_json():
    desc = _descriptor(event=bytes(range(64)), event_sync=True, offset=512)
    back = IpcHandle.from_json(json.loads(json.dumps(desc.to_json())))
    assert back == desc


@pytest.mark.parametrize(("field", "value", "match"), [
    ("ref_counter", "/etc/passwd", "ref_counter"),
    ("ref_counter_offset", 10000, "ref_counter_offset"),
    ("handle", "zz", "hex"),
    ("handle", "", "empty handle"),
    ("size", 0, "size"),
    ("size", -1, "size"),
    ("device", True, "device"),
    ("event_sync", 1, "event_sync"),
    ("uuid", 5, "uuid"),
])
def test_descriptor_validation(field, value, match):
    obj = _descriptor().to_json()
    obj[field] = value
    with pytest.raises(WireError, match=match):
        IpcHandle.from_json(obj)


def test_cuda_descriptor_without_a_handshake_is_a_wire_error():
    with pytest.raises(WireError, match="did not negotiate CUDA IPC"):
        frames.from_bytes(_value_frame(_ipc_tree(_descriptor())))


def test_staged_cuda_descriptor_says_host_transport():
    tree = json.loads(codec.encode(torch.ones(2)).header)
    assert "transport" not in tree  # CPU tensors: no transport
    if torch.cuda.is_available():
        tree = json.loads(codec.encode(torch.ones(2, device="cuda")).header)
        assert tree["transport"] == "host" and tree["device"] == "cuda:0"


# --- a receiver that cannot or must not open a handle -----------------------------------------
def _raw_peer(server, hello):
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(_control({"hello": hello.to_json()}))
    return raw


def test_handle_at_a_receiver_that_cannot_open_it_is_a_clear_error_and_a_nack(server):
    other_pid = os.getppid()  # another process of this host
    raw = _raw_peer(server, Hello(host_identity(), other_pid, True))
    with raw:
        raw.sendall(_value_frame(_ipc_tree(_descriptor())))
        with pytest.raises(CudaIpcError) as info:
            server.recv_any(timeout=10)
        if not torch.cuda.is_available():
            assert "does not take CUDA IPC" in str(info.value)
            assert "torch.cuda.is_available() is False" in str(info.value)
        flags, hello = _read_frame(raw)  # the server's hello comes first
        assert flags & codec.FLAG_CONTROL and hello["hello"]["pid"] == os.getpid()
        flags, nack = _read_frame(raw)
        assert flags & codec.FLAG_CONTROL
        assert nack["nack"]["frame"] == 7 and nack["nack"]["released"] == []
        assert "CUDA IPC" in nack["nack"]["error"]
        # The frame was read to its end: the connection is still usable.
        raw.sendall(frames.to_bytes("after"))
        assert server.recv_any(timeout=10) == "after"


def test_handle_from_another_host_is_refused(server):
    raw = _raw_peer(server, Hello("another-machine/x", 1234, True))
    with raw:
        raw.sendall(_value_frame(_ipc_tree(_descriptor(frame=3))))
        with pytest.raises(CudaIpcError, match="not another process of this host"):
            server.recv_any(timeout=10)
        _read_frame(raw)
        _, nack = _read_frame(raw)
        assert nack["nack"]["frame"] == 3


def test_handle_before_any_hello_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(_value_frame(_ipc_tree(_descriptor())))
        with pytest.raises(CudaIpcError, match="before its hello"):
            server.recv_any(timeout=10)


def test_malformed_descriptor_is_a_wire_error(server):
    raw = _raw_peer(server, Hello(host_identity(), os.getppid(), True))
    with raw:
        tree = _ipc_tree(_descriptor())
        tree["$cuda_ipc"]["ref_counter_offset"] = 10**9
        raw.sendall(_value_frame(tree))
        with pytest.raises(WireError, match="ref_counter_offset"):
            server.recv_any(timeout=10)
        assert server.connections == []  # a malformed frame closes that connection


def test_malformed_hello_is_a_wire_error(server):
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(_control({"hello": {"version": 1, "host": "h", "pid": "x",
                                        "cuda_ipc": True}}))
        raw.sendall(frames.to_bytes("never read"))
        with pytest.raises(WireError, match="malformed hello"):
            server.recv_any(timeout=10)


def test_control_frames_alone_do_not_make_a_client_ready(server):
    """A client that only said hello must not block recv_any on the others."""
    quiet = ipc.client("127.0.0.1", server.port)
    talker = ipc.client("127.0.0.1", server.port)
    server.clients(2, timeout=10)
    talker.send("from talker")
    assert server.recv_any(timeout=10) == "from talker"
    with pytest.raises(TimeoutError):
        server.recv_any(timeout=0.2)
    quiet.close()
    talker.close()


# --- real CUDA IPC between two processes (GPU hosts only) ------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_cuda_ipc_round_trip_between_two_processes(server):
    job = ipc.map(1, cuda_echo_child, server.port, "")
    conn = server.clients(1, timeout=60)[0]
    a = torch.arange(1_000_000, dtype=torch.float32, device="cuda")
    b = torch.arange(12, dtype=torch.int64, device="cuda").reshape(3, 4).T  # non-contiguous
    c = torch.ones(5, dtype=torch.bfloat16, device="cuda")
    expect = {"a": float(a.double().sum()), "b": float(b.double().sum()), "c": 5.0}
    server.send({"a": a, "b": b, "c": c}, conn, timeout=60)
    assert conn.last_transport.name == "cuda_ipc", conn.last_transport.reason
    a.zero_()  # value semantics: the receiver got a snapshot taken at send time
    reply = server.recv(conn, timeout=120)
    assert reply["sums"] == expect
    assert reply["devices"] == ["cuda:0"] * 3 and reply["contiguous"]
    assert reply["stats"]["cuda_ipc_received"] == 3
    back = reply["back"]  # came back by CUDA IPC too, as our own memory
    assert back.device.type == "cuda"
    assert torch.equal(back, torch.arange(1_000_000, dtype=torch.float32, device="cuda") * 2)
    conn.flush(timeout=60)
    assert conn.pending == 0
    assert conn.stats["cuda_ipc_sent"] == conn.stats["cuda_ipc_acked"] == 3
    assert conn.stats["cuda_ipc_received"] == 1
    server.send("done", conn)
    (child,) = job.join(timeout=120)
    assert child["transport"] == "cuda_ipc" and child["pending"] == 0
    assert child["stats"]["cuda_ipc_sent"] == child["stats"]["cuda_ipc_acked"] == 1


@pytest.mark.gpu
@needs_cuda
def test_cuda_opt_out_in_the_receiver_stages_through_the_host(server):
    job = ipc.map(1, cuda_echo_child, server.port, "0")
    conn = server.clients(1, timeout=60)[0]
    t = {"a": torch.arange(10.0, device="cuda"), "b": torch.ones(2, 2, device="cuda"),
         "c": torch.zeros(3, device="cuda")}
    server.send(t, conn, timeout=60)
    assert conn.last_transport.name == "host"
    assert "NONSENSE_CUDA_IPC=0" in conn.last_transport.reason
    reply = server.recv(conn, timeout=120)
    assert reply["sums"] == {"a": 45.0, "b": 4.0, "c": 0.0}
    assert reply["devices"] == ["cuda:0"] * 3
    assert reply["stats"]["cuda_ipc_received"] == 0
    assert conn.stats["cuda_staged_sent"] == 3 and conn.stats["cuda_ipc_sent"] == 0
    server.send("done", conn)
    (child,) = job.join(timeout=120)
    assert child["transport"] == "host"
