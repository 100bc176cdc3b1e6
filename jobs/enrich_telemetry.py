"""First streaming job: telemetry (Avro) from Kafka -> derived features -> JSON on another topic.

    python -m jobs.enrich_telemetry --input telemetry --output telemetry.enriched [--bounded]

It reads the input topic through Flink's Kafka connector with the Avro schema registered for the
topic, keeps every reading (no filtering, so counts in == counts out), adds a few derived
features and writes JSON keyed by the entity id. ``--bounded`` stops at the offsets that were
latest when the job started; without it the job runs until cancelled.
"""
from __future__ import annotations

import argparse
import sys
import time

from pydantic import BaseModel, Field
from pyflink.table import Schema, Table
from pyflink.table.expressions import call_sql, col

from connectors import flink_kafka, schema_store
from connectors.avro_serde import roles
from connectors.errors import ConnectorError
from connectors.kafka_io import check_broker
from connectors.topics import create_topic
from jobs.flink_env import table_environment
from stack import flink_home
from stack.settings import StackSettings

TELEMETRY_DERIVED = {
    # lowest tire: a leak shows here first
    "tire_pressure_min_kpa": "LEAST(tire_pressure_fl_kpa, tire_pressure_fr_kpa, tire_pressure_rl_kpa, tire_pressure_rr_kpa)",
    # spread between tires: a single leaking tire raises it even when all are in range
    "tire_pressure_spread_kpa": "GREATEST(tire_pressure_fl_kpa, tire_pressure_fr_kpa, tire_pressure_rl_kpa, tire_pressure_rr_kpa)"
                                " - LEAST(tire_pressure_fl_kpa, tire_pressure_fr_kpa, tire_pressure_rl_kpa, tire_pressure_rr_kpa)",
    "electrical_power_w": "battery_voltage_v * current_draw_a",
    "accel_magnitude_g": "SQRT(accel_x_g * accel_x_g + accel_y_g * accel_y_g + accel_z_g * accel_z_g)",
}


class EnrichSettings(BaseModel):
    """Settings of the enrich job; from CLI flags with defaults from the stack settings."""

    input_topic: str = "telemetry"
    output_topic: str = "telemetry.enriched"
    bootstrap_servers: str
    group_id: str = "vigil-enrich-telemetry"
    bounded: bool = False
    parallelism: int = Field(1, ge=1)
    output_partitions: int = Field(3, ge=1)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> EnrichSettings:
        parser = argparse.ArgumentParser(prog="python -m jobs.enrich_telemetry", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--input", dest="input_topic", default="telemetry")
        parser.add_argument("--output", dest="output_topic", default="telemetry.enriched")
        parser.add_argument("--bootstrap-servers", default=StackSettings.from_env().bootstrap_servers)
        parser.add_argument("--group-id", default="vigil-enrich-telemetry")
        parser.add_argument("--bounded", action="store_true", help="stop at the offsets latest at start")
        parser.add_argument("--parallelism", type=int, default=1)
        parser.add_argument("--output-partitions", type=int, default=3)
        return cls(**vars(parser.parse_args(argv)))


def build(events: Table, derived: dict[str, str] | None = None) -> Table:
    """All input columns plus the derived feature columns and the source partition/offset.

    ``derived`` maps new column names to SQL expressions over the input columns; columns whose
    inputs are missing (e.g. a replayed topic without tire pressures) must not be passed.
    """
    derived = TELEMETRY_DERIVED if derived is None else derived
    physical = [c for c in events.get_schema().get_field_names() if not c.startswith("kafka_")]
    return events.select(
        *[col(c) for c in physical],
        *[call_sql(expr).alias(name) for name, expr in derived.items()],
        col("kafka_partition").alias("source_partition"),
        col("kafka_offset").alias("source_offset"),
    )


def applicable_derivations(columns: list[str]) -> dict[str, str]:
    """The derived features whose input columns all exist in ``columns``."""
    present = set(columns)
    return {name: expr for name, expr in TELEMETRY_DERIVED.items()
            if all(tok in present for tok in _identifiers(expr))}


def _identifiers(expr: str) -> set[str]:
    import re

    return {t for t in re.findall(r"[a-z_][a-z0-9_]*", expr) if t not in {"least", "greatest", "sqrt"}}


def main(argv: list[str] | None = None) -> int:
    settings = EnrichSettings.from_args(argv)
    try:
        check_broker(settings.bootstrap_servers)
        avro_schema = schema_store.require(settings.bootstrap_servers, settings.input_topic)
        create_topic(settings.bootstrap_servers, settings.output_topic, settings.output_partitions)
        flink_home.activate(StackSettings.from_env())
    except (ConnectorError, flink_home.FlinkHomeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    t_env = table_environment(parallelism__default=settings.parallelism,
                              pipeline__name=f"vigil-enrich-telemetry:{settings.input_topic}")

    events = t_env.from_descriptor(flink_kafka.avro_source(
        settings.input_topic, settings.bootstrap_servers, avro_schema,
        group_id=settings.group_id, bounded=settings.bounded))
    columns = [f["name"] for f in avro_schema["fields"]]
    enriched = build(events, applicable_derivations(columns))
    sink_schema = Schema.new_builder().from_row_data_type(enriched.get_schema().to_row_data_type()).build()
    t_env.create_temporary_table("enriched_sink", flink_kafka.json_sink(
        settings.output_topic, settings.bootstrap_servers, sink_schema, key_field=roles(avro_schema)["entity"]))

    started = time.monotonic()
    result = enriched.execute_insert("enriched_sink")
    job_id = result.get_job_client().get_job_id()
    print(f"submitted job {job_id}: {settings.input_topic} -> {settings.output_topic}", flush=True)
    if settings.bounded:
        result.wait()
        print(f"job {job_id} finished in {time.monotonic() - started:.1f}s", flush=True)
    else:
        result.wait()  # unbounded: runs until cancelled (Ctrl-C)
    return 0


if __name__ == "__main__":
    sys.exit(main())
