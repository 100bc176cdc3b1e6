"""The DataStream scoring job on the real broker: per-vehicle alarm episodes, side-output DLQ."""
from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer

from connectors import schema_store
from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
from connectors.kafka_io import read_all
from connectors.kafka_io import create_topic
from jobs import score_events_stream, simulation
from connectors.records import outputs
from tests.contract import read_checked
from udfs.preprocess import pseudonym

from tests.trained_model import REF

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


@pytest.fixture(scope="module")
def stream_run(kafka_bootstrap, trained_model, tmp_path_factory):
    topic = f"test.stream.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    schema = load_schema()
    schema_store.register(kafka_bootstrap, topic, schema)
    serialize = AvroSerializer(schema)
    header = [(SCHEMA_HEADER, schema_id(schema).encode())]
    normal = list(simulation.generate(simulation.FleetSettings(vehicles=4, events=400, seed=8,
                                                                       failure_rate=0.0)))
    template = normal[200]
    own = list(simulation.generate(simulation.FleetSettings(vehicles=2, events=60, seed=3, failure_rate=0.0)))

    def renamed(vehicle: str, source: str) -> list[dict]:
        return [{**r, "vehicle_id": vehicle} for r in own if r["vehicle_id"] == source]

    burst = renamed("VIN-BURST", own[0]["vehicle_id"])            # 30 readings, a flat tire in 4 of them
    for r in burst[10:14]:
        r.update(tire_pressure_fl_kpa=15.0, failure_label="tire_leak")
    calm = renamed("VIN-CALM", own[1]["vehicle_id"])              # 30 normal readings: never an alarm
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "log_level": 0})
    for event in normal + burst + calm:
        producer.produce(topic, key=event["vehicle_id"].encode(), value=serialize(event), headers=header)
    producer.produce(topic, key=b"VIN-BAD", value=b"\x00\x01garbage", headers=header)
    producer.produce(topic, key=b"VIN-BAD", value=serialize({**template, "speed_kmh": 900.0}), headers=header)
    assert producer.flush(30) == 0

    secret = tmp_path_factory.mktemp("secret") / "key"
    secret.write_text("stream-secret")
    code = score_events_stream.main([
        "--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", trained_model[0], "--model", REF,
        "--pseudonym-secret-file", str(secret), "--bounded", "--checkpoint-interval", "1 s",
        "--alarm-enter", "3", "--alarm-within", "5", "--alarm-clear", "2", "--group-id", f"g-{topic}"])
    assert code == 0
    return topic, len(normal) + len(burst) + len(calm), trained_model[1]


def _read(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(m.value()) for m in read_all(bootstrap, topic)]


def test_every_valid_reading_is_scored_once(stream_run, kafka_bootstrap):
    topic, good, manifest = stream_run
    scored = _read(kafka_bootstrap, f"{topic}.stream.scored")
    assert len(scored) == good
    assert len({(r["source_partition"], r["source_offset"]) for r in scored}) == good
    assert {r["model_version"] for r in scored} == {manifest["version"]}
    assert "vehicle_id" not in scored[0]


def test_a_run_of_anomalous_readings_is_one_alarm_episode(stream_run, kafka_bootstrap):
    topic = stream_run[0]
    alerts = _read(kafka_bootstrap, f"{topic}.stream.alerts")
    burst = pseudonym(b"stream-secret", "VIN-BURST")
    calm = pseudonym(b"stream-secret", "VIN-CALM")
    mine = sorted((a for a in alerts if a["vehicle_id_pseudonym"] == burst), key=lambda a: a["source_offset"])
    assert [a["status"] for a in mine] == ["open", "closed"]
    opened, closed = mine
    assert opened["episode_id"] == closed["episode_id"] and opened["ended_at"] is None
    assert opened["anomalies"] == 3 and closed["anomalies"] >= 4 and closed["ended_at"]
    assert opened["failure_label"] == "tire_leak"
    assert all(r["score"] > stream_run[2]["threshold"] for r in closed["readings"])
    assert closed["max_score"] == max(r["score"] for r in closed["readings"])
    assert not [a for a in alerts if a["vehicle_id_pseudonym"] == calm]


def test_every_output_has_exactly_the_contract_fields(stream_run, kafka_bootstrap):
    topic, good, _ = stream_run
    out = outputs(load_schema())
    assert len(read_checked(kafka_bootstrap, f"{topic}.stream.scored", out.scored)) == good
    assert read_checked(kafka_bootstrap, f"{topic}.stream.alerts", out.alerts)
    assert len(read_checked(kafka_bootstrap, f"{topic}.stream.dlq", out.dead_letters)) == 2


def test_bad_records_go_to_the_side_output_dlq(stream_run, kafka_bootstrap):
    topic = stream_run[0]
    dlq = _read(kafka_bootstrap, f"{topic}.stream.dlq")
    assert sorted(d["stage"] for d in dlq) == ["undecodable", "validation_failed"]
    assert any("speed_kmh" in d["reason"] for d in dlq)
    assert all(d["source_topic"] == topic and d["payload"] for d in dlq)
