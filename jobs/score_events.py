"""The main job: score every telemetry event with the autoencoder inside Flink (Table API).

    python -m jobs.score_events --input telemetry [--bounded]

Kafka (raw bytes) -> decode + pseudonymise (udfs/preprocess) -> validate against the expectation
suite (udfs/validate_features) -> ANOMALY(...) (udfs/anomaly_score) -> one statement set with
four sinks, all exactly-once (Kafka transactions and Parquet files commit on checkpoints):

* ``<input>.scored``   every valid event with score, flag and the model version that scored it;
* ``<input>.alerts``   the anomalous ones;
* ``<input>.dlq``      every record that could not be scored, with the reason, the source
                       topic/partition/offset and the original bytes (base64 in the JSON);
* the object tier      every scored event as Parquet, partitioned by event date and hour
                       (a local folder by default, ``s3a://bucket/prefix`` on an S3 server).

A bad record never fails the job and never disappears: each input record ends up in exactly one
of scored or dlq. The pseudonymisation secret comes from settings and is never printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pyflink.table import Schema, Table, TableDescriptor
from pyflink.table.expressions import call_sql, col, lit

from connectors import flink_kafka, schema_store
from connectors.avro_serde import SCHEMA_HEADER, roles
from connectors.errors import ConnectorError, SchemaError
from connectors.kafka_io import check_broker
from connectors.model_store import ModelStore, ModelStoreError
from connectors.topics import create_topic
from jobs.enrich_telemetry import applicable_derivations
from stack import flink_home
from stack.settings import StackSettings


class ScoreSettings(BaseModel):
    """Settings of the scoring jobs (Table API and DataStream); see ``--help``."""

    input_topic: str = "telemetry"
    scored_topic: str | None = None
    alerts_topic: str | None = None
    dlq_topic: str | None = None
    bootstrap_servers: str
    model_store: str
    model_version: str = "latest"
    model_refresh_seconds: float = Field(30.0, ge=0)
    tier: str | None
    pseudonym_secret: SecretStr
    expectations: str | None = None
    validation_engine: str = Field("compiled", pattern="^(compiled|gx)$")
    group_id: str = "vigil-score-events"
    bounded: bool = False
    parallelism: int = Field(1, ge=1)
    checkpoint_interval: str = "10 s"
    output_partitions: int = Field(3, ge=1)
    s3: dict[str, str] | None = None

    @property
    def topics(self) -> dict[str, str]:
        return {"scored": self.scored_topic or f"{self.input_topic}.scored",
                "alerts": self.alerts_topic or f"{self.input_topic}.alerts",
                "dlq": self.dlq_topic or f"{self.input_topic}.dlq"}

    @classmethod
    def parser(cls, prog: str, doc: str | None) -> argparse.ArgumentParser:
        stack = StackSettings.from_env()
        p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--input", dest="input_topic", default="telemetry")
        p.add_argument("--scored-topic")
        p.add_argument("--alerts-topic")
        p.add_argument("--dlq-topic")
        p.add_argument("--bootstrap-servers", default=stack.bootstrap_servers)
        p.add_argument("--model-store", default=(stack.home / "models").as_uri())
        p.add_argument("--model-version", default="latest", help="a version id, or latest (hot-swapped)")
        p.add_argument("--model-refresh-seconds", type=float, default=30.0,
                       help="how often workers look for a newer LATEST model (0 = never)")
        p.add_argument("--tier", default=(stack.home / "tier" / "scored").as_uri(),
                       help="object tier for Parquet: file:///path or s3a://bucket/prefix; 'none' to disable")
        p.add_argument("--pseudonym-secret-file", type=Path, default=stack.home / "secrets" / "pseudonym.key",
                       help="file holding the secret for vehicle-id pseudonyms (or set VIGIL_PSEUDONYM_SECRET)")
        p.add_argument("--expectations", help="Great Expectations suite JSON (default: the one for the topic's "
                                                 "schema; 'none' to skip validation)")
        p.add_argument("--validation-engine", choices=["compiled", "gx"], default="compiled")
        p.add_argument("--group-id", default="vigil-score-events")
        p.add_argument("--bounded", action="store_true", help="stop at the offsets latest at start")
        p.add_argument("--parallelism", type=int, default=1)
        p.add_argument("--checkpoint-interval", default="10 s")
        p.add_argument("--output-partitions", type=int, default=3)
        return p

    @classmethod
    def from_args(cls, argv: list[str] | None, prog: str = "python -m jobs.score_events",
                  doc: str | None = __doc__) -> ScoreSettings:
        return cls.parse(cls.parser(prog, doc), argv)[0]

    @classmethod
    def parse(cls, parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[ScoreSettings, dict[str, Any]]:
        """(settings, the job's own extra flags) from a parser made by ``parser()`` plus extras."""
        args = vars(parser.parse_args(argv))
        extras = {k: args.pop(k) for k in list(args) if k not in cls.model_fields and k != "pseudonym_secret_file"}
        secret_file: Path = args.pop("pseudonym_secret_file")
        secret = os.environ.get("VIGIL_PSEUDONYM_SECRET")
        if not secret:
            if not secret_file.exists():
                raise ValueError(f"no pseudonymisation secret: {secret_file} does not exist and VIGIL_PSEUDONYM_SECRET "
                                 f"is not set (`python -m stack setup` creates the file)")
            secret = secret_file.read_text().strip()
        stack = StackSettings.from_env()
        tier = None if args["tier"] == "none" else args["tier"]
        uses_s3 = any(str(v).startswith(("s3://", "s3a://")) for v in (args["model_store"], tier or ""))
        s3 = ({"endpoint": stack.s3_endpoint, "access_key": stack.s3_access_key,
               "secret_key": stack.s3_secret_key.get_secret_value()} if uses_s3 else None)
        return cls(**{**args, "tier": tier}, pseudonym_secret=SecretStr(secret), s3=s3), extras


@dataclass
class ScoredTables:
    """What build() declares: every valid event scored, the alerts, and the dead letters."""

    scored: Table
    alerts: Table
    dead_letters: Table


def load_suite(settings: ScoreSettings, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The expectation suite for this topic: --expectations, else the one named after the schema."""
    if settings.expectations == "none":
        return None
    from udfs import validate_features

    if settings.expectations:
        return validate_features.load_suite(settings.expectations)
    if schema.get("namespace") == "dev.vigil.telemetry.v1":
        return validate_features.load_suite("telemetry-v1")
    return None  # replayed topics: decoding + impossible-value checks + scoring still apply


def build(raw: Table, settings: ScoreSettings, schema: dict[str, Any], manifest: dict[str, Any],
          suite: dict[str, Any] | None) -> ScoredTables:
    """Declare decoding, validation, scoring and routing on a raw Kafka table (see raw_source)."""
    from udfs.anomaly_score import anomaly_udf
    from udfs.preprocess import decode_udf, output_columns

    decoded_cols = [name for name, _ in output_columns(schema)]
    entity = f"{roles(schema)['entity']}_pseudonym"
    features = list(manifest["features"]["names"])
    missing = [f for f in features if f not in decoded_cols]
    if missing:
        raise SchemaError(f"model {manifest['version']} needs columns {missing} that topic "
                          f"{settings.input_topic!r} does not have")

    decode = decode_udf(schema, settings.pseudonym_secret.get_secret_value().encode())
    decoded = raw.select(
        col("record_key"), col("payload"), col("kafka_partition"), col("kafka_offset"), col("kafka_timestamp"),
        decode(col("payload"), col("kafka_headers").at(SCHEMA_HEADER)).alias("d"),
    ).select(
        col("record_key"), col("payload"), col("kafka_partition"), col("kafka_offset"), col("kafka_timestamp"),
        *[col("d").get(name).alias(name) for name in decoded_cols],
    )
    if suite is not None:
        from udfs.validate_features import suite_columns, validate_udf

        suite_cols = suite_columns(suite)
        check = validate_udf(suite, suite_cols, settings.validation_engine)(*[col(c) for c in suite_cols])
    else:
        check = call_sql("CAST(NULL AS STRING)")
    anomaly = anomaly_udf(settings.model_store, version=settings.model_version,
                          refresh_seconds=settings.model_refresh_seconds, s3=settings.s3)
    # The boundary comes right after the Python calls: any later expression that reads their
    # results twice (the CASE below, each sink's projection) would otherwise call them again.
    checked = computed_once(decoded.add_columns(
        check.alias("validation_error"),
        anomaly(*[col(f) for f in features]).alias("s"),
    ))
    scored_all = checked.add_columns(
        col("s").get("score").alias("score"),
        col("s").get("is_anomaly").alias("is_anomaly"),
        col("s").get("model_version").alias("model_version"),
    ).add_columns(call_sql(
        "CASE WHEN `error` IS NOT NULL THEN `error` "
        "WHEN validation_error IS NOT NULL THEN CONCAT('validation_failed: ', validation_error) "
        "WHEN score IS NULL THEN 'unscorable: no score' END").alias("dlq_reason"))

    payload_cols = [c for c in decoded_cols if c != "error"]
    derived = applicable_derivations(payload_cols)
    scored = scored_all.where(col("dlq_reason").is_null).select(
        *[col(c) for c in payload_cols],
        *[call_sql(expr).alias(name) for name, expr in derived.items()],
        col("score"), col("is_anomaly"), col("model_version"),
        col("kafka_partition").alias("source_partition"), col("kafka_offset").alias("source_offset"),
    )
    label = roles(schema)["label"]
    time_col = roles(schema)["time"]
    alerts = scored.where(col("is_anomaly")).select(
        col(entity), col(time_col), col("score"), col("model_version"),
        *([col(label)] if label else []), col("source_partition"), col("source_offset"),
    )
    dead_letters = scored_all.where(col("dlq_reason").is_not_null).select(
        col("dlq_reason").alias("reason"),
        call_sql("SPLIT_INDEX(dlq_reason, ':', 0)").alias("stage"),
        lit(settings.input_topic).alias("source_topic"),
        col("kafka_partition").alias("source_partition"), col("kafka_offset").alias("source_offset"),
        col("kafka_timestamp").alias("source_timestamp"),
        col("record_key"), col("payload"), col("model_version"),
    )
    return ScoredTables(scored, alerts, dead_letters)


def computed_once(table: Table) -> Table:
    """The same table behind a DataStream boundary, so every branch reads one computed result.

    The planner pushes each sink's projection down into the Python calls; branches that need
    different columns (the DLQ keeps the payload, the scored topic does not) would otherwise each
    decode, validate and score every record again. Only a StreamTableEnvironment can do this; in a
    plain TableEnvironment (unit tests of build()) the table is returned unchanged.
    """
    from pyflink.table import StreamTableEnvironment

    t_env = table._t_env
    if isinstance(t_env, StreamTableEnvironment):
        return t_env.from_data_stream(t_env.to_data_stream(table))
    return table


def _sink_schema(table: Table) -> Schema:
    return Schema.new_builder().from_row_data_type(table.get_schema().to_row_data_type()).build()


def parquet_tier(path: str, table: Table, time_col: str) -> tuple[TableDescriptor, Table]:
    """Filesystem sink of Parquet files partitioned by event date and hour, and the table to write."""
    partitioned = table.add_columns(
        call_sql(f"DATE_FORMAT(`{time_col}`, 'yyyy-MM-dd')").alias("dt"),
        call_sql(f"DATE_FORMAT(`{time_col}`, 'HH')").alias("hr"),
    )
    descriptor = (TableDescriptor.for_connector("filesystem")
                  .schema(_sink_schema(partitioned))
                  .partitioned_by("dt", "hr")
                  .format("parquet")
                  .option("path", path)
                  .option("sink.partition-commit.policy.kind", "success-file")
                  .build())
    return descriptor, partitioned


def model_manifest(settings: ScoreSettings) -> dict[str, Any]:
    """The manifest of the model the job starts with (its features decide the UDF's arguments)."""
    store = ModelStore(settings.model_store, StackSettings.from_env() if settings.s3 else None)
    return store.manifest(settings.model_version)


def prepare(settings: ScoreSettings) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Client-side checks before anything is submitted: broker, schema, model, suite, topics."""
    check_broker(settings.bootstrap_servers)
    schema = schema_store.require(settings.bootstrap_servers, settings.input_topic)
    manifest = model_manifest(settings)
    suite = load_suite(settings, schema)
    for topic in settings.topics.values():
        create_topic(settings.bootstrap_servers, topic, settings.output_partitions)
    return schema, manifest, suite


def main(argv: list[str] | None = None) -> int:
    try:
        settings = ScoreSettings.from_args(argv)
        schema, manifest, suite = prepare(settings)
        flink_home.activate(StackSettings.from_env())
    except (ConnectorError, SchemaError, ModelStoreError, flink_home.FlinkHomeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from jobs.flink_env import stream_table_environment

    _, t_env = stream_table_environment(parallelism__default=settings.parallelism,
                                        pipeline__name=f"vigil-score-events:{settings.input_topic}",
                                        execution__checkpointing__interval=settings.checkpoint_interval)
    raw = t_env.from_descriptor(flink_kafka.raw_source(
        settings.input_topic, settings.bootstrap_servers, group_id=settings.group_id, bounded=settings.bounded))
    tables = build(raw, settings, schema, manifest, suite)

    topics = settings.topics
    entity = f"{roles(schema)['entity']}_pseudonym"
    statements = t_env.create_statement_set()
    prefix = f"{settings.group_id}-{settings.input_topic}"
    for name, table, key in (("scored", tables.scored, entity), ("alerts", tables.alerts, entity),
                             ("dlq", tables.dead_letters, "record_key")):
        statements.add_insert(flink_kafka.json_sink(topics[name], settings.bootstrap_servers, _sink_schema(table),
                                                    key_field=key, exactly_once=True,
                                                    transactional_prefix=f"{prefix}-{name}"), table)
    if settings.tier:
        descriptor, partitioned = parquet_tier(settings.tier, tables.scored, roles(schema)["time"])
        statements.add_insert(descriptor, partitioned)

    started = time.monotonic()
    result = statements.execute()
    job_id = result.get_job_client().get_job_id()
    print(f"submitted job {job_id}: {settings.input_topic} -> {', '.join(topics.values())}"
          f"{', ' + settings.tier if settings.tier else ''} (model {manifest['version']} from {settings.model_store})",
          flush=True)
    result.wait()
    if settings.bounded:
        print(f"job {job_id} finished in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
