"""Forwarder and Streamer with real sockets, in threads and processes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq
from helpers import drain, socket, wait_subscribed

from nonsense_hpc import wire
from nonsense_hpc.devices import DeviceControl, Forwarder, Streamer
from nonsense_hpc.errors import ConfigError, DeviceError

ANY = "tcp://127.0.0.1:*"


@pytest.mark.parametrize("launcher", ["thread", "process"])
def test_forwarder_fans_out_and_counts(launcher):
    with Forwarder(ANY, ANY).start(launcher) as fwd:
        assert fwd.is_alive() and fwd.pid
        subs = [socket(zmq.SUB, connect=fwd.endpoints["out"], subscribe="") for _ in range(2)]
        pub = socket(zmq.PUB, connect=fwd.endpoints["in"])
        for sub in subs:
            wait_subscribed(pub, sub)
        before = fwd.stats()
        enc = wire.Encoder(rank=0)
        arr = np.arange(1000, dtype=np.float32)
        for step in range(20):
            enc.send(pub, "tensors.w", step=step, kind="tensor", arrays=arr)
        for sub in subs:
            got = [wire.decode(f) for f in drain(sub)]
            got = [m for m in got if m.topic == "tensors.w"]
            assert [m.step for m in got] == list(range(20))
            np.testing.assert_array_equal(got[-1].array, arr)
        after = fwd.stats()
        assert after["device"] == "forwarder" and after["state"] == "running"
        # 20 messages of 3 frames each went in and out; the proxy counted them in libzmq
        assert after["frontend"]["frames_in"] - before["frontend"]["frames_in"] == 60
        assert after["bytes"] - before["bytes"] > 20 * arr.nbytes
        assert after["out_connections"] == 2 and after["in_connections"] == 1
        for s in (*subs, pub):
            s.close()
    assert not fwd.is_alive()


@pytest.mark.parametrize("launcher", ["thread", "process"])
def test_streamer_load_balances_tasks(launcher):
    with Streamer(ANY, ANY).start(launcher) as st:
        workers = [socket(zmq.PULL, connect=st.endpoints["out"]) for _ in range(2)]
        feeder = socket(zmq.PUSH, connect=st.endpoints["in"])
        # both workers connected before the first task, so the split is exact
        deadline = time.monotonic() + 10
        while st.stats()["out_connections"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(40):
            wire.send(feeder, "tasks", {"i": i}, kind="task", task_id=str(i))
        got = [[wire.decode(f).task_id for f in drain(w)] for w in workers]
        assert sorted(int(t) for g in got for t in g) == list(range(40))
        assert all(len(g) == 20 for g in got)  # round-robin over two ready workers
        for s in (*workers, feeder):
            s.close()


def test_pause_and_resume_hold_messages():
    with Forwarder(ANY, ANY).start() as fwd:
        sub = socket(zmq.SUB, connect=fwd.endpoints["out"], subscribe="data")
        pub = socket(zmq.PUB, connect=fwd.endpoints["in"])
        wait_subscribed(pub, sub, topic="data.probe")
        fwd.pause()
        assert fwd.stats()["state"] == "paused"
        wire.send(pub, "data.x", {"n": 1})
        # held inside the device while paused (late probes may still arrive)
        assert all(f[0] != b"data.x" for f in drain(sub, idle=0.3))
        fwd.resume()
        assert wire.recv(sub, timeout=5).data == {"n": 1}
        sub.close()
        pub.close()


def test_control_socket_rejects_unknown_commands_and_survives():
    with Forwarder(ANY, ANY).start() as fwd:
        ctl = DeviceControl(fwd.endpoints["control"], timeout=5)
        for bad in ("BOGUS", "", "\xff"):
            with pytest.raises(DeviceError, match="unknown command"):
                ctl.request(bad)
        assert ctl.request("stats")["ok"]  # alias, and the device is still alive


def test_dead_control_address_times_out():
    ctl = DeviceControl("tcp://127.0.0.1:9", timeout=0.3)
    with pytest.raises(DeviceError, match="no reply"):
        ctl.stats()


def test_validating_forwarder_drops_and_counts_malformed_and_oversized():
    key = b"k" * 16
    with Forwarder(ANY, ANY, validate=True, max_bytes=4096, hmac_key=key).start() as fwd:
        sub = socket(zmq.SUB, connect=fwd.endpoints["out"], subscribe="")
        pub = socket(zmq.PUB, connect=fwd.endpoints["in"])
        deadline = time.monotonic() + 10
        while not sub.poll(20) and time.monotonic() < deadline:
            wire.send(pub, "probe", hmac_key=key)
        drain(sub)
        pub.send_multipart([b"t", b"not json"])                       # malformed
        pub.send_multipart([b"t", b"[]"])                             # malformed
        wire.send(pub, "t", {"unsigned": True})                        # no signature
        pub.send_multipart([b"t", b"{}", b"x" * 3000, b"y" * 3000])   # oversized in total
        wire.send(pub, "good", {"ok": 1}, hmac_key=key)
        got = [wire.decode(f, hmac_key=key) for f in drain(sub)]
        assert [m.topic for m in got] == ["good"]
        stats = fwd.stats()
        assert stats["dropped_malformed"] == 3 and stats["dropped_oversized"] == 1
        sub.close()
        pub.close()


def test_oversized_frame_is_dropped_by_libzmq_and_device_keeps_going():
    with Forwarder(ANY, ANY, max_bytes=2048).start() as fwd:
        sub = socket(zmq.SUB, connect=fwd.endpoints["out"], subscribe="")
        pub = socket(zmq.PUB, connect=fwd.endpoints["in"])
        wait_subscribed(pub, sub)
        pub.send_multipart([b"big", b"z" * 10000])
        deadline = time.monotonic() + 10
        while fwd.stats()["in_disconnects"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fwd.stats()["in_disconnects"] == 1
        wait_subscribed(pub, sub)  # the publisher reconnected by itself
        assert all(f[0] != b"big" for f in drain(sub))
        sub.close()
        pub.close()


def test_devices_bind_loopback_unless_told_otherwise():
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1"):
        Forwarder("tcp://*:5559", ANY)
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1"):
        Streamer(ANY, "tcp://0.0.0.0:5558")
    assert Forwarder("5559", "5560").in_addr == "tcp://127.0.0.1:5559"
    assert Forwarder("tcp://0.0.0.0:5559", ANY, public=True).in_addr == "tcp://0.0.0.0:5559"
    with pytest.raises(ConfigError, match="must start with"):
        Forwarder("http://x:1", ANY)


def test_bind_conflict_is_a_clear_error():
    with Forwarder(ANY, ANY).start() as fwd:
        with pytest.raises(DeviceError, match="cannot bind"):
            Forwarder(fwd.endpoints["in"], ANY).start("thread")
        with pytest.raises(DeviceError, match="cannot bind"):
            Streamer(fwd.endpoints["out"], ANY).start("process")


def test_ipc_transport(tmp_path):
    with Streamer(f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out").start() as st:
        w = socket(zmq.PULL, connect=st.endpoints["out"])
        f = socket(zmq.PUSH, connect=st.endpoints["in"])
        wire.send(f, "t", {"x": 1}, kind="task")
        assert wire.recv(w, timeout=5).data == {"x": 1}
        w.close()
        f.close()
