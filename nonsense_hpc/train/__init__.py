"""Data-parallel training for the main job: digits shards, Tree AllReduce, checkpoints.

* :mod:`.data`: scikit-learn's digits split into a test set and training shards.
* :mod:`.trainer`: :func:`train` on every MPI rank, gradients averaged by the Tree (or
  torch DDP for comparison), metrics published per step, checkpoints and resume.
* :mod:`.evaluate`: test-set metrics of the trained model.
* :mod:`.monitor`: a supervised Forwarder (plus a recorder of what it forwards) for a run.
* :mod:`.report`: an HTML report with PNG plots.
* :mod:`.mainjob`: runs the Snakemake workflow (``nonsense-hpc run``).

See docs/training.md and docs/workflow.md.
"""

from nonsense_hpc.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from nonsense_hpc.train.data import load_rank_data, load_test_data, prepare_shards
from nonsense_hpc.train.evaluate import evaluate, load_model
from nonsense_hpc.train.model import make_model
from nonsense_hpc.train.trainer import InjectedFailure, TrainConfig, TrainResult, train

__all__ = [
    "InjectedFailure",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "load_rank_data",
    "load_test_data",
    "make_model",
    "prepare_shards",
    "save_checkpoint",
    "train",
]
