"""Entry point of ``nonsense-hpc``: assembles the subcommands from the cli package."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from nonsense_hpc._version import __version__

__all__ = ["bench", "cli", "main"]

_EPILOG = """\b
Start here:
  nonsense-hpc doctor                     what is installed, what is missing
  mpirun -n 4 nonsense-hpc topology       the tree the ranks build
  mpirun -n 2 nonsense-hpc bench allreduce
Settings come from NONSENSE_* environment variables (docs/configuration.md).
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.version_option(__version__, "-V", "--version", prog_name="nonsense-hpc")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """HPC job toolkit: tree AllReduce over MPI, ZeroMQ devices, supervisors, Slurm jobs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


@cli.group()
def bench() -> None:
    """Benchmarks that compare against named peers in one run and print ratios."""


def _load_commands() -> None:
    package = importlib.import_module("nonsense_hpc.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("main",) or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"nonsense_hpc.cli.{info.name}")
        except Exception as exc:  # one broken group must not take the others down
            print(f"nonsense-hpc: warning: commands in nonsense_hpc.cli.{info.name} are "
                  f"unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)
        for command in getattr(module, "BENCH_COMMANDS", []):
            bench.add_command(command)


_load_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (used by tests and the console script)."""
    try:
        cli.main(args=argv, prog_name="nonsense-hpc", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
