"""The wire format: round trips, zero-copy, validation, signing, sequence tracking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nonsense_hpc import wire
from nonsense_hpc.errors import WireError


def test_round_trip_header_fields():
    frames = wire.encode("metrics.loss", {"loss": 0.5, "acc": np.float32(0.75)},
                         kind="metric", job_id="j1", rank=3, step=7, seq=11,
                         timestamp=123.5, source="h:1", task_id="t9")
    header = json.loads(frames[1])
    assert header["schema"] == wire.SCHEMA_VERSION == 1
    assert (header["kind"], header["job_id"], header["rank"], header["step"]) == (
        "metric", "j1", 3, 7)
    assert (header["seq"], header["timestamp"], header["task_id"]) == (11, 123.5, "t9")
    assert header["dtype"] is None and header["shape"] is None and header["buffers"] == []
    msg = wire.decode(frames)
    assert msg.topic == "metrics.loss" and msg.data == {"loss": 0.5, "acc": 0.75}
    assert (msg.job_id, msg.rank, msg.step, msg.seq, msg.source, msg.task_id) == (
        "j1", 3, 7, 11, "h:1", "t9")


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool",
                                   "float16", "complex64"])
def test_numpy_arrays_zero_copy(dtype):
    a = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    frames = wire.encode("t", kind="tensor", arrays=a)
    assert np.shares_memory(frames[2], a)  # sender side: no copy
    header = json.loads(frames[1])
    assert header["dtype"] == dtype and header["shape"] == [2, 3, 4]
    msg = wire.decode(frames)
    assert np.shares_memory(msg.array, frames[2])  # receiver side: a view of the frame
    np.testing.assert_array_equal(msg.array, a)


def test_torch_tensors_zero_copy_and_bfloat16():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    frames = wire.encode("t", kind="tensor", arrays={"w": t, "b": t[:, 0]})
    assert np.shares_memory(frames[2], t.numpy())
    msg = wire.decode(frames)
    assert torch.equal(msg.tensor("w"), t) and torch.equal(msg.tensor("b"), t[:, 0])
    bf = torch.linspace(-2, 2, 8, dtype=torch.bfloat16)
    back = wire.decode(wire.encode("t", arrays=bf)).tensor()
    assert back.dtype == torch.bfloat16 and torch.equal(back, bf)


def test_non_contiguous_and_big_endian_are_normalised():
    a = np.arange(20, dtype=">i4").reshape(4, 5)[:, ::2]
    msg = wire.decode(wire.encode("t", arrays=a))
    np.testing.assert_array_equal(msg.array, a)
    assert msg.array.dtype == np.dtype("<i4")


def test_size_limit_on_both_sides():
    big = np.zeros(1000, np.float64)
    with pytest.raises(WireError, match="exceeds max_bytes"):
        wire.encode("t", arrays=big, max_bytes=4000)
    frames = wire.encode("t", arrays=big)
    with pytest.raises(WireError, match="exceeds max_bytes"):
        wire.decode(frames, max_bytes=4000)


@pytest.mark.parametrize("frames, match", [
    ([b"t"], "at least 2 frames"),
    ([b"t", b"{not json"], "not UTF-8 JSON"),
    ([b"\xff", b"{}"], "not UTF-8 JSON"),
    ([b"t", b"[1, 2]"], "must be a JSON object"),
    ([b"t", b'{"kind": "metric"}'], "schema"),
    ([b"t", b'{"schema": 99, "kind": "metric"}'], "unsupported schema"),
    ([b"t", b'{"schema": 1, "kind": 5}'], "kind"),
    ([b"t", b'{"schema": 1, "kind": "m", "seq": "x"}'], "seq"),
    ([b"t", b'{"schema": 1, "kind": "m", "buffers": []}', b"xx"], "buffer frames follow"),
    ([b"t", b'{"schema": 1, "kind": "m", "buffers": [{"name": "a", "dtype": "object",'
      b' "shape": [1]}]}', b"x"], "dtype"),
    ([b"t", b'{"schema": 1, "kind": "m", "buffers": [{"name": "a", "dtype": "float32",'
      b' "shape": [3]}]}', b"1234"], "need 12"),
    ([b"t", b'{"schema": 1, "kind": "m", "encoding": "zstd"}'], "unknown encoding"),
])
def test_malformed_messages_raise_wire_error(frames, match):
    with pytest.raises(WireError, match=match):
        wire.decode(frames)


def test_bad_arguments_raise_before_any_frame():
    with pytest.raises(WireError, match="JSON"):
        wire.encode("t", {"x": object()})
    with pytest.raises(WireError, match="dtype"):
        wire.encode("t", arrays=np.array(["a", "b"], dtype=object))
    with pytest.raises(WireError, match="topic"):
        wire.encode("x" * 2000)
    with pytest.raises(WireError, match="rank"):
        wire.encode("t", rank="zero")
    with pytest.raises(WireError, match="shadow"):
        wire.encode("t", extra={"seq": 5})


def test_hmac_signing():
    key = b"k" * 32
    frames = wire.encode("t", {"a": 1}, arrays=np.ones(3), hmac_key=key)
    assert len(frames) == 4 and len(frames[-1]) == 32
    assert wire.decode(frames, hmac_key=key).data == {"a": 1}
    assert wire.decode(frames).data == {"a": 1}  # readers without a key still decode
    with pytest.raises(WireError, match="does not match"):
        wire.decode(frames, hmac_key=b"other")
    tampered = [frames[0], frames[1].replace(b'"a":1', b'"a":2'), *frames[2:]]
    with pytest.raises(WireError, match="does not match"):
        wire.decode(tampered, hmac_key=key)
    with pytest.raises(WireError, match="unsigned"):
        wire.decode(wire.encode("t"), hmac_key=key)


def test_pickle_only_by_explicit_opt_in():
    key = b"secret"
    with pytest.raises(WireError, match="needs hmac_key"):
        wire.encode("t", pickle_obj={1, 2})
    frames = wire.encode("t", pickle_obj={"s": {1, 2}}, hmac_key=key)
    for kwargs in ({}, {"hmac_key": key}, {"allow_pickle": True}):
        with pytest.raises(WireError, match="pickle"):
            wire.decode(frames, **kwargs)
    assert wire.decode(frames, hmac_key=key, allow_pickle=True).data == {"s": {1, 2}}
    # an unsigned message that claims pickle is refused even with allow_pickle
    forged = [b"t", json.dumps({"schema": 1, "kind": "m", "encoding": "pickle"}).encode(),
              b"cos\nsystem\n(S'true'\ntR."]
    with pytest.raises(WireError):
        wire.decode(forged, allow_pickle=True)


def test_encoder_counts_seq_and_skips_refused_messages():
    enc = wire.Encoder(job_id="j", rank=1, source="me")
    assert wire.decode(enc.encode("a")).seq == 0
    with pytest.raises(WireError):
        enc.encode("a", {"bad": object()})
    msg = wire.decode(enc.encode("a"))
    assert (msg.seq, msg.job_id, msg.rank, msg.source) == (1, "j", 1, "me")


def test_sequence_tracker_counts_gaps_and_restarts():
    tracker = wire.SequenceTracker()
    seqs = [0, 1, 2, 5, 6, 0, 1, 3]
    gaps = [tracker.observe(wire.decode(wire.encode("t", seq=s, source="a"))) for s in seqs]
    assert gaps == [0, 0, 0, 2, 0, 0, 0, 1]
    assert (tracker.received, tracker.lost, tracker.restarts) == (8, 3, 1)
    tracker.observe(wire.decode(wire.encode("t", seq=4, source="b")))
    assert tracker.lost == 7  # b's first message is seq 4: 0..3 were lost


def test_send_recv_over_a_real_socket():
    import zmq

    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        port = a.bind_to_random_port("tcp://127.0.0.1")
        b.connect(f"tcp://127.0.0.1:{port}")
        big = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
        wire.send(a, "tensors.x", {"n": 1}, kind="tensor", arrays=big)
        msg = wire.recv(b, timeout=10)
        np.testing.assert_array_equal(msg.array, big)
        assert msg.array.flags.writeable  # a received frame is ours: writable, no copy
        with pytest.raises(TimeoutError):
            wire.recv(b, timeout=0.05)
        a.close(0)
        b.close(0)
    finally:
        ctx.term()
