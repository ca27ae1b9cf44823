"""The wire format: how every message in nonsense_hpc looks on a ZeroMQ socket.

A message is one ZeroMQ multipart message of at least two frames::

    frame 0      topic     UTF-8 text; subscribers filter on its prefix
    frame 1      header    UTF-8 JSON object (below)
    frame 2..    buffers   raw array bytes, one frame per entry of header["buffers"]
    last frame   digest    32 bytes of HMAC-SHA256, only when header["sig"] is set

Header fields (``docs/wire.md`` is the reference a consumer is written from)::

    schema     int        SCHEMA_VERSION (1); a larger value is refused
    kind       str        "metric" | "event" | "tensor" | "task" | "result" | "log" | ...
    job_id     str|null   the job this message belongs to (Slurm job id, run name)
    rank       int|null   MPI rank of the sender
    step       int|null   training step, iteration, or any user counter
    seq        int        per-sender sequence number, +1 per message (counts losses)
    timestamp  float      seconds since the epoch when the message was encoded
    source     str        sender identity ("host:pid" by default); ``seq`` runs per source
    task_id    str|null   task identity (tasks and results; the sink de-duplicates on it)
    dtype      str|null   dtype of the only buffer (null with zero or several buffers)
    shape      list|null  shape of the only buffer
    buffers    list       one {"name", "dtype", "shape", "nbytes"} per raw frame, in order
    data       any        JSON payload (metrics dict, event fields, task arguments)
    encoding   str        "raw" (default) or "pickle" (trusted, signed, opt-in only)
    sig        str        "hmac-sha256" when a digest frame follows

Buffers are C-ordered, little-endian; ``dtype`` is a numpy name from :data:`DTYPES`.
``bfloat16`` travels as its raw 16-bit patterns.

Public API:
    * :func:`encode` -> list of frames (arrays and CPU tensors are passed zero-copy:
      the frames are views of the caller's memory, sent with ``copy=False``).
    * :func:`decode` -> :class:`Message`; raises :class:`~nonsense_hpc.errors.WireError`
      for anything malformed, oversized (``max_bytes``), unsigned when a key is required,
      or pickled without explicit opt-in.
    * :func:`send` / :func:`recv`: encode/decode on a pyzmq socket (``recv`` has a timeout).
    * :class:`Encoder`: stamps job id, rank, source and a running ``seq`` on every message.
    * :class:`SequenceTracker`: counts messages lost per source from the ``seq`` gaps.

No pickle by default. Pickle is produced only by ``encode(..., pickle_obj=obj,
hmac_key=key)`` and accepted only by ``decode(..., allow_pickle=True, hmac_key=key)``
after the HMAC digest verifies.

Example:
    >>> import numpy as np
    >>> frames = encode("metrics.loss", {"loss": 0.25}, kind="metric", rank=0, step=3,
    ...                 arrays={"w": np.ones((2, 2), np.float32)})
    >>> msg = decode(frames)
    >>> msg.topic, msg.data["loss"], msg.step, msg.arrays["w"].shape
    ('metrics.loss', 0.25, 3, (2, 2))
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import pickle
import socket as _socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nonsense_hpc.errors import WireError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "KINDS",
    "SCHEMA_VERSION",
    "Encoder",
    "Message",
    "SequenceTracker",
    "decode",
    "default_source",
    "encode",
    "recv",
    "send",
]

SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 64 * 1024**2
MAX_TOPIC_BYTES = 1024
KINDS = ("metric", "event", "tensor", "task", "result", "log", "heartbeat", "control")
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128", "bfloat16")
_DIGEST_BYTES = 32
_NOTHING: Any = object()


def default_source() -> str:
    """The default sender identity, ``"host:pid"``."""
    return f"{_socket.gethostname()}:{os.getpid()}"


@dataclass
class Message:
    """A decoded message.

    Attributes:
        topic: the topic frame.
        kind: what the message is ("metric", "event", "tensor", "task", "result", ...).
        data: the JSON payload (or the unpickled object for a trusted pickle message).
        arrays: name -> numpy array, views of the received frames (no copy).
        header: the full header, unknown fields included.
    """

    topic: str
    kind: str
    data: Any = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str | None:
        """The header's ``job_id``."""
        return self.header.get("job_id")

    @property
    def rank(self) -> int | None:
        """The header's ``rank``."""
        return self.header.get("rank")

    @property
    def step(self) -> int | None:
        """The header's ``step``."""
        return self.header.get("step")

    @property
    def seq(self) -> int:
        """The header's ``seq``."""
        return int(self.header.get("seq", 0))

    @property
    def timestamp(self) -> float:
        """The header's ``timestamp``."""
        return float(self.header.get("timestamp", 0.0))

    @property
    def source(self) -> str:
        """The header's ``source``."""
        return str(self.header.get("source", ""))

    @property
    def task_id(self) -> str | None:
        """The header's ``task_id``."""
        return self.header.get("task_id")

    @property
    def array(self) -> np.ndarray:
        """The only array of the message.

        Raises:
            WireError: the message carries zero or several arrays.
        """
        if len(self.arrays) != 1:
            raise WireError(f"message has {len(self.arrays)} arrays, not exactly one: "
                            f"use .arrays[name] ({sorted(self.arrays)})")
        return next(iter(self.arrays.values()))

    def tensor(self, name: str | None = None) -> Any:
        """An array as a torch CPU tensor sharing the received memory (bfloat16 restored).

        Args:
            name: which array (default: the only one).
        """
        import torch

        arr = self.array if name is None else self.arrays[name]
        desc = {d["name"]: d for d in self.header.get("buffers", [])}
        key = name if name is not None else next(iter(self.arrays))
        out = torch.from_numpy(arr)
        if desc.get(key, {}).get("dtype") == "bfloat16":
            out = out.view(torch.bfloat16)
        return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.size <= 64:
        return obj.tolist()
    if type(obj).__module__.startswith("torch") and hasattr(obj, "numel") and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable; send arrays and "
                    f"tensors through arrays=, not data=")


def _as_array(value: Any) -> tuple[np.ndarray, str]:
    """Return a C-contiguous little-endian numpy view of an array or tensor, and its dtype."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        import torch

        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()  # the one copy a device tensor cannot avoid
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
        arr = t.numpy()
    elif isinstance(value, np.ndarray):
        arr = value
    else:
        raise WireError(f"arrays must be numpy arrays or torch tensors, "
                        f"got {type(value).__name__}")
    name = arr.dtype.name
    if name not in DTYPES:
        raise WireError(f"dtype {arr.dtype} cannot travel on the wire; "
                        f"supported: {', '.join(DTYPES)}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr, name


def _digest(key: bytes, frames: Sequence[Any]) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for frame in frames:
        view = memoryview(frame).cast("B")
        mac.update(struct.pack("<Q", view.nbytes))
        mac.update(view)
    return mac.digest()


def encode(topic: str, data: Any = None, *, kind: str = "metric",
           arrays: Any = None, job_id: str | None = None, rank: int | None = None,
           step: int | None = None, seq: int = 0, timestamp: float | None = None,
           source: str | None = None, task_id: str | None = None,
           extra: Mapping[str, Any] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
           hmac_key: bytes | None = None, pickle_obj: Any = _NOTHING) -> list[Any]:
    """Encode one message into frames ready for ``socket.send_multipart(frames, copy=False)``.

    Every argument is validated before any frame is built.

    Args:
        topic: the topic (UTF-8, at most 1024 bytes).
        data: JSON-serialisable payload (numpy scalars and 1-element tensors are allowed).
        kind: message kind, a short lowercase word (see :data:`KINDS`; others are allowed).
        arrays: one array/tensor, a sequence of them, or a mapping name -> array; numpy
            arrays and torch CPU tensors are sent zero-copy.
        job_id: job identity.
        rank: MPI rank of the sender.
        step: training step or any user counter.
        seq: sequence number (an :class:`Encoder` counts it for you).
        timestamp: seconds since the epoch (default ``time.time()``).
        source: sender identity (default ``"host:pid"``).
        task_id: task identity for tasks and results.
        extra: further header fields (must not shadow the standard ones).
        max_bytes: refuse messages whose frames total more than this.
        hmac_key: sign the message (a digest frame is appended).
        pickle_obj: send this object pickled (requires ``hmac_key``; trusted peers only).

    Returns:
        The frames: bytes for topic and header, numpy uint8 views for buffers.

    Raises:
        WireError: an argument is invalid or the message exceeds ``max_bytes``.
    """
    if not isinstance(topic, str):
        raise WireError(f"topic must be str, got {type(topic).__name__}")
    topic_b = topic.encode("utf-8")
    if len(topic_b) > MAX_TOPIC_BYTES:
        raise WireError(f"topic is {len(topic_b)} bytes, at most {MAX_TOPIC_BYTES} allowed")
    if not isinstance(kind, str) or not kind or not kind.replace("_", "").isalnum():
        raise WireError(f"kind must be a short word such as 'metric', got {kind!r}")
    for name, val in (("rank", rank), ("step", step)):
        if val is not None and (not isinstance(val, int | np.integer) or isinstance(val, bool)):
            raise WireError(f"{name} must be an int or None, got {val!r}")
    if not isinstance(seq, int | np.integer) or isinstance(seq, bool) or seq < 0:
        raise WireError(f"seq must be an int >= 0, got {seq!r}")
    if max_bytes <= 0:
        raise WireError(f"max_bytes must be > 0, got {max_bytes}")
    named: list[tuple[str, Any]]
    if arrays is None:
        named = []
    elif isinstance(arrays, Mapping):
        named = [(str(k), v) for k, v in arrays.items()]
    elif isinstance(arrays, list | tuple):
        named = [(str(i), v) for i, v in enumerate(arrays)]
    else:
        named = [("0", arrays)]
    descs: list[dict[str, Any]] = []
    payload: list[Any] = []
    encoding = "raw"
    if pickle_obj is not _NOTHING:
        if hmac_key is None:
            raise WireError("pickle_obj needs hmac_key: pickle is only sent signed, "
                            "between peers that share the key")
        if named:
            raise WireError("pickle_obj and arrays cannot be combined")
        encoding = "pickle"
        payload.append(pickle.dumps(pickle_obj, protocol=pickle.HIGHEST_PROTOCOL))
    for name, value in named:
        arr, dtype = _as_array(value)
        descs.append({"name": name, "dtype": dtype, "shape": list(arr.shape),
                      "nbytes": int(arr.nbytes)})
        payload.append(arr.reshape(-1).view(np.uint8))
    header: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "kind": kind, "job_id": job_id,
        "rank": None if rank is None else int(rank), "step": None if step is None else int(step),
        "seq": int(seq), "timestamp": time.time() if timestamp is None else float(timestamp),
        "source": default_source() if source is None else str(source),
        "task_id": None if task_id is None else str(task_id),
        "dtype": descs[0]["dtype"] if len(descs) == 1 else None,
        "shape": descs[0]["shape"] if len(descs) == 1 else None,
        "buffers": descs, "data": data, "encoding": encoding,
    }
    if extra:
        clash = set(extra) & set(header)
        if clash:
            raise WireError(f"extra header fields shadow standard ones: {sorted(clash)}")
        header.update(extra)
    if hmac_key is not None:
        header["sig"] = "hmac-sha256"
    try:
        header_b = json.dumps(header, default=_json_default, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise WireError(f"data is not JSON serialisable: {exc}") from None
    frames: list[Any] = [topic_b, header_b, *payload]
    total = sum(memoryview(f).nbytes for f in frames)
    if total > max_bytes:
        raise WireError(f"message of {total} bytes exceeds max_bytes={max_bytes}")
    if hmac_key is not None:
        frames.append(_digest(hmac_key, frames))
    return frames


def _frame_view(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", frame)  # zmq.Frame or any buffer
    return memoryview(buf).cast("B")


def _check_int(header: Mapping[str, Any], name: str, optional: bool) -> None:
    val = header.get(name)
    if val is None and optional:
        return
    if not isinstance(val, int) or isinstance(val, bool):
        raise WireError(f"header field {name!r} must be an int, got {val!r}")


def decode(frames: Sequence[Any], *, max_bytes: int = DEFAULT_MAX_BYTES,
           hmac_key: bytes | None = None, allow_pickle: bool = False) -> Message:
    """Decode and validate the frames of one message.

    Args:
        frames: the frames (bytes, memoryviews or ``zmq.Frame`` from ``copy=False``).
        max_bytes: refuse messages whose frames total more than this.
        hmac_key: require a valid HMAC-SHA256 digest made with this key.
        allow_pickle: accept a pickled payload (only together with ``hmac_key``).

    Returns:
        The message; arrays are zero-copy views of the frames.

    Raises:
        WireError: the message is malformed, oversized, unsigned or badly signed when a
            key is given, of a newer schema, or pickled without opt-in.
    """
    if not isinstance(frames, Sequence) or isinstance(frames, bytes | str):
        raise WireError(f"frames must be a sequence of frames, got {type(frames).__name__}")
    if len(frames) < 2:
        raise WireError(f"a message has at least 2 frames (topic, header), got {len(frames)}")
    try:
        views = [_frame_view(f) for f in frames]
    except TypeError as exc:
        raise WireError(f"frame is not a buffer: {exc}") from None
    total = sum(v.nbytes for v in views)
    if total > max_bytes:
        raise WireError(f"message of {total} bytes exceeds max_bytes={max_bytes}")
    try:
        topic = views[0].tobytes().decode("utf-8")
        header = json.loads(views[1].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"topic or header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError(f"header must be a JSON object, got {type(header).__name__}")
    _check_int(header, "schema", optional=False)
    if header["schema"] > SCHEMA_VERSION or header["schema"] < 1:
        raise WireError(f"unsupported schema version {header['schema']} "
                        f"(this reader knows {SCHEMA_VERSION})")
    kind = header.get("kind")
    if not isinstance(kind, str) or not kind:
        raise WireError(f"header field 'kind' must be a non-empty string, got {kind!r}")
    _check_int(header, "seq", optional=True)
    _check_int(header, "rank", optional=True)
    _check_int(header, "step", optional=True)
    body = views[2:]
    signed = header.get("sig") is not None
    if signed:
        if header["sig"] != "hmac-sha256" or not body or body[-1].nbytes != _DIGEST_BYTES:
            raise WireError("signed message without a valid hmac-sha256 digest frame")
        digest, body = body[-1], body[:-1]
        if hmac_key is not None and not hmac.compare_digest(
                _digest(hmac_key, views[:-1]), digest.tobytes()):
            raise WireError("HMAC digest does not match: wrong key or tampered message")
    elif hmac_key is not None:
        raise WireError("unsigned message refused: a hmac_key was given, so every "
                        "message must be signed")
    encoding = header.get("encoding", "raw")
    if encoding == "pickle":
        if not (allow_pickle and hmac_key is not None and signed):
            raise WireError("pickled message refused: pickle is only accepted with "
                            "allow_pickle=True and a matching hmac_key")
        if len(body) != 1:
            raise WireError(f"pickle message must carry 1 payload frame, got {len(body)}")
        try:
            obj = pickle.loads(body[0])  # HMAC-verified, explicit opt-in
        except Exception as exc:
            raise WireError(f"pickled payload does not load: {exc}") from None
        return Message(topic=topic, kind=kind, data=obj, header=header)
    if encoding != "raw":
        raise WireError(f"unknown encoding {encoding!r} (known: raw, pickle)")
    descs = header.get("buffers", [])
    if not isinstance(descs, list) or len(descs) != len(body):
        raise WireError(f"header lists {len(descs) if isinstance(descs, list) else descs!r} "
                        f"buffers but {len(body)} buffer frames follow")
    arrays: dict[str, np.ndarray] = {}
    for i, (desc, view) in enumerate(zip(descs, body, strict=True)):
        arrays[_desc_name(desc, i)] = _array_from(desc, view, i)
    return Message(topic=topic, kind=kind, data=header.get("data"), arrays=arrays,
                   header=header)


def _desc_name(desc: Any, index: int) -> str:
    if not isinstance(desc, dict):
        raise WireError(f"buffers[{index}] must be an object, got {desc!r}")
    name = desc.get("name", str(index))
    if not isinstance(name, str):
        raise WireError(f"buffers[{index}].name must be a string, got {name!r}")
    return name


def _array_from(desc: dict[str, Any], view: memoryview, index: int) -> np.ndarray:
    dtype = desc.get("dtype")
    if dtype not in DTYPES:
        raise WireError(f"buffers[{index}].dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    shape = desc.get("shape")
    if not isinstance(shape, list) or len(shape) > 32 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise WireError(f"buffers[{index}].shape must be a list of ints >= 0, got {shape!r}")
    np_dtype = np.dtype("<u2") if dtype == "bfloat16" else np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * np_dtype.itemsize
    if expected != view.nbytes:
        raise WireError(f"buffers[{index}] has {view.nbytes} bytes, but dtype {dtype} and "
                        f"shape {shape} need {expected}")
    return np.frombuffer(view, dtype=np_dtype).reshape(shape)


def send(sock: Any, topic: str, data: Any = None, *, flags: int = 0, **kwargs: Any) -> None:
    """Encode a message (see :func:`encode` for ``kwargs``) and send it zero-copy.

    Raises:
        WireError: invalid message. zmq.Again: ``flags=zmq.NOBLOCK`` and the socket is full.
    """
    sock.send_multipart(encode(topic, data, **kwargs), flags=flags, copy=False)


def recv(sock: Any, *, timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
         hmac_key: bytes | None = None, allow_pickle: bool = False) -> Message:
    """Receive and decode one message.

    Args:
        sock: a pyzmq socket.
        timeout: seconds to wait (None waits for ever).
        max_bytes: as for :func:`decode`.
        hmac_key: as for :func:`decode`.
        allow_pickle: as for :func:`decode`.

    Raises:
        TimeoutError: nothing arrived within ``timeout``.
        WireError: the message is invalid.
    """
    if timeout is not None and not sock.poll(int(timeout * 1000)):
        raise TimeoutError(f"no message within {timeout} s")
    frames = sock.recv_multipart(copy=False)
    return decode(frames, max_bytes=max_bytes, hmac_key=hmac_key, allow_pickle=allow_pickle)


class Encoder:
    """Encodes messages for one sender: stamps job id, rank, source and a running ``seq``.

    Example:
        >>> enc = Encoder(job_id="42", rank=0)
        >>> [decode(enc.encode("m", {"x": i})).seq for i in range(3)]
        [0, 1, 2]
    """

    def __init__(self, *, job_id: str | None = None, rank: int | None = None,
                 source: str | None = None, hmac_key: bytes | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.job_id = job_id
        self.rank = rank
        self.source = default_source() if source is None else source
        self.hmac_key = hmac_key
        self.max_bytes = max_bytes
        self._next = 0

    def encode(self, topic: str, data: Any = None, **kwargs: Any) -> list[Any]:
        """Encode with this sender's stamps (``kwargs`` as for :func:`encode`)."""
        kwargs.setdefault("job_id", self.job_id)
        kwargs.setdefault("rank", self.rank)
        kwargs.setdefault("source", self.source)
        kwargs.setdefault("hmac_key", self.hmac_key)
        kwargs.setdefault("max_bytes", self.max_bytes)
        frames = encode(topic, data, seq=self._next, **kwargs)
        # seq is only consumed once the message is valid, so a refused one leaves no gap.
        self._next += 1
        return frames

    @property
    def seq(self) -> int:
        """The sequence number the next message will carry."""
        return self._next

    def send(self, sock: Any, topic: str, data: Any = None, *, flags: int = 0,
             **kwargs: Any) -> None:
        """Encode and send zero-copy (see :meth:`encode`)."""
        sock.send_multipart(self.encode(topic, data, **kwargs), flags=flags, copy=False)


class SequenceTracker:
    """Counts received and lost messages per source from the ``seq`` field.

    A gap in a source's sequence counts as lost messages; a sequence that goes back to 0
    is a restarted sender (counted in :attr:`restarts`, not as loss).
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.received = 0
        self.lost = 0
        self.restarts = 0
        self.duplicates = 0

    def observe(self, msg: Message) -> int:
        """Record a message; return how many messages of its source were lost before it."""
        self.received += 1
        key, seq = msg.source, msg.seq
        prev = self.last.get(key)
        self.last[key] = max(seq, prev if prev is not None else -1)
        if prev is None:
            gap = seq
        elif seq > prev:
            gap = seq - prev - 1
        elif seq == 0:
            self.restarts += 1
            self.last[key] = 0
            gap = 0
        else:
            self.duplicates += 1
            gap = 0
        self.lost += gap
        return gap
