"""The safe encoding: round trips, TypeError before anything is sent, malformed input."""

import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc import codec, frames


def roundtrip(value):
    return frames.from_bytes(frames.to_bytes(value))


def test_primitives_roundtrip_exactly():
    value = {"none": None, "t": True, "f": False, "int": -(10**30), "float": 0.1,
             "str": "héllo", "bytes": b"\x00\xff", "list": [1, [2, [3]]], "tuple": (1, "a"),
             1: "int key", (1, "x"): "tuple key", b"k": "bytes key", 2.5: None}
    out = roundtrip(value)
    assert out == value
    assert type(out["tuple"]) is tuple and type(out["list"]) is list


def test_non_finite_floats():
    out = roundtrip([math.inf, -math.inf, math.nan, -0.0])
    assert out[0] == math.inf and out[1] == -math.inf and math.isnan(out[2])
    assert math.copysign(1, out[3]) == -1


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
          torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64,
          torch.complex128, torch.uint16, torch.float8_e4m3fn]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_tensor_any_dtype(dtype):
    t = (torch.arange(24) % 3).to(dtype).reshape(2, 3, 4)
    out = roundtrip(t)
    assert out.dtype == dtype and out.shape == t.shape
    assert torch.equal(out.view(torch.uint8), t.view(torch.uint8))


def test_non_contiguous_and_special_views():
    base = torch.randn(6, 8)
    for t in (base.t(), base[::2, 1::3], base.expand(3, 6, 8), torch.randn(3, 1).conj(),
              torch.tensor(3.5), torch.empty(0, 4), torch.randn(4, requires_grad=True),
              torch.randn(3, dtype=torch.complex64).conj(), torch.randn(2, 1, 3)[:, :, 1:],
              torch.tensor([True, False]), torch.randn(4, dtype=torch.bfloat16)[1:]):
        out = roundtrip(t)
        assert out.shape == t.shape and torch.equal(out, t.detach().resolve_conj())
        assert out.is_contiguous()


def test_numpy_arrays_any_dtype_and_scalars():
    arrays = [np.arange(12, dtype=">i4").reshape(3, 4).T, np.zeros(3, "U5"),
              np.array([1 + 2j], np.complex64), np.arange(6.0)[::-2],
              np.zeros(2, dtype=[("x", "<f4"), ("y", "u1", (2,))]), np.zeros((0, 3))]
    for a in arrays:
        out = roundtrip(a)
        assert out.dtype == a.dtype and out.shape == a.shape
        assert np.array_equal(out, a)
    s = roundtrip(np.float32(2.5))
    assert isinstance(s, np.float32) and s == 2.5


def test_received_tensors_are_writable_and_own_memory():
    out = roundtrip({"t": torch.ones(3)})
    out["t"] += 1
    assert out["t"].tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("bad", [object(), {1, 2}, [1, lambda: 0], {"k": 1j},
                                 {"a": {"b": Ellipsis}},
                                 np.array([object()]), torch.randn(4, 4).to_sparse()])
def test_unsupported_values_raise_type_error(bad):
    with pytest.raises(TypeError):
        codec.encode(bad)


def test_type_error_names_where():
    with pytest.raises(TypeError, match=r"value\['a'\]\[1\]"):
        codec.encode({"a": [1, object()]})


def test_circular_reference_is_refused():
    loop = [1]
    loop.append(loop)
    with pytest.raises(TypeError, match="circular"):
        codec.encode(loop)


def test_bad_dict_key_is_refused():
    with pytest.raises(TypeError, match="key"):
        codec.encode({frozenset(): 1})


def test_malformed_frames_raise_wire_error():
    good = frames.to_bytes({"x": torch.ones(2)})
    with pytest.raises(WireError):
        frames.from_bytes(b"XXXX" + good[4:])
    with pytest.raises(WireError):
        frames.from_bytes(good[:-1])
    with pytest.raises(WireError):
        frames.from_bytes(good + b"x")
    header = b'{"$torch":0,"dtype":"float32","shape":[3],"device":"cpu"}'
    frame = struct.pack("<4sIII", b"NHI1", len(header), 1, 0) + struct.pack("<Q", 8)
    with pytest.raises(WireError, match="does not hold"):
        frames.from_bytes(frame + header + bytes(8))
    evil = b'{"$torch":0,"dtype":"load","shape":[2],"device":"cpu"}'
    frame = struct.pack("<4sIII", b"NHI1", len(evil), 1, 0) + struct.pack("<Q", 8)
    with pytest.raises(WireError, match="dtype"):
        frames.from_bytes(frame + evil + bytes(8))
    with pytest.raises(WireError):
        codec.decode(b'{"$pickle": 0}', [])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    | st.tuples(inner, inner),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_roundtrip_property(value):
    assert roundtrip(value) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes_decoder(data):
    try:
        frames.from_bytes(data)
    except WireError:
        pass


@pytest.mark.parametrize("t", [torch.randn(3, 4), torch.tensor(2.5), torch.empty(0, 2),
                               torch.arange(6).reshape(2, 3).t(), torch.ones(2).bfloat16(),
                               torch.randn(2, requires_grad=True)], ids=repr)
def test_bare_tensor_header_is_the_json_of_its_tree(t):
    enc = codec.encode(t)
    nested = codec.encode([t])  # the general walk
    assert json.loads(enc.header) == json.loads(nested.header)[0]
    assert enc.header == json.dumps(json.loads(enc.header), separators=(",", ":")).encode()
    assert [bytes(b) for b in enc.buffers] == [bytes(b) for b in nested.buffers]


def _bare(dtype, shape):
    return f'{{"$torch":0,"dtype":"{dtype}","shape":[{shape}],"device":"cpu"}}'.encode()


@pytest.mark.parametrize(("header", "nbytes", "match"), [
    (_bare("nn", "2"), 8, "bad torch dtype"),
    (_bare("float32", "3"), 8, "does not hold shape"),
    (_bare("float32", ",".join(["1"] * 65)), 4, "bad shape"),
    (_bare("float32", "007"), 28, "not UTF-8 JSON"),  # not JSON: the strict parser says so
    (_bare("float32", "2").replace(b"cpu", b"\xff"), 8, "not UTF-8"),
])
def test_bare_tensor_headers_are_validated(header, nbytes, match):
    with pytest.raises(WireError, match=match):
        codec.decode(header, [np.zeros(nbytes, np.uint8)])


def test_bare_tensor_header_decodes_like_the_general_path():
    t = torch.arange(12, dtype=torch.int16).reshape(3, 4)
    enc = codec.encode(t)
    buffers = [np.frombuffer(bytes(b), np.uint8).copy() for b in enc.buffers]
    fast = codec.decode(enc.header, buffers)
    general = codec.decode(enc.header.replace(b'"device"', b' "device"'), buffers)
    assert fast.dtype == general.dtype == torch.int16 and torch.equal(fast, general)
    assert torch.equal(fast, t)
