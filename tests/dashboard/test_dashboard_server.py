"""The dashboard server against a real Forwarder, Publisher and Supervisor."""

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from nonsense_hpc.dashboard import Dashboard, start_heartbeat
from nonsense_hpc.devices import Forwarder, Publisher
from nonsense_hpc.errors import ConfigError, DeviceError
from nonsense_hpc.supervise import ChildSpec, Supervisor


@pytest.fixture
def forwarder():
    fwd = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start("thread")
    yield fwd
    fwd.terminate()


@pytest.fixture
def dash(forwarder):
    d = Dashboard(forwarder.endpoints["out"], port=0).start()
    yield d
    d.stop()


def _get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _wait_state(dash, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    version = -1
    while time.monotonic() < deadline:
        snap = dash.snapshot()
        if pred(snap):
            return snap
        version = dash.state.wait_change(version, timeout=0.5)
    raise AssertionError(f"state never matched; last: {dash.snapshot()}")


def test_static_page_has_no_network_assets(dash):
    status, ctype, _body = _get(dash.url)
    assert status == 200 and ctype.startswith("text/html")
    for name in ("", "app.js", "style.css"):
        text = _get(dash.url + name)[2].decode()
        assert "http://" not in text and "https://" not in text, name
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(dash.url + "nope")
    assert info.value.code == 404
    assert _get(dash.url + "healthz")[2] == b"ok\n"


def test_metrics_heartbeats_and_supervisor_events_arrive(forwarder, dash):
    pub = Publisher(forwarder.endpoints["in"], job_id="t1")
    assert pub.wait_connected(10)
    beat = start_heartbeat(forwarder.endpoints["in"], every=0.2, rank=1, job_id="t1")
    sup = Supervisor(children=[ChildSpec(id="worker", start=["sleep", "60"],
                                         shutdown="brutal_kill")],
                     events=">" + forwarder.endpoints["in"], name="job", intensity=5)
    try:
        sup.start()
        pid = sup.which_children()[0].pid
        step = 0

        def fed(snap):
            nonlocal step
            step += 1
            pub.metric("train", {"loss": 1.0 / step, "accuracy": 1 - 1.0 / step}, step=step)
            return step > 3 and snap["step"] is not None and snap["ranks"]
        _wait_state(dash, fed)
        os.kill(pid, signal.SIGKILL)
        snap = _wait_state(dash, lambda s: any(e["kind"] == "restart" for e in s["events"])
                           and any(r["key"] == "1" and r["beats"] > 0 for r in s["ranks"]))
    finally:
        sup.stop()
        beat.stop()
        pub.close()
    assert snap["jobs"] == ["t1"]
    assert "train/loss" in snap["series"] and "train/accuracy" in snap["series"]
    crash = [e for e in snap["events"] if e["kind"] == "exit"]
    assert crash and crash[0]["level"] == "error" and "SIGKILL" in crash[0]["text"]
    hb = next(r for r in snap["ranks"] if r["key"] == "1")
    assert hb["rss"] > 1 << 20 and hb["pid"] == os.getpid()
    # the JSON endpoint serves the same snapshot
    served = json.loads(_get(dash.url + "api/state")[2])
    assert served["series"].keys() == snap["series"].keys()


def test_event_stream_pushes_snapshots(forwarder, dash):
    pub = Publisher(forwarder.endpoints["in"])
    assert pub.wait_connected(10)
    with urllib.request.urlopen(dash.url + "api/stream", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        seen_steps = []
        step = 0
        while len(seen_steps) < 3:
            step += 1
            pub.metric("train", {"loss": 0.1}, step=step)
            line = stream.readline().decode()
            if line.startswith("data: "):
                s = json.loads(line[6:])["step"]
                if s is not None and (not seen_steps or s > seen_steps[-1]):
                    seen_steps.append(s)
    pub.close()
    assert seen_steps == sorted(seen_steps)


def test_refusals(forwarder):
    with pytest.raises(ConfigError, match="public"):
        Dashboard(forwarder.endpoints["out"], host="0.0.0.0")
    with pytest.raises(ConfigError, match="needs an address"):
        Dashboard([])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DeviceError, match="cannot listen"):
            Dashboard(forwarder.endpoints["out"], port=port).start()


def test_malformed_messages_are_counted(forwarder, dash):
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.connect(forwarder.endpoints["in"])
    try:
        def poke(snap):
            sock.send_multipart([b"metrics.bad", b"{not json"])
            return snap["malformed"] > 0
        _wait_state(dash, poke)
    finally:
        sock.close(0)
        ctx.term()


def test_cli_serves_until_interrupted(forwarder):
    import re
    import select
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "nonsense_hpc", "dashboard", "--from",
                             forwarder.endpoints["out"], "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "the dashboard printed nothing within 30 s"
        line = proc.stderr.readline()
        url = re.search(r"http://\S+/", line).group(0)
        assert _get(url + "healthz")[2] == b"ok\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "nonsense_hpc", "dashboard", "--from",
                          forwarder.endpoints["out"], "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "public" in bad.stderr
