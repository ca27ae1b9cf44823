"""The parameter server and its client over real ZeroMQ sockets."""

import numpy as np
import pytest

from nonsense_hpc import wire
from nonsense_hpc.errors import ConfigError, DeviceError
from nonsense_hpc.psgd import ParameterServer, PSClient, ServerTimeoutError
from nonsense_hpc.trace import Message, Trace


@pytest.fixture
def server():
    ps = ParameterServer(np.zeros(8, np.float32), lr=0.5, max_staleness=1, max_updates=5,
                         trace=True).start()
    yield ps
    ps.stop()


def test_push_applies_and_returns_new_parameters(server):
    with PSClient(server.address, worker=0) as c:
        params, v = c.pull()
        assert v == 0 and np.all(params == 0)
        ack = c.push(np.ones(8, np.float32), v, samples=32)
        assert (ack.accepted, ack.staleness, ack.version, ack.stop) == (True, 0, 1, False)
        assert np.allclose(ack.params, -0.5)
        ack = c.push(np.ones(8, np.float32), 1, pull=False)
        assert ack.params is None and ack.version == 2
    st = server.stats()
    assert st["samples"] == 32 and st["workers"]["0"]["accepted"] == 2


def test_stale_gradients_are_dropped_and_counted(server):
    with PSClient(server.address, worker=0) as a, PSClient(server.address, worker=1) as b:
        _, v = a.pull()
        a.push(np.ones(8, np.float32), v)          # version 1
        a.push(np.ones(8, np.float32), 1)          # version 2
        ack = b.push(np.ones(8, np.float32), v)    # computed on 0: staleness 2 > 1
        assert not ack.accepted and ack.staleness == 2 and ack.version == 2
        assert np.allclose(ack.params, -1.0)       # fresh parameters to go on with
    st = server.stats()
    assert st["dropped"] == 1 and st["staleness"] == {"0": 2, "2": 1}


def test_update_budget_says_stop(server):
    with PSClient(server.address, worker=0) as c:
        _, v = c.pull()
        acks = []
        for _ in range(6):
            acks.append(c.push(np.zeros(8, np.float32), v))
            v = acks[-1].version
        assert [a.stop for a in acks] == [False] * 4 + [True, True]
        assert acks[-1].version == 5 and not acks[-1].accepted


def test_inverse_staleness_scaling():
    with ParameterServer(np.zeros(2, np.float32), lr=1.0, staleness_lr="inverse") as ps, \
            PSClient(ps.address, worker=0) as c:
        c.push(np.ones(2, np.float32), 0)
        ack = c.push(np.ones(2, np.float32), 0)     # staleness 1: half a step
        assert np.allclose(ack.params, -1.5)


def test_bad_requests_are_refused_with_reasons(server):
    with PSClient(server.address, worker=0) as c:
        with pytest.raises(ConfigError, match="float32 'grad' of 8 values"):
            c.push(np.ones(3, np.float32), 0)
        with pytest.raises(ConfigError, match="version"):
            c.push(np.ones(8, np.float32), 99)
        with pytest.raises(ConfigError, match="unknown request"):
            c._call("ps.bogus", {})
        assert c.pull()[1] == 0  # the server is still serving


def test_garbage_frames_do_not_kill_the_server(server):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(server.address)
    s.send_multipart([b"not", b"{json"])
    assert s.poll(5000)
    reply = wire.decode(s.recv_multipart())
    assert reply.topic == "ps.error"
    s.close(0)
    ctx.term()
    with PSClient(server.address, worker=0) as c:
        assert c.pull()[1] == 0


def test_dead_server_times_out_clearly():
    ps = ParameterServer(np.zeros(2, np.float32)).start()
    addr = ps.address
    ps.stop()
    with PSClient(addr, worker=0, timeout=0.5) as c, \
            pytest.raises(ServerTimeoutError, match=r"did not answer ps\.pull within 0\.5 s"):
        c.pull()
    assert issubclass(ServerTimeoutError, TimeoutError)


def test_stop_request_and_trace(server):
    with PSClient(server.address, worker=7, trace=True) as c:
        _, v = c.pull()
        c.push(np.ones(8, np.float32), v)
        final = c.stop_server()
        log = c.log
    assert final["version"] == 1 and server.wait(5)
    t = Trace(log.events + server.log.events)
    arrows = {(m.sender, m.receiver, m.op) for m in t.sequence() if isinstance(m, Message)}
    assert ("worker 7", "server", "push") in arrows
    assert ("server", "worker 7", "params") in arrows


def test_invalid_settings():
    with pytest.raises(ConfigError, match="max_staleness"):
        ParameterServer(np.zeros(2), max_staleness=-1)
    with pytest.raises(ConfigError, match="staleness_lr"):
        ParameterServer(np.zeros(2), staleness_lr="sqrt")
    with pytest.raises(ConfigError, match="at least one parameter"):
        ParameterServer(np.zeros(0))
    with pytest.raises(ConfigError, match="public"):
        ParameterServer(np.zeros(2), address="tcp://0.0.0.0:*")
    a = ParameterServer(np.zeros(2)).start()
    try:
        with pytest.raises(DeviceError, match="cannot bind"):
            ParameterServer(np.zeros(2), address=a.address).start()
    finally:
        a.stop()
