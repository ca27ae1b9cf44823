"""A wheel install (no checkout) still finds the main job's workflow and its profiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (whl,) = out.glob("nonsense_hpc-*.whl")
    return whl


def test_wheel_install_finds_workflow_and_profiles(wheel: Path, tmp_path: Path) -> None:
    # A separate environment: installing into this one (even with --prefix) would make
    # pip uninstall the editable nonsense-hpc the rest of the suite runs on.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    share = venv / "share" / "nonsense-hpc"
    assert (share / "workflows" / "Snakefile").is_file()
    assert (share / "slurm" / "templates" / "mpi.sbatch").is_file()
    (site,) = venv.glob("lib/python*/site-packages")
    elsewhere = tmp_path / "elsewhere"  # no ./workflows here
    elsewhere.mkdir()
    # The dependencies (numpy, ...) come from this environment's site-packages; its
    # editable nonsense_hpc is a .pth hook, which PYTHONPATH entries do not run.
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    env = dict(os.environ, PYTHONPATH=str(deps))
    env.pop("NONSENSE_WORKFLOW", None)
    probe = ("import nonsense_hpc\n"
             "from nonsense_hpc.train.mainjob import find_workflow, profile_path\n"
             "sf = find_workflow()\n"
             "print(nonsense_hpc.__file__)\n"
             "print(sf)\n"
             "print(profile_path(sf, 'local'))\n"
             "print(profile_path(sf, 'slurm'))\n")
    proc = subprocess.run([str(python), "-c", probe], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    package, snakefile, local, slurm = proc.stdout.split()
    assert Path(package).is_relative_to(site.resolve())  # the installed copy, not the repo
    assert Path(snakefile) == (share / "workflows" / "Snakefile").resolve()
    assert Path(local) == (share / "workflows" / "profiles" / "local").resolve()
    assert Path(slurm) == (share / "slurm").resolve()
    # And this environment still runs the checkout it was installed from.
    import nonsense_hpc

    assert Path(nonsense_hpc.__file__).resolve().is_relative_to(REPO)
