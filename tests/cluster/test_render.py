"""The pure sbatch rendering: golden file, resource validation, time formats."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nonsense_hpc.cluster import (
    PARAMETERS,
    ResourceError,
    container_command,
    parse_time,
    render_sbatch,
    validate_parameters,
)
from nonsense_hpc.errors import ClusterError, ConfigError

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_mpi_container.sbatch"


def golden_render() -> str:
    return render_sbatch(
        ["python", "train.py", "--epochs", "3", "--name", "a b"],
        {"ntasks": 4, "nodes": 2, "time": "1:00:00", "partition": "debug", "mem": "4G",
         "exclusive": True, "job-name": "train"},
        log_dir="/scratch/logs", launcher="mpirun", mpirun="/opt/ompi/bin/mpirun",
        launcher_args=["--bind-to", "core"], container="/images/job.sif",
        tool="/venv/bin/nonsense-hpc", environment={"NONSENSE_TIMEOUT": "60"},
        setup=["module load openmpi/5"], warning_seconds=300, max_requeues=2)


def test_golden_file():
    # To accept an intended change: python -c "from tests.cluster.test_render import *;
    # GOLDEN.write_text(golden_render())" and review the diff.
    assert golden_render() == GOLDEN.read_text()


def test_rendered_script_is_valid_bash(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(golden_render())
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_unknown_resource_lists_every_valid_one_with_did_you_mean():
    with pytest.raises(ResourceError) as info:
        render_sbatch(["true"], {"ntask": 2}, log_dir="/tmp")
    text = str(info.value)
    assert "'ntask'" in text and "did you mean 'ntasks'?" in text
    for name in PARAMETERS:
        assert name in text
    # One class for callers of either persuasion.
    assert isinstance(info.value, ClusterError) and isinstance(info.value, ValueError)


def test_unknown_resource_without_close_match():
    with pytest.raises(ResourceError, match="unknown Slurm resource 'zzzz'; valid"):
        validate_parameters({"zzzz": 1})


@pytest.mark.parametrize(("params", "needle"), [
    ({"ntasks": 0}, "ntasks=0 must be >= 1"),
    ({"ntasks": "two"}, "ntasks='two' must be an integer"),
    ({"time": "1:2:3:4"}, "not a Slurm time limit"),
    ({"time": "0"}, "longer than zero"),
    ({"nodes": "many"}, "nodes='many'"),
    ({"exclusive": "sometimes"}, "exclusive is a flag"),
    ({"partition": "a\nb"}, "single line"),
    ({"job_name": "bad name"}, "job_name='bad name'"),
])
def test_malformed_values_are_refused_before_slurm(params, needle):
    with pytest.raises(ResourceError, match=needle.replace("(", r"\(").replace("?", r"\?")):
        render_sbatch(["true"], params, log_dir="/tmp")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 1800), ("1:30", 90), ("1:00:00", 3600), ("2-0", 172800),
    ("1-2:3", 93780), ("1-2:3:4", 93784), (5, 300),
])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


def test_warning_is_clipped_to_half_the_time_limit():
    text = render_sbatch(["true"], {"time": "1"}, log_dir="/tmp", warning_seconds=120)
    assert "#SBATCH --signal=B:USR1@30" in text
    assert "--signal" not in render_sbatch(["true"], {}, log_dir="/tmp", warning_seconds=None)


@pytest.mark.parametrize(("launcher", "needle"), [
    ("mpirun", 'mpirun -n "$SLURM_NTASKS" hostname &'),
    ("srun", "srun hostname &"),
    ("none", "\nhostname &"),
])
def test_launchers(launcher, needle):
    assert needle in render_sbatch("hostname", {}, log_dir="/tmp", launcher=launcher)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="no command"):
        render_sbatch([], {}, log_dir="/tmp")
    with pytest.raises(ConfigError, match="unknown launcher 'mpiexec'"):
        render_sbatch(["true"], {}, log_dir="/tmp", launcher="mpiexec")
    with pytest.raises(ConfigError, match="absolute"):
        render_sbatch(["true"], {}, log_dir="logs")
    with pytest.raises(ConfigError, match="not an environment variable name"):
        render_sbatch(["true"], {}, log_dir="/tmp", environment={"A-B": "1"})
    with pytest.raises(ConfigError, match="max_requeues"):
        render_sbatch(["true"], {}, log_dir="/tmp", max_requeues=-1)


def test_container_command_is_one_exec_per_rank():
    assert container_command("img.sif", ["python", "-V"]) == [
        "nonsense-hpc", "container", "exec", "img.sif", "--", "python", "-V"]
    with pytest.raises(ConfigError, match="image"):
        container_command("", ["python"])
    text = render_sbatch(["python", "-V"], {"ntasks": 2}, log_dir="/tmp",
                         container="img.sif")
    assert 'mpirun -n "$SLURM_NTASKS" nonsense-hpc container exec img.sif -- python -V' in text
