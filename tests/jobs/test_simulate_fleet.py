from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer, AvroSerializer, load_schema
from connectors.kafka_io import read_all
from connectors.kafka_io import describe_topic
from jobs.simulate_fleet import main
from jobs.simulation import FAILURE_MODES, FleetSettings, event_time_ms, generate

# Physical ranges as documented in connectors/schemas/telemetry-v1.avsc (kept here on purpose, not
# imported from the simulator, so a wrong range in the implementation fails this test).
SCHEMA_RANGES = {
    "speed_kmh": (0, 250), "engine_rpm": (0, 8000), "throttle_pct": (0, 100), "coolant_temp_c": (-40, 150),
    "intake_air_temp_c": (-40, 90), "intake_air_flow_gs": (0, 300), "battery_voltage_v": (0, 16),
    "battery_level_pct": (0, 100), "current_draw_a": (-50, 300), "engine_vibration_mm_s": (0, 50),
    "tire_pressure_fl_kpa": (0, 400), "tire_pressure_fr_kpa": (0, 400), "tire_pressure_rl_kpa": (0, 400),
    "tire_pressure_rr_kpa": (0, 400), "accel_x_g": (-2, 2), "accel_y_g": (-2, 2), "accel_z_g": (-1, 3),
}
TIRES = ["tire_pressure_fl_kpa", "tire_pressure_fr_kpa", "tire_pressure_rl_kpa", "tire_pressure_rr_kpa"]


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    """20 vehicles x 1000 readings (~17 minutes each) with 5 % labelled failures."""
    return pd.DataFrame(generate(FleetSettings(events=20_000, failure_rate=0.05)))


@pytest.fixture(scope="module")
def normal(fleet: pd.DataFrame) -> pd.DataFrame:
    return fleet[fleet.failure_label.isna()]


def test_same_seed_same_events_and_shorter_runs_are_prefixes():
    a = list(generate(FleetSettings(events=3000, seed=7)))
    assert a == list(generate(FleetSettings(events=3000, seed=7)))
    assert list(generate(FleetSettings(events=1234, seed=7))) == a[:1234]
    b = list(generate(FleetSettings(events=3000, seed=8)))
    assert [r["engine_rpm"] for r in a] != [r["engine_rpm"] for r in b]


def test_records_are_in_event_time_order_with_a_fixed_interval_per_vehicle(fleet: pd.DataFrame):
    assert len(fleet) == 20_000
    assert list(fleet.columns) == [f["name"] for f in load_schema()["fields"]]
    times = fleet.event_time
    assert times.is_monotonic_increasing
    assert times.iloc[0] >= datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert times.iloc[-1] < datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=1000)
    assert fleet.vehicle_id.nunique() == 20 and fleet.vehicle_id.value_counts().eq(1000).all()
    for _, g in fleet.groupby("vehicle_id"):
        assert (g.event_time.diff().dropna() == pd.Timedelta(seconds=1)).all()
        assert g.firmware_version.nunique() == 1
    assert set(fleet.firmware_version) <= {"3.1.4", "3.2.0", "3.2.1"}


def test_labelled_share_matches_the_failure_rate_and_every_mode_occurs(fleet: pd.DataFrame):
    labels = Counter(fleet.failure_label.fillna("normal"))
    assert abs(1 - labels["normal"] / len(fleet) - 0.05) <= 0.01
    assert set(labels) == {"normal", *FAILURE_MODES}
    for mode in FAILURE_MODES:
        assert labels[mode] >= 40  # ~250 expected each, from ~11 episodes
    assert all(label is None or label in FAILURE_MODES for label in fleet.failure_label)


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.2])
def test_labelled_share_at_other_rates(rate: float):
    # Episodes are planned in frames of ~length/rate readings per vehicle, so each vehicle needs a
    # few frames of readings for the share to settle: 5 vehicles x 8000 readings.
    settings = FleetSettings(vehicles=5, events=40_000, failure_rate=rate, seed=3)
    labels = [r["failure_label"] for r in generate(settings)]
    share = sum(label is not None for label in labels) / len(labels)
    assert abs(share - rate) <= max(0.2 * rate, 0.003)


def test_failures_are_episodes_of_consecutive_readings(fleet: pd.DataFrame):
    lengths = []
    for _, g in fleet.groupby("vehicle_id"):
        runs = (g.failure_label.fillna("") != g.failure_label.fillna("").shift()).cumsum()
        for _, run in g.groupby(runs):
            if run.failure_label.iloc[0] is not None:
                assert run.failure_label.nunique() == 1
                lengths.append(len(run))
    assert min(lengths) >= 5 or lengths.count(min(lengths)) == 1  # only a run cut by the end may be short
    assert max(lengths) <= 40


def test_every_signal_is_inside_its_physical_range(fleet: pd.DataFrame):
    for column, (low, high) in SCHEMA_RANGES.items():
        values = fleet[column]
        assert values.notna().all() and np.isfinite(values).all(), column
        assert values.between(low, high).all(), (column, values.min(), values.max())


def test_engine_signals_follow_speed_and_load(normal: pd.DataFrame):
    running = normal[normal.engine_rpm > 0]
    idling = running[running.speed_kmh == 0]
    cruising = running[running.speed_kmh > 60]
    assert len(idling) > 500 and len(cruising) > 2000
    assert 750 <= idling.engine_rpm.median() <= 900
    assert idling.engine_rpm.between(700, 950).mean() > 0.99
    assert cruising.engine_rpm.median() > idling.engine_rpm.median() + 700
    off = normal[normal.engine_rpm == 0]
    assert len(off) > 200
    assert (off.speed_kmh == 0).all() and (off.throttle_pct == 0).all() and (off.intake_air_flow_gs == 0).all()
    moving = running[running.speed_kmh > 5]
    assert np.corrcoef(moving.throttle_pct, moving.accel_x_g)[0, 1] > 0.3
    assert np.corrcoef(running.intake_air_flow_gs, running.engine_rpm * running.throttle_pct)[0, 1] > 0.8
    assert np.corrcoef(running.engine_vibration_mm_s, running.engine_rpm)[0, 1] > 0.8
    assert idling.intake_air_flow_gs.median() < cruising.intake_air_flow_gs.median() / 2


def test_electrical_signals_depend_on_the_engine(normal: pd.DataFrame):
    running = normal[normal.engine_rpm > 0]
    off = normal[normal.engine_rpm == 0]
    assert running.battery_voltage_v.between(13.9, 14.6).mean() > 0.99
    assert off.battery_voltage_v.between(12.2, 12.9).mean() > 0.99
    assert running.current_draw_a.median() < 0 < off.current_draw_a.median()  # charging vs discharging

def test_battery_charge_moves_slowly_except_when_draining(fleet: pd.DataFrame):
    for _, g in fleet.groupby("vehicle_id"):
        step = g.battery_level_pct.diff()
        both_normal = g.failure_label.isna() & g.failure_label.shift().isna()
        assert step[both_normal].abs().max() < 0.3
        draining = (g.failure_label == "battery_drain") & (g.failure_label.shift() == "battery_drain")
        assert (step[draining] <= 0).all() and (step[draining].sum() < 0 or not draining.any())


def test_coolant_warms_up_and_is_regulated(normal: pd.DataFrame):
    index = normal.groupby("vehicle_id").cumcount()
    for _, g in normal.groupby("vehicle_id"):
        assert g.coolant_temp_c.iloc[:10].max() < 40  # cold start at ambient (<= 30 degC)
        assert g.coolant_temp_c.max() > 60
        assert g.coolant_temp_c.iloc[:60].median() < g.coolant_temp_c.iloc[600:].median() - 20
    assert (normal.groupby("vehicle_id").coolant_temp_c.max() > 85).mean() >= 0.9  # most reach ~90 in 17 min
    late_running = normal[(index >= 600) & (normal.engine_rpm > 0)]
    assert late_running.coolant_temp_c.between(80, 96).mean() > 0.8  # thermostat holds ~90 degC
    assert normal.coolant_temp_c.max() < 100
    assert normal.intake_air_temp_c.max() < 60


def test_physics_of_motion(fleet: pd.DataFrame, normal: pd.DataFrame):
    assert 0.98 < normal.accel_z_g.mean() < 1.02
    for _, g in fleet.groupby("vehicle_id"):
        dv = g.speed_kmh.diff()
        assert (g.accel_x_g[dv < -5] < 0).all() and (g.accel_x_g[dv > 5] > 0).all()
    tires = normal[TIRES]
    assert tires.stack().between(220, 260).all()
    assert tires.stack().between(228, 255).mean() > 0.99


def test_failure_modes_leave_the_normal_envelope(fleet: pd.DataFrame, normal: pd.DataFrame):
    modes = {m: fleet[fleet.failure_label == m] for m in FAILURE_MODES}
    assert modes["coolant_overheat"].coolant_temp_c.between(104, 135).all()
    assert modes["coolant_overheat"].coolant_temp_c.max() >= 110
    leak = modes["tire_leak"][TIRES]
    assert (leak.min(axis=1) < 225).all() and leak.min(axis=1).min() < 175
    assert (leak.lt(225).sum(axis=1) == 1).all()  # one tire at a time
    drain = modes["battery_drain"]
    assert (drain.battery_voltage_v < 12.0).all() and (drain.current_draw_a > 25).all()
    assert normal.battery_voltage_v.min() > 12.2 and normal.current_draw_a.max() < 20
    # Vibration: compare with what normal readings show at the same rpm.
    running = normal[normal.engine_rpm > 0]
    fit = np.polyfit(running.engine_rpm, running.engine_vibration_mm_s, 1)
    vib = modes["engine_vibration"]
    assert (vib.engine_rpm > 0).all()
    ratio = vib.engine_vibration_mm_s / np.polyval(fit, vib.engine_rpm)
    assert (ratio > 2.3).all() and ratio.median() > 3
    normal_ratio = running.engine_vibration_mm_s / np.polyval(fit, running.engine_rpm)
    assert normal_ratio.max() < 1.6


def test_every_record_round_trips_through_avro():
    schema = load_schema()
    serialize, deserialize = AvroSerializer(schema), AvroDeserializer(schema)
    records = list(generate(FleetSettings(events=3000, failure_rate=0.1)))
    for record in records:
        assert deserialize(serialize(record)) == record
    assert event_time_ms(records[0]) == 1767225600000 + records[0]["event_time"].microsecond // 1000


def test_start_and_interval_are_honoured():
    start = datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    records = list(generate(FleetSettings(vehicles=3, events=30, interval_s=0.25, start=start)))
    assert records[0]["event_time"].tzinfo is not None
    assert records[0]["event_time"] >= start and records[-1]["event_time"] < start + timedelta(seconds=2.5)
    per_vehicle = [r["event_time"] for r in records if r["vehicle_id"] == records[0]["vehicle_id"]]
    assert {b - a for a, b in zip(per_vehicle, per_vehicle[1:])} == {timedelta(milliseconds=250)}


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"vehicles": 0}, "0"), ({"events": -5}, "-5"), ({"failure_rate": 1.0}, "1.0"),
    ({"failure_rate": -0.1}, "-0.1"), ({"failure_rate": math.nan}, "nan"), ({"interval_s": 0}, "0"),
    ({"interval_s": math.inf}, "inf"), ({"seed": -1}, "-1"), ({"start": datetime(2026, 1, 1)}, "2026"),
    ({"firmware_versions": ()}, "()"), ({"failure_modes": ("flat_battery",)}, "flat_battery"),
])
def test_bad_settings_raise_value_error_naming_the_value(kwargs: dict, named: str):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        FleetSettings(**kwargs)


@pytest.mark.parametrize(("flags", "named"), [
    (["--rate", "20", "--interval", "1"], "--interval"), (["--rate", "20", "--start", "fixed"], "--start"),
    (["--start", "yesterday"], "yesterday"), (["--failure-rate", "1.5"], "1.5"), (["--vehicles", "0"], "0"),
])
def test_cli_rejects_bad_flags_before_touching_kafka(flags: list[str], named: str,
                                                   capsys: pytest.CaptureFixture[str]):
    assert main([*flags, "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert named in err and "no Kafka broker" not in err


def test_unreachable_broker_exits_1_with_a_clear_message(capsys: pytest.CaptureFixture[str]):
    t0 = time.monotonic()
    assert main(["--bootstrap-servers", "127.0.0.1:1", "--events", "10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "127.0.0.1:1" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 2
    assert time.monotonic() - t0 < 15


@pytest.mark.kafka
def test_main_produces_every_event_and_registers_the_schema(kafka_bootstrap: str, new_topic,
                                                            capsys: pytest.CaptureFixture[str]):
    topic = new_topic("telemetry", partitions=1)  # main must accept an existing topic
    assert main(["--topic", topic, "--events", "2000", "--vehicles", "5", "--failure-rate", "0.05",
                 "--partitions", "3", "--bootstrap-servers", kafka_bootstrap]) == 0
    out = capsys.readouterr().out
    assert "produced 2000 events" in out and topic in out
    assert all(mode in out for mode in FAILURE_MODES)
    assert describe_topic(kafka_bootstrap, topic).messages == 2000
    assert schema_store.lookup(kafka_bootstrap, topic) == load_schema()
    deserialize = AvroDeserializer(load_schema())
    for msg in read_all(kafka_bootstrap, topic):
        record = deserialize(msg.value())
        assert msg.key() == record["vehicle_id"].encode()
        assert msg.timestamp()[1] == event_time_ms(record)
