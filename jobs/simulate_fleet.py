"""Simulate a fleet of vehicles into Kafka: correlated telemetry with labelled failure episodes.

    vigil simulate --topic telemetry --vehicles 20 --events 20000 --failure-rate 0.02
    vigil simulate --topic telemetry --vehicles 20 --events 100000 --rate 20   # real time
    vigil simulate --topic hard --events 100000 --failure-modes hard --failure-rate 0.1 \
        --regime-changes 0.1   # the hard case (jobs.simulation.HARD_CLI_FLAGS)

``--failure-modes`` takes mode names and the groups ``default`` (the four abrupt vehicle faults),
``hard`` (sensor_drift, sensor_stuck: one sensor's calibration ramp or frozen value) and ``all``;
``--regime-changes`` is the share of readings spent towing a trailer, unlabelled (not a fault).

Checks the broker, creates the topic, registers the telemetry-v1 schema in the schema store and
produces the records (jobs/simulation: deterministic for a seed) keyed by vehicle_id, with the
Kafka timestamp set to each reading's event time. Exit codes: 0 done, 1 Kafka unreachable or
refusing records, 2 bad flags, 130 interrupted.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.errors import ConnectorError
from connectors.kafka_io import DEFAULT_PARTITIONS, check_broker, create_topic
from jobs.simulation import DEFAULT_FIRMWARE, FIXED_START, FleetSettings, produce, select_modes, summary
from vigil.commands import Options, OptionsError, command, comma_list, option
from vigil.settings import VigilSettings


def _start(text: str) -> str:
    if text not in ("fixed", "now"):
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected 'fixed', 'now' or an ISO 8601 time, got {text!r}") from None
    return text


def _iso(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time, got {text!r}") from None
    return text


class SimulateOptions(Options):
    topic: str = option("telemetry", "Kafka topic to write (created if missing)")
    vehicles: int = option(FleetSettings.vehicles, "vehicles in the fleet")
    events: int = option(FleetSettings.events, "readings of the whole fleet")
    failure_rate: float = option(FleetSettings.failure_rate, "share of labelled (failing) readings, [0, 1)")
    seed: int = option(FleetSettings.seed, "random seed: the same seed gives the same records")
    interval: float | None = option(None, "seconds between one vehicle's readings",
                                    show_default=f"{FleetSettings.interval_s:g}; with --rate, vehicles/rate")
    rate: float = option(0.0, "fleet events per second of wall-clock time (real time from now); 0 = as fast "
                              "as possible")
    start: str | None = option(None, "event time of the first reading: fixed (2026-01-01T00:00:00Z), now, or "
                                     "ISO 8601", parse=_start, show_default="fixed")
    firmware: list[str] = option(list(DEFAULT_FIRMWARE), "firmware versions, comma-separated", parse=comma_list)
    failure_modes: list[str] = option(list(FleetSettings.failure_modes),
                                      "failure modes taking turns, comma-separated names or groups: default, "
                                      "hard (sensor_drift,sensor_stuck), all", parse=comma_list)
    regime_changes: float = option(FleetSettings.regime_changes,
                                   "share of readings spent towing a trailer: a regime change, not a fault (no "
                                   "label), [0, 1)")
    recalibrated_from: str | None = option(None, "event time (ISO 8601 with a zone) from which the gauges read "
                                                 "recalibrated: drift, not a fault (no label)", parse=_iso,
                                           show_default="never")
    partitions: int = option(DEFAULT_PARTITIONS, "partitions if the topic is created", ge=1)


def fleet_settings(o: SimulateOptions) -> FleetSettings:
    """The fleet the options describe; OptionsError names the flag that is wrong."""
    if o.rate < 0 or not math.isfinite(o.rate):
        raise OptionsError(f"--rate must be >= 0, got {o.rate}")
    interval = o.interval if o.interval is not None else FleetSettings.interval_s
    start_text = o.start or "fixed"
    if o.rate > 0:
        # Real-time mode: simulated time runs at wall-clock speed, so the pace sets the interval
        # and the event times start now (a record is produced when its event time comes).
        if o.interval is not None:
            raise OptionsError("--rate and --interval both set the pace; give only one")
        if start_text != "now" and o.start is not None:
            raise OptionsError("--rate produces in real time from now; --start can only be 'now'")
        interval = o.vehicles / o.rate if o.vehicles >= 1 else interval
        start_text = "now"
    start = {"fixed": FIXED_START, "now": datetime.now(timezone.utc)}.get(start_text) \
        or datetime.fromisoformat(start_text)
    try:
        return FleetSettings(vehicles=o.vehicles, events=o.events, interval_s=interval, start=start,
                             failure_rate=o.failure_rate, seed=o.seed, firmware_versions=tuple(o.firmware),
                             failure_modes=select_modes(o.failure_modes), regime_changes=o.regime_changes,
                             recalibrated_from=datetime.fromisoformat(o.recalibrated_from) if o.recalibrated_from
                             else None)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None


def run(settings: VigilSettings, o: SimulateOptions) -> int:
    fleet = fleet_settings(o)
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    create_topic(bootstrap, o.topic, o.partitions)
    schema_store.register(bootstrap, o.topic, load_schema())
    counts = produce(fleet, bootstrap, o.topic, o.rate)
    print(summary(counts, o.topic, fleet.failure_modes))
    if sum(counts.values()) < fleet.events:
        print(f"interrupted after {sum(counts.values())} of {fleet.events} events", file=sys.stderr)
        return 130
    return 0


COMMAND = command("simulate-fleet", __doc__, run, options=SimulateOptions, settings_flags=("kafka.bootstrap_servers",),
                  expected_errors=(ConnectorError,), prog="python -m jobs.simulate_fleet")


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
