"""The shared-memory channel on its own: two endpoints over a real socket pair and memfds."""

import os
import socket
import threading

import pytest
import torch

from nonsense_hpc.parallel.channel import Endpoint, new_segment


@pytest.fixture
def ends():
    size = 64 * 1024
    a, b = socket.socketpair()
    fa, fb = new_segment(size), new_segment(size)
    left = Endpoint(a, fa, fb, size, "right")
    right = Endpoint(b, fb, fa, size, "left")
    os.close(fa)
    os.close(fb)
    yield left, right
    left.close()
    right.close()


def test_poll_sees_a_message_that_arrived(ends):
    left, right = ends
    assert right.poll() is False
    left.send({"x": 1})
    assert right.poll() is True  # the token was in the socket, not yet read
    assert right.receive(timeout=10) == {"x": 1}
    assert right.poll() is False


def test_receive_timeout_leaves_the_channel_usable(ends):
    left, right = ends
    with pytest.raises(TimeoutError, match="nothing from left"):
        right.receive(timeout=0.1)
    left.send("late")
    assert right.receive(timeout=10) == "late"


def test_request_reply_many_times_and_a_large_value(ends):
    left, right = ends

    def echo(n):
        for _ in range(n):
            right.send(right.receive(timeout=30))

    t = torch.randn(100, 100, dtype=torch.float64)
    big = torch.randn(100_000)  # 400 KB: streams through 32 KiB slots
    worker = threading.Thread(target=echo, args=(201,))
    worker.start()
    for _ in range(200):
        left.send(t)
        assert torch.equal(left.receive(timeout=30), t)
    left.send(big)
    assert torch.equal(left.receive(timeout=30), big)
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_peer_closing_ends_a_wait(ends):
    left, right = ends
    closer = threading.Thread(target=left.close)
    closer.start()
    with pytest.raises(ConnectionError):
        right.receive(timeout=10)
    closer.join(timeout=10)
