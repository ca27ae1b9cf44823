"""One small exception hierarchy for the whole package.

Every error the library raises on purpose derives from :class:`NonsenseError`. Where the
meaning matches a builtin, the class also derives from it, so ``except TimeoutError`` and
``except ValueError`` keep working for callers who do not know this package.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "ClusterTimeoutError",
    "CollectiveError",
    "CollectiveMismatchError",
    "CollectiveTimeoutError",
    "ConfigError",
    "ContainerError",
    "CudaIpcError",
    "DeviceError",
    "NonsenseError",
    "RemoteError",
    "ResourceError",
    "ServerTimeoutError",
    "SupervisorError",
    "WireError",
]


class NonsenseError(Exception):
    """Base class of every error raised on purpose by nonsense_hpc."""


class ConfigError(NonsenseError, ValueError):
    """A setting (argument, environment variable, config file) is invalid."""


class CollectiveError(NonsenseError, RuntimeError):
    """A collective operation (allreduce, broadcast, ...) failed."""


class CollectiveMismatchError(CollectiveError, ValueError):
    """Ranks passed values of different structure, shape or dtype to one collective.

    The message names the disagreeing ranks and what each of them passed; every rank
    raises the same error.
    """


class CollectiveTimeoutError(CollectiveError, TimeoutError):
    """A peer did not take part in a collective within the configured timeout.

    Usually the peer died or is stuck in other work.
    """


class RemoteError(NonsenseError, RuntimeError):
    """An exception raised in another process (rank, worker, child).

    The remote traceback text is kept in :attr:`remote_traceback` and is part of the
    message, so it is printed with the local one.
    """

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        self.remote_traceback = remote_traceback
        text = message
        if remote_traceback:
            text = f"{message}\n\n--- remote traceback ---\n{remote_traceback.rstrip()}"
        super().__init__(text)


class WireError(NonsenseError, ValueError):
    """A message on the wire is malformed, oversized or fails authentication."""


class DeviceError(NonsenseError, RuntimeError):
    """A ZeroMQ device failed to start, or its control socket reported an error."""


class ServerTimeoutError(DeviceError, TimeoutError):
    """The parameter server did not answer in time (dead, stuck or unreachable)."""


class SupervisorError(NonsenseError, RuntimeError):
    """A supervisor gave up (restart intensity exceeded) or was misconfigured."""


class ClusterError(NonsenseError, RuntimeError):
    """A scheduler (Slurm) command failed or was given an invalid request."""


class ResourceError(ClusterError, ConfigError):
    """A scheduler resource request is invalid before it reaches the scheduler."""


class ClusterTimeoutError(ClusterError, TimeoutError):
    """A job did not reach a finished state within the time the caller allowed."""


class ContainerError(NonsenseError, RuntimeError):
    """A container runtime is missing, or building or running an image failed."""


class CudaIpcError(NonsenseError, RuntimeError):
    """A CUDA IPC handle could not be opened or was refused; the message says why.

    The frame that carried it was read completely, so the connection stays usable; the
    sender was told (a nack) and stages its next CUDA tensors through the host.
    """
