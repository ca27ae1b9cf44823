"""The benchmarks run end to end (quick mode) and write their JSON; no timing asserted."""

import json

import pytest

from nonsense_hpc.cli.ipc import BENCH_COMMANDS

COMMANDS = {c.name: c for c in BENCH_COMMANDS}


@pytest.mark.parametrize("name", ["parallel", "ipc", "map"])
def test_bench_quick_writes_json(name, tmp_path, capsys):
    COMMANDS[name].main(["--quick", "--out", str(tmp_path)], standalone_mode=False)
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name
    out = capsys.readouterr().out
    if name == "parallel":
        assert [c["payload"] for c in result["cases"]] == ["100x100 float64", "16 MiB float64"]
        peers = [r["peer"] for r in result["cases"][0]["rows"]]
        assert any("Queue" in p for p in peers) and any("Pipe" in p for p in peers)
        assert "parallel is" in out
    elif name == "ipc":
        for case in result["cases"]:
            ours, raw = case["rows"]
            assert ours["received"] == raw["received"] == case["bytes"] * case["count"]
        assert "ipc/raw" in out
        cuda = result["cuda"]
        if "skipped" in cuda:  # no GPU: said so, in the JSON and on screen
            assert "CUDA tensors: skipped" in out
        else:
            for case in cuda["cases"]:
                ipc_row, staged = case["rows"]
                assert ipc_row["transport"] == "cuda_ipc" and staged["transport"] == "host"
                assert ipc_row["received"] == staged["received"] == case["bytes"] * case["count"]
    else:
        assert any("ProcessPoolExecutor" in r["peer"] for r in result["rows"])
        assert "vs pool" in out
