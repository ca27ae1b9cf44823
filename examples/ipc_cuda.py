"""CUDA tensors to a second process of this host: CUDA IPC handles, or host staging.

Run on a GPU host: python examples/ipc_cuda.py
Compare with host staging: NONSENSE_CUDA_IPC=0 python examples/ipc_cuda.py
Without a GPU it says so and stops.
"""

import time

import torch

from nonsense_hpc import ipc


def receiver(port, mapid):
    """The second process: receive, check, answer; return its counters.

    torch is imported (at the top of this script) before connecting: a process that has
    not imported torch when it connects takes CUDA tensors by host staging.
    """
    with ipc.client("127.0.0.1", port) as conn:
        got = conn.recv(timeout=120)
        conn.send({"sum": float(got.double().sum()), "device": str(got.device)})
        conn.recv(timeout=120)  # "done"
        return dict(conn.stats)


def main():
    if not torch.cuda.is_available():
        print("ipc_cuda: skipped, torch.cuda.is_available() is False on this machine")
        return None
    with ipc.server("127.0.0.1", 0) as srv:
        job = ipc.map(1, receiver, srv.port)
        conn = srv.clients(1, timeout=60)[0]
        x = torch.randn(64 * 1024**2 // 4, device="cuda")  # 64 MiB
        expect = float(x.double().sum())
        t0 = time.perf_counter()
        srv.send(x, conn)
        reply = srv.recv(conn, timeout=120)
        dt = time.perf_counter() - t0
        conn.flush(timeout=60)
        transport = conn.last_transport
        srv.send("done", conn)
        (child_stats,) = job.join(timeout=120)
    print(f"transport: {transport.name} {transport.reason}".rstrip())
    print(f"64 MiB round trip (send, receiver's copy and checksum, reply): {dt * 1e3:.1f} ms")
    print(f"sender stats: {conn.stats}; receiver stats: {child_stats}")
    ok = abs(reply["sum"] - expect) <= 1e-6 * max(1.0, abs(expect))
    print(f"ipc_cuda: landed on {reply['device']}, values {'match' if ok else 'DIFFER'}")
    if not ok:
        raise SystemExit(1)
    return transport


if __name__ == "__main__":
    main()
