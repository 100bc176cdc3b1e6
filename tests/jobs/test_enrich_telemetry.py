from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from connectors import schema_store
from connectors.avro_serde import derived_features, load_schema
from connectors.kafka_io import AvroProducer, read_all
from jobs import enrich_telemetry
from tests.connectors.test_avro_serde import reading

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def t_env(flink_activated):
    from jobs.core.flink_env import table_environment

    return table_environment(streaming=False, parallelism__default=1)


def test_build_adds_exact_derived_features(t_env):
    from pyflink.table import DataTypes

    cols = ["vehicle_id", "tire_pressure_fl_kpa", "tire_pressure_fr_kpa", "tire_pressure_rl_kpa",
            "tire_pressure_rr_kpa", "battery_voltage_v", "current_draw_a", "accel_x_g", "accel_y_g", "accel_z_g"]
    row_type = DataTypes.ROW(
        [DataTypes.FIELD(c, DataTypes.STRING() if c == "vehicle_id" else DataTypes.DOUBLE()) for c in cols]
        + [DataTypes.FIELD("kafka_partition", DataTypes.INT()), DataTypes.FIELD("kafka_offset", DataTypes.BIGINT())])
    events = t_env.from_elements(
        [("A", 240.0, 238.0, 150.0, 241.0, 14.0, 20.0, 0.3, 0.4, 1.2, 2, 17),
         ("B", 235.0, 235.0, 235.0, 235.0, 12.5, -4.0, 0.0, 0.0, 1.0, 0, 3)], row_type)
    out = enrich_telemetry.build(events, derived_features(load_schema(), cols))
    rows = {r[0]: r for r in out.execute().collect()}
    names = out.get_schema().get_field_names()
    a = dict(zip(names, rows["A"]))
    assert a["tire_pressure_min_kpa"] == 150.0
    assert a["tire_pressure_spread_kpa"] == 91.0
    assert a["electrical_power_w"] == pytest.approx(280.0)
    assert a["accel_magnitude_g"] == pytest.approx(math.sqrt(0.09 + 0.16 + 1.44))
    assert (a["source_partition"], a["source_offset"]) == (2, 17)
    b = dict(zip(names, rows["B"]))
    assert b["tire_pressure_spread_kpa"] == 0.0 and b["electrical_power_w"] == pytest.approx(-50.0)


def test_derivations_skip_columns_a_topic_does_not_have():
    derived = derived_features(load_schema(), ["battery_voltage_v", "current_draw_a", "x"])
    assert list(derived) == ["electrical_power_w"]


@pytest.mark.kafka
def test_job_on_real_kafka_writes_exactly_the_produced_count(kafka_bootstrap, new_topic, flink_activated):
    source, target = new_topic("telemetry"), new_topic("enriched")
    schema = load_schema()
    schema_store.register(kafka_bootstrap, source, schema)
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    produced = 300
    with AvroProducer(kafka_bootstrap, source, schema) as producer:
        for i in range(produced):
            record = reading(vehicle_id=f"V{i % 11}", event_time=t0 + dt.timedelta(seconds=i),
                             battery_voltage_v=12.0 + i / 1000, current_draw_a=10.0,
                             failure_label="battery_drain" if i % 50 == 0 else None)
            producer.send(record, key=record["vehicle_id"])

    code = enrich_telemetry.main(["--input", source, "--output", target, "--bounded",
                                  "--bootstrap-servers", kafka_bootstrap, "--group-id", f"g-{target}"])
    assert code == 0
    out = [json.loads(m.value()) for m in read_all(kafka_bootstrap, target)]
    assert len(out) == produced
    assert sorted({o["vehicle_id"] for o in out}) == sorted({f"V{i}" for i in range(11)})
    assert sum(o["failure_label"] == "battery_drain" for o in out) == produced // 50
    by_time = {o["event_time"]: o for o in out}
    first = by_time["2026-03-01T00:00:00"]
    assert first["electrical_power_w"] == pytest.approx(120.0)
    # every source record appears once: (partition, offset) pairs are unique
    assert len({(o["source_partition"], o["source_offset"]) for o in out}) == produced


def test_missing_schema_is_reported_not_crashed(kafka_bootstrap, new_topic, capsys):
    source = new_topic("noschema")
    code = enrich_telemetry.main(["--input", source, "--output", source + ".out", "--bounded",
                                  "--bootstrap-servers", kafka_bootstrap])
    assert code == 1
    assert f"no schema is registered for topic {source!r}" in capsys.readouterr().err
