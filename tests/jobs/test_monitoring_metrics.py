"""The monitor's pure part: PSI against a training baseline, per-minute records, threshold crossings,
and the retraining loop's promotion policy (no Kafka)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jobs.monitoring.metrics import MINUTE_MS, ModelInfo, Monitor, Thresholds, confusion, epoch_ms, is_fault
from jobs.monitoring.policy import decide, figures
from udfs.drift import baseline, psi

T0 = epoch_ms("2026-01-01T00:00:00")


def test_labels_name_faults_unless_null_empty_none_or_normal():
    assert [is_fault(v) for v in (None, "", "none", "Normal", " NONE ", "tire_leak", "sensor_drift")] == \
        [False, False, False, False, False, True, True]
    c = confusion([True, False, True, False], ["tire_leak", "tire_leak", None, "normal"]).figures()
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (1, 1, 1, 1)
    assert c["precision"] == c["recall"] == c["false_alarm_rate"] == 0.5
    assert confusion([False], [None]).figures()["recall"] is None      # no faults: no recall, not 0


def test_baseline_bins_hold_a_tenth_each_and_psi_is_small_for_the_same_distribution():
    rng = np.random.default_rng(1)
    train = rng.normal(90, 2, size=(5000, 1))
    base = baseline(train, ["coolant"])
    fb = base["features"]["coolant"]
    assert len(fb["edges"]) == 11 and fb["shares"][0] == 0 and fb["shares"][-1] == 1 / 5000   # below min, at max
    assert np.allclose(fb["shares"][1:-1], 0.1, atol=0.002)
    same = psi(fb, rng.normal(90, 2, 2000))
    shifted = psi(fb, rng.normal(93, 2, 2000))     # a 1.5 sd recalibration
    assert same < 0.02 and shifted > 1.0
    assert psi(fb, []) is None and psi(fb, [np.nan, None]) is None
    constant = baseline(np.full((100, 1), 1.3), ["accel"])["features"]["accel"]   # one value: still two sides
    assert psi(constant, [1.3] * 50) == pytest.approx(0) and psi(constant, [1.0] * 50) > 5


def test_a_feature_with_few_values_gets_fewer_bins_and_values_outside_the_training_range_count():
    base = baseline(np.array([[0.0]] * 50 + [[1.0]] * 50), ["gear"])["features"]["gear"]
    assert base["edges"] == [0.0, 0.5, 1.0] and base["shares"] == [0.0, 0.5, 0.0, 0.5]
    assert psi(base, [0.0] * 50 + [1.0] * 50) == pytest.approx(0.0)
    assert psi(base, [2.0] * 100) > 1 and psi(base, [-1.0] * 100) > 5


def info(version: str) -> ModelInfo:
    if version == "old@1":
        return ModelInfo(version, None, "label", "t", note="its manifest has no baseline")
    rng = np.random.default_rng(0)
    return ModelInfo(version, baseline(rng.normal(0, 1, (4000, 2)), ["a", "b"]), "label", "t")


RNG = np.random.default_rng(9)


def rec(ms: int, a: float, *, version: str = "m@1", flag: bool = False, label: str | None = None,
        score: float | None = 0.1, b: float | None = None) -> dict:
    return {"t": ms, "a": a, "b": RNG.normal() if b is None else b, "score": score, "is_anomaly": flag, "model_version": version, "label": label}


def test_minutes_are_published_once_complete_with_drift_labels_and_dead_letters():
    rng = np.random.default_rng(3)
    m = Monitor(info, Thresholds(min_events=100, min_normal=50, min_faults=5, max_false_alarm_rate=0.05,
                                 persist_minutes=1),
                lateness_ms=10_000)
    for i in range(300):                                   # minute 0: as in training
        m.add_scored(rec(T0 + i * 200, rng.normal(), flag=i % 30 == 0, label="tire_leak" if i % 30 == 0 else None))
    m.add_dead_letter({"source_timestamp": "2026-01-01T00:00:30.000Z"})
    assert m.close() == ([], [])                           # minute 0 is still open (lateness)
    for i in range(300):                                   # minute 1: sensor a recalibrated by +3
        m.add_scored(rec(T0 + MINUTE_MS + i * 200, 3 + rng.normal(), flag=i % 5 == 0, score=None if i == 0 else 1.0))
    metrics, events = m.close()
    assert [r["minute"] for r in metrics] == ["2026-01-01T00:00:00Z"]
    first = metrics[0]
    assert (first["events"], first["anomalies"], first["dlq"]["count"]) == (300, 10, 1)
    assert first["dlq"]["rate"] == pytest.approx(1 / 301)
    assert first["drift"]["max_psi"] < 0.1 and first["labels"]["recall"] == 1.0 and first["labels"]["fp"] == 0
    assert events == []
    m.add_scored(rec(T0, 0.0))                             # minute 0 is closed: late
    assert m.late == 1
    metrics, events = m.close(final=True)
    second = metrics[0]
    assert second["unscored"] == 1 and second["anomaly_rate"] == pytest.approx(60 / 300)
    assert second["drift"]["max_feature"] == "a" and second["drift"]["max_psi"] > 2
    assert second["drift"]["psi"]["b"] < 0.1                # b did not move
    assert second["rolling"]["fp"] == 60 and second["rolling"]["minutes"] == 10
    kinds = {(e["kind"], e["metric"], e["status"]) for e in events}
    assert kinds == {("drift", "max_psi", "raised"), ("accuracy", "false_alarm_rate", "raised")}
    drift_event = next(e for e in events if e["kind"] == "drift")
    assert drift_event["threshold"] == 0.2 and drift_event["figures"]["feature"] == "a"


def test_a_crossing_is_reported_once_it_persists_and_cleared_when_it_ends_and_old_manifests_skip_drift():
    rng = np.random.default_rng(4)
    m = Monitor(info, Thresholds(min_events=50, persist_minutes=2), lateness_ms=0)
    events = []
    for minute, shift in enumerate([0, 3, 0, 3, 3, 3, 0, 0]):     # minute 1 alone is not a drift: no event
        for i in range(100):
            m.add_scored(rec(T0 + minute * MINUTE_MS + i * 500, shift + rng.normal()))
        events += m.close(final=True)[1]
    assert [(e["status"], e["minute"][-6:-1]) for e in events] == [("raised", "04:00"), ("cleared", "07:00")]
    m.add_scored(rec(T0 + 10 * MINUTE_MS, 5.0, version="old@1"))
    metrics, events = m.close(final=True)
    assert metrics[0]["drift"] == {"baseline": False, "note": "its manifest has no baseline"} and events == []
    assert m.notes == ["old@1: no baseline (its manifest has no baseline); drift is not computed for it"]


def test_policy_promotes_a_challenger_with_fewer_false_alarms_and_refuses_a_worse_one():
    labels = ["f"] * 30 + [None] * 970
    flags_good = np.r_[np.ones(27, bool), np.zeros(3, bool), np.zeros(970, bool)]
    flags_noisy = np.r_[np.ones(30, bool), np.ones(300, bool), np.zeros(670, bool)]
    scores = np.zeros(1000)
    good = figures(scores, flags_good, labels, {"max_psi": 0.03, "max_feature": "a"})
    noisy = figures(scores, flags_noisy, labels, {"max_psi": 0.9, "max_feature": "a"})
    assert good["false_alarm_rate"] == 0 and good["recall"] == 0.9
    assert noisy["false_alarm_rate"] == pytest.approx(300 / 970) and noisy["precision"] == pytest.approx(30 / 330)
    promoted = decide(noisy, good)
    assert promoted.promote, promoted.checks
    refused = decide(good, noisy)
    assert not refused.promote
    assert {c["check"] for c in refused.checks if not c["ok"]} == {"drift", "false_alarms", "precision"}
    assert not decide(good, good).promote                                 # nothing better: no churn
    assert decide(None, good).promote                                     # no champion
    unlabelled = figures(scores, flags_good, None, {"max_psi": 0.01, "max_feature": "a"})
    assert unlabelled["faults"] == 0 and unlabelled["false_alarm_rate"] == pytest.approx(27 / 1000)
    drifted = {**unlabelled, "max_psi": 0.5}
    assert decide(drifted, unlabelled).promote                             # same false alarms, drift resolved


def test_a_partition_read_behind_the_others_holds_the_minutes_back_unless_it_is_idle():
    m = Monitor(info, Thresholds(min_events=1), lateness_ms=0)
    m.expect(1, seen=100.0)
    m.add_scored(rec(T0 + 5 * MINUTE_MS, 0.0), source=0, seen=100.0)      # partition 0 is 5 minutes ahead
    assert m.close() == ([], [])                                           # partition 1 has sent nothing yet
    m.add_scored(rec(T0 + 10, 0.0), source=1, seen=100.0)                 # partition 1 is at minute 0
    assert m.close() == ([], [])                                           # minute 0 waits for partition 1
    m.add_scored(rec(T0 + 20, 0.0), source=1, seen=101.0)
    assert m.late == 0
    metrics, _ = m.close(idle=100.5)                                       # partition 0 idle since 100: left out
    assert metrics == []                                                   # partition 1 is still in minute 0
    m.add_scored(rec(T0 + MINUTE_MS + 10, 0.0), source=1, seen=102.0)
    metrics, _ = m.close(idle=101.5)
    assert [(r["minute"][14:16], r["events"]) for r in metrics] == [("00", 2)]


def by_entity(version: str) -> ModelInfo:
    """``info`` with an entity column ``e`` in the scored records."""
    return dataclasses.replace(info(version), entity="e")


def test_labels_on_a_topic_match_readings_by_entity_and_exact_time_before_or_after_them():
    m = Monitor(by_entity, Thresholds(min_events=1), lateness_ms=0, label_topic=True)
    m.add_label({"entity": "v1", "time": "2026-01-01T00:00:10Z", "label": "tire_leak"})    # before its reading
    m.add_scored({**rec(T0 + 10_000, 0.0, flag=True), "e": "v1"})                          # so a fault: tp
    m.add_scored({**rec(T0 + 20_000, 0.0, flag=True, label=None), "e": "v2"})             # in-event: normal
    unlabelled = {**rec(T0 + 30_000, 0.0), "e": "v3"}
    del unlabelled["label"]
    m.add_scored(unlabelled)                                                               # no label in the event
    m.add_scored({**rec(T0 + 40_000, 0.0, label="tire_leak"), "e": "v4"})                  # in-event only: fn
    m.add_scored(rec(T0 + 50_000, 0.0, flag=True), key=b"v5")           # no entity column: its Kafka key
    m.add_label({"entity": "v3", "time": T0 + 30_000, "label": None})                      # after, epoch ms: tn
    m.add_label({"entity": "v2", "time": "2026-01-01T00:00:20.000", "label": "sensor_drift"})   # wins: tp, not fp
    m.add_label({"entity": "v5", "time": T0 + 50_000, "label": "normal"})                  # fp, by the key
    m.add_label({"entity": "v9", "time": T0 + 10_000, "label": "tire_leak"})               # unknown entity
    m.add_label({"entity": "v1", "time": T0 + 10_001, "label": "tire_leak"})               # not its exact time
    for bad in ("tire_leak", {"entity": "v1", "time": T0}, {"entity": "v1", "time": "yesterday", "label": None},
                {"entity": None, "time": T0, "label": None}, {"entity": "v1", "time": T0, "label": 3}):
        m.add_label(bad)                                                                   # counted, never raised
    assert m.label_problem == "not a JSON object but str"
    m.add_scored({**rec(T0 + MINUTE_MS + 5, 0.0), "e": "v1"})                              # event time passes minute 0
    metrics, _ = m.close()
    assert [r["minute"][14:16] for r in metrics] == ["00"]
    first = metrics[0]
    assert {k: first["labels"][k] for k in ("tp", "fp", "fn", "tn")} == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert first["label_topic"] == {"matched": 4, "unmatched": 2, "late": 0}
    m.add_label({"entity": "v3", "time": T0 + 30_000, "label": "tire_leak"})               # minute 0 published: late
    m.add_label({"entity": "v1", "time": T0 + MINUTE_MS + 5, "label": "tire_leak"})        # minute 1 still open
    m.add_label({"entity": "v1", "time": T0 + 5 * MINUTE_MS, "label": None})               # its reading never comes
    metrics, _ = m.close(final=True)
    second = metrics[0]
    assert second["labels"]["fn"] == 1 and second["label_topic"] == {"matched": 1, "unmatched": 0, "late": 1}
    assert {k: second["rolling"][k] for k in ("tp", "fp", "fn", "tn")} == {"tp": 2, "fp": 1, "fn": 2, "tn": 1}
    assert m.label_summary() == {"matched": 5, "unmatched": 3, "late": 1, "malformed": 5}
    assert (m.late, m.malformed) == (0, 0)                 # the scored records' own counts are apart


def test_labels_from_a_topic_give_the_same_figures_and_events_as_the_same_labels_in_the_events():
    rng = np.random.default_rng(5)
    readings = []
    for minute in range(6):
        for i in range(120):
            fault = rng.random() < 0.1
            flagged = bool(rng.random() < (0.8 if fault else 0.05 + 0.1 * (minute >= 3)))
            readings.append({**rec(T0 + minute * MINUTE_MS + i * 500, rng.normal(), flag=flagged,
                                   label="tire_leak" if fault else None), "e": f"v{i % 40}"})
    thresholds = Thresholds(min_events=50, min_normal=50, min_faults=5, persist_minutes=1)
    in_event = Monitor(by_entity, thresholds, lateness_ms=10_000)
    on_topic = Monitor(by_entity, thresholds, lateness_ms=10_000, label_topic=True)
    out: dict[str, tuple[list, list]] = {"event": ([], []), "topic": ([], [])}
    for n, r in enumerate(readings):
        label = {"entity": r["e"], "time": r["t"], "label": r["label"]}
        if n % 2:
            on_topic.add_label(label)                         # every other label before its reading
        on_topic.add_scored({k: v for k, v in r.items() if k != "label"})
        in_event.add_scored(r)
        if not n % 2:
            on_topic.add_label(label)                         # the others after it
        for name, m in (("event", in_event), ("topic", on_topic)):
            metrics, events = m.close()
            out[name][0].extend(metrics)
            out[name][1].extend(events)
    for name, m in (("event", in_event), ("topic", on_topic)):
        metrics, events = m.close(final=True)
        out[name][0].extend(metrics)
        out[name][1].extend(events)
    (event_metrics, event_events), (topic_metrics, topic_events) = out["event"], out["topic"]
    assert len(topic_metrics) == 6 and sum(r["labels"]["faults"] for r in topic_metrics) > 30
    assert [(r["labels"], r["rolling"]) for r in topic_metrics] == [(r["labels"], r["rolling"]) for r in event_metrics]
    assert topic_events == event_events and {e["metric"] for e in topic_events} == {"false_alarm_rate"}
    assert on_topic.label_summary() == {"matched": 720, "unmatched": 0, "late": 0, "malformed": 0}
