"""vigil monitor on the real broker: per-minute metrics of a scored topic, drift that moves when the
fleet's tire gauges are recalibrated, and the model-event it produces."""
from __future__ import annotations

import json
import time

import pytest

from connectors.avro_serde import roles, schema_id
from connectors.kafka_io import read_all
from connectors.model_registry import ModelRegistry
from jobs import monitor
from jobs.training.trainer import TrainOptions, library_versions, new_version, train
from tests.jobs.monitoring_data import RECALIBRATION, SCHEMA, STEADY, frame_of, produce_json, scored_records, segment
from udfs.feature_set import FeatureSet

pytestmark = pytest.mark.kafka

NORMAL_MINUTES, SHIFTED_MINUTES = 6, 4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small model trained on 8 minutes of normal readings, version 1 of ``fleet`` in a local registry."""
    work = tmp_path_factory.mktemp("train")
    role = roles(SCHEMA)
    trained = train(frame_of(segment(0, 8)), FeatureSet.from_schema(SCHEMA), role["label"], role["time"],
                    TrainOptions(topic="fleet", epochs=15, members=1, patience=3, quiet=True, min_rows=100), work,
                    entity_col=role["entity"])
    trained.save(work)
    manifest = {"version": new_version(), "created_at": "2026-01-01T00:00:00+00:00", "schema": schema_id(SCHEMA),
                **trained.fields, "training": {"sources": {"test": True}, "entity": role["entity"],
                                               "time": role["time"], "label": role["label"]},
                "libraries": library_versions()}
    store = tmp_path_factory.mktemp("models")
    registry = ModelRegistry(str(store))
    version = registry.publish("fleet", work, manifest)
    folder, manifest = registry.fetch(version)
    return str(store), folder, manifest


def test_the_manifest_keeps_a_training_baseline_per_feature(model):
    _, _, manifest = model
    base = manifest["baseline"]
    assert set(base["features"]) == set(manifest["features"]["names"]) and base["bins"] == 10
    tire = base["features"]["tire_pressure_rl_kpa"]
    assert len(tire["shares"]) == len(tire["edges"]) + 1 and abs(sum(tire["shares"]) - 1) < 1e-9


def test_drift_metrics_move_when_the_tire_gauges_are_recalibrated(model, kafka_bootstrap, new_topic, capsys):
    store, folder, manifest = model
    later = segment(10, NORMAL_MINUTES) + segment(10 + NORMAL_MINUTES, SHIFTED_MINUTES, shift=RECALIBRATION)
    scored, dlq = new_topic("scored"), new_topic("dlq")
    produce_json(kafka_bootstrap, scored, scored_records(frame_of(later), folder, manifest), key="vehicle_id_pseudonym")
    produce_json(kafka_bootstrap, dlq, [{"stage": "impossible_value", "reason": "impossible_value: speed",
                                         "source_timestamp": "2026-01-01T00:12:%02d.000Z" % s, "model_version": None}
                                        for s in range(5)])
    metrics_topic, events_topic = f"{scored}.metrics", f"{scored}.events"
    started = time.monotonic()
    assert monitor.main(["--scored", scored, "--dlq", dlq, "--metrics-topic", metrics_topic, "--events-topic",
                         events_topic, "--drift-features", ",".join(STEADY), "--bounded", "--bootstrap-servers", kafka_bootstrap,
                         "--model-store", store]) == 0
    out = capsys.readouterr().out
    print(out, f"monitor: {time.monotonic() - started:.1f} s")
    metrics = sorted((json.loads(m.value()) for m in read_all(kafka_bootstrap, metrics_topic)),
                     key=lambda m: m["minute_ms"])
    events = [json.loads(m.value()) for m in read_all(kafka_bootstrap, events_topic)]
    assert [m["minute"][11:16] for m in metrics] == [f"00:{10 + i:02d}" for i in range(10)]
    assert all(m["model_version"] == "fleet@1" and m["events"] == 300 for m in metrics)
    normal, shifted = metrics[:NORMAL_MINUTES], metrics[NORMAL_MINUTES:]
    psi_normal = [m["drift"]["max_psi"] for m in normal]
    psi_shifted = [m["drift"]["max_psi"] for m in shifted]
    print("max PSI per minute, normal:", psi_normal, "recalibrated:", psi_shifted)
    assert max(psi_normal) < 0.2 < 1.0 < min(psi_shifted)
    assert all(m["drift"]["max_feature"] == "accel_z_g" for m in shifted)
    tires = [[m["drift"]["psi"]["tire_pressure_rl_kpa"] for m in part] for part in (normal, shifted)]
    print("tire_pressure_rl_kpa PSI per minute, normal:", tires[0], "recalibrated:", tires[1])
    assert max(tires[0]) < min(tires[1])                  # PSI is published for every feature, watched or not
    assert all(m["drift"]["psi"]["accel_x_g"] < 0.2 for m in shifted)        # what was not recalibrated did not move
    assert metrics[2]["dlq"] == {"count": 5, "rate": 5 / 305}
    assert all(m["score"]["p50"] < m["score"]["p99"] for m in metrics)
    assert max(m["score"]["p50"] for m in normal) < min(m["score"]["p50"] for m in shifted)   # scores move too
    # labels arrive in the events (the simulator's failure_label): precision/recall of the minute and rolling
    assert all("labels" in m and m["rolling"]["minutes"] == 10 for m in metrics)
    assert sum(m["labels"]["faults"] for m in normal) >= 10
    assert all(m["rolling"]["false_alarm_rate"] < 0.02 for m in metrics)   # this model keeps its false alarms low
    drift = [e for e in events if e["kind"] == "drift"]
    # raised once the drift held for --persist-minutes (2): at the second recalibrated minute
    assert [(e["status"], e["minute"][11:16]) for e in drift] == [("raised", f"00:{11 + NORMAL_MINUTES:02d}")]
    assert drift[0]["figures"]["max_psi"] > 1 and drift[0]["threshold"] == 0.2
    assert drift[0]["model_version"] == "fleet@1"
    assert not [e for e in events if e["kind"] == "accuracy" and e["metric"] == "false_alarm_rate"]
    assert f"model-event: drift raised for fleet@1 at 2026-01-01T00:{11 + NORMAL_MINUTES:02d}:00Z" in out


def test_a_missing_topic_is_one_clear_line(kafka_bootstrap, capsys):
    assert monitor.main(["--scored", "no.such.topic.scored", "--bounded", "--bootstrap-servers",
                         kafka_bootstrap]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no.such.topic.scored" in err[0]


def test_a_running_monitor_publishes_each_minute_once_event_time_has_passed_it(model, kafka_bootstrap, new_topic):
    """Unbounded, from the topic's end: records arriving later are published minute by minute while it
    runs; Ctrl-C publishes the minute still open and stops."""
    import signal
    import subprocess

    from vigil.settings import PROJECT_ROOT

    store, folder, manifest = model
    scored = new_topic("scored")
    records = scored_records(frame_of(segment(10, 4)), folder, manifest)
    records.sort(key=lambda r: r["event_time"])
    proc = subprocess.Popen([str(PROJECT_ROOT / ".venv/bin/vigil"), "monitor", "--scored", scored, "--from-latest",
                             "--lateness-seconds", "5", "--quiet", "--bootstrap-servers", kafka_bootstrap,
                             "--model-store", store], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(6)                                                      # started, at the end of the empty topic
        for i in range(0, len(records), 300):                              # a minute of event time per second
            produce_json(kafka_bootstrap, scored, records[i:i + 300], key="vehicle_id_pseudonym")
            time.sleep(1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            published = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{scored}.metrics")] \
                if _exists(kafka_bootstrap, f"{scored}.metrics") else []
            if len(published) >= 3:
                break
            time.sleep(1)
        # published while it runs (the last minute waits for event time to pass it, or for 5 s of quiet)
        assert [m["minute"][11:16] for m in sorted(published, key=lambda m: m["minute_ms"])][:3] == \
            ["00:10", "00:11", "00:12"]
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    print(out)
    assert proc.returncode == 0 and "published 4 metrics record(s)" in out and "0 late" in out


def _exists(bootstrap: str, topic: str) -> bool:
    from connectors.kafka_io import list_topics

    return topic in list_topics(bootstrap)
