"""ipc.map: real worker processes in clean interpreters."""

import os
import sys
import time

import pytest
import torch

from nonsense_hpc import ipc
from nonsense_hpc.errors import RemoteError

STATE = {"who": "module default"}


def describe(prefix, mapid):
    return {"prefix": prefix, "mapid": mapid, "pid": os.getpid(), "state": STATE["who"],
            "argv": sys.argv}


def scale(t, factor, mapid):
    return t * factor * mapid


def fail_on_two(mapid):
    if mapid == 2:
        raise ValueError(f"worker {mapid} refuses")
    return mapid


def die(mapid):
    os._exit(7)


def unsendable(mapid):
    return object()


def sleepy(seconds, mapid):
    time.sleep(seconds)  # a worker that is busy for a while (tested with join timeout)
    return mapid


def test_results_in_order_with_one_based_mapid():
    STATE["who"] = "changed in the parent"
    results = ipc.map(3, describe, "p").join(timeout=60)
    assert [r["mapid"] for r in results] == [1, 2, 3]
    assert all(r["prefix"] == "p" for r in results)
    assert len({r["pid"] for r in results} | {os.getpid()}) == 4
    # Clean interpreters: the parent's run-time changes do not leak into the workers.
    assert all(r["state"] == "module default" for r in results)
    STATE["who"] = "module default"


def test_tensors_in_and_out():
    out = ipc.map(2, scale, torch.ones(3), 2.0).join(timeout=60)
    assert [o.tolist() for o in out] == [[2.0] * 3, [4.0] * 3]


def test_function_by_name():
    assert ipc.map(2, "operator:add", 10).join(timeout=60) == [11, 12]


def test_worker_exception_reraises_with_traceback():
    job = ipc.map(3, fail_on_two)
    with pytest.raises(ValueError) as info:
        job.join(timeout=60)
    err = info.value
    assert isinstance(err, RemoteError)
    assert "worker 2 refuses" in str(err)
    assert "fail_on_two" in err.remote_traceback and "Traceback" in err.remote_traceback
    assert all(p.poll() is not None for p in job.processes)  # nobody left running


def test_dead_worker_is_an_error():
    with pytest.raises(RemoteError, match="exit code 7"):
        ipc.map(1, die).join(timeout=60)


def test_unsendable_result_is_an_error():
    with pytest.raises(TypeError, match="cannot be sent back"):
        ipc.map(1, unsendable).join(timeout=60)


def test_bad_arguments_fail_before_any_process_starts():
    with pytest.raises(TypeError, match="module level"):
        ipc.map(2, lambda mapid: mapid)

    def nested(mapid):
        return mapid

    with pytest.raises(TypeError, match="module level"):
        ipc.map(2, nested)
    with pytest.raises(TypeError):
        ipc.map(2, describe, object())
    with pytest.raises(ValueError):
        ipc.map(0, describe, "x")


def test_join_timeout_then_terminate():
    job = ipc.map(1, sleepy, 30)
    with pytest.raises(TimeoutError):
        job.join(timeout=0.5)
    job.terminate()
    assert job.processes[0].poll() is not None


def test_check_errors_does_not_wait():
    job = ipc.map(1, sleepy, 30)
    job.check_errors()  # returns at once: nothing failed yet
    job.terminate()


def test_function_from_stdin_is_refused_with_a_clear_error():
    import subprocess

    code = ("from nonsense_hpc import ipc\n"
            "def f(a, mapid):\n    return a\n"
            "try:\n    ipc.map(2, f, 1)\n"
            "except TypeError as exc:\n    print('refused:', exc)\n")
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True,
                         timeout=60)
    assert "refused: f is defined in an interactive session, stdin or python -c" in out.stdout, \
        out.stdout + out.stderr
