"""Asynchronous data-parallel training with a parameter server over ZeroMQ.

Workers pull parameters, compute a gradient on their own shard and push it; the server
applies each gradient as it arrives (with a bound on staleness) and answers with the
new parameters. No worker ever waits for another one: the opposite trade of the
synchronous Tree AllReduce (``nonsense-hpc train``), where every step waits for the
slowest rank. :func:`compare` puts both on one chart (accuracy against wall-clock time,
updates and samples).

Example:
    >>> from nonsense_hpc.psgd import train_async                  # doctest: +SKIP
    >>> res = train_async("data", "runs/async", workers=4, updates=800)
    >>> res.history[-1]["accuracy"]                                # doctest: +SKIP
    0.95

See docs/async-training.md.
"""

from nonsense_hpc.psgd.client import Ack, PSClient, ServerTimeoutError
from nonsense_hpc.psgd.server import STALENESS_LR, ParameterServer

__all__ = ["STALENESS_LR", "Ack", "PSClient", "ParameterServer", "ServerTimeoutError"]
