"""The thin layer that runs Slurm's commands: submit, status, wait, cancel, logs.

Every call shells out to ``sbatch --parsable``, ``scontrol``, ``squeue`` or
``scancel`` with a timeout and turns a failure into :class:`~nonsense_hpc.errors.ClusterError`
carrying Slurm's own message. There is no accounting daemon on small clusters (and on
the local one), so ``sacct`` is never used: a finished job is read from ``scontrol``
while the controller keeps it (``MinJobAge``), then from the ``.status`` file the batch
script writes next to its logs.

Example:
    >>> job = submit(["python", "-c", "print('hi')"], ntasks=2, time="5")  # doctest: +SKIP
    >>> job.wait(timeout=120).state                                       # doctest: +SKIP
    'COMPLETED'
    >>> print(job.logs())                                                 # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nonsense_hpc.cluster.slurm import render_sbatch, validate_parameters
from nonsense_hpc.errors import ClusterError, ClusterTimeoutError, ConfigError

__all__ = [
    "FINISHED_STATES",
    "ClusterTimeoutError",
    "Job",
    "JobStatus",
    "cancel",
    "logs",
    "requeue",
    "run_slurm",
    "status",
    "submit",
    "submit_script",
    "wait",
]

#: States after which a job never runs again (a requeued job passes through others).
FINISHED_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "REVOKED", "SPECIAL_EXIT",
})
DEFAULT_LOG_DIR = "slurm-logs"
_COMMAND_TIMEOUT = 60.0


def run_slurm(argv: Sequence[str], *, input_text: str | None = None,
              timeout: float = _COMMAND_TIMEOUT, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    """Run one Slurm command with a timeout.

    Raises:
        ClusterError: the command is missing, timed out, or (with ``check``) failed; the
            message carries its standard error.
    """
    exe = shutil.which(argv[0])
    if exe is None:
        raise ClusterError(f"{argv[0]} not found: this machine is not a Slurm submit host "
                           "(start the local one with: sudo bash slurm/local-cluster/up.sh)")
    try:
        proc = subprocess.run([exe, *argv[1:]], input=input_text, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{' '.join(argv)} did not answer within {timeout:.0f} s "
                           "(is slurmctld running?)") from None
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise ClusterError(f"{argv[0]} failed: {message}")
    return proc


@dataclass(frozen=True)
class JobStatus:
    """One look at a job.

    Attributes:
        job_id: the Slurm job id.
        state: Slurm's state name (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...).
        exit_code: the batch script's exit status once finished, else None.
        reason: why it is pending or failed (Slurm's Reason field), "" if none.
        restarts: how many times it was requeued.
        stdout: path of its standard output log ("" if unknown).
        stderr: path of its standard error log ("" if unknown).
    """

    job_id: str
    state: str
    exit_code: int | None = None
    reason: str = ""
    restarts: int = 0
    stdout: str = ""
    stderr: str = ""

    @property
    def finished(self) -> bool:
        """Whether the job reached a state it never leaves."""
        return self.state in FINISHED_STATES

    @property
    def ok(self) -> bool:
        """Finished and COMPLETED with exit code 0."""
        return self.state == "COMPLETED" and not self.exit_code


def _parse_scontrol(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _status_file(job_id: str, log_dir: str | None) -> JobStatus | None:
    pattern = os.path.join(log_dir or DEFAULT_LOG_DIR, f"*-{job_id}.status")
    for path in glob.glob(pattern):
        words = Path(path).read_text().split()
        if len(words) == 2 and words[1].lstrip("-").isdigit():
            base = path[: -len(".status")]
            return JobStatus(job_id, words[0], int(words[1]), stdout=base + ".out",
                             stderr=base + ".err")
    return None


def status(job_id: str | int, *, log_dir: str | None = None) -> JobStatus:
    """The job's current state (``scontrol show job``, then its ``.status`` file).

    Args:
        job_id: the job.
        log_dir: where its logs are, for jobs the controller has forgotten.

    Raises:
        ClusterError: Slurm does not know the job and no status file was found.
    """
    jid = str(job_id)
    proc = run_slurm(["scontrol", "show", "job", "-o", jid], check=False)
    if proc.returncode == 0 and "JobState=" in proc.stdout:
        f = _parse_scontrol(proc.stdout)
        state = f.get("JobState", "UNKNOWN")
        code = f.get("ExitCode", "")
        exit_code = int(code.split(":")[0]) if state in FINISHED_STATES and code else None
        restarts = f.get("Restarts", "0")
        reason = f.get("Reason", "")
        return JobStatus(jid, state, exit_code, "" if reason == "None" else reason,
                         int(restarts) if restarts.isdigit() else 0,
                         f.get("StdOut", ""), f.get("StdErr", ""))
    found = _status_file(jid, log_dir)
    if found is not None:
        return found
    message = (proc.stderr or proc.stdout).strip()
    raise ClusterError(f"job {jid} is unknown to Slurm ({message or 'no record'}) and has no "
                       f"status file under {log_dir or DEFAULT_LOG_DIR}")


def wait(job_id: str | int, *, timeout: float | None = None, log_dir: str | None = None,
         poll: float = 0.2, max_poll: float = 2.0) -> JobStatus:
    """Wait until the job is finished (requeues are waited through).

    Args:
        job_id: the job.
        timeout: seconds to wait at most (None: for ever).
        log_dir: where its logs are (see :func:`status`).
        poll: first interval between looks; it doubles up to ``max_poll``.
        max_poll: longest interval between looks.

    Raises:
        ClusterTimeoutError: not finished within ``timeout``; the message has the last state.
        ClusterError: the job is unknown.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = poll
    while True:
        st = status(job_id, log_dir=log_dir)
        if st.finished:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            why = f", reason {st.reason}" if st.reason else ""
            raise ClusterTimeoutError(f"job {job_id} not finished after {timeout} s "
                                      f"(state {st.state}{why})")
        pause = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(pause, 0.0))
        interval = min(interval * 2, max_poll)


def cancel(job_id: str | int, *, signal: str | None = None, batch_only: bool = False) -> None:
    """``scancel`` the job, or send it a signal (``signal="USR1"``).

    Args:
        job_id: the job.
        signal: send this signal instead of cancelling.
        batch_only: deliver the signal to the batch shell only (as ``--signal=B:`` does).

    Raises:
        ClusterError: scancel failed (an unknown job, for instance).
    """
    argv = ["scancel", "--verbose"]
    if signal:
        argv.append(f"--signal={signal}")
    if batch_only:
        argv.append("--batch")
    proc = run_slurm([*argv, str(job_id)])
    # scancel exits 0 even for an unknown job; only --verbose prints the error.
    errors = [line.split("error: ", 1)[1] for line in proc.stderr.splitlines()
              if "error: " in line]
    if errors:
        raise ClusterError(f"scancel failed: {'; '.join(errors)}")


def requeue(job_id: str | int) -> None:
    """``scontrol requeue`` the job: it stops and goes back to the queue.

    Raises:
        ClusterError: Slurm refused (not requeueable, unknown job).
    """
    run_slurm(["scontrol", "requeue", str(job_id)])


def logs(job_id: str | int, *, stream: str = "stdout", log_dir: str | None = None) -> str:
    """The text of the job's standard output (or ``stream="stderr"``) so far.

    Raises:
        ConfigError: ``stream`` is neither stdout nor stderr.
        ClusterError: the job is unknown or its log file does not exist (yet).
    """
    if stream not in ("stdout", "stderr"):
        raise ConfigError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
    st = status(job_id, log_dir=log_dir)
    path = st.stdout if stream == "stdout" else st.stderr
    if not path or not os.path.exists(path):
        if st.state == "PENDING":
            return ""
        raise ClusterError(f"no {stream} log for job {job_id} at {path or '(unknown path)'} "
                           f"(state {st.state})")
    return Path(path).read_text(errors="replace")


def submit_script(script: str, *, cwd: str | None = None,
                  sbatch_args: Sequence[str] = ()) -> str:
    """``sbatch --parsable`` a script given as text; returns the job id.

    Raises:
        ClusterError: sbatch refused the job (an impossible request is refused here,
            with Slurm's reason).
    """
    proc = run_slurm(["sbatch", "--parsable", *sbatch_args], input_text=script, check=False)
    if proc.returncode != 0:
        message = " ".join(line.removeprefix("sbatch: error: ")
                           for line in proc.stderr.strip().splitlines()) or "no message"
        raise ClusterError(f"Slurm refused the job: {message}")
    return proc.stdout.strip().split(";")[0]


@dataclass
class Job:
    """A submitted job; methods mirror the module functions.

    Attributes:
        job_id: the Slurm job id.
        log_dir: absolute directory of its logs.
        script: the batch script that was submitted.
    """

    job_id: str
    log_dir: str
    script: str = field(default="", repr=False)

    def status(self) -> JobStatus:
        """See :func:`status`."""
        return status(self.job_id, log_dir=self.log_dir)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """See :func:`wait`."""
        return wait(self.job_id, timeout=timeout, log_dir=self.log_dir)

    def cancel(self, signal: str | None = None, batch_only: bool = False) -> None:
        """See :func:`cancel`."""
        cancel(self.job_id, signal=signal, batch_only=batch_only)

    def logs(self, stream: str = "stdout") -> str:
        """See :func:`logs`."""
        return logs(self.job_id, stream=stream, log_dir=self.log_dir)

    def done(self) -> bool:
        """Whether the job is finished (as ``concurrent.futures.Future.done``)."""
        return self.status().finished


def _tool() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "nonsense-hpc")
    return here if os.access(here, os.X_OK) else (shutil.which("nonsense-hpc") or "nonsense-hpc")


def submit(command: Sequence[str] | str, *, nodes: int | str | None = None,
           ntasks: int | None = None, time: str | int | None = None,
           partition: str | None = None, container: str | None = None,
           launcher: str = "mpirun", log_dir: str | os.PathLike[str] | None = None,
           environment: Mapping[str, str] | None = None, setup: Sequence[str] = (),
           max_requeues: int = 3, warning_seconds: int | None = 120,
           launcher_args: Sequence[str] = (), **resources: object) -> Job:
    """Render the batch script for ``command`` and submit it with ``sbatch --parsable``.

    Args:
        command: the program and its arguments, started once per task by ``launcher``.
        nodes: number of nodes.
        ntasks: number of tasks (ranks).
        time: time limit (Slurm formats, ``"30"`` is 30 minutes).
        partition: partition to submit to.
        container: run each rank in this image (``nonsense-hpc container exec``).
        launcher: ``"mpirun"`` (default: this environment's, see
            :func:`nonsense_hpc.launch.find_mpirun`), ``"srun"`` or ``"none"``.
        log_dir: where the logs go (default ``./slurm-logs``; created).
        environment: variables exported in the job.
        setup: shell lines run before the launch.
        max_requeues: how often the preemption handler may requeue the job.
        warning_seconds: warning signal this long before the time limit (None: none).
        launcher_args: extra launcher options.
        **resources: any other resource from
            :data:`nonsense_hpc.cluster.slurm.PARAMETERS` (``mem="4G"``, ``qos=...``).

    Returns:
        The :class:`Job`.

    Raises:
        ResourceError: an unknown or malformed resource (lists every valid one).
        ClusterError: Slurm refused the job, with its reason.
    """
    from nonsense_hpc.launch import find_mpirun

    params: dict[str, object] = {"nodes": nodes, "ntasks": ntasks, "time": time,
                                 "partition": partition, **resources}
    params = validate_parameters({k: v for k, v in params.items() if v is not None})
    directory = os.path.abspath(os.fspath(log_dir) if log_dir else DEFAULT_LOG_DIR)
    os.makedirs(directory, exist_ok=True)
    script = render_sbatch(
        command, params, log_dir=directory, launcher=launcher,
        mpirun=find_mpirun() if launcher == "mpirun" else "mpirun",
        launcher_args=launcher_args, container=container, tool=_tool(),
        environment=environment, setup=setup, warning_seconds=warning_seconds,
        max_requeues=max_requeues)
    job_id = submit_script(script)
    return Job(job_id, directory, script)
