"""DecodeTelemetry in the Python process (no Flink): decoding, pseudonyms and the error column."""
from __future__ import annotations

import math
from datetime import timezone

import pandas as pd
import pytest

from connectors.avro_serde import AvroSerializer, load_schema, schema_id
from jobs import simulation
from udfs.preprocess import DecodeTelemetry, output_columns, pseudonym


@pytest.fixture(scope="module")
def schema():
    return load_schema()


@pytest.fixture(scope="module")
def events():
    return list(simulation.generate(simulation.FleetSettings(vehicles=5, events=50, seed=4)))


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "key"
    path.write_text("secret")
    return str(path)


@pytest.fixture
def decoder(secret_file):
    def make(schema) -> DecodeTelemetry:
        d = DecodeTelemetry(schema, secret_file)
        d.open(None)
        return d

    return make


def test_good_records_decode_with_pseudonyms_and_naive_utc_times(schema, events, decoder):
    payloads = pd.Series([AvroSerializer(schema)(e) for e in events])
    frame = decoder(schema).eval(payloads, pd.Series([schema_id(schema).encode()] * len(events)))
    assert list(frame.columns) == [name for name, _ in output_columns(schema)]
    assert frame["error"].isna().all()
    assert frame["vehicle_id_pseudonym"].tolist() == [pseudonym(b"secret", e["vehicle_id"]) for e in events]
    assert not any(e["vehicle_id"] in set(frame["vehicle_id_pseudonym"]) for e in events)
    expected_times = [e["event_time"].astimezone(timezone.utc).replace(tzinfo=None) for e in events]
    assert [t.to_pydatetime() for t in frame["event_time"]] == expected_times
    assert frame["speed_kmh"].tolist() == [e["speed_kmh"] for e in events]
    assert frame["failure_label"].tolist() == [e["failure_label"] for e in events]


def test_bad_records_become_errors_with_null_columns_and_good_ones_survive(schema, events, decoder):
    rows = [dict(e) for e in events[:8]]
    rows[1]["speed_kmh"] = math.nan
    rows[2]["coolant_temp_c"], rows[2]["accel_x_g"] = math.inf, -math.inf
    payloads = [AvroSerializer(schema)(r) for r in rows]
    payloads[3] = None
    payloads[4] = b"\x01\x02not avro"
    payloads[5] = payloads[5] + b"\x00"
    headers = [schema_id(schema).encode()] * len(rows)
    headers[6] = b"dev.vigil.telemetry.v2.VehicleTelemetry@0123"
    headers[7] = None  # no header: decoded on trust
    frame = decoder(schema).eval(pd.Series(payloads), pd.Series(headers))
    errors = frame["error"].tolist()
    assert errors[0] is None and errors[7] is None
    assert errors[1] == "impossible_value: speed_kmh=nan"
    assert errors[2] == "impossible_value: coolant_temp_c=inf, accel_x_g=-inf"
    assert errors[3] == "undecodable: empty payload"
    assert errors[4].startswith("undecodable: cannot decode 10 bytes as VehicleTelemetry")
    assert errors[5] == "undecodable: 1 trailing bytes after a VehicleTelemetry record (wrong schema version?)"
    assert errors[6].startswith("undecodable: written with schema dev.vigil.telemetry.v2.VehicleTelemetry@0123")
    # undecodable rows carry no values; impossible values stay visible for the dead-letter record
    assert frame.loc[[3, 4, 5, 6], ["vehicle_id_pseudonym", "speed_kmh", "event_time"]].isna().all().all()
    assert math.isnan(frame.loc[1, "speed_kmh"]) and frame.loc[1, "vehicle_id_pseudonym"].startswith("p-")
    assert frame.loc[7, "speed_kmh"] == rows[7]["speed_kmh"]


def test_null_is_not_impossible_and_nullable_timestamps_decode(schema, decoder):
    """A nullable feature left empty is the expectation suite's business, not a decode error."""
    fields = [{**f, "type": ["null", f["type"]], "default": None} if f["name"] in ("speed_kmh", "event_time") else f
              for f in schema["fields"]]
    nullable = {**schema, "fields": fields}
    base = next(simulation.generate(simulation.FleetSettings(vehicles=1, events=1, seed=1)))
    payloads = [AvroSerializer(nullable)({**base, "speed_kmh": None, "event_time": None}),
                AvroSerializer(nullable)(base)]
    frame = decoder(nullable).eval(pd.Series(payloads))
    assert frame["error"].tolist() == [None, None]
    assert pd.isna(frame.loc[0, "speed_kmh"]) and pd.isna(frame.loc[0, "event_time"])
    assert frame.loc[1, "event_time"] == pd.Timestamp(base["event_time"].astimezone(timezone.utc).replace(tzinfo=None))


def test_the_secret_never_travels_with_the_function(schema, tmp_path):
    import cloudpickle

    key = tmp_path / "key"
    key.write_text("topsecret-value-42")
    fn = DecodeTelemetry(schema, str(key))
    shipped = cloudpickle.dumps(fn)  # what the job graph carries to the workers
    fn.open(None)                    # a worker reads the secret itself
    assert b"topsecret-value-42" not in shipped
    assert "topsecret-value-42" not in repr(fn)
    assert fn.eval(pd.Series([None], dtype=object))["error"].tolist() == ["undecodable: empty payload"]
