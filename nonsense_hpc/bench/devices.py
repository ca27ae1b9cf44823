"""Device benchmarks: each compares against a named peer in the same run and prints ratios.

* ``forwarder``: 64-byte messages/s through the Forwarder vs a bare ``zmq.proxy``
  (XSUB->XPUB) in a process, same publisher, same subscriber.
* ``tensors``: 16 MiB float32 tensors published with the wire format (zero-copy) over
  ipc:// and tcp:// loopback, directly and through a Forwarder, in GB/s vs a memcpy.
* ``broker``: tasks/s through the Broker vs a plain Streamer, and the time from killing
  a worker holding a task to that task's result arriving from another worker.

Results go to ``benchmarks/results/devices.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["BENCH_COMMANDS", "bench_devices", "run_benchmarks"]

_PUBLISHER = r"""
import sys, zmq, numpy as np
from nonsense_hpc import wire
addr, n, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = zmq.Context(); pub = ctx.socket(zmq.PUB); pub.setsockopt(zmq.SNDHWM, 0)
pub.connect(addr)
ctl = ctx.socket(zmq.PAIR); ctl.connect(sys.argv[5])
# probe until the subscriber says go
while not ctl.poll(10):
    pub.send_multipart([b"probe", b""])
ctl.recv()
if mode == "raw":
    msg = b"x" * size
    for _ in range(n):
        pub.send(msg, copy=True)
else:
    arr = np.random.default_rng(0).standard_normal(size // 4).astype(np.float32)
    enc = wire.Encoder(rank=0)
    for i in range(n):
        enc.send(pub, "tensors.w", kind="tensor", step=i, arrays=arr)
pub.send_multipart([b"end", b""])
ctl.recv()
"""

_BARE_PROXY = r"""
import sys, zmq
ctx = zmq.Context()
xs = ctx.socket(zmq.XSUB); xp = ctx.socket(zmq.XPUB)
for s in (xs, xp):
    s.setsockopt(zmq.SNDHWM, 0); s.setsockopt(zmq.RCVHWM, 0)
xs.bind(sys.argv[1]); xp.bind(sys.argv[2])
print("ready", flush=True)
try:
    zmq.proxy(xs, xp)
except Exception:
    pass
"""

_WORKER = r"""
import sys, time
from nonsense_hpc.devices.worker import BrokerWorker, StreamWorker
mode, addr = sys.argv[1], sys.argv[2]
hold = len(sys.argv) > 4 and sys.argv[4] == "hold"
if mode == "broker":
    w = BrokerWorker(addr, heartbeat=float(sys.argv[3]))
else:
    w = StreamWorker(addr, sys.argv[3])
print("up", flush=True)
while (task := w.get(timeout=30)) is not None:
    if hold:
        print("holding", task.task_id, flush=True)
        time.sleep(3600)
    w.reply(task, {"ok": 1})
w.close()
"""


def _stream(addr_in: str, addr_out: str, n: int, size: int, mode: str) -> float:
    """Publisher subprocess -> addr_in ... addr_out -> SUB here. Returns seconds for n."""
    import zmq

    from nonsense_hpc import wire

    ctx: Any = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr_out)
    ctl = ctx.socket(zmq.PAIR)
    port = ctl.bind_to_random_port("tcp://127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, addr_in, str(n), str(size),
                             mode, f"tcp://127.0.0.1:{port}"])
    try:
        if not sub.poll(30000):
            raise TimeoutError("no probe reached the subscriber")
        ctl.send(b"go")
        while True:  # skip the probes still in flight
            frames = sub.recv_multipart(copy=False)
            if frames[0].bytes != b"probe":
                break
        t0 = time.perf_counter()
        got = 1
        while got < n:
            if not sub.poll(30000):
                raise TimeoutError(f"only {got} of {n} messages arrived")
            frames = sub.recv_multipart(copy=False)
            if mode != "raw":
                wire.decode(frames)
            got += 1
        elapsed = time.perf_counter() - t0
        sub.recv_multipart()  # "end"
        ctl.send(b"done")
        proc.wait(30)
        return elapsed * n / max(n - 1, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close(0)
        ctl.close(0)


def _bench_forwarder(n: int, repeats: int) -> dict[str, Any]:
    from nonsense_hpc.devices import Forwarder

    peer_rates, ours_rates = [], []
    for _ in range(repeats):
        proc = subprocess.Popen([sys.executable, "-c", _BARE_PROXY, "tcp://127.0.0.1:25901",
                                 "tcp://127.0.0.1:25902"], stdout=subprocess.PIPE, text=True)
        try:
            if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                raise RuntimeError("bare zmq.proxy did not start")
            peer_rates.append(n / _stream("tcp://127.0.0.1:25901", "tcp://127.0.0.1:25902",
                                          n, 64, "raw"))
        finally:
            proc.kill()
            proc.wait()
        with Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", hwm=0).start(
                "process") as fwd:
            ours_rates.append(n / _stream(fwd.endpoints["in"], fwd.endpoints["out"], n, 64,
                                          "raw"))
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    return {"messages": n, "bytes": 64, "forwarder_msgs_per_s": ours,
            "bare_zmq_proxy_msgs_per_s": peer, "ratio": ours / peer,
            "runs_forwarder": ours_rates, "runs_bare": peer_rates}


def _memcpy_gbps(nbytes: int, repeats: int = 20) -> float:
    import numpy as np

    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def _bench_tensors(n: int, nbytes: int, tmp: Path) -> dict[str, Any]:
    from nonsense_hpc.devices import Forwarder

    out: dict[str, Any] = {"tensor_bytes": nbytes, "messages": n,
                           "memcpy_gbps": _memcpy_gbps(nbytes)}
    for transport in ("ipc", "tcp"):
        addr = f"ipc://{tmp}/direct.ipc" if transport == "ipc" else "tcp://127.0.0.1:*"
        seconds = _direct(addr, n, nbytes)
        out[f"{transport}_direct_gbps"] = n * nbytes / seconds / 1e9
        base = f"ipc://{tmp}/fwd" if transport == "ipc" else "tcp://127.0.0.1:"
        ins, outs = (f"{base}-in", f"{base}-out") if transport == "ipc" else (
            f"{base}*", f"{base}*")
        with Forwarder(ins, outs, hwm=0, max_bytes=nbytes * 2).start("process") as fwd:
            seconds = _stream(fwd.endpoints["in"], fwd.endpoints["out"], n, nbytes, "tensor")
        out[f"{transport}_forwarder_gbps"] = n * nbytes / seconds / 1e9
    for key in [k for k in out if k.endswith("_gbps") and k != "memcpy_gbps"]:
        out[key.replace("_gbps", "_vs_memcpy")] = out[key] / out["memcpy_gbps"]
    return out


def _direct(addr: str, n: int, nbytes: int) -> float:
    """SUB binds ``addr``; the publisher subprocess connects straight to it."""
    import zmq

    from nonsense_hpc.devices.runner import endpoint_of

    ctx: Any = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(addr)
    addr = endpoint_of(sub)
    ctl = ctx.socket(zmq.PAIR)
    port = ctl.bind_to_random_port("tcp://127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, addr, str(n), str(nbytes),
                             "tensor", f"tcp://127.0.0.1:{port}"])
    from nonsense_hpc import wire

    try:
        if not sub.poll(30000):
            raise TimeoutError("no probe reached the subscriber")
        ctl.send(b"go")
        while sub.recv_multipart(copy=False)[0].bytes == b"probe":
            pass
        t0 = time.perf_counter()
        for _ in range(n - 1):
            if not sub.poll(30000):
                raise TimeoutError("tensor stream stalled")
            wire.decode(sub.recv_multipart(copy=False), max_bytes=nbytes * 2)
        elapsed = time.perf_counter() - t0
        sub.recv_multipart()
        ctl.send(b"done")
        proc.wait(30)
        return elapsed * n / max(n - 1, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close(0)
        ctl.close(0)


def _start_workers(mode: str, addr: str, extra: str, count: int,
                   hold: bool = False) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(count):
        argv = [sys.executable, "-c", _WORKER, mode, addr, extra] + (["hold"] if hold else [])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        if proc.stdout is None or proc.stdout.readline().strip() != "up":
            raise RuntimeError("worker did not start")
        procs.append(proc)
    return procs


def _feed(address: str, n: int) -> None:
    from nonsense_hpc.devices.feed import feed

    feed([(str(i), {"i": i}) for i in range(n)], address, timeout=60)


def _bench_broker(n: int, workers: int) -> dict[str, Any]:
    from nonsense_hpc.devices import Broker, Sink, Streamer

    out: dict[str, Any] = {"tasks": n, "workers": workers}
    with Sink("tcp://127.0.0.1:*") as sink, Streamer(
            "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start("process") as st:
        procs = _start_workers("stream", st.endpoints["out"], sink.address, workers)
        t0 = time.perf_counter()
        _feed(st.endpoints["in"], n)
        sink.collect(n, timeout=120)
        out["streamer_tasks_per_s"] = n / (time.perf_counter() - t0)
        for p in procs:
            p.kill()
            p.wait()
    with Sink("tcp://127.0.0.1:*") as sink, Broker(
            "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", sink.address).start("process") as br:
        procs = _start_workers("broker", br.endpoints["workers"], "0.5", workers)
        t0 = time.perf_counter()
        _feed(br.endpoints["in"], n)
        sink.collect(n, timeout=120)
        out["broker_tasks_per_s"] = n / (time.perf_counter() - t0)
        for p in procs:
            p.kill()
            p.wait()
    out["broker_vs_streamer"] = out["broker_tasks_per_s"] / out["streamer_tasks_per_s"]
    for heartbeat in (0.1, 0.5):
        out[f"redispatch_s_heartbeat_{heartbeat}"] = _redispatch(heartbeat)
    return out


def _redispatch(heartbeat: float, liveness: int = 3) -> float:
    """Kill a worker holding a task; seconds until the task's result arrives anyway."""
    from nonsense_hpc.devices import Broker, Sink

    with Sink("tcp://127.0.0.1:*") as sink, Broker(
            "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", sink.address, heartbeat=heartbeat,
            liveness=liveness).start("process") as br:
        holder = _start_workers("broker", br.endpoints["workers"], str(heartbeat), 1,
                                hold=True)[0]
        _feed(br.endpoints["in"], 1)
        if holder.stdout is None or not holder.stdout.readline().startswith("holding"):
            raise RuntimeError("holder did not take the task")
        spare = _start_workers("broker", br.endpoints["workers"], str(heartbeat), 1)
        t0 = time.perf_counter()
        holder.kill()
        holder.wait()
        if sink.recv(timeout=60) is None:
            raise TimeoutError("task was not re-dispatched")
        elapsed = time.perf_counter() - t0
        for p in spare:
            p.kill()
            p.wait()
        return elapsed


def run_benchmarks(quick: bool = False, out_dir: Path = Path("benchmarks/results")
                   ) -> dict[str, Any]:
    """Run all three benchmarks; write JSON; return the results."""
    import platform
    import tempfile

    import zmq

    n_fwd = 50_000 if quick else 300_000
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "pyzmq": zmq.__version__,
                    "libzmq": zmq.zmq_version(), "cpus": __import__("os").cpu_count()},
        "forwarder": _bench_forwarder(n_fwd, 1 if quick else 3),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["tensors"] = _bench_tensors(8 if quick else 30, 16 * 1024**2, Path(tmp))
    result["broker"] = _bench_broker(500 if quick else 3000, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "devices.json").write_text(json.dumps(result, indent=2))
    return result


@click.command("devices")
@click.option("--quick", is_flag=True, help="Fewer messages (a smoke run, ~30 s).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("benchmarks/results"), show_default=True,
              help="Where devices.json goes.")
def bench_devices(quick: bool, out_dir: Path) -> None:
    """Forwarder vs bare zmq.proxy, 16 MiB tensors vs memcpy, Broker vs Streamer.

    \b
    Example:
      nonsense-hpc bench devices            # full run, a few minutes on 2 cores
      nonsense-hpc bench devices --quick
    """
    r = run_benchmarks(quick, out_dir)
    f, t, b = r["forwarder"], r["tensors"], r["broker"]
    click.echo(f"forwarder 64 B: {f['forwarder_msgs_per_s']:,.0f} msg/s vs bare zmq.proxy "
               f"{f['bare_zmq_proxy_msgs_per_s']:,.0f} msg/s -> ratio {f['ratio']:.2f}x")
    click.echo(f"16 MiB float32: memcpy {t['memcpy_gbps']:.2f} GB/s")
    for key in ("ipc_direct", "tcp_direct", "ipc_forwarder", "tcp_forwarder"):
        click.echo(f"  {key:<14} {t[key + '_gbps']:.2f} GB/s "
                   f"({t[key + '_vs_memcpy']:.2f}x memcpy)")
    click.echo(f"broker: {b['broker_tasks_per_s']:,.0f} tasks/s vs streamer "
               f"{b['streamer_tasks_per_s']:,.0f} tasks/s ({b['broker_vs_streamer']:.2f}x); "
               f"re-dispatch after kill {b['redispatch_s_heartbeat_0.1']:.2f} s (hb 0.1 s), "
               f"{b['redispatch_s_heartbeat_0.5']:.2f} s (hb 0.5 s)")
    click.echo(f"wrote {out_dir / 'devices.json'}")


BENCH_COMMANDS = [bench_devices]
