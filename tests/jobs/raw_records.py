"""Raw Kafka-shaped records (key, value bytes, partition, offset, timestamp, headers) for tests.

``raw_table(t_env, records)`` turns them into a table with the columns of
connectors.flink_kafka.raw_source, through ``from_elements``: the scoring core's ``build()`` is
then tested without a broker. ``collect(table)`` runs a table to its end and returns its rows as
dicts, the way a JSON sink would write them (by column name).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pyflink.table import DataTypes
from pyflink.table.expressions import col

from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, schema_id

RAW_TYPE = DataTypes.ROW([
    DataTypes.FIELD("record_key", DataTypes.BYTES()),
    DataTypes.FIELD("payload", DataTypes.BYTES()),
    DataTypes.FIELD("kafka_partition", DataTypes.INT()),
    DataTypes.FIELD("kafka_offset", DataTypes.BIGINT()),
    DataTypes.FIELD("kafka_timestamp", DataTypes.TIMESTAMP(3)),
    DataTypes.FIELD("kafka_headers", DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES())),
])


@dataclass
class RawRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: dt.datetime = dt.datetime(2026, 1, 1)
    headers: dict[str, bytes] = field(default_factory=dict)


def encoded(schema: dict[str, Any], records: list[dict[str, Any]], key_field: str) -> list[RawRecord]:
    """Records serialised as the project's producers write them (schema header, keyed by entity)."""
    serialize = AvroSerializer(schema)
    header = {SCHEMA_HEADER: schema_id(schema).encode()}
    return [RawRecord(str(r[key_field]).encode(), serialize(r), i % 3, i // 3, headers=dict(header))
            for i, r in enumerate(records)]


def raw_table(t_env: Any, records: list[RawRecord]) -> Any:
    def b(value: bytes | None) -> bytearray | None:  # PyFlink's BYTES take bytearray
        return None if value is None else bytearray(value)

    rows = [(b(r.key), b(r.value), r.partition, r.offset, r.timestamp, {k: b(v) for k, v in r.headers.items()})
            for r in records]
    table = t_env.from_elements(rows, RAW_TYPE)
    # the Kafka source's timestamp column is TIMESTAMP_LTZ(3)
    return table.select(col("record_key"), col("payload"), col("kafka_partition"), col("kafka_offset"),
                        col("kafka_timestamp").cast(DataTypes.TIMESTAMP_LTZ(3)).alias("kafka_timestamp"),
                        col("kafka_headers"))


def collect(table: Any) -> list[dict[str, Any]]:
    from pyflink.table import types

    schema = table.get_schema()
    names = schema.get_field_names()
    # PyFlink cannot hand TIMESTAMP_LTZ values (Java Instants) back to Python: read them as TIMESTAMP(3)
    table = table.select(*[col(n).cast(DataTypes.TIMESTAMP(3)).alias(n)
                           if isinstance(schema.get_field_data_type(n), types.LocalZonedTimestampType) else col(n)
                           for n in names])
    def plain(value: Any, dtype: Any) -> Any:  # nested rows come back without their field names
        if isinstance(dtype, types.ArrayType) and value is not None:
            return [plain(v, dtype.element_type) for v in value]
        if isinstance(dtype, types.RowType) and value is not None:
            return {f.name: plain(v, f.data_type) for f, v in zip(dtype.fields, value)}
        return value

    kinds = [schema.get_field_data_type(n) for n in names]
    with table.execute().collect() as results:
        return [{n: plain(v, k) for n, v, k in zip(names, row, kinds)} for row in results]
