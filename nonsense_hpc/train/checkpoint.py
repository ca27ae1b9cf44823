"""Checkpoints: atomic writes, the latest one found on restart.

A checkpoint is one file ``ckpt-STEP.pt`` (``torch.save`` of a dict of tensors and plain
numbers) in a directory. It is written to a temporary file in the same directory, flushed
to disk and renamed into place, so a job killed mid-write leaves either the previous
checkpoint or the new one, never a torn file. Loading uses ``weights_only=True``: a
checkpoint cannot run code.

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> path = save_checkpoint(d, 10, {"w": torch.zeros(2)})
    >>> latest_checkpoint(d) == path, load_checkpoint(path)["step"]
    (True, 10)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import ConfigError

__all__ = ["latest_checkpoint", "list_checkpoints", "load_checkpoint", "save_checkpoint"]

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in d.iterdir():
        m = _NAME.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(directory: str | os.PathLike[str], step: int, state: dict[str, Any],
                    keep: int = 3) -> Path:
    """Write ``state`` (plus ``step``) atomically as ``directory/ckpt-STEP.pt``.

    Args:
        directory: where checkpoints live (created if missing).
        step: the number of optimisation steps done.
        state: tensors, state dicts and plain numbers/strings.
        keep: how many of the newest checkpoints to keep (older ones are removed; >= 1).

    Returns:
        The path written.

    Raises:
        ConfigError: a negative step or ``keep`` < 1.
    """
    import torch

    if step < 0 or keep < 1:
        raise ConfigError(f"step must be >= 0 and keep >= 1, got {step}, {keep}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt-{step:08d}.pt"
    tmp = d / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            torch.save({**state, "step": step}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for _, old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ConfigError: the file is missing or not a readable checkpoint.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint {p} does not exist")
    try:
        state: dict[str, Any] = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a bad file
        raise ConfigError(f"checkpoint {p} cannot be read: {exc}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ConfigError(f"{p} is not a nonsense_hpc checkpoint (no 'step')")
    return state
