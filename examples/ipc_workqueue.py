"""torch-ipc README "Workqueue" example, in Python.

One writer (this script) and two background workers that read file names off a named
work queue, load each file, and write its contents back.

Run: python examples/ipc_workqueue.py
"""

import os
import tempfile

import torch

from nonsense_hpc import ipc


def worker(directory, mapid):
    # This function runs in a totally clean interpreter: import what it needs.
    import torch

    from nonsense_hpc import ipc

    # Open the queue by name (the main process already created it).
    q = ipc.workqueue("my queue")
    while True:
        # Read the next file name off the workqueue (None once the queue is closed).
        file_name = q.read()
        if file_name is None:
            break
        # Load the file and write its contents back into the workqueue.
        q.write(torch.load(os.path.join(directory, file_name)))


def main():
    with tempfile.TemporaryDirectory() as directory:
        for i, name in enumerate(["f1.pt", "f2.pt", "f3.pt"]):
            torch.save(torch.full((2, 2), float(i + 1)), os.path.join(directory, name))

        # Create a named workqueue.
        q = ipc.workqueue("my queue")
        # Create 2 background workers that read from the named workqueue.
        workers = ipc.map(2, worker, directory)

        # Write the file names into the workqueue.
        q.write("f1.pt")
        q.write("f2.pt")
        q.write("f3.pt")

        # Read back the 3 answers and print them.
        answers = [q.read(timeout=60) for _ in range(3)]
        for answer in answers:
            print(answer)

        # Closing the queue ends the workers' loops; join them.
        q.close()
        workers.join(timeout=60)
        return answers


if __name__ == "__main__":
    main()
