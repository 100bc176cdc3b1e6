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
    assert len(alerts) == sum(r["is_anomaly"] for r in scored)
