"""Alert hysteresis as a pure function: (state, reading, facts) in, (state, events) out, no Flink."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from udfs.alert_rules import MAX_READINGS, Hysteresis, Reading, replay

T0 = dt.datetime(2026, 1, 1)


def readings(n: int) -> list[Reading]:
    return [Reading(T0 + dt.timedelta(seconds=i), float(i), 0, i, "tire_leak") for i in range(n)]


def alarm_state(flags: list[bool], k: int, n: int, m: int) -> list[bool]:
    """The textbook recursion: alarm_t = enter_t or (alarm_{t-1} and not left_t), where entering counts
    only anomalies after the last episode ended (one reading cannot open two episodes)."""
    state, out, ended = False, [], -1
    for t in range(len(flags)):
        count = sum(flags[max(0, t - n + 1):t + 1])
        fresh = sum(flags[max(0, t - n + 1, ended + 1):t + 1])
        quiet = not any(flags[max(0, t - m + 1):t + 1])
        was = state
        state = (not state and flags[t] and fresh >= k) or (state and not (quiet and count < k))
        if was and not state:
            ended = t
        out.append(state)
    return out


def test_a_run_of_anomalous_readings_is_one_episode_with_an_open_and_a_closed_event():
    flags = [False] * 5 + [True] * 6 + [False] * 5
    events = replay(Hysteresis(3, 5, 2), flags, readings(len(flags)), entity="p-1")
    assert [e["status"] for e in events] == ["open", "closed"]
    opened, closed = events
    assert opened["episode_id"] == closed["episode_id"] == "p-1:0:5"     # its first anomalous reading
    assert opened["source_offset"] == 7 and opened["anomalies"] == 3      # the third of five opens it
    assert opened["first_event_time"] == T0 + dt.timedelta(seconds=5) and opened["ended_at"] is None
    # two normal readings, and fewer than 3 anomalous among the last 5: the 3rd normal one closes it
    assert closed["source_offset"] == 13 and closed["ended_at"] == T0 + dt.timedelta(seconds=13)
    assert closed["anomalies"] == 6 and closed["max_score"] == 10.0
    assert closed["last_event_time"] == T0 + dt.timedelta(seconds=10)
    assert [r["source_offset"] for r in closed["readings"]] == list(range(5, 11))


def test_scattered_anomalies_below_the_count_raise_nothing():
    flags = [i % 3 == 0 for i in range(30)]   # 2 of every 5 at most
    assert replay(Hysteresis(3, 5, 2), flags, readings(30)) == []


def test_one_one_one_makes_each_run_of_anomalies_an_episode():
    flags = [True, True, False, True, False, False, True]
    events = replay(Hysteresis(1, 1, 1), flags, readings(len(flags)))
    assert [(e["status"], e["source_offset"]) for e in events] == [
        ("open", 0), ("closed", 2), ("open", 3), ("closed", 4), ("open", 6)]


def test_a_long_episode_keeps_its_first_readings_only():
    events = replay(Hysteresis(1, 1, 1), [True] * 40 + [False], readings(41))
    assert events[-1]["anomalies"] == 40 and len(events[-1]["readings"]) == MAX_READINGS


@pytest.mark.parametrize("k,n,m", [(1, 1, 1), (3, 5, 2), (2, 4, 6), (5, 10, 1), (4, 4, 4)])
def test_the_episodes_follow_the_alarm_state_and_relevant_readings_suffice(k, n, m):
    rng = np.random.default_rng(k * 100 + n * 10 + m)
    rule = Hysteresis(k, n, m)
    for _ in range(20):
        flags = list(rng.random(200) < rng.uniform(0.05, 0.6))
        state = alarm_state(flags, k, n, m)
        starts = [t for t in range(len(flags)) if state[t] and (t == 0 or not state[t - 1])]
        ends = [t for t in range(1, len(flags)) if state[t - 1] and not state[t]]
        events = replay(rule, flags, readings(len(flags)))
        assert [e["source_offset"] for e in events if e["status"] == "open"] == starts
        assert [e["source_offset"] for e in events if e["status"] == "closed"] == ends
        # the Table job feeds only the readings at which the state can change: the same events
        assert replay(rule, flags, readings(len(flags)), only_relevant=True) == events


@pytest.mark.parametrize("kwargs,message", [
    ({"enter": 0}, "enter must be a whole number"), ({"clear": 1.5}, "clear must be"),
    ({"enter": 4, "within": 3}, "--alarm-enter must be <= --alarm-within")])
def test_bad_rules_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Hysteresis(**kwargs)
