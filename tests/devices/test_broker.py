"""The reliable broker: acknowledgements, heartbeats, re-dispatch, exactly-once sink."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from helpers import socket

from nonsense_hpc import wire
from nonsense_hpc.devices.broker import Broker
from nonsense_hpc.devices.sink import Sink
from nonsense_hpc.devices.worker import BrokerWorker
from nonsense_hpc.errors import ConfigError

ANY = "tcp://127.0.0.1:*"
HB = 0.1
WORKER = Path(__file__).with_name("broker_worker_proc.py")


def _feed(address, tasks):
    push = socket(zmq.PUSH, connect=address)
    push.setsockopt(zmq.LINGER, 5000)
    for i, data in tasks:
        wire.send(push, "tasks.square", data, kind="task", task_id=str(i))
    push.close()


def _serve(worker, stop):
    while not stop.is_set():
        task = worker.get(timeout=0.1)
        if task is not None:
            worker.reply(task, {"y": task.data["x"] ** 2})


def test_tasks_flow_through_threads_exactly_once():
    with Sink(ANY) as sink, Broker(ANY, ANY, sink.address, heartbeat=HB).start() as broker:
        stop = threading.Event()
        workers = [BrokerWorker(broker.endpoints["workers"], heartbeat=HB) for _ in range(2)]
        threads = [threading.Thread(target=_serve, args=(w, stop)) for w in workers]
        for t in threads:
            t.start()
        _feed(broker.endpoints["in"], [(i, {"x": i}) for i in range(200)])
        results = sink.collect(200, timeout=30)
        assert {k: m.data["y"] for k, m in results.items()} == {str(i): i * i
                                                                for i in range(200)}
        stats = broker.stats()
        assert stats["tasks_in"] == stats["results"] == 200 and stats["redispatched"] == 0
        stop.set()
        for t in threads:
            t.join()
        for w in workers:
            w.close()


def test_malformed_tasks_are_counted_and_dropped():
    with Sink(ANY) as sink, Broker(ANY, ANY, sink.address, heartbeat=HB).start() as broker:
        push = socket(zmq.PUSH, connect=broker.endpoints["in"])
        push.send_multipart([b"x", b"garbage"])
        wire.send(push, "tasks", {"no": "id"}, kind="task")  # a task needs a task_id
        wire.send(push, "tasks", {"x": 3}, kind="task", task_id="ok")
        with BrokerWorker(broker.endpoints["workers"], heartbeat=HB) as w:
            task = w.get(timeout=10)
            assert task is not None and task.task_id == "ok"
            w.reply(task, {"y": 9})
            assert sink.recv(timeout=10).data == {"y": 9}
        stats = broker.stats()
        assert stats["dropped_malformed"] == 2 and stats["tasks_in"] == 1
        push.close()


def test_silent_worker_tasks_are_redispatched():
    with Sink(ANY) as sink, Broker(ANY, ANY, sink.address, heartbeat=HB).start() as broker:
        # a raw DEALER that takes a task and then goes silent (no heartbeats, no result)
        rogue = socket(zmq.DEALER, connect=broker.endpoints["workers"])
        rogue.send_multipart(wire.encode("ready", {"cmd": "ready"}, kind="control"))
        deadline = time.monotonic() + 10
        while broker.stats()["idle_workers"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        _feed(broker.endpoints["in"], [("t1", {"x": 4})])
        frames = None
        while frames is None and rogue.poll(5000):
            msg = wire.decode(rogue.recv_multipart())
            frames = msg if msg.kind == "task" else None
        assert frames is not None and frames.task_id == "t1"
        t0 = time.monotonic()
        with BrokerWorker(broker.endpoints["workers"], heartbeat=HB) as good:
            task = good.get(timeout=10)
            assert task is not None and task.task_id == "t1"
            redispatch = time.monotonic() - t0
            good.reply(task, {"y": 16})
            assert sink.recv(timeout=10).data == {"y": 16}
            # the rogue wakes up and answers late: dropped as a duplicate
            rogue.send_multipart(wire.encode("results", {"y": 16}, kind="result",
                                             task_id="t1"))
            deadline = time.monotonic() + 10
            while broker.stats()["duplicates"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        stats = broker.stats()
        assert stats["workers_lost"] >= 1 and stats["redispatched"] == 1
        assert stats["duplicates"] == 1 and stats["results"] == 1
        assert redispatch < 10 * HB * 3 + 2
        assert sink.recv(timeout=0.2) is None
        rogue.close()


def test_kill_worker_processes_repeatedly_every_result_exactly_once():
    n_tasks, kills = 120, 5
    rng = random.Random(4)
    with Sink(ANY) as sink, Broker(ANY, ANY, sink.address, heartbeat=HB).start(
            "process") as broker:
        def spawn():
            proc = subprocess.Popen([sys.executable, str(WORKER), broker.endpoints["workers"],
                                     str(HB)], stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "up"
            return proc
        procs = [spawn() for _ in range(3)]
        try:
            _feed(broker.endpoints["in"], [(i, {"x": i, "ms": 15}) for i in range(n_tasks)])
            got: dict[str, wire.Message] = {}
            deadline = time.monotonic() + 90
            for k in range(kills):
                target = (k + 1) * n_tasks // (kills + 2)
                while len(got) < target and time.monotonic() < deadline:
                    msg = sink.recv(timeout=1.0)
                    if msg is not None:
                        got[msg.task_id] = msg
                victim = procs.pop(rng.randrange(len(procs)))
                victim.kill()  # SIGKILL, mid-task: no goodbye, no result
                victim.wait()
                procs.append(spawn())
            got.update(sink.collect(n_tasks - len(got), timeout=60))
        finally:
            for p in procs:
                p.kill()
                p.wait()
        assert sorted(got, key=int) == [str(i) for i in range(n_tasks)]
        assert all(m.data["y"] == int(k) ** 2 for k, m in got.items())
        deadline = time.monotonic() + 10  # the last victim's heartbeats run out
        while broker.stats()["workers_lost"] < kills and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = broker.stats()
        # a live worker starved of CPU may be suspected too; it re-registers by itself
        assert stats["workers_lost"] >= kills
        assert stats["redispatched"] >= 1  # at least one kill caught a task in flight
        assert stats["results"] == n_tasks
        assert sink.recv(timeout=0.3) is None  # nothing more: each result exactly once


def test_broker_validates_settings():
    with pytest.raises(ConfigError, match="heartbeat"):
        Broker(ANY, ANY, ANY, heartbeat=0)
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1"):
        Broker("tcp://*:1", ANY, ANY)
