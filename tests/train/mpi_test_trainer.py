"""The trainer on 1 and 2 ranks: ranks stay identical, resume equals an unbroken run,
DDP mode trains too, a bad shard count is refused on every rank; one step is traced."""

import json

import pytest
import torch

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.train import (
    InjectedFailure,
    TrainConfig,
    latest_checkpoint,
    load_model,
    prepare_shards,
    train,
)
from nonsense_hpc.train.runlog import read_rank_logs

NP = (1, 2)
TIMEOUT = 120


def _data(comm, tmp_path, shards=None):
    data = tmp_path / "data"
    if comm.Get_rank() == 0:
        prepare_shards(data, shards or comm.Get_size())
    comm.Barrier()
    return data


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_ranks_stay_identical_and_loss_falls(comm, tmp_path):
    data = _data(comm, tmp_path)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "a"), steps=40,
                      checkpoint_every=20, timeout=60, trace_step=5)
    result = train(cfg, comm)
    assert result.steps_run == 40 and result.resumed_from == 0
    assert result.world_size == comm.Get_size()
    logs = read_rank_logs(tmp_path / "a")
    assert sorted(logs) == list(range(comm.Get_size()))
    first = sum(r[0]["loss"] for r in logs.values()) / len(logs)
    last = sum(sum(x["loss"] for x in r[-5:]) / 5 for r in logs.values()) / len(logs)
    assert last < first * 0.8, (first, last)
    assert all(r[-1]["allreduce_bytes"] > 0 for r in logs.values())
    # Every rank's copy is the same model: gather a digest of the parameters.
    model = load_model(tmp_path / "a" / "model.pt")
    digests = comm.allgather(float(_params(model).double().sum()))
    assert len(set(digests)) == 1
    # Step 5 was traced: every rank's phases gathered to rank 0, Chrome trace written.
    assert [r["step"] for r in logs[comm.Get_rank()] if r.get("traced")] == [5]
    if comm.Get_rank() == 0:
        trace = tmp_path / "a" / "trace-step"
        events = [json.loads(line)
                  for line in (trace / "events.jsonl").read_text().splitlines()]
        phases = {(e["actor"], e["phase"]) for e in events if e["op"] == "step"}
        assert phases == {(f"rank {r}", p) for r in range(comm.Get_size())
                          for p in ("compute", "allreduce", "apply")}, phases
        chrome = json.loads((trace / "trace.json").read_text())
        tracks = {e["args"]["name"] for e in chrome["traceEvents"]
                  if e["name"] == "process_name"}
        assert tracks == {f"rank {r}" for r in range(comm.Get_size())}
        assert "step 5" in (trace / "trace.svg").read_text()


def test_resume_after_failure_equals_unbroken_run(comm, tmp_path):
    data = _data(comm, tmp_path)
    base = dict(data_dir=str(data), steps=30, checkpoint_every=10, timeout=60)
    train(TrainConfig(out_dir=str(tmp_path / "whole"), **base), comm)
    broken = TrainConfig(out_dir=str(tmp_path / "broken"), fail_at_step=20, **base)
    with pytest.raises(InjectedFailure, match="after step 20"):
        train(broken, comm)
    comm.Barrier()
    assert latest_checkpoint(tmp_path / "broken" / "checkpoints").name == "ckpt-00000020.pt"
    again = train(broken, comm)  # same config: resumes, does not fail again
    assert again.resumed_from == 20 and again.steps_run == 10
    whole = _params(load_model(tmp_path / "whole" / "model.pt"))
    resumed = _params(load_model(tmp_path / "broken" / "model.pt"))
    assert torch.equal(whole, resumed)
    # The log tells one history: steps 1..30 once each.
    steps = [r["step"] for r in read_rank_logs(tmp_path / "broken")[comm.Get_rank()]]
    assert steps == list(range(1, 31))


def test_ddp_mode_trains(comm, tmp_path):
    data = _data(comm, tmp_path)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "ddp"), steps=10,
                      checkpoint_every=0, allreduce="ddp", timeout=60)
    result = train(cfg, comm)
    assert result.steps_run == 10
    assert (tmp_path / "ddp" / "model.pt").exists() or comm.Get_rank() != 0


def test_too_few_shards_is_refused(comm, tmp_path):
    if comm.Get_size() < 2:
        pytest.skip("needs 2 ranks for 1 shard to be too few")
    data = _data(comm, tmp_path, shards=1)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "x"), steps=5)
    with pytest.raises(ConfigError, match="1 shard"):
        train(cfg, comm)
