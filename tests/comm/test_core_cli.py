"""The core commands as a user types them: --version, doctor, topology under mpirun."""

import os
import subprocess
import sys
from pathlib import Path

import nonsense_hpc
from nonsense_hpc.launch import mpi_environment, mpirun_command, quiet_embedded_mpi

CLI = str(Path(sys.executable).with_name("nonsense-hpc"))


def _run(argv, env=None, timeout=120):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def test_version():
    out = _run([CLI, "--version"])
    assert out.returncode == 0 and nonsense_hpc.__version__ in out.stdout


def test_doctor_names_every_piece_and_how_to_install_what_is_missing():
    out = _run([CLI, "doctor"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for piece in ("MPI", "torch", "ZeroMQ", "Slurm", "Apptainer/Singularity",
                  "local container runtime", "Snakemake"):
        assert any(piece in line for line in lines), (piece, out.stdout)
    mpi = next(line for line in lines if " MPI " in f" {line} ")
    assert "Open MPI" in mpi and "launcher" in mpi and "CUDA" in mpi
    assert "pyzmq" in out.stdout and "libzmq" in out.stdout
    # every piece that is not there says how to get it
    for i, line in enumerate(lines):
        if line.startswith("absent"):
            assert "fix:" in lines[i + 1], line


def test_topology_under_mpirun_prints_nodes_leaders_and_tree_quietly():
    env = mpi_environment(allow_root=True)
    env.pop("OMPI_MCA_osc", None)  # as a user types it: the package quiets the wheel itself
    out = _run(mpirun_command(5, [CLI, "topology", "--ranks-per-node", "2"]), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "5 ranks on 3 pretend nodes" in text
    assert "leader rank 0, ranks 0-1" in text and "leader rank 4, ranks 4" in text
    assert "binomial" in text and "node 2 (rank 4)" in text
    assert "OSC UCX" not in out.stdout + out.stderr


def test_quiet_embedded_mpi_only_before_mpi_and_never_over_a_choice():
    env: dict[str, str] = {"OMPI_MCA_osc": "sm"}
    assert not quiet_embedded_mpi(env) and env["OMPI_MCA_osc"] == "sm"
    embedded = os.access(str(Path(sys.executable).with_name("mpirun")), os.X_OK)
    env = {}
    mpi_started = "mpi4py.MPI" in sys.modules
    assert quiet_embedded_mpi(env) == (embedded and not mpi_started)
