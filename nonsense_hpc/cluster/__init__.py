"""Slurm jobs: render and submit sbatch scripts, follow them, map SLURM_* to ranks.

Example:
    >>> from nonsense_hpc import cluster
    >>> job = cluster.submit(["python", "train.py"], ntasks=2, time="30")  # doctest: +SKIP
    >>> cluster.wait(job.job_id, timeout=600).state                        # doctest: +SKIP
    'COMPLETED'
"""

from nonsense_hpc.cluster.env import (
    ALLOCATION_VARIABLES,
    SOURCES,
    JobEnvironment,
    allocation_environment,
    apply_torchrun_environment,
    expand_hostlist,
    master_port,
    torchrun_environment,
)
from nonsense_hpc.cluster.jobs import (
    FINISHED_STATES,
    ClusterTimeoutError,
    Job,
    JobStatus,
    cancel,
    logs,
    requeue,
    status,
    submit,
    submit_script,
    wait,
)
from nonsense_hpc.cluster.preempt import PreemptionHandler
from nonsense_hpc.cluster.slurm import (
    LAUNCHERS,
    PARAMETERS,
    ResourceError,
    container_command,
    parse_time,
    render_sbatch,
    validate_parameters,
)

__all__ = [
    "ALLOCATION_VARIABLES",
    "FINISHED_STATES",
    "LAUNCHERS",
    "PARAMETERS",
    "SOURCES",
    "ClusterTimeoutError",
    "Job",
    "JobEnvironment",
    "JobStatus",
    "PreemptionHandler",
    "ResourceError",
    "allocation_environment",
    "apply_torchrun_environment",
    "cancel",
    "container_command",
    "expand_hostlist",
    "logs",
    "master_port",
    "parse_time",
    "render_sbatch",
    "requeue",
    "status",
    "submit",
    "submit_script",
    "torchrun_environment",
    "validate_parameters",
    "wait",
]
