"""The data set and its shards: scikit-learn's digits, split once, cut into shards.

The digits data set (1797 8x8 images of hand-written digits, 10 classes) ships inside
scikit-learn, so the main job needs no download. :func:`prepare_shards` splits it into a
held-out test set and ``shards`` training shards of near-equal size (stratified, seeded),
writes them as ``.npz`` files with a ``manifest.json`` (counts and SHA-256 of every
file), and :func:`load_rank_data` gives each rank the shards it owns (shard ``i`` goes to
rank ``i % world_size``).

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> manifest = prepare_shards(d, shards=2)
    >>> manifest["train_samples"] + manifest["test_samples"]
    1797
    >>> x, y = load_rank_data(d, rank=1, world_size=2)
    >>> x.shape[1], x.dtype.name
    (64, 'float32')
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nonsense_hpc.errors import ConfigError

__all__ = ["MANIFEST", "batch_indices", "load_digits", "load_manifest", "load_rank_data",
           "load_test_data", "prepare_shards"]

MANIFEST = "manifest.json"
FEATURES = 64
CLASSES = 10


def load_digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The digits images as float32 features in [0, 1] and int64 labels.

    Raises:
        ConfigError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ConfigError("the digits data set comes with scikit-learn: "
                          "pip install 'nonsense-hpc[workflow]' (or scikit-learn)") from None
    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    return x, np.asarray(bunch.target, dtype=np.int64)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_npz(path: Path, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, x=x, y=y)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def prepare_shards(out_dir: str | os.PathLike[str], shards: int, *,
                   test_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Split the digits into a test set and ``shards`` training shards under ``out_dir``.

    Args:
        out_dir: directory to write ``shard-XXX.npz``, ``test.npz`` and the manifest to.
        shards: number of training shards (at least the number of ranks that will train).
        test_fraction: share of the samples held out for evaluation (0 < f < 1).
        seed: seed of the split and the shuffling.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        ConfigError: ``shards`` < 1, more shards than training samples, or a bad
            ``test_fraction``.
    """
    if not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be an integer >= 1, got {shards!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    x, y = load_digits()
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    train_idx: list[int] = []
    for label in range(CLASSES):  # stratified: every class in both parts
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = max(1, round(len(idx) * test_fraction))
        test_idx.extend(idx[:n_test].tolist())
        train_idx.extend(idx[n_test:].tolist())
    train = rng.permutation(np.asarray(train_idx))
    test = np.sort(np.asarray(test_idx))
    if shards > len(train):
        raise ConfigError(f"{shards} shards for {len(train)} training samples")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for i, part in enumerate(np.array_split(train, shards)):
        name = f"shard-{i:03d}.npz"
        _write_npz(out / name, x[part], y[part])
        files[name] = {"samples": len(part), "sha256": _sha256(out / name)}
    _write_npz(out / "test.npz", x[test], y[test])
    files["test.npz"] = {"samples": len(test), "sha256": _sha256(out / "test.npz")}
    manifest = {"dataset": "sklearn.datasets.load_digits", "features": FEATURES,
                "classes": CLASSES, "shards": shards, "seed": seed,
                "test_fraction": test_fraction, "train_samples": len(train),
                "test_samples": len(test), "files": files}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def load_manifest(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``data_dir/manifest.json``.

    Raises:
        ConfigError: no manifest (the data was not prepared) or it is not valid JSON.
    """
    path = Path(data_dir) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no data set in {data_dir}: {path} is missing (prepare it with "
                          f"`nonsense-hpc workflow prepare --out {data_dir}`)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return manifest


def _load_npz(data_dir: Path, name: str, manifest: dict[str, Any]
              ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    path = data_dir / name
    if not path.is_file():
        raise ConfigError(f"{path} listed in the manifest is missing")
    want = manifest["files"].get(name, {}).get("sha256")
    if want is not None and _sha256(path) != want:
        raise ConfigError(f"{path} does not match its manifest checksum (corrupt or "
                          "written by another prepare run); prepare the data again")
    with np.load(path) as data:
        return data["x"].astype(np.float32), data["y"].astype(np.int64)


def load_rank_data(data_dir: str | os.PathLike[str], rank: int, world_size: int
                   ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The training samples of ``rank``: every shard ``i`` with ``i % world_size == rank``.

    Raises:
        ConfigError: fewer shards than ranks, a missing or corrupt shard.
    """
    manifest = load_manifest(data_dir)
    n = int(manifest["shards"])
    if n < world_size:
        raise ConfigError(f"{n} shard(s) in {data_dir} for {world_size} ranks: prepare at "
                          f"least one shard per rank (--shards {world_size})")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} outside a world of {world_size}")
    parts = [_load_npz(Path(data_dir), f"shard-{i:03d}.npz", manifest)
             for i in range(rank, n, world_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_test_data(data_dir: str | os.PathLike[str]
                   ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The held-out test set."""
    return _load_npz(Path(data_dir), "test.npz", load_manifest(data_dir))


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int
                  ) -> npt.NDArray[np.int64]:
    """Indices of the batch a rank trains on at ``step`` (stateless, so resumable).

    Each epoch is a fresh permutation seeded by (seed, rank, epoch); a batch never spans
    two epochs (the last partial batch of an epoch is dropped).

    Raises:
        ConfigError: a batch larger than the rank's samples.
    """
    if batch_size < 1 or batch_size > n:
        raise ConfigError(f"batch size {batch_size} must be between 1 and the rank's "
                          f"{n} samples")
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, rank, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]
