"""torch-ipc README "Map" example, in Python: load 3 files in parallel.

Run: python examples/ipc_map.py
"""

import os
import tempfile

import torch

from nonsense_hpc import ipc


def load(file_names, mapid):
    # Runs in a clean interpreter; mapid is 1, 2 or 3 (it indexed a Lua table in the seed).
    import torch

    return torch.load(file_names[mapid - 1])


def main():
    with tempfile.TemporaryDirectory() as directory:
        names = [os.path.join(directory, f"f{i}.pt") for i in (1, 2, 3)]
        for i, name in enumerate(names):
            torch.save(torch.full((3,), float(i + 1)), name)
        # Load 3 files in parallel.
        t1, t2, t3 = ipc.map(3, load, names).join(timeout=120)
    print(t1, t2, t3)
    return t1, t2, t3


if __name__ == "__main__":
    main()
