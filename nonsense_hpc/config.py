"""One strict settings object, read from ``NONSENSE_*`` environment variables.

Every option has a default that works on a laptop; a job script or Slurm profile sets the
variables, and code can override them with :func:`dataclasses.replace`. An unknown
``NONSENSE_*`` variable is an error that lists every valid one, so a typo never passes
silently.

Example:
    >>> from nonsense_hpc.config import Settings
    >>> s = Settings.from_env({"NONSENSE_TIMEOUT": "30"})
    >>> s.timeout
    30.0
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["PREFIX", "Settings", "get_settings", "parse_size"]

PREFIX = "NONSENSE_"

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_size(text: str | int) -> int:
    """Parse a byte size such as ``"25MiB"``, ``"64k"`` or ``1048576``.

    Args:
        text: an integer, or a number followed by an optional unit (B, KiB, MiB, GiB,
            case-insensitive; k/m/g mean the binary units).

    Returns:
        The size in bytes.

    Raises:
        ConfigError: the text is not a size.
    """
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"size must be >= 0, got {text}")
        return text
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    if unit not in _UNITS or not num:
        raise ConfigError(f"not a size: {text!r} (examples: 4096, 64KiB, 25MiB, 1GiB)")
    try:
        value = float(num)
    except ValueError:
        raise ConfigError(f"not a size: {text!r} (examples: 4096, 64KiB, 25MiB, 1GiB)") from None
    if value < 0:
        raise ConfigError(f"size must be >= 0, got {text!r}")
    return int(value * _UNITS[unit])


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {text!r} (use 1/0, true/false, yes/no, on/off)")


@dataclass(frozen=True)
class Settings:
    """Runtime settings shared by the whole package.

    Attributes:
        timeout: seconds a collective waits for a peer before raising
            CollectiveTimeoutError (``NONSENSE_TIMEOUT``; 0 waits for ever).
        bucket_bytes: fusion bucket size for many small tensors (``NONSENSE_BUCKET_BYTES``,
            default 25 MiB as in DDP).
        chunk_bytes: pipeline chunk for large messages between node leaders
            (``NONSENSE_CHUNK_BYTES``).
        shm_bytes: size of the per-node shared-memory arena each Tree allocates
            (``NONSENSE_SHM_BYTES``); larger messages go through it in slices.
        ranks_per_node: split one machine into pretend nodes of this many ranks, so the
            inter-node path runs without a cluster (``NONSENSE_RANKS_PER_NODE``; 0 = use
            the real node boundaries).
        small_bytes: messages up to this size use the one-round path inside a node
            (``NONSENSE_SMALL_BYTES``; scaled down by 2/ranks-per-node on nodes of more than
            2 ranks, since every rank folds every slot), and the leaders' tree rather than
            their ring between nodes.
        piece_bytes: larger messages move through the shared window in pieces of this
            size (``NONSENSE_PIECE_BYTES``, default 2 MiB): each piece stays in cache from
            copy-in to fold to copy-out, so memory sees little more than one copy.
        cma_bytes: with transport ``auto``, messages at least this large are read straight
            from the peers' buffers with ``process_vm_readv`` instead (``NONSENSE_CMA_BYTES``;
            0, the default, never: staged pieces measured faster on the project machines).
        trace: record every send, receive and reduction step (``NONSENSE_TRACE``).
        transport: how ranks of one node exchange data (``NONSENSE_TRANSPORT``):
            ``auto`` (read peers' memory directly when the kernel allows it, else stage
            through the shared window), ``cma`` (require direct reads) or ``shm``.
        cuda: how CUDA tensors are reduced (``NONSENSE_CUDA``): ``auto`` (passed to the
            MPI library directly when it is CUDA-aware, staged through pinned host memory
            otherwise), ``direct`` (require a CUDA-aware MPI) or ``staged`` (always
            through the host, which keeps the Tree's fixed rank order of reduction).
    """

    timeout: float = 120.0
    bucket_bytes: int = 25 * 1024**2
    chunk_bytes: int = 4 * 1024**2
    shm_bytes: int = 64 * 1024**2
    ranks_per_node: int = 0
    small_bytes: int = 256 * 1024
    piece_bytes: int = 2 * 1024**2
    cma_bytes: int = 0
    trace: bool = False
    transport: str = "auto"
    cuda: str = "auto"

    def __post_init__(self) -> None:
        if self.timeout < 0:
            raise ConfigError(f"timeout must be >= 0 seconds, got {self.timeout}")
        if self.cma_bytes < 0:
            raise ConfigError(f"cma_bytes must be >= 0, got {self.cma_bytes}")
        for name in ("bucket_bytes", "chunk_bytes", "shm_bytes", "small_bytes", "piece_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.transport not in ("auto", "cma", "shm"):
            raise ConfigError(f"transport must be auto, cma or shm, got {self.transport!r}")
        if self.cuda not in ("auto", "direct", "staged"):
            raise ConfigError(f"cuda must be auto, direct or staged, got {self.cuda!r}")
        if self.ranks_per_node < 0:
            raise ConfigError(f"ranks_per_node must be >= 0, got {self.ranks_per_node}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``NONSENSE_*`` variables.

        Args:
            environ: the environment to read (default: ``os.environ``).

        Raises:
            ConfigError: a value does not parse, or a ``NONSENSE_*`` variable is a near
                miss of a setting's name (a typo).
        """
        env = os.environ if environ is None else environ
        known = {f"{PREFIX}{f.name.upper()}": f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, text in env.items():
            if not key.startswith(PREFIX) or key in _OTHER_VARIABLES:
                continue
            field = known.get(key)
            if field is None:
                # Other parts of the package own other NONSENSE_* variables; only a near
                # miss of a Settings name is certainly a typo.
                close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
                if close:
                    valid = ", ".join(sorted(known))
                    raise ConfigError(
                        f"unknown setting {key} (did you mean {close[0]}?); "
                        f"valid settings: {valid}"
                    )
                continue
            try:
                if field.type in ("int",):
                    values[field.name] = parse_size(text)
                elif field.type in ("float",):
                    values[field.name] = float(text)
                elif field.type in ("bool",):
                    values[field.name] = _parse_bool(text)
                else:
                    values[field.name] = text
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"{key}={text!r}: {exc}") from None
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


# Variables with the prefix that belong to other parts of the package (devices, jobs);
# they are documented where they are used and are not Settings fields.
_OTHER_VARIABLES = frozenset(
    {
        "NONSENSE_FORWARDER_IN",
        "NONSENSE_FORWARDER_OUT",
        "NONSENSE_PUBLISH",
        "NONSENSE_STREAMER_IN",
        "NONSENSE_STREAMER_OUT",
        "NONSENSE_BROKER",
        "NONSENSE_TASKS",
        "NONSENSE_RESULTS",
        "NONSENSE_SINK",
        "NONSENSE_JOB_ID",
        "NONSENSE_HMAC_KEY",
        "NONSENSE_CURVE_DIR",
        "NONSENSE_HEARTBEAT_ADDR",
        "NONSENSE_HEARTBEAT_INTERVAL",
        "NONSENSE_CONTROL",
        "NONSENSE_EVENTS",
        "NONSENSE_CHECKPOINT_DIR",
        "NONSENSE_TRACE_FILE",
        "NONSENSE_CONTAINER_RUNTIME",
        "NONSENSE_SANDBOX_DIR",
        "NONSENSE_MPIRUN",
        "NONSENSE_PS",
        "NONSENSE_HEARTBEAT_ID",
        "NONSENSE_SUPERVISOR",
        "NONSENSE_CHILD_ID",
        "NONSENSE_IPC_SCOPE",
        "NONSENSE_CUDA_IPC",
        "NONSENSE_MAX_REQUEUES",
        "NONSENSE_KEEP_SLURM",
        "NONSENSE_SLURM_MEM_FRACTION",
        "NONSENSE_SLURM_TIMEOUT",
    }
)

_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached
