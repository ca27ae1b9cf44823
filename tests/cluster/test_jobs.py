"""Jobs on the real local Slurm: a 2-rank MPI job running the Tree, failures, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nonsense_hpc import cluster
from nonsense_hpc.errors import ClusterError

pytestmark = pytest.mark.slurm
DATA = Path(__file__).parent / "data"


def test_two_rank_mpi_job_runs_the_tree(slurm, job_env, tmp_path, cancel_after):
    job = cluster.submit([sys.executable, str(DATA / "job_tree.py")], ntasks=2, time="5",
                         partition=slurm, log_dir=tmp_path, environment=job_env,
                         job_name="tree")
    cancel_after.append(job.job_id)
    st = job.wait(timeout=120)
    err = job.logs("stderr")
    assert st.state == "COMPLETED" and st.exit_code == 0, err
    rows = sorted((json.loads(line) for line in job.logs().splitlines()
                   if line.startswith("{")), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1], err
    for r in rows:
        assert r["world_size"] == 2 and r["source"] == "openmpi"
        assert r["job_id"] == job.job_id and r["mpi_rank"] == r["rank"]
        assert r["tree_sum"] == 3.0 and r["torch_sum"] == 3.0
        assert r["torchrun"]["RANK"] == str(r["rank"])
        assert r["torchrun"]["WORLD_SIZE"] == "2"
        assert r["torchrun"]["MASTER_PORT"] == str(cluster.master_port(job.job_id))
    assert f"nonsense: job {job.job_id} restart 0" in err
    assert (tmp_path / f"tree-{job.job_id}.status").read_text().split() == ["COMPLETED", "0"]
    assert st.stdout == str(tmp_path / f"tree-{job.job_id}.out")


def test_failing_job_reports_its_exit_code(slurm, job_env, tmp_path, cancel_after):
    job = cluster.submit([sys.executable, "-c", "import sys; print('dying'); sys.exit(7)"],
                         ntasks=1, launcher="none", partition=slurm, log_dir=tmp_path,
                         environment=job_env)
    cancel_after.append(job.job_id)
    st = job.wait(timeout=60)
    assert st.state == "FAILED" and st.exit_code == 7 and not st.ok
    assert job.logs() == "dying\n"
    assert (tmp_path / f"nonsense-{job.job_id}.status").read_text().split() == ["FAILED", "7"]


@pytest.mark.parametrize(("resources", "reason"), [
    ({"ntasks": 4096}, "More processors requested than permitted"),
    ({"nodes": 64}, "Slurm refused the job"),
    ({"mem": "900T"}, "Slurm refused the job"),
    ({"partition": "no_such_partition"}, "Invalid partition name"),
])
def test_impossible_request_is_refused_with_slurms_reason(slurm, tmp_path, resources,
                                                          reason):
    start = time.monotonic()
    with pytest.raises(ClusterError, match=reason):
        cluster.submit(["true"], log_dir=tmp_path, **resources)
    assert time.monotonic() - start < 30  # refused at submission, not left pending


def test_misspelled_resource_never_reaches_slurm(tmp_path):
    with pytest.raises(cluster.ResourceError, match="did you mean 'partition'"):
        cluster.submit(["true"], log_dir=tmp_path, partiton="debug")


def test_cancel_and_timeout(slurm, job_env, tmp_path, cancel_after):
    job = cluster.submit(["sleep", "300"], launcher="none", partition=slurm,
                         log_dir=tmp_path, environment=job_env)
    cancel_after.append(job.job_id)
    with pytest.raises(cluster.ClusterTimeoutError, match=f"job {job.job_id} not finished"):
        cluster.wait(job.job_id, timeout=1, log_dir=str(tmp_path))
    cluster.cancel(job.job_id)
    st = cluster.wait(job.job_id, timeout=60)
    assert st.state == "CANCELLED" and st.finished and not st.ok


def test_unknown_job_is_a_clear_error(slurm, tmp_path):
    with pytest.raises(ClusterError, match="job 999999 is unknown to Slurm"):
        cluster.status(999999, log_dir=str(tmp_path))
    with pytest.raises(ClusterError, match="scancel failed"):
        cluster.cancel(999999)


def test_status_file_answers_after_slurm_forgets(slurm, tmp_path):
    # Jobs leave scontrol after MinJobAge; the status file next to the logs remains.
    (tmp_path / "nonsense-987654.status").write_text("FAILED 3\n")
    st = cluster.status("987654", log_dir=str(tmp_path))
    assert (st.state, st.exit_code) == ("FAILED", 3)
    assert st.stdout == str(tmp_path / "nonsense-987654.out")


def test_mpi_template_runs_as_is(slurm, job_env, tmp_path, cancel_after):
    # The hand-written template in slurm/templates/ submitted with plain sbatch.
    template = Path(__file__).resolve().parents[2] / "slurm" / "templates" / "mpi.sbatch"
    env = {**__import__("os").environ, **job_env}
    proc = subprocess.run(
        ["sbatch", "--parsable", f"--partition={slurm}", "--ntasks=2",
         f"--output={tmp_path}/%x-%j.out", f"--error={tmp_path}/%x-%j.err", str(template),
         sys.executable, "-c",
         "import os; print('rank', os.environ['OMPI_COMM_WORLD_RANK'])"],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    cancel_after.append(job_id)
    st = cluster.wait(job_id, timeout=60)
    out = Path(st.stdout).read_text()
    assert st.state == "COMPLETED", out + Path(st.stderr).read_text()
    assert sorted(line for line in out.splitlines() if line.startswith("rank")) == \
        ["rank 0", "rank 1"]


def test_srun_launcher_ranks_map_through_the_slurm_row(slurm, job_env, tmp_path, cancel_after):
    code = ("import json; from nonsense_hpc.cluster import JobEnvironment as J; e = J.from_env(); "
            "print(json.dumps([e.rank, e.world_size, e.local_rank, e.source, e.job_id]))")
    job = cluster.submit([sys.executable, "-c", code], ntasks=2, launcher="srun",
                         partition=slurm, log_dir=tmp_path, environment=job_env)
    cancel_after.append(job.job_id)
    st = job.wait(timeout=60)
    assert st.ok, job.logs("stderr")
    rows = sorted(json.loads(line) for line in job.logs().splitlines())
    assert rows == [[0, 2, 0, "slurm", job.job_id], [1, 2, 1, "slurm", job.job_id]]
