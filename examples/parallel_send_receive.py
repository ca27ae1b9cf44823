"""Lua parallel README: children receive objects from the parent and print them.

The seed loops for ever; here each child takes ROUNDS objects, so the example ends.

Run: python examples/parallel_send_receive.py
"""

import torch

from nonsense_hpc import parallel

ROUNDS = 3

# Code for the children: receive objects from the parent and print them.
somecode = """
for _ in range(args[0]):
    obj = parallel.parent.receive()
    parallel.print("received object:", type(obj).__name__)
"""


def main():
    # Dispatch two processes.
    parallel.run(somecode, ROUNDS)
    parallel.run(somecode, ROUNDS)
    # And send them some data.
    t = {1: "a table", "entry2": "with arbitrary entries", "tensor": torch.zeros(100, 100)}
    for _ in range(ROUNDS):
        parallel.children[0].send(t)  # send the whole table to child 1
        parallel.children[1].send(t["entry2"])  # just send an entry to child 2
    parallel.children.join(timeout=60)


if __name__ == "__main__":
    main()
