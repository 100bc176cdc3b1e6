"""Any machine's CSV, not only the simulator's: replay -> train from Kafka -> score in Flink.

The features, entity, time and label columns are discovered from the file, stored with the topic
(``_vigil_schemas``), and training and the scoring job take them from there.
"""
from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from connectors.kafka_io import read_all
from connectors.model_registry import ModelRegistry
from jobs import replay_file, score_events, train_autoencoder

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def pump_readings(seed: int = 3) -> pd.DataFrame:
    """4 pumps, one reading a minute; pump-2 runs a failing bearing (vibration up) for 40 minutes."""
    rng = np.random.default_rng(seed)
    rows = []
    for pump in range(4):
        load = rng.uniform(0.5, 0.9)
        for minute in range(1500):
            flow = 100 * load + rng.normal(0, 2)
            failing = pump == 2 and 1200 <= minute < 1240
            rows.append({
                "ts": f"2026-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z" if minute < 1440
                else f"2026-03-02T00:{minute - 1440:02d}:00Z",
                "pump_id": f"pump-{pump}",
                "flow_lpm": round(flow, 3),
                "pressure_bar": round(2 + 0.03 * flow + rng.normal(0, 0.05), 3),
                "vibration_mm_s": round((6.5 if failing else 1.0) + rng.normal(0, 0.1), 3),
                "fault": "bearing" if failing else "none",
            })
    return pd.DataFrame(rows)


def test_replayed_csv_is_trained_and_scored_like_the_simulator(kafka_bootstrap, tmp_path, capsys):
    topic = f"test.pumps.{uuid.uuid4().hex[:8]}"
    path = tmp_path / "pumps.csv"
    frame = pump_readings()
    frame.to_csv(path, index=False)

    assert replay_file.main([str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap,
                             "--label-column", "fault"]) == 0
    assert "feature columns: flow_lpm, pressure_bar, vibration_mm_s" in capsys.readouterr().out

    store = tmp_path / "models"
    assert train_autoencoder.main(["--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                                   str(store), "--hidden", "8,4", "--epochs", "60", "--seed", "1", "--quiet"]) == 0
    registry = ModelRegistry(str(store))
    manifest = registry.manifest(registry.resolve(topic))
    assert manifest["features"]["names"] == ["flow_lpm", "pressure_bar", "vibration_mm_s"]

    secret = tmp_path / "key"
    secret.write_text("pump-secret")
    assert score_events.main(["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                              store.as_uri(), "--tier", "none", "--pseudonym-secret-file", str(secret),
                              "--bounded", "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"]) == 0

    scored = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.scored")]
    alerts = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.alerts")]
    assert len(scored) == len(frame) and not list(read_all(kafka_bootstrap, f"{topic}.dlq"))
    assert {r["model_version"] for r in scored} == {manifest["version"]}
    assert {"pump_id_pseudonym", "flow_lpm", "vibration_mm_s", "score", "is_anomaly"} <= set(scored[0])
    assert not any(r["pump_id_pseudonym"].startswith("pump-") for r in scored)
    # the failing bearing is what the model flags: most of its readings, few of the rest
    labelled = [r for r in scored if r["fault"] == "bearing"]
    assert len(labelled) == 40
    assert sum(r["is_anomaly"] for r in labelled) >= 36
    normal_flags = sum(r["is_anomaly"] for r in scored if r["fault"] is None)
    assert normal_flags <= 0.02 * (len(scored) - 40)
    # alerts are alarm episodes: each opens once and closes once, and the bearing's pump raised one
    opened = [a for a in alerts if a["status"] == "open"]
    assert len({a["episode_id"] for a in opened}) == len(opened)
    assert all(a["status"] == "closed" for a in alerts if a not in opened)
    assert {a["episode_id"] for a in alerts if a["status"] == "closed"} <= {a["episode_id"] for a in opened}
    bearing = {r["pump_id_pseudonym"] for r in labelled}
    assert any(a["pump_id_pseudonym"] in bearing and a["fault"] == "bearing" for a in opened)


def replay_train_score(frame: pd.DataFrame, tmp_path, kafka_bootstrap: str, *replay_args: str,
                       train_args: tuple[str, ...] = ()) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """A user's path for a CSV: replay it, train with the defaults, score it in the Table job;
    returns (manifest, scored, alerts, dead letters)."""
    topic = f"test.csv.{uuid.uuid4().hex[:8]}"
    path = tmp_path / "readings.csv"
    frame.to_csv(path, index=False)
    assert replay_file.main([str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, *replay_args]) == 0
    store = tmp_path / "models"
    assert train_autoencoder.main(["--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                                   str(store), "--epochs", "60", "--seed", "1", "--quiet", *train_args]) == 0
    registry = ModelRegistry(str(store))
    manifest = registry.manifest(registry.resolve(topic))
    secret = tmp_path / "key"
    secret.write_text("csv-secret")
    assert score_events.main(["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                              store.as_uri(), "--tier", "none", "--pseudonym-secret-file", str(secret),
                              "--bounded", "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"]) == 0
    return manifest, *([json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.{kind}")]
                       for kind in ("scored", "alerts", "dlq"))


def test_one_sensor_column_trains_and_scores_with_its_recent_readings(kafka_bootstrap, tmp_path):
    """A NAB-like file: a timestamp and one value, no entity. The value cycles every 60 readings; for
    30 readings it zig-zags around its mean, within its normal range: each reading alone is normal,
    the stretch is not."""
    rng = np.random.default_rng(5)
    n = 2400
    minutes = np.arange(n)
    value = 50 + 10 * np.sin(2 * np.pi * minutes / 60) + rng.normal(0, 0.5, n)
    zigzag = (minutes >= 2000) & (minutes < 2030)
    value[zigzag] = 50 + 9 * (-1.0) ** minutes[zigzag]
    frame = pd.DataFrame({"timestamp": pd.Timestamp("2026-03-01") + pd.to_timedelta(minutes, unit="min"),
                          "value": value.round(3), "label": np.where(zigzag, "zigzag", "none")})
    manifest, scored, alerts, dlq = replay_train_score(frame, tmp_path, kafka_bootstrap, "--label-column", "label")
    assert manifest["features"]["names"] == ["value"] and manifest["features"]["context"] == "window"
    assert len(scored) == n and not dlq
    flags = {pd.Timestamp(r["timestamp"]).tz_localize(None): bool(r["is_anomaly"]) for r in scored}
    flagged = np.array([flags[t] for t in frame["timestamp"]])
    hits, false_alarms = int(flagged[zigzag].sum()), int(flagged[~zigzag].sum())
    assert hits >= 10, f"the zig-zag stretch: {hits} of 30 readings flagged"
    assert false_alarms <= 0.02 * (n - 30), f"{false_alarms} false alarms on {n - 30} normal readings"
    assert any(a["status"] == "open" and a["label"] == "zigzag" for a in alerts)


def test_a_missing_sensor_value_is_imputed_and_named(kafka_bootstrap, tmp_path):
    """Empty cells in a CSV: the reading is scored with the sensor imputed from the entity's closest
    reading, its ``partial`` column names the sensor, and nothing goes to the dead letters."""
    frame = pump_readings(seed=4)
    frame = frame[frame["pump_id"].isin(["pump-0", "pump-1"])].reset_index(drop=True)
    gaps = frame.index[frame.index % 50 == 7]
    frame["pressure_bar"] = frame["pressure_bar"].astype(object)
    frame.loc[gaps, "pressure_bar"] = ""
    manifest, scored, _, dlq = replay_train_score(frame, tmp_path, kafka_bootstrap, "--label-column", "fault")
    assert len(scored) == len(frame) and not dlq
    partial = [r for r in scored if r["pressure_bar"] is None]
    assert len(partial) == len(gaps)
    assert {r["partial"] for r in partial} == {"imputed pressure_bar"}
    assert all(r["score"] is not None for r in partial)
    # imputed readings of a normal pump look normal
    assert sum(r["is_anomaly"] for r in partial) <= 2
