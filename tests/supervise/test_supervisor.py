import os
import signal
import sys
import time

import pytest
from supervise_helpers import alive, wait_for, wait_readable

from nonsense_hpc.errors import ConfigError, SupervisorError
from nonsense_hpc.supervise import ChildSpec, Supervisor, SupervisorSpec

SLEEP = ["sleep", "3600"]


def sleeper(name, **kw):
    kw.setdefault("shutdown", 2.0)
    return ChildSpec(id=name, start=SLEEP, **kw)


def pids(sup):
    return {c.id: c.pid for c in sup.which_children()}


def test_children_start_in_order_and_stop_in_reverse(events):
    sup = Supervisor(children=[sleeper("a"), sleeper("b"), sleeper("c")], name="order",
                     on_event=events.put)
    sup.start()
    started = pids(sup)
    assert all(alive(p) for p in started.values())
    sup.stop(timeout=30)
    seen = events.drain()
    assert [e.child for e in seen if e.kind == "spawn"] == ["a", "b", "c"]
    assert [e.child for e in seen if e.kind == "exit"] == ["c", "b", "a"]
    assert all(e.reason == "shutdown" and e.signal == "SIGTERM"
               for e in seen if e.kind == "exit")
    assert seen[-1].kind == "stop"
    assert not any(alive(p) for p in started.values())


@pytest.mark.parametrize("strategy, victim, restarted", [
    ("one_for_one", "b", ["b"]),
    ("one_for_all", "b", ["a", "b", "c"]),
    ("rest_for_one", "b", ["b", "c"]),
    ("rest_for_one", "c", ["c"]),
])
def test_strategy_restarts_exactly_the_named_children(events, strategy, victim, restarted):
    with Supervisor(children=[sleeper("a"), sleeper("b"), sleeper("c")],
                    strategy=strategy, intensity=5, on_event=events.put) as sup:
        before = pids(sup)
        os.kill(before[victim], signal.SIGKILL)
        event = events.wait("restart", victim)
        after = pids(sup)
        assert list(event.restarted) == restarted
        assert [k for k in before if before[k] != after[k]] == restarted
        assert all(alive(p) for p in after.values())
        assert not any(alive(before[k]) for k in restarted)
        exits = [e for e in events.seen if e.kind == "exit"]
        assert exits[0].child == victim and exits[0].signal == "SIGKILL"
        assert exits[0].reason == "crash"
        # siblings are stopped in reverse start order before the restart
        assert [e.child for e in exits[1:]] == [k for k in reversed(restarted) if k != victim]


def test_simple_one_for_one_dynamic_children(events):
    template = ChildSpec(id="job", start=["sleep"], shutdown="brutal_kill")
    with Supervisor(children=[template], strategy="simple_one_for_one", intensity=5,
                    on_event=events.put) as sup:
        assert sup.which_children() == []
        a = sup.start_child(["3600"])
        b = sup.start_child(["3601"])
        assert (a.id, b.id) == ("job.1", "job.2")
        # the kernel fills in cmdline a moment after exec has closed Popen's pipe
        wait_for(lambda: _cmdline(b.pid)[:2] == [b"sleep", b"3601"], what="b's argv")
        os.kill(a.pid, signal.SIGKILL)
        assert events.wait("restart", "job.1").restarted == ("job.1",)
        after = pids(sup)
        assert after["job.2"] == b.pid and after["job.1"] != a.pid
        sup.terminate_child("job.2")
        assert list(pids(sup)) == ["job.1"]
        with pytest.raises(ConfigError, match="extra arguments"):
            sup.start_child(template)


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().split(b"\0")


def test_restart_types(events, tmp_path):
    once = tmp_path / "once"
    # exits 0 the first time, then runs: a permanent child is restarted even after exit 0
    perm = ["sh", "-c", f"test -e {once} && exec sleep 3600; touch {once}; exit 0"]
    children = [
        ChildSpec(id="perm", start=perm, restart="permanent"),
        ChildSpec(id="trans_ok", start=["sh", "-c", "exit 0"], restart="transient"),
        ChildSpec(id="trans_bad", start=SLEEP, restart="transient"),
        ChildSpec(id="temp", start=SLEEP, restart="temporary"),
    ]
    sup = Supervisor(children=children, intensity=10, period=60, on_event=events.put)
    with sup:
        events.wait("restart", "perm")                   # exit 0 still restarts
        exit_event = events.wait("exit", "trans_ok")
        assert exit_event.status == 0
        infos = {c.id: c for c in sup.which_children()}
        os.kill(infos["temp"].pid, signal.SIGKILL)
        events.wait("exit", "temp")
        wait_for(lambda: "temp" not in pids(sup), what="temporary child forgotten")
        bad = pids(sup)["trans_bad"]
        os.kill(bad, signal.SIGKILL)
        events.wait("restart", "trans_bad")
        infos = {c.id: c for c in sup.which_children()}
        assert infos["trans_ok"].pid is None and infos["trans_ok"].last_exit == "exit status 0"
        assert infos["trans_bad"].pid not in (None, bad)
        assert not any(e.kind == "restart" and e.child == "trans_ok" for e in events.drain())
        sup.terminate_child("perm")


def _ignore_term_then_signal(fd):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(fd, b"r")
    time.sleep(3600)


def test_shutdown_timeout_then_kill_and_brutal_kill(events):
    r, w = os.pipe()
    try:
        children = [ChildSpec(id="stubborn", start=_ignore_term_then_signal, args=(w,),
                              shutdown=0.3),
                    ChildSpec(id="brutal", start=SLEEP, shutdown="brutal_kill")]
        with Supervisor(children=children, on_event=events.put) as sup:
            wait_readable(r)
            t0 = time.monotonic()
            sup.terminate_child("stubborn")
            took = time.monotonic() - t0
            event = events.wait("exit", "stubborn")
            assert event.signal == "SIGKILL" and "killed after timeout" in event.reason
            assert took >= 0.3
            sup.terminate_child("brutal")
            assert events.wait("exit", "brutal").signal == "SIGKILL"
            assert [c.pid for c in sup.which_children()] == [None, None]
            sup.restart_child("brutal")
            assert pids(sup)["brutal"] is not None
    finally:
        os.close(r)
        os.close(w)


def _exit_with(code):
    return code


def _raise():
    raise RuntimeError("boom in child")


def test_callable_children_exit_status(events):
    children = [ChildSpec(id="seven", start=_exit_with, args=(7,), restart="temporary"),
                ChildSpec(id="boom", start=_raise, restart="temporary", stderr=os.devnull)]
    with Supervisor(children=children, on_event=events.put):
        assert events.wait("exit", "seven").status == 7
        assert events.wait("exit", "boom").status == 1


def test_failed_start_stops_earlier_children_and_raises(events):
    sup = Supervisor(children=[sleeper("a"), ChildSpec(id="b", start=["/no/such/program"])],
                     on_event=events.put)
    with pytest.raises(SupervisorError, match="cannot start '/no/such/program'"):
        sup.start()
    seen = events.drain()
    a_pid = next(e.pid for e in seen if e.kind == "spawn")
    assert [e.child for e in seen if e.kind == "exit"] == ["a"]
    assert not alive(a_pid)


def test_escalation_after_intensity(events):
    sup = Supervisor(children=[sleeper("a"), sleeper("b")], intensity=2, period=3600,
                     on_event=events.put)
    sup.start()
    for _ in range(2):
        os.kill(pids(sup)["a"], signal.SIGKILL)
        events.wait("restart", "a")
    last = pids(sup)
    os.kill(last["a"], signal.SIGKILL)
    give_up = events.wait("give_up", "a")
    assert "more than 2 restart(s) within 3600.0 s" in give_up.reason
    assert sup.wait(15)
    assert isinstance(sup.failure, SupervisorError)
    assert not alive(last["b"])
    with pytest.raises(SupervisorError, match="not running"):
        sup.which_children()


def test_nested_supervisor_failure_escalates_to_parent(events):
    inner = SupervisorSpec(children=(sleeper("leaf"),), intensity=0, name="inner")
    outer = Supervisor(children=[sleeper("before"), ChildSpec(id="inner", start=inner)],
                       strategy="one_for_one", intensity=3, name="outer",
                       on_event=events.put)
    with outer:
        inner_pid = pids(outer)["inner"]
        wait_for(lambda: _children_of(inner_pid), what="inner supervisor's leaf")
        (leaf,) = _children_of(inner_pid)
        os.kill(leaf, signal.SIGKILL)
        exit_event = events.wait("exit", "inner")
        assert exit_event.status == 1               # the inner supervisor gave up
        events.wait("restart", "inner")
        new_inner = pids(outer)["inner"]
        assert new_inner != inner_pid
        wait_for(lambda: _children_of(new_inner), what="restarted leaf")
        assert not alive(leaf) and not alive(inner_pid)
        new_leaf = _children_of(new_inner)[0]
    assert not alive(new_leaf) and not alive(new_inner)


def test_killing_nested_supervisor_takes_its_subtree(events):
    inner = SupervisorSpec(children=(sleeper("leaf"),), name="inner")
    with Supervisor(children=[ChildSpec(id="inner", start=inner)], intensity=3,
                    on_event=events.put) as outer:
        inner_pid = pids(outer)["inner"]
        wait_for(lambda: _children_of(inner_pid), what="leaf")
        (leaf,) = _children_of(inner_pid)
        os.kill(inner_pid, signal.SIGKILL)
        events.wait("restart", "inner")
        wait_for(lambda: not alive(leaf), timeout=5, what="orphaned leaf killed")


def _children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def test_grandchildren_do_not_outlive_their_child(events):
    spec = ChildSpec(id="shell", start=["sh", "-c", "sleep 3600 & sleep 3600 & wait"])
    with Supervisor(children=[spec], intensity=3, on_event=events.put) as sup:
        shell = pids(sup)["shell"]
        wait_for(lambda: len(_children_of(shell)) == 2, what="two grandchildren")
        grandchildren = _children_of(shell)
        os.kill(shell, signal.SIGKILL)
        events.wait("restart", "shell")
        wait_for(lambda: not any(alive(g) for g in grandchildren), timeout=5,
                 what="grandchildren gone")


def test_api_errors_are_clear():
    with Supervisor(children=[sleeper("a")]) as sup:
        with pytest.raises(SupervisorError, match="has no child 'zz' \\(children: a\\)"):
            sup.restart_child("zz")
        with pytest.raises(ConfigError, match="already has a child 'a'"):
            sup.start_child(sleeper("a"))
        with pytest.raises(SupervisorError, match="running; terminate it first"):
            sup.delete_child("a")
        sup.terminate_child("a")
        sup.delete_child("a")
        assert sup.which_children() == []
        with pytest.raises(SupervisorError, match="already started"):
            sup.start()


def test_run_in_main_thread_stops_on_sigterm(tmp_path):
    import subprocess

    script = tmp_path / "run.py"
    script.write_text(
        "from nonsense_hpc.supervise import ChildSpec, Supervisor\n"
        "s = Supervisor(children=[ChildSpec(id='a', start=['sleep', '3600'])],\n"
        "               on_event=lambda e: print(e, flush=True))\n"
        "s.run()\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("spawn a" in line for line in lines):
            lines.append(proc.stdout.readline())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "exit a" in out and "stop (received SIGTERM)" in out
