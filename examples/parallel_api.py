"""Lua parallel README "API, in very short": dispatch a process with arguments.

Run: python examples/parallel_api.py
"""

from nonsense_hpc import parallel

# Define the process' code (a string runs with `parallel` and `args` in its globals).
code = """
import torch
t = torch.zeros(10)
print(t)

# any process can access its id, its parent's id [and children's ids]
print(parallel.id)
print(parallel.parent.id)
if len(parallel.children) > 0:
    print(parallel.children[0].id)

# if arguments were passed, they are found in args
print(args[0])
parallel.parent.send({"id": parallel.id, "parent": parallel.parent.id, "args": list(args)})
"""


def main():
    # Execute the process, with optional arguments.
    child = parallel.run(code, "arg1", 2)
    reply = child.receive(timeout=60)
    child.join(timeout=60)
    return reply


if __name__ == "__main__":
    print(main())
