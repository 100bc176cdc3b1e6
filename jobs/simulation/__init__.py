"""The fleet simulator as a library: settings, the record generator and a Kafka producer.

``jobs/simulate_fleet.py`` is its command line.
"""
from jobs.simulation.fleet import DEFAULT_FIRMWARE, FAILURE_MODES, FIXED_START, FleetSettings, event_time_ms, generate
from jobs.simulation.produce import produce, summary
from jobs.simulation.vehicle import PHYSICAL_RANGES

__all__ = ["DEFAULT_FIRMWARE", "FAILURE_MODES", "FIXED_START", "PHYSICAL_RANGES", "FleetSettings", "event_time_ms",
           "generate", "produce", "summary"]
