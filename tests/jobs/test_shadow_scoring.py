"""Shadow scoring (A/B): the Table job scores every event with a second model too, and `vigil shadow` compares them.

The end-to-end test runs the real Table job on the mini-cluster against the real broker with the
champion scoring and the challenger in shadow; the others check the comparison and the refusals
without a job.
"""
from __future__ import annotations

import pandas as pd
import pytest

from connectors import schema_store
from connectors.avro_serde import feature_columns, load_schema, schema_id
from connectors.errors import SchemaError
from connectors.kafka_io import AvroProducer, create_topic
from connectors.model_registry import ModelRegistry
from connectors.records import outputs, shadow_contract
from jobs import score_events, shadow, simulation
from jobs.core import scoring
from tests.contract import read_checked
from tests.trained_model import MODEL, publish, simulated_frame
from udfs.anomaly_score import AnomalyScore
from vigil.settings import VigilSettings


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory) -> tuple[str, dict, dict]:
    """Model ``telemetry``: version 1 (champion) and a less trained version 2 (challenger)."""
    store = tmp_path_factory.mktemp("shadow-models")
    registry = ModelRegistry(str(store))
    point = {"context": "point", "members": 1}
    champion = publish(registry, tmp_path_factory.mktemp("t1"), MODEL, simulated_frame(seed=7), seed=7, epochs=12,
                       **point)
    challenger = publish(registry, tmp_path_factory.mktemp("t2"), MODEL, simulated_frame(seed=8), seed=8, epochs=3,
                         **point)
    assert registry.state(MODEL).aliases == {"champion": 1, "challenger": 2}
    return str(store), champion, challenger


@pytest.mark.kafka
@pytest.mark.flink
def test_every_event_gets_both_scores_and_alerts_follow_the_scoring_model(two_versions, kafka_bootstrap,
                                                                          new_topic, tmp_path, capsys):
    store, champion, challenger = two_versions
    topic = new_topic("shadow", partitions=2)
    schema = load_schema()
    schema_store.register(kafka_bootstrap, topic, schema)
    records = list(simulation.generate(simulation.FleetSettings(vehicles=6, events=600, seed=5, failure_rate=0.05)))
    with AvroProducer(kafka_bootstrap, topic, schema) as producer:
        for r in records:
            producer.send(r, key=r["vehicle_id"])
    assert score_events.main([
        "--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", store,
        "--model", f"{MODEL}@champion", "--shadow", f"{MODEL}@challenger", "--tier", "none", "--bounded",
        "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"]) == 0
    capsys.readouterr()

    out = outputs(schema)
    scored = read_checked(kafka_bootstrap, f"{topic}.scored", out.scored)
    shadowed = read_checked(kafka_bootstrap, f"{topic}.shadow", shadow_contract(schema))
    assert len(scored) == len(shadowed) == len(records)
    by_offset = {(r["source_partition"], r["source_offset"]): r for r in scored}
    assert {(r["source_partition"], r["source_offset"]) for r in shadowed} == set(by_offset)
    assert {(r["model_version"], r["shadow_model_version"]) for r in shadowed} == {
        (champion["version"], challenger["version"])}
    for r in shadowed:  # the scoring model's figures are the scored topic's, exactly
        s = by_offset[(r["source_partition"], r["source_offset"])]
        assert (r["score"], r["is_anomaly"]) == (s["score"], s["is_anomaly"])
    # the shadow's scores are what the challenger computes on the same readings
    fn = AnomalyScore(store, f"{MODEL}@challenger")
    fn.open(None)
    frame = pd.DataFrame(records)
    expected = fn.eval(*[frame[c] for c in challenger["features"]["names"]])["score"].to_numpy()
    got = sorted(r["shadow_score"] for r in shadowed)
    assert got == pytest.approx(sorted(expected), rel=1e-5)
    assert all(r["shadow_is_anomaly"] == (r["shadow_score"] > challenger["threshold"]) for r in shadowed)
    assert sum(r["score"] != r["shadow_score"] for r in shadowed) > len(shadowed) // 2  # two different models
    # alerts follow the scoring model only
    alerts = read_checked(kafka_bootstrap, f"{topic}.alerts", out.alerts)
    assert alerts and {a["model_version"] for a in alerts} == {champion["version"]}

    png = tmp_path / "shadow.png"
    assert shadow.main(["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    agree = sum(r["is_anomaly"] == r["shadow_is_anomaly"] for r in shadowed) / len(shadowed)
    assert f"{champion['version']} (scoring) vs {challenger['version']} (shadow), {len(records)} events" in printed
    assert f"flags agree on      {agree:.3f} of {len(records)}" in printed
    faults = sum(r["failure_label"] is not None for r in records)
    assert f"against labels      {faults} faults, {len(records) - faults} normal readings" in printed
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_comparison_counts_agreement_alerts_and_accuracy_per_pair_of_versions():
    frame = pd.DataFrame({
        "model_version": ["m@1"] * 6, "shadow_model_version": ["m@2"] * 6,
        "score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "shadow_score": [1.0, 3.0, 2.0, 4.0, 6.0, 5.0],
        "is_anomaly": [False, False, True, True, False, True],
        "shadow_is_anomaly": [False, True, True, False, False, True],
        "label": [None, None, "fault", "fault", "none", None]})
    (row,) = shadow.compare(frame, "label")
    assert (row["events"], row["agreement"], row["only_model"], row["only_shadow"]) == (6, 4 / 6, 1, 1)
    assert (row["alert_rate"], row["shadow_alert_rate"]) == (0.5, 0.5)
    assert row["model_accuracy"]["recall"] == 1.0 and row["model_accuracy"]["precision"] == 2 / 3
    assert row["shadow_accuracy"]["recall"] == 0.5 and row["shadow_accuracy"]["false_alarm_rate"] == 0.5


def test_a_shadow_model_that_reads_other_features_is_refused_before_the_job_starts():
    schema = load_schema()
    features = feature_columns(schema)
    manifest = {"version": "m@1", "number": 1, "threshold": 1.0, "schema": schema_id(schema),
                "features": {"names": features}}
    other = {**manifest, "version": "m@2", "number": 2, "features": {"names": list(reversed(features))}}
    settings = VigilSettings.load({"kafka.bootstrap_servers": "127.0.0.1:1", "model.store": "/m", "tier": "none"})
    options = score_events.TableScoreOptions(input_topic="t", shadow="m@2")
    with pytest.raises(SchemaError, match=r"--shadow m@2 cannot score beside m@1: its features are in another order"):
        scoring.assemble(settings, options, schema, manifest, None, job="j", shadow_manifest=other)
    plan = scoring.assemble(settings, options, schema, manifest, None, job="j", shadow_manifest={
        **manifest, "version": "m@2", "number": 2})
    assert plan.topics["shadow"] == "t.shadow" and plan.shadow_ref == "m@2"
    # without --shadow nothing changes: three outputs, no shadow model
    plain = scoring.assemble(settings, score_events.TableScoreOptions(input_topic="t"), schema, manifest, None, job="j")
    assert "shadow" not in plain.topics and plain.shadow_ref is None


@pytest.mark.kafka
def test_a_topic_without_shadow_records_is_one_clear_line(kafka_bootstrap, new_topic, capsys):
    topic = new_topic("noshadow", partitions=1)
    schema_store.register(kafka_bootstrap, topic, load_schema())
    create_topic(kafka_bootstrap, f"{topic}.shadow", 1)
    assert shadow.main(["--input", topic, "--bootstrap-servers", kafka_bootstrap]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {topic}.shadow holds no records: score with `vigil score table --input {topic} "
                          f"--shadow <model@alias>` first") and err.count("\n") == 1
