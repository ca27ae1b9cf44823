"""A supervised Forwarder for one run, with a recorder of everything it forwards.

:func:`start_monitor` starts a detached process that runs a
:class:`~nonsense_hpc.supervise.Supervisor` (``rest_for_one``) with two children:

1. ``forwarder``: a :class:`~nonsense_hpc.devices.Forwarder` (XSUB -> XPUB) on fixed
   ports, where the training ranks' Publishers connect;
2. ``recorder``: a subscriber on the Forwarder's output that appends every message
   (topic, rank, step, data) to ``DIR/messages.jsonl``.

If the Forwarder dies it is restarted on the same ports (and the recorder after it), up
to 5 times in 30 s. Once both sockets accept connections the process writes
``DIR/forwarder.json``::

    {"in": "tcp://127.0.0.1:PORT", "out": "tcp://127.0.0.1:PORT",
     "control": "ipc://DIR/control.sock", "pid": 1234, "messages": "DIR/messages.jsonl"}

(and the same in ``DIR/monitor.json``, which :func:`stop_monitor` reads: the workflow
deletes ``forwarder.json`` once training is done with it). ``in`` is what
``NONSENSE_PUBLISH`` (or ``nonsense-hpc train --publish``) takes; ``out``
is where any consumer subscribes (``nonsense-hpc ctl --control CONTROL status`` shows the
children). :func:`stop_monitor` stops it (SIGTERM: children stop in reverse order). A
monitor also stops by itself after ``max_lifetime`` seconds, so a workflow killed without
its clean-up cannot leave it behind for ever.

Example:
    >>> info = start_monitor("run/monitor")                       # doctest: +SKIP
    >>> info["in"]                                                 # doctest: +SKIP
    'tcp://127.0.0.1:41235'
    >>> stop_monitor("run/monitor")                                # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nonsense_hpc.errors import DeviceError

__all__ = ["INFO", "read_messages", "serve", "start_monitor", "stop_monitor"]

INFO = "forwarder.json"
STATE = "monitor.json"
MESSAGES = "messages.jsonl"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _accepting(addr: str) -> bool:
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _run_forwarder(in_addr: str, out_addr: str, public: bool) -> None:
    from nonsense_hpc.devices import Forwarder

    Forwarder(in_addr, out_addr, public=public).run()


def _run_recorder(out_addr: str, path: str) -> None:
    import zmq

    from nonsense_hpc import wire
    from nonsense_hpc.errors import WireError

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(out_addr)
    with open(path, "a") as fh:
        while True:
            if not sub.poll(1000):
                continue
            frames = sub.recv_multipart(copy=False)
            try:
                msg = wire.decode(frames)
            except WireError as exc:
                record: dict[str, Any] = {"error": str(exc), "received": time.time()}
            else:
                record = {"topic": msg.topic, "kind": msg.header.get("kind"),
                          "rank": msg.rank, "step": msg.step, "seq": msg.seq,
                          "source": msg.source, "job_id": msg.job_id,
                          "timestamp": msg.timestamp, "received": time.time(),
                          "data": msg.data}
            fh.write(json.dumps(record) + "\n")
            fh.flush()


def serve(directory: str, host: str = "127.0.0.1", max_lifetime: float = 6 * 3600) -> int:
    """Run the supervised Forwarder and recorder until SIGTERM (the detached process).

    Returns:
        0 after a clean stop, 1 when the supervisor gave up (restart intensity).
    """
    from nonsense_hpc.errors import SupervisorError
    from nonsense_hpc.supervise import ChildSpec, Supervisor

    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    in_addr = f"tcp://{host}:{_free_port(host)}"
    out_addr = f"tcp://{host}:{_free_port(host)}"
    public = host not in ("127.0.0.1", "localhost", "::1")
    control = f"ipc://{d / 'control.sock'}"
    children = [
        ChildSpec(id="forwarder", start=_run_forwarder, args=(in_addr, out_addr, public),
                  shutdown=5.0),
        ChildSpec(id="recorder", start=_run_recorder, args=(out_addr, str(d / MESSAGES)),
                  shutdown=2.0),
    ]
    sup = Supervisor(children=children, strategy="rest_for_one", intensity=5, period=30.0,
                     name="run-monitor", control=control,
                     on_event=lambda e: print(e, file=sys.stderr, flush=True))
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    sup.start()
    deadline = time.monotonic() + 30
    while not (_accepting(in_addr) and _accepting(out_addr)):
        if time.monotonic() > deadline or not sup.running:
            sup.stop(30)
            print(f"forwarder did not accept connections on {in_addr}/{out_addr}",
                  file=sys.stderr)
            return 1
        time.sleep(0.05)
    info = {"in": in_addr, "out": out_addr, "control": control, "pid": os.getpid(),
            "messages": str(d / MESSAGES), "started": time.time()}
    for name in (STATE, INFO):
        _write_json(d / name, info)
    end = time.monotonic() + max_lifetime
    while not stop["flag"] and sup.running and time.monotonic() < end:
        sup.wait(0.5)
    failed = sup.failure is not None
    try:
        sup.stop(30)
    except (TimeoutError, SupervisorError) as exc:
        print(f"stopping the monitor: {exc}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def start_monitor(directory: str | os.PathLike[str], *, host: str = "127.0.0.1",
                  timeout: float = 60.0, max_lifetime: float = 6 * 3600) -> dict[str, Any]:
    """Start the monitor process (or find the one already running there).

    Args:
        directory: where ``forwarder.json``, ``messages.jsonl`` and ``monitor.log`` go.
        host: the interface the Forwarder binds (a compute node must reach it on a
            cluster: pass this host's address there; anything but loopback is public).
        timeout: seconds to wait for the Forwarder to accept connections.
        max_lifetime: the monitor stops by itself after this many seconds.

    Returns:
        The contents of ``forwarder.json``.

    Raises:
        DeviceError: the monitor did not come up (the message carries its log's tail).
    """
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    info_path = d / INFO
    state_path = d / STATE
    if state_path.exists():
        try:
            info: dict[str, Any] = json.loads(state_path.read_text())
            if _alive(int(info["pid"])) and _accepting(info["in"]):
                _write_json(info_path, info)  # the workflow may have removed it
                return info
        except (ValueError, KeyError):
            pass
        stop_monitor(d)
    info_path.unlink(missing_ok=True)
    log_path = d / "monitor.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nonsense_hpc.train.monitor", str(d), host,
             str(max_lifetime)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not info_path.exists():
        code = proc.poll()
        if code is not None or time.monotonic() > deadline:
            if code is None:
                proc.kill()
                proc.wait(10)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise DeviceError(f"the run monitor (supervised Forwarder) did not start in "
                              f"{timeout:.0f} s (exit {proc.poll()}); {log_path}:\n{tail}")
        time.sleep(0.05)
    result: dict[str, Any] = json.loads(info_path.read_text())
    return result


def stop_monitor(directory: str | os.PathLike[str], timeout: float = 30.0) -> bool:
    """Stop the monitor started in ``directory``; False if none was running.

    Removes ``forwarder.json`` and ``monitor.json`` (a later start makes a fresh one).

    Raises:
        DeviceError: it did not stop within ``timeout`` even after SIGKILL.
    """
    d = Path(directory)
    try:
        pid = int(json.loads((d / STATE).read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return False
    finally:
        (d / INFO).unlink(missing_ok=True)
        (d / STATE).unlink(missing_ok=True)
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
            if _alive(pid):
                raise DeviceError(f"the run monitor (pid {pid}) did not stop")
            break
        time.sleep(0.05)
    return True


def read_messages(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The messages the recorder wrote (an empty list when there are none)."""
    path = Path(directory) / MESSAGES
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1",
                   float(sys.argv[3]) if len(sys.argv) > 3 else 6 * 3600))
