"""Lua parallel README: create processes, then join them (all at once, or one by one).

Run: python examples/parallel_join.py
"""

from nonsense_hpc import parallel


def main():
    # Create processes.
    for _ in range(4):
        parallel.run('print("Im in a process")')
    # Sync processes; the following two ways are equivalent:
    # (1) join all children
    parallel.children.join(timeout=60)
    # (2) join individual children (joining again is a no-op for children that finished)
    for i in range(4):
        parallel.children[i].join(timeout=60)
    return [c.id for c in parallel.children]


if __name__ == "__main__":
    print(main())
