"""The records Vigil writes, defined once: the scored event, the alert, the dead letter, the tier.

Every path that writes them takes its columns from here (their order, Flink types, JSON field
names, Kafka keys): the Table job and the DataStream job (jobs/core/), the SQL script
(jobs/sql/, rendered from these definitions) and the demo's summary. tests/connectors/
test_records.py runs each path and checks that it writes exactly these fields.

The columns depend on the input topic's Avro schema (its entity, time and label columns and its
derived features), so each definition is a function of the schema; :func:`outputs` returns all
of them. JSON values are written by Flink's ``json`` format (timestamps ISO-8601, BYTES base64).

**Scored record** (``<input>.scored``, key: the entity pseudonym), one per input record that was
decoded, validated and scored:

* every field of the input schema in schema order, nullable, with the entity id replaced by
  ``<entity>_pseudonym`` (a keyed HMAC: ``p-`` + 20 hex; never the raw id);
* the schema's derived features (``vigil.derived``) whose inputs the schema has, DOUBLE;
* ``score`` DOUBLE (higher = more anomalous), ``is_anomaly`` BOOLEAN (score above the model's
  threshold; never while the entity is warming up), ``model_version`` STRING (the model that
  scored it), ``partial`` STRING (null for a full reading; else the sensors imputed and/or
  ``warming up (k of W readings)``: udfs/feature_set.py);
* ``source_partition`` INT, ``source_offset`` BIGINT: the input record, exactly.

**Alert** (``<input>.alerts``, key: the entity pseudonym): an event of an alarm episode
(udfs/alert_rules.Hysteresis): the entity pseudonym; ``episode_id`` (entity pseudonym, partition
and offset of its first anomalous reading: the same on a replay); ``status`` (``open`` when the
alarm starts, ``closed`` when it ends); the time column, ``score``, ``model_version``, the label
column (when the schema has one), ``source_partition`` and ``source_offset`` of the reading that
caused the event; ``anomalies`` INT (anomalous readings in the episode so far),
``first_event_time`` / ``last_event_time`` (its first and last anomalous reading), ``ended_at``
(the time of the reading that closed it; null while open), ``max_score`` (its peak) and
``readings``: ARRAY of ROW(event_time, score, source_partition, source_offset, label), its
first anomalous readings (at most 16). A per-reading alert is an episode of one reading.

**Dead letter** (``<input>.dlq``, key: ``key_pseudonym``): ``reason`` (``stage: detail``),
``stage`` (undecodable | impossible_value | validation_failed | unscorable), ``source_topic``,
``source_partition``, ``source_offset``, ``source_timestamp`` (the record's Kafka timestamp),
``key_pseudonym`` (the record's Kafka key, pseudonymised like entity ids), ``payload`` (the
original bytes, at most their first 64 KiB, AES-GCM encrypted with a key derived from the
pseudonymisation secret; base64 in JSON; udfs/dead_letters.py), ``payload_bytes`` and
``payload_sha256`` (the whole original payload's size and SHA-256), ``payload_truncated`` and
``model_version`` (set when the record reached the model). No raw id leaves a job.

**Tier** (Parquet, partitioned ``dt=YYYY-MM-DD/hr=HH`` by event time): the scored record's
columns, then ``dt`` and ``hr``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyflink.table import DataTypes, Schema
from pyflink.table.types import DataType

from connectors.avro_serde import derived_features, roles
from connectors.errors import SchemaError

STAGES = ("undecodable", "impossible_value", "validation_failed", "unscorable")
SCORE_FIELDS = ("score", "is_anomaly", "model_version", "partial")
ALERT_STATUSES = ("open", "closed")
SOURCE_FIELDS = ("source_partition", "source_offset")
READING_FIELDS = ("event_time", "score", "source_partition", "source_offset", "label")
PARTITION_FIELDS = ("dt", "hr")


@dataclass(frozen=True)
class Column:
    name: str
    type: DataType


@dataclass(frozen=True)
class Contract:
    """One output: its columns in order and the column whose value is the Kafka key."""

    name: str
    columns: tuple[Column, ...]
    key: str | None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def row_type(self) -> DataType:
        return DataTypes.ROW([DataTypes.FIELD(c.name, c.type) for c in self.columns])

    def type_info(self) -> Any:
        """The DataStream row type of this output (PyFlink TypeInformation)."""
        from pyflink.common import Types

        return Types.ROW_NAMED(self.names, [type_info(c.type) for c in self.columns])

    def schema(self) -> Schema:
        """The Flink table schema of a sink of this output."""
        builder = Schema.new_builder()
        for c in self.columns:
            builder.column(c.name, c.type)
        return builder.build()

    def project(self, table: Any) -> Any:
        """``table`` reduced to exactly these columns, in order, cast to their declared types.

        Raises SchemaError naming the columns ``table`` lacks.
        """
        from pyflink.table.expressions import col

        have = table.get_schema().get_field_names()
        missing = [n for n in self.names if n not in have]
        if missing:
            raise SchemaError(f"the {self.name} output lacks column(s) {missing} of its contract")
        return table.select(*[col(c.name).cast(c.type).alias(c.name) for c in self.columns])

    def sql_columns(self, indent: str = "  ") -> str:
        """The columns as a Flink SQL column list (for CREATE TABLE)."""
        from connectors.flink_kafka import sql_type

        return (",\n" + indent).join(f"`{c.name}` {sql_type(c.type)}" for c in self.columns)


@dataclass(frozen=True)
class Outputs:
    """Every output of a scoring job reading one topic."""

    scored: Contract
    alerts: Contract
    dead_letters: Contract
    tier: Contract
    entity: str          # the pseudonym column (the Kafka key of scored and alerts)
    time: str | None
    label: str | None
    derived: dict[str, str]  # derived feature -> SQL expression over the decoded columns

    @property
    def scored_base(self) -> Contract:
        """The scored record without its derived features: what a job computes before the SQL
        expressions of ``derived`` are added (the same expressions in every job)."""
        return Contract("scored_base", tuple(c for c in self.scored.columns if c.name not in self.derived),
                        self.scored.key)


def type_info(dtype: DataType) -> Any:
    """The PyFlink TypeInformation a DataStream carries a value of ``dtype`` in."""
    from pyflink.common import Types
    from pyflink.table import types as t

    simple = {t.VarCharType: Types.STRING, t.DoubleType: Types.DOUBLE, t.FloatType: Types.FLOAT,
              t.IntType: Types.INT, t.BigIntType: Types.LONG, t.BooleanType: Types.BOOLEAN,
              t.TimestampType: Types.SQL_TIMESTAMP, t.LocalZonedTimestampType: Types.INSTANT}
    for kind, make in simple.items():
        if isinstance(dtype, kind):
            return make()
    if isinstance(dtype, t.VarBinaryType):
        return Types.PRIMITIVE_ARRAY(Types.BYTE())
    if isinstance(dtype, t.ArrayType):
        return Types.OBJECT_ARRAY(type_info(dtype.element_type))
    if isinstance(dtype, t.RowType):
        return Types.ROW_NAMED([f.name for f in dtype.fields], [type_info(f.data_type) for f in dtype.fields])
    raise SchemaError(f"no DataStream type for {dtype!r}")


def entity_column(schema: dict[str, Any]) -> str:
    """``<entity>_pseudonym``: the name the entity id goes by once pseudonymised."""
    entity = roles(schema)["entity"]
    if not entity:
        raise SchemaError(f"schema {schema.get('name')!r} names no vigil.entity column")
    return f"{entity}_pseudonym"


def decoded_columns(schema: dict[str, Any]) -> list[Column]:
    """The input schema's fields as decoded: all nullable, the entity id as its pseudonym."""
    from connectors.flink_kafka import physical_columns

    entity = roles(schema)["entity"]
    return [Column(f"{name}_pseudonym" if name == entity else name, dtype.nullable())
            for name, dtype in physical_columns(schema)]


def reading_type() -> DataType:
    return DataTypes.ROW([
        DataTypes.FIELD("event_time", DataTypes.TIMESTAMP(3)),
        DataTypes.FIELD("score", DataTypes.DOUBLE()),
        DataTypes.FIELD("source_partition", DataTypes.INT()),
        DataTypes.FIELD("source_offset", DataTypes.BIGINT()),
        DataTypes.FIELD("label", DataTypes.STRING()),
    ])


def shadow_contract(schema: dict[str, Any]) -> Contract:
    """The record a job scoring in shadow writes per scored event (``<input>.shadow``): which reading,
    its label where the schema has one, and both models' score, flag and version. Alerts follow the
    scoring model only; this topic is what ``vigil shadow`` compares."""
    role = roles(schema)
    entity, time_col, label = entity_column(schema), role["time"], role["label"]
    types = {c.name: c.type for c in decoded_columns(schema)}
    return Contract("shadow", tuple([
        Column(entity, DataTypes.STRING()),
        *([Column(time_col, types[time_col])] if time_col else []),
        *([Column(label, DataTypes.STRING())] if label else []),
        Column("source_partition", DataTypes.INT()), Column("source_offset", DataTypes.BIGINT()),
        Column("score", DataTypes.DOUBLE()), Column("is_anomaly", DataTypes.BOOLEAN()),
        Column("model_version", DataTypes.STRING()),
        Column("shadow_score", DataTypes.DOUBLE()), Column("shadow_is_anomaly", DataTypes.BOOLEAN()),
        Column("shadow_model_version", DataTypes.STRING()),
    ]), key=entity)


def outputs(schema: dict[str, Any]) -> Outputs:
    """The contracts of every output of a job scoring a topic with ``schema``."""
    role = roles(schema)
    entity = entity_column(schema)
    time_col, label = role["time"], role["label"]
    decoded = decoded_columns(schema)
    derived = derived_features(schema, [c.name for c in decoded])
    source = [Column("source_partition", DataTypes.INT()), Column("source_offset", DataTypes.BIGINT())]
    scored = Contract("scored", tuple([
        *decoded,
        *[Column(name, DataTypes.DOUBLE()) for name in derived],
        Column("score", DataTypes.DOUBLE()), Column("is_anomaly", DataTypes.BOOLEAN()),
        Column("model_version", DataTypes.STRING()), Column("partial", DataTypes.STRING()),
        *source,
    ]), key=entity)
    types = {c.name: c.type for c in decoded}
    timestamp = DataTypes.TIMESTAMP(3)
    alerts = Contract("alerts", tuple([
        Column(entity, DataTypes.STRING()),
        Column("episode_id", DataTypes.STRING()),
        Column("status", DataTypes.STRING()),
        *([Column(time_col, types[time_col])] if time_col else []),
        Column("score", DataTypes.DOUBLE()),
        Column("model_version", DataTypes.STRING()),
        *([Column(label, DataTypes.STRING())] if label else []),
        *source,
        Column("anomalies", DataTypes.INT()),
        Column("first_event_time", timestamp),
        Column("last_event_time", timestamp),
        Column("ended_at", timestamp),
        Column("max_score", DataTypes.DOUBLE()),
        Column("readings", DataTypes.ARRAY(reading_type())),
    ]), key=entity)
    dead_letters = Contract("dlq", (
        Column("reason", DataTypes.STRING()),
        Column("stage", DataTypes.STRING()),
        Column("source_topic", DataTypes.STRING()),
        Column("source_partition", DataTypes.INT()),
        Column("source_offset", DataTypes.BIGINT()),
        Column("source_timestamp", DataTypes.TIMESTAMP_LTZ(3)),
        Column("key_pseudonym", DataTypes.STRING()),
        Column("payload", DataTypes.BYTES()),
        Column("payload_bytes", DataTypes.INT()),
        Column("payload_sha256", DataTypes.STRING()),
        Column("payload_truncated", DataTypes.BOOLEAN()),
        Column("model_version", DataTypes.STRING()),
    ), key="key_pseudonym")
    tier = Contract("tier", (*scored.columns, Column("dt", DataTypes.STRING()), Column("hr", DataTypes.STRING())),
                    key=None)
    return Outputs(scored, alerts, dead_letters, tier, entity, time_col, label, derived)
