"""``nonsense-hpc doctor``: report what is installed and what is missing."""

from __future__ import annotations

import json

import click

__all__ = ["COMMANDS", "doctor"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Check MPI, torch, ZeroMQ, Slurm, container runtimes and Snakemake.

    Each missing piece is printed with the command that installs it. Exits 1 when a
    piece the core needs (MPI, torch, ZeroMQ) is missing, 0 otherwise.
    """
    from nonsense_hpc.doctor import run_checks

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = "ok     " if c.ok else ("MISSING" if c.required else "absent ")
            click.echo(f"{mark} {c.name:<{width}}  {c.detail}")
            if not c.ok and c.fix:
                click.echo(f"        {'':<{width}}  fix: {c.fix}")
    if any(c.required and not c.ok for c in checks):
        raise SystemExit(1)


COMMANDS = [doctor]
