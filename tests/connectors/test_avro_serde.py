from __future__ import annotations

import datetime as dt
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
