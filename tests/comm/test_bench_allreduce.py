"""`nonsense-hpc bench allreduce` as a user runs it: under mpirun, every peer in one run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from nonsense_hpc.launch import mpi_environment, mpirun_command

PEERS = ["tree", "native", "pickle", "gloo", "memcpy"]


def test_bench_writes_every_peer_and_size_with_latency_and_busbw(tmp_path):
    cli = str(Path(sys.executable).with_name("nonsense-hpc"))
    if not Path(cli).exists():
        cli = shutil.which("nonsense-hpc") or cli
    cmd = mpirun_command(2, [cli, "bench", "allreduce", "--sizes", "8,4KiB,1MiB",
                             "--budget", "0.02", "--out", str(tmp_path)])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env=mpi_environment(allow_root=True))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # rank 0 prints the ratios and each target's verdict
    assert "tree/native busbw" in out.stdout and "latency <= 2x native at 8 B" in out.stdout
    doc = json.loads((tmp_path / "allreduce-np2.json").read_text())
    assert doc["ranks"] == 2
    rows = {(r["impl"], r["nbytes"]): r for r in doc["rows"]}
    assert set(rows) == {(p, n) for p in PEERS for n in (8, 4096, 1 << 20)}
    for (impl, n), r in rows.items():
        assert r["seconds"] > 0 and r["latency_us"] == r["seconds"] * 1e6
        assert abs(r["algbw"] - n / r["seconds"] / 1e9) < 1e-9 * max(1.0, r["algbw"])
        factor = 1.0 if impl == "memcpy" else 2 * (2 - 1) / 2
        assert abs(r["busbw"] - r["algbw"] * factor) < 1e-9 * max(1.0, r["busbw"])
    png = tmp_path / "allreduce-np2.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
