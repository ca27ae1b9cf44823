"""A consumer of the nonsense_hpc wire format written from docs/wire.md alone.

It uses plain pyzmq, json and numpy (no nonsense_hpc import): subscribe to a Forwarder's
output and print every message, decoding raw buffers into numpy arrays without a copy.

    python examples/wire_consumer.py tcp://127.0.0.1:5560 [TOPIC] [--count N]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import zmq


def decode(frames):
    """Return (topic, header, arrays) from the frames of one message."""
    if len(frames) < 2:
        raise ValueError("need at least a topic and a header frame")
    topic = bytes(frames[0]).decode("utf-8")
    header = json.loads(bytes(frames[1]).decode("utf-8"))
    if header.get("schema") != 1:
        raise ValueError(f"unknown schema {header.get('schema')!r}")
    if header.get("encoding", "raw") != "raw":
        raise ValueError("not a raw message (pickle is for trusted peers only)")
    body = frames[2:]
    if header.get("sig"):
        body = body[:-1]  # last frame: 32-byte HMAC-SHA256 digest (not checked here)
    arrays = {}
    for desc, frame in zip(header["buffers"], body, strict=True):
        dtype = np.dtype("<u2" if desc["dtype"] == "bfloat16" else desc["dtype"])
        if math.prod(desc["shape"]) * dtype.itemsize != len(memoryview(frame)):
            raise ValueError("buffer size does not match dtype and shape")
        arrays[desc["name"]] = np.frombuffer(frame, dtype=dtype).reshape(desc["shape"])
    return topic, header, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("topic", nargs="?", default="")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per message")
    args = parser.parse_args()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(args.address)
    sub.setsockopt(zmq.SUBSCRIBE, args.topic.encode())
    seen = 0
    try:
        while not args.count or seen < args.count:
            if not sub.poll(int(args.timeout * 1000)):
                raise SystemExit(f"no message within {args.timeout} s")
            topic, header, arrays = decode(sub.recv_multipart())
            shapes = {k: (str(v.dtype), v.shape, float(v.sum())) for k, v in arrays.items()}
            print(json.dumps({"topic": topic, "kind": header["kind"], "rank": header["rank"],
                              "step": header["step"], "seq": header["seq"],
                              "data": header["data"], "arrays": str(shapes)}), flush=True)
            seen += 1
    finally:
        sub.close()
        ctx.term()


if __name__ == "__main__":
    main()
