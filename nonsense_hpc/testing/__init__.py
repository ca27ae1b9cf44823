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

A test that runs past ``TIMEOUT`` is ended by its rank's hang guard, which prints every
thread's stack; the job ends with it and the item fails as ``timeout on rank(s) [R]``. A
rank stuck in C code that holds the GIL (where no Python thread can run) is ended by
faulthandler's watchdog 15 s later; its item fails with "rank(s) [R] started this test and
never finished it" and the stack in the mpirun output. ``--mpi-timeout-scale 2`` doubles
every guard on a slow machine.
"""

__all__: list[str] = []
