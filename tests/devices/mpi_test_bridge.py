"""The MPI bridge: Publisher (all / leaders / root) and TaskFarm (Streamer, Broker, Tree)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import zmq

from nonsense_hpc import wire
from nonsense_hpc.devices import Broker, Forwarder, Publisher, Result, Sink, Streamer, TaskFarm

NP = (1, 2, 3)
TIMEOUT = 150
ANY = "tcp://127.0.0.1:*"


def _expected_publishers(size, who, rpn):
    if who == "all":
        return set(range(size))
    if who == "root":
        return {0}
    return set(range(0, size, rpn)) if rpn else {0}  # one real node here


def _publish_matrix(comm, who, rpn=0):
    rank, size = comm.Get_rank(), comm.Get_size()
    fwd = sub = None
    if rank == 0:
        fwd = Forwarder(ANY, ANY).start("thread")
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(fwd.endpoints["out"])
    address = comm.bcast(fwd.endpoints["in"] if rank == 0 else None, root=0)
    os.environ["NONSENSE_PUBLISH"] = address  # the way a job script wires it
    os.environ["NONSENSE_JOB_ID"] = "job-7"
    pub = Publisher(comm=comm, who=who, ranks_per_node=rpn)
    expected = _expected_publishers(size, who, rpn)
    assert pub.active == (rank in expected)
    # Phase 1: probe until rank 0 has heard every expected publisher (subscriptions
    # travel upstream asynchronously), then rank 0 says go.
    go = comm.irecv(source=0, tag=7) if rank != 0 else None
    heard: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pub.event("probe")
        if rank == 0:
            # Drain for a bounded time: other ranks publishing faster than the poll
            # interval must not keep rank 0 from sending its own probes.
            drain_until = time.monotonic() + 0.05
            while time.monotonic() < drain_until and sub.poll(10):
                msg = wire.decode(sub.recv_multipart())
                heard.add(msg.rank)
            if heard >= expected:
                for r in range(1, size):
                    comm.send(True, dest=r, tag=7)
                break
        else:
            done, _ = go.test()
            if done:
                break
            time.sleep(0.005)
    else:
        raise TimeoutError(f"rank {rank}: publishers not all heard ({heard} of {expected})")
    comm.Barrier()
    # Phase 2: real messages arrive from exactly the expected ranks.
    sent = pub.metric("loss", {"loss": 1.0 / (rank + 1)}, step=5)
    assert sent == (rank in expected)
    pub.tensor("w", np.full(4, rank, np.float32), step=5)
    comm.Barrier()
    if rank == 0:
        got = []
        while len(got) < 2 * len(expected) and sub.poll(5000):
            msg = wire.decode(sub.recv_multipart())
            if msg.topic != "events.probe":
                got.append(msg)
        assert {m.rank for m in got} == expected
        for m in got:
            assert m.job_id == "job-7" and m.step == 5
            if m.kind == "tensor":
                assert m.array.tolist() == [m.rank] * 4
            else:
                assert m.data == {"loss": 1.0 / (m.rank + 1)}
    # Publishers leave before the hub stops, as in a job: every rank closes its
    # publisher while the Forwarder still runs, then rank 0 stops the Forwarder.
    pub.close()
    comm.Barrier()
    if rank == 0:
        sub.close()
        fwd.terminate()


def test_publisher_every_rank(comm):
    _publish_matrix(comm, "all")


def test_publisher_node_leaders(comm):
    _publish_matrix(comm, "leaders")           # one real node: rank 0 leads
    _publish_matrix(comm, "leaders", rpn=2)    # pretend nodes of 2 ranks: 0, 2, ...


def test_publisher_rank0(comm):
    _publish_matrix(comm, "root")


def _collect(sink, n, box):
    box["results"] = sink.collect(n, timeout=60)


def test_taskfarm_streamer_from_environment(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    n = 10 * size
    box: dict = {}
    if rank == 0:
        sink = Sink(ANY)
        streamer = Streamer(ANY, ANY).start("thread")
        collector = threading.Thread(target=_collect, args=(sink, n, box))
        collector.start()
        addrs = (streamer.endpoints["in"], streamer.endpoints["out"], sink.address)
    addrs = comm.bcast(addrs if rank == 0 else None, root=0)
    os.environ["NONSENSE_TASKS"], os.environ["NONSENSE_RESULTS"] = addrs[1], addrs[2]
    os.environ.pop("NONSENSE_BROKER", None)
    farm = TaskFarm()
    if rank == 0:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(addrs[0])
        for i in range(n):
            wire.send(push, "tasks.sq", {"x": i}, kind="task", task_id=str(i))
        push.close(linger=5000)
    done = farm.run(lambda task: {"y": task.data["x"] ** 2, "rank": rank}, idle_timeout=3.0)
    total = comm.allreduce(done)
    if rank == 0:
        collector.join(60)
        results = box["results"]
        assert {k: m.data["y"] for k, m in results.items()} == {str(i): i * i
                                                                for i in range(n)}
        assert total == n
        streamer.terminate()
        sink.close()
    comm.Barrier()


def test_taskfarm_broker_with_stop_messages(comm):
    rank, size = comm.Get_rank(), comm.Get_size()
    n = 8 * size
    box: dict = {}
    if rank == 0:
        sink = Sink(ANY)
        broker = Broker(ANY, ANY, sink.address, heartbeat=0.2).start("thread")
        collector = threading.Thread(target=_collect, args=(sink, n + size, box))
        collector.start()
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(broker.endpoints["in"])
        for i in range(n):
            wire.send(push, "tasks.sq", {"x": i}, kind="task", task_id=str(i))
        for r in range(size):
            wire.send(push, "tasks.stop", {"cmd": "stop"}, kind="control", task_id=f"stop{r}")
        push.close(linger=5000)
    address = comm.bcast(broker.endpoints["workers"] if rank == 0 else None, root=0)
    farm = TaskFarm(broker=address, comm=comm, heartbeat=0.2)
    farm.run(lambda task: {"y": task.data["x"] ** 2}, idle_timeout=30)
    if rank == 0:
        collector.join(60)
        results = box["results"]
        assert sum(1 for k in results if k.startswith("stop")) == size
        assert {k: m.data["y"] for k, m in results.items() if not k.startswith("stop")} == {
            str(i): i * i for i in range(n)}
        broker.terminate()
        sink.close()
    comm.Barrier()


def test_taskfarm_collective_with_tree(comm):
    from nonsense_hpc.comm import Tree

    rank, size = comm.Get_rank(), comm.Get_size()
    box: dict = {}
    if rank == 0:
        sink = Sink(ANY)
        broker = Broker(ANY, ANY, sink.address, heartbeat=0.2).start("thread")
        collector = threading.Thread(target=_collect, args=(sink, 4, box))
        collector.start()
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(broker.endpoints["in"])
        for i in range(4):
            wire.send(push, "tasks.sum", {"i": i}, kind="task", task_id=str(i),
                      arrays={"v": np.arange(6, dtype=np.float64) + i})
        wire.send(push, "tasks.stop", {"cmd": "stop"}, kind="control", task_id="stop")
        push.close(linger=5000)
    address = comm.bcast(broker.endpoints["workers"] if rank == 0 else None, root=0)
    with Tree(comm=comm) as tree:
        farm = TaskFarm(broker=address, comm=comm, mode="collective", tree=tree,
                        heartbeat=0.2)

        def work(task, group):
            part = task.arrays["v"] * (group.Get_rank() + 1)
            tree.allreduce(part, op="sum")  # every rank takes part in each task
            return Result({"i": task.data["i"]}, arrays={"sum": part})

        done = farm.run(work, idle_timeout=30)
    assert done == 4
    if rank == 0:
        collector.join(60)
        scale = size * (size + 1) / 2
        for i in range(4):
            msg = box["results"][str(i)]
            np.testing.assert_allclose(msg.arrays["sum"], (np.arange(6) + i) * scale)
        broker.terminate()
        sink.close()
    comm.Barrier()
