import json
import os
import signal
import subprocess
import sys
import time

import pytest
import zmq
from click.testing import CliRunner
from supervise_helpers import Events, alive, wait_for

from nonsense_hpc import wire
from nonsense_hpc.cli.supervise import ctl, supervise
from nonsense_hpc.errors import ConfigError, SupervisorError
from nonsense_hpc.supervise import (
    EventSubscriber,
    Supervisor,
    load_config,
    request,
)
from nonsense_hpc.supervise.configfile import parse_config

TOML = """
[supervisor]
name = "svc"
strategy = "rest_for_one"
intensity = 4
period = 10

[[children]]
id = "first"
command = "sleep 3600"
shutdown = "brutal_kill"

[[children]]
id = "second"
command = ["sleep", "3601"]
restart = "transient"
env = { GREETING = "hi" }
stdout = "second.log"
heartbeat = 2

[[children]]
id = "fn"
callable = "time:sleep"
args = [3600]

[[children]]
id = "nested"
[children.supervisor]
strategy = "one_for_all"
[[children.supervisor.children]]
id = "leaf"
command = "sleep 3602"
"""

YAML = """
supervisor: {name: svc, strategy: rest_for_one, intensity: 4, period: 10}
children:
  - {id: first, command: sleep 3600, shutdown: brutal_kill}
  - id: second
    command: [sleep, "3601"]
    restart: transient
    env: {GREETING: hi}
    stdout: second.log
    heartbeat: 2
  - {id: fn, callable: "time:sleep", args: [3600]}
  - id: nested
    supervisor:
      strategy: one_for_all
      children:
        - {id: leaf, command: sleep 3602}
"""


@pytest.mark.parametrize("suffix, text", [(".toml", TOML), (".yaml", YAML)])
def test_toml_and_yaml_give_the_same_tree(tmp_path, suffix, text):
    path = tmp_path / f"tree{suffix}"
    path.write_text(text)
    spec = load_config(path)
    assert (spec.name, spec.strategy, spec.intensity, spec.period) == \
        ("svc", "rest_for_one", 4, 10.0)
    first, second, fn, nested = spec.children
    assert first.start == ("sleep", "3600") and first.shutdown == "brutal_kill"
    assert second.restart == "transient" and second.env == {"GREETING": "hi"}
    assert second.stdout == str(tmp_path / "second.log") and second.heartbeat == 2.0
    assert fn.start[1:] == ("-m", "nonsense_hpc.supervise.runner", "time:sleep")
    assert fn.args == (3600,)
    assert nested.type == "supervisor" and nested.start.strategy == "one_for_all"
    assert nested.start.name == "nested"
    assert nested.start.children[0].start == ("sleep", "3602")


def test_device_and_mpi_shortcuts():
    spec = parse_config({"children": [
        {"id": "fwd", "forwarder": {"in": "tcp://127.0.0.1:5559",
                                    "out": "tcp://127.0.0.1:5560", "verbose": True}},
        {"id": "job", "command": ["python3", "train.py"], "mpi": {"np": 2}},
    ]})
    fwd, job = spec.children
    assert fwd.start == (sys.executable, "-m", "nonsense_hpc", "forwarder", "--in",
                         "tcp://127.0.0.1:5559", "--out", "tcp://127.0.0.1:5560",
                         "--verbose")
    assert job.start[1:3] == ("-n", "2") and job.start[-2:] == ("python3", "train.py")
    assert job.new_session is True


@pytest.mark.parametrize("data, message", [
    ({"children": []}, "'children' must be a non-empty list"),
    ({"children": [{"command": "x"}]}, "every child needs an 'id'"),
    ({"children": [{"id": "a"}]}, "give exactly one of command, callable"),
    ({"children": [{"id": "a", "command": "x", "callable": "m:f"}]}, "got command, callable"),
    ({"children": [{"id": "a", "command": "x", "restrat": "permanent"}]},
     "unknown key\\(s\\) restrat; valid keys: id, restart"),
    ({"supervisor": {"stratgy": "x"}, "children": [{"id": "a", "command": "x"}]},
     "unknown key\\(s\\) stratgy"),
    ({"children": [{"id": "a", "callable": "nocolon"}]}, "package.module:function"),
    ({"children": [{"id": "a", "command": "x", "mpi": 2}]}, "mpi must be a table"),
    ({"children": [{"id": "a", "forwarder": "tcp://x"}]}, "expected a table of options"),
])
def test_bad_config_names_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read supervisor config"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[children]\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: does not parse"):
        load_config(bad)
    other = tmp_path / "tree.ini"
    other.write_text("")
    with pytest.raises(ConfigError, match=r"unknown config format '\.ini'"):
        load_config(other)


def test_check_prints_the_tree(tmp_path):
    path = tmp_path / "tree.toml"
    path.write_text(TOML)
    result = CliRunner().invoke(supervise, ["--check", str(path)])
    assert result.exit_code == 0, result.output
    assert "svc: rest_for_one, intensity 4 in 10.0 s" in result.output
    assert "leaf (worker, permanent" in result.output


def test_control_socket_and_ctl(tmp_path):
    addr = f"ipc://{tmp_path}/ctl"
    spec = parse_config({"supervisor": {"name": "ctl-test", "control": addr},
                         "children": [{"id": "a", "command": "sleep 3600"},
                                      {"id": "b", "command": "sleep 3600"}]})
    with Supervisor(spec) as sup:
        status = request(addr, "status")
        assert status["supervisor"] == "ctl-test"
        assert [c["id"] for c in status["children"]] == ["a", "b"]
        old = status["children"][0]["pid"]
        runner = CliRunner()
        out = runner.invoke(ctl, ["--control", addr, "restart", "a"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["pid"] != old and not alive(old)
        out = runner.invoke(ctl, ["--control", addr, "stop", "b"])
        assert out.exit_code == 0, out.output
        out = runner.invoke(ctl, ["--control", addr, "status"])
        assert "STOPPED" in out.output and "RUNNING" in out.output
        out = runner.invoke(ctl, ["--control", addr, "stop", "nope"])
        assert out.exit_code == 1 and "no child 'nope'" in out.output
        out = runner.invoke(ctl, ["--control", addr, "restart"])
        assert out.exit_code == 1 and "restart needs a child NAME" in out.output
        request(addr, "start", "b")
        assert all(c.pid for c in sup.which_children())
        request(addr, "shutdown")
        assert sup.wait(15)
    with pytest.raises(TimeoutError, match="no answer from a supervisor"):
        request(f"ipc://{tmp_path}/nobody", "status", timeout=0.3)
    with pytest.raises(ConfigError, match="unknown command 'reboot'"):
        request(addr, "reboot")
    assert CliRunner().invoke(ctl, ["status"], env={"NONSENSE_CONTROL": ""}).exit_code == 2


def test_events_are_published_in_the_wire_format(tmp_path):
    addr = f"ipc://{tmp_path}/events"
    events = Events()
    sub = EventSubscriber(addr)
    raw_ctx = zmq.Context()
    raw = raw_ctx.socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"supervise.")
    raw.connect(addr)
    try:
        spec = parse_config({"supervisor": {"name": "pub", "events": addr, "intensity": 3},
                             "children": [{"id": "a", "command": "sleep 3600"}]})
        with Supervisor(spec, on_event=events.put) as sup:
            # PUB drops messages until the subscription arrives: kill once it has.
            pid = sup.which_children()[0].pid
            time.sleep(0.3)  # slow-joiner: let the SUB connections complete
            os.kill(pid, signal.SIGKILL)
            events.wait("restart", "a")
            got = []
            while not any(e.kind == "restart" for e in got):
                got.append(sub.recv(timeout=10))
            kinds = [e.kind for e in got]
            assert kinds[-3:] == ["exit", "spawn", "restart"]
            assert got[-3].signal == "SIGKILL" and got[-3].pid == pid
            msg = wire.recv(raw, timeout=10)
            assert msg.kind == "event" and msg.topic.startswith("supervise.pub.")
            assert msg.data["supervisor"] == "pub"
    finally:
        sub.close()
        raw.close(0)
        raw_ctx.term()


def test_supervise_command_runs_and_stops_in_reverse_order(tmp_path):
    path = tmp_path / "tree.toml"
    path.write_text(TOML.replace('callable = "time:sleep"', 'command = "sleep"')
                    .replace('args = [3600]', 'args = ["3600"]'))
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; from nonsense_hpc.cli.supervise import supervise;"
                             "supervise.main(sys.argv[1:])", str(path)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = []
        while not any("spawn nested" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "supervise exited early: " + "".join(lines)
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0
    exits = [line.split()[2] for line in rest.splitlines() if "] exit " in line
             and line.startswith("[svc]")]
    assert exits == ["nested", "fn", "second", "first"]


def test_supervise_exits_1_when_it_gives_up(tmp_path):
    path = tmp_path / "crash.toml"
    path.write_text('[supervisor]\nintensity = 1\n[[children]]\nid = "c"\n'
                    'command = "false"\n')
    result = CliRunner().invoke(supervise, [str(path)])
    assert result.exit_code == 1
    assert "gave up: child 'c' exit status 1" in result.output


def _devices_cli_available():
    try:
        from nonsense_hpc.cli import devices
    except ImportError:
        return False
    names = {c.name for c in getattr(devices, "COMMANDS", [])}
    return {"forwarder", "streamer", "broker"} <= names


def test_config_runs_the_devices(tmp_path):
    if not _devices_cli_available():
        pytest.skip("`nonsense-hpc forwarder` is not available yet (devices CLI missing)")
    fin, fout = f"ipc://{tmp_path}/fin", f"ipc://{tmp_path}/fout"
    sin, sout = f"ipc://{tmp_path}/sin", f"ipc://{tmp_path}/sout"
    spec = parse_config({"supervisor": {"name": "devices"}, "children": [
        {"id": "forwarder", "forwarder": {"in": fin, "out": fout}},
        {"id": "streamer", "streamer": {"in": sin, "out": sout}},
        {"id": "broker", "broker": {"in": f"ipc://{tmp_path}/bin",
                                    "workers": f"ipc://{tmp_path}/bworkers",
                                    "results": f"ipc://{tmp_path}/bresults"}},
    ]}, base=tmp_path)
    events = Events()
    ctx = zmq.Context()
    with Supervisor(spec, on_event=events.put) as sup:
        assert all(c.pid for c in sup.which_children())
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        pub.connect(fin)
        sub.connect(fout)
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        push.connect(sin)
        pull.connect(sout)
        push.send_multipart(wire.encode("t", {"n": 1}))
        assert wire.recv(pull, timeout=20).data == {"n": 1}
        deadline = time.monotonic() + 20
        got = None
        while got is None and time.monotonic() < deadline:
            pub.send_multipart(wire.encode("m", {"n": 2}))
            if sub.poll(100):
                got = wire.decode(sub.recv_multipart())
        assert got is not None and got.data == {"n": 2}
        for s in (pub, sub, push, pull):
            s.close(0)
        # all three devices are still up: none crashed and none was restarted
        assert all(c.pid and c.restarts == 0 for c in sup.which_children())
    ctx.term()
    exits = [e for e in events.drain() if e.kind == "exit"]
    assert [e.child for e in exits] == ["broker", "streamer", "forwarder"]
    assert all(e.reason == "shutdown" for e in exits)


def _children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def test_supervise_stops_on_sigterm_without_leftovers(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[[children]]\nid = "sh"\ncommand = ["sh", "-c", "sleep 3600 & wait"]\n')
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; from nonsense_hpc.cli.supervise import supervise;"
                             "supervise.main(sys.argv[1:])", str(path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        while "spawn sh" not in line:
            line = proc.stderr.readline()
        child = int(line.split("pid=")[1])
        wait_for(lambda: _children_of(child), what="grandchild")
        grandchild = _children_of(child)[0]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert not alive(child) and not alive(grandchild)


def test_unknown_strategy_in_file_is_a_config_error(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[supervisor]\nstrategy = "all_for_one"\n[[children]]\nid = "a"\n'
                    'command = "true"\n')
    result = CliRunner().invoke(supervise, [str(path)])
    assert result.exit_code == 1 and "strategy must be one of" in result.output
    with pytest.raises(SupervisorError):
        raise SupervisorError("x")
