"""First streaming job: telemetry (Avro) from Kafka -> derived features -> JSON on another topic.

    python -m jobs.enrich_telemetry --input telemetry --output telemetry.enriched [--bounded]

It reads the input topic through Flink's Kafka connector with the Avro schema registered for the
topic, keeps every reading (no filtering, so counts in == counts out), adds the derived features
the schema declares (``vigil.derived``) and writes JSON keyed by the entity id. --bounded stops at
the offsets that were latest when the job started; without it the job runs until cancelled.
"""
from __future__ import annotations

import sys
import time

from pyflink.table import Schema, Table
from pyflink.table.expressions import call_sql, col

from connectors import flink_kafka, schema_store
from connectors.avro_serde import derived_features, roles
from connectors.errors import ConnectorError
from connectors.kafka_io import DEFAULT_PARTITIONS, check_broker, create_topic
from stack import flink_home
from vigil.commands import Options, command, option
from vigil.settings import VigilSettings


class EnrichOptions(Options):
    input_topic: str = option("telemetry", "Kafka topic to read (its schema must be registered)", flag="--input")
    output_topic: str = option("telemetry.enriched", "topic to write", flag="--output")
    group_id: str = option("vigil-enrich-telemetry", "Kafka consumer group")
    bounded: bool = option(False, "stop at the offsets that were latest when the job started")
    parallelism: int = option(1, "parallelism of the job", ge=1)
    output_partitions: int = option(DEFAULT_PARTITIONS, "partitions of the output topic if it is created", ge=1)


def build(events: Table, derived: dict[str, str]) -> Table:
    """All input columns plus the derived feature columns and the source partition/offset.

    ``derived`` maps new column names to SQL expressions over the input columns
    (connectors.avro_serde.derived_features: only those whose inputs the table has).
    """
    physical = [c for c in events.get_schema().get_field_names() if not c.startswith("kafka_")]
    return events.select(
        *[col(c) for c in physical],
        *[call_sql(expr).alias(name) for name, expr in derived.items()],
        col("kafka_partition").alias("source_partition"),
        col("kafka_offset").alias("source_offset"),
    )


def run(settings: VigilSettings, o: EnrichOptions) -> int:
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    avro_schema = schema_store.require(bootstrap, o.input_topic)
    create_topic(bootstrap, o.output_topic, o.output_partitions)
    flink_home.activate(settings)
    from jobs.core.flink_env import table_environment

    t_env = table_environment(parallelism__default=o.parallelism,
                              pipeline__name=f"vigil-enrich-telemetry:{o.input_topic}")
    events = t_env.from_descriptor(flink_kafka.avro_source(o.input_topic, bootstrap, avro_schema,
                                                           group_id=o.group_id, bounded=o.bounded))
    columns = [f["name"] for f in avro_schema["fields"]]
    enriched = build(events, derived_features(avro_schema, columns))
    sink_schema = Schema.new_builder().from_row_data_type(enriched.get_schema().to_row_data_type()).build()
    t_env.create_temporary_table("enriched_sink", flink_kafka.json_sink(
        o.output_topic, bootstrap, sink_schema, key_field=roles(avro_schema)["entity"]))
    started = time.monotonic()
    result = enriched.execute_insert("enriched_sink")
    job_id = result.get_job_client().get_job_id()
    print(f"submitted job {job_id}: {o.input_topic} -> {o.output_topic}", flush=True)
    from jobs.core.flink_env import detached

    if detached(t_env):  # flink run -d: the job runs on in the cluster, the client is done
        return 0
    result.wait()  # unbounded: runs until cancelled (Ctrl-C)
    if o.bounded:
        print(f"job {job_id} finished in {time.monotonic() - started:.1f}s", flush=True)
    return 0


COMMAND = command("enrich-telemetry", __doc__, run, options=EnrichOptions, settings_flags=("kafka.bootstrap_servers",),
                  expected_errors=(ConnectorError, flink_home.FlinkHomeError), prog="python -m jobs.enrich_telemetry")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
