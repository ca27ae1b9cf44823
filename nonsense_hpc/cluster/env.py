"""Where am I in the job? One mapping table from scheduler and launcher variables.

Slurm (``srun``), Open MPI's ``mpirun`` (also inside an ``sbatch`` allocation), PMIx,
MPICH/Hydra's PMI and ``torchrun`` each name rank, world size and local rank
differently. :data:`SOURCES` lists them in the order they are trusted; the first source
whose variables are present wins. :func:`torchrun_environment` turns the result into
the variables ``torch.distributed`` reads (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so existing torch code runs
unchanged under Slurm.

Example:
    >>> env = JobEnvironment.from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4",
    ...                                "SLURM_LOCALID": "1", "SLURM_JOB_ID": "42",
    ...                                "SLURM_JOB_NODELIST": "node[07-08]"})
    >>> (env.rank, env.world_size, env.local_rank, env.source)
    (3, 4, 1, 'slurm')
    >>> torchrun_environment(env)["MASTER_ADDR"]
    'node07'
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from nonsense_hpc.errors import ConfigError

__all__ = [
    "ALLOCATION_VARIABLES",
    "SOURCES",
    "JobEnvironment",
    "allocation_environment",
    "apply_torchrun_environment",
    "expand_hostlist",
    "master_port",
    "torchrun_environment",
]

# name -> (rank, world size, local rank, local world size, node rank) variable names.
# Order matters: a launcher started inside an allocation (mpirun in sbatch) must win over
# the allocation's own SLURM_PROCID, which is 0 in every process of the batch step.
SOURCES: tuple[tuple[str, tuple[str, str, str, str | None, str | None]], ...] = (
    ("torchrun", ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")),
    ("openmpi", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", None)),
    ("pmix", ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE", None)),
    ("pmi", ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", None)),
    ("slurm", ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None, "SLURM_NODEID")),
)

# Job-wide variables, first present wins.
_JOB_ID = ("SLURM_JOB_ID", "SLURM_JOBID")
_NODELIST = ("SLURM_JOB_NODELIST", "SLURM_NODELIST")
_NUM_NODES = ("SLURM_JOB_NUM_NODES", "SLURM_NNODES")
_RESTARTS = ("SLURM_RESTART_COUNT",)
DEFAULT_PORT = 29500
_PORT_BASE, _PORT_SPAN = 20000, 20000


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


def _int(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an integer") from None


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm host list such as ``"n[01-03,7],gpu1"`` (no ``scontrol`` needed).

    Raises:
        ConfigError: a malformed bracket expression.
    """
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?([^,]*)", text):
        prefix, ranges, suffix = match.group(1), match.group(2), match.group(3)
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ConfigError(f"malformed host list {text!r}")
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{n:0{len(lo)}d}{suffix}")
    return hosts


def master_port(job_id: str | None) -> int:
    """A port every rank of a job derives alike: 20000 + job id mod 20000 (or 29500)."""
    if job_id and job_id.split("_")[0].isdigit():
        return _PORT_BASE + int(job_id.split("_")[0]) % _PORT_SPAN
    return DEFAULT_PORT


@dataclass(frozen=True)
class JobEnvironment:
    """This process's place in a parallel job.

    Attributes:
        rank: global rank (0 .. world_size-1).
        world_size: number of processes.
        local_rank: rank among the processes on this node.
        local_world_size: processes on this node.
        node_rank: index of this node in the job.
        num_nodes: nodes in the job.
        job_id: the Slurm job id, or None outside Slurm.
        hostnames: the job's nodes, expanded from the node list (``[]`` outside Slurm).
        restart_count: how many times Slurm requeued the job (``SLURM_RESTART_COUNT``).
        source: which entry of :data:`SOURCES` gave the ranks (``"single"`` if none).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    job_id: str | None = None
    hostnames: tuple[str, ...] = ()
    restart_count: int = 0
    source: str = "single"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobEnvironment:
        """Read the environment through :data:`SOURCES`.

        Args:
            environ: the variables to read (default ``os.environ``).

        Raises:
            ConfigError: a variable is not an integer, or the ranks are inconsistent.
        """
        env = os.environ if environ is None else environ
        job_id = _first(env, _JOB_ID)
        nodelist = _first(env, _NODELIST)
        hosts = tuple(expand_hostlist(nodelist)) if nodelist else ()
        nodes_text = _first(env, _NUM_NODES)
        num_nodes = int(nodes_text) if nodes_text and nodes_text.isdigit() else max(len(hosts), 1)
        restarts_text = _first(env, _RESTARTS)
        restarts = int(restarts_text) if restarts_text and restarts_text.isdigit() else 0
        common = {"job_id": job_id, "hostnames": hosts, "restart_count": restarts,
                  "num_nodes": num_nodes}
        for source, (rank_v, size_v, local_v, local_size_v, node_v) in SOURCES:
            if rank_v not in env or size_v not in env:
                continue
            rank, size = _int(env, rank_v), _int(env, size_v)
            local = _int(env, local_v) if local_v in env else rank
            local_size = (_int(env, local_size_v) if local_size_v and local_size_v in env
                          else max(size // max(num_nodes, 1), 1))
            if node_v and node_v in env:
                node = _int(env, node_v)
            else:
                node = rank // local_size if local_size else 0
            if size < 1 or not 0 <= rank < size or not 0 <= local < max(local_size, local + 1):
                raise ConfigError(f"inconsistent ranks from {source}: {rank_v}={rank}, "
                                  f"{size_v}={size}, {local_v}={local}")
            return cls(rank=rank, world_size=size, local_rank=local,
                       local_world_size=local_size, node_rank=node, source=source,
                       **common)  # type: ignore[arg-type]
        return cls(**common)  # type: ignore[arg-type]

    @property
    def master_addr(self) -> str:
        """Host of rank 0: the first node of the job (``127.0.0.1`` outside Slurm)."""
        return self.hostnames[0] if self.hostnames else "127.0.0.1"


def torchrun_environment(env: JobEnvironment | None = None,
                         environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables ``torch.distributed`` (``init_method="env://"``) reads.

    ``MASTER_ADDR`` and ``MASTER_PORT`` already in ``environ`` are kept (the user chose
    them); otherwise the first node of the job and a port derived from the job id.

    Args:
        env: where this process is (default: read from ``environ``).
        environ: the environment (default ``os.environ``).
    """
    base = os.environ if environ is None else environ
    job = JobEnvironment.from_env(base) if env is None else env
    return {
        "RANK": str(job.rank),
        "WORLD_SIZE": str(job.world_size),
        "LOCAL_RANK": str(job.local_rank),
        "LOCAL_WORLD_SIZE": str(job.local_world_size),
        "GROUP_RANK": str(job.node_rank),
        "MASTER_ADDR": base.get("MASTER_ADDR") or job.master_addr,
        "MASTER_PORT": base.get("MASTER_PORT") or str(master_port(job.job_id)),
    }


def apply_torchrun_environment(environ: MutableMapping[str, str] | None = None
                               ) -> JobEnvironment:
    """Set the torchrun variables in ``environ`` (default ``os.environ``) and return where we are.

    Call it before ``torch.distributed.init_process_group("gloo")`` in code that used to
    run under ``torchrun`` and now runs under ``srun`` or ``mpirun``.
    """
    target = os.environ if environ is None else environ
    job = JobEnvironment.from_env(target)
    target.update(torchrun_environment(job, target))
    return job


#: What an MPI launcher needs to see the Slurm allocation (Open MPI/PRRTE, MPICH/Hydra).
ALLOCATION_VARIABLES = ("SLURM_NODELIST", "SLURM_JOB_NODELIST", "SLURM_TASKS_PER_NODE",
                        "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_JOB_NUM_NODES", "SLURM_NNODES",
                        "SLURM_JOB_CPUS_PER_NODE", "SLURM_CPUS_ON_NODE")


def _ancestor_allocation(job_id: str) -> dict[str, str]:
    """SLURM_* of the nearest ancestor process of the same job (Linux /proc)."""
    pid = os.getppid()
    for _ in range(32):
        if pid <= 1:
            break
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pairs = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                     if "=" in item)
        if pairs.get("SLURM_JOB_ID") == job_id and "SLURM_NODELIST" in pairs:
            return {k: pairs[k] for k in ALLOCATION_VARIABLES if k in pairs}
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return {}


def _scontrol_allocation(job_id: str) -> dict[str, str]:
    exe = shutil.which("scontrol")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "show", "job", "-o", job_id], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields = dict(t.split("=", 1) for t in out.split() if "=" in t)
    nodes, tasks = fields.get("NodeList", ""), fields.get("NumTasks", "")
    if not nodes or nodes == "(null)" or not tasks.isdigit():
        return {}
    count = len(expand_hostlist(nodes))
    per, extra = divmod(int(tasks), count)
    layout = ([f"{per + 1}(x{extra})"] if extra else []) + \
        ([f"{per}(x{count - extra})"] if count - extra else [])
    return {"SLURM_NODELIST": nodes, "SLURM_JOB_NODELIST": nodes, "SLURM_NTASKS": tasks,
            "SLURM_NPROCS": tasks, "SLURM_NNODES": str(count),
            "SLURM_JOB_NUM_NODES": str(count),
            "SLURM_TASKS_PER_NODE": ",".join(layout).replace("(x1)", "")}


def allocation_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Slurm allocation variables missing from ``environ``, recovered.

    Inside a job whose environment lost the allocation (Snakemake's slurm-jobstep
    executor keeps only ``SLURM_JOB_ID`` for the rule's shell), ``mpirun`` sees a Slurm
    job without a node list and refuses to start. This recovers the variables from the
    nearest ancestor process of the same job (``/proc``), else from ``scontrol show
    job`` (tasks spread evenly over the nodes). Outside a job, or when nothing is
    missing, it returns ``{}``.
    """
    env = os.environ if environ is None else environ
    job_id = _first(env, _JOB_ID)
    if not job_id or "SLURM_NODELIST" in env:
        return {}
    found = _ancestor_allocation(job_id) or _scontrol_allocation(job_id)
    return {k: v for k, v in found.items() if k not in env}
