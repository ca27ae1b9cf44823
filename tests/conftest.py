"""Shared fixtures. The mpirun matrix plugin (nonsense_hpc.testing.plugin) is loaded
through its pytest11 entry point."""

from __future__ import annotations

import os

# Open MPI refuses to run as root without these; the test harness (never the library)
# sets them, as CI runs as root.
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
os.environ.setdefault("OMPI_MCA_osc", "^ucx")
