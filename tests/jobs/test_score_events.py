"""The Table API scoring job end to end on the real broker: good events scored, bad ones dead-lettered."""
from __future__ import annotations

import base64
import hashlib
import datetime as dt
import json
import random
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer

from connectors import schema_store
from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
from connectors.kafka_io import read_all
from jobs import score_events, simulation
from connectors.records import outputs
from tests.contract import read_checked
from udfs.dead_letters import PREFIX_BYTES, open_payload
from udfs.preprocess import pseudonym

from tests.trained_model import REF

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def _v0_schema() -> dict:
    """An older, shorter telemetry schema: its records lack most fields."""
    schema = load_schema()
    return {**schema, "namespace": "dev.vigil.telemetry.v0", "fields": schema["fields"][:5]}


def produce_with_bad_records(bootstrap: str, topic: str, good: int) -> dict[int, tuple[str, bytes]]:
    """Good simulated events with bad ones mixed in; returns {position: (expected reason prefix, bytes)}."""
    schema = load_schema()
    serialize = AvroSerializer(schema)
    header = [(SCHEMA_HEADER, schema_id(schema).encode())]
    events = list(simulation.generate(simulation.FleetSettings(vehicles=6, events=good, seed=3,
                                                                       failure_rate=0.03)))
    valid = serialize(events[0])
    rng = random.Random(1)
    nan_event = {**events[1], "coolant_temp_c": float("nan")}
    inf_event = {**events[2], "engine_rpm": float("inf")}
    hot_event = {**events[3], "coolant_temp_c": 400.0}
    bad_label = {**events[4], "failure_label": "gremlins"}
    v0 = _v0_schema()
    bad = [
        ("undecodable", valid[: len(valid) // 2], header),                                     # truncated
        ("undecodable", bytes(rng.getrandbits(8) for _ in range(90)), None),                    # random bytes
        ("undecodable", valid + b"\x02\x04", None),                                              # wrong version
        ("undecodable", AvroSerializer(v0)({k: events[5][k] for k in [f["name"] for f in v0["fields"]]}),
         [(SCHEMA_HEADER, schema_id(v0).encode())]),                                             # missing fields
        ("impossible_value", serialize(nan_event), header),
        ("impossible_value", serialize(inf_event), header),
        ("validation_failed", serialize(hot_event), header),                                    # out of range
        ("validation_failed", serialize(bad_label), header),                                    # not an allowed value
        ("validation_failed", serialize({**events[6], "event_time": dt.datetime(3000, 1, 1, tzinfo=dt.timezone.utc)}),
         header),                                                                                # year 3000
        ("undecodable", valid + rng.randbytes(900_000), header),    # 900 KB
    ]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0,
                         "message.max.bytes": 1_000_000})
    expected: dict[int, tuple[str, bytes]] = {}
    slots = sorted(rng.sample(range(len(events) + len(bad)), len(bad)))
    stream, b, e = [], iter(bad), iter(events)
    for i in range(len(events) + len(bad)):
        if slots and i == slots[0]:
            slots.pop(0)
            reason, payload, headers = next(b)
            stream.append((f"bad-{i}", payload, headers, reason))
        else:
            event = next(e)
            stream.append((event["vehicle_id"], serialize(event), header, None))
    for key, payload, headers, reason in stream:
        producer.produce(topic, key=key.encode(), value=payload, headers=headers)
        if reason:
            expected[hashlib.sha256(payload).hexdigest()] = (reason, payload)
    assert producer.flush(30) == 0
    return expected


@pytest.fixture(scope="module")
def scored_run(kafka_bootstrap, trained_model, tmp_path_factory):
    import uuid

    from connectors.kafka_io import create_topic

    topic = f"test.score.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 3)
    schema_store.register(kafka_bootstrap, topic, load_schema())
    good = 900
    expected_bad = produce_with_bad_records(kafka_bootstrap, topic, good)
    tier = tmp_path_factory.mktemp("tier")
    secret = tmp_path_factory.mktemp("secret") / "key"
    secret.write_text("test-secret")
    code = score_events.main([
        "--input", topic, "--bootstrap-servers", kafka_bootstrap, "--model-store", trained_model[0], "--model", REF,
        "--tier", tier.as_uri(), "--pseudonym-secret-file", str(secret), "--bounded",
        "--checkpoint-interval", "1 s", "--group-id", f"g-{topic}"])
    assert code == 0
    return topic, good, expected_bad, tier, trained_model[1]


def test_every_valid_event_is_scored_exactly_once(scored_run, kafka_bootstrap):
    topic, good, _, _, manifest = scored_run
    scored = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.scored")]
    assert len(scored) == good
    assert len({(r["source_partition"], r["source_offset"]) for r in scored}) == good
    assert {r["model_version"] for r in scored} == {manifest["version"]}
    assert all(r["score"] is not None and r["score"] >= 0 for r in scored)
    assert all(r["is_anomaly"] == (r["score"] > manifest["threshold"]) for r in scored)


def test_vehicle_ids_are_pseudonymised_with_the_secret(scored_run, kafka_bootstrap):
    topic = scored_run[0]
    scored = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.scored")]
    assert "vehicle_id" not in scored[0]
    expected = {pseudonym(b"test-secret", f"VIN-{i:05d}") for i in range(100)} | {
        pseudonym(b"test-secret", r) for r in {e["vehicle_id"] for e in simulation.generate(
            simulation.FleetSettings(vehicles=6, events=60, seed=3))}}
    assert {r["vehicle_id_pseudonym"] for r in scored} <= expected


def test_bad_records_reach_the_dlq_with_reason_offset_and_original_bytes(scored_run, kafka_bootstrap):
    topic, _, expected_bad, _, _ = scored_run
    dlq = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.dlq")]
    assert len(dlq) == len(expected_bad)
    secret = b"test-secret"
    for record in dlq:
        payload = open_payload(secret, base64.b64decode(record["payload"]))  # sealed: only the secret opens it
        reason, original = expected_bad[record["payload_sha256"]]
        assert payload == original[:PREFIX_BYTES] and record["payload_bytes"] == len(original)
        assert record["payload_truncated"] == (len(original) > PREFIX_BYTES)
        assert record["reason"].startswith(reason), record["reason"]
        assert record["stage"] == reason
        assert record["source_topic"] == topic and record["source_offset"] >= 0
    reasons = " | ".join(sorted(r["reason"] for r in dlq))
    assert "coolant_temp_c" in reasons and "engine_rpm=inf" in reasons and "trailing bytes" in reasons
    assert "dev.vigil.telemetry.v0" in reasons and "failure_label" in reasons


def test_alerts_are_the_episodes_of_the_anomalous_scored_events(scored_run, kafka_bootstrap):
    """With the default alarm rule (1/1/1) every run of an entity's anomalous readings is one episode:
    it opens at the run's first reading and closes at the next normal one."""
    topic = scored_run[0]
    out = outputs(load_schema())
    scored = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.scored")]
    alerts = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.alerts")]
    opens, closes = set(), set()
    by_entity: dict[str, list[dict]] = {}
    for r in scored:
        by_entity.setdefault(r[out.entity], []).append(r)
    for readings in by_entity.values():
        readings.sort(key=lambda r: (r["source_partition"], r["source_offset"]))
        before = False
        for r in readings:
            where = (r["source_partition"], r["source_offset"])
            if r["is_anomaly"] and not before:
                opens.add(where)
            elif before and not r["is_anomaly"]:
                closes.add(where)
            before = bool(r["is_anomaly"])
    assert opens, "the run has anomalous readings"
    assert {(a["source_partition"], a["source_offset"]) for a in alerts if a["status"] == "open"} == opens
    assert {(a["source_partition"], a["source_offset"]) for a in alerts if a["status"] == "closed"} == closes
    assert len(alerts) == len(opens) + len(closes)


def test_every_output_has_exactly_the_contract_fields(scored_run, kafka_bootstrap):
    topic, good, expected_bad, tier, _ = scored_run
    out = outputs(load_schema())
    assert len(read_checked(kafka_bootstrap, f"{topic}.scored", out.scored)) == good
    assert read_checked(kafka_bootstrap, f"{topic}.alerts", out.alerts)
    assert len(read_checked(kafka_bootstrap, f"{topic}.dlq", out.dead_letters)) == len(expected_bad)
    files = [p for p in Path(tier).rglob("*.parquet") if not p.name.startswith(".")] or \
        [p for p in Path(tier).rglob("part-*") if not p.name.startswith(".")]
    import pyarrow.parquet as pq

    # the partition columns dt and hr are the folders, every other tier column is in the files
    assert pq.read_schema(files[0]).names == [n for n in out.tier.names if n not in ("dt", "hr")]


def test_parquet_tier_holds_every_scored_event_by_date_and_hour(scored_run):
    _, good, _, tier, manifest = scored_run
    import pyarrow as pa

    partitioning = ds.partitioning(pa.schema([("dt", pa.string()), ("hr", pa.string())]), flavor="hive")
    dataset = ds.dataset(str(tier), format="parquet", partitioning=partitioning, exclude_invalid_files=True)
    table = dataset.to_table()
    assert table.num_rows == good
    frame = table.to_pandas()
    assert set(frame["model_version"]) == {manifest["version"]}
    assert set(frame["dt"]) == {"2026-01-01"} and set(frame["hr"]) <= {"00", "01"}
    assert any(Path(tier).rglob("_SUCCESS"))
