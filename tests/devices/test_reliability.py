"""Reliability with real processes: device restart, slow subscribers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import zmq
from helpers import socket

from nonsense_hpc import wire
from nonsense_hpc.devices import Forwarder

PUBLISHER = Path(__file__).with_name("publisher_proc.py")


def _receive(sub, tracker, count, timeout):
    deadline = time.monotonic() + timeout
    got = 0
    while got < count:
        left = deadline - time.monotonic()
        if left <= 0 or not sub.poll(int(left * 1000)):
            raise TimeoutError(f"received {got} of {count}")
        msg = wire.decode(sub.recv_multipart())
        if msg.source == "pub-proc":
            tracker.observe(msg)
            got += 1
    return got


def test_forwarder_restart_mid_stream_clients_reconnect_loss_counted(tmp_path):
    ins, outs = f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out"
    fwd = Forwarder(ins, outs).start("process")
    proc = subprocess.Popen([sys.executable, str(PUBLISHER), ins, "0.002"],
                            stdout=subprocess.PIPE, text=True)
    sub = socket(zmq.SUB, subscribe="metrics.")
    sub.setsockopt(zmq.RECONNECT_IVL, 20)
    sub.connect(outs)
    tracker = wire.SequenceTracker()
    try:
        assert proc.stdout.readline().strip() == "up"
        _receive(sub, tracker, 50, timeout=30)
        lost_before = tracker.lost  # messages sent before we subscribed
        fwd.kill()  # SIGKILL: a crash, no goodbye to anyone
        assert not fwd.is_alive()
        fwd = Forwarder(ins, outs).start("process")  # same addresses, fresh process
        _receive(sub, tracker, 50, timeout=30)  # both sides came back by themselves
    finally:
        proc.kill()
        proc.wait()
        fwd.terminate()
        sub.close()
    last_seq = tracker.last["pub-proc"]
    assert tracker.restarts == 0 and tracker.duplicates == 0
    assert tracker.lost - lost_before > 0  # messages published while the hub was down
    # every sequence number is either received or counted as lost
    assert tracker.received + tracker.lost == last_seq + 1


def test_slow_subscriber_never_blocks_publisher_drops_counted():
    n, size = 3000, 4096
    with Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", hwm=50).start("process") as fwd:
        fast = socket(zmq.SUB, connect=fwd.endpoints["out"], subscribe="data")
        slow = socket(zmq.SUB, subscribe="data")
        slow.setsockopt(zmq.RCVHWM, 50)
        slow.setsockopt(zmq.RCVBUF, 65536)
        slow.connect(fwd.endpoints["out"])
        pub = socket(zmq.PUB, connect=fwd.endpoints["in"])
        pub.setsockopt(zmq.SNDHWM, 0)
        # both subscriptions must have reached the publisher before the stream starts
        deadline = time.monotonic() + 10
        seen = {"fast": False, "slow": False}
        while not all(seen.values()) and time.monotonic() < deadline:
            wire.send(pub, "data.probe", kind="control", source="probe")
            for name, s in (("fast", fast), ("slow", slow)):
                while s.poll(10):
                    s.recv_multipart()
                    seen[name] = True
        assert all(seen.values())
        enc = wire.Encoder(source="stream")
        payload = {"pad": "x" * size}
        fast_tracker = wire.SequenceTracker()
        t0 = time.monotonic()
        for batch in range(n // 20):
            for _ in range(20):
                enc.send(pub, "data.x", payload)
            # the fast subscriber keeps up; the slow one reads nothing at all
            while fast_tracker.received < (batch + 1) * 20:
                assert fast.poll(10000), "fast subscriber starved: the device is blocked"
                fast_tracker.observe(wire.decode(fast.recv_multipart()))
        elapsed = time.monotonic() - t0
        assert fast_tracker.received == n and fast_tracker.lost == 0
        slow_tracker = wire.SequenceTracker()
        while slow.poll(500):
            msg = wire.decode(slow.recv_multipart())
            if msg.source == "stream":
                slow_tracker.observe(msg)
        delivered = slow_tracker.received
        assert n - delivered > n // 2  # dropped at the high-water marks, not queued
        # once it reads again, the next message it gets reveals the gap: drops are counted
        deadline = time.monotonic() + 10
        while slow_tracker.received == delivered and time.monotonic() < deadline:
            enc.send(pub, "data.x", {"end": True})
            if slow.poll(20):
                slow_tracker.observe(wire.decode(slow.recv_multipart()))
        last = slow_tracker.last["stream"]
        assert slow_tracker.lost > 0
        assert slow_tracker.received + slow_tracker.lost == last + 1
        assert elapsed < 60
        for s in (fast, slow, pub):
            s.close()
