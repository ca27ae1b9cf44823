"""Render sbatch scripts: a pure function, checked against a golden file in the tests.

:func:`render_sbatch` turns a command and a mapping of Slurm resources into the text of a
batch script. It runs nothing and reads nothing from the machine, so the same inputs give
the same script everywhere. The script

- asks for the resources (``#SBATCH --ntasks=2`` ...); an unknown resource name is an
  error that lists every valid one, with a did-you-mean;
- asks for a warning signal before the time limit (``--signal=B:USR1@120``), is
  requeueable (``--requeue``) and appends to its logs across restarts;
- starts the command once per rank with the host launcher (``mpirun -n $SLURM_NTASKS``,
  the hybrid model), optionally wrapped per rank in a container
  (``nonsense-hpc container exec IMAGE -- CMD``), forwards the warning signal to it
  so the ranks can checkpoint, and records the exit status next to the logs.

Example:
    >>> text = render_sbatch(["python", "train.py"], {"ntasks": 2, "time": "10"},
    ...                      log_dir="/logs", launcher="mpirun")
    >>> "#SBATCH --ntasks=2" in text and "mpirun -n" in text
    True
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence

from nonsense_hpc.errors import ConfigError, ResourceError

__all__ = [
    "LAUNCHERS",
    "PARAMETERS",
    "ResourceError",
    "container_command",
    "parse_time",
    "render_sbatch",
    "sbatch_options",
    "validate_parameters",
]

# Every resource a caller may request: python name -> what it means. The sbatch option is
# the name with "_" turned into "-". Flags take True.
PARAMETERS: dict[str, str] = {
    "account": "charge the job to this account",
    "array": "job array indices, e.g. 0-9%2",
    "chdir": "working directory of the batch script",
    "comment": "free text shown by squeue/scontrol",
    "constraint": "node features the job needs",
    "cpus_per_task": "CPUs for each task (rank)",
    "dependency": "start after other jobs, e.g. afterok:123",
    "exclude": "nodes not to use",
    "exclusive": "flag: whole nodes, shared with no other job",
    "gpus": "GPUs for the whole job",
    "gpus_per_node": "GPUs on each node",
    "gpus_per_task": "GPUs for each task",
    "gres": "generic resources, e.g. gpu:2",
    "job_name": "name shown by squeue and used in log file names",
    "mail_type": "events that send mail, e.g. END,FAIL",
    "mail_user": "who gets the mail",
    "mem": "memory per node, e.g. 4G",
    "mem_per_cpu": "memory per CPU, e.g. 2G",
    "nice": "lower the job's priority by this much",
    "nodelist": "nodes to use",
    "nodes": "number of nodes (or min-max)",
    "ntasks": "number of tasks (ranks) in the whole job",
    "ntasks_per_node": "tasks (ranks) on each node",
    "partition": "partition (queue) to submit to",
    "qos": "quality of service",
    "reservation": "run inside this reservation",
    "time": "time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S",
}
_FLAGS = frozenset({"exclusive"})
_INTEGER = frozenset({"cpus_per_task", "gpus", "gpus_per_node", "gpus_per_task", "ntasks",
                      "ntasks_per_node", "nice"})

#: How ranks are started inside the allocation.
LAUNCHERS = ("mpirun", "srun", "none")

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str | int) -> int:
    """Slurm's time-limit formats in seconds (``"30"`` is 30 minutes, as in sbatch).

    Raises:
        ResourceError: not one of M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (or not positive).
    """
    if isinstance(text, int):
        minutes = text
        if minutes <= 0:
            raise ResourceError(f"time must be > 0 minutes, got {text}")
        return minutes * 60
    match = _TIME.match(text.strip())
    if not match:
        raise ResourceError(f"time={text!r} is not a Slurm time limit "
                            "(formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)")
    days, a, b, c = match.groups()
    n = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        hours, minutes, seconds = [*n, 0, 0][:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(n) == 1:
        total = n[0] * 60
    elif len(n) == 2:
        total = n[0] * 60 + n[1]
    else:
        total = n[0] * 3600 + n[1] * 60 + n[2]
    if total <= 0:
        raise ResourceError(f"time={text!r} must be longer than zero")
    return total


def _unknown(name: str) -> ResourceError:
    close = difflib.get_close_matches(name, list(PARAMETERS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    valid = "\n".join(f"  {k:<16} {v}" for k, v in sorted(PARAMETERS.items()))
    return ResourceError(f"unknown Slurm resource {name!r}{hint}; valid resources:\n{valid}")


def validate_parameters(parameters: Mapping[str, object]) -> dict[str, object]:
    """Check names and values; returns them with ``-`` spelled ``_``.

    Raises:
        ResourceError: an unknown name (the message lists every valid one), a flag given
            a value, a count that is not a positive integer, or a malformed time.
    """
    out: dict[str, object] = {}
    for raw, value in parameters.items():
        name = raw.replace("-", "_").lstrip("_")
        if name not in PARAMETERS:
            raise _unknown(raw)
        if value is None:
            continue
        if name in _FLAGS:
            if value not in (True, False, "true", "false", "1", "0", 1, 0):
                raise ResourceError(f"{name} is a flag: give True or False, not {value!r}")
            out[name] = value in (True, "true", "1", 1)
            continue
        if name in _INTEGER:
            try:
                number = int(str(value))
            except ValueError:
                raise ResourceError(f"{name}={value!r} must be an integer") from None
            if number < (0 if name == "nice" else 1):
                raise ResourceError(f"{name}={value!r} must be >= 1")
            out[name] = number
            continue
        if name == "time":
            parse_time(value if isinstance(value, int) else str(value))
        if name == "nodes" and not re.fullmatch(r"\d+(-\d+)?", str(value)):
            raise ResourceError(f"nodes={value!r} must be a count or a range such as 2-4")
        text = str(value)
        if not text or "\n" in text:
            raise ResourceError(f"{name}={value!r} must be a non-empty single line")
        out[name] = value
    return out


def sbatch_options(parameters: Mapping[str, object]) -> list[str]:
    """``--name=value`` options for validated parameters, in a stable (sorted) order."""
    opts = []
    for name, value in sorted(validate_parameters(parameters).items()):
        flag = "--" + name.replace("_", "-")
        if name in _FLAGS:
            if value:
                opts.append(flag)
        else:
            opts.append(f"{flag}={value}")
    return opts


def container_command(image: str, argv: Sequence[str], *, tool: str = "nonsense-hpc"
                      ) -> list[str]:
    """Wrap one rank's command in the package's container runner (hybrid MPI model).

    The host launcher starts one ``nonsense-hpc container exec IMAGE -- CMD`` per rank;
    the runner picks Apptainer, SingularityCE or the local sandbox.

    Raises:
        ConfigError: an empty image name or command.
    """
    if not image:
        raise ConfigError("container image must be a non-empty path or name")
    if not argv:
        raise ConfigError("no command to run in the container")
    return [tool, "container", "exec", image, "--", *argv]


def _launch_line(argv: list[str], launcher: str, mpirun: str,
                 launcher_args: Sequence[str]) -> str:
    if launcher == "none":
        return shlex.join(argv)
    if launcher == "srun":
        return shlex.join(["srun", *launcher_args, *argv])
    extra = "".join(" " + shlex.quote(a) for a in launcher_args)
    return f'{shlex.quote(mpirun)} -n "$SLURM_NTASKS"{extra} {shlex.join(argv)}'


def render_sbatch(
    command: Sequence[str] | str,
    parameters: Mapping[str, object] | None = None,
    *,
    log_dir: str,
    launcher: str = "mpirun",
    mpirun: str = "mpirun",
    launcher_args: Sequence[str] = (),
    container: str | None = None,
    tool: str = "nonsense-hpc",
    environment: Mapping[str, str] | None = None,
    setup: Sequence[str] = (),
    warning_seconds: int | None = 120,
    warning_signal: str = "USR1",
    max_requeues: int = 3,
) -> str:
    """Render the batch script for ``command``.

    Args:
        command: the program and its arguments (a string is split with shlex).
        parameters: Slurm resources, names from :data:`PARAMETERS` (``ntasks``,
            ``time``, ``partition``, ...).
        log_dir: absolute directory for ``NAME-JOBID.out``/``.err`` and the ``.status`` file.
        launcher: ``"mpirun"`` (host launcher, one process per task), ``"srun"`` or
            ``"none"`` (run the command once in the batch shell).
        mpirun: the mpirun to call when ``launcher="mpirun"`` (an absolute path on
            clusters with several MPIs).
        launcher_args: extra launcher options (``--oversubscribe``, ``--mpi=pmix``, ...).
        container: image to run each rank in (see :func:`container_command`).
        tool: the ``nonsense-hpc`` executable used for the container wrap.
        environment: variables exported before the launch.
        setup: shell lines run before the launch (``module load openmpi``, ...).
        warning_seconds: ask Slurm for ``warning_signal`` this long before the time
            limit (clipped to half the limit; None: no signal).
        warning_signal: the signal name (without ``SIG``).
        max_requeues: exported as ``NONSENSE_MAX_REQUEUES`` for the preemption handler.

    Returns:
        The script text.

    Raises:
        ResourceError: an invalid resource (see :func:`validate_parameters`).
        ConfigError: an empty command, unknown launcher, relative log_dir, bad variable
            name or a negative requeue bound.
    """
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise ConfigError("no command given to submit")
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if not log_dir.startswith("/"):
        raise ConfigError(f"log_dir must be an absolute path, got {log_dir!r}")
    if max_requeues < 0:
        raise ConfigError(f"max_requeues must be >= 0, got {max_requeues}")
    params = validate_parameters(parameters or {})
    params.setdefault("job_name", "nonsense")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(params["job_name"])):
        raise ResourceError(f"job_name={params['job_name']!r}: use letters, digits, . _ + -")
    if warning_seconds is not None and "time" in params:
        limit = parse_time(params["time"] if isinstance(params["time"], int)
                           else str(params["time"]))
        warning_seconds = max(1, min(warning_seconds, limit // 2))
    if container is not None:
        argv = container_command(container, argv, tool=tool)
    env = dict(environment or {})
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"not an environment variable name: {key!r}")

    logs = log_dir.rstrip("/") or "/"
    lines = ["#!/bin/bash", "# Rendered by nonsense_hpc.cluster.render_sbatch."]
    lines += [f"#SBATCH {opt}" for opt in sbatch_options(params)]
    lines += [
        f"#SBATCH --output={logs}/%x-%j.out",
        f"#SBATCH --error={logs}/%x-%j.err",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
    ]
    if warning_seconds is not None:
        lines.append(f"#SBATCH --signal=B:{warning_signal}@{warning_seconds}")
    lines += [
        "",
        "set -o pipefail",
        'export NONSENSE_JOB_ID="$SLURM_JOB_ID"',
        f"export NONSENSE_MAX_REQUEUES={max_requeues}",
    ]
    if launcher == "mpirun":
        # The Open MPI wheel's UCX one-sided component warns on every shared window.
        lines.append('export OMPI_MCA_osc="${OMPI_MCA_osc:-^ucx}"')
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += list(setup)
    status = f'{shlex.quote(logs)}/"$SLURM_JOB_NAME-$SLURM_JOB_ID.status"'
    launch = _launch_line(argv, launcher, mpirun, launcher_args)
    lines += [
        'echo "nonsense: job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on '
        '$SLURM_JOB_NODELIST at $(date +%s.%N)" >&2',
        f"rm -f {status}",
        "",
        "# Start the ranks in the background so the warning signal reaches this shell,",
        "# then forward it to the launcher, which forwards it to every rank.",
        'child=""',
        f"trap '[ -n \"$child\" ] && kill -{warning_signal} \"$child\" 2>/dev/null' "
        f"{warning_signal}",
        f"{launch} &",
        "child=$!",
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; done',
        'wait "$child"; rc=$?',
        f'if [ "$rc" = 0 ]; then echo "COMPLETED 0" > {status}; '
        f'else echo "FAILED $rc" > {status}; fi',
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


_THIN_LAYER = frozenset({"Job", "JobStatus", "cancel", "logs", "requeue", "status", "submit",
                         "submit_script", "wait"})


def __getattr__(name: str) -> object:
    # The thin command layer lives in nonsense_hpc.cluster.jobs (it imports this module);
    # nonsense_hpc.cluster.slurm.submit and friends reach it too.
    if name in _THIN_LAYER:
        from nonsense_hpc.cluster import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
