"""VIGIL_DECODE (the JVM decode, jobs/core/jvm_decode) against the Python decode, on Flink.

The same raw Kafka-shaped records (good readings and hostile ones, in each payload format: Vigil's
Avro, Confluent's wire format, JSON) go through both decodes on the local mini-cluster, and every
decoded row must be identical: the values, the entity pseudonym (connectors/privacy.py's, byte for
byte) and the error, which becomes the dead letter's reason. Then the whole scoring job runs once
with each decode on the same records and must write the same scored records, alerts and dead
letters.

One difference is masked: fastavro names the BytesIO it read from, memory address included, in
"cannot read double from <_io.BytesIO object at 0x...>"; that differs between any two Python
workers as well. JSON that Python's own conversions cannot hold (integers too large for their
column, times past 64 bits of milliseconds, lone surrogates, nesting near Python's recursion
limit) is refused by both with the same reasons (connectors/jvm/README.md).
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import re
import struct
from dataclasses import replace
from typing import Any

import fastavro
import pytest
from pyflink.table.expressions import col

from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
from connectors.privacy import open_payload, pseudonym
from jobs import simulation
from jobs.core import jvm_decode, scoring
from jobs.core.scoring import ScoreOptions, assemble, load_suite
from tests.jobs.raw_records import RawRecord, collect, encoded, raw_table
from tests.trained_model import REF
from udfs.preprocess import decode_udf, output_columns
from vigil.settings import VigilSettings

pytestmark = pytest.mark.flink
SECRET = "jvm-decode-secret"
KEEP = ("kafka_partition", "kafka_offset")
ADDRESS = re.compile(r"object at 0x[0-9a-f]+")


@pytest.fixture(scope="module")
def t_env(flink_activated):
    from jobs.core.flink_env import stream_table_environment

    return stream_table_environment(parallelism__default=1)[1]


@pytest.fixture(scope="module")
def jar(stack_settings):
    return str(jvm_decode.check_jar(jvm_decode.jar_path(stack_settings)))


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    os.environ.pop("VIGIL_PSEUDONYM_SECRET", None)
    key = tmp_path_factory.mktemp("secret") / "key"
    key.write_text(SECRET + "\n")
    return str(key)


def readings(n: int = 40) -> list[dict[str, Any]]:
    return list(simulation.generate(simulation.FleetSettings(vehicles=4, events=n, seed=5, failure_rate=0.2)))


def python_decoded(raw: Any, schema: dict[str, Any], secret_file: str) -> Any:
    """jobs.core.scoring.build's decode step with the Python decode (udfs/preprocess)."""
    decode = decode_udf(schema, secret_file)
    names = [name for name, _ in output_columns(schema)]
    return raw.select(*[col(c) for c in KEEP], decode(col("payload"), col("kafka_headers").at(SCHEMA_HEADER))
                      .alias("d")).select(*[col(c) for c in KEEP], *[col("d").get(n).alias(n) for n in names])


def decode_both(t_env, schema, records, secret_file, jar) -> list[tuple[dict, dict]]:
    """(Python row, JVM row) per record, by (partition, offset); the rows have the same columns."""
    raw = raw_table(t_env, records)
    python = collect(python_decoded(raw, schema, secret_file))
    jvm = collect(jvm_decode.decoded(raw, KEEP, schema, secret_file, jar))
    assert list(python[0]) == list(jvm[0]) == [*KEEP, *[name for name, _ in output_columns(schema)]]

    def key(r: dict) -> tuple[int, int]:
        return r["kafka_partition"], r["kafka_offset"]

    assert sorted(map(key, python)) == sorted(map(key, jvm)) == sorted((r.partition, r.offset) for r in records)
    by_key = {key(r): r for r in jvm}
    return [(p, by_key[key(p)]) for p in sorted(python, key=key)]


def assert_same(pairs: list[tuple[dict, dict]]) -> None:
    for python, jvm in pairs:
        masked = [{**r, "error": ADDRESS.sub("object at 0x…", r["error"]) if r["error"] else None}
                  for r in (python, jvm)]
        assert masked[0] == masked[1]


# --- Vigil's Avro ---------------------------------------------------------------------------------

def raw_times_writer(schema: dict[str, Any]) -> Any:
    """A writer that takes event times as raw longs (to write times no datetime can hold)."""
    writer = {**schema, "fields": [{**f, "type": "long"} if f["name"] == "event_time" else f for f in schema["fields"]]}
    return fastavro.parse_schema(writer)


def avro_records(schema: dict[str, Any]) -> tuple[list[RawRecord], dict[int, str]]:
    """40 good readings and hostile records; the expected stage of each hostile one, by offset."""
    good = readings()
    raw = encoded(schema, good, "vehicle_id", partitions=1)
    serialize = AvroSerializer(schema)
    header = {SCHEMA_HEADER: schema_id(schema).encode()}
    valid = raw[0].value
    template = good[0]
    writer = raw_times_writer(schema)

    def with_time(millis: int, **changes: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, {**template, "event_time": millis, **changes})
        return buf.getvalue()

    rng = random.Random(13)
    hostile: list[tuple[str, bytes | None, dict[str, bytes]]] = [
        ("undecodable", None, header),
        ("undecodable", b"", header),
        ("undecodable", valid + b"\x00", header),
        ("undecodable", valid, {SCHEMA_HEADER: b"dev.other.Thing@0000"}),
        ("undecodable", valid, {SCHEMA_HEADER: b"\xff\xfebroken \xed\xa0\x80 header"}),
        ("undecodable", b"\x08\xc3\x28\xe2\x82" + valid[9:], header),   # a vehicle id that is not UTF-8
        ("undecodable", valid[:-1] + b"\x04", header),                         # union index past the branches
        ("undecodable", b"\xff" * 11, header),                                 # a varint that never ends
        ("undecodable", valid + os.urandom(900_000), header),
        ("impossible_value", serialize({**template, "engine_rpm": math.inf, "speed_kmh": math.nan}), header),
        ("impossible_value", with_time(2**62), header),
        ("impossible_value", with_time(-2**62, coolant_temp_c=-math.inf), header),
        (None, with_time(253_402_300_799_999), header),                         # the last SQL millisecond
        (None, serialize({**template, "failure_label": "coolant_overheat"}), {}),  # no header: read as this topic
        (None, valid[:-1] + b"\x01" + b"\x06hot", header),                     # union index -1: the last branch
    ]
    hostile += [("undecodable", valid[:cut], header) for cut in (1, 5, 10, 12, 40, len(valid) - 1)]
    hostile += [("undecodable", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120))), header)
                for _ in range(30)]
    flipped = []
    for _ in range(40):  # random byte flips: any stage, or none; both decodes must agree
        b = bytearray(rng.choice(raw).value)
        b[rng.randrange(len(b))] = rng.randrange(256)
        flipped.append((None, bytes(b), header))
    expected = {}
    for i, (stage, payload, headers) in enumerate(hostile + flipped):
        raw.append(RawRecord(b"VIN-BAD", payload, 0, 1000 + i, headers=headers))
        if stage is not None or i < len(hostile):
            expected[1000 + i] = stage
    return raw, expected


def test_avro_decodes_identically_good_and_hostile(t_env, secret_file, jar):
    schema = load_schema()
    records, expected = avro_records(schema)
    pairs = decode_both(t_env, schema, records, secret_file, jar)
    assert_same(pairs)
    good = {r.offset: r for r in records[:40]}
    stages = {}
    for python, jvm in pairs:
        offset = jvm["kafka_offset"]
        stages[offset] = jvm["error"].split(":")[0] if jvm["error"] else None
        if offset in good:  # good readings: decoded, pseudonymised with the secret, no error
            assert jvm["error"] is None
            assert jvm["vehicle_id_pseudonym"] == pseudonym(SECRET.encode(), good[offset].key.decode())
    assert all(stages[o] == stage for o, stage in expected.items())
    assert sum(s == "undecodable" for s in stages.values()) >= 40


# --- Confluent's wire format and JSON ---------------------------------------------------------------

def test_confluent_wire_format_decodes_identically(t_env, secret_file, jar):
    schema = {**load_schema(), "vigil.format": "confluent", "vigil.confluent_id": 42}
    body = AvroSerializer(load_schema())
    header = {SCHEMA_HEADER: schema_id(schema).encode()}
    records = []
    for i, r in enumerate(readings(12)):
        value = b"\x00" + struct.pack(">I", 42 if i % 4 else 7) + body(r)
        records.append(RawRecord(r["vehicle_id"].encode(), value, 0, i, headers=header))
    for j, value in enumerate([b"", b"\x00\x00", b"\x01" + records[1].value[1:], records[1].value[:20],
                               records[1].value + b"\x01"]):
        records.append(RawRecord(b"VIN-BAD", value, 1, j, headers=header))
    pairs = decode_both(t_env, schema, records, secret_file, jar)
    assert_same(pairs)
    errors = [jvm["error"] for _, jvm in pairs]
    assert sum(e is None for e in errors) == 9
    assert "undecodable: written with registry schema id 7, this topic is registered with id 42" in errors
    assert "undecodable: not Confluent's wire format (magic byte 01, expected 00)" in errors


def json_documents() -> list[bytes]:
    """JSON payloads, good and hostile (none that fails the Python decode's job)."""
    docs = []
    for i, r in enumerate(readings(12)):
        d = {**r, "event_time": r["event_time"].isoformat() if i % 2 else int(r["event_time"].timestamp() * 1000)}
        docs.append(json.dumps(d).encode())
    template = json.loads(docs[0])
    bad_values = {"speed_kmh": ["12", True, None, [1], float("nan"), 10**30], "engine_rpm": [float("inf"), {"a": 1}],
                  "event_time": ["2026-13-01", "2026-W01-1", "20260101T000000.5+01:00", "soon", 1.5e12, -10**15,
                                 float("nan"), "2026-01-01T12:34:56:78", "0001-01-01T00:00:00+01:00"],
                  "vehicle_id": [7, 1.5, ["x"], "\u00e9t\u00e9 \U0001F697"], "failure_label": [3, None],
                  "firmware_version": [None, {"major": 3}]}
    for name, values in bad_values.items():
        for value in values:
            docs.append(json.dumps({**template, name: value}).encode())
    missing = dict(template)
    del missing["accel_x_g"]
    docs.append(json.dumps(missing).encode())
    text = docs[1].decode()
    docs += [text.encode("utf-16"), text.encode("utf-32-be"), text.encode("utf-8-sig"), text.encode()[:-1],
             b"[1, 2]", b"null", b'{"speed_kmh": 1,}', b"\xff\xfe\xfd", b"{\"a\": \"\\ud800\"}", b"", b"  ",
             b'{"vehicle_id": "v", "event_time": "\\u00zz"}', text.encode() + b" x"]
    rng = random.Random(3)
    for _ in range(30):
        s = list(text)
        for _ in range(3):
            s[rng.randrange(len(s))] = rng.choice('{}[]":,\\0e.- \t')
        docs.append("".join(s).encode())
    return docs


def test_json_decodes_identically(t_env, secret_file, jar):
    schema = {**load_schema(), "vigil.format": "json"}
    header = {SCHEMA_HEADER: schema_id(schema).encode()}
    records = [RawRecord(b"k", doc, 0, i, headers=header) for i, doc in enumerate(json_documents())]
    pairs = decode_both(t_env, schema, records, secret_file, jar)
    assert_same(pairs)
    errors = [jvm["error"] or "" for _, jvm in pairs]
    assert sum(e == "" for e in errors) >= 12
    assert "undecodable: speed_kmh: expected a number, got '12'" in errors
    assert "undecodable: not JSON: Expecting property name enclosed in double quotes: line 1 column 17 (char 16)" \
        in errors
    assert "impossible_value: engine_rpm=inf" in errors


def test_json_that_once_failed_the_python_decodes_job_is_dead_lettered_alike_by_both(t_env, secret_file, jar):
    """Records the Python decode used to raise on outside its per-record handling (its job restarted
    on them, forever): both decodes now give each its row and the same reason."""
    schema = {**load_schema(), "vigil.format": "json"}
    header = {SCHEMA_HEADER: schema_id(schema).encode()}
    template = json.loads(json_documents()[0])
    docs = [json.dumps({**template, "speed_kmh": 10**400}).encode(),
            json.dumps({**template, "event_time": 1e300}).encode(),
            json.dumps({**template, "vehicle_id": "v-\ud800"}).encode(),
            b"[" * 2000 + b"]" * 2000,
            json.dumps(template).encode(),
            json.dumps({**template, "event_time": -10**30, "speed_kmh": float("nan")}).encode(),
            json.dumps({**template, "firmware_version": "fw-\udc00-x"}).encode(),
            json.dumps({**template, "vehicle_id": "v-\ud800", "speed_kmh": "fast"}).encode(),
            json.dumps({**template, "firmware_version": [[[[1]]]]}).encode(),
            b'{"a": ' + b"[" * 995 + b"]" * 995 + b"}",
            b'{"a": "' + b"[" * 2000 + b'"}',
            b"[" * 1500 + b"}"]
    records = [RawRecord(b"k", doc, 0, i, headers=header) for i, doc in enumerate(docs)]
    pairs = decode_both(t_env, schema, records, secret_file, jar)
    assert_same(pairs)
    errors = [jvm["error"] for _, jvm in pairs]
    assert errors[0] == "undecodable: speed_kmh: int too large to convert to float"
    assert errors[1].startswith("impossible_value: event_time=") and errors[1].endswith("outside the years 1..9999")
    assert errors[2] == "undecodable: vehicle_id is not encodable as UTF-8 (a lone surrogate)"
    assert errors[3] == "undecodable: nested deeper than 990 levels"
    assert errors[4] is None and pairs[4][1]["vehicle_id_pseudonym"] == pseudonym(SECRET.encode(),
                                                                                 template["vehicle_id"])
    assert errors[9] == "undecodable: nested deeper than 990 levels"
    assert errors[10] == "undecodable: missing field 'vehicle_id'"  # brackets inside a string are text


# --- the secret, the jar --------------------------------------------------------------------------

def test_the_plan_names_the_secret_file_never_the_secret(t_env, secret_file, jar):
    raw = raw_table(t_env, encoded(load_schema(), readings(4), "vehicle_id"))
    plan = jvm_decode.decoded(raw, KEEP, load_schema(), secret_file, jar).explain()
    assert secret_file in plan and SECRET not in plan


def test_a_jar_that_is_missing_or_for_another_flink_is_refused(tmp_path):
    with pytest.raises(jvm_decode.JvmDecodeError, match="make setup"):
        jvm_decode.check_jar(tmp_path / "missing.jar")
    import zipfile

    other = tmp_path / "other.jar"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("vigil-flink-functions.properties", "flink.version=1.20.0\n")
    with pytest.raises(jvm_decode.JvmDecodeError, match="built for Flink 1.20.0"):
        jvm_decode.check_jar(other)


# --- the whole job --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan(trained_model, secret_file):
    schema = load_schema()
    settings = VigilSettings.load({"model.store": trained_model[0], "pseudonym.secret_file": secret_file,
                                   "tier": "none"})
    options = ScoreOptions(input_topic="raw.telemetry", model=REF, bounded=True, alarm_enter=3, alarm_within=5,
                           alarm_clear=2)
    return assemble(settings, options, schema, trained_model[1], load_suite(None, schema), job="test-jvm-decode")


def test_the_scoring_job_writes_the_same_outputs_with_either_decode(t_env, plan, jar):
    schema = load_schema()
    records, _ = avro_records(schema)
    # a vehicle with a flat tire for 4 of its 30 readings: an alarm episode opens and closes
    hot = list(simulation.generate(simulation.FleetSettings(vehicles=1, events=30, seed=9, failure_rate=0.0)))
    for i, r in enumerate(hot):
        r["vehicle_id"] = "VIN-HOT"
        if 10 <= i < 14:
            r.update(tire_pressure_fl_kpa=15.0, failure_label="tire_leak")
    records += [RawRecord(r.key, r.value, 2, i, headers=r.headers)
                for i, r in enumerate(encoded(schema, hot, "vehicle_id", partitions=1))]
    outputs = []
    assert plan.decode_jar is None  # the plan's options name no decode: Python's (the DataStream job's)
    for decode_jar in (None, jar):  # --decode python, then --decode jvm
        tables = scoring.build(raw_table(t_env, records), replace(plan, decode_jar=decode_jar))
        outputs.append([collect(t) for t in (tables.scored, tables.alerts, tables.dead_letters)])

    def by_source(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda r: (r["source_partition"], r["source_offset"]))

    (scored_p, alerts_p, dlq_p), (scored_j, alerts_j, dlq_j) = outputs
    assert len(scored_p) > 40 and len(dlq_p) > 40 and alerts_p
    assert by_source(scored_p) == by_source(scored_j)
    assert by_source(alerts_p) == by_source(alerts_j)
    # dead letters: the same, but each seal has its own nonce; the sealed payloads open to the same bytes
    for p, j in zip(by_source(dlq_p), by_source(dlq_j), strict=True):
        opened = [None if r["payload"] is None else open_payload(SECRET.encode(), bytes(r["payload"])) for r in (p, j)]
        assert opened[0] == opened[1]
        assert ({**p, "payload": None, "reason": ADDRESS.sub("", p["reason"])}
                == {**j, "payload": None, "reason": ADDRESS.sub("", j["reason"])})


# --- the Table job's options: --decode, --profile, --delivery -------------------------------------

def test_the_table_jobs_options_choose_the_decode_the_profile_and_the_sinks_delivery(trained_model, secret_file,
                                                                                     jar, stack_settings, tmp_path):
    from jobs import score_events
    from jobs.core.execute import environment_overrides
    from jobs.core.flink_env import stream_table_environment
    from jobs.core.scoring import PRODUCER_PROFILES, PROFILES

    schema = load_schema()
    settings = stack_settings.model_copy(update={"tier": "none"})

    def planned(**options) -> scoring.ScoringPlan:
        return assemble(settings, score_events.TableScoreOptions(input_topic="raw.telemetry", model=REF, **options),
                        schema, trained_model[1], None, job="test-options")

    default = planned()
    assert default.decode_jar == jar and default.knobs == {} and default.exactly_once
    chosen = planned(decode="python", profile="low-latency", delivery="at-least-once")
    assert chosen.decode_jar is None and not chosen.exactly_once
    assert chosen.knobs == PROFILES["low-latency"] and chosen.knobs["python.fn-execution.bundle.time"] == "10"
    assert default.producer == PRODUCER_PROFILES["throughput"] and chosen.producer == {"linger.ms": "0"}
    # the profile reaches the job's configuration
    config = stream_table_environment(**environment_overrides(chosen, None))[1].get_config()
    assert {key: config.get(key, None) for key in chosen.knobs} == chosen.knobs
    # the sinks follow --delivery, and batch as the profile says
    inserts = []

    class Statements:
        def add_insert(self, descriptor, table):
            inserts.append(dict(descriptor._j_table_descriptor.getOptions()))

    from jobs.core import sinks

    t_env = stream_table_environment(parallelism__default=1)[1]
    for plan_, guarantee, linger in ((default, "exactly-once", "20"), (chosen, "at-least-once", "0")):
        inserts.clear()
        sinks.attach(Statements(), scoring.build(raw_table(t_env, avro_records(schema)[0][:3]), plan_), plan_)
        assert [o["sink.delivery-guarantee"] for o in inserts] == [guarantee] * 3
        assert [o.get("properties.linger.ms") for o in inserts] == [linger] * 3
    # without the jar (a machine where make setup did not build it), one clear line
    elsewhere = settings.model_copy(update={"home": tmp_path})
    with pytest.raises(jvm_decode.JvmDecodeError, match=r"does not exist; build it with `make setup`"):
        assemble(elsewhere, score_events.TableScoreOptions(input_topic="raw.telemetry", model=REF), schema,
                 trained_model[1], None, job="test-options")
