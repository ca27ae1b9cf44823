import os
import signal
import sys
import time

from supervise_helpers import Events, alive, wait_for

from nonsense_hpc.supervise import ChildSpec, Supervisor, Watchdog, heart


def _beat_then_hang(beats, every):
    for _ in range(beats):
        assert heart.beat()
        time.sleep(every)
    time.sleep(3600)


def _beat_forever(every):
    while True:
        heart.beat()
        time.sleep(every)


def _report_env(fd):
    keys = (heart.ADDR_VAR, heart.INTERVAL_VAR, heart.ID_VAR)
    os.write(fd, repr([os.environ.get(k) for k in keys]).encode())
    time.sleep(3600)


def test_silent_child_is_killed_and_restarted(events):
    spec = ChildSpec(id="hb", start=_beat_then_hang, args=(3, 0.05), heartbeat=0.1,
                     heartbeat_timeout=0.4)
    with Supervisor(children=[spec], intensity=5, on_event=events.put) as sup:
        first = sup.which_children()[0].pid
        timeout_event = events.wait("heartbeat_timeout", "hb")
        assert timeout_event.pid == first
        exit_event = events.wait("exit", "hb")
        assert exit_event.signal == "SIGKILL" and exit_event.reason == "heartbeat"
        events.wait("restart", "hb")
        assert not alive(first)
        assert sup.which_children()[0].pid != first


def test_beating_child_is_left_alone(events):
    spec = ChildSpec(id="hb", start=_beat_forever, args=(0.02,), heartbeat=0.05,
                     heartbeat_timeout=0.3)
    with Supervisor(children=[spec], on_event=events.put) as sup:
        pid = sup.which_children()[0].pid
        # 1.5 s is five heartbeat timeouts: a beating child must survive all of them.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            time.sleep(0.1)
        assert sup.which_children()[0].pid == pid
    assert not any(e.kind == "heartbeat_timeout" for e in events.drain())


def test_heartbeat_environment_only_for_children_that_beat():
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        children = [ChildSpec(id="with", start=_report_env, args=(w1,), heartbeat=5.0),
                    ChildSpec(id="without", start=_report_env, args=(w2,))]
        with Supervisor(children=children):
            got_with = eval(os.read(r1, 4096).decode())
            got_without = eval(os.read(r2, 4096).decode())
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    assert got_with[0].startswith("ipc://") and got_with[1] == "5.0"
    assert got_with[2] == "with#1"
    assert got_without == [None, None, None]


def test_beat_without_supervisor_is_a_no_op(monkeypatch):
    monkeypatch.delenv(heart.ADDR_VAR, raising=False)
    assert heart.beat() is False


SUPERVISOR_SCRIPT = """
import sys
from nonsense_hpc.supervise import ChildSpec, Supervisor
Supervisor(children=[ChildSpec(id="leaf", start=["sleep", "3600"])], name="watched").run()
"""


def _leaf_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = fh.read().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def test_watchdog_restarts_a_hung_supervisor_tree(tmp_path):
    script = tmp_path / "sup.py"
    script.write_text(SUPERVISOR_SCRIPT)
    events = Events()
    dog = Watchdog([sys.executable, str(script)], interval=0.1, timeout=1.0,
                   on_event=events.put)
    with dog:
        first = dog.pid
        wait_for(lambda: _leaf_of(first) is not None, what="the watched supervisor's leaf")
        leaf = _leaf_of(first)
        os.kill(first, signal.SIGSTOP)          # hang the supervisor: its beats stop
        assert events.wait("heartbeat_timeout", "supervisor").pid == first
        events.wait("restart", "supervisor")
        second = dog.pid
        assert second != first
        wait_for(lambda: not alive(first) and not alive(leaf), timeout=5,
                 what="old supervisor and its leaf killed")
        wait_for(lambda: _leaf_of(second) is not None, what="new leaf")
        new_leaf = _leaf_of(second)
    wait_for(lambda: not alive(second) and not alive(new_leaf), timeout=5,
             what="tree stopped with the watchdog")
