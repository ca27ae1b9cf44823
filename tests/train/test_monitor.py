"""The run monitor: a real supervised Forwarder and recorder; a killed Forwarder comes back
on the same address; stopping leaves no process."""

import os
import signal
import time

import pytest

from nonsense_hpc.devices import Publisher
from nonsense_hpc.supervise import request
from nonsense_hpc.train.monitor import read_messages, start_monitor, stop_monitor


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _publish_until_recorded(directory, address, step, timeout=20.0):
    """PUB/SUB drops messages until the subscription arrives: publish until one lands."""
    with Publisher(address) as pub:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pub.metric("train", {"loss": 0.5}, step=step)
            if any(m.get("step") == step for m in read_messages(directory)):
                return
            time.sleep(0.05)
    raise AssertionError(f"step {step} never reached the recorder in {timeout} s")


def _children(info):
    status = request(info["control"], "status", timeout=10)
    return {c["id"]: c["pid"] for c in status["children"]}


@pytest.fixture
def monitor(tmp_path):
    info = start_monitor(tmp_path / "mon", timeout=60)
    yield tmp_path / "mon", info
    stop_monitor(tmp_path / "mon")
    assert not _alive(info["pid"])


def test_forwards_and_records(monitor):
    directory, info = monitor
    assert info["in"].startswith("tcp://127.0.0.1:")
    assert start_monitor(directory)["pid"] == info["pid"]  # idempotent: same monitor
    _publish_until_recorded(directory, info["in"], step=1)
    rec = next(m for m in read_messages(directory) if m.get("step") == 1)
    assert rec["topic"] == "metrics.train" and rec["data"] == {"loss": 0.5}


def test_killed_forwarder_is_restarted_on_the_same_address(monitor):
    directory, info = monitor
    before = _children(info)
    os.kill(before["forwarder"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        now = _children(info)
        if now["forwarder"] and now["forwarder"] != before["forwarder"]:
            break
        assert time.monotonic() < deadline, f"forwarder not restarted: {now}"
        time.sleep(0.05)
    _publish_until_recorded(directory, info["in"], step=2)


def test_stop_without_monitor_is_a_no_op(tmp_path):
    assert stop_monitor(tmp_path) is False
