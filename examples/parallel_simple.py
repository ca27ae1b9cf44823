"""Lua parallel README "A simple example", in Python.

Run: python examples/parallel_simple.py
"""

import torch

from nonsense_hpc import parallel

# Code for the workers: a worker starts with a blank interpreter, so it imports what it uses.
worker = """
import torch

# print from worker
parallel.print("Im a worker, my ID is:", parallel.id)

# receive data from the top process, 5 times
for i in range(5):
    t = parallel.parent.receive()
    parallel.print("received object with norm:", float(t["data"].norm()))
"""


def main():
    # Set the shared buffer size (a 100x100 float64 tensor is 80 KB: it streams through).
    parallel.set_shared_size(256 * 1024)
    # Print from the top process.
    parallel.print("Im the parent, my ID is:", parallel.id)
    # Number of workers.
    nprocesses = 4
    # Dispatch/run each worker in a separate process.
    for _ in range(nprocesses):
        parallel.run(worker)
    # Create a complex object to send to the workers.
    t = {"name": "my variable", "data": torch.randn(100, 100, dtype=torch.float64)}
    # Transmit the object to each worker.
    parallel.print("transmitting object with norm:", float(t["data"].norm()))
    for _ in range(5):
        for i in range(nprocesses):
            parallel.children[i].send(t)
    # Sync/terminate when all workers are done.
    parallel.children.join(timeout=120)
    parallel.print("all processes terminated")


if __name__ == "__main__":
    main()
