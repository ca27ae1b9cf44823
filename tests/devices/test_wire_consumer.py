"""docs/wire.md's promise: a consumer with plain pyzmq + numpy decodes the wire format."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from nonsense_hpc import wire

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wire_consumer.py"


def test_plain_pyzmq_consumer_decodes_live_messages():
    source = EXAMPLE.read_text()
    assert "nonsense_hpc" not in source.split('"""')[2]  # the example imports no package code
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), f"tcp://127.0.0.1:{port}",
                             "tensors.", "--count", "3", "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        enc = wire.Encoder(job_id="j", rank=2, hmac_key=b"key")
        deadline = time.monotonic() + 30
        step = 0
        # Publish until the consumer has its 3 messages (PUB drops before it subscribes).
        while proc.poll() is None and time.monotonic() < deadline:
            enc.send(pub, "tensors.w", {"step": step}, kind="tensor", step=step,
                     arrays={"w": np.full((4, 3), 2.0, np.float32)})
            enc.send(pub, "metrics.loss", {"loss": 1.0}, step=step)  # filtered out
            step += 1
            try:
                proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pub.close(0)
        ctx.term()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["topic"] == "tensors.w" and line["kind"] == "tensor" and line["rank"] == 2
        assert "(3, 4)" not in line["arrays"] and "(4, 3)" in line["arrays"]
        assert "24.0" in line["arrays"]  # sum of the 4x3 array of 2.0
    assert [ln["seq"] for ln in lines] == sorted(ln["seq"] for ln in lines)
