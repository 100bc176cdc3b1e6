from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer, AvroSerializer, label_values, load_schema
from connectors.kafka_io import read_all
from connectors.kafka_io import describe_topic
from jobs.simulate_fleet import SimulateOptions, fleet_settings, main
from jobs.simulation import (
    DEFAULT_MODES,
    FAILURE_MODES,
    HARD_CLI_FLAGS,
    HARD_FAILURE_RATE,
    HARD_MODES,
    HARD_REGIME_CHANGES,
    RECALIBRATION,
    FleetSettings,
    event_time_ms,
    generate,
    select_modes,
    summary,
)
from jobs.simulation import vehicle

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
NUMERIC = list(SCHEMA_RANGES)
# Written out here, like the ranges: the default mix the demo and the other tests' figures rely on.
THE_DEFAULT_MIX = ("engine_vibration", "coolant_overheat", "tire_leak", "battery_drain")
# Hard modes as documented in jobs/simulation/vehicle.py: sensors, |drift| at the end, lengths.
DRIFTS = {"coolant_temp_c": (6, 15), "intake_air_temp_c": (5, 12), "battery_voltage_v": (0.4, 0.9),
          **{tire: (15, 35) for tire in TIRES}}
STICKS = ["speed_kmh", "engine_rpm", "coolant_temp_c", "intake_air_temp_c", "intake_air_flow_gs",
          "battery_voltage_v", *TIRES]
RESOLUTION = dict(zip(NUMERIC, [0.1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.1, 0.1, 0.01, 0.1, 0.1, 0.1, 0.1,
                                0.001, 0.001, 0.001]))
HARD = FleetSettings(vehicles=10, events=30_000, failure_rate=0.15, failure_modes=HARD_MODES, seed=5)
TOWING = FleetSettings(vehicles=8, events=32_000, failure_rate=0.02, seed=5)


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    """20 vehicles x 1000 readings (~17 minutes each) with 5 % labelled failures."""
    return pd.DataFrame(generate(FleetSettings(events=20_000, failure_rate=0.05)))


@pytest.fixture(scope="module")
def normal(fleet: pd.DataFrame) -> pd.DataFrame:
    return fleet[fleet.failure_label.isna()]


@pytest.fixture(scope="module")
def hard() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(what the sensors report, the truth): the same fleet of sensor faults, generated again with
    the faulty sensors reading true (sensor faults draw nothing at reading time, so only they differ)."""
    reported = pd.DataFrame(generate(HARD))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vehicle, "faulty_reading", lambda truth, *_: truth)
        truth = pd.DataFrame(generate(HARD))
    return reported, truth


@pytest.fixture(scope="module")
def towing() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(without, with regime changes): the same fleet and seed, 30 % of the readings towing."""
    return pd.DataFrame(generate(TOWING)), pd.DataFrame(generate(dataclasses.replace(TOWING, regime_changes=0.3)))


def episodes(frame: pd.DataFrame, mode: str) -> list[pd.DataFrame]:
    """The labelled runs of ``mode``, each with the reading before it as its first row; runs cut
    by the end of a vehicle's readings are left out."""
    out = []
    for _, g in frame.groupby("vehicle_id"):
        label = g.failure_label.fillna("")
        runs = (label != label.shift()).cumsum()
        for _, run in g.groupby(runs):
            if run.failure_label.iloc[0] == mode and run.index[-1] != g.index[-1] and run.index[0] != g.index[0]:
                out.append(g.loc[g.index[g.index.get_loc(run.index[0]) - 1]:run.index[-1]])
    return out


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
    assert set(labels) == {"normal", *THE_DEFAULT_MIX}  # the hard modes are opt-in
    for mode in THE_DEFAULT_MIX:
        assert labels[mode] >= 40  # ~250 expected each, from ~11 episodes


def test_the_default_mix_is_unchanged_and_every_label_is_in_the_schema():
    assert FleetSettings().failure_modes == DEFAULT_MODES == THE_DEFAULT_MIX
    assert FleetSettings().regime_changes == 0
    assert HARD_MODES == ("sensor_drift", "sensor_stuck")
    assert FAILURE_MODES == label_values(load_schema()) == (*THE_DEFAULT_MIX, *HARD_MODES)
    assert select_modes(["hard"]) == HARD_MODES and select_modes(["all"]) == FAILURE_MODES
    assert select_modes(["default", "sensor_stuck", "tire_leak"]) == (*THE_DEFAULT_MIX, "sensor_stuck")
    assert select_modes(["sensor_stuck", "gremlins"]) == ("sensor_stuck", "gremlins")  # refused by FleetSettings


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
    modes = {m: fleet[fleet.failure_label == m] for m in THE_DEFAULT_MIX}
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
    ({"failure_modes": ("sensor_stuck", "sensor_stuck")}, "sensor_stuck"), ({"failure_modes": ("hard",)}, "hard"),
    ({"recalibrated_from": datetime(2026, 1, 1)}, "2026"), ({"recalibrated_from": "soon"}, "soon"),
    ({"regime_changes": 1.0}, "1.0"), ({"regime_changes": -0.5}, "-0.5"), ({"regime_changes": math.nan}, "nan"),
])
def test_bad_settings_raise_value_error_naming_the_value(kwargs: dict, named: str):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        FleetSettings(**kwargs)


@pytest.mark.parametrize(("flags", "named"), [
    (["--rate", "20", "--interval", "1"], "--interval"), (["--rate", "20", "--start", "fixed"], "--start"),
    (["--start", "yesterday"], "yesterday"), (["--failure-rate", "1.5"], "1.5"), (["--vehicles", "0"], "0"),
    (["--failure-modes", "hard,gremlins"], "gremlins"), (["--regime-changes", "1.25"], "1.25"),
    (["--recalibrated-from", "after lunch"], "after lunch"), (["--recalibrated-from", "2026-01-01T00:10"], "zone"),
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
    assert all(f"{mode}=" in out for mode in THE_DEFAULT_MIX) and "sensor_" not in out
    assert describe_topic(kafka_bootstrap, topic).messages == 2000
    assert schema_store.lookup(kafka_bootstrap, topic) == load_schema()
    deserialize = AvroDeserializer(load_schema())
    for msg in read_all(kafka_bootstrap, topic):
        record = deserialize(msg.value())
        assert msg.key() == record["vehicle_id"].encode()
        assert msg.timestamp()[1] == event_time_ms(record)


# --- the hard modes and the regime change ------------------------------------------------------------

def test_hard_modes_appear_with_their_labels_only_when_selected(hard):
    reported, _ = hard
    labels = Counter(reported.failure_label.fillna("normal"))
    assert set(labels) == {"normal", *HARD_MODES}
    assert abs(1 - labels["normal"] / len(reported) - 0.15) <= 0.03
    lengths = {mode: [len(e) - 1 for e in episodes(reported, mode)] for mode in HARD_MODES}
    assert len(lengths["sensor_drift"]) >= 8 and len(lengths["sensor_stuck"]) >= 8
    assert 60 <= min(lengths["sensor_drift"]) and max(lengths["sensor_drift"]) <= 300  # long and slow
    assert 20 <= min(lengths["sensor_stuck"]) and max(lengths["sensor_stuck"]) <= 180
    mixed = Counter(r["failure_label"] for r in generate(
        FleetSettings(vehicles=6, events=20_000, failure_rate=0.1, failure_modes=(*DEFAULT_MODES, *HARD_MODES))))
    assert set(mixed) == {None, *FAILURE_MODES}


def test_sensor_faults_change_what_one_sensor_reports_never_the_physics(hard):
    reported, truth = hard
    assert reported.failure_label.equals(truth.failure_label)
    differs = reported[NUMERIC].ne(truth[NUMERIC])
    assert not differs[reported.failure_label.isna()].any().any()  # reads true again after the episode
    for mode in HARD_MODES:
        for e in episodes(reported, mode):
            assert differs.loc[e.index].any().sum() == 1, (mode, e.index[0])


def test_sensor_drift_ramps_one_sensor_away_from_the_truth(hard):
    reported, truth = hard
    drifts = episodes(reported, "sensor_drift")
    seen = set()
    for e in drifts:
        during = e.index[1:]
        offset = reported.loc[during, NUMERIC] - truth.loc[during, NUMERIC]
        (column,) = offset.columns[offset.ne(0).any()]
        seen.add(column)
        ramp, res = offset[column].to_numpy(), RESOLUTION[column]
        low, high = DRIFTS[column]
        assert low - res <= abs(ramp[-1]) <= high + res, (column, ramp[-1])
        assert (np.sign(ramp[ramp != 0]) == np.sign(ramp[-1])).all()
        assert (np.diff(np.abs(ramp)) >= -1e-9).all()  # monotonically away from the truth
        linear = ramp[-1] * np.arange(1, len(ramp) + 1) / len(ramp)
        assert np.abs(ramp - linear).max() <= res + 1e-9  # a straight ramp from ~0 to its end
        assert abs(ramp[0]) <= abs(ramp[-1]) / 50 + res  # starts inside the normal noise
    assert seen <= set(DRIFTS) and len(seen) >= 4


def test_sensor_stuck_repeats_its_last_good_reading_while_the_others_go_on(hard):
    reported, truth = hard
    stuck = episodes(reported, "sensor_stuck")
    seen = set()
    for e in stuck:
        during = e.index[1:]
        differs = reported.loc[during, NUMERIC].ne(truth.loc[during, NUMERIC])
        (column,) = differs.columns[differs.any()]
        seen.add(column)
        assert (reported.loc[during, column] == e[column].iloc[0]).all()  # exactly the reading before
        assert truth.loc[during, column].nunique() > 1  # ... while the truth moved on
        others = [c for c in ("coolant_temp_c", "battery_voltage_v", *TIRES) if c != column]
        assert (reported.loc[during, others].nunique() > 1).all()
    assert seen <= set(STICKS) and len(seen) >= 4


def test_hard_modes_and_regime_changes_are_deterministic_by_seed():
    settings = dataclasses.replace(HARD, vehicles=4, events=8000, regime_changes=0.2)
    a = list(generate(settings))
    assert a == list(generate(settings))
    assert list(generate(dataclasses.replace(settings, events=3333))) == a[:3333]
    b = list(generate(dataclasses.replace(settings, seed=6)))
    assert [r["failure_label"] for r in a] != [r["failure_label"] for r in b]


def test_a_regime_change_shifts_load_rpm_and_coolant_without_a_label(towing):
    before, after = towing
    # Only the vehicles' work changes: the drive, the labels and the failure episodes stay.
    assert after.failure_label.equals(before.failure_label)
    for column in ("speed_kmh", "accel_x_g", "accel_y_g", "accel_z_g", *TIRES):
        assert after[column].equals(before[column]), column
    towed = after.throttle_pct.ne(before.throttle_pct)
    moving = (before.speed_kmh > 5) & (before.engine_rpm > 0)
    assert abs((towed & moving).sum() / moving.sum() - 0.3) <= 0.1
    assert (after.throttle_pct >= before.throttle_pct).all() and towed.any()
    pulled = ((after.throttle_pct - 3) / (before.throttle_pct - 3))[towed & (before.throttle_pct > 10)]
    assert 1.6 <= pulled.median() <= 2.2
    assert (after.intake_air_flow_gs[towed] > before.intake_air_flow_gs[towed]).all()
    assert (after.engine_vibration_mm_s[towed] > before.engine_vibration_mm_s[towed]).all()
    rpm_up = after.engine_rpm[towed] - before.engine_rpm[towed]
    assert (rpm_up >= 0).all() and (rpm_up > 300).mean() > 0.1  # lower gears on part of the drive
    warm = towed & (before.coolant_temp_c > 80)
    coolant_up = (after.coolant_temp_c - before.coolant_temp_c)[warm]
    assert coolant_up.groupby(before.vehicle_id[warm]).mean().gt(0.3).all()  # every vehicle runs warmer
    running = towed & (before.engine_rpm > 0)
    sag = (after.battery_voltage_v - before.battery_voltage_v)[running]
    assert (sag <= 0).all() and sag.mean() < -0.01  # the trailer's lights and brakes load the alternator
    # ... and it lasts: a few long stretches per vehicle, not a scatter of readings. While the
    # pedal is pressed (and not floored), every towed reading shows, so count the switches there.
    pressed = before.throttle_pct.between(10, 50) & (before.engine_rpm > 0)
    for vehicle_id, g in towed[pressed].groupby(before.vehicle_id[pressed]):
        switches = int(g.astype(int).diff().abs().sum())
        assert 1 <= switches <= 12 and g.sum() > 150, (vehicle_id, switches)


def test_regime_changes_off_leave_the_output_exactly_as_before(towing):
    before, _ = towing
    explicit = generate(dataclasses.replace(TOWING, events=4000, regime_changes=0.0, failure_modes=THE_DEFAULT_MIX))
    pd.testing.assert_frame_equal(pd.DataFrame(explicit), before.iloc[:4000])


def test_cli_options_select_modes_and_regime_changes():
    fleet = fleet_settings(SimulateOptions(failure_modes=["hard"], regime_changes=0.1))
    assert fleet.failure_modes == HARD_MODES and fleet.regime_changes == 0.1
    assert HARD_CLI_FLAGS == ("--failure-rate", "0.1", "--regime-changes", "0.1")
    assert (HARD_FAILURE_RATE, HARD_REGIME_CHANGES) == (0.1, 0.1)
    assert fleet_settings(SimulateOptions()).failure_modes == THE_DEFAULT_MIX
    both = fleet_settings(SimulateOptions(failure_modes=["default", "hard"]))
    assert both.failure_modes == FAILURE_MODES
    line = summary(Counter({None: 90, "sensor_drift": 6, "sensor_stuck": 4}), "t", both.failure_modes)
    assert line.endswith("tire_leak=0, battery_drain=0, sensor_drift=6, sensor_stuck=4")


@pytest.mark.kafka
def test_main_produces_the_hard_modes_when_asked(kafka_bootstrap: str, new_topic, capsys: pytest.CaptureFixture[str]):
    topic = new_topic("hard")
    assert main(["--topic", topic, "--events", "6000", "--vehicles", "4", "--failure-modes", "hard", *HARD_CLI_FLAGS,
                 "--bootstrap-servers", kafka_bootstrap]) == 0
    out = capsys.readouterr().out
    assert "produced 6000 events" in out and "tire_leak" not in out
    deserialize = AvroDeserializer(load_schema())
    labels = Counter(deserialize(msg.value())["failure_label"] for msg in read_all(kafka_bootstrap, topic))
    assert set(labels) == {None, *HARD_MODES}
    assert all(f"{mode}={labels[mode]}" in out for mode in HARD_MODES)


def test_a_recalibration_offsets_the_gauges_from_its_time_on_and_changes_nothing_else():
    base = FleetSettings(vehicles=5, events=3000, seed=3)
    at = base.start + timedelta(seconds=300)
    plain = pd.DataFrame(generate(base))
    shifted = pd.DataFrame(generate(dataclasses.replace(base, recalibrated_from=at)))
    after = plain["event_time"] >= at
    assert 0 < after.sum() < len(plain)
    for name in plain.columns:
        if name in RECALIBRATION:
            delta = (shifted[name] - plain[name]).round(3)
            assert (delta[~after] == 0).all() and (delta[after] == RECALIBRATION[name]).all(), name
        else:   # labels too: a recalibration is drift, not a fault
            pd.testing.assert_series_equal(shifted[name], plain[name])
