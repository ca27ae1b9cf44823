"""The cost model: calibration from benchmark rows, and predictions a user relies on."""

import json
import subprocess
import sys

import pytest

from nonsense_hpc.comm.model import CostModel


def _rows(alpha=3e-6, beta=1e-10, gamma=2e-10):
    truth = CostModel(alpha_sync=alpha, beta_mem=beta, gamma=gamma)
    rows = []
    for n in (8, 4096, 1 << 20, 16 << 20, 64 << 20):
        rows.append({"impl": "tree", "nbytes": n, "ranks": 2,
                     "seconds": truth.allreduce(n, 2, 1) if n > 8 else alpha})
        rows.append({"impl": "memcpy", "nbytes": n, "ranks": 2, "seconds": n * beta})
    return truth, rows


def test_calibration_recovers_the_node_terms():
    truth, rows = _rows()
    m = CostModel.calibrate(rows)
    assert m.alpha_sync == pytest.approx(truth.alpha_sync)
    assert m.beta_mem == pytest.approx(truth.beta_mem)
    assert m.gamma == pytest.approx(truth.gamma, rel=0.05)
    for n in (1 << 20, 64 << 20):
        assert m.allreduce(n, 2) == pytest.approx(truth.allreduce(n, 2), rel=0.05)


def test_predictions_grow_with_size_ranks_and_nodes():
    m = CostModel(alpha_sync=2e-6, beta_mem=1e-10, gamma=1e-10)
    assert m.allreduce(1 << 20, 2) < m.allreduce(16 << 20, 2) < m.allreduce(64 << 20, 2)
    one_node = m.allreduce(64 << 20, 64, 1)
    many = [m.allreduce(64 << 20, r, r // 64) for r in (128, 1024, 16384)]
    assert many == sorted(many) and many[0] > one_node
    # the ring's bandwidth term saturates: 16384 ranks cost < 2x of 128 ranks for 64 MiB
    assert many[-1] < 2 * many[0]
    assert m.busbw(64 << 20, 2) > 0


def test_bad_input_is_a_clear_error():
    m = CostModel(alpha_sync=1e-6, beta_mem=1e-10, gamma=1e-10)
    with pytest.raises(ValueError, match="nodes <= ranks"):
        m.allreduce(1024, ranks=2, nodes=4)
    with pytest.raises(ValueError, match="2-rank run"):
        CostModel.calibrate([{"impl": "tree", "nbytes": 8, "ranks": 4, "seconds": 1e-6}])


def test_cli_predicts_from_a_benchmark_file(tmp_path):
    _, rows = _rows()
    src = tmp_path / "allreduce-np2.json"
    src.write_text(json.dumps({"rows": rows}))
    png = tmp_path / "model.png"
    proc = subprocess.run([sys.executable, "-m", "nonsense_hpc", "model", "--from", str(src),
                           "--plot", str(png)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "16384" in proc.stdout and "prediction vs measurement" in proc.stdout
    assert png.stat().st_size > 10_000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    proc = subprocess.run([sys.executable, "-m", "nonsense_hpc", "model", "--from", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "bench allreduce" in proc.stderr
