"""A publisher process for the reliability tests: one message every `period` s, forever."""

import sys
import time

import zmq

from nonsense_hpc import wire

address, period = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.setsockopt(zmq.LINGER, 0)
pub.setsockopt(zmq.RECONNECT_IVL, 20)  # reconnect quickly after a device restart
pub.connect(address)
enc = wire.Encoder(rank=0, source="pub-proc")
print("up", flush=True)
while True:
    enc.send(pub, "metrics.tick", {"t": time.time()})
    time.sleep(period)  # pacing of the stream, not synchronisation
