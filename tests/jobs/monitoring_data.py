"""Simulated fleet readings in segments, some with a sensor recalibration, for the monitor and retrain tests."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer, client_config, create_topic
from jobs import simulation

SCHEMA = load_schema()
TIRES = ("tire_pressure_fl_kpa", "tire_pressure_fr_kpa", "tire_pressure_rl_kpa", "tire_pressure_rr_kpa")
# a recalibration of the fleet's gauges: every tire reads 15 kPa high (about 2 to 5 sd), the
# accelerometer's vertical axis 0.06 g high (about 3 sd)
RECALIBRATION = {**{tire: 15.0 for tire in TIRES}, "accel_z_g": 0.06}
STEADY = simulation.STEADY_SENSORS   # the sensors a minute's drift is measured on (no slow state)
VEHICLES, INTERVAL_S = 100, 20.0                 # 300 readings a minute
_FLEET: dict[int, list[dict[str, Any]]] = {}


def segment(minute: int, minutes: int, seed: int = 1, shift: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """``minutes`` of readings of one simulated fleet (``seed``), from ``minute`` minutes after the
    simulator's fixed start; with ``shift``, those sensors read that much higher (not labelled)."""
    if seed not in _FLEET:
        settings = simulation.FleetSettings(vehicles=VEHICLES, events=int(60 * 60 / INTERVAL_S) * VEHICLES,
                                            interval_s=INTERVAL_S, failure_rate=0.03, seed=seed)
        _FLEET[seed] = list(simulation.generate(settings))
    first = simulation.FIXED_START + dt.timedelta(minutes=minute)
    last = first + dt.timedelta(minutes=minutes)
    records = [dict(r) for r in _FLEET[seed] if first <= r["event_time"] < last]
    for r in records:
        for name, delta in (shift or {}).items():
            r[name] = round(r[name] + delta, 3)
    return records


def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Readings into ``topic`` (its schema registered), Kafka timestamps = event time, as the simulator does."""
    create_topic(bootstrap, topic)
    schema_store.register(bootstrap, topic, SCHEMA)
    with AvroProducer(bootstrap, topic, SCHEMA) as producer:
        for r in records:
            producer.send(r, key=r["vehicle_id"], timestamp_ms=simulation.event_time_ms(r))


def produce_json(bootstrap: str, topic: str, records: list[dict[str, Any]], key: str | None = None) -> None:
    from confluent_kafka import Producer

    producer = Producer({**client_config(bootstrap), "acks": "all"})
    for r in records:
        producer.produce(topic, key=(r.get(key) or "").encode() if key else None, value=json.dumps(r).encode())
    assert producer.flush(30) == 0


def frame_of(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(records)


def iso(stamp: Any) -> str:
    """Event time as Flink's json format writes it (ISO-8601, UTC, no zone)."""
    return pd.Timestamp(stamp).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def scored_records(frame: pd.DataFrame, folder: Any, manifest: dict[str, Any],
                   secret: bytes | None = None) -> list[dict[str, Any]]:
    """The scored records a scoring job writes for ``frame`` with the model (connectors/records.py
    contract), scored in each vehicle's context as the jobs do; the vehicles' pseudonyms are those
    of ``secret`` when given (else made up)."""
    from connectors.privacy import pseudonym
    from connectors.records import outputs
    from udfs.anomaly_score import LoadedModel
    from udfs.feature_set import context_from_frame

    out = outputs(SCHEMA)
    model = LoadedModel(folder, manifest, "numpy")
    frame = frame.reset_index(drop=True)
    ctx = context_from_frame(frame, list(manifest["features"]["names"]), "vehicle_id", "event_time", [], model.window)
    scores, flags, status = model.score_context(ctx)
    records = []
    for i, row in enumerate(frame.to_dict("records")):
        record: dict[str, Any] = dict.fromkeys(out.scored.names)
        record.update({k: v for k, v in row.items() if k in record})
        name = pseudonym(secret, row["vehicle_id"]) if secret else "p-" + f"{abs(hash(row['vehicle_id'])):020x}"[:20]
        record.update({out.entity: name, "event_time": iso(row["event_time"]),
                       "score": None if np.isnan(scores[i]) else float(scores[i]),
                       "is_anomaly": None if flags[i] is None else bool(flags[i]),
                       "model_version": manifest["version"], "partial": status.note[i],
                       "source_partition": 0, "source_offset": i})
        records.append(record)
    return records
