"""``nonsense-hpc run`` (the main job), ``nonsense-hpc train`` and the workflow's steps."""

from __future__ import annotations

import json
import os
import sys
import time

import click

__all__ = ["BENCH_COMMANDS", "COMMANDS", "run", "train", "workflow"]

_T0 = time.time()  # the CLI's start: the moment "a rank is running" for the benchmarks


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command()
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Prepared shards (nonsense-hpc workflow prepare).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: ranks/*.jsonl, checkpoints/, model.pt, summary.json.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Total optimisation steps (a resumed run does only the missing ones).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Samples per rank per step.")
@click.option("--lr", type=float, default=0.05, show_default=True, help="SGD learning rate.")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option("--hidden", default="128,128", show_default=True,
              help="Hidden layer widths, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Model and batch seed.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50, show_default=True,
              help="Checkpoint every N steps (0: only at the end).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint directory (default OUT/checkpoints, or "
                   "$NONSENSE_CHECKPOINT_DIR).")
@click.option("--allreduce", type=click.Choice(["tree", "ddp"]), default="tree",
              show_default=True, help="Gradient averaging: the Tree, or torch DDP on gloo.")
@click.option("--publish", metavar="ADDR", default=None,
              help="Forwarder input to publish metrics to (default $NONSENSE_PUBLISH).")
@click.option("--publish-file", type=click.Path(dir_okay=False), default=None,
              help="Read the address from this JSON file's 'in' entry (written by "
                   "`nonsense-hpc workflow forwarder start`); a missing file means "
                   "no publishing.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads per rank.")
@click.option("--timeout", type=float, default=None,
              help="Seconds an allreduce waits for a peer (default $NONSENSE_TIMEOUT/120).")
@click.option("--fail-at-step", type=click.IntRange(min=1), default=None,
              help="Fail after this step (to try checkpoint/resume).")
@click.option("--fail-rank", type=click.IntRange(min=0), default=None,
              help="With --fail-at-step: only this rank fails (default: all).")
@click.option("--trace-step", type=click.IntRange(min=0), default=10, show_default=True,
              help="Trace this step's gradient allreduce (every rank's messages, gathered "
                   "to rank 0) into --trace-dir: trace.svg/.html/.mmd and trace.json for "
                   "Perfetto. 0: no trace. Tree mode only.")
@click.option("--trace-dir", type=click.Path(file_okay=False), default=None,
              help="Where the traced step goes (default OUT/trace-step).")
@click.option("--heartbeat", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between per-rank heartbeats (host, pid, memory) when "
                   "publishing, for `nonsense-hpc dashboard`. 0: none.")
def train(data_dir: str, out_dir: str, steps: int, batch_size: int, lr: float,
          momentum: float, hidden: str, seed: int, checkpoint_every: int,
          checkpoint_dir: str | None, allreduce: str, publish: str | None,
          publish_file: str | None, threads: int, timeout: float | None,
          fail_at_step: int | None, fail_rank: int | None, trace_step: int,
          trace_dir: str | None, heartbeat: float) -> None:
    """Train the digits MLP data-parallel on every rank (launch it under mpirun).

    Resumes from the latest checkpoint in the checkpoint directory when there is one.
    A rank that fails aborts the whole job (MPI_Abort), so no rank is left waiting.
    Step --trace-step is traced into OUT/trace-step/ (sequence diagram, Chrome trace).
    With --publish, every rank publishes per-step metrics and heartbeats to a Forwarder
    (watch them with `nonsense-hpc dashboard --from FORWARDER_OUT`).

    \b
    Example:
      nonsense-hpc workflow prepare --out data --shards 2
      mpirun -n 2 nonsense-hpc train --data data --out train --steps 200
      mpirun -n 2 nonsense-hpc train --data data --out train --trace-step 50 \\
          --publish tcp://127.0.0.1:5559
    """
    from nonsense_hpc.errors import NonsenseError
    from nonsense_hpc.train import TrainConfig
    from nonsense_hpc.train import train as run_training

    try:
        widths = tuple(int(w) for w in hidden.split(",") if w.strip())
    except ValueError:
        raise click.BadParameter(f"{hidden!r} is not a comma-separated list of integers",
                                 param_hint="--hidden") from None
    if publish is None and publish_file:
        publish = _publish_address(publish_file)
    try:
        cfg = TrainConfig(data_dir=data_dir, out_dir=out_dir, steps=steps,
                          batch_size=batch_size, lr=lr, momentum=momentum, hidden=widths,
                          seed=seed, checkpoint_every=checkpoint_every,
                          checkpoint_dir=checkpoint_dir or os.environ.get(
                              "NONSENSE_CHECKPOINT_DIR") or None,
                          allreduce=allreduce, publish=publish, threads=threads,
                          timeout=timeout, fail_at_step=fail_at_step, fail_rank=fail_rank,
                          trace_step=trace_step, trace_dir=trace_dir, heartbeat=heartbeat)
    except NonsenseError as exc:
        raise _fail(exc) from None
    _stamp(out_dir)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        result = run_training(cfg, comm)
    except (NonsenseError, RuntimeError, ValueError) as exc:
        click.echo(f"nonsense-hpc train: rank {comm.Get_rank()}: error: {exc}", err=True)
        if comm.Get_size() > 1:
            comm.Abort(3)
        sys.exit(3)
    if result.rank == 0:
        click.echo(f"trained {result.steps} steps on {result.world_size} rank(s) "
                   f"(resumed from step {result.resumed_from}, ran {result.steps_run}): "
                   f"loss {result.final_loss:.4f}, batch accuracy "
                   f"{result.final_accuracy:.3f}, median step "
                   f"{result.median_step_time * 1e3:.2f} ms; model in {out_dir}/model.pt")


def _publish_address(path: str) -> str | None:
    try:
        with open(path) as fh:
            return str(json.load(fh)["in"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise click.BadParameter(f"{path}: no forwarder address ({exc})",
                                 param_hint="--publish-file") from None


def _stamp(out_dir: str) -> None:
    """Record when this rank's process started (OUT/ranks/rank-RRR.start)."""
    rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMIX_RANK") or "0"
    path = os.path.join(out_dir, "ranks", f"rank-{int(rank):03d}.start")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(repr(_T0))


@click.command()
@click.option("--np", "np_", type=click.IntRange(min=1), default=2, show_default=True,
              help="Number of training ranks.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training steps.")
@click.option("--out", type=click.Path(file_okay=False), default="nonsense-run",
              show_default=True, help="Directory for every output of the run (the "
              "workflow's working directory).")
@click.option("--profile", default="local", show_default=True,
              help="Snakemake profile: local (this machine, no Slurm) or slurm "
                   "(the repository's slurm/ profile), or a profile directory.")
@click.option("--image", type=click.Choice(["auto", "build", "skip"]), default="auto",
              show_default=True, help="Job image: auto (build with Apptainer/Singularity, "
              "use an existing local sandbox, else the host), build, or skip.")
@click.option("--allreduce", type=click.Choice(["tree", "ddp"]), default="tree",
              show_default=True, help="Gradient averaging in training.")
@click.option("--config", "-C", "extra_config", multiple=True, metavar="KEY=VALUE",
              help="More workflow settings (repeatable), e.g. -C checkpoint_every=25.")
@click.option("--snakemake-arg", "snakemake_args", multiple=True, metavar="ARG",
              help="Pass ARG to snakemake (repeatable), e.g. --snakemake-arg=--forceall.")
def run(np_: int, steps: int, out: str, profile: str, image: str, allreduce: str,
        extra_config: tuple[str, ...], snakemake_args: tuple[str, ...]) -> None:
    """Run the main job: the Snakemake workflow of docs/workflow.md, end to end.

    Prepares the digits shards, finds or builds the job image, starts a supervised
    Forwarder, trains on NP ranks with the Tree AllReduce (metrics and per-rank
    heartbeats published to the Forwarder, one step traced, checkpoints), evaluates,
    compares synchronous with asynchronous (parameter server) training (-C async=0
    skips it) and writes an HTML report. The last line says where the report is. Watch
    it live with `nonsense-hpc workflow dashboard --out OUT`. Run it again to continue
    a failed run: finished outputs are kept and training resumes from its latest
    checkpoint.

    As root, the workflow sets Open MPI's OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) for the jobs
    it launches (and says so).

    \b
    Examples:
      nonsense-hpc run
      nonsense-hpc run --np 4 --steps 500 --out runs/np4
      nonsense-hpc run --profile slurm        # through the local or a real Slurm
      nonsense-hpc run -C async=0 -C trace_step=50
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.train.mainjob import run_workflow, snakemake_command

    config: dict[str, str] = {"image": image, "allreduce": allreduce}
    for pair in extra_config:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--config")
        config[key] = value
    try:
        cmd = snakemake_command(out, np=np_, steps=steps, profile=profile, config=config,
                                extra=snakemake_args)
    except ConfigError as exc:
        raise _fail(exc) from None
    click.echo(f"nonsense-hpc run: {' '.join(cmd[1:])}", err=True)
    outcome = run_workflow(cmd, out)
    if outcome.ok:
        click.echo(f"nonsense-hpc run: done; report: {outcome.report}")
        return
    rules = ", ".join(outcome.failed_rules) or "see the log"
    click.echo(f"nonsense-hpc run: the workflow failed (exit {outcome.returncode}; failed "
               f"rule(s): {rules}); finished outputs are kept in {outcome.out}; log: "
               f"{outcome.out / 'snakemake.log'}", err=True)
    sys.exit(outcome.returncode or 1)


@click.group()
def workflow() -> None:
    """The main job's steps, as the workflow's rules call them (docs/workflow.md)."""


@workflow.command("prepare")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for the shards, test set and manifest.json.")
@click.option("--shards", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training shards (at least the number of ranks).")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Share of the samples held out for evaluation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Split seed.")
def prepare(out: str, shards: int, test_fraction: float, seed: int) -> None:
    """Split scikit-learn's digits into training shards and a test set.

    \b
    Example:
      nonsense-hpc workflow prepare --out data --shards 2
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.train import prepare_shards

    try:
        m = prepare_shards(out, shards, test_fraction=test_fraction, seed=seed)
    except ConfigError as exc:
        raise _fail(exc) from None
    click.echo(f"{m['shards']} shards ({m['train_samples']} samples) and a test set of "
               f"{m['test_samples']} in {out}")


@workflow.command("image")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the decision (JSON).")
@click.option("--mode", type=click.Choice(["auto", "build", "skip"]), default="auto",
              show_default=True, help="auto: build with Apptainer/Singularity, use an "
              "existing local sandbox, else the host; build: always build; skip: host.")
@click.option("--image", "image_name", default="nonsense-hpc", show_default=True,
              help="Image name (or path).")
def image(out: str, mode: str, image_name: str) -> None:
    """Build or find the job image where a container runtime exists.

    \b
    Example:
      nonsense-hpc workflow image --out image/image.json
    """
    from nonsense_hpc.errors import NonsenseError
    from nonsense_hpc.train.image import prepare_image

    try:
        info = prepare_image(out, mode, image_name)
    except NonsenseError as exc:
        raise _fail(exc) from None
    click.echo(f"image: {'used' if info['used'] else 'not used'}: {info['reason']}")


@workflow.command("image-prefix")
@click.argument("info", type=click.Path(dir_okay=False))
def image_prefix(info: str) -> None:
    """Print the per-rank command prefix the image step chose (nothing: the host).

    \b
    Example:
      mpirun -n 2 $(nonsense-hpc workflow image-prefix image/image.json) nonsense-hpc train ...
    """
    import shlex

    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.train.image import exec_prefix

    try:
        click.echo(shlex.join(exec_prefix(info)))
    except ConfigError as exc:
        raise _fail(exc) from None


@workflow.group("forwarder")
def forwarder() -> None:
    """Start or stop the run's supervised Forwarder (and its recorder)."""


@forwarder.command("start")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Directory for forwarder.json, messages.jsonl and monitor.log.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; on a cluster, an address the compute nodes reach.")
@click.option("--max-lifetime", type=float, default=6 * 3600.0, show_default=True,
              help="Seconds after which the monitor stops by itself.")
def forwarder_start(directory: str, host: str, max_lifetime: float) -> None:
    """Start a supervised Forwarder in the background; print its addresses.

    \b
    Example:
      nonsense-hpc workflow forwarder start --dir monitor
      nonsense-hpc ctl --control ipc://$PWD/monitor/control.sock status
    """
    from nonsense_hpc.errors import DeviceError
    from nonsense_hpc.train.monitor import start_monitor

    try:
        info = start_monitor(directory, host=host, max_lifetime=max_lifetime)
    except DeviceError as exc:
        raise _fail(exc) from None
    click.echo(f"forwarder: publish to {info['in']}, subscribe at {info['out']}, control "
               f"{info['control']} (pid {info['pid']})")


@forwarder.command("stop")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="The directory given to start.")
def forwarder_stop(directory: str) -> None:
    """Stop the supervised Forwarder started in DIR (nothing to do if none runs).

    \b
    Example:
      nonsense-hpc workflow forwarder stop --dir monitor
    """
    from nonsense_hpc.errors import DeviceError
    from nonsense_hpc.train.monitor import stop_monitor

    try:
        stopped = stop_monitor(directory)
    except DeviceError as exc:
        raise _fail(exc) from None
    click.echo("forwarder: stopped" if stopped else "forwarder: none running")


@workflow.command("dashboard")
@click.option("--out", "run_dir", default="nonsense-run", show_default=True,
              type=click.Path(file_okay=False),
              help="The run's directory (what `nonsense-hpc run --out` was given).")
@click.option("--port", type=int, default=8050, show_default=True,
              help="TCP port of the web page on 127.0.0.1 (0: any free port, printed).")
@click.option("--wait", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds to wait for the run's Forwarder to start.")
def workflow_dashboard(run_dir: str, port: int, wait: float) -> None:
    """Serve the live dashboard of a running main job.

    Reads the run's Forwarder address from OUT/monitor/monitor.json (or
    forwarder.json), waiting for the workflow to start it, then serves the page of
    `nonsense-hpc dashboard`: loss and accuracy, steps/s, each rank's heartbeat and
    memory, events. Stop with Ctrl-C.

    \b
    Example:
      nonsense-hpc run --steps 20000 --out runs/live &
      nonsense-hpc workflow dashboard --out runs/live     # http://127.0.0.1:8050/
    """
    from nonsense_hpc.dashboard import Dashboard
    from nonsense_hpc.errors import ConfigError, DeviceError

    try:
        address = _forwarder_out(os.path.join(run_dir, "monitor"), wait)
        dash = Dashboard([address], port=port).start()
    except (ConfigError, DeviceError) as exc:
        raise _fail(exc) from None
    click.echo(f"dashboard: {dash.url} (run {run_dir}, Forwarder {address})", err=True)
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dash.stop()


def _forwarder_out(directory: str, wait: float) -> str:
    """The ``out`` address of the run's Forwarder, waiting up to ``wait`` seconds.

    Raises:
        ConfigError: no Forwarder started in time.
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.train.monitor import INFO, STATE

    deadline = time.monotonic() + wait
    while True:
        for name in (STATE, INFO):
            try:
                with open(os.path.join(directory, name)) as fh:
                    return str(json.load(fh)["out"])
            except (FileNotFoundError, ValueError, KeyError):
                continue
        if time.monotonic() >= deadline:
            raise ConfigError(f"no running Forwarder in {directory} after {wait:g} s (is "
                              "the main job running with that --out? its Forwarder "
                              f"writes {STATE} there while the workflow runs)")
        time.sleep(0.2)


@workflow.command("evaluate")
@click.option("--model", required=True, type=click.Path(dir_okay=False),
              help="model.pt written by training.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="The prepared data (its test set).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the metrics (JSON).")
def evaluate(model: str, data_dir: str, out: str) -> None:
    """Evaluate the trained model on the held-out test set.

    \b
    Example:
      nonsense-hpc workflow evaluate --model train/model.pt --data data --out eval.json
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.train import evaluate as run_evaluate

    try:
        m = run_evaluate(model, data_dir, out)
    except ConfigError as exc:
        raise _fail(exc) from None
    click.echo(f"test accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f} on {m['samples']} "
               f"samples -> {out}")


@workflow.command("report")
@click.option("--train", "train_dir", required=True, type=click.Path(file_okay=False),
              help="The training output directory.")
@click.option("--eval", "eval_json", type=click.Path(dir_okay=False), default=None,
              help="Evaluation metrics JSON.")
@click.option("--messages", type=click.Path(dir_okay=False), default=None,
              help="The Forwarder recorder's messages.jsonl.")
@click.option("--image", "image_json", type=click.Path(dir_okay=False), default=None,
              help="The image step's JSON.")
@click.option("--trace", "trace_dir", type=click.Path(file_okay=False), default=None,
              help="The traced training step's directory [default: TRAIN/trace-step].")
@click.option("--comparison", "comparison_dir", type=click.Path(file_okay=False),
              default=None, help="`nonsense-hpc ps-train --mode both` output "
              "(comparison.json/.png): adds the sync-vs-async section.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for report.html and the PNG plots.")
def report(train_dir: str, eval_json: str | None, messages: str | None,
           image_json: str | None, trace_dir: str | None, comparison_dir: str | None,
           out: str) -> None:
    """Write the HTML report with loss/accuracy, step-time and bandwidth plots.

    Also embeds the traced training step (sequence diagram, link to the Chrome trace)
    and, with --comparison, synchronous against asynchronous training.

    \b
    Example:
      nonsense-hpc workflow report --train train --eval eval.json --out report
      nonsense-hpc workflow report --train train --comparison async --out report
    """
    from nonsense_hpc.errors import ConfigError
    from nonsense_hpc.train.report import write_report

    try:
        path = write_report(out, train_dir=train_dir, eval_json=eval_json,
                            messages=messages, image_json=image_json,
                            trace_dir=trace_dir, comparison_dir=comparison_dir)
    except ConfigError as exc:
        raise _fail(exc) from None
    click.echo(f"report: {os.path.abspath(path)}")


COMMANDS = [run, train, workflow]


def _bench_commands() -> list[click.Command]:
    from nonsense_hpc.bench.train import train_bench, workflow_overhead

    return [train_bench, workflow_overhead]


BENCH_COMMANDS: list[click.Command] = _bench_commands()
