import dataclasses

import pytest

from nonsense_hpc.errors import ConfigError
from nonsense_hpc.supervise import ChildSpec, SupervisorSpec
from nonsense_hpc.supervise.intensity import RestartIntensity


def test_defaults_follow_otp():
    spec = ChildSpec(id="w", start=["sleep", "1"])
    assert (spec.restart, spec.shutdown, spec.type, spec.new_session) == \
        ("permanent", 5.0, "worker", False)
    assert spec.start == ("sleep", "1")
    sup = SupervisorSpec(children=(spec,))
    assert (sup.strategy, sup.intensity, sup.period) == ("one_for_one", 1, 5.0)
    nested = ChildSpec(id="sub", start=sup)
    assert (nested.type, nested.shutdown, nested.new_session) == \
        ("supervisor", "infinity", True)


def test_spec_is_frozen():
    spec = ChildSpec(id="w", start=["true"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.restart = "temporary"  # type: ignore[misc]
    assert spec.replace(restart="temporary").restart == "temporary"


@pytest.mark.parametrize("kwargs, message", [
    ({"restart": "sometimes"}, "restart must be one of permanent, transient, temporary"),
    ({"shutdown": "later"}, "shutdown must be one of brutal_kill, infinity"),
    ({"shutdown": -1}, "shutdown must be >= 0"),
    ({"type": "manager"}, "type must be one of worker, supervisor"),
    ({"start": "sleep 1"}, "not a string"),
    ({"start": []}, "non-empty list"),
    ({"start": 42}, "argv list, a callable or a SupervisorSpec"),
    ({"id": "a b"}, "invalid characters"),
    ({"heartbeat": 0}, "heartbeat must be > 0"),
    ({"heartbeat": 1.0, "heartbeat_timeout": 0.5}, "heartbeat_timeout must be >= heartbeat"),
    ({"heartbeat_timeout": 3.0}, "heartbeat_timeout without heartbeat"),
    ({"env": {"A": 1}}, "env must map strings to strings"),
])
def test_bad_child_spec_names_the_problem(kwargs, message):
    base = {"id": "w", "start": ["sleep", "1"]}
    with pytest.raises(ConfigError, match=message):
        ChildSpec(**{**base, **kwargs})


def test_heartbeat_timeout_defaults_to_three_intervals():
    assert ChildSpec(id="w", start=["x"], heartbeat=0.5).heartbeat_timeout == 1.5


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "all_for_one"}, "strategy must be one of"),
    ({"intensity": -1}, "intensity must be an integer >= 0"),
    ({"period": 0}, "period must be > 0"),
    ({"children": (ChildSpec(id="a", start=["x"]), ChildSpec(id="a", start=["y"]))},
     "duplicate child id 'a'"),
    ({"strategy": "simple_one_for_one", "children": ()}, "exactly one child spec"),
])
def test_bad_supervisor_spec(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SupervisorSpec(**kwargs)


def test_intensity_window():
    r = RestartIntensity(intensity=2, period=5.0)
    assert [r.add(t) for t in (0.0, 1.0)] == [True, True]
    assert r.add(2.0) is False          # third within 5 s
    r = RestartIntensity(intensity=2, period=5.0)
    assert [r.add(t) for t in (0.0, 1.0, 5.5, 6.5)] == [True, True, True, True]
    assert RestartIntensity(0, 5.0).add(0.0) is False
