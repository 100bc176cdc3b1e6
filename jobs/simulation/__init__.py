"""The fleet simulator as a library: settings, the record generator and a Kafka producer.

``jobs/simulate_fleet.py`` is its command line. ``DEFAULT_MODES`` are the failure modes of the
default mix, ``HARD_MODES`` the sensor faults that a per-reading model misses (opt-in; the hard
case of a benchmark, with unlabelled towing stretches as false-alarm bait, is
``FleetSettings(failure_modes=HARD_MODES, failure_rate=HARD_FAILURE_RATE,
regime_changes=HARD_REGIME_CHANGES)``, or ``--failure-modes hard`` plus ``HARD_CLI_FLAGS``);
``FAILURE_MODES`` is every label the simulator can write.
"""
from jobs.simulation.fleet import (
    DEFAULT_FIRMWARE,
    DEFAULT_MODES,
    FAILURE_MODES,
    FIXED_START,
    HARD_CLI_FLAGS,
    HARD_FAILURE_RATE,
    HARD_MODES,
    HARD_REGIME_CHANGES,
    MODE_GROUPS,
    RECALIBRATION,
    STEADY_SENSORS,
    FleetSettings,
    event_time_ms,
    generate,
    select_modes,
)
from jobs.simulation.produce import produce, summary
from jobs.simulation.vehicle import PHYSICAL_RANGES

__all__ = ["DEFAULT_FIRMWARE", "DEFAULT_MODES", "FAILURE_MODES", "FIXED_START", "HARD_CLI_FLAGS", "HARD_FAILURE_RATE",
           "HARD_MODES", "HARD_REGIME_CHANGES", "MODE_GROUPS", "PHYSICAL_RANGES", "RECALIBRATION", "STEADY_SENSORS",
           "FleetSettings", "event_time_ms",
           "generate", "produce", "select_modes", "summary"]
