"""vigil monitor on the real broker: per-minute metrics of a scored topic, drift that moves when the
fleet's tire gauges are recalibrated, and the model-event it produces."""
from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from connectors.avro_serde import roles, schema_id
from connectors.kafka_io import client_config, read_all
from connectors.model_registry import ModelRegistry
from jobs import monitor
from jobs.monitoring.metrics import epoch_ms
from jobs.training.trainer import TrainOptions, library_versions, new_version, train
from tests.jobs.monitoring_data import RECALIBRATION, SCHEMA, STEADY, frame_of, produce_json, scored_records, segment
from udfs.feature_set import FeatureSet

pytestmark = pytest.mark.kafka

NORMAL_MINUTES, SHIFTED_MINUTES = 6, 4
FILLER = 30_000   # labels of no reading, ahead of the last labels of the readings on the label topic


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


def test_labels_on_a_label_topic_give_the_rolling_figures_of_the_same_labels_in_the_events(
        model, kafka_bootstrap, new_topic, capsys):
    """The same scored records twice: with their labels in them, and without, their labels on a label
    topic (some as ISO times, some as epoch ms; some written before the scored records, some after):
    --bounded reads the label topic to its end and the figures are the same."""
    store, folder, manifest = model
    role = roles(SCHEMA)
    entity, label = f"{role['entity']}_pseudonym", role["label"]
    records = scored_records(frame_of(segment(10, 4)), folder, manifest)
    labels = [{"entity": r[entity], "time": r["event_time"] if i % 2 else epoch_ms(r["event_time"]), "label": r[label]}
              for i, r in enumerate(records)]
    with_labels, without, label_topic = new_topic("labelled"), new_topic("unlabelled"), new_topic("labels")
    produce_json(kafka_bootstrap, with_labels, records, key=entity)
    produce_json(kafka_bootstrap, label_topic, labels[::2], key="entity")                    # before the records
    produce_json(kafka_bootstrap, without, [{k: v for k, v in r.items() if k != label} for r in records], key=entity)
    produce_json(kafka_bootstrap, label_topic, labels[1::2][:-30] + [
        {"entity": "p-nobody", "time": records[0]["event_time"], "label": "tire_leak"},     # no such reading
        {"entity": records[0][entity], "label": None}], key="entity")                         # malformed
    producer = Producer(client_config(kafka_bootstrap))
    for value in (b'["not", "a", "label"]', b"{not json"):                                  # malformed too
        producer.produce(label_topic, value=value)
    # then labels of no reading in every partition, so that the last labels of the readings are read well
    # after the scored records: they count only because --bounded reads the label topic to its end first
    for i in range(FILLER):
        producer.produce(label_topic, partition=i % 3, value=json.dumps(
            {"entity": "p-filler", "time": epoch_ms(records[0]["event_time"]) + i, "label": None}).encode())
    assert producer.flush(30) == 0
    produce_json(kafka_bootstrap, label_topic, labels[1::2][-30:], key="entity")

    def figures(scored: str, *extra: str) -> list[dict]:
        started = time.monotonic()
        assert monitor.main(["--scored", scored, *extra, "--bounded", "--quiet", "--bootstrap-servers",
                             kafka_bootstrap, "--model-store", store]) == 0
        print(f"monitor: {time.monotonic() - started:.1f} s")
        return sorted((json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{scored}.metrics")),
                      key=lambda m: m["minute_ms"])

    def accuracy_events(scored: str) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "published_at"} for e in
                (json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{scored}.model-events"))
                if e["kind"] == "accuracy"]

    in_event = figures(with_labels)
    capsys.readouterr()
    on_topic = figures(without, "--labels", label_topic)
    out = capsys.readouterr().out
    print(out, "rolling (tp, fp, fn, tn) per minute:", [tuple(m["rolling"][k] for k in ("tp", "fp", "fn", "tn"))
                                                         for m in on_topic])
    assert [m["minute"][11:16] for m in on_topic] == ["00:10", "00:11", "00:12", "00:13"]
    assert sum(m["labels"]["faults"] for m in in_event) >= 5 and all(m["labels"]["normal"] > 250 for m in in_event)
    for topic, event in zip(on_topic, in_event, strict=True):
        for name in ("precision", "recall", "false_alarm_rate", "tp", "fp", "fn", "tn"):
            assert topic["rolling"][name] == event["rolling"][name], (topic["minute"], name)
        assert topic["labels"] == event["labels"]
        unmatched = 1 + FILLER if topic["minute"][14:16] == "10" else 0
        assert topic["label_topic"] == {"matched": 300, "unmatched": unmatched, "late": 0}
    assert "label_topic" not in in_event[0]
    assert f"labels from {label_topic}: 1200 matched a reading; {1 + FILLER} matched none, 0 late (their minute " \
           "already published) and 3 malformed left out" in out
    assert out.count(f"note: a record on {label_topic} is not a label and is left out") == 1   # the first of them
    assert accuracy_events(with_labels) == accuracy_events(without)


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


def test_labels_by_the_entitys_own_id_are_pseudonymised_as_the_jobs_do(model, kafka_bootstrap, new_topic, capsys):
    """--labels-by-id: a maintenance system knows the vehicles' own ids, the scored records only their
    pseudonyms: the monitor pseudonymises the label topic's ids with the settings' secret."""
    from vigil.settings import VigilSettings, read_pseudonym_secret

    store, folder, manifest = model
    settings = VigilSettings.load()
    secret = read_pseudonym_secret(settings.pseudonym.secret_file, secret=settings.pseudonym.secret)
    role = roles(SCHEMA)
    frame = frame_of(segment(10, 2))
    records = scored_records(frame, folder, manifest, secret=secret)
    scored, label_topic = new_topic("scored"), new_topic("labels")
    produce_json(kafka_bootstrap, scored, records, key=f"{role['entity']}_pseudonym")
    produce_json(kafka_bootstrap, label_topic, [{"entity": row[role["entity"]], "time": r["event_time"],
                                                 "label": r[role["label"]]}
                                                for row, r in zip(frame.to_dict("records"), records)])
    flags = ["--scored", scored, "--labels", label_topic, "--bounded", "--quiet", "--bootstrap-servers",
             kafka_bootstrap, "--model-store", store]
    assert monitor.main(flags) == 0
    assert f"labels from {label_topic}: 0 matched a reading; {len(records)} matched none" in capsys.readouterr().out
    assert monitor.main([*flags, "--metrics-topic", f"{scored}.by-id", "--labels-by-id"]) == 0
    assert f"labels from {label_topic}: {len(records)} matched a reading; 0 matched none" in capsys.readouterr().out
    minutes = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{scored}.by-id")]
    assert sum(m["label_topic"]["matched"] for m in minutes) == len(records)
