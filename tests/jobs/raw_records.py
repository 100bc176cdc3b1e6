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


def encoded(schema: dict[str, Any], records: list[dict[str, Any]], key_field: str,
            partitions: int = 3) -> list[RawRecord]:
    """Records serialised as the project's producers write them (schema header, keyed by entity: an
    entity's records in one partition, in order, as Kafka's key partitioning puts them)."""
    import zlib

    serialize = AvroSerializer(schema)
    header = {SCHEMA_HEADER: schema_id(schema).encode()}
    next_offset = [0] * partitions
    out = []
    for r in records:
        key = str(r[key_field]).encode()
        partition = zlib.crc32(key) % partitions
        out.append(RawRecord(key, serialize(r), partition, next_offset[partition], headers=dict(header)))
        next_offset[partition] += 1
    return out


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
    import json

    from pyflink.table import types
    from pyflink.table.expressions import call_sql

    schema = table.get_schema()
    names = schema.get_field_names()
    kinds = [schema.get_field_data_type(n) for n in names]
    # PyFlink cannot hand TIMESTAMP_LTZ values (Java Instants) back to Python: read them as TIMESTAMP(3);
    # nor null strings inside arrays of rows: those come back as JSON text
    nested = {n for n, k in zip(names, kinds) if isinstance(k, types.ArrayType)
              and isinstance(k.element_type, types.RowType)}
    table = table.select(*[call_sql(f"JSON_STRING(`{n}`)").alias(n) if n in nested
                           else col(n).cast(DataTypes.TIMESTAMP(3)).alias(n)
                           if isinstance(k, types.LocalZonedTimestampType) else col(n)
                           for n, k in zip(names, kinds)])

    def from_json(value: Any, dtype: Any) -> Any:
        if value is None:
            return None
        if isinstance(dtype, types.RowType):
            return {f.name: from_json(value.get(f.name), f.data_type) for f in dtype.fields}
        if isinstance(dtype, types.ArrayType):
            return [from_json(v, dtype.element_type) for v in value]
        if isinstance(dtype, types.TimestampType):
            return dt.datetime.fromisoformat(value.replace("Z", ""))
        return value

    def plain(name: str, value: Any, dtype: Any) -> Any:
        if name in nested and value is not None:
            return from_json(json.loads(value), dtype)
        return value

    with table.execute().collect() as results:
        return [{n: plain(n, v, k) for n, v, k in zip(names, row, kinds)} for row in results]
