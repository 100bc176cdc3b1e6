"""One simulated vehicle: its driving profile, physical state and failure episodes, in blocks.

Each vehicle drives trips (accelerate, cruise, brake, stop at lights, park with the engine off) and
its signals follow from that: RPM from speed through a six-speed gear model, throttle from the
speed and acceleration, air flow from RPM and throttle, coolant warming from ambient to a
thermostat-held ~90 degC, alternator charging while the engine runs, tires warming with speed.
Failure episodes are injected so that the labelled share of readings equals the fleet's
``failure_rate``. The vehicle faults (engine_vibration, coolant_overheat, tire_leak, battery_drain:
5 to 40 readings) are outside the normal envelope from their first reading on. The sensor faults
change what one sensor reports, never the physics, and stay plausible reading by reading:

* ``sensor_drift`` (60 to 300 readings): one of coolant, intake air temperature, battery voltage
  or a tire pressure reads ``truth + end * (i + 1) / length`` at the episode's i-th reading, a
  linear calibration ramp to ``end`` (either sign) at its last reading, then reads true again
  (recalibrated); ``|end|`` is 6-15 degC, 5-12 degC, 0.4-0.9 V or 15-35 kPa.
* ``sensor_stuck`` (20 to 180 readings): one of speed, rpm, coolant, intake air temperature, air
  flow, battery voltage or a tire pressure repeats its last reading before the episode, exactly,
  while every other signal goes on (speed, rpm and air flow only where the engine runs throughout
  and, for speed, the vehicle moves: elsewhere their truth is a constant 0 too).

Towing a trailer (the fleet's ``regime_changes``) is a change of regime, not a fault: from a
standstill to a standstill, about 200 to 800 readings, the power asked for is 1.6-2.2 times as
much at the same speed and acceleration (so more throttle, lower gears and higher rpm, more air
flow and heat, a warmer coolant) and the trailer's lights and brakes draw 4-10 A more while the
engine runs (the battery current shows it only where the alternator is at its limit, at idle;
the voltage sags a little); no label. Every value is clipped into its field's physical range (the
schema's ``vigil.range``).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from connectors.avro_serde import load_schema, physical_ranges

if TYPE_CHECKING:
    from jobs.simulation.fleet import FleetSettings

PHYSICAL_RANGES: dict[str, tuple[float, float]] = physical_ranges(load_schema())
_NUMERIC = tuple(PHYSICAL_RANGES)
# Sensor resolution: what a telematics unit would report, and it keeps records readable.
_DECIMALS = (1, 0, 1, 1, 1, 2, 2, 1, 1, 2, 1, 1, 1, 1, 3, 3, 3)
_LOW = np.array([PHYSICAL_RANGES[c][0] for c in _NUMERIC])
_HIGH = np.array([PHYSICAL_RANGES[c][1] for c in _NUMERIC])
FIELDS = ("vehicle_id", "event_time", *_NUMERIC, "firmware_version", "failure_label")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Drivetrain: six gears, final drive 3.9, wheel radius 0.31 m -> 33.4 engine rpm per km/h at ratio 1.
_GEAR_RATIOS = np.array([3.6, 2.1, 1.4, 1.0, 0.8, 0.65])
_RPM_PER_KMH = 33.4
_IDLE_RPM = 800.0
_THERMOSTAT_C = 88.0
_HEAT_PER_GS = 0.018        # K/s of coolant warming per g/s of air flow (fuel burnt ~ air)
_AMBIENT_LOSS = 1 / 1800    # 1/s: a parked engine cools towards ambient with a 30 min time constant
_RADIATOR = 0.25            # 1/s: extra cooling once the thermostat opens
_TIRE_TAU_S = 600.0         # tires warm up (and cool down) over ~10 minutes
_BATTERY_AH = 60.0
# Slowly drifting sensor biases: (amplitude, period in hours) for coolant, intake air, voltage,
# each tire, accel_z. Periods of hours make them look like calibration drift, not signal.
_DRIFT = np.array([(0.8, 5.0), (0.6, 3.0), (0.03, 4.0), (1.0, 7.0), (1.0, 6.0), (1.0, 8.0), (1.0, 5.5),
                   (0.004, 2.5)])
_TIRES = ("tire_pressure_fl_kpa", "tire_pressure_fr_kpa", "tire_pressure_rl_kpa", "tire_pressure_rr_kpa")
# Episode lengths in readings, [low, high): vehicle faults are short, sensor faults long and slow.
_EPISODE_READINGS = {"sensor_drift": (60, 301), "sensor_stuck": (20, 181)}
_FAULT_READINGS = (5, 41)
SENSOR_FAULTS = ("sensor_drift", "sensor_stuck")
# sensor_drift: the sensors that drift and the size of the drift at the episode's end, (low, high).
_DRIFTING = {"coolant_temp_c": (6.0, 15.0), "intake_air_temp_c": (5.0, 12.0), "battery_voltage_v": (0.4, 0.9),
             **{tire: (15.0, 35.0) for tire in _TIRES}}
_STICKING = ("speed_kmh", "engine_rpm", "coolant_temp_c", "intake_air_temp_c", "intake_air_flow_gs",
             "battery_voltage_v", *_TIRES)
# These read exactly 0 with the engine off (speed: standing still), where a frozen value would be
# the true one: they stick only in an episode whose truth moves, else a noisy sensor sticks.
_STICKING_IF_RUNNING = ("speed_kmh", "engine_rpm", "intake_air_flow_gs")
# Towing: stretch length in readings [low, high), power factor, extra amps (low, high).
_TOW_READINGS = (200, 801)
_TOW_PULL = (1.6, 2.2)
_TOW_AMPS = (4.0, 10.0)


def faulty_reading(truth: np.ndarray, mode: str, params: dict[str, float], i: np.ndarray, length: int) -> np.ndarray:
    """What a faulty sensor reports at readings ``i`` (0-based within the episode) of its true values.

    sensor_drift: ``truth + end * (i + 1) / length`` (a ramp that reaches ``end`` at the last
    reading); sensor_stuck: ``value`` (its last good reading) every time.
    """
    if mode == "sensor_drift":
        return truth + params["end"] * (i + 1) / length
    if mode == "sensor_stuck":
        return np.full(len(truth), params["value"])
    raise ValueError(f"not a sensor fault: {mode!r}")


@dataclass
class _Stretch:
    """A planned stretch of towing: begins at the first standstill from ``start``."""

    start: int
    length: int           # planned readings: it ends at the first standstill from start + length
    pull: float
    amps: float
    begun: int | None = None



@dataclass
class _Episode:
    start: int            # reading index of the vehicle
    length: int
    mode: str
    frame_start: int      # the episode may be moved, but never out of its frame
    frame_end: int
    resolved: bool = False
    params: dict[str, float] | None = None

    @property
    def end(self) -> int:
        return self.start + self.length


class Vehicle:
    """One vehicle: its driving profile, physical state and failure schedule, advanced in blocks."""

    def __init__(self, index: int, settings: FleetSettings, rng: np.random.Generator) -> None:
        self.index = index
        self.id = f"veh-{index + 1:04d}"
        self.settings = settings
        self.rng = rng
        self.dt = settings.interval_ms / 1000
        self.offset_ms = int(rng.integers(0, settings.interval_ms))
        self.firmware = settings.firmware_versions[int(rng.integers(len(settings.firmware_versions)))]
        self.ambient = float(rng.uniform(-5, 30))
        self.tire_set = rng.uniform(231, 241, 4)           # kPa, set at this ambient temperature
        self.tire_heat = rng.uniform(0.9, 1.1, 4)          # per-tire share of the warming
        self.parked_load = float(rng.uniform(1.5, 4.0))    # A drawn with the ignition off
        self.load_phase = float(rng.uniform(0, 2 * math.pi))
        self.drift_phase = rng.uniform(0, 2 * math.pi, len(_DRIFT))
        # physical state carried from block to block
        self.coolant = self.ambient + float(rng.uniform(0, 3))
        self.level = float(rng.uniform(65, 90))
        self.tire_rise = 0.0                               # degC above ambient
        self.prev_speed = 0.0
        self.pos = 0                                       # index of the next reading
        # driving profile, generated ahead of the readings that use it
        self._base = 0
        self._speed = np.zeros(0)
        self._on = np.zeros(0, dtype=bool)
        self._lat = np.zeros(0)
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [
            self._stop(float(rng.uniform(5, 60)), engine_on=False)]  # cold start after being parked
        # failures
        self._episodes: deque[_Episode] = deque()
        self._next_frame = 0
        # Modes take turns per vehicle, starting one further along for each vehicle, so even a
        # short run with one episode per vehicle covers every mode about equally.
        self._mode_turn = index + settings.seed
        # Regime changes draw from a stream of their own (the vehicle's seed's first child), so a
        # fleet with them differs from one without only where and because a vehicle tows.
        self._regime_rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(index, 0))) \
            if settings.regime_changes > 0 else None
        self._stretches: deque[_Stretch] = deque()
        self._next_stretch_frame = 0
        self._last_reported: list[float] | None = None     # the previous reading, as reported

    # --- driving profile -------------------------------------------------------------------------
    def _samples(self, seconds: float) -> int:
        return max(1, round(seconds / self.dt))

    def _stop(self, seconds: float, engine_on: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self._samples(seconds)
        return np.zeros(n), np.full(n, engine_on), np.zeros(n)

    def _ramp(self, v0: float, v1: float, turn: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Smooth speed change (smoothstep), peak acceleration of a calm driver; optionally a turn."""
        up = v1 > v0
        peak = self.rng.uniform(0.8, 2.2) if up else self.rng.uniform(1.2, 3.0)  # m/s^2
        seconds = 1.5 * abs(v1 - v0) / 3.6 / peak
        n = self._samples(seconds)
        u = np.arange(1, n + 1) / n
        speed = v0 + (v1 - v0) * u * u * (3 - 2 * u)
        lat = np.zeros(n)
        if turn:  # pulling away round a corner: one lateral bump
            lat = self.rng.choice([-1, 1]) * self.rng.uniform(0.12, 0.3) * np.sin(np.pi * u)
        return speed, np.ones(n, dtype=bool), lat

    def _cruise(self, v: float, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hold ``v`` with slow speed waves and gentle curves; starts exactly at ``v``."""
        n = self._samples(seconds)
        t = np.arange(1, n + 1) * self.dt
        amp, period, phase = self.rng.uniform(0.5, 4), self.rng.uniform(20, 80), self.rng.uniform(0, 2 * np.pi)
        speed = np.maximum(v + amp * (np.sin(2 * np.pi * t / period + phase) - np.sin(phase)), 5.0)
        bend, bend_period = self.rng.uniform(0.01, 0.08), self.rng.uniform(15, 60)
        lat = bend * np.sin(2 * np.pi * t / bend_period + self.rng.uniform(0, 2 * np.pi)) * np.minimum(1, v / 30)
        return speed, np.ones(n, dtype=bool), lat

    def _trip(self) -> None:
        rng = self.rng
        road = rng.choice(3, p=[0.5, 0.3, 0.2])             # city, rural, highway
        low, high = [(25, 60), (60, 100), (95, 130)][road]
        v, turn = 0.0, True
        for leg in range(int(rng.integers(2, 7))):
            target = float(rng.uniform(low, high))
            self._pieces.append(self._ramp(v, target, turn))
            cruise = self._cruise(target, float(rng.uniform(15, 120)))
            self._pieces.append(cruise)
            v, turn = float(cruise[0][-1]), False
            if road == 0 and rng.random() < 0.4:            # traffic light
                self._pieces.append(self._ramp(v, 0.0, False))
                self._pieces.append(self._stop(float(rng.uniform(5, 40)), engine_on=True))
                v, turn = 0.0, True
        self._pieces.append(self._ramp(v, 0.0, False))
        if rng.random() < 0.35:
            self._pieces.append(self._stop(float(rng.uniform(60, 400)), engine_on=False))
        else:
            self._pieces.append(self._stop(float(rng.uniform(5, 40)), engine_on=True))

    def _ensure_profile(self, end: int) -> None:
        """Make the profile cover reading indexes up to ``end`` (exclusive)."""
        have = self._base + len(self._speed)
        while have + sum(len(p[0]) for p in self._pieces) < end:
            self._trip()
        if self._pieces and have < end:
            self._speed = np.concatenate([self._speed, *(p[0] for p in self._pieces)])
            self._on = np.concatenate([self._on, *(p[1] for p in self._pieces)])
            self._lat = np.concatenate([self._lat, *(p[2] for p in self._pieces)])
            self._pieces = []

    # --- failure schedule ------------------------------------------------------------------------
    def _schedule(self, until: int) -> None:
        """Plan episodes for every frame starting before ``until``.

        The timeline is cut into frames of ``round(length / failure_rate)`` readings, each with one
        episode at a random place: the labelled share is then exactly the rate frame by frame,
        instead of drifting the way independent random starts would.
        """
        rate = self.settings.failure_rate
        modes = self.settings.failure_modes
        while rate > 0 and self._next_frame < until:
            mode = modes[self._mode_turn % len(modes)]
            self._mode_turn += 1
            length = int(self.rng.integers(*_EPISODE_READINGS.get(mode, _FAULT_READINGS)))
            frame = max(length + 1, round(length / rate))
            gap = 1 if frame - length >= 2 else 0       # keep neighbouring episodes apart
            start = self._next_frame + int(self.rng.integers(gap, frame - length - gap + 1))
            self._episodes.append(_Episode(start, length, mode, self._next_frame + gap,
                                           self._next_frame + frame - gap))
            self._next_frame += frame

    def _resolve(self, ep: _Episode, earliest: int) -> None:
        """Fix an episode's place and parameters just before its first reading is computed.

        ``earliest`` is the first reading not yet emitted: an episode may move, but not into the past.
        """
        rng = self.rng
        if ep.mode == "engine_vibration":
            # Vibration needs a running engine for the whole episode: move it to a random place
            # near the planned one (within its frame) where the engine runs throughout, else pick
            # another mode.
            first = max(ep.frame_start, earliest, ep.start - 1000)
            last = min(ep.frame_end - ep.length, ep.start + 1000)
            self._ensure_profile(last + ep.length)
            on = self._on[first - self._base:last + ep.length - self._base]
            runs = np.concatenate([[0], np.cumsum(~on)])
            ok = np.flatnonzero(runs[ep.length:] - runs[:-ep.length] == 0)
            if len(ok):
                ep.start = first + int(ok[rng.integers(len(ok))])
            else:
                others = [m for m in self.settings.failure_modes if m != "engine_vibration"]
                if others:
                    ep.mode = others[int(rng.integers(len(others)))]
        if ep.mode == "engine_vibration":
            ep.params = {"factor": float(rng.uniform(3, 8))}
        elif ep.mode == "coolant_overheat":
            ep.params = {"peak": float(rng.uniform(110, 130)), "soak": float(rng.uniform(12, 20)),
                         "fans": float(rng.uniform(18, 28))}
        elif ep.mode == "tire_leak":
            ep.params = {"tire": int(rng.integers(4)), "floor": float(rng.uniform(120, 170))}
        elif ep.mode == "sensor_drift":
            sensor = list(_DRIFTING)[int(rng.integers(len(_DRIFTING)))]
            sign = 1.0 if rng.random() < 0.5 else -1.0
            ep.params = {"sensor": _NUMERIC.index(sensor), "end": sign * float(rng.uniform(*_DRIFTING[sensor]))}
        elif ep.mode == "sensor_stuck":
            sensor = _STICKING[int(rng.integers(len(_STICKING)))]
            if sensor in _STICKING_IF_RUNNING:
                self._ensure_profile(ep.end)
                window = slice(ep.start - self._base, ep.end - self._base)
                if not (self._on[window].all() and (sensor != "speed_kmh" or (self._speed[window] > 0.5).any())):
                    noisy = [s for s in _STICKING if s not in _STICKING_IF_RUNNING]
                    sensor = noisy[int(rng.integers(len(noisy)))]
            ep.params = {"sensor": _NUMERIC.index(sensor)}
        else:
            ep.params = {"volts": float(rng.uniform(11.1, 11.8)), "amps": float(rng.uniform(35, 90)),
                         "drain": float(rng.uniform(0.05, 0.2))}
        ep.resolved = True

    def _episodes_in(self, p: int, n: int) -> list[tuple[_Episode, slice, np.ndarray]]:
        while self._episodes and self._episodes[0].resolved and self._episodes[0].end <= p:
            self._episodes.popleft()
        out = []
        for ep in self._episodes:
            if ep.start >= p + n:
                break
            if not ep.resolved:
                self._resolve(ep, p)
            a, b = max(ep.start, p), min(ep.end, p + n)
            if a < b:
                out.append((ep, slice(a - p, b - p), np.arange(a, b) - ep.start))
        return out

    # --- regime changes --------------------------------------------------------------------------
    def _plan_stretches(self, until: int) -> None:
        """Plan towing stretches for every frame starting before ``until`` (frames as for failures)."""
        share, rng = self.settings.regime_changes, self._regime_rng
        while rng is not None and self._next_stretch_frame < until:
            length = int(rng.integers(*_TOW_READINGS))
            frame = max(length + 1, round(length / share))
            start = self._next_stretch_frame + int(rng.integers(0, frame - length + 1))
            self._stretches.append(_Stretch(start, length, float(rng.uniform(*_TOW_PULL)),
                                            float(rng.uniform(*_TOW_AMPS))))
            self._next_stretch_frame += frame

    def _towing(self, p: int, speed: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Power factor and extra amps per reading of the block at ``p`` (1.0 and 0.0: not towing).

        A trailer is hitched and unhitched at a standstill (profile speed exactly 0), so a stretch
        begins at the first standstill from its planned start and ends at the first one from its
        planned end (the two waits balance, so the towed share is ``regime_changes`` on average);
        both may fall in a later block.
        """
        if self._regime_rng is None:
            return 1.0, 0.0
        n = len(speed)
        self._plan_stretches(p + n)
        pull, amps = np.ones(n), np.zeros(n)
        cursor = 0
        while self._stretches:
            s = self._stretches[0]
            if s.begun is None:
                first = max(s.start - p, cursor)
                stops = np.flatnonzero(speed[first:] == 0) if first < n else ()
                if not len(stops):
                    break
                s.begun = p + first + int(stops[0])
            begin = max(s.begun - p, 0)
            due = max(s.start + s.length - p, begin)
            stops = np.flatnonzero(speed[due:] == 0) if due < n else ()
            end = due + int(stops[0]) if len(stops) else n
            pull[begin:end], amps[begin:end] = s.pull, s.amps
            if end == n and not len(stops):
                break
            self._stretches.popleft()
            cursor = end
        return pull, amps

    # --- signals ---------------------------------------------------------------------------------
    def next_block(self, n: int) -> list[tuple[Any, ...]]:
        """The next ``n`` readings as tuples in ``FIELDS`` order."""
        rng, dt, p = self.rng, self.dt, self.pos
        self._schedule(p + n)
        episodes = self._episodes_in(p, n)
        self._ensure_profile(p + n)
        k = p - self._base
        speed, on, lat = self._speed[k:k + n], self._on[k:k + n], self._lat[k:k + n]
        self._speed, self._on, self._lat = self._speed[k + n:], self._on[k + n:], self._lat[k + n:]
        self._base = p + n
        noise = rng.standard_normal((n, 16))
        t = (np.arange(p, p + n) * self.settings.interval_ms + self.offset_ms) / 1000   # seconds
        drift = _DRIFT[:, 0] * np.sin(2 * np.pi * t[:, None] / (_DRIFT[:, 1] * 3600) + self.drift_phase)

        accel = np.diff(speed, prepend=self.prev_speed) / 3.6 / dt            # m/s^2 over the interval
        self.prev_speed = float(speed[-1])
        moving = speed > 0.5
        pull, trailer = self._towing(p, speed)      # 1.0 and 0.0 when not towing: the same floats
        # Throttle follows the power asked for; off the pedal when idling, braking or parked.
        throttle = 3 + 0.17 * pull * speed + 20 * pull * np.maximum(accel, 0) + 1.2 * noise[:, 0]
        throttle = np.clip(np.where(on & moving & (accel > -0.3), throttle, 0), 0, 100)
        # Highest gear that keeps the engine above a shift point that rises with throttle.
        gear_rpm = speed[:, None] * _RPM_PER_KMH * _GEAR_RATIOS
        gear = np.maximum((gear_rpm >= (1400 + 18 * throttle)[:, None]).sum(axis=1) - 1, 0)
        wheel_rpm = gear_rpm[np.arange(n), gear]
        rpm = np.where(on, np.maximum(wheel_rpm, _IDLE_RPM), 0.0)
        air = np.where(on, 1.5 + rpm / 1000 * (1.3 + 0.3 * throttle), 0.0)
        # Electrical load: ignition loads plus slowly varying accessories (fans, lights, seats).
        load = np.where(on, 14 + 6 * np.sin(2 * np.pi * t / 900 + self.load_phase) + trailer, self.parked_load) \
            + 0.5 * noise[:, 1]
        alternator = 35 + 55 * np.clip((rpm - 800) / 1500, 0, 1)             # A available
        drain = np.zeros(n)
        for ep, sl, _ in episodes:
            if ep.mode == "battery_drain":
                drain[sl] = ep.params["drain"]
        coolant, level, current, tire_rise = self._integrate(on, air, load, alternator, speed, drain)

        # Cold engines idle a little higher until the coolant warms up.
        idle = _IDLE_RPM + 80 * np.clip((50 - coolant) / 60, 0, 1)
        rpm = np.where(on, np.maximum(wheel_rpm, idle) + 12 * noise[:, 2], 0.0)
        air = np.where(on, (1.5 + rpm / 1000 * (1.3 + 0.3 * throttle)) * (1 + 0.03 * noise[:, 3]), 0.0)
        vibration = np.where(on, (0.6 + 0.85 * rpm / 1000 + 0.01 * throttle) * (1 + 0.05 * noise[:, 4]),
                             np.abs(0.03 * noise[:, 4]))
        intake = self.ambient + 3 + 0.3 * np.maximum(coolant - self.ambient, 0) * np.exp(-speed / 25) \
            + drift[:, 1] + 0.3 * noise[:, 5]
        volts = np.where(on, 14.3 - 0.004 * load, 11.9 + 0.8 * level / 100 - 0.01 * load) + drift[:, 2] \
            + np.where(on, 0.04, 0.02) * noise[:, 6]
        tires = self.tire_set * (1 + tire_rise[:, None] * self.tire_heat / (273.15 + self.ambient)) \
            + drift[:, 3:7] + 0.4 * noise[:, 7:11]
        coolant = coolant + drift[:, 0] + 0.3 * noise[:, 11]
        current = current + 0.5 * noise[:, 12]
        ax = accel / 9.81 + np.where(moving, 0.01, 0.003) * noise[:, 13]
        ay = lat + np.where(moving, 0.02, 0.003) * noise[:, 14]
        az = 1 + drift[:, 7] + (0.004 + 0.03 * speed / 130) * noise[:, 15]
        speed = np.where(moving, speed + 0.2 * noise[:, 0], 0.0)

        labels: list[str | None] = [None] * n
        for ep, sl, i in episodes:
            labels[sl] = [ep.mode] * len(i)
            m = len(i)
            if ep.mode in SENSOR_FAULTS:
                continue  # what the sensor reports, below: the physics goes on
            if ep.mode == "engine_vibration":
                vibration[sl] *= ep.params["factor"] * rng.uniform(0.85, 1.15, m)
            elif ep.mode == "coolant_overheat":
                # Pump or thermostat failure: far above the regulated band within a reading or two.
                # The radiator fans run flat out (current) and the engine bay heats up (intake air).
                peak = ep.params["peak"]
                coolant[sl] = peak - (peak - 108) * np.exp(-(i + 1) / 2) + 0.4 * rng.standard_normal(m)
                intake[sl] += ep.params["soak"] * (1 - 0.5 * np.exp(-(i + 1) / 3))
                current[sl] += ep.params["fans"] + rng.standard_normal(m)
            elif ep.mode == "tire_leak":
                # Puncture: a fast initial loss, then a steady decline to the episode's floor.
                j = ep.params["tire"]
                loss = self.tire_set[j] - ep.params["floor"]
                tires[sl, j] -= loss * (0.7 * (1 - np.exp(-(i + 1))) + 0.3 * (i + 1) / ep.length)
            elif ep.mode == "battery_drain":
                # Failed alternator plus a parasitic load: voltage sags, the battery discharges hard.
                volts[sl] = ep.params["volts"] - 0.012 * i + 0.05 * rng.standard_normal(m)
                current[sl] = ep.params["amps"] + 3 * rng.standard_normal(m)
        # Faults end with their episode (repaired, reinflated) so that unlabelled readings stay normal.

        values = np.column_stack([speed, rpm, throttle, coolant, intake, air, volts, level, current, vibration,
                                  tires, ax, ay, az])
        values = np.clip(values, _LOW, _HIGH)
        reported = [np.round(values[:, c], d) for c, d in enumerate(_DECIMALS)]
        for ep, sl, i in episodes:
            if ep.mode in SENSOR_FAULTS:
                self._sensor_fault(reported, ep, sl, i)
        self._last_reported = [float(column[-1]) for column in reported]
        columns = [column.tolist() for column in reported]
        base_ms = self.settings.start_ms + self.offset_ms
        step = self.settings.interval_ms
        times = [EPOCH + timedelta(milliseconds=base_ms + (p + r) * step) for r in range(n)]
        self.pos = p + n
        return list(zip(repeat(self.id), times, *columns, repeat(self.firmware), labels))

    def _sensor_fault(self, reported: list[np.ndarray], ep: _Episode, sl: slice, i: np.ndarray) -> None:
        """Replace one sensor's reported readings (rounded, in range) in ``sl`` by ``faulty_reading``."""
        c = int(ep.params["sensor"])
        if ep.mode == "sensor_stuck" and "value" not in ep.params:
            # The episode starts in this block (i[0] == 0): freeze at the reading before it.
            before = reported[c][sl.start - 1] if sl.start > 0 else \
                (self._last_reported[c] if self._last_reported is not None else reported[c][0])
            ep.params["value"] = float(before)
        column = reported[c]  # np.round's own array, not a view of the physics
        column[sl] = np.round(np.clip(faulty_reading(column[sl], ep.mode, ep.params, i, ep.length),
                                      _LOW[c], _HIGH[c]), _DECIMALS[c])

    def _integrate(self, on: np.ndarray, air: np.ndarray, load: np.ndarray, alternator: np.ndarray,
                   speed: np.ndarray, drain: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step the slow state (coolant, battery charge, tire temperature) through the block.

        Exact exponential steps, so any interval is stable. Returns coolant (degC), battery level
        (%), battery current (A, negative while charging) and tire warming (degC over ambient).
        """
        dt, amb = self.dt, self.ambient
        keep_parked = math.exp(-_AMBIENT_LOSS * dt)
        keep_open = math.exp(-(_AMBIENT_LOSS + _RADIATOR) * dt)
        keep_tire = math.exp(-dt / _TIRE_TAU_S)
        pct_per_amp = dt / 3600 / _BATTERY_AH * 100
        temp, level, rise = self.coolant, self.level, self.tire_rise
        n = len(on)
        coolant, levels, currents, rises = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
        for i, (running, gs, amps, alt, kmh, extra) in enumerate(zip(
                on.tolist(), air.tolist(), load.tolist(), alternator.tolist(), speed.tolist(), drain.tolist())):
            if running:
                heat = _HEAT_PER_GS * gs
                regulated = (heat + _AMBIENT_LOSS * amb + _RADIATOR * _THERMOSTAT_C) / (_AMBIENT_LOSS + _RADIATOR)
                if temp > _THERMOSTAT_C:
                    temp = regulated + (temp - regulated) * keep_open
                else:
                    warm = amb + heat / _AMBIENT_LOSS
                    # the thermostat opens mid-step rather than letting a long step overshoot
                    temp = min(warm + (temp - warm) * keep_parked, max(regulated, _THERMOSTAT_C))
                demand = min(30.0, max(1.0, 1.2 * (92 - level)))           # charge current wanted
                net = amps - min(alt, amps + demand)
            else:
                temp = amb + (temp - amb) * keep_parked
                net = amps
            level = min(100.0, max(5.0, level - net * pct_per_amp - extra))
            rise = 0.12 * kmh + (rise - 0.12 * kmh) * keep_tire
            coolant[i], levels[i], currents[i], rises[i] = temp, level, net, rise
        self.coolant, self.level, self.tire_rise = temp, level, rise
        return np.array(coolant), np.array(levels), np.array(currents), np.array(rises)
