"""The K-in-window alert rule as a pure function: state in, (state, alert) out, no Flink."""
from __future__ import annotations

import datetime as dt

import pytest

from udfs.alert_rules import KInWindow, Reading

T0 = dt.datetime(2026, 1, 1)


def reading(seconds: float, score: float = 1.0, offset: int = 0) -> Reading:
    return Reading(T0 + dt.timedelta(seconds=seconds), score, 0, offset, "coolant_overheat")


def run(rule: KInWindow, times: list[float]) -> list[dict]:
    state, alerts = (), []
    for i, t in enumerate(times):
        state, alert = rule.step(state, reading(t, score=float(i), offset=i))
        if alert:
            alerts.append(alert)
    return alerts


def test_k_anomalies_within_the_window_make_one_alert():
    [alert] = run(KInWindow(3, 60), [0, 5, 10])
    assert alert["anomalies"] == 3 and alert["window_seconds"] == 60
    assert [r["source_offset"] for r in alert["readings"]] == [0, 1, 2]
    assert alert["first_event_time"] == T0 and alert["last_event_time"] == T0 + dt.timedelta(seconds=10)
    assert alert["max_score"] == 2.0 and alert["source_offset"] == 2


def test_anomalies_spread_wider_than_the_window_never_alert():
    assert run(KInWindow(3, 60), [0, 100, 200, 300]) == []


def test_the_state_empties_when_an_alert_fires():
    assert len(run(KInWindow(2, 60), [0, 1, 2, 3])) == 2   # (0,1) then (2,3), not (1,2)
    state, alert = KInWindow(2, 60).step((reading(0),), reading(1))
    assert alert is not None and state == ()


def test_old_readings_leave_the_window():
    state, alert = KInWindow(3, 10).step((reading(0), reading(5)), reading(12))
    assert alert is None and [r.millis for r in state] == [5_000 + reading(0).millis, 12_000 + reading(0).millis]


@pytest.mark.parametrize("count, window", [(0, 60), (True, 60), (3, 0), (3, float("inf"))])
def test_bad_rule_settings_name_the_value(count, window):
    with pytest.raises(ValueError, match="alert"):
        KInWindow(count, window)
