"""Topics Vigil did not write: registered once, then trained and scored with the same guarantees.

A plain Avro producer (fastavro, no Vigil header, a schema of its own: float fields, a string id
named ``car``, epoch-millisecond times) writes a topic; ``vigil register`` stores its schema and
the roles it detects; training and the Table scoring job then work on it end to end. Confluent's
wire format and JSON records are decoded by the same payload decoder (unit tests here, the jobs
call it for every record).
"""
from __future__ import annotations

import io
import json
import math
import struct
import uuid

import fastavro
import numpy as np
import pytest
from confluent_kafka import Producer

from connectors import schema_store
from connectors.errors import DecodeError
from connectors.kafka_io import create_topic, read_all
from connectors.payloads import PayloadDecoder
from jobs import register_topic, score_events, train_autoencoder
from tests.contract import read_checked

CAR_SCHEMA = {
    "type": "record", "name": "CarReading", "namespace": "com.example.fleet",
    "fields": [
        {"name": "car", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "speed", "type": "float"},
        {"name": "rpm", "type": "float"},
        {"name": "oil_temp", "type": "float"},
        {"name": "fault", "type": ["null", "string"], "default": None},
    ],
}


def car_readings(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        speed = float(60 + 20 * math.sin(i / 30) + rng.normal(0, 2))
        fault = "overheat" if i % 97 == 50 else None
        out.append({"car": f"car-{i % 6}", "ts": 1_767_225_600_000 + i * 1000, "speed": speed,
                    "rpm": float(speed * 33 + rng.normal(0, 30)),
                    "oil_temp": float(90 + (40 if fault else 0) + rng.normal(0, 1)), "fault": fault})
    return out


def plain_avro(schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def test_confluent_wire_format_and_json_decode_with_clear_errors():
    confluent = PayloadDecoder({**CAR_SCHEMA, "vigil.format": "confluent", "vigil.confluent_id": 7})
    record = car_readings(1)[0]
    body = plain_avro(CAR_SCHEMA, record)
    assert confluent(b"\x00" + struct.pack(">I", 7) + body)["car"] == "car-0"
    with pytest.raises(DecodeError, match="registry schema id 8, this topic is registered with id 7"):
        confluent(b"\x00" + struct.pack(">I", 8) + body)
    with pytest.raises(DecodeError, match="not Confluent's wire format"):
        confluent(body)
    # registering reads the epoch-millisecond long as a time; JSON may then carry ISO 8601 text
    registered, _ = register_topic.assign_roles(CAR_SCHEMA, register_topic.RegisterOptions(topic="cars"))
    as_json = PayloadDecoder({**registered, "vigil.format": "json"})
    assert as_json(json.dumps({**record, "ts": "2026-01-01T00:00:00Z"}).encode())["ts"] == 1_767_225_600_000
    with pytest.raises(DecodeError, match="speed: expected a number"):
        as_json(json.dumps({**record, "speed": "fast"}).encode())
    with pytest.raises(DecodeError, match="missing field 'rpm'"):
        as_json(json.dumps({k: v for k, v in record.items() if k != "rpm"}).encode())


def test_json_schema_becomes_an_avro_record_schema(tmp_path):
    spec = {"type": "object", "required": ["pump", "time", "flow"],
            "properties": {"pump": {"type": "string"}, "time": {"type": "string", "format": "date-time"},
                           "flow": {"type": "number"}, "note": {"type": ["string", "null"]}}}
    schema = register_topic.json_schema_to_avro(spec, "plant.pumps")
    assert [f["name"] for f in schema["fields"]] == ["pump", "time", "flow", "note"]
    assert schema["fields"][1]["type"] == {"type": "long", "logicalType": "timestamp-millis"}


@pytest.mark.kafka
@pytest.mark.flink
def test_a_plain_avro_topic_is_registered_trained_and_scored(kafka_bootstrap, tmp_path, capsys):
    topic = f"test.foreign.cars.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    readings = car_readings(1500)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "log_level": 0})
    for r in readings:  # a producer that knows nothing of Vigil: no header, its own schema
        producer.produce(topic, key=r["car"].encode(), value=plain_avro(CAR_SCHEMA, r), timestamp=r["ts"])
    producer.produce(topic, key=b"car-x", value=b"\x02garbage")  # and one bad record
    assert producer.flush(30) == 0
    (tmp_path / "car.avsc").write_text(json.dumps(CAR_SCHEMA))

    assert register_topic.main([topic, "--schema", str(tmp_path / "car.avsc"),
                                "--bootstrap-servers", kafka_bootstrap]) == 0
    printed = capsys.readouterr().out
    assert "entity: car (its name)" in printed and "time: ts" in printed and "label: fault" in printed
    assert "features: speed, rpm, oil_temp" in printed
    stored = schema_store.require(kafka_bootstrap, topic)
    assert stored["vigil.format"] == "avro" and stored["vigil.entity"] == "car"

    store = tmp_path / "models"
    assert train_autoencoder.main(["--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store",
                                   str(store), "--quiet", "--epochs", "20"]) == 0
    secret = tmp_path / "key"
    secret.write_text("foreign-secret")
    assert score_events.main(["--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", str(store),
                              "--tier", "none", "--pseudonym-secret-file", str(secret), "--bounded",
                              "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"]) == 0
    from connectors.records import outputs

    out = outputs(stored)
    scored = read_checked(kafka_bootstrap, f"{topic}.scored", out.scored)
    dead = read_checked(kafka_bootstrap, f"{topic}.dlq", out.dead_letters)
    assert len(scored) == len(readings) and len(dead) == 1
    assert dead[0]["stage"] == "undecodable"
    assert all(r["car_pseudonym"].startswith("p-") and "car" not in r for r in scored)
    assert {r["model_version"] for r in scored} == {f"{topic}@1"}
    faults = [r for r in scored if r["fault"]]
    assert faults and sum(r["is_anomaly"] for r in faults) >= 0.8 * len(faults)  # a sanity floor, not a figure
    assert len(list(read_all(kafka_bootstrap, f"{topic}.alerts"))) >= len(faults) * 0.8
