"""Fuzz the decoder: arbitrary frames either decode or raise WireError, nothing else."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nonsense_hpc import wire
from nonsense_hpc.errors import WireError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)

header_fields = st.fixed_dictionaries({}, optional={
    "schema": st.one_of(st.just(1), json_values),
    "kind": st.one_of(st.just("metric"), json_values),
    "seq": st.one_of(st.integers(0, 10), json_values),
    "rank": json_values, "step": json_values, "data": json_values,
    "encoding": st.one_of(st.sampled_from(["raw", "pickle", "x"]), json_values),
    "sig": st.one_of(st.just("hmac-sha256"), json_values),
    "buffers": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
        "name": json_values, "dtype": st.one_of(st.sampled_from(wire.DTYPES), json_values),
        "shape": st.one_of(st.lists(st.integers(-2, 6), max_size=3), json_values)}),
        max_size=3), json_values),
})


def _decode_or_wire_error(frames, **kwargs):
    try:
        wire.decode(frames, **kwargs)
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_bytes(frames):
    _decode_or_wire_error(frames)
    _decode_or_wire_error(frames, hmac_key=b"k", allow_pickle=True)


@settings(max_examples=400, deadline=None)
@given(header_fields, st.lists(st.binary(max_size=48), max_size=4))
def test_structured_headers(header, body):
    frames = [b"topic", json.dumps(header).encode(), *body]
    _decode_or_wire_error(frames)
    _decode_or_wire_error(frames, hmac_key=b"k", allow_pickle=True, max_bytes=100)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.integers(0, 3), st.data())
def test_mutated_valid_messages(n_bytes, position, data):
    frames = wire.encode("x", {"a": [1, 2]}, arrays={"w": np.arange(6, dtype=np.int32)},
                         hmac_key=b"key", timestamp=1.0, source="s")
    frames = [bytes(memoryview(f)) for f in frames]
    index = position % len(frames)
    blob = bytearray(frames[index])
    for _ in range(n_bytes):
        if not blob:
            break
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    frames[index] = bytes(blob)
    _decode_or_wire_error(frames)
    try:
        msg = wire.decode(frames, hmac_key=b"key")
    except WireError:
        return
    # a message that passes the signature check is the original one
    assert msg.data == {"a": [1, 2]} and msg.arrays["w"].tolist() == list(range(6))
