"""Chaos: hundreds of SIGKILLs per strategy; exact restart sets, no leftovers, exact escalation.

The long run behind docs/reliability.md is `nonsense-hpc bench supervisor-chaos`.
"""

import pytest

from nonsense_hpc.supervise.chaos import expected_restarts, run_chaos, run_escalation

STRATEGIES = ["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
KILLS = 200


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_chaos_kills(strategy):
    report = run_chaos(strategy, kills=KILLS, children=4, seed=1234)
    assert report.errors == []
    assert report.restarts == KILLS
    assert (report.wrong_sets, report.missing_children) == (0, 0)
    assert (report.zombies, report.orphans) == (0, 0)
    assert report.ok


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_escalation_exactly_at_intensity(strategy):
    result = run_escalation(strategy, intensity=3)
    assert result["restarts_before_give_up"] == 3
    assert result["gave_up_on_kill"] == 4
    assert result["failure_is_supervisor_error"] and result["stopped"]
    assert (result["children_left"], result["zombies"], result["orphans"]) == (0, 0, 0)


def test_expected_restarts_table():
    ids = ["a", "b", "c", "d"]
    assert expected_restarts("one_for_one", ids, "b") == ["b"]
    assert expected_restarts("simple_one_for_one", ids, "b") == ["b"]
    assert expected_restarts("one_for_all", ids, "b") == ids
    assert expected_restarts("rest_for_one", ids, "b") == ["b", "c", "d"]
