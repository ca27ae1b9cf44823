"""Flat parameter vectors of a torch model, and its evaluation on the test set.

The model and data are the main job's (:mod:`nonsense_hpc.train.model`,
:mod:`nonsense_hpc.train.data`), so synchronous and asynchronous runs train the same
network on the same shards and are compared on the same held-out test set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["evaluator", "flat_grads", "flat_params", "set_flat_params"]


def flat_params(model: Any) -> npt.NDArray[np.float32]:
    """A float32 copy of every parameter, concatenated."""
    import torch

    with torch.no_grad():
        return torch.nn.utils.parameters_to_vector(model.parameters()).numpy().astype(
            np.float32, copy=True)


def set_flat_params(model: Any, flat: npt.NDArray[np.float32]) -> None:
    """Copy ``flat`` into the model's parameters."""
    import torch

    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(flat)),
                                            model.parameters())


def flat_grads(model: Any) -> npt.NDArray[np.float32]:
    """Every parameter's gradient, concatenated (zeros where there is none)."""
    import torch

    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
             for p in model.parameters()]
    return torch.cat(parts).numpy().astype(np.float32, copy=True)


def evaluator(data_dir: str, hidden: Sequence[int], seed: int = 0
              ) -> Callable[[npt.NDArray[np.float32]], dict[str, float]]:
    """A function: flat parameters -> test ``accuracy`` and ``loss``."""
    import torch
    import torch.nn.functional as F

    from nonsense_hpc.train.data import load_test_data
    from nonsense_hpc.train.model import make_model

    x_np, y_np = load_test_data(data_dir)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = make_model(tuple(hidden), seed)

    def evaluate(flat: npt.NDArray[np.float32]) -> dict[str, float]:
        set_flat_params(model, flat)
        with torch.no_grad():
            logits = model(x)
            return {"accuracy": float((logits.argmax(1) == y).float().mean()),
                    "loss": float(F.cross_entropy(logits, y))}

    return evaluate
