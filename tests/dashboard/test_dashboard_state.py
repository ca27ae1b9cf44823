"""The dashboard's fold of wire messages: series, steps/s, ranks and events."""

import math

from nonsense_hpc import wire
from nonsense_hpc.dashboard import DashboardState, group_of


def _msg(topic, data, kind="metric", **kw):
    return wire.decode(wire.encode(topic, data, kind=kind, **kw))


def test_series_are_grouped_by_name():
    st = DashboardState()
    st.add(_msg("metrics.train", {"loss": 0.5, "accuracy": 0.8, "lr": 0.1, "ok": True},
                rank=0, step=1))
    st.add(_msg("metrics.val", {"loss": float("nan")}, rank=1, step=1))
    snap = st.snapshot()
    assert {k: v["group"] for k, v in snap["series"].items()} == {
        "train/loss": "loss", "train/accuracy": "accuracy", "train/lr": "other",
        "val/loss@r1": "loss"}
    assert snap["series"]["val/loss@r1"]["points"][0][1] is None  # NaN drawn as a gap
    assert group_of("samples_per_s") == "speed"


def test_steps_per_second_from_step_progress():
    st = DashboardState()
    for step in range(11):
        st.add(_msg("metrics.train", {"loss": 1.0}, step=step, rank=0,
                    timestamp=1000.0 + step * 0.5))
    assert math.isclose(st.steps_per_s(), 2.0)
    assert st.snapshot()["step"] == 10
    # an old step again (a restarted rank replaying) does not count as progress
    st.add(_msg("metrics.train", {"loss": 1.0}, step=3, rank=0, timestamp=1006.0))
    assert math.isclose(st.steps_per_s(), 2.0)


def test_heartbeats_and_signs_of_life():
    st = DashboardState()
    st.add(_msg("heartbeat.rank", {"host": "n1", "pid": 7, "rss": 1 << 20, "interval": 1.0},
                kind="heartbeat", rank=2))
    st.add(_msg("metrics.train", {"loss": 1.0}, rank=3, step=1))
    ranks = {r["key"]: r for r in st.snapshot()["ranks"]}
    assert ranks["2"]["rss"] == 1 << 20 and ranks["2"]["beats"] == 1
    assert ranks["2"]["memory"][0][1] == 1 << 20
    assert ranks["3"]["beats"] == 0 and ranks["3"]["age"] >= 0


def test_events_carry_levels():
    st = DashboardState()
    st.add(_msg("supervise.root.exit", {"kind": "exit", "supervisor": "root", "child": "w",
                                        "pid": 5, "signal": "SIGKILL", "reason": "crash"},
                kind="event"))
    st.add(_msg("supervise.root.restart", {"kind": "restart", "supervisor": "root",
                                           "restarted": ["w"]}, kind="event"))
    st.add(_msg("events.checkpoint", {"event": "checkpoint", "path": "/c/1"}, kind="event"))
    ev = st.snapshot()["events"]
    assert [e["level"] for e in ev] == ["error", "warn", "info"]
    assert ev[0]["text"] == "[root] exit w pid=5 signal=SIGKILL (crash)"
    assert ev[2]["text"] == "checkpoint path=/c/1"


def test_counters_lost_and_malformed():
    st = DashboardState()
    enc = wire.Encoder(rank=0)
    frames = [enc.encode("metrics.x", {"x": i}) for i in range(5)]
    st.add(wire.decode(frames[1]))  # joined late: not a loss
    st.add(wire.decode(frames[4]))  # 2 and 3 went missing
    st.add_malformed()
    snap = st.snapshot()
    assert (snap["messages"], snap["lost"], snap["malformed"]) == (2, 2, 1)


def test_wait_change_times_out_and_wakes():
    st = DashboardState()
    v = st.version
    assert st.wait_change(v, timeout=0.05) == v
    st.add(_msg("metrics.x", {"x": 1}))
    assert st.wait_change(v, timeout=1.0) == v + 1
