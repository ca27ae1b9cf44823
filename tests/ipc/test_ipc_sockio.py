"""Socket helpers of nonsense_hpc.ipc on real socket pairs: timeouts and the Spinner."""

import os
import socket
import threading
import time

import pytest

from nonsense_hpc.ipc.sockio import Spinner, recv_exact, send_views

MANY_CPUS = len(os.sched_getaffinity(0)) > 1


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_send_views_writes_every_view_in_order(pair):
    a, b = pair
    views = [memoryview(b"head"), memoryview(bytearray(b"")), memoryview(b"x" * 100000)]
    writer = threading.Thread(target=send_views, args=(a, views, 10.0))
    writer.start()
    got = bytearray(100004)
    recv_exact(b, memoryview(got), "a", False, 10.0)
    writer.join(timeout=10)
    assert bytes(got) == b"head" + b"x" * 100000


def test_send_views_times_out_when_nobody_reads(pair):
    a, _ = pair
    with pytest.raises(TimeoutError, match="took no bytes"):
        send_views(a, [memoryview(bytes(64 * 1024**2))], 0.2)


def test_recv_exact_reports_stall_and_close(pair):
    a, b = pair
    a.sendall(b"abc")
    with pytest.raises(TimeoutError, match="stalled"):
        recv_exact(b, memoryview(bytearray(10)), "peer a", True, 0.2)
    a.close()
    with pytest.raises(ConnectionResetError, match="peer a closed"):
        recv_exact(b, memoryview(bytearray(10)), "peer a", False, 1.0)


def test_spinner_waits_for_data_and_times_out(pair):
    a, b = pair
    spin = Spinner(b)
    t0 = time.monotonic()
    assert spin.wait(0.1) is False
    assert time.monotonic() - t0 >= 0.09
    a.sendall(b"x")
    assert spin.wait(10.0) is True
    assert spin.wait(None) is True  # still readable: the byte was not read
    assert Spinner(b, limit=0).wait(0) is True


@pytest.mark.skipif(not MANY_CPUS, reason="a process allowed on one CPU never spins")
def test_spinner_stops_polling_after_long_waits_and_resumes_after_short_ones(pair):
    a, b = pair
    spin = Spinner(b, limit=1e-3)
    assert spin.budget == pytest.approx(1e-3)
    sender = threading.Timer(0.05, a.sendall, args=(b"x",))
    sender.start()
    assert spin.wait(None) is True  # waited >= 50 ms: far longer than the limit
    sender.join()
    assert spin.budget == 0.0
    for _ in range(10):  # data is already there: waits of microseconds
        assert spin.wait(None) is True
    assert 0.0 < spin.budget <= 1e-3


def test_spinner_never_polls_with_limit_zero(pair):
    _, b = pair
    spin = Spinner(b, limit=0)
    assert spin.budget == 0.0
    assert spin.wait(0.01) is False
    assert spin.budget == 0.0


def test_spin_limit_zero_turns_polling_off(pair, monkeypatch):
    from nonsense_hpc.ipc import sockio

    _, b = pair
    existing = Spinner(b)
    monkeypatch.setattr(sockio, "SPIN_LIMIT", 0.0)
    assert Spinner(b).budget == 0.0
    assert existing.budget == 0.0  # read at every wait, not only when made


def test_cpus_busy_needs_two_samples_over_the_cpu_count(tmp_path, monkeypatch):
    from nonsense_hpc.ipc import sockio

    assert isinstance(sockio.cpus_busy(), bool)  # the real /proc/loadavg parses
    fake = tmp_path / "loadavg"
    fd = os.open(fake, os.O_RDWR | os.O_CREAT)
    monkeypatch.setattr(sockio._Load, "fd", fd)
    monkeypatch.setattr(sockio._Load, "over", False)
    monkeypatch.setattr(sockio._Load, "busy", False)

    def sample(running):
        os.pwrite(fd, f"0.50 0.40 0.30 {running}/120 4242\n".encode().ljust(64), 0)
        monkeypatch.setattr(sockio._Load, "at", -1.0)  # the next call samples
        return sockio.cpus_busy()

    many = sockio._CPUS + 1
    assert sample(many) is False  # one sample over: maybe a passing kernel thread
    assert sample(many) is True
    assert sample(1) is False
    monkeypatch.setattr(sockio._Load, "at", time.monotonic() + 3600)
    assert sockio.cpus_busy() is False  # between samples the last answer stands
    os.close(fd)
