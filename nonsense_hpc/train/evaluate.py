"""Evaluation of a trained model on the held-out test set.

Example:
    >>> metrics = evaluate("train/model.pt", "data")              # doctest: +SKIP
    >>> metrics["accuracy"] > 0.9                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.train.data import CLASSES, load_test_data
from nonsense_hpc.train.model import make_model

__all__ = ["evaluate", "load_model"]


def load_model(path: str | os.PathLike[str]) -> Any:
    """Rebuild the model saved as ``model.pt`` (or a checkpoint) by the trainer.

    Raises:
        ConfigError: the file is missing or not a trainer model.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model file {p} does not exist (did training finish?)")
    try:
        saved = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a bad file
        raise ConfigError(f"{p} cannot be read as a model: {exc}") from None
    if not isinstance(saved, dict) or "model" not in saved:
        raise ConfigError(f"{p} is not a model saved by nonsense_hpc.train")
    hidden = saved.get("hidden")
    if hidden is None:  # a checkpoint: its config names the widths
        hidden = json.loads(saved["config"])["hidden"]
    model = make_model(tuple(hidden))
    model.load_state_dict(saved["model"])
    model.eval()
    return model


def evaluate(model_path: str | os.PathLike[str], data_dir: str | os.PathLike[str],
             out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Test-set loss, accuracy, per-class accuracy and confusion matrix.

    Args:
        model_path: ``model.pt`` written by the trainer.
        data_dir: the prepared data (its ``test.npz``).
        out: also write the metrics there as JSON.

    Raises:
        ConfigError: missing model or data.
    """
    import torch
    import torch.nn.functional as F

    model = load_model(model_path)
    x_np, y_np = load_test_data(data_dir)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    with torch.no_grad():
        logits = model(x)
        loss = float(F.cross_entropy(logits, y))
        pred = logits.argmax(1)
    confusion = torch.zeros(CLASSES, CLASSES, dtype=torch.int64)
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    per_class = [float(confusion[c, c] / max(1, int(confusion[c].sum())))
                 for c in range(CLASSES)]
    metrics = {"model": str(model_path), "samples": len(y), "loss": loss,
               "accuracy": float((pred == y).float().mean()), "per_class_accuracy": per_class,
               "confusion": confusion.tolist()}
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        os.replace(tmp, path)
    return metrics
