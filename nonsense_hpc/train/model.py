"""The model: a small multilayer perceptron for 8x8 digit images.

Example:
    >>> model = make_model((32,), seed=0)
    >>> sum(p.numel() for p in model.parameters())
    2410
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["make_model"]


def make_model(hidden: Sequence[int] = (128, 128), seed: int = 0, features: int = 64,
               classes: int = 10) -> Any:
    """A ``torch.nn.Sequential`` MLP ``features -> hidden... -> classes`` with ReLU.

    The weights depend only on ``seed`` (every rank builds the same model).

    Raises:
        ConfigError: a hidden width < 1.
    """
    import torch
    from torch import nn

    widths = [int(h) for h in hidden]
    if any(h < 1 for h in widths):
        raise ConfigError(f"hidden layer widths must be >= 1, got {list(hidden)}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        last = features
        for width in widths:
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        layers.append(nn.Linear(last, classes))
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(gen_state)
