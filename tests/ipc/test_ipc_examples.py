"""The seeds' README examples, rewritten in Python under examples/, run as scripts."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECT = {
    "ipc_client_server.py": ["hi 7 torch.Size([4, 3])"],
    # Without a GPU the example says it skipped; with one it checks the values it got.
    "ipc_cuda.py": ["ipc_cuda: skipped" if not torch.cuda.is_available() else "values match"],
    "ipc_map.py": ["tensor([1., 1., 1.]) tensor([2., 2., 2.]) tensor([3., 3., 3.])"],
    "ipc_workqueue.py": ["tensor([[1., 1.],", "tensor([[3., 3.],"],
    "parallel_api.py": ["arg1", "{'id': 1, 'parent': 0, 'args': ['arg1', 2]}"],
    "parallel_join.py": ["Im in a process", "[1, 2, 3, 4]"],
    "parallel_send_receive.py": ["<parallel#001> received object: dict",
                                 "<parallel#002> received object: str"],
    "parallel_simple.py": ["<parallel#000> Im the parent, my ID is: 0",
                           "<parallel#004> Im a worker, my ID is: 4",
                           "<parallel#000> all processes terminated"],
}


def test_every_example_is_tested():
    found = {p.name for p in EXAMPLES.glob("ipc_*.py")} | {
        p.name for p in EXAMPLES.glob("parallel_*.py")}
    assert found == set(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name):
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr
    for line in EXPECT[name]:
        assert line in proc.stdout, proc.stdout
