"""The sinks of a scoring job, attached to its outputs: three Kafka topics and the Parquet tier.

Exactly-once by default: the Kafka sinks write in transactions that commit on checkpoints
(consumers read them with ``isolation.level=read_committed``); ``--delivery at-least-once`` makes
each record visible at once instead (a restart may write one twice). The filesystem sink commits
its part files on checkpoints. Each sink's schema, JSON field names and Kafka key come from the
record contract (connectors/records.py).
"""
from __future__ import annotations

from typing import Any

from pyflink.table import TableDescriptor
from pyflink.table.expressions import call_sql

from connectors import flink_kafka
from connectors.records import Contract
from jobs.core.scoring import ScoredTables, ScoringPlan


def attach(statements: Any, tables: ScoredTables, plan: ScoringPlan, *, exactly_once: bool | None = None) -> None:
    """Add one INSERT per output to ``statements`` (a StatementSet); the tier when the plan has one.

    ``exactly_once``: the Kafka sinks' delivery (default: the plan's, ``--delivery``)."""
    out = plan.outputs
    exactly_once = plan.exactly_once if exactly_once is None else exactly_once
    for name, table, contract in (("scored", tables.scored, out.scored), ("alerts", tables.alerts, out.alerts),
                                  ("dlq", tables.dead_letters, out.dead_letters)):
        statements.add_insert(kafka_sink(contract, plan.topics[name], plan.bootstrap_servers,
                                         exactly_once=exactly_once, producer=plan.producer,
                                         transactional_prefix=f"{plan.transactional_prefix}-{name}"), table)
    if tables.shadow is not None:
        from connectors.records import shadow_contract

        statements.add_insert(kafka_sink(shadow_contract(plan.schema), plan.topics["shadow"], plan.bootstrap_servers,
                                         exactly_once=exactly_once, producer=plan.producer,
                                         transactional_prefix=f"{plan.transactional_prefix}-shadow"), tables.shadow)
    if plan.tier:
        descriptor, partitioned = parquet_tier(plan.tier, tables.scored, out.time, out.tier)
        statements.add_insert(descriptor, partitioned)


def kafka_sink(contract: Contract, topic: str, bootstrap: str, *, exactly_once: bool = True,
               transactional_prefix: str | None = None, producer: dict[str, str] | None = None) -> TableDescriptor:
    """A JSON Kafka sink of ``contract``'s columns, keyed by its key column (``producer``: extra
    Kafka producer properties, e.g. the plan's batching)."""
    return flink_kafka.json_sink(topic, bootstrap, contract.schema(), key_field=contract.key,
                                 exactly_once=exactly_once, transactional_prefix=transactional_prefix,
                                 producer=producer)


def parquet_tier(path: str, scored: Any, time_col: str | None, contract: Contract) -> tuple[TableDescriptor, Any]:
    """Filesystem sink of Parquet files partitioned by event date and hour, and the table to write."""
    if time_col is None:
        dt, hr = "CAST(NULL AS STRING)", "CAST(NULL AS STRING)"
    else:
        dt, hr = f"DATE_FORMAT(`{time_col}`, 'yyyy-MM-dd')", f"DATE_FORMAT(`{time_col}`, 'HH')"
    partitioned = contract.project(scored.add_columns(call_sql(dt).alias("dt"), call_sql(hr).alias("hr")))
    descriptor = (TableDescriptor.for_connector("filesystem")
                  .schema(contract.schema())
                  .partitioned_by("dt", "hr")
                  .format("parquet")
                  .option("path", path)
                  .option("sink.partition-commit.policy.kind", "success-file")
                  .build())
    return descriptor, partitioned
