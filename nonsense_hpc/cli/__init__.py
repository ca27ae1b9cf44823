"""The ``nonsense-hpc`` command line.

Each module in this package owns one group of subcommands and exports them in a list
named ``COMMANDS`` (top-level commands) and optionally ``BENCH_COMMANDS`` (added under
``nonsense-hpc bench``). :mod:`nonsense_hpc.cli.main` finds the modules by itself, so a
new subcommand is one new file. Modules keep heavy imports (torch, mpi4py, zmq) inside
the command functions, so ``--help`` stays fast and never initialises MPI.
"""
