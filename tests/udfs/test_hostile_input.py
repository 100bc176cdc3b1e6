"""No input can break the decoder or the dead-letter builder: property-based tests (hypothesis).

Whatever bytes, header or field values arrive (any double, any timestamp the Avro long allows,
any size), decoding returns one row per record with either values or an error, never raises;
sealing a dead letter keeps a bounded, encrypted prefix that the secret opens, and the true size
and digest of the whole payload.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import math

import fastavro
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
from jobs import simulation
from udfs.alert_rules import Hysteresis, Reading, replay
from udfs.dead_letters import PREFIX_BYTES, open_payload, seal
from udfs.preprocess import SQL_MAX_MS, SQL_MIN_MS, DecodeTelemetry, pseudonym

SCHEMA = load_schema()
SECRET = b"fuzz-secret"
TEMPLATE = next(simulation.generate(simulation.FleetSettings(vehicles=1, events=1)))
RAW_TIME_SCHEMA = {**SCHEMA, "fields": [{**f, "type": "long"} if f["name"] == "event_time" else f
                                        for f in SCHEMA["fields"]]}
NUMERIC = [f["name"] for f in SCHEMA["fields"] if f["type"] == "double"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    key = tmp_path_factory.mktemp("fuzz") / "key"
    key.write_bytes(SECRET)
    fn = DecodeTelemetry(SCHEMA, str(key))
    fn.open(None)
    return fn


def encode(record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(RAW_TIME_SCHEMA), record)
    return buf.getvalue()


@FUZZ
@given(payloads=st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=20),
       header=st.one_of(st.none(), st.binary(max_size=60), st.just(schema_id(SCHEMA).encode())))
def test_any_bytes_and_header_give_one_row_each_never_an_exception(decoder, payloads, header):
    frame = decoder.eval(pd.Series(payloads, dtype=object), pd.Series([header] * len(payloads), dtype=object))
    assert len(frame) == len(payloads)
    for i, error in enumerate(frame["error"]):
        if error is None:  # random bytes can be a valid record by chance: then every column is set
            assert frame.at[i, "vehicle_id_pseudonym"].startswith("p-")
        else:
            assert error.split(":")[0] in ("undecodable", "impossible_value") and len(error) <= 500


@FUZZ
@given(millis=st.integers(min_value=-(2**63), max_value=2**63 - 1),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=len(NUMERIC), max_size=len(NUMERIC)))
def test_any_timestamp_and_any_double_decode_or_are_named(decoder, millis, values):
    record = {**TEMPLATE, **dict(zip(NUMERIC, values)), "event_time": millis}
    frame = decoder.eval(pd.Series([encode(record)], dtype=object))
    error = frame.at[0, "error"]
    bad_numbers = [n for n, v in zip(NUMERIC, values) if not math.isfinite(v)]
    if bad_numbers:
        assert error.startswith("impossible_value:") and bad_numbers[0] in error
    elif not SQL_MIN_MS <= millis <= SQL_MAX_MS:
        assert error.startswith("impossible_value: event_time=")
    else:
        assert error is None
        got = frame["event_time"].to_numpy()[0]  # datetime64[ms]: any year 1..9999, not pandas' ns
        assert got.astype("datetime64[ms]").astype("int64") == millis


@FUZZ
@given(key=st.one_of(st.none(), st.binary(max_size=40)), size=st.integers(min_value=0, max_value=3 * PREFIX_BYTES))
def test_a_dead_letter_keeps_a_bounded_sealed_prefix_and_the_true_size(key, size):
    payload = (b"VIN-12345 " * (size // 10 + 1))[:size]
    letter = seal(SECRET, key, payload)
    assert letter["payload_bytes"] == size and letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert letter["payload_truncated"] == (size > PREFIX_BYTES)
    assert open_payload(SECRET, letter["payload"]) == payload[:PREFIX_BYTES]
    assert len(letter["payload"]) <= PREFIX_BYTES + 64
    assert b"VIN-12345" not in letter["payload"]                       # never in the clear
    if key is not None:
        assert letter["key_pseudonym"] == pseudonym(SECRET, key.decode("utf-8", "replace"))
    with pytest.raises(ValueError, match="does not open"):
        open_payload(b"another install", letter["payload"])


@FUZZ
@given(flags=st.lists(st.booleans(), max_size=80), scores=st.lists(st.floats(0, 1e6), min_size=80, max_size=80),
       enter=st.integers(1, 5), extra=st.integers(0, 5), clear=st.integers(1, 8))
def test_the_alarm_rule_pairs_every_close_with_an_open(flags, scores, enter, extra, clear):
    rule = Hysteresis(enter, enter + extra, clear)
    t0 = dt.datetime(2026, 1, 1)
    readings = [Reading(t0 + dt.timedelta(seconds=i), scores[i], 0, i) for i in range(len(flags))]
    events = replay(rule, flags, readings)
    statuses = [e["status"] for e in events]
    assert statuses == (["open", "closed"] * len(events))[:len(events)]
    for e in events:
        assert e["anomalies"] >= (enter if e["status"] == "open" else 1)
        assert e["max_score"] == max(r["score"] for r in e["readings"]) or e["anomalies"] > len(e["readings"])
    assert replay(rule, flags, readings, only_relevant=True) == events


def test_a_huge_valid_looking_record_is_an_error_not_a_crash(decoder):
    serialize = AvroSerializer(SCHEMA)
    huge = serialize({**TEMPLATE, "firmware_version": "x" * 900_000})
    frame = decoder.eval(pd.Series([huge], dtype=object), pd.Series([schema_id(SCHEMA).encode()]))
    assert frame.at[0, "error"] is None  # a long string is valid Avro; the suite's regex routes it
    assert SCHEMA_HEADER == "vigil.schema"
