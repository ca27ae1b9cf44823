"""Supervisor benchmarks: restart latency against supervisord and circus; the long chaos run.

``nonsense-hpc bench supervisor`` runs the same Python child under each supervisor, in one
run: the child sends one datagram ("I am up", with its pid) to the benchmark when it
starts. The benchmark SIGKILLs it and measures the time until the replacement's
datagram arrives (killed -> first output of the replacement). It also measures how long
starting the child takes without any supervisor, the floor of every restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["chaos_bench", "measure_restarts", "supervisor_bench"]

CHILD = """\
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(str(os.getpid()).encode(), sys.argv[1])
while True:
    time.sleep(3600)
"""

RESULTS = Path("benchmarks/results")


def _recv_pid(sock: socket.socket, timeout: float) -> tuple[int, float]:
    sock.settimeout(timeout)
    data = sock.recv(64)
    return int(data), time.perf_counter()


def _peer_command(name: str, work: Path, child: list[str]) -> list[str]:
    """The daemon command line for one supervisor, with its config written to ``work``."""
    if name == "nonsense_hpc":
        argv = ", ".join(json.dumps(a) for a in child)
        (work / "sup.toml").write_text(
            "[supervisor]\nname = \"bench\"\nintensity = 1000000\nperiod = 1\n"
            f"[[children]]\nid = \"child\"\ncommand = [{argv}]\nshutdown = \"brutal_kill\"\n")
        # the `nonsense-hpc supervise` command, imported directly
        return [sys.executable, "-c", "import sys; from nonsense_hpc.cli.supervise import "
                "supervise; supervise.main(sys.argv[1:])", "-q", str(work / "sup.toml")]
    if name == "supervisord":
        (work / "supervisord.conf").write_text(
            "[supervisord]\nnodaemon=true\n"
            f"logfile={work}/supervisord.log\npidfile={work}/supervisord.pid\n"
            "[program:child]\n"
            f"command={' '.join(child)}\nautorestart=true\nstartsecs=0\n"
            "startretries=1000000\nstopsignal=KILL\n")
        return [os.path.join(os.path.dirname(sys.executable), "supervisord"), "-c",
                str(work / "supervisord.conf")]
    if name == "circus":
        (work / "circus.ini").write_text(
            "[circus]\n"
            f"endpoint = ipc://{work}/circus.ctl\npubsub_endpoint = ipc://{work}/circus.pub\n"
            "statsd = False\n"
            "[watcher:child]\n"
            f"cmd = {child[0]}\nargs = {' '.join(child[1:])}\n"
            "numprocesses = 1\nwarmup_delay = 0\ncopy_env = True\nrespawn = True\n"
            "max_retry = -1\n")
        return [os.path.join(os.path.dirname(sys.executable), "circusd"),
                str(work / "circus.ini")]
    raise click.BadParameter(f"unknown supervisor {name!r}")


def measure_restarts(name: str, rounds: int, settle: float = 0.2,
                     timeout: float = 30.0) -> dict[str, Any]:
    """Start ``name`` supervising the child; SIGKILL it ``rounds`` times; time restarts.

    Returns:
        ``{"supervisor", "rounds", "latency_s": [...], "median_s", "p90_s", "max_s"}``.
    """
    with tempfile.TemporaryDirectory(prefix="nsbench-") as tmp:
        work = Path(tmp)
        (work / "child.py").write_text(CHILD)
        addr = str(work / "up.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(addr)
        child = [sys.executable, str(work / "child.py"), addr]
        daemon = subprocess.Popen(_peer_command(name, work, child), cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        latencies: list[float] = []
        try:
            pid, _ = _recv_pid(sock, timeout)
            for _ in range(rounds):
                time.sleep(settle)  # let the peer settle into its RUNNING state
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                pid, t1 = _recv_pid(sock, timeout)
                latencies.append(t1 - t0)
        finally:
            try:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(daemon.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            daemon.wait()
            sock.close()
    return _summary(name, latencies)


def _summary(name: str, latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"supervisor": name, "rounds": len(ordered), "latency_s": latencies,
            "median_s": statistics.median(ordered) if ordered else None,
            "p90_s": ordered[int(0.9 * (len(ordered) - 1))] if ordered else None,
            "max_s": ordered[-1] if ordered else None}


def measure_plain_start(rounds: int) -> dict[str, Any]:
    """Time from Popen to the child's datagram, with no supervisor (the floor)."""
    with tempfile.TemporaryDirectory(prefix="nsbench-") as tmp:
        work = Path(tmp)
        (work / "child.py").write_text(CHILD)
        addr = str(work / "up.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(addr)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, str(work / "child.py"), addr])
            _, t1 = _recv_pid(sock, 30.0)
            times.append(t1 - t0)
            proc.kill()
            proc.wait()
        sock.close()
    return _summary("plain start (no supervisor)", times)


@click.command("supervisor")
@click.option("--rounds", type=int, default=30, show_default=True,
              help="Kills for nonsense_hpc and the plain-start floor.")
@click.option("--peer-rounds", type=int, default=8, show_default=True,
              help="Kills for supervisord and circus (each restart takes seconds).")
@click.option("--peers", default="supervisord,circus", show_default=True,
              help="Comma-separated peers to compare against (supervisord, circus).")
@click.option("--out", type=click.Path(), default=str(RESULTS / "supervise_restart.json"),
              show_default=True, help="JSON result file (a PNG is written next to it).")
def supervisor_bench(rounds: int, peer_rounds: int, peers: str, out: str) -> None:
    """Restart latency (child SIGKILLed -> replacement's first output) vs supervisord, circus.

    All supervisors run the same Python child from their own config, as daemons, in
    this one run; the ratios printed are peer median / nonsense_hpc median.

    \b
    Example:
      nonsense-hpc bench supervisor --rounds 30 --peer-rounds 8
    """
    results = [measure_plain_start(rounds), measure_restarts("nonsense_hpc", rounds)]
    for peer in [p.strip() for p in peers.split(",") if p.strip()]:
        click.echo(f"measuring {peer} ({peer_rounds} restarts) ...", err=True)
        results.append(measure_restarts(peer, peer_rounds))
    ours = results[1]["median_s"]
    for r in results:
        r["ratio_vs_nonsense_hpc"] = None if not ours else r["median_s"] / ours
        click.echo(f"{r['supervisor']:<28} median {r['median_s'] * 1000:9.1f} ms   "
                   f"p90 {r['p90_s'] * 1000:9.1f} ms   ({r['rounds']} rounds)   "
                   f"x{r['ratio_vs_nonsense_hpc']:.1f} of nonsense_hpc")
    target = ours is not None and ours < 0.050
    click.echo(f"target median < 50 ms: {'met' if target else 'NOT met'} "
               f"({ours * 1000:.1f} ms)")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "supervisor restart latency",
                                "command": "nonsense-hpc bench supervisor "
                                           f"--rounds {rounds} --peer-rounds {peer_rounds}",
                                "results": results, "target_met": target}, indent=2))
    _plot(results, path.with_suffix(".png"))
    click.echo(f"wrote {path}")


def _plot(results: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    data = [[x * 1000 for x in r["latency_s"]] for r in results]
    ax.boxplot(data, vert=False, tick_labels=[r["supervisor"] for r in results])
    ax.set_xscale("log")
    ax.set_xlabel("restart latency, ms (log scale)")
    ax.set_title("child SIGKILLed -> replacement's first output")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


@click.command("supervisor-chaos")
@click.option("--kills", type=int, default=2000, show_default=True,
              help="SIGKILLs per strategy.")
@click.option("--children", type=int, default=5, show_default=True,
              help="Children per supervisor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--out", type=click.Path(), default=str(RESULTS / "supervise_chaos.json"),
              show_default=True, help="JSON result file.")
def chaos_bench(kills: int, children: int, seed: int, out: str) -> None:
    """Long chaos run: SIGKILL random children, check every restart set and leftovers.

    For each strategy: KILLS random SIGKILLs, each checked for the exact set of
    restarted children; then zombies and orphans are counted, and escalation is checked
    to fire exactly on restart intensity + 1. Exits 1 if anything was wrong.

    \b
    Example:
      nonsense-hpc bench supervisor-chaos --kills 2000
    """
    from nonsense_hpc.supervise.chaos import run_chaos, run_escalation
    from nonsense_hpc.supervise.spec import STRATEGIES

    reports = []
    ok = True
    for strategy in STRATEGIES:
        report = run_chaos(strategy, kills=kills, children=children, seed=seed)
        escalation = run_escalation(strategy, intensity=5)
        esc_ok = escalation["restarts_before_give_up"] == 5 and \
            escalation["gave_up_on_kill"] == 6 and not escalation["zombies"] and \
            not escalation["orphans"]
        ok = ok and report.ok and esc_ok
        reports.append({**report.to_dict(), "escalation": escalation,
                        "escalation_ok": esc_ok})
        click.echo(f"{strategy:<20} kills {report.kills:>6}  processes restarted "
                   f"{report.processes_started:>6}  wrong sets {report.wrong_sets}  "
                   f"zombies {report.zombies}  orphans {report.orphans}  restart median "
                   f"{report.latency_ms.get('median')} ms p99 {report.latency_ms.get('p99')} ms"
                   f"  escalation {'ok' if esc_ok else 'WRONG'}  {report.seconds:.1f} s")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "supervisor chaos",
                                "command": f"nonsense-hpc bench supervisor-chaos --kills "
                                           f"{kills} --children {children} --seed {seed}",
                                "ok": ok, "strategies": reports}, indent=2))
    click.echo(f"wrote {path}")
    if not ok:
        sys.exit(1)
