"""Commands to see a job run: ``trace``, ``dashboard`` and ``ps-train``.

Heavy imports (mpi4py, torch, zmq) stay inside the command functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

__all__ = ["COMMANDS", "dashboard", "ps_train", "trace"]


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-o", "--out", default="trace-out", show_default=True,
              type=click.Path(file_okay=False),
              help="Directory for trace.html, trace.svg, trace.mmd, trace.json (Chrome/"
                   "Perfetto), events.jsonl and the per-process files under raw/.")
@click.option("--input", "inputs", multiple=True, type=click.Path(),
              help="Render existing JSON-lines files (Recorder.dump output, or a "
                   "directory of them) instead of running a command. Repeatable.")
@click.option("--timeout", type=float, default=None,
              help="Kill the command after this many seconds (exit status 124).")
@click.option("--max-items", type=int, default=400, show_default=True,
              help="Rows drawn in the sequence diagrams (the Chrome trace keeps all).")
@click.option("--title", default=None, help="Title of the diagrams (default: the command).")
@click.option("--mermaid", "print_mermaid", is_flag=True,
              help="Also print the Mermaid text on stdout.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def trace(out: str, inputs: tuple[str, ...], timeout: float | None, max_items: int,
          title: str | None, print_mermaid: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND with tracing on and draw who sent what to whom.

    Sets NONSENSE_TRACE=1 (every Tree records its sends, receives and reductions) and
    NONSENSE_TRACE_FILE (each process dumps its events at exit), runs the command,
    then merges the per-process files into a sequence diagram (HTML/SVG, Mermaid) and a
    Chrome trace with one track per rank. The exit status is the command's.

    \b
    Examples:
      nonsense-hpc trace -- mpirun -n 4 python train.py
      nonsense-hpc trace -o step7 --mermaid -- mpirun -n 2 python -c "..."
      nonsense-hpc trace --input runs/raw/ -o rendered
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.trace import load, render, to_mermaid
    from nonsense_hpc.trace.runner import run_traced

    try:
        if inputs:
            if command:
                raise click.UsageError("give either --input files or a command, not both")
            t = load(inputs)
            files = render(t, out, title=title or "nonsense_hpc trace", max_items=max_items)
            code = 0
        else:
            res = run_traced(list(command), out, timeout=timeout, title=title,
                             max_items=max_items)
            t, files, code = res.trace, res.files, res.returncode
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(t):
        click.echo("trace: no events were recorded (does the program use a Tree? "
                   "Trees record only with NONSENSE_TRACE=1 or Tree(trace=True))", err=True)
    else:
        click.echo(f"trace: {len(t)} events from {len(t.actors)} actors", err=True)
        for key, path in files.items():
            click.echo(f"  {key:8s} {path}", err=True)
        if print_mermaid:
            click.echo(to_mermaid(t, max_items=max_items))
    sys.exit(code)


@click.command()
@click.option("--from", "sources", multiple=True, required=True, metavar="ADDRESS",
              help="Forwarder output (XPUB) or any publisher to subscribe to, e.g. "
                   "tcp://127.0.0.1:5560. Repeatable (a supervisor's own event socket...).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface the web page is served on.")
@click.option("--port", type=int, default=8050, show_default=True,
              help="TCP port of the web page (0: any free port, printed at start).")
@click.option("--public", is_flag=True,
              help="Allow a non-loopback --host (anyone who can reach it sees the job).")
@click.option("--topic", "topics", multiple=True,
              help="Topic prefixes to subscribe to (default: metrics., heartbeat., "
                   "events., supervise.). Repeatable.")
@click.option("--hmac-key-file", type=click.Path(exists=True, dir_okay=False),
              help="Drop messages not signed with the key in this file.")
def dashboard(sources: tuple[str, ...], host: str, port: int, public: bool,
              topics: tuple[str, ...], hmac_key_file: str | None) -> None:
    """Serve a live web page of a running job, fed through a Forwarder.

    Loss and accuracy curves, steps per second, per-rank heartbeats and memory, and
    supervisor events, updated live (Server-Sent Events). The page loads nothing from
    the network. Ranks publish with Publisher.metric(...) and start_heartbeat(...);
    supervisors with events=">FORWARDER_IN". Stop with Ctrl-C.

    \b
    Examples:
      nonsense-hpc forwarder --in tcp://127.0.0.1:5559 --out tcp://127.0.0.1:5560 &
      nonsense-hpc dashboard --from tcp://127.0.0.1:5560          # http://127.0.0.1:8050/
      ssh -L 8050:127.0.0.1:8050 login-node                      # from your laptop
    """
    from nonsense_hpc.dashboard import DEFAULT_TOPICS, Dashboard
    from nonsense_hpc.errors import ConfigError, DeviceError

    key = None
    if hmac_key_file:
        with open(hmac_key_file, "rb") as fh:
            key = fh.read().strip()
    try:
        dash = Dashboard(list(sources), host=host, port=port, public=public,
                         topics=tuple(topics) or DEFAULT_TOPICS, hmac_key=key).start()
    except (ConfigError, DeviceError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"dashboard: {dash.url} (subscribed to {', '.join(dash.addresses)})",
               err=True)
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dash.stop()


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of numbers: {text!r}") from None


@click.command("ps-train")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Prepared shards (nonsense-hpc workflow prepare --shards N).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (async/, sync/, comparison.json/.png).")
@click.option("--mode", type=click.Choice(["async", "sync", "both"]), default="async",
              show_default=True,
              help="async: parameter server; sync: Tree AllReduce under mpirun; both: "
                   "run both and compare them.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes (async) and MPI ranks (sync).")
@click.option("--updates", type=click.IntRange(min=1), default=400, show_default=True,
              help="Gradients the server applies (async). The sync run does "
                   "updates / workers steps, so both see the same number of samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Samples per gradient.")
@click.option("--lr", type=float, default=0.05, show_default=True, help="Learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True,
              help="SGD momentum (on the server in async mode).")
@click.option("--hidden", default="128,128", show_default=True,
              help="Hidden layer widths, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Model and batch seed.")
@click.option("--max-staleness", type=click.IntRange(min=0), default=None,
              help="Drop gradients staler than this many versions [default: 2 x workers].")
@click.option("--staleness-lr", type=click.Choice(["constant", "inverse"]),
              default="constant", show_default=True,
              help="inverse: scale each gradient by 1 / (1 + staleness).")
@click.option("--eval-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Updates between test evaluations (async; sync uses a matching "
                   "number of steps).")
@click.option("--delays", default="", metavar="S0,S1,...",
              help="Extra seconds per step for each worker/rank: play a straggler, "
                   "e.g. 0,0.02.")
@click.option("--publish", default=None, metavar="ADDR",
              help="Forwarder input for live metrics (metrics.async), for the dashboard.")
@click.option("--trace", "trace_", is_flag=True,
              help="Record the parameter-server exchanges and render OUT/async/trace/.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds each run may take.")
def ps_train(data_dir: str, out_dir: str, mode: str, workers: int, updates: int,
             batch_size: int, lr: float, momentum: float, hidden: str, seed: int,
             max_staleness: int | None, staleness_lr: str, eval_every: int, delays: str,
             publish: str | None, trace_: bool, timeout: float) -> None:
    """Train asynchronously with a parameter server, or compare with the sync mode.

    Workers (one process each) pull parameters, compute a gradient on their shard and
    push it; the server applies gradients as they arrive, drops those staler than
    --max-staleness, and tells everyone to stop after --updates. No worker waits for
    another. --mode both also runs the synchronous Tree AllReduce on the same model and
    data and writes comparison.json/.png (accuracy against time, updates, samples).

    \b
    Examples:
      nonsense-hpc workflow prepare --out data --shards 4
      nonsense-hpc ps-train --data data --out runs/ps --workers 4 --updates 800
      nonsense-hpc ps-train --data data --out runs/cmp --mode both --delays 0,0.02
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.psgd.compare import compare, load_history
    from nonsense_hpc.psgd.run import train_async
    from nonsense_hpc.psgd.sync import run_sync

    widths = [int(h) for h in hidden.split(",") if h.strip()]
    lag = _floats(delays)
    out = Path(out_dir)
    histories = {}
    try:
        if mode in ("async", "both"):
            res = train_async(data_dir, out / "async", workers=workers, updates=updates,
                              batch_size=batch_size, lr=lr, momentum=momentum,
                              hidden=widths, seed=seed, max_staleness=max_staleness,
                              staleness_lr=staleness_lr, eval_every=eval_every,
                              publish=publish, delays=lag, timeout=timeout, trace=trace_)
            histories["async"] = res.history
            last = res.history[-1]
            click.echo(f"async: {last['updates']} updates in {last['time']:.2f} s, test "
                       f"accuracy {last['accuracy']:.4f}, dropped {res.stats['dropped']}, "
                       f"staleness {res.stats['staleness']}", err=True)
            for w in res.workers:
                if "error" in w:
                    click.echo(f"  worker {w['worker']} failed: {w['error']}", err=True)
        if mode in ("sync", "both"):
            steps = max(1, updates // workers)
            run_sync(data_dir, out / "sync", ranks=workers, timeout=timeout, steps=steps,
                     batch_size=batch_size, lr=lr, momentum=momentum, hidden=widths,
                     seed=seed, eval_every=max(1, eval_every // workers), delays=lag)
            histories["sync"] = load_history(out / "sync" / "history.jsonl")
            last = histories["sync"][-1]
            click.echo(f"sync: {last['updates']} steps in {last['time']:.2f} s, test "
                       f"accuracy {last['accuracy']:.4f}", err=True)
        if mode == "both":
            summary = compare(histories, out)
            click.echo(json.dumps(summary["runs"], indent=2))
            click.echo(f"comparison: {summary['files']['png']}", err=True)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = [trace, dashboard, ps_train]
