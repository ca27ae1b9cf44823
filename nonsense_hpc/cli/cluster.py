"""``nonsense-hpc submit|status|cancel|logs``: Slurm jobs from the command line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from nonsense_hpc.cluster.slurm import PARAMETERS

__all__ = ["BENCH_COMMANDS", "COMMANDS", "cancel", "logs", "mpirun", "status", "submit"]


def _valid_listing(command: click.Command) -> str:
    opts = sorted({o for p in command.params if isinstance(p, click.Option) for o in p.opts
                   if o.startswith("--")})
    resources = ", ".join(sorted(PARAMETERS))
    return (f"valid options: {', '.join(opts)}\n"
            f"any Slurm resource as --resource NAME=VALUE (-r): {resources}")


class _ResourceCommand(click.Command):
    """A command whose unknown-option error lists every valid option and resource."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            import difflib

            names = [o for p in self.params if isinstance(p, click.Option) for o in p.opts]
            names += ["--" + k.replace("_", "-") for k in PARAMETERS]
            close = difflib.get_close_matches(exc.option_name, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise click.UsageError(
                f"unknown resource or option {exc.option_name}{hint}\n{_valid_listing(self)}",
                ctx) from None


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=what)
        out[key] = value
    return out


@click.command(cls=_ResourceCommand, context_settings={"ignore_unknown_options": False})
@click.option("--nodes", "-N", help="Number of nodes (or a range such as 2-4).")
@click.option("--ntasks", "-n", type=int, help="Number of tasks (MPI ranks) in the job.")
@click.option("--time", "-t", "time_limit",
              help="Time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S (sbatch formats).")
@click.option("--partition", "-p", help="Partition (queue) to submit to.")
@click.option("--container", metavar="IMAGE",
              help="Run each rank in this image (nonsense-hpc container exec IMAGE -- CMD).")
@click.option("--job-name", "-J", help="Job name (log files are NAME-JOBID.out/.err).")
@click.option("--mem", help="Memory per node, e.g. 4G.")
@click.option("--cpus-per-task", "-c", type=int, help="CPUs for each task.")
@click.option("--ntasks-per-node", type=int, help="Tasks on each node.")
@click.option("--gpus-per-node", type=int, help="GPUs on each node.")
@click.option("--account", "-A", help="Account to charge.")
@click.option("--resource", "-r", "resources", multiple=True, metavar="NAME=VALUE",
              help="Any other Slurm resource (repeatable), e.g. -r qos=high -r gres=gpu:2.")
@click.option("--launcher", type=click.Choice(["mpirun", "srun", "none"]), default="mpirun",
              show_default=True,
              help="How ranks start: host mpirun, srun, or none (run COMMAND once).")
@click.option("--launcher-arg", "launcher_args", multiple=True, metavar="ARG",
              help="Extra launcher option (repeatable), e.g. --launcher-arg=--mpi=pmix.")
@click.option("--env", "-e", "env", multiple=True, metavar="NAME=VALUE",
              help="Export a variable in the job (repeatable).")
@click.option("--setup", multiple=True, metavar="LINE",
              help="Shell line run before the launch (repeatable), e.g. 'module load openmpi'.")
@click.option("--log-dir", type=click.Path(file_okay=False), default="slurm-logs",
              show_default=True, help="Directory of the job's logs and status file.")
@click.option("--max-requeues", type=click.IntRange(min=0), default=3, show_default=True,
              help="How often the preemption handler may requeue the job.")
@click.option("--warning", "warning_seconds", type=click.IntRange(min=0), default=120,
              show_default=True,
              help="Seconds before the time limit Slurm sends SIGUSR1 (0: no signal).")
@click.option("--wait", "wait_", is_flag=True,
              help="Wait for the job, print its logs, exit with its exit status.")
@click.option("--timeout", type=float, default=None,
              help="With --wait: give up after this many seconds (exit 124).")
@click.option("--dry-run", is_flag=True, help="Print the batch script instead of submitting.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def submit(nodes: str | None, ntasks: int | None, time_limit: str | None,
           partition: str | None, container: str | None, job_name: str | None,
           mem: str | None, cpus_per_task: int | None, ntasks_per_node: int | None,
           gpus_per_node: int | None, account: str | None, resources: tuple[str, ...],
           launcher: str, launcher_args: tuple[str, ...], env: tuple[str, ...],
           setup: tuple[str, ...], log_dir: str,
           max_requeues: int, warning_seconds: int, wait_: bool, timeout: float | None,
           dry_run: bool, command: tuple[str, ...]) -> None:
    """Submit COMMAND as a Slurm batch job, one process per task (sbatch --parsable).

    Prints the job id. Each task runs COMMAND under the host launcher (mpirun from this
    environment by default); with --container IMAGE each rank runs inside the image.
    The job asks for SIGUSR1 before its time limit and may requeue itself (see
    nonsense_hpc.cluster.PreemptionHandler). A misspelled resource lists every valid one.

    \b
    Examples:
      nonsense-hpc submit --ntasks 2 --time 10 -- python train.py --epochs 3
      nonsense-hpc submit -n 4 -p debug --container job.sif -r qos=high -- python train.py
      nonsense-hpc submit -n 2 --wait --timeout 300 -- python -c 'print("hi")'
      nonsense-hpc submit -n 2 --dry-run -- hostname
    """
    from nonsense_hpc.cluster import jobs, slurm
    from nonsense_hpc.errors import ClusterError, ConfigError

    params: dict[str, Any] = {
        "nodes": nodes, "ntasks": ntasks, "time": time_limit, "partition": partition,
        "job_name": job_name, "mem": mem, "cpus_per_task": cpus_per_task,
        "ntasks_per_node": ntasks_per_node, "gpus_per_node": gpus_per_node,
        "account": account}
    params = {k: v for k, v in params.items() if v is not None}
    try:
        extra = _pairs(resources, "--resource")
        params.update(slurm.validate_parameters(extra))
        variables = _pairs(env, "--env")
        warning = warning_seconds or None
        if dry_run:
            from nonsense_hpc.launch import find_mpirun

            click.echo(slurm.render_sbatch(
                list(command), params, log_dir=os.path.abspath(log_dir), launcher=launcher,
                mpirun=find_mpirun() if launcher == "mpirun" else "mpirun",
                launcher_args=launcher_args, container=container, environment=variables,
                setup=setup,
                warning_seconds=warning, max_requeues=max_requeues), nl=False)
            return
        job = jobs.submit(list(command), container=container, launcher=launcher,
                          log_dir=log_dir, environment=variables, setup=setup,
                          max_requeues=max_requeues, warning_seconds=warning,
                          launcher_args=launcher_args, **params)
    except (ConfigError, ClusterError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(job.job_id)
    if not wait_:
        return
    try:
        st = job.wait(timeout=timeout)
    except jobs.ClusterTimeoutError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(124) from None
    sys.stdout.write(job.logs())
    sys.stderr.write(job.logs("stderr"))
    if not st.ok:
        click.echo(f"job {job.job_id} {st.state} (exit {st.exit_code})", err=True)
        raise SystemExit(st.exit_code or 1)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--log-dir", default="slurm-logs", show_default=True,
              help="Where to find status files of jobs Slurm has forgotten.")
def status(job_ids: tuple[str, ...], as_json: bool, log_dir: str) -> None:
    """Show the state of JOB_IDS (default: every job Slurm still knows).

    Uses scontrol and squeue (no accounting database needed); a job Slurm has forgotten
    is read from the status file next to its logs.

    \b
    Examples:
      nonsense-hpc status
      nonsense-hpc status 42 43 --json
    """
    from nonsense_hpc.cluster import jobs
    from nonsense_hpc.errors import ClusterError

    try:
        if not job_ids:
            out = jobs.run_slurm(["squeue", "--states=all", "-h", "-o", "%i"]).stdout
            job_ids = tuple(out.split())
        found = [jobs.status(j, log_dir=log_dir) for j in job_ids]
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([s.__dict__ for s in found], indent=2))
        return
    click.echo(f"{'JOBID':<10} {'STATE':<12} {'EXIT':>4} {'RESTARTS':>8}  REASON")
    for s in found:
        code = "" if s.exit_code is None else str(s.exit_code)
        click.echo(f"{s.job_id:<10} {s.state:<12} {code:>4} {s.restarts:>8}  {s.reason}")


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--signal", "-s", "signal_name", metavar="SIG",
              help="Send this signal (e.g. USR1) instead of cancelling.")
@click.option("--batch", is_flag=True,
              help="With --signal: deliver to the batch shell only (as the time-limit "
                   "warning is; it forwards to the ranks).")
def cancel(job_ids: tuple[str, ...], signal_name: str | None, batch: bool) -> None:
    """Cancel JOB_IDS (scancel), or send them a signal.

    \b
    Examples:
      nonsense-hpc cancel 42
      nonsense-hpc cancel --signal USR1 --batch 42     # checkpoint and requeue now
    """
    from nonsense_hpc.cluster import jobs
    from nonsense_hpc.errors import ClusterError

    try:
        for job_id in job_ids:
            jobs.cancel(job_id, signal=signal_name, batch_only=batch)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("job_id")
@click.option("--stderr", "use_stderr", is_flag=True,
              help="Show standard error instead of standard output.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@click.option("--log-dir", default="slurm-logs", show_default=True,
              help="Where to find the logs of jobs Slurm has forgotten.")
def logs(job_id: str, use_stderr: bool, follow: bool, log_dir: str) -> None:
    """Print the output of JOB_ID (its .out file; --stderr for the .err file).

    \b
    Examples:
      nonsense-hpc logs 42
      nonsense-hpc logs 42 --stderr --follow
    """
    from nonsense_hpc.cluster import jobs
    from nonsense_hpc.errors import ClusterError

    which = "stderr" if use_stderr else "stdout"
    try:
        if not follow:
            sys.stdout.write(jobs.logs(job_id, stream=which, log_dir=log_dir))
            return
        shown = 0
        while True:
            finished = jobs.status(job_id, log_dir=log_dir).finished
            text = jobs.logs(job_id, stream=which, log_dir=log_dir)
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            if finished:
                return
            time.sleep(0.5)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
def mpirun(args: tuple[str, ...]) -> None:
    """Run this environment's mpirun inside a Slurm job, allocation restored.

    ARGS are passed to mpirun unchanged. Snakemake's Slurm executor hides the
    allocation (SLURM_NODELIST, SLURM_TASKS_PER_NODE, ...) from a rule's shell, and
    Open MPI then refuses to start; this puts it back (from the job's batch process or
    scontrol) and execs mpirun (NONSENSE_MPIRUN, else the one next to this Python).
    Outside Slurm it is plain mpirun. Use it as the mpi resource of MPI rules.

    \b
    Examples:
      nonsense-hpc mpirun -n 2 python train.py
      # Snakefile:  resources: tasks=2, mpi="nonsense-hpc mpirun"
      #             shell: "{resources.mpi} -n {resources.tasks} python train.py"
    """
    from nonsense_hpc.cluster.env import allocation_environment
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.launch import find_mpirun, mpi_environment

    try:
        exe = find_mpirun()
        env = mpi_environment()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    env.update(allocation_environment(env))
    sys.stdout.flush()
    os.execve(exe, [exe, *args], env)


COMMANDS = [submit, status, cancel, logs, mpirun]


def _bench_commands() -> list[click.Command]:
    from nonsense_hpc.bench.cluster import submit_overhead

    return [submit_overhead]


BENCH_COMMANDS: list[click.Command] = _bench_commands()
