"""``nonsense-hpc forwarder | streamer | broker | watch | feed | keys``."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from nonsense_hpc.bench.devices import BENCH_COMMANDS

__all__ = ["BENCH_COMMANDS", "COMMANDS", "broker", "feed", "forwarder", "keys", "streamer",
           "watch"]


def _env_default(name: str, fallback: str) -> str:
    return os.environ.get(name, "").strip() or fallback


def _common(fn: Any) -> Any:
    options = [
        click.option("--control", default=None, metavar="ADDR",
                     help="Control socket address (default: a random 127.0.0.1 port, "
                          "printed at start; env NONSENSE_CONTROL)."),
        click.option("--public", is_flag=True,
                     help="Allow binding non-loopback interfaces (tcp://*:PORT). Devices "
                          "bind to 127.0.0.1 unless told so."),
        click.option("--max-message-size", default="64MiB", show_default=True,
                     help="Largest message accepted (libzmq drops larger frames)."),
        click.option("--curve-dir", default=None, metavar="DIR",
                     help="Serve CURVE encryption and accept only clients in DIR/authorized "
                          "(create with `nonsense-hpc keys generate DIR`; env "
                          "NONSENSE_CURVE_DIR)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _serve(device: Any) -> None:
    """Run a device in a thread; print its endpoints as JSON; stop on SIGINT/SIGTERM."""
    from nonsense_hpc.errors import DeviceError

    try:
        device.start("thread")
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(json.dumps({"device": device.name, "pid": os.getpid(), **device.endpoints}))
    sys.stdout.flush()
    while not stop.wait(0.5) and device.is_alive():
        pass
    if device.is_alive():
        device.terminate()
    click.echo(json.dumps({"device": device.name, "stopped": True}), err=True)


def _device_command(kind: str) -> Any:
    from nonsense_hpc.config import parse_size
    from nonsense_hpc.devices import Forwarder, Streamer

    cls = Forwarder if kind == "forwarder" else Streamer
    up = kind.upper()
    ports = ("5559", "5560") if kind == "forwarder" else ("5557", "5558")
    what = ("publishers connect (XSUB)", "subscribers connect (XPUB)") if kind == \
        "forwarder" else ("feeders PUSH tasks (PULL)", "workers PULL tasks (PUSH)")

    @click.command(kind, help=f"""Run a {kind.title()}: {(cls.__doc__ or "").splitlines()[0]}

    The device binds both addresses, prints one JSON line with its endpoints, and runs
    until Ctrl-C or SIGTERM. Messages never enter Python unless --validate is given.

    \b
    Example:
      nonsense-hpc {kind} --in tcp://127.0.0.1:{ports[0]} --out tcp://127.0.0.1:{ports[1]}
      nonsense-hpc {kind} --in ipc:///tmp/{kind}.in --out 6000 --validate
    """)
    @click.option("--in", "in_addr", default=lambda: _env_default(f"NONSENSE_{up}_IN",
                                                                  f"tcp://127.0.0.1:{ports[0]}"),
                  show_default=f"$NONSENSE_{up}_IN or tcp://127.0.0.1:{ports[0]}",
                  help=f"Address where {what[0]}; a bare port means 127.0.0.1.")
    @click.option("--out", "out_addr", default=lambda: _env_default(
        f"NONSENSE_{up}_OUT", f"tcp://127.0.0.1:{ports[1]}"),
                  show_default=f"$NONSENSE_{up}_OUT or tcp://127.0.0.1:{ports[1]}",
                  help=f"Address where {what[1]}.")
    @click.option("--hwm", default=1000, show_default=True,
                  help="High-water mark in messages; above it XPUB drops for that "
                       "subscriber, PUSH waits.")
    @click.option("--validate", is_flag=True,
                  help="Decode every message (wire format) and drop and count malformed "
                       "or oversized ones. Slower: the messages pass through Python.")
    @click.option("--hmac-key-file", type=click.Path(exists=True, dir_okay=False),
                  help="With --validate: drop messages not signed with this key.")
    @_common
    def command(in_addr: str, out_addr: str, hwm: int, validate: bool,
                hmac_key_file: str | None, control: str | None, public: bool,
                max_message_size: str, curve_dir: str | None) -> None:
        from nonsense_hpc.errors import ConfigError

        key = Path(hmac_key_file).read_bytes().strip() if hmac_key_file else None
        try:
            device = cls(in_addr, out_addr, control=control or os.environ.get(
                "NONSENSE_CONTROL") or None, public=public,
                max_bytes=parse_size(max_message_size), hwm=hwm, validate=validate,
                hmac_key=key, curve_dir=curve_dir or os.environ.get("NONSENSE_CURVE_DIR"))
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from None
        _serve(device)

    return command


forwarder = _device_command("forwarder")
streamer = _device_command("streamer")


@click.command()
@click.option("--in", "in_addr", default="tcp://127.0.0.1:5561", show_default=True,
              help="Address where feeders PUSH tasks (`nonsense-hpc feed --to`).")
@click.option("--workers", default=lambda: _env_default("NONSENSE_BROKER",
                                                        "tcp://127.0.0.1:5562"),
              show_default="$NONSENSE_BROKER or tcp://127.0.0.1:5562",
              help="Address where workers (TaskFarm ranks) connect.")
@click.option("--results", default=lambda: _env_default("NONSENSE_RESULTS",
                                                        "tcp://127.0.0.1:5563"),
              show_default="$NONSENSE_RESULTS or tcp://127.0.0.1:5563",
              help="Sink address the broker PUSHes results to (the sink binds it).")
@click.option("--heartbeat", default=0.5, show_default=True,
              help="Seconds between heartbeats (workers must use the same).")
@click.option("--liveness", default=3, show_default=True,
              help="Heartbeats a worker may miss before its tasks are re-dispatched.")
@_common
def broker(in_addr: str, workers: str, results: str, heartbeat: float, liveness: int,
           control: str | None, public: bool, max_message_size: str,
           curve_dir: str | None) -> None:
    """Run a reliable task broker (acks, heartbeats, re-dispatch of lost tasks).

    Killing a worker mid-task loses nothing: its unacknowledged tasks go to another
    worker. Results go to the sink at --results, one per task id.

    \b
    Example:
      nonsense-hpc broker --in 5561 --workers 5562 --results tcp://127.0.0.1:5563
      NONSENSE_BROKER=tcp://127.0.0.1:5562 mpirun -n 4 python farm.py
      nonsense-hpc feed tasks.jsonl --to tcp://127.0.0.1:5561 --results 5563
    """
    from nonsense_hpc.config import parse_size
    from nonsense_hpc.devices import Broker
    from nonsense_hpc.errors import ConfigError

    try:
        device = Broker(in_addr, workers, results, control=control, heartbeat=heartbeat,
                        liveness=liveness, max_bytes=parse_size(max_message_size),
                        public=public,
                        curve_dir=curve_dir or os.environ.get("NONSENSE_CURVE_DIR"))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    _serve(device)


@click.command()
@click.argument("address")
@click.option("--topic", "topics", multiple=True,
              help="Topic prefix to show (repeatable; default: everything).")
@click.option("--count", type=int, default=None, help="Exit after this many messages.")
@click.option("--duration", type=float, default=None, help="Exit after this many seconds.")
@click.option("--refresh", default=1.0, show_default=True,
              help="Seconds between re-renders of the view.")
@click.option("--curve-dir", default=None, metavar="DIR", help="CURVE client keys.")
def watch(address: str, topics: tuple[str, ...], count: int | None, duration: float | None,
          refresh: float, curve_dir: str | None) -> None:
    """Show live metrics and events from ADDRESS (a Forwarder's output), in place.

    One row per topic and rank (last step, values, count, age), the latest events, and
    the messages lost (from sequence numbers) and malformed. Ctrl-C to quit.

    \b
    Example:
      nonsense-hpc watch tcp://127.0.0.1:5560 --topic metrics. --topic events.
    """
    from nonsense_hpc.devices.watch import watch as run_watch
    from nonsense_hpc.errors import ConfigError

    try:
        run_watch(address, topics or ("",), count=count, duration=duration, refresh=refresh,
                  curve_dir=curve_dir or os.environ.get("NONSENSE_CURVE_DIR"))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "to", required=True, metavar="ADDRESS",
              help="Input of a Streamer or Broker (where feeders PUSH).")
@click.option("--topic", default="tasks", show_default=True, help="Topic of the tasks.")
@click.option("--results", default=None, metavar="ADDRESS",
              help="Bind a sink here, wait for every result and print them as JSON lines.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds to send everything, and for the results to arrive.")
@click.option("--curve-dir", default=None, metavar="DIR", help="CURVE client keys.")
def feed(file: str, to: str, topic: str, results: str | None, timeout: float,
         curve_dir: str | None) -> None:
    """Feed the tasks in FILE (JSON lines) to a Streamer or Broker, with progress.

    Each line becomes one task; its id is the line's "id" field or its line number.
    The whole file is checked before anything is sent. Progress goes to stderr; with
    --results each result is printed to stdout as one JSON line.

    \b
    Example:
      nonsense-hpc feed tasks.jsonl --to tcp://127.0.0.1:5561 --results 5563
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from nonsense_hpc.devices.feed import feed as run_feed
    from nonsense_hpc.devices.feed import read_tasks
    from nonsense_hpc.errors import ConfigError

    try:
        tasks = read_tasks(file)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=False) as bar:
        ids = {"sent": bar.add_task("sent", total=len(tasks))}
        if results:
            ids["results"] = bar.add_task("results", total=len(tasks))

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(ids[phase], completed=done)

        def on_result(msg: Any) -> None:
            click.echo(json.dumps({"task_id": msg.task_id, "rank": msg.rank,
                                   "data": msg.data}))

        try:
            summary = run_feed(tasks, to, topic=topic, results=results, timeout=timeout,
                               curve_dir=curve_dir or os.environ.get("NONSENSE_CURVE_DIR"),
                               progress=progress, on_result=on_result)
        except (TimeoutError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from None
    console.print(json.dumps(summary))


@click.group()
def keys() -> None:
    """CURVE keys for encrypted, authenticated devices."""


@keys.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--client", "clients", multiple=True,
              help="Client key pair to create and authorise (repeatable; default: client).")
@click.option("--force", is_flag=True, help="Replace keys that already exist.")
def keys_generate(directory: str, clients: tuple[str, ...], force: bool) -> None:
    """Create a server key pair and client key pairs in DIRECTORY.

    Devices started with --curve-dir DIRECTORY accept only the clients whose public keys
    lie in DIRECTORY/authorized; clients use DIRECTORY/server.key and their own
    <name>.key_secret. Copy a client's files, never server.key_secret.

    \b
    Example:
      nonsense-hpc keys generate ~/.nonsense/keys --client alice --client bob
      nonsense-hpc forwarder --curve-dir ~/.nonsense/keys --public --in tcp://*:5559
    """
    from nonsense_hpc.devices.security import generate_keys
    from nonsense_hpc.errors import ConfigError

    try:
        paths = generate_keys(directory, clients or ("client",), overwrite=force)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


COMMANDS = [forwarder, streamer, broker, watch, feed, keys]
