"""Shards, batches and checkpoints: deterministic, validated, atomic."""


import numpy as np
import pytest
import torch

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.train import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_rank_data,
    load_test_data,
    prepare_shards,
    save_checkpoint,
)
from nonsense_hpc.train.data import batch_indices


def test_shards_cover_the_training_set_once(tmp_path):
    m = prepare_shards(tmp_path, 3, seed=1)
    assert m["train_samples"] + m["test_samples"] == 1797
    parts = [load_rank_data(tmp_path, r, 3) for r in range(3)]
    assert sum(len(x) for x, _ in parts) == m["train_samples"]
    assert max(len(x) for x, _ in parts) - min(len(x) for x, _ in parts) <= 1
    x, y = load_test_data(tmp_path)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert set(y.tolist()) == set(range(10))  # stratified: every class is tested
    # Two ranks over three shards: rank 0 owns shards 0 and 2.
    x0, _ = load_rank_data(tmp_path, 0, 2)
    assert len(x0) == len(parts[0][0]) + len(parts[2][0])


def test_same_seed_same_shards(tmp_path):
    a = prepare_shards(tmp_path / "a", 2, seed=5)
    b = prepare_shards(tmp_path / "b", 2, seed=5)
    assert a["files"] == b["files"]


@pytest.mark.parametrize("shards", [0, -1])
def test_bad_shard_count(tmp_path, shards):
    with pytest.raises(ConfigError, match="shards must be"):
        prepare_shards(tmp_path, shards)


def test_missing_and_corrupt_data_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"manifest\.json is missing"):
        load_rank_data(tmp_path / "nothing", 0, 1)
    prepare_shards(tmp_path, 2)
    with pytest.raises(ConfigError, match=r"2 shard.*for 3 ranks"):
        load_rank_data(tmp_path, 0, 3)
    (tmp_path / "shard-001.npz").write_bytes(b"not a shard")
    with pytest.raises(ConfigError, match="checksum"):
        load_rank_data(tmp_path, 1, 2)


def test_batches_are_stateless_and_cover_an_epoch():
    first = batch_indices(100, 10, 3, seed=0, rank=1)
    assert np.array_equal(first, batch_indices(100, 10, 3, seed=0, rank=1))
    epoch = np.concatenate([batch_indices(100, 10, s, 0, 1) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    assert not np.array_equal(first, batch_indices(100, 10, 3, seed=0, rank=0))
    with pytest.raises(ConfigError, match="batch size 200"):
        batch_indices(100, 200, 0, 0, 0)


def test_checkpoints_latest_and_keep(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"w": torch.full((3,), float(step))}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["step"] == 40 and torch.equal(state["w"], torch.full((3,), 40.0))
    assert not list(tmp_path.glob("*.tmp"))
    assert latest_checkpoint(tmp_path / "none") is None


def test_a_torn_temporary_file_is_not_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 5, {"w": torch.zeros(1)})
    (tmp_path / ".ckpt-00000010.pt.123.tmp").write_bytes(b"half a file")
    assert latest_checkpoint(tmp_path).name == "ckpt-00000005.pt"


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "ckpt-00000001.pt")
    bad = tmp_path / "ckpt-00000001.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(1)}, other)
    with pytest.raises(ConfigError, match="not a nonsense_hpc checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ConfigError, match="keep"):
        save_checkpoint(tmp_path, 1, {}, keep=0)
