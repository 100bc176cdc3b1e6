"""The fleet simulator's pure part: settings and a deterministic stream of telemetry records.

``generate(settings)`` yields records matching ``connectors/schemas/telemetry-v1.avsc`` (same
settings and seed => the same records, and a shorter run is a prefix of a longer one), labelled
with the failure mode of the episode they belong to (jobs/simulation/vehicle.py has the physics).

Failure modes come in two groups. ``DEFAULT_MODES`` (the default mix) are abrupt vehicle faults,
outside the normal envelope from their first reading: a per-reading model catches them.
``HARD_MODES`` are faults of one sensor that stay inside the envelope for most of the episode and
show only against the other signals or the sensor's own history: ``sensor_drift`` (a calibration
ramp) and ``sensor_stuck`` (a frozen value). ``regime_changes`` adds unlabelled stretches of
towing a heavy trailer: a changepoint in how the vehicle is driven that is not a fault (bait for
false alarms). ``recalibrated_from`` is drift, not a fault: from that event time on, the fleet's
gauges read offset by ``RECALIBRATION`` (a workshop recalibrated them; no label), which a model
trained before it no longer fits. A benchmark asks for the hard case with
``FleetSettings(failure_modes=HARD_MODES, failure_rate=HARD_FAILURE_RATE,
regime_changes=HARD_REGIME_CHANGES)`` or, on the command line, ``--failure-modes hard`` plus
``HARD_CLI_FLAGS``. Sensor faults last longer than vehicle faults (up to 300 readings), so at the
default rate of 0.02 a vehicle has one in ~3,000 to 15,000 readings: the hard case labels 10 % of
the readings instead.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from connectors.avro_serde import label_values, load_schema
from jobs.simulation.vehicle import EPOCH, FIELDS, SENSOR_FAULTS, Vehicle

FAILURE_MODES: tuple[str, ...] = label_values(load_schema())  # every label the simulator can write
DEFAULT_MODES: tuple[str, ...] = ("engine_vibration", "coolant_overheat", "tire_leak", "battery_drain")
HARD_MODES: tuple[str, ...] = SENSOR_FAULTS  # ("sensor_drift", "sensor_stuck")
HARD_FAILURE_RATE = 0.1
HARD_REGIME_CHANGES = 0.1
# What jobs.simulate_fleet needs besides ``--failure-modes hard`` for the hard case.
HARD_CLI_FLAGS: tuple[str, ...] = ("--failure-rate", f"{HARD_FAILURE_RATE:g}",
                                   "--regime-changes", f"{HARD_REGIME_CHANGES:g}")
# Names that stand for a group of modes where modes are listed by name (the command line).
MODE_GROUPS: dict[str, tuple[str, ...]] = {"default": DEFAULT_MODES, "hard": HARD_MODES, "all": FAILURE_MODES}
FIXED_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
DEFAULT_FIRMWARE: tuple[str, ...] = ("3.1.4", "3.2.0", "3.2.1")
# What ``recalibrated_from`` does to the readings: the tire gauges read 40 kPa high (12 to 14 sd of
# the default fleet's normal readings) and the accelerometer's vertical axis 0.3 g (18 sd; it was
# remounted): a change any model of the old readings sees at once.
RECALIBRATION: dict[str, float] = {"tire_pressure_fl_kpa": 40.0, "tire_pressure_fr_kpa": 40.0,
                                   "tire_pressure_rl_kpa": 40.0, "tire_pressure_rr_kpa": 40.0, "accel_z_g": 0.3}
# Sensors without a slow state. The simulated fleet's coolant warms up, its tires warm and its
# battery voltage follows a charge that climbs after the start, so a minute of those is never
# distributed like the whole training range (their PSI is large in normal minutes too); a minute of
# the fleet is compared with the training baseline on these.
STEADY_SENSORS: tuple[str, ...] = ("accel_x_g", "accel_z_g")
_BLOCK = 256  # readings per vehicle computed at once; fixed so the output never depends on run length


@dataclass(frozen=True)
class FleetSettings:
    """What to simulate. Invalid values raise ValueError naming the value.

    ``events`` counts readings of the whole fleet; each vehicle reports every ``interval_s``
    seconds of event time, starting at ``start`` (timezone-aware; kept to the millisecond, in
    UTC). ``failure_rate`` is the share of readings that carry a failure label, in [0, 1), spread
    over ``failure_modes`` taking turns episode by episode (names from ``FAILURE_MODES``; default
    ``DEFAULT_MODES``; sensor faults are longer, so in a mix they hold most labelled readings).
    ``regime_changes`` is the share of readings, in [0, 1), spent towing a heavy trailer: stretches
    of a few hundred readings, each begun and ended at a standstill, in which throttle, rpm, air
    flow, coolant and electrical load rise the way the physics says; they are not faults and carry
    no label. 0 (the default) leaves the output exactly as without the setting.
    ``recalibrated_from`` (timezone-aware, or None: never) is the event time from which every
    vehicle's gauges read ``RECALIBRATION`` higher (no label); the readings before it are unchanged.
    """

    vehicles: int = 20
    events: int = 20_000
    interval_s: float = 1.0
    start: datetime = FIXED_START
    failure_rate: float = 0.02
    seed: int = 42
    firmware_versions: tuple[str, ...] = DEFAULT_FIRMWARE
    failure_modes: tuple[str, ...] = DEFAULT_MODES
    regime_changes: float = 0.0
    recalibrated_from: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("vehicles", "events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.interval_s, (int, float)) or not math.isfinite(self.interval_s) \
                or round(self.interval_s * 1000) < 1:
            raise ValueError(f"interval_s must be a number of seconds >= 0.001, got {self.interval_s!r}")
        if not isinstance(self.failure_rate, (int, float)) or not 0 <= self.failure_rate < 1:
            raise ValueError(f"failure_rate must be in [0, 1), got {self.failure_rate!r}")
        if isinstance(self.regime_changes, bool) or not isinstance(self.regime_changes, (int, float)) \
                or not 0 <= self.regime_changes < 1:
            raise ValueError(f"regime_changes must be in [0, 1), got {self.regime_changes!r}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ValueError(f"start must be a timezone-aware datetime, got {self.start!r}")
        if self.recalibrated_from is not None and (not isinstance(self.recalibrated_from, datetime)
                                                   or self.recalibrated_from.utcoffset() is None):
            raise ValueError(f"recalibrated_from must be a timezone-aware datetime or None, got "
                             f"{self.recalibrated_from!r}")
        start = self.start.astimezone(timezone.utc)
        object.__setattr__(self, "start", start.replace(microsecond=start.microsecond // 1000 * 1000))
        firmware = tuple(self.firmware_versions) if not isinstance(self.firmware_versions, str) else ()
        if not firmware or not all(isinstance(f, str) and f for f in firmware):
            raise ValueError(f"firmware_versions must be a non-empty list of non-empty strings, "
                             f"got {self.firmware_versions!r}")
        object.__setattr__(self, "firmware_versions", firmware)
        modes = tuple(self.failure_modes) if not isinstance(self.failure_modes, str) else (self.failure_modes,)
        unknown = [m for m in modes if m not in FAILURE_MODES]
        if not modes or unknown or len(set(modes)) != len(modes):
            raise ValueError(f"failure_modes must be distinct names from {FAILURE_MODES}, got "
                             f"{self.failure_modes!r}")
        object.__setattr__(self, "failure_modes", modes)

    @property
    def interval_ms(self) -> int:
        return round(self.interval_s * 1000)

    @property
    def start_ms(self) -> int:
        return (self.start - EPOCH) // timedelta(milliseconds=1)

    @property
    def events_per_vehicle(self) -> int:
        """Readings of the busiest vehicle (the last time step may be cut short)."""
        return -(-self.events // self.vehicles)


def select_modes(names: Iterable[str]) -> tuple[str, ...]:
    """Mode names with the groups of ``MODE_GROUPS`` expanded, in order, without repeats.

    ``["default", "sensor_stuck"]`` -> the four default modes and sensor_stuck. Unknown names are
    kept, for FleetSettings to refuse by name.
    """
    out: list[str] = []
    for name in names:
        for mode in MODE_GROUPS.get(name, (name,)):
            if mode not in out:
                out.append(mode)
    return tuple(out)


def event_time_ms(record: dict[str, Any]) -> int:
    """A record's event time in epoch milliseconds (exact, no float rounding)."""
    return (record["event_time"] - EPOCH) // timedelta(milliseconds=1)


def generate(settings: FleetSettings) -> Iterator[dict[str, Any]]:
    """Yield ``settings.events`` telemetry records in event-time order, interleaved across vehicles.

    Records are dicts with exactly the fields of telemetry-v1; ``event_time`` is a UTC datetime
    with millisecond precision (what fastavro's timestamp-millis writes and reads back).
    ``failure_label`` is None for normal readings, else one of ``settings.failure_modes``.
    Deterministic: every vehicle draws from its own child of ``SeedSequence(settings.seed)`` (and
    its regime changes from that child's own first child, so that turning them on changes nothing
    else).
    """
    children = np.random.SeedSequence(settings.seed).spawn(settings.vehicles)
    fleet = [Vehicle(i, settings, np.random.default_rng(c)) for i, c in enumerate(children)]
    # Every vehicle reports at its own fixed offset within the interval, so ordering one time step
    # by offset orders the whole stream by event time.
    fleet.sort(key=lambda v: (v.offset_ms, v.index))
    remaining = settings.events
    recalibrated = settings.recalibrated_from
    while remaining > 0:
        blocks = [v.next_block(_BLOCK) for v in fleet]
        for step in range(_BLOCK):
            for rows in blocks:
                record = dict(zip(FIELDS, rows[step]))
                if recalibrated is not None and record["event_time"] >= recalibrated:
                    for name, offset in RECALIBRATION.items():
                        record[name] = round(record[name] + offset, 3)
                yield record
                remaining -= 1
                if remaining == 0:
                    return
