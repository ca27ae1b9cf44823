"""ipc.workqueue: one writer, many readers in other processes, opened by name."""

import subprocess
import sys
import textwrap
import uuid

import pytest
import torch

from nonsense_hpc import ipc


def doubler(name, mapid):
    from nonsense_hpc import ipc

    q = ipc.workqueue(name)
    taken = 0
    while True:
        item = q.read()
        if item is None:
            return taken
        q.write({"worker": mapid, "out": item["x"] * 2})
        taken += 1


@pytest.fixture
def name():
    return f"test-{uuid.uuid4().hex}"


def test_workers_read_items_and_write_answers(name):
    q = ipc.workqueue(name)
    workers = ipc.map(2, doubler, name)
    for i in range(20):
        q.write({"x": torch.full((2,), float(i))})
    answers = [q.read(timeout=60) for _ in range(20)]
    assert sorted(float(a["out"][0]) for a in answers) == [2.0 * i for i in range(20)]
    q.close()
    taken = workers.join(timeout=60)
    assert sum(taken) == 20


def test_close_returns_none_to_readers_after_the_items(name):
    q = ipc.workqueue(name)
    q.write({"x": 1})
    q.close()  # closed before any reader connected: the item is still handed out
    assert ipc.map(1, doubler, name).join(timeout=60) == [1]
    assert q.read(timeout=10)["out"] == 2
    assert q.read(timeout=10) is None  # closed, no readers left
    with pytest.raises(ValueError, match="closed"):
        q.write(1)


def test_non_blocking_and_timeouts(name):
    q = ipc.workqueue(name)
    assert q.read(block=False) is None
    with pytest.raises(TimeoutError):
        q.read(timeout=0.1)
    reader = ipc.workqueue(name)  # same process, second open: a reader
    assert not reader.owner
    assert reader.read(block=False) is None
    q.write("w")
    assert reader.read(timeout=10) == "w"
    reader.write("answer")
    assert q.read(timeout=10) == "answer"
    reader.close()
    q.close()


def test_unsupported_item_raises_type_error_and_queues_nothing(name):
    q = ipc.workqueue(name)
    with pytest.raises(TypeError):
        q.write([object()])
    reader = ipc.workqueue(name)
    assert reader.read(block=False) is None
    reader.close()
    q.close()


def test_open_existing_only(name):
    with pytest.raises(FileNotFoundError):
        ipc.workqueue(name, create=False, timeout=0.2)
    q = ipc.workqueue(name, create=True)
    with pytest.raises(FileExistsError):
        ipc.workqueue(name, create=True)
    q.close()


def test_reader_sees_none_when_the_owner_dies(name):
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from nonsense_hpc import ipc
        q = ipc.workqueue({name!r})
        print("ready", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "NONSENSE_IPC_SCOPE": "test-owner-death"})
    try:
        assert owner.stdout.readline().strip() == "ready"
        import os

        old = os.environ.get("NONSENSE_IPC_SCOPE")
        os.environ["NONSENSE_IPC_SCOPE"] = "test-owner-death"
        try:
            reader = ipc.workqueue(name, create=False, timeout=10)
        finally:
            if old is None:
                del os.environ["NONSENSE_IPC_SCOPE"]
            else:
                os.environ["NONSENSE_IPC_SCOPE"] = old
        owner.kill()
        owner.wait(timeout=10)
        assert reader.read(timeout=10) is None
    finally:
        owner.kill()
        owner.wait(timeout=10)
