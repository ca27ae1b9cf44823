"""An error (or a kill) in the parent leaves no child running."""

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

PARENT = textwrap.dedent("""
    import sys
    from nonsense_hpc import parallel
    for _ in range(2):
        parallel.run("parallel.parent.receive()")   # children that would wait for ever
    print(" ".join(str(c.pid) for c in parallel.children), flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("the parent fails")
    sys.stdin.readline()                           # wait to be killed
""")


def wait_gone(pid, timeout):
    """Wait for a process that is not our child to exit (pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_no_child_survives_the_parent(how):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
        if how == "raise":
            assert parent.returncode == 1
            assert "the parent fails" in parent.stderr.read()
        for pid in pids:
            assert wait_gone(pid, 30), f"child {pid} outlived its parent"
    finally:
        parent.kill()
        parent.wait(timeout=10)
