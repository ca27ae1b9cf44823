"""``nonsense-hpc supervise FILE``, ``nonsense-hpc ctl ...``, ``nonsense-hpc watchdog -- CMD``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from nonsense_hpc.bench.supervise import chaos_bench, supervisor_bench

__all__ = ["BENCH_COMMANDS", "COMMANDS", "ctl", "supervise", "watchdog"]


def _print_event(event: Any) -> None:
    click.echo(str(event), err=True)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--events", metavar="ADDR", default=None,
              help="Publish events here (overrides the file; '>ADDR' connects, e.g. to a "
                   "Forwarder's input). Default: the file's, else $NONSENSE_EVENTS.")
@click.option("--control", metavar="ADDR", default=None,
              help="Bind the control socket here (overrides the file). Default: the "
                   "file's, else $NONSENSE_CONTROL.")
@click.option("--check", is_flag=True, help="Only validate FILE and print the tree.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print events on stderr.")
def supervise(file: str, events: str | None, control: str | None, check: bool,
              quiet: bool) -> None:
    """Run the supervision tree described by FILE (TOML or YAML) until stopped.

    Children start in order and stop in reverse order on SIGTERM or Ctrl-C. Exits 0
    after a clean stop and 1 when the restart intensity was exceeded (so a parent
    supervisor running this command sees the failure). docs/supervision.md describes
    the file.

    \b
    Example:
      nonsense-hpc supervise examples/supervise_devices.toml
      nonsense-hpc ctl --control ipc:///tmp/nonsense-devices.ctl status
    """
    import dataclasses

    from nonsense_hpc.errors import ConfigError, SupervisorError
    from nonsense_hpc.supervise import Supervisor, load_config

    try:
        spec = load_config(file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    spec = dataclasses.replace(
        spec, events=events or spec.events or os.environ.get("NONSENSE_EVENTS"),
        control=control or spec.control or os.environ.get("NONSENSE_CONTROL"))
    if check:
        _print_tree(spec, 0)
        return
    sup = Supervisor(spec, on_event=None if quiet else _print_event)
    try:
        sup.run()
    except SupervisorError as exc:
        click.echo(f"nonsense-hpc supervise: {exc}", err=True)
        sys.exit(1)


def _print_tree(spec: Any, depth: int) -> None:
    pad = "  " * depth
    click.echo(f"{pad}{spec.name}: {spec.strategy}, intensity {spec.intensity} in "
               f"{spec.period} s" + (f", events {spec.events}" if spec.events else "")
               + (f", control {spec.control}" if spec.control else ""))
    for child in spec.children:
        if child.kind == "supervisor":
            click.echo(f"{pad}  - {child.id} (supervisor, {child.restart})")
            _print_tree(child.start, depth + 2)
        else:
            what = " ".join(child.start) if child.kind == "command" else repr(child.start)
            click.echo(f"{pad}  - {child.id} ({child.type}, {child.restart}, shutdown "
                       f"{child.shutdown}): {what}")


@click.command()
@click.argument("command", type=click.Choice(["status", "restart", "stop", "start",
                                              "shutdown"]))
@click.argument("name", required=False)
@click.option("--control", metavar="ADDR", default=None,
              help="The supervisor's control address (default: $NONSENSE_CONTROL).")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the answer (a restart waits for the child's "
                   "shutdown).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def ctl(command: str, name: str | None, control: str | None, timeout: float,
        as_json: bool) -> None:
    """Control a running supervisor: status, restart NAME, stop NAME, start NAME, shutdown.

    restart stops the child per its shutdown spec and starts it again; stop leaves it
    stopped (even a permanent one) until start; shutdown stops the whole supervisor.

    \b
    Example:
      nonsense-hpc ctl --control ipc:///tmp/sup.ctl status
      NONSENSE_CONTROL=ipc:///tmp/sup.ctl nonsense-hpc ctl restart forwarder
    """
    from nonsense_hpc.errors import ConfigError, SupervisorError
    from nonsense_hpc.supervise.control import request

    addr = control or os.environ.get("NONSENSE_CONTROL")
    if not addr:
        raise click.UsageError("no control address: pass --control ADDR or set "
                               "NONSENSE_CONTROL")
    try:
        result = request(addr, command, name, timeout=timeout)
    except (ConfigError, SupervisorError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json or command != "status":
        click.echo(json.dumps(result, indent=2 if as_json else None))
        return
    click.echo(f"{result['supervisor']} ({result['strategy']}, intensity "
               f"{result['intensity']} in {result['period']} s)")
    for child in result["children"]:
        state = f"RUNNING pid {child['pid']}" if child["pid"] else "STOPPED"
        click.echo(f"  {child['id']:<20} {state:<20} restarts {child['restarts']:<4} "
                   f"uptime {child['uptime']:.1f}s  last exit: {child['last_exit'] or '-'}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Seconds between the supervisor's heartbeats.")
@click.option("--timeout", type=float, default=None,
              help="Seconds of silence that count as a hang (default 10 x interval).")
@click.option("--intensity", type=int, default=3, show_default=True,
              help="Restarts allowed within --period before the watchdog gives up.")
@click.option("--period", type=float, default=60.0, show_default=True,
              help="Window of --intensity, in seconds.")
@click.option("--events", metavar="ADDR", default=None,
              help="Publish the watchdog's events here.")
def watchdog(argv: tuple[str, ...], interval: float, timeout: float | None, intensity: int,
             period: float, events: str | None) -> None:
    r"""Run a supervisor command and restart its whole tree when its heartbeat stops.

    The command (normally `nonsense-hpc supervise FILE`) runs in a session of its own
    and beats from its event loop; after --timeout seconds of silence, or when it dies,
    every process of that session is killed and the command is started again.

    \b
    Example:
      nonsense-hpc watchdog --interval 1 --timeout 5 -- \
          nonsense-hpc supervise examples/supervise_devices.toml
    """
    from nonsense_hpc.errors import SupervisorError
    from nonsense_hpc.supervise import Watchdog

    try:
        Watchdog(list(argv), interval=interval, timeout=timeout, intensity=intensity,
                 period=period, events=events, on_event=_print_event).run()
    except SupervisorError as exc:
        click.echo(f"nonsense-hpc watchdog: {exc}", err=True)
        sys.exit(1)


COMMANDS = [supervise, ctl, watchdog]
BENCH_COMMANDS = [supervisor_bench, chaos_bench]
