"""nonsense_hpc.parallel: real child processes and shared-memory channels."""

import os

import numpy as np
import pytest
import torch

from nonsense_hpc import parallel
from nonsense_hpc.errors import RemoteError


@pytest.fixture(autouse=True)
def fresh_children():
    """Each test starts with no children and the default shared size."""
    parallel.children.terminate()
    parallel.children = parallel.Children()
    parallel._next_id = 1  # ids restart, as in a fresh process
    parallel.set_shared_size(parallel.DEFAULT_SHARED_SIZE)
    yield
    parallel.children.terminate()


def echo(rounds):
    from nonsense_hpc import parallel

    for _ in range(rounds):
        parallel.parent.send(parallel.parent.receive())


def whoami():
    from nonsense_hpc import parallel

    parallel.parent.send({"id": parallel.id, "parent": parallel.parent.id,
                          "children": len(parallel.children), "pid": os.getpid()})


def test_ids_parent_and_children():
    assert parallel.id == 0 and parallel.parent is None
    a = parallel.run(whoami)
    b = parallel.run("parallel.parent.send([parallel.id, parallel.parent.id, list(args)])",
                     "x", 2)
    assert [c.id for c in parallel.children] == [1, 2]
    assert parallel.children[0] is a and parallel.children.by_id(2) is b
    info = a.receive(timeout=30)
    assert info["id"] == 1 and info["parent"] == 0 and info["children"] == 0
    assert info["pid"] == a.pid != os.getpid()
    assert b.receive(timeout=30) == [2, 0, ["x", 2]]
    parallel.join(timeout=30)


def test_any_supported_value_roundtrips():
    child = parallel.run(echo, 4)
    values = [{"name": "v", "t": torch.randn(100, 100, dtype=torch.float64)},
              [None, True, 1, 2.5, "s", b"\x00" * 10, (1, 2)],
              np.arange(12, dtype=np.int16).reshape(3, 4).T,
              torch.arange(6, dtype=torch.bfloat16)[::2]]
    for v in values:
        child.send(v)
        back = child.receive(timeout=30)
        if isinstance(v, dict):
            assert torch.equal(back["t"], v["t"]) and back["name"] == "v"
        elif isinstance(v, np.ndarray):
            assert np.array_equal(back, v)
        elif isinstance(v, torch.Tensor):
            assert torch.equal(back, v)
        else:
            assert back == v
    child.join(timeout=30)


def test_messages_larger_than_the_shared_buffer_stream_through():
    parallel.set_shared_size(4096)
    child = parallel.run(echo, 2)
    big = torch.arange(1_000_000, dtype=torch.float64)  # 8 MB through 2 KiB slots
    child.send(big)
    assert torch.equal(child.receive(timeout=60), big)
    blob = os.urandom(100_000)
    child.send(blob)
    assert child.receive(timeout=60) == blob
    child.join(timeout=30)


def test_simultaneous_large_sends_do_not_deadlock():
    parallel.set_shared_size(1024)
    code = """
import torch
x = torch.ones(200_000)
parallel.parent.send(x)          # blocks until the parent reads, while it sends too
y = parallel.parent.receive()
parallel.parent.send(float(y.sum()))
"""
    child = parallel.run(code)
    child.send(torch.full((200_000,), 2.0))  # both sides send 800 KB at once
    assert torch.equal(child.receive(timeout=60), torch.ones(200_000))
    assert child.receive(timeout=60) == 400_000.0
    child.join(timeout=30)


def test_receive_timeout_leaves_channel_usable():
    child = parallel.run(echo, 1)
    with pytest.raises(TimeoutError):
        child.receive(timeout=0.2)
    child.send("late")
    assert child.receive(timeout=30) == "late"
    child.join(timeout=30)


def test_unsupported_type_raises_before_sending():
    child = parallel.run(echo, 1)
    with pytest.raises(TypeError):
        child.send({"f": open})
    with pytest.raises(TypeError):
        parallel.children.send([object()])
    child.send("ok")  # nothing half-sent: the channel still works
    assert child.receive(timeout=30) == "ok"
    child.join(timeout=30)


def test_bad_arguments_start_no_process():
    with pytest.raises(TypeError):
        parallel.run(echo, object())
    with pytest.raises(TypeError, match="module level"):
        parallel.run(lambda: None)
    with pytest.raises(SyntaxError):
        parallel.run("def (")
    assert len(parallel.children) == 0
    with pytest.raises(ValueError):
        parallel.set_shared_size(10)
    parallel.set_shared_size("64KiB")
    assert parallel.shared_size() == 65536


def test_children_send_and_receive_all():
    for _ in range(3):
        parallel.run(echo, 1)
    parallel.children.send({"w": torch.ones(2)})
    got = parallel.children.receive(timeout=30)
    assert len(got) == 3 and all(torch.equal(g["w"], torch.ones(2)) for g in got)
    parallel.children.join(timeout=30)


def test_print_prefix(capfd):
    parallel.print("something", 3)
    child = parallel.run("parallel.print('from child')")
    child.join(timeout=30)
    out = capfd.readouterr().out
    assert "<parallel#000> something 3\n" in out
    assert "<parallel#001> from child\n" in out


def test_crashing_child_is_an_error_on_join():
    child = parallel.run("x = 1\nraise KeyError('lost')")
    with pytest.raises(KeyError) as info:
        child.join(timeout=30)
    assert isinstance(info.value, RemoteError)
    assert "raise KeyError('lost')" in info.value.remote_traceback
    with pytest.raises(RemoteError):  # every later join says it again
        child.join(timeout=30)


def test_killed_child_is_an_error_on_receive_and_join():
    child = parallel.run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(RemoteError, match="signal 9"):
        child.receive(timeout=30)
    with pytest.raises(RemoteError, match="signal 9"):
        child.join(timeout=30)


def test_children_join_stops_siblings_when_one_fails():
    stuck = parallel.run("parallel.parent.receive()")  # would wait for ever
    parallel.run("raise ValueError('bad child')")
    with pytest.raises(ValueError, match="bad child"):
        parallel.children.join(timeout=30)
    assert stuck.proc.poll() is not None


def test_join_timeout():
    child = parallel.run("parallel.parent.receive()")
    with pytest.raises(TimeoutError):
        child.join(timeout=0.3)
    child.send(None)
    child.join(timeout=30)


def test_sys_exit_zero_is_success_nonzero_is_error():
    parallel.run("import sys; sys.exit(0)").join(timeout=30)
    with pytest.raises(RemoteError):
        parallel.run("import sys; sys.exit(3)").join(timeout=30)
