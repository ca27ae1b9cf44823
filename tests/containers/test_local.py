"""The local runtime for real: a debootstrap sandbox run with bubblewrap.

The sandbox is built once per session (and cached across runs, see conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nonsense_hpc.containers import LocalRuntime
from nonsense_hpc.errors import ContainerError
from nonsense_hpc.launch import find_mpirun, mpi_environment, mpirun_command

pytestmark = pytest.mark.container

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "nonsense_hpc.cli.main", "container"]


def test_exec_runs_inside_the_sandbox(sandbox_image, tmp_path):
    rt = LocalRuntime()
    code = ("import sys, os, nonsense_hpc, mpi4py; print(open('/etc/os-release').readline()"
            ".strip()); print(os.path.exists('/.nonsense-sandbox.json')); print(sys.prefix)")
    result = rt.exec(sandbox_image, ["python", "-c", code], timeout=120).check()
    lines = result.stdout.splitlines()
    assert lines[0] == 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"'
    assert lines[1] == "True"  # the sandbox's root, not the host's
    assert lines[2] == sys.prefix  # the host's Python environment, bound read-only
    # the image is read-only, the working directory and /tmp are not
    out = tmp_path / "written"
    result = rt.exec(sandbox_image, ["sh", "-c", f"touch /etc/x 2>/dev/null; echo $?; "
                                     f"echo hi > {out}"], timeout=60).check()
    assert result.stdout.strip() != "0" and out.read_text() == "hi\n"


def test_exit_status_env_and_binds(sandbox_image, tmp_path):
    rt = LocalRuntime()
    assert rt.exec(sandbox_image, ["sh", "-c", "exit 7"], timeout=60).returncode == 7
    data = tmp_path / "data"
    data.mkdir()
    result = rt.exec(sandbox_image, ["sh", "-c", "echo $GREETING; ls /data >/dev/null && "
                                     "touch /data/x 2>/dev/null || echo ro"],
                     binds=[f"{data}:/data:ro"], env={"GREETING": "hello"},
                     timeout=60).check()
    assert result.stdout.split() == ["hello", "ro"]
    with pytest.raises(ContainerError, match="did not finish in 1"):
        rt.exec(sandbox_image, ["sleep", "30"], timeout=1)


def test_clean_env_keeps_mpi_variables(sandbox_image, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "5")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    result = LocalRuntime().exec(sandbox_image, ["sh", "-c", "env"], clean_env=True,
                                 timeout=60).check()
    assert "OMPI_COMM_WORLD_RANK=5" in result.stdout.splitlines()
    assert "UNRELATED_SECRET" not in result.stdout


def test_run_uses_the_recipe_runscript(sandbox_image):
    result = LocalRuntime().run(sandbox_image, ["-c", "print(6 * 7)"], timeout=60).check()
    assert result.stdout == "42\n"


def test_cli_exec_passes_status_and_output(sandbox_image):
    proc = subprocess.run([*CLI, "exec", "--runtime", "local", sandbox_image, "--", "sh", "-c",
                           "echo out; echo err >&2; exit 3"], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout) == (3, "out\n")
    assert proc.stderr.endswith("err\n")  # the command's own stream, nothing added after
    proc = subprocess.run([*CLI, "exec", "--runtime", "local", "no-such-image", "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "image 'no-such-image' not found" in proc.stderr
    assert "nonsense-hpc container build" in proc.stderr


def _mpirun_container(np: int, program: list[str]) -> list[dict]:
    argv = [*CLI, "exec", "--runtime", "local", "nonsense-hpc", "--", *program]
    cmd = mpirun_command(np, argv, launcher=find_mpirun())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env=mpi_environment(allow_root=True))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return sorted(rows, key=lambda r: r["rank"])


def test_two_rank_mpi_run_in_containers(sandbox_image):
    """Hybrid model: the host's mpirun starts one sandboxed process per rank."""
    rows = _mpirun_container(2, ["python", str(HERE / "rank_program.py")])
    assert [r["rank"] for r in rows] == [0, 1]
    assert all(r["size"] == 2 and r["sum"] == 3 and r["sandbox"] for r in rows)
    assert all("bookworm" in r["os"] and "Open MPI" in r["library"] for r in rows)


def test_two_rank_tree_allreduce_in_containers(sandbox_image):
    pytest.importorskip("nonsense_hpc.comm", reason="the core Tree is not in this checkout")
    from nonsense_hpc import comm

    if not hasattr(comm, "Tree"):
        pytest.skip("nonsense_hpc.comm has no Tree yet")
    rows = _mpirun_container(2, ["python", str(HERE / "rank_program.py"), "--tree"])
    assert [r["tree_sum"] for r in rows] == [3.0, 3.0]


def test_dead_rank_in_a_container_fails_the_job(sandbox_image):
    argv = [*CLI, "exec", "--runtime", "local", "nonsense-hpc", "--", "python", "-c",
            "from mpi4py import MPI; import os; c = MPI.COMM_WORLD\n"
            "if c.rank == 1: os._exit(9)\nc.Barrier()"]
    proc = subprocess.run(mpirun_command(2, argv, launcher=find_mpirun()), capture_output=True,
                          text=True, timeout=180, env=mpi_environment(allow_root=True))
    assert proc.returncode != 0


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie waits for whoever adopted it to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_instance_runs_a_service(sandbox_image, tmp_path):
    """An instance is a service: it outlives its start command, answers on a socket, is
    listed, and stops (SIGTERM reaches the service) on request."""
    import zmq

    name = f"ctest-{os.getpid()}"
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    service = (
        "import signal, zmq\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
        f"s = zmq.Context().socket(zmq.REQ); s.connect('tcp://127.0.0.1:{port}')\n"
        "s.send_string(open('/etc/os-release').readline().strip()); s.recv_string()\n"
        "signal.sigwait([signal.SIGTERM]); print('terminated', flush=True)\n")
    proc = subprocess.run([*CLI, "instance", "start", "--runtime", "local", "nonsense-hpc",
                           name, "--", "python", "-c", service], capture_output=True,
                          text=True, timeout=60)
    try:
        assert proc.returncode == 0, proc.stderr
        assert rep.poll(60_000), "the service in the instance never connected"
        assert "bookworm" in rep.recv_string()
        rep.send_string("ok")
        listed = subprocess.run([*CLI, "instance", "list", "--runtime", "local", "--json"],
                                capture_output=True, text=True, timeout=60, check=True)
        [info] = [i for i in json.loads(listed.stdout) if i["name"] == name]
        again = subprocess.run([*CLI, "instance", "start", "--runtime", "local",
                                "nonsense-hpc", name, "--", "true"], capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stop = subprocess.run([*CLI, "instance", "stop", "--runtime", "local", "-t", "20",
                               name], capture_output=True, text=True, timeout=60)
        rep.close()
        ctx.term()
    assert stop.returncode == 0, stop.stderr
    assert Path(info["log_out"]).read_text() == "terminated\n"
    Path(info["log_out"]).unlink()  # logs outlive an instance on purpose; these are ours
    Path(info["log_err"]).unlink()
    assert not _running(info["pid"])
    assert all(i.name != name for i in LocalRuntime().instance_list())
    proc = subprocess.run([*CLI, "instance", "stop", "--runtime", "local", name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no running instance" in proc.stderr
