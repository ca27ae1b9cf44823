"""Frames of :mod:`nonsense_hpc.ipc`: the bytes around an encoded value, and reading them.

The layout (prefix, buffer lengths, JSON header, raw buffers) and the value encoding are
described in :mod:`nonsense_hpc.ipc.codec`; this module writes and reads whole frames,
including the connection's control frames (hello, ack, nack).
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable
from typing import Any

from nonsense_hpc.errors import WireError
from nonsense_hpc.ipc.codec import (
    CONTROL,
    FLAG_CONTROL,
    MAGIC,
    MAX_BUFFERS,
    MAX_CONTROL_BYTES,
    MAX_HEADER_BYTES,
    PREFIX,
    Encoded,
    decode,
    encode,
)

__all__ = ["control_frame", "frame_buffers", "from_bytes", "parse_control", "read_frame",
           "to_bytes"]

_PREFIX = PREFIX
_JSON_OUT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def control_frame(message: dict[str, Any]) -> bytes:
    """One control frame (no value, no buffers) carrying ``message`` as its JSON header."""
    header = _JSON_OUT.encode(message).encode()
    if len(header) > MAX_CONTROL_BYTES:
        raise ValueError(f"control message of {len(header)} bytes is larger than "
                         f"{MAX_CONTROL_BYTES}")
    return _PREFIX.pack(MAGIC, len(header), 0, FLAG_CONTROL) + header


def parse_control(header: bytes) -> dict[str, Any]:
    """Parse the header of a control frame.

    Raises:
        WireError: not a JSON object.
    """
    try:
        message = json.loads(header)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"control frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict):
        raise WireError(f"control frame must hold a JSON object, got {message!r:.80}")
    return message


def frame_buffers(enc: Encoded) -> list[memoryview]:
    """The buffers to write for one frame: prefix, lengths and header first, then data."""
    n = len(enc.buffers)
    head = _head(n).pack(MAGIC, len(enc.header), n, 0, *[b.nbytes for b in enc.buffers])
    return [memoryview(head + enc.header), *enc.buffers]


@functools.lru_cache(maxsize=64)
def _head(nbuf: int) -> struct.Struct:
    """The prefix and the buffer lengths of a frame with ``nbuf`` buffers."""
    return struct.Struct(f"<4sIII{nbuf}Q")


@functools.lru_cache(maxsize=64)
def _lengths(nbuf: int) -> struct.Struct:
    return struct.Struct(f"<{nbuf}Q")


def read_frame(readinto: Callable[[memoryview], None], *,
               max_bytes: int | None = None,
               cuda_import: Callable[[dict[str, Any]], Any] | None = None,
               on_control: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Read one frame through ``readinto`` and decode it.

    Args:
        readinto: fills the given writable view completely (or raises).
        max_bytes: refuse frames whose buffers total more than this (None: no limit).
        cuda_import: opens a ``$cuda_ipc`` node (None: such a node is a WireError).
        on_control: takes the message of a control frame (None: a control frame is a
            WireError).

    Returns:
        The decoded value; tensors and arrays own the memory they were read into.
        :data:`CONTROL` for a control frame.

    Raises:
        WireError: bad magic, oversized or malformed header.
    """
    prefix = bytearray(_PREFIX.size)
    readinto(memoryview(prefix))
    magic, hlen, nbuf, flags = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError(f"not an ipc frame: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if flags & FLAG_CONTROL:
        if on_control is None:
            raise WireError("unexpected control frame on a connection without a handshake")
        if nbuf or hlen > MAX_CONTROL_BYTES:
            raise WireError(f"control frame with {nbuf} buffers and {hlen} header bytes")
        header = bytearray(hlen)
        readinto(memoryview(header))
        on_control(parse_control(bytes(header)))
        return CONTROL
    if hlen > MAX_HEADER_BYTES or nbuf > MAX_BUFFERS:
        raise WireError(f"frame header of {hlen} bytes with {nbuf} buffers is too large")
    lens_raw = bytearray(8 * nbuf + hlen)
    readinto(memoryview(lens_raw))
    lengths = _lengths(nbuf).unpack_from(lens_raw)
    if max_bytes is not None and sum(lengths) > max_bytes:
        raise WireError(f"frame carries {sum(lengths)} bytes, more than max_bytes={max_bytes}")
    buffers = []
    if nbuf:
        import numpy as np
    for n in lengths:
        buf = np.empty(n, np.uint8)
        if n:
            readinto(memoryview(buf))  # type: ignore[arg-type]
        buffers.append(buf)
    return decode(memoryview(lens_raw)[8 * nbuf:], buffers, cuda_import=cuda_import)


def to_bytes(value: Any) -> bytes:
    """Encode a value into one frame as a bytes object (for pipes and queues)."""
    return b"".join(frame_buffers(encode(value)))


def from_bytes(data: Any) -> Any:
    """Decode a frame held in a bytes-like object (the inverse of :func:`to_bytes`).

    Raises:
        WireError: the bytes are not exactly one valid frame.
    """
    view = memoryview(data).cast("B")
    pos = 0

    def readinto(out: memoryview) -> None:
        nonlocal pos
        n = out.nbytes
        if pos + n > view.nbytes:
            raise WireError(f"frame truncated: needs {pos + n} bytes, has {view.nbytes}")
        out[:] = view[pos:pos + n]
        pos += n

    value = read_frame(readinto)
    if pos != view.nbytes:
        raise WireError(f"{view.nbytes - pos} stray bytes after the frame")
    return value
