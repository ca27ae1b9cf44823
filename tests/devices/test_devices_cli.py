"""The CLI: forwarder/broker processes, keys, feed with progress, watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import zmq
from helpers import socket

from nonsense_hpc import wire
from nonsense_hpc.cli.main import main
from nonsense_hpc.devices import BrokerWorker, Forwarder, Streamer

CLI = [sys.executable, "-m", "nonsense_hpc.cli.main"]


def _start(args):
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(proc.stderr.read())
    return proc, json.loads(line)


def test_help_teaches_every_command(capsys):
    for cmd in ("forwarder", "streamer", "broker", "watch", "feed", "keys"):
        assert main([cmd, "--help"]) == 0
        out = capsys.readouterr().out
        assert "Example" in out or cmd == "keys"
    assert main(["bench", "devices", "--help"]) == 0


def test_forwarder_cli_runs_and_stops_on_sigterm(tmp_path):
    proc, ready = _start(["forwarder", "--in", f"ipc://{tmp_path}/in",
                          "--out", f"ipc://{tmp_path}/out"])
    try:
        assert ready["device"] == "forwarder" and ready["in"] == f"ipc://{tmp_path}/in"
        sub = socket(zmq.SUB, connect=ready["out"], subscribe="")
        pub = socket(zmq.PUB, connect=ready["in"])
        deadline = time.monotonic() + 10
        while not sub.poll(20) and time.monotonic() < deadline:
            wire.send(pub, "x", {"ok": 1})
        assert wire.decode(sub.recv_multipart()).data == {"ok": 1}
        sub.close()
        pub.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_forwarder_cli_refuses_public_bind_and_bad_address():
    out = subprocess.run([*CLI, "forwarder", "--in", "tcp://*:5559"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "127.0.0.1" in out.stderr
    out = subprocess.run([*CLI, "streamer", "--out", "udp://x"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "must start with" in out.stderr


def test_keys_generate(tmp_path, capsys):
    assert main(["keys", "generate", str(tmp_path / "k"), "--client", "alice"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert os.path.exists(paths["alice_secret"]) and os.path.exists(paths["server"])
    assert main(["keys", "generate", str(tmp_path / "k")]) == 1
    assert "already holds" in capsys.readouterr().err


def _serve_squares(worker, stop):
    while not stop.is_set():
        task = worker.get(timeout=0.1)
        if task is not None:
            worker.reply(task, {"y": task.data["x"] ** 2})


def test_feed_through_broker_cli_reports_results(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "x": i}) + "\n" for i in range(25)))
    sink_port = socket(zmq.PULL)
    port = sink_port.bind_to_random_port("tcp://127.0.0.1")
    sink_port.close()  # a free port for feed's sink (the broker connects to it)
    broker, ready = _start(["broker", "--in", "tcp://127.0.0.1:*", "--workers",
                            "tcp://127.0.0.1:*", "--results", f"tcp://127.0.0.1:{port}",
                            "--heartbeat", "0.2"])
    stop = threading.Event()
    worker = BrokerWorker(ready["workers"], heartbeat=0.2)
    thread = threading.Thread(target=_serve_squares, args=(worker, stop))
    thread.start()
    try:
        out = subprocess.run([*CLI, "feed", str(tasks), "--to", ready["in"], "--results",
                              str(port), "--timeout", "60"],
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        results = [json.loads(line) for line in out.stdout.splitlines()]
        assert {r["task_id"]: r["data"]["y"] for r in results} == {f"t{i}": i * i
                                                                  for i in range(25)}
        assert "results" in out.stderr and "25/25" in out.stderr  # progress bar
        summary = json.loads(out.stderr.strip().splitlines()[-1])
        assert summary["sent"] == summary["results"] == 25
    finally:
        stop.set()
        thread.join()
        worker.close()
        broker.send_signal(signal.SIGINT)
        broker.wait(15)


def test_feed_rejects_bad_file_before_sending(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n{oops\n')
    with Streamer("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start() as st:
        out = subprocess.run([*CLI, "feed", str(bad), "--to", st.endpoints["in"]],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "bad.jsonl:2" in out.stderr
        assert st.stats()["frames"] == 0
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1}\n{"id": 1}\n')
    out = subprocess.run([*CLI, "feed", str(dup), "--to", "tcp://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "already used on line 1" in out.stderr


def test_feed_with_no_device_times_out(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text('{"x": 1}\n')
    out = subprocess.run([*CLI, "feed", str(one), "--to", "tcp://127.0.0.1:9", "--timeout", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no device at tcp://127.0.0.1:9" in out.stderr


def test_watch_renders_metrics_and_events(tmp_path):
    with Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start() as fwd:
        proc = subprocess.Popen([*CLI, "watch", fwd.endpoints["out"], "--count", "30",
                                 "--refresh", "0.2", "--duration", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "160"})
        pub = socket(zmq.PUB, connect=fwd.endpoints["in"])
        enc = wire.Encoder(rank=1, job_id="j")
        step = 0
        try:
            while proc.poll() is None and step < 5000:
                enc.send(pub, "metrics.loss", {"loss": 0.5}, step=step)
                enc.send(pub, "events.checkpoint", {"path": "/c"}, kind="event", step=step)
                step += 1
                try:
                    proc.wait(timeout=0.01)
                except subprocess.TimeoutExpired:
                    pass
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            pub.close()
    assert proc.returncode == 0, err
    assert "metrics.loss" in out and "loss=0.5" in out and "events.checkpoint" in out
    assert "received 30" in out
