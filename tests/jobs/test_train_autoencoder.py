"""Training straight from the Kafka log: quality on the simulator's labels, lineage, ranges, errors."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors import schema_store
from connectors.kafka_io import end_offsets
from connectors.model_registry import ModelRegistry
from jobs import simulate_fleet, simulation, train_autoencoder
from jobs.training import trainer
from jobs.training.trainer import TrainOptions, split_evaluation
from vigil.settings import VigilSettings

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def fleet_topic(kafka_bootstrap: str) -> str:
    import uuid

    topic = f"test.train.fleet.{uuid.uuid4().hex[:8]}"
    assert simulate_fleet.main(["--topic", topic, "--vehicles", "20", "--events", "24000", "--failure-rate", "0.02",
                                "--seed", "42", "--bootstrap-servers", kafka_bootstrap]) == 0
    return topic


@pytest.fixture(scope="module")
def trained(fleet_topic: str, kafka_bootstrap: str, tmp_path_factory) -> tuple[dict, Path]:
    store = tmp_path_factory.mktemp("models")
    code = train_autoencoder.main(["--topic", fleet_topic, "--bootstrap-servers", kafka_bootstrap,
                                   "--model-store", str(store), "--quiet"])
    assert code == 0
    registry = ModelRegistry(str(store))
    return registry.manifest(registry.resolve(f"{fleet_topic}@champion")), store


def test_detects_simulated_failures(trained, capsys):
    manifest, _ = trained
    ev = manifest["metrics"]["evaluation"]
    print(f"\nrecall {ev['recall']:.3f} precision {ev['precision']:.3f} F1 {ev['f1']:.3f} "
          f"FPR {ev['false_positive_rate']:.4f} on {ev['rows']} rows ({ev['anomalies']} labelled), by mode "
          f"{ev['recall_by_mode']}")
    assert ev["anomalies"] > 50
    # sanity floors (the figures themselves: benchmarks/README.md): most labelled readings, some of
    # every failure mode, few false alarms
    assert ev["recall"] >= 0.7 and ev["precision"] >= 0.6
    assert ev["false_positive_rate"] <= 0.02
    assert set(ev["recall_by_mode"]) == set(simulation.DEFAULT_MODES)
    assert min(ev["recall_by_mode"].values()) >= 0.3, ev["recall_by_mode"]


def test_manifest_records_lineage_and_everything_needed_to_score(trained, fleet_topic, kafka_bootstrap):
    manifest, store = trained
    marks = end_offsets(kafka_bootstrap, fleet_topic)
    ranges = manifest["training"]["sources"]["kafka"]["ranges"]
    assert {r["partition"]: (r["start"], r["end"]) for r in ranges} == marks
    assert manifest["metrics"]["rows"]["read"] == 24000
    assert manifest["features"]["names"][0] == "speed_kmh" and len(manifest["features"]["mean"]) == 17
    assert manifest["threshold"] > 0 and manifest["threshold_rule"]["quantile"] == 0.99
    assert manifest["features"]["context"] == "window" and len(manifest["model"]["members"]) == 3
    assert manifest["libraries"]["tensorflow"].startswith("2.19")
    report = store / fleet_topic / "artifacts" / manifest["artifact"] / "report.png"
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report.stat().st_size > 20_000


def _settings(bootstrap: str, store) -> VigilSettings:
    return VigilSettings.load({"kafka.bootstrap_servers": bootstrap, "model.store": str(store)})


def test_offset_and_time_ranges_are_respected(fleet_topic, kafka_bootstrap, tmp_path):
    stop = {p: high // 2 for p, (_, high) in end_offsets(kafka_bootstrap, fleet_topic).items()}
    options = TrainOptions(topic=fleet_topic, end_offsets=stop, epochs=2, quiet=True)
    frame, ranges, bad = trainer.read_topic(kafka_bootstrap, options, schema_store.require(kafka_bootstrap, fleet_topic))
    assert {r.partition: r.end for r in ranges} == stop
    assert len(frame) == sum(stop.values()) and bad == 0

    start = simulation.FIXED_START + dt.timedelta(minutes=10)
    options = TrainOptions(topic=fleet_topic, start=start.isoformat(), epochs=2, quiet=True)
    frame, _, _ = trainer.read_topic(kafka_bootstrap, options, schema_store.require(kafka_bootstrap, fleet_topic))
    assert pd.to_datetime(frame["event_time"], utc=True).min() >= start
    assert len(frame) == 20 * (1200 - 600)


def test_blocked_evaluation_split_holds_out_whole_time_blocks():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame({"t": [t0 + pd.Timedelta(seconds=s) for s in range(1200)]})
    settings = TrainOptions(eval_fraction=0.25, eval_block_seconds=100)
    held, kept = split_evaluation(frame, "t", settings)
    assert len(held) == 300 and len(kept) == 900
    blocks = set((held // 100).tolist())
    assert blocks == {3, 7, 11}


def test_history_from_parquet_is_added(fleet_topic, kafka_bootstrap, tmp_path):
    frame = pd.DataFrame(list(simulation.generate(simulation.FleetSettings(vehicles=4, events=800, seed=9))))
    (tmp_path / "hist" / "date=2025-12-31").mkdir(parents=True)
    frame.to_parquet(tmp_path / "hist" / "date=2025-12-31" / "part-0.parquet")
    stop = {p: 100 for p in end_offsets(kafka_bootstrap, fleet_topic)}
    manifest = trainer.train_from_kafka(_settings(kafka_bootstrap, tmp_path / "models"), TrainOptions(
        topic=fleet_topic, end_offsets=stop, history=str(tmp_path / "hist"), epochs=2, quiet=True))
    assert manifest["training"]["sources"]["history"]["rows"] == 800
    assert manifest["metrics"]["rows"]["read"] == 800 + sum(stop.values())


def test_empty_range_and_unknown_topic_are_clear_errors(fleet_topic, kafka_bootstrap, tmp_path, capsys):
    code = train_autoencoder.main(["--topic", fleet_topic, "--bootstrap-servers", kafka_bootstrap,
                                   "--model-store", str(tmp_path), "--to-offsets", "0:0,1:0,2:0", "--quiet"])
    assert code == 1
    assert "no records in the chosen range" in capsys.readouterr().err
    code = train_autoencoder.main(["--topic", "no.such.topic", "--bootstrap-servers", kafka_bootstrap,
                                   "--model-store", str(tmp_path), "--quiet"])
    assert code == 1
    assert "no schema is registered for topic 'no.such.topic'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_training_is_reproducible_with_a_seed(fleet_topic, kafka_bootstrap, tmp_path):
    stop = {p: 1500 for p in end_offsets(kafka_bootstrap, fleet_topic)}
    thresholds = []
    for run in ("a", "b"):
        m = trainer.train_from_kafka(_settings(kafka_bootstrap, tmp_path / run),
                                     TrainOptions(topic=fleet_topic, end_offsets=stop, epochs=3, seed=5, quiet=True))
        thresholds.append(m["threshold"])
    np.testing.assert_allclose(thresholds[0], thresholds[1], rtol=1e-5)


def test_readings_a_job_flagged_are_left_out_like_labelled_failures(fleet_topic, kafka_bootstrap, tmp_path):
    """A scored topic that flags exactly the labelled readings leaves out what the labels would."""
    import json

    from confluent_kafka import Producer

    from connectors.kafka_io import client_config, create_topic

    options = TrainOptions(topic=fleet_topic, end="2026-01-01T00:05:00Z", epochs=2, members=1, quiet=True,
                           model_name="flagged", min_rows=100)
    frame, _, _ = trainer.read_topic(kafka_bootstrap, options, schema_store.require(kafka_bootstrap, fleet_topic))
    scored = f"{fleet_topic}.flagged.scored"
    create_topic(kafka_bootstrap, scored)
    producer = Producer(client_config(kafka_bootstrap))
    for p, o, label in zip(frame[trainer.PARTITION], frame[trainer.OFFSET], frame["failure_label"]):
        producer.produce(scored, value=json.dumps({"source_partition": int(p), "source_offset": int(o),
                                                   "is_anomaly": label is not None}).encode())
    producer.produce(scored, value=b"not json")      # a stray record flags nothing
    assert producer.flush(30) == 0
    settings = VigilSettings.load().evolve(kafka__bootstrap_servers=kafka_bootstrap, model__store=str(tmp_path))

    by_labels = trainer.train_from_kafka(settings, options)["metrics"]["rows"]
    by_flags = trainer.train_from_kafka(settings, options.model_copy(update={"include_labelled": True,
                                                                         "leave_out_flagged": scored}))
    assert by_labels["left_out"]["labelled"] > 0 and by_labels["left_out"]["flagged"] == 0
    assert by_flags["metrics"]["rows"]["left_out"]["labelled"] == 0
    assert by_flags["metrics"]["rows"]["left_out"]["flagged"] == by_labels["left_out"]["labelled"]
    assert by_flags["metrics"]["rows"]["train"] == by_labels["train"]
    assert by_flags["training"]["sources"]["flagged"] == {"topic": scored,
                                                          "rows": int(frame["failure_label"].notna().sum())}


def test_per_entity_thresholds_are_keyed_by_the_pseudonyms_the_jobs_use(fleet_topic, kafka_bootstrap, tmp_path,
                                                                          capsys):
    from connectors.privacy import pseudonym
    from vigil.settings import read_pseudonym_secret

    settings = _settings(kafka_bootstrap, tmp_path)
    code = train_autoencoder.main(["--topic", fleet_topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                                   str(tmp_path), "--to", "2026-01-01T00:05:00Z", "--epochs", "2", "--members", "1",
                                   "--min-rows", "100", "--threshold-per", "entity", "--entity-min-readings", "20",
                                   "--model-name", "per-entity", "--quiet"])
    assert code == 0
    assert "own thresholds for 20 of 20 entities" in capsys.readouterr().out
    registry = ModelRegistry(str(tmp_path))
    manifest = registry.manifest(registry.resolve("per-entity@champion"))
    secret = read_pseudonym_secret(settings.pseudonym.secret_file, secret=settings.pseudonym.secret)
    frame, _, _ = trainer.read_topic(kafka_bootstrap, TrainOptions(topic=fleet_topic, end="2026-01-01T00:05:00Z",
                                                                   quiet=True),
                                     schema_store.require(kafka_bootstrap, fleet_topic))
    own = manifest["thresholds_by_entity"]
    assert set(own) == {pseudonym(secret, v) for v in frame["vehicle_id"].unique()}
    rule = manifest["threshold_rule"]
    assert (rule["per"], rule["entities_calibrated"], rule["entities"]) == ("entity", 20, 20)
    assert len(set(own.values())) == 20 and min(own.values()) > 0
    # too few validation readings per entity: the fleet's threshold only, and said so
    rows = manifest["metrics"]["rows"]["validation"]
    options = TrainOptions(topic=fleet_topic, end="2026-01-01T00:05:00Z", epochs=2, members=1, min_rows=100,
                           quiet=True, threshold_per="entity", entity_min_readings=rows + 1, model_name="fleet-only")
    fleet_only = trainer.train_from_kafka(settings, options)
    assert "thresholds_by_entity" not in fleet_only and fleet_only["threshold_rule"]["entities_calibrated"] == 0


def test_an_unlike_machine_gets_a_looser_threshold_of_its_own(tmp_path):
    """A fleet of like vehicles and one whose sensors swing four times as widely: per entity, the
    wide one's own threshold is above every other vehicle's, which keep tighter ones."""
    from tests.trained_model import simulated_frame
    from udfs.feature_set import FeatureSet

    frame = simulated_frame(events=4000, failure_rate=0.0)
    wide = frame["vehicle_id"] == frame["vehicle_id"].iloc[0]
    sensors = [c for c in frame if c.endswith(("_kpa", "_c", "_rpm", "_g"))]
    means = frame.loc[wide, sensors].mean()
    frame.loc[wide, sensors] = means + (frame.loc[wide, sensors] - means) * 4
    options = TrainOptions(topic="t", epochs=8, members=1, min_rows=100, eval_fraction=0, quiet=True,
                           threshold_per="entity", entity_min_readings=20)
    fields = trainer.train(frame, FeatureSet(sensors), None, "event_time", options, tmp_path,
                           entity_col="vehicle_id").fields
    own = fields["thresholds_by_entity"]
    mine = own.pop(frame["vehicle_id"].iloc[0])
    assert len(own) == 9 and mine > max(own.values())
    assert fields["threshold"] > float(np.median(list(own.values())))


def test_per_entity_validation_holds_each_entitys_newest_readings():
    """Calibrated per entity, validation is each entity's newest share, not the fleet's newest: an
    entity whose readings all come early (or rarely) still has validation readings of its own."""
    keys = np.array(["early"] * 100 + ["late"] * 400, dtype=object)   # time order: "early" stops first
    fit = np.arange(500)
    _, fleet_val = trainer.validation_split(fit, None, 0.2)
    train_idx, val_idx = trainer.validation_split(fit, keys, 0.2)
    assert set(keys[fleet_val]) == {"late"}
    assert list(val_idx) == [*range(80, 100), *range(420, 500)]
    assert sorted([*train_idx, *val_idx]) == list(fit)
