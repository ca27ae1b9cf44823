"""Benchmarks for the seed-parity layers: ``bench parallel``, ``bench ipc``, ``bench map``.

Each compares against named peers in one run, prints ratios and writes JSON to
``benchmarks/results/``:

* ``parallel``: a child echoes every message back (``send`` then ``receive`` in the
  parent) for a 100x100 float64 tensor and a 16 MiB tensor. Peers: the same payload as a
  numpy array through ``multiprocessing.Queue`` and ``multiprocessing.Pipe`` (pickle),
  each with a spawned echo process. Messages/s and GB/s count both directions.
* ``ipc``: a client sends tensors to a server in another process over TCP loopback; the
  peer is a raw socket ``sendall`` of the same bytes into ``recv_into`` (the wire
  limit, no framing or encoding). With a GPU, CUDA tensors too: CUDA IPC handles against
  host staging (the receiver sets ``NONSENSE_CUDA_IPC=0``); skipped without one.
* ``map``: 1000 small tasks on 2 workers, processes started inside the timing:
  ``ipc.map`` + ``ipc.workqueue`` (one item per task, as in the seed's example) and
  ``ipc.map`` with a static split, against ``concurrent.futures.ProcessPoolExecutor``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import socket
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["bench_ipc", "bench_map", "bench_parallel", "run_ipc", "run_map", "run_parallel"]

GB = 1e9


# --- workers (module level: clean interpreters import them by name) ----------------------
def parallel_echo(count: int) -> None:
    """Child of ``bench parallel``: echo ``count`` messages back to the parent."""
    from nonsense_hpc import parallel

    for _ in range(count):
        parallel.parent.send(parallel.parent.receive())  # type: ignore[union-attr]


def queue_echo(qin: Any, qout: Any, count: int) -> None:
    """Peer child: echo ``count`` messages from one multiprocessing.Queue to another."""
    for _ in range(count):
        qout.put(qin.get())


def pipe_echo(conn: Any, count: int) -> None:
    """Peer child: echo ``count`` messages on a multiprocessing.Pipe end."""
    for _ in range(count):
        conn.send(conn.recv())


def tcp_ipc_sink(port: int, count: int, mapid: int) -> int:
    """``bench ipc`` server side: receive ``count`` values, reply with the byte count."""
    from nonsense_hpc import ipc

    total = 0
    with ipc.client("127.0.0.1", port) as conn:
        conn.recv(timeout=120)  # warm-up: imports torch for decoding
        conn.send("ready")
        for _ in range(count):
            total += int(conn.recv(timeout=120).nbytes)
        conn.send(total)
    return total


def cuda_ipc_sink(port: int, count: int, env: str, mapid: int) -> int:
    """``bench ipc`` CUDA receiver (``env``: its NONSENSE_CUDA_IPC); replies the bytes."""
    import torch  # before connecting, so this process takes CUDA IPC

    from nonsense_hpc import ipc

    if env:
        os.environ["NONSENSE_CUDA_IPC"] = env
    total = 0
    with ipc.client("127.0.0.1", port) as conn:
        conn.recv(timeout=120)
        conn.send("ready")
        for _ in range(count):
            total += int(conn.recv(timeout=120).nbytes)
        torch.cuda.synchronize()
        conn.send(total)
        conn.recv(timeout=120)  # "done"
    return total


def tcp_raw_sink(port: int, nbytes: int, count: int, mapid: int) -> int:
    """Raw-socket peer: ``recv_into`` ``count`` blocks of ``nbytes``, reply with the total."""
    import numpy as np

    buf = np.empty(nbytes, np.uint8)
    view = memoryview(buf)  # type: ignore[arg-type]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        for _ in range(count):
            got = 0
            while got < nbytes:
                n = sock.recv_into(view[got:])
                if not n:
                    raise ConnectionError("sender closed early")
                got += n
        sock.sendall(str(nbytes * count).encode())
    return nbytes * count


def square(x: int) -> int:
    """A small task for ``bench map``."""
    return x * x


def map_queue_worker(mapid: int) -> int:
    """``bench map`` worker: square numbers from the work queue until it closes."""
    from nonsense_hpc import ipc

    q = ipc.workqueue("bench-map", create=False)
    done = 0
    while (x := q.read()) is not None:
        q.write(square(x))
        done += 1
    return done


def map_static_worker(tasks: list[int], nworkers: int, mapid: int) -> list[int]:
    """``bench map`` worker with a static split: every nworkers-th task."""
    return [square(x) for x in tasks[mapid - 1::nworkers]]


# --- measurements ------------------------------------------------------------------------
def _rate(name: str, n_msgs: int, nbytes: int, seconds: float) -> dict[str, Any]:
    return {"peer": name, "messages": n_msgs, "seconds": seconds,
            "messages_per_s": n_msgs / seconds, "gb_per_s": n_msgs * nbytes / seconds / GB}


def _echo_parallel(payload: Any, rounds: int, warm: int) -> float:
    from nonsense_hpc import parallel

    child = parallel.run(parallel_echo, rounds + warm)
    for _ in range(warm):
        child.send(payload)
        child.receive(timeout=60)
    t0 = time.perf_counter()
    for _ in range(rounds):
        child.send(payload)
        child.receive(timeout=60)
    dt = time.perf_counter() - t0
    child.join(timeout=60)
    return dt


def _echo_queue(payload: Any, rounds: int, warm: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    qin, qout = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=queue_echo, args=(qin, qout, rounds + warm))
    proc.start()
    for _ in range(warm):
        qin.put(payload)
        qout.get(timeout=60)
    t0 = time.perf_counter()
    for _ in range(rounds):
        qin.put(payload)
        qout.get(timeout=60)
    dt = time.perf_counter() - t0
    proc.join(timeout=60)
    return dt


def _echo_pipe(payload: Any, rounds: int, warm: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=pipe_echo, args=(theirs, rounds + warm))
    proc.start()
    theirs.close()
    for _ in range(warm):
        mine.send(payload)
        mine.recv()
    t0 = time.perf_counter()
    for _ in range(rounds):
        mine.send(payload)
        mine.recv()
    dt = time.perf_counter() - t0
    proc.join(timeout=60)
    return dt


def run_parallel(small_rounds: int = 2000, big_rounds: int = 40,
                 shared_size: int | None = None) -> dict[str, Any]:
    """Measure ``parallel`` send/receive against multiprocessing Queue and Pipe."""
    import torch

    from nonsense_hpc import parallel

    if shared_size is not None:
        parallel.set_shared_size(shared_size)
    cases = [("100x100 float64", torch.randn(100, 100, dtype=torch.float64), small_rounds),
             ("16 MiB float64", torch.randn(2 * 1024**2, dtype=torch.float64), big_rounds)]
    out: dict[str, Any] = {"shared_size": parallel.shared_size(), "cases": []}
    for label, tensor, rounds in cases:
        nbytes = tensor.numel() * tensor.element_size()
        warm = max(2, rounds // 20)
        rows = [_rate("parallel (torch tensor)", 2 * rounds, nbytes,
                      _echo_parallel(tensor, rounds, warm)),
                _rate("multiprocessing.Queue (numpy)", 2 * rounds, nbytes,
                      _echo_queue(tensor.numpy(), rounds, warm)),
                _rate("multiprocessing.Pipe (numpy)", 2 * rounds, nbytes,
                      _echo_pipe(tensor.numpy(), rounds, warm))]
        base = rows[0]["messages_per_s"]
        for row in rows:
            row["parallel_speedup"] = base / row["messages_per_s"]
        out["cases"].append({"payload": label, "bytes": nbytes, "rows": rows})
    return out


def _tcp_case(nbytes: int, count: int) -> list[dict[str, Any]]:
    import torch

    from nonsense_hpc import ipc

    tensor = torch.randn(nbytes // 4)
    rows = []
    # nonsense_hpc.ipc: server in this process, client (receiver) in a map worker.
    with ipc.server("127.0.0.1", 0) as srv:
        job = ipc.map(1, tcp_ipc_sink, srv.port, count)
        conn = srv.clients(1, timeout=60)[0]
        total, dt = _timed_sends(srv, conn, tensor, count)
        job.join(timeout=60)
    rows.append(_rate("ipc server.send (tensor)", count, nbytes, dt) | {"received": total})
    # Raw socket: sendall of the same bytes.
    raw = memoryview(tensor.numpy()).cast("B")  # type: ignore[arg-type]
    with socket.create_server(("127.0.0.1", 0)) as lst:
        job = ipc.map(1, tcp_raw_sink, lst.getsockname()[1], nbytes, count)
        lst.settimeout(60)
        sock, _ = lst.accept()
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            for _ in range(count):
                sock.sendall(raw)
            reply = sock.recv(64)
            dt = time.perf_counter() - t0
        job.join(timeout=60)
    rows.append(_rate("raw socket sendall", count, nbytes, dt) | {"received": int(reply)})
    rows[0]["vs_raw"] = rows[0]["gb_per_s"] / rows[1]["gb_per_s"]
    return rows


def _timed_sends(srv: Any, conn: Any, tensor: Any, count: int) -> tuple[Any, float]:
    """One warm-up round trip, then ``count`` sends timed until the receiver's total."""
    srv.send(tensor, conn)
    srv.recv(conn, timeout=120)
    t0 = time.perf_counter()
    for _ in range(count):
        srv.send(tensor, conn)
    total = srv.recv(conn, timeout=120)
    return total, time.perf_counter() - t0


def _cuda_case(nbytes: int, count: int) -> list[dict[str, Any]]:
    import torch

    from nonsense_hpc import ipc

    tensor = torch.randn(nbytes // 4, device="cuda")
    rows = []
    for label, env in (("CUDA IPC", ""), ("host staging", "0")):
        with ipc.server("127.0.0.1", 0) as srv:
            job = ipc.map(1, cuda_ipc_sink, srv.port, count, env)
            conn = srv.clients(1, timeout=60)[0]
            total, dt = _timed_sends(srv, conn, tensor, count)
            transport = conn.last_transport
            srv.send("done", conn)
            job.join(timeout=60)
        rows.append(_rate(f"ipc cuda tensor, {label}", count, nbytes, dt) | {
            "received": total, "transport": transport.name if transport else "",
            "reason": transport.reason if transport else ""})
    rows[0]["vs_staged"] = rows[0]["gb_per_s"] / rows[1]["gb_per_s"]
    return rows


def run_ipc(sizes: tuple[int, ...] = (4096, 1024**2, 16 * 1024**2),
            total_bytes: int = 512 * 1024**2,
            cuda_sizes: tuple[int, ...] = (1024**2, 64 * 1024**2),
            cuda_total_bytes: int = 2 * 1024**3) -> dict[str, Any]:
    """Client-server tensor throughput over TCP loopback against raw ``sendall``.

    With a GPU, also CUDA tensors by CUDA IPC against host staging.
    """
    import torch

    cases = []
    for nbytes in sizes:
        count = max(20, min(20000, total_bytes // nbytes))
        cases.append({"bytes": nbytes, "count": count, "rows": _tcp_case(nbytes, count)})
    cuda: dict[str, Any] = {"skipped": "torch.cuda.is_available() is False"}
    if torch.cuda.is_available():
        cuda = {"device": torch.cuda.get_device_name(0), "cases": [
            {"bytes": n, "count": max(10, min(2000, cuda_total_bytes // n)),
             "rows": _cuda_case(n, max(10, min(2000, cuda_total_bytes // n)))}
            for n in cuda_sizes]}
    return {"cases": cases, "cuda": cuda}


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _map_queue(tasks: list[int], workers: int) -> list[int]:
    from nonsense_hpc import ipc

    with ipc.workqueue("bench-map", create=True) as q:
        job = ipc.map(workers, map_queue_worker)
        for x in tasks:
            q.write(x)
        results = [q.read(timeout=120) for _ in tasks]
        q.close()
        job.join(timeout=120)
    return sorted(results)


def _map_static(tasks: list[int], workers: int) -> list[int]:
    from nonsense_hpc import ipc

    parts = ipc.map(workers, map_static_worker, tasks, workers).join(timeout=120)
    return sorted(x for part in parts for x in part)


def _pool(tasks: list[int], workers: int, chunksize: int) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return sorted(pool.map(square, tasks, chunksize=chunksize))


def run_map(ntasks: int = 1000, workers: int = 2) -> dict[str, Any]:
    """1000 small tasks: ipc.map (+workqueue, static split) vs ProcessPoolExecutor."""
    tasks = list(range(ntasks))
    expect = sorted(square(x) for x in tasks)
    peers: list[tuple[str, Callable[[], list[int]]]] = [
        ("ipc.map + workqueue (1 task per item)", lambda: _map_queue(tasks, workers)),
        ("ipc.map static split", lambda: _map_static(tasks, workers)),
        ("ProcessPoolExecutor.map chunksize=1", lambda: _pool(tasks, workers, 1)),
        (f"ProcessPoolExecutor.map chunksize={ntasks // workers}",
         lambda: _pool(tasks, workers, max(1, ntasks // workers))),
    ]
    rows: list[dict[str, Any]] = []
    for name, fn in peers:
        seconds, got = _time(fn)
        if got != expect:
            raise RuntimeError(f"{name} returned wrong results")
        rows.append({"peer": name, "seconds": seconds, "tasks_per_s": ntasks / seconds})
    for row in rows:
        row["vs_pool_chunksize1"] = rows[2]["seconds"] / row["seconds"]
    return {"tasks": ntasks, "workers": workers, "rows": rows}


# --- reporting and click commands --------------------------------------------------------
def _write(name: str, result: dict[str, Any], out_dir: str) -> Path:
    result = {"benchmark": name, "host": platform.node(), "cpus": os.cpu_count(),
              "python": platform.python_version(), "time": time.time(), **result}
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def _show_parallel(r: dict[str, Any]) -> None:
    print(f"parallel send/receive (echo), shared size {r['shared_size']} bytes")
    for case in r["cases"]:
        print(f"  {case['payload']} ({case['bytes']} bytes)")
        for row in case["rows"]:
            print(f"    {row['peer']:<34} {row['messages_per_s']:>10.1f} msg/s "
                  f"{row['gb_per_s']:>7.3f} GB/s   parallel is {row['parallel_speedup']:.2f}x")


def _show_ipc(r: dict[str, Any]) -> None:
    print("client-server over TCP loopback")
    for case in r["cases"]:
        a, b = case["rows"]
        print(f"  {case['bytes']:>9} B x {case['count']:<6} ipc {a['gb_per_s']:.3f} GB/s "
              f"({a['messages_per_s']:.0f} msg/s)  raw sendall {b['gb_per_s']:.3f} GB/s  "
              f"ipc/raw = {a['vs_raw']:.2f}")
    cuda = r.get("cuda", {})
    if "skipped" in cuda:
        print(f"CUDA tensors: skipped ({cuda['skipped']})")
    for case in cuda.get("cases", []):
        a, b = case["rows"]
        print(f"  CUDA {case['bytes']:>9} B x {case['count']:<5} CUDA IPC {a['gb_per_s']:.3f} "
              f"GB/s [{a['transport']}]  host staging {b['gb_per_s']:.3f} GB/s "
              f"[{b['transport']}]  ipc/staged = {a['vs_staged']:.2f}")


def _show_map(r: dict[str, Any]) -> None:
    print(f"{r['tasks']} small tasks on {r['workers']} workers (process start included)")
    for row in r["rows"]:
        print(f"  {row['peer']:<40} {row['seconds']:.3f} s  {row['tasks_per_s']:>8.0f} "
              f"tasks/s  {row['vs_pool_chunksize1']:.2f}x vs pool chunksize=1")


def _command(name: str, help_text: str, run: Callable[..., dict[str, Any]],
             show: Callable[[dict[str, Any]], None], quick_args: dict[str, Any]) -> Any:
    import click

    def callback(out: str, quick: bool) -> None:
        result = run(**(quick_args if quick else {}))
        show(result)
        click.echo(f"wrote {_write(name, result, out)}")

    return click.Command(name, callback=callback, help=help_text, params=[
        click.Option(["--out"], default="benchmarks/results", show_default=True,
                     help="Directory for the JSON result (written as <out>/<name>.json)."),
        click.Option(["--quick"], is_flag=True,
                     help="A few iterations only: a smoke run for tests, noisy numbers."),
    ])


bench_parallel = _command(
    "parallel",
    "parallel send/receive vs multiprocessing Queue and Pipe, for a 100x100 float64 "
    "tensor and a 16 MiB tensor (echo through a child; msg/s and GB/s).\n\n"
    "Example: nonsense-hpc bench parallel --out benchmarks/results",
    run_parallel, _show_parallel, {"small_rounds": 100, "big_rounds": 4})
bench_ipc = _command(
    "ipc",
    "ipc client-server tensor throughput over TCP loopback vs a raw socket sendall of "
    "the same bytes (4 KiB, 1 MiB, 16 MiB tensors); with a GPU also CUDA tensors (1 MiB, "
    "64 MiB) by CUDA IPC vs host staging, skipped without one.\n\n"
    "Example: nonsense-hpc bench ipc",
    run_ipc, _show_ipc, {"sizes": (4096, 1024**2), "total_bytes": 8 * 1024**2,
                         "cuda_sizes": (1024**2,), "cuda_total_bytes": 16 * 1024**2})
bench_map = _command(
    "map",
    "ipc.map (+ workqueue) running 1000 small tasks on 2 workers vs "
    "concurrent.futures.ProcessPoolExecutor, process start included.\n\n"
    "Example: nonsense-hpc bench map",
    run_map, _show_map, {"ntasks": 100})
