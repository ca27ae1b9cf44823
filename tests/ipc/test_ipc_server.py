"""Client-server over real TCP sockets on loopback."""

import socket
import threading

import numpy as np
import pytest
import torch

from nonsense_hpc import ipc
from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import frames


def test_seed_readme_example(server):
    client = ipc.client("127.0.0.1", server.port)
    client.send("hi")
    msg = server.recv_any(timeout=10)
    assert msg == "hi"
    client.close()


def test_primitives_and_tensors_both_ways(server):
    with ipc.client("127.0.0.1", server.port) as client:
        value = {"a": [None, True, 3, 2.5, "s", b"b"], "t": torch.randn(64, 32)[:, ::2],
                 "n": np.arange(10, dtype=np.int16)}
        client.send(value)
        got = server.recv(timeout=10)
        assert torch.equal(got["t"], value["t"]) and np.array_equal(got["n"], value["n"])
        assert got["a"] == value["a"]
        server.send(got)
        back = client.recv(timeout=10)
        assert torch.equal(back["t"], value["t"])


def test_large_tensor_is_not_truncated(server):
    big = torch.arange(3 * 1024 * 1024, dtype=torch.float64)  # 24 MiB
    with ipc.client("127.0.0.1", server.port) as client:
        thread = threading.Thread(target=client.send, args=(big,))
        thread.start()
        got = server.recv_any(timeout=30)
        thread.join(timeout=30)
        assert torch.equal(got, big)


def test_recv_any_from_whichever_client_speaks(server):
    c1 = ipc.client("127.0.0.1", server.port)
    c2 = ipc.client("127.0.0.1", server.port)
    server.clients(2, timeout=10)
    c2.send("two")
    value, conn = server.recv_any(timeout=10, return_client=True)
    assert value == "two" and conn.id == 2
    c1.send("one")
    assert server.recv_any(timeout=10) == "one"
    c1.close()
    c2.close()


def test_broadcast_reaches_every_client(server):
    clients = [ipc.client("127.0.0.1", server.port) for _ in range(3)]
    seen = []
    server.clients(3, lambda c: seen.append(c.id), timeout=10)
    assert seen == [1, 2, 3]
    assert server.broadcast({"w": torch.ones(4)}) == 3
    for c in clients:
        assert torch.equal(c.recv(timeout=10)["w"], torch.ones(4))
        c.close()


def test_unsupported_type_raises_before_anything_is_sent(server):
    with ipc.client("127.0.0.1", server.port) as client:
        with pytest.raises(TypeError):
            client.send(["fine", object()])
        server.clients(1, timeout=10)
        with pytest.raises(TypeError):
            server.broadcast({"x": {1, 2}})
        assert not server.connections[0].poll(0.1)  # nothing reached the server
        client.send("next")
        assert server.recv_any(timeout=10) == "next"  # the stream is intact


def test_timeouts(server):
    with ipc.client("127.0.0.1", server.port) as client:
        with pytest.raises(TimeoutError):
            server.recv_any(timeout=0.2)
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.2)
        client.send(1)  # still usable after a timeout
        assert server.recv_any(timeout=10) == 1
    with pytest.raises(TimeoutError):
        server.clients(5, timeout=0.2)


def test_peer_going_away(server):
    client = ipc.client("127.0.0.1", server.port)
    conn = server.clients(1, timeout=10)[0]
    client.close()
    with pytest.raises(ConnectionError):
        conn.recv(timeout=10)
    with pytest.raises(TimeoutError):  # recv_any drops the dead client and keeps waiting
        server.recv_any(timeout=0.2)


def test_server_needs_a_client_argument_with_several_clients(server):
    c1 = ipc.client("127.0.0.1", server.port)
    c2 = ipc.client("127.0.0.1", server.port)
    server.clients(2, timeout=10)
    with pytest.raises(ValueError, match="client="):
        server.send("x")
    c1.close()
    c2.close()


def test_garbage_from_a_raw_socket_is_a_wire_error(server):
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
    with pytest.raises(WireError):
        server.recv_any(timeout=10)
    raw.close()


def test_client_gives_up_when_nobody_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="cannot connect"):
        ipc.client("127.0.0.1", port, timeout=0.3)


def test_bad_port():
    with pytest.raises(ValueError):
        ipc.server("127.0.0.1", 70000)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_cuda_tensor_is_staged_and_lands_on_the_device(server):
    t = torch.arange(10.0, device="cuda")
    with ipc.client("127.0.0.1", server.port) as client:
        client.send({"t": t})
        got = server.recv_any(timeout=30)
    assert got["t"].device == t.device and torch.equal(got["t"], t)


def test_back_to_back_messages_are_not_lost_in_read_ahead(server):
    c1 = ipc.client("127.0.0.1", server.port)
    c2 = ipc.client("127.0.0.1", server.port)
    for i in range(50):
        c1.send(i)
    c2.send("c2")
    got = [server.recv_any(timeout=10) for _ in range(51)]
    assert sorted(x for x in got if isinstance(x, int)) == list(range(50))
    assert "c2" in got
    c1.close()
    c2.close()


def test_send_to_a_peer_that_does_not_read_times_out_and_closes(server):
    client = ipc.client("127.0.0.1", server.port)
    server.clients(1, timeout=10)  # connected, but the server never reads
    big = torch.zeros(16 * 1024**2)  # 64 MiB: more than the socket buffers hold
    with pytest.raises(TimeoutError, match=r"did not accept a message within 0\.3 s"):
        client.send(big, timeout=0.3)
    assert client.closed
    with pytest.raises(ConnectionError, match="closed"):
        client.send(1)


def test_a_message_that_stalls_half_way_times_out_and_closes(server):
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        conn = server.clients(1, timeout=10)[0]
        raw.sendall(frames.to_bytes(torch.arange(1000))[:100])  # the rest never comes
        with pytest.raises(TimeoutError, match="stalled"):
            conn.recv(timeout=0.3)
        assert conn.closed


def test_large_message_with_a_timeout_arrives_whole(server):
    with ipc.client("127.0.0.1", server.port) as client:
        conn = server.clients(1, timeout=10)[0]
        t = torch.randn(8 * 1024**2)  # 32 MiB, read straight into the tensor in pieces
        sender = threading.Thread(target=lambda: [client.send(t), client.send("after")])
        sender.start()
        assert torch.equal(conn.recv(timeout=30), t)
        assert conn.recv(timeout=30) == "after"
        sender.join(timeout=30)


def test_clients_that_connect_later_are_accepted_by_send_and_broadcast(server):
    c1 = ipc.client("127.0.0.1", server.port)
    server.clients(1, timeout=10)
    c2 = ipc.client("127.0.0.1", server.port)  # waits in the listener's queue
    assert server.broadcast("to all", timeout=10) == 2
    assert c1.recv(timeout=10) == "to all" and c2.recv(timeout=10) == "to all"
    c1.close()
    c2.close()
