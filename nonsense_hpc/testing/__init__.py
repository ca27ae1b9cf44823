"""Test support: an mpirun test matrix for pytest.

Files named ``mpi_test_*.py`` are collected by the plugin
(:mod:`nonsense_hpc.testing.plugin`, registered as a pytest11 entry point) and each of
their ``test_*`` functions runs on every rank under ``mpirun -n NP`` for each NP of the
matrix (default 1, 2, 3, 4, 5, 8). A test function takes ``comm`` (a private duplicate of
COMM_WORLD) and optionally ``tmp_path`` (one directory shared by all ranks). Module-level
constants tune the matrix::

    NP = (2, 3)                      # rank counts for this file
    TEST_NP = {"test_big": (2,)}     # per-test override
    TIMEOUT = 60                     # seconds per test before the hang guard fires
    VARIANTS = {"nodes2": {"NONSENSE_RANKS_PER_NODE": "2"}}   # extra environments
    VARIANT_NP = {"nodes2": (3, 5)}  # rank counts for a variant (default: NP)
    MPIRUN_ARGS = ("--enable-recovery",)                     # launcher options

Items are named ``test_x[np=4]`` (or ``test_x[np=4-nodes2]``), so a failure names the
test and the rank count.
"""

__all__: list[str] = []
