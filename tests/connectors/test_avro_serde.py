from __future__ import annotations

import datetime as dt
import io
import json

import pytest

from connectors.avro_serde import (
    AvroDeserializer,
    AvroSerializer,
    feature_columns,
    fingerprint,
    load_schema,
    roles,
    schema_id,
    validate_schema,
)
from connectors.errors import DecodeError, SchemaError

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=dt.timezone.utc)


def reading(**overrides) -> dict:
    schema = load_schema()
    record = {name: float(i) for i, name in enumerate(feature_columns(schema))}
    record.update(vehicle_id="VIN-1", event_time=T0, firmware_version="3.2.1", failure_label=None)
    record.update(overrides)
    return record


def test_telemetry_schema_has_the_connected_car_signals():
    fields = {f["name"] for f in load_schema()["fields"]}
    for required in ("vehicle_id", "event_time", "speed_kmh", "engine_rpm", "throttle_pct", "coolant_temp_c",
                     "intake_air_temp_c", "intake_air_flow_gs", "battery_voltage_v", "battery_level_pct",
                     "current_draw_a", "engine_vibration_mm_s", "tire_pressure_fl_kpa", "tire_pressure_fr_kpa",
                     "tire_pressure_rl_kpa", "tire_pressure_rr_kpa", "accel_x_g", "accel_y_g", "accel_z_g",
                     "firmware_version", "failure_label"):
        assert required in fields


def test_roles_and_features_come_from_the_schema():
    schema = load_schema()
    assert roles(schema) == {"entity": "vehicle_id", "time": "event_time", "label": "failure_label"}
    features = feature_columns(schema)
    assert len(features) == 17
    assert features[0] == "speed_kmh" and features[-1] == "accel_z_g"
    assert "firmware_version" not in features and "event_time" not in features


def test_round_trip_keeps_every_value():
    schema = load_schema()
    record = reading(failure_label="tire_leak")
    back = AvroDeserializer(schema)(AvroSerializer(schema)(record))
    assert back == record


def test_null_label_round_trips_as_none():
    schema = load_schema()
    assert AvroDeserializer(schema)(AvroSerializer(schema)(reading()))["failure_label"] is None


def test_missing_field_names_the_problem():
    record = reading()
    del record["coolant_temp_c"]
    with pytest.raises(ValueError, match="VehicleTelemetry"):
        AvroSerializer(load_schema())(record)


@pytest.mark.parametrize("cut", [1, 10, 60])
def test_truncated_bytes_are_a_decode_error(cut: int):
    schema = load_schema()
    payload = AvroSerializer(schema)(reading())
    with pytest.raises(DecodeError):
        AvroDeserializer(schema)(payload[:cut])


def test_trailing_bytes_are_a_decode_error():
    schema = load_schema()
    payload = AvroSerializer(schema)(reading()) + b"\x00\x01"
    with pytest.raises(DecodeError, match="trailing"):
        AvroDeserializer(schema)(payload)


def test_fingerprint_is_stable_and_ignores_docs():
    schema = load_schema()
    undocumented = json.loads(json.dumps(schema))
    for f in undocumented["fields"]:
        f.pop("doc", None)
    assert fingerprint(schema) == fingerprint(undocumented)
    changed = json.loads(json.dumps(schema))
    changed["fields"][2]["type"] = "float"
    assert fingerprint(schema) != fingerprint(changed)
    assert schema_id(schema).startswith("dev.vigil.telemetry.v1.VehicleTelemetry@")


def test_invalid_schemas_are_refused():
    with pytest.raises(SchemaError):
        validate_schema({"type": "record", "name": "x", "fields": [{"name": "a", "type": "nope"}]})
    with pytest.raises(SchemaError):
        load_schema("telemetry-v999")


# --- values a column cannot hold: refused per record, never raised past the decode ---------------

USER_SCHEMA = {"type": "record", "name": "Press", "namespace": "dev.user", "vigil.entity": "press",
               "fields": [{"name": "press", "type": "string"}, {"name": "cycles", "type": "int"},
                          {"name": "total", "type": "long"}, {"name": "tag", "type": ["null", "bytes"]},
                          {"name": "note", "type": ["null", "string"]}, {"name": "load", "type": "double"}]}
GOOD = {"press": "P-1", "cycles": 7, "total": 2**40, "tag": None, "note": None, "load": 1.5}


@pytest.mark.parametrize("changes, reason", [
    ({"cycles": 2**31}, "cycles: 2147483648 does not fit the field's type int"),
    ({"cycles": -2**31 - 1}, "cycles: -2147483649 does not fit the field's type int"),
    ({"total": 2**63}, "total: 9223372036854775808 does not fit the field's type long"),
    ({"load": 10**400}, "load: int too large to convert to float"),
    ({"tag": 12}, "tag: expected a string for a bytes field, got 12"),
    ({"press": "P-\ud800"}, "press is not encodable as UTF-8 (a lone surrogate)"),
])
def test_json_values_no_column_can_hold_are_decode_errors(changes, reason):
    from connectors.payloads import PayloadDecoder

    decode = PayloadDecoder({**USER_SCHEMA, "vigil.format": "json"})
    assert decode(json.dumps({**GOOD, "cycles": 2**31 - 1, "total": -2**63}).encode())["cycles"] == 2**31 - 1
    with pytest.raises(DecodeError) as caught:
        decode(json.dumps({**GOOD, **changes}).encode())
    assert str(caught.value) == reason


def test_json_lone_surrogates_outside_the_entity_become_question_marks_and_nesting_is_bounded():
    from connectors.payloads import MAX_DEPTH, PayloadDecoder

    decode = PayloadDecoder({**USER_SCHEMA, "vigil.format": "json"})
    record = decode(json.dumps({**GOOD, "note": "a\udc00b", "tag": "x\ud800"}).encode())
    assert record["note"] == "a?b" and record["tag"] == b"x?"
    for depth in (MAX_DEPTH + 1, 5000):
        with pytest.raises(DecodeError, match=f"^nested deeper than {MAX_DEPTH} levels$"):
            decode(b"[" * depth + b"]" * depth)
    with pytest.raises(DecodeError, match="^expected a JSON object, got list$"):
        decode(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)


def test_an_avro_int_beyond_32_bits_is_a_decode_error():
    import fastavro

    wide = fastavro.parse_schema({**USER_SCHEMA, "fields": [
        {**f, "type": "long"} if f["name"] == "cycles" else f for f in USER_SCHEMA["fields"]]})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, wide, {**GOOD, "cycles": 2**35})
    with pytest.raises(DecodeError, match=rf"^cannot decode {len(buf.getvalue())} bytes as Press: "
                                          r"cycles=34359738368 does not fit an Avro int \(32 bits\)$"):
        AvroDeserializer(USER_SCHEMA)(buf.getvalue())
