"""Flink's Kafka connector, declared for both APIs: Table descriptors and DataStream builders.

Avro topics are read with Flink's ``avro`` format, whose columns are derived from the topic's Avro
schema (connectors/schemas or the schema store): field order and nullability must match the
writer's schema exactly, because schemaless Avro carries no field names. Every source table also
exposes the Kafka partition, offset and timestamp as metadata columns, so errors can point at the
exact record they came from.

Every source and sink here gets its Kafka client properties from :func:`client_properties`, the
Java twin of connectors.kafka_io.client_config: with ``kafka.security_protocol = SASL_SSL`` the
connectors log in with SASL/SCRAM over TLS. The password never enters the job graph: the
properties name a 0600 file (``kafka.sasl_secret_file``) that Kafka's FileConfigProvider reads
inside each Flink JVM, the way the workers read the pseudonymisation secret from its file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, TableDescriptor
from pyflink.table.types import DataType

from connectors.avro_serde import field_type, roles
from connectors.errors import SchemaError
from vigil.settings import KafkaAddress, KafkaSettings, write_secret_file

# Kafka's classes as the SQL connector jar shades them (PyFlink's Kafka wrappers need that jar).
_SHADED = "org.apache.flink.kafka.shaded.org.apache.kafka"
_SECRET_PROVIDER = "vigilsecret"  # the config provider alias the properties resolve the login with

SOURCE_METADATA = {
    "kafka_partition": ("INT", "partition"),
    "kafka_offset": ("BIGINT", "offset"),
    "kafka_timestamp": ("TIMESTAMP_LTZ(3)", "timestamp"),
}

_PRIMITIVES: dict[tuple[str, str | None], DataType] = {
    ("string", None): DataTypes.STRING(),
    ("double", None): DataTypes.DOUBLE(),
    ("float", None): DataTypes.FLOAT(),
    ("int", None): DataTypes.INT(),
    ("long", None): DataTypes.BIGINT(),
    ("boolean", None): DataTypes.BOOLEAN(),
    ("bytes", None): DataTypes.BYTES(),
    ("long", "timestamp-millis"): DataTypes.TIMESTAMP(3),
}


_MAX_LENGTH = 0x7FFFFFFF  # DataTypes.STRING() / BYTES() are VARCHAR / VARBINARY of this length


def sql_type(dtype: DataType) -> str:
    """The Flink SQL spelling of a PyFlink DataType, with NOT NULL where it is not nullable."""
    from pyflink.table import types as t

    if isinstance(dtype, t.VarCharType):
        name = "STRING" if dtype.length == _MAX_LENGTH else f"VARCHAR({dtype.length})"
    elif isinstance(dtype, t.VarBinaryType):
        name = "BYTES" if dtype.length == _MAX_LENGTH else f"VARBINARY({dtype.length})"
    elif isinstance(dtype, t.LocalZonedTimestampType):
        name = f"TIMESTAMP_LTZ({dtype.precision})"
    elif isinstance(dtype, t.TimestampType):
        name = f"TIMESTAMP({dtype.precision})"
    elif isinstance(dtype, (t.DoubleType, t.FloatType, t.IntType, t.BigIntType, t.BooleanType)):
        name = dtype.type_name()
    elif isinstance(dtype, t.ArrayType):
        name = f"ARRAY<{sql_type(dtype.element_type)}>"
    elif isinstance(dtype, t.RowType):
        name = "ROW<" + ", ".join(f"`{f.name}` {sql_type(f.data_type)}" for f in dtype.fields) + ">"
    elif isinstance(dtype, t.MapType):
        name = f"MAP<{sql_type(dtype.key_type)}, {sql_type(dtype.value_type)}>"
    else:
        raise SchemaError(f"no SQL rendering for column type {dtype!r}")
    return name if dtype._nullable else f"{name} NOT NULL"


def flink_type(field: dict[str, Any]) -> DataType:
    """The Flink SQL type Flink's Avro format maps to this Avro field (nullability included)."""
    base, nullable, logical = field_type(field)
    try:
        dtype = _PRIMITIVES[(base, logical)]
    except KeyError:
        raise SchemaError(f"field {field['name']!r}: Avro type {base}/{logical} is not supported") from None
    return dtype.nullable() if nullable else dtype.not_null()


def physical_columns(avro_schema: dict[str, Any]) -> list[tuple[str, DataType]]:
    return [(f["name"], flink_type(f)) for f in avro_schema["fields"]]


def table_schema(avro_schema: dict[str, Any], *, metadata: bool = True,
                 watermark_delay: str | None = "5 SECOND") -> Schema:
    """A Flink table schema for an Avro topic, with Kafka metadata and an event-time watermark."""
    builder = Schema.new_builder()
    for name, dtype in physical_columns(avro_schema):
        builder.column(name, dtype)
    if metadata:
        for name, (sql_type, key) in SOURCE_METADATA.items():
            builder.column_by_metadata(name, sql_type, key, True)
    time_col = roles(avro_schema)["time"]
    if watermark_delay and time_col:
        amount, unit = watermark_delay.split()
        builder.watermark(time_col, f"`{time_col}` - INTERVAL '{amount}' {unit}")
    return builder.build()


def client_properties(bootstrap: str | KafkaSettings) -> dict[str, str]:
    """The Java Kafka client properties of a Flink source or sink of ``bootstrap``: address and security.

    The twin of connectors.kafka_io.client_config, and the one place a Flink Kafka client's
    connection is configured. SASL_SSL: SCRAM login, brokers verified against ``ssl_ca_file`` (a
    PEM truststore, host names included); ``sasl.jaas.config`` is a reference
    (``${vigilsecret:<file>:sasl.jaas.config}``) that Kafka's FileConfigProvider resolves from
    ``kafka.sasl_secret_file`` when the client starts, and this function (re)writes that file, 0600,
    from the settings' user and password. A TaskManager on another machine needs the same file at
    the same path. Raises SettingsError naming a missing login or CA file.
    """
    kafka = KafkaAddress.of(bootstrap).connection
    props = {"bootstrap.servers": kafka.bootstrap_servers}
    if kafka.security_protocol == "SASL_SSL":
        secret_file = write_sasl_secret_file(kafka)
        props.update({
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": kafka.sasl_mechanism,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(kafka.require_ca_file()),
            "ssl.endpoint.identification.algorithm": "https",
            "config.providers": _SECRET_PROVIDER,
            f"config.providers.{_SECRET_PROVIDER}.class": f"{_SHADED}.common.config.provider.FileConfigProvider",
            "sasl.jaas.config": f"${{{_SECRET_PROVIDER}:{secret_file}:sasl.jaas.config}}",
        })
    return props


def table_options(bootstrap: str | KafkaSettings) -> dict[str, str]:
    """:func:`client_properties` as options of a Kafka table (``properties.<key>``), e.g. for SQL DDL."""
    return {f"properties.{key}": value for key, value in client_properties(bootstrap).items()}


def write_sasl_secret_file(kafka: KafkaSettings) -> str:
    """Write the Flink clients' SASL login (a JAAS line) to ``kafka.sasl_secret_file``, 0600; returns its path."""
    user, password = kafka.require_sasl()
    if kafka.sasl_secret_file is None:
        raise ValueError("kafka.sasl_secret_file is not set")

    def quoted(text: str) -> str:  # a JAAS string, then a .properties value
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    jaas = (f"{_SHADED}.common.security.scram.ScramLoginModule required "
            f"username={quoted(user)} password={quoted(password)};")
    text = "sasl.jaas.config=" + jaas.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    path = kafka.sasl_secret_file
    if not path.is_file() or path.read_text() != text or (path.stat().st_mode & 0o077):
        write_secret_file(path, text)
    return str(path)


def _kafka_common(descriptor: TableDescriptor.Builder, topic: str, bootstrap: str) -> TableDescriptor.Builder:
    descriptor = descriptor.option("topic", topic)
    for key, value in table_options(bootstrap).items():
        descriptor = descriptor.option(key, value)
    return descriptor


def avro_source(topic: str, bootstrap: str, avro_schema: dict[str, Any], *, group_id: str,
                bounded: bool = False, start: str = "earliest-offset",
                watermark_delay: str | None = "5 SECOND") -> TableDescriptor:
    """Kafka source table of schemaless Avro records.

    ``bounded=True`` stops at the offsets that were latest when the job started (batch-style
    reads for tests, demos and training); otherwise the table is unbounded.
    """
    builder = _kafka_common(TableDescriptor.for_connector("kafka"), topic, bootstrap)
    builder = (builder.schema(table_schema(avro_schema, watermark_delay=watermark_delay))
               .format("avro")
               .option("properties.group.id", group_id)
               .option("properties.isolation.level", "read_committed")
               .option("scan.startup.mode", start))
    if bounded:
        builder = builder.option("scan.bounded.mode", "latest-offset")
    return builder.build()


@dataclass(frozen=True)
class StartPosition:
    """Where a job starts reading: by default where its consumer group's committed offsets are.

    ``committed`` (the default): the offsets the group committed on its last completed checkpoint,
    which are exactly where the job's exactly-once output ends; a group with none starts at the
    earliest offset. So a cancelled, upgraded or failed job resubmitted with the same group goes
    on without duplicates or gaps. ``earliest``, ``latest``, ``timestamp`` (epoch millis) and
    ``offsets`` ({partition: offset}) are backfills or skips, asked for explicitly. (A job resumed
    from a savepoint or checkpoint reads from the offsets in that state instead.)
    """

    mode: str = "committed"
    timestamp_ms: int | None = None
    offsets: dict[int, int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("committed", "earliest", "latest", "timestamp", "offsets"):
            raise ValueError(f"unknown start position {self.mode!r}")
        if (self.mode == "timestamp") != (self.timestamp_ms is not None) or (self.mode == "offsets") != bool(
                self.offsets):
            raise ValueError(f"start position {self.mode!r} needs exactly its own value")

    def options(self) -> dict[str, str]:
        if self.mode == "committed":
            return {"scan.startup.mode": "group-offsets", "properties.auto.offset.reset": "earliest"}
        if self.mode == "timestamp":
            return {"scan.startup.mode": "timestamp", "scan.startup.timestamp-millis": str(self.timestamp_ms)}
        if self.mode == "offsets":
            spec = ";".join(f"partition:{p},offset:{o}" for p, o in sorted((self.offsets or {}).items()))
            return {"scan.startup.mode": "specific-offsets", "scan.startup.specific-offsets": spec}
        return {"scan.startup.mode": f"{self.mode}-offset"}

    def describe(self) -> str:
        return {"committed": "the group's committed offsets (earliest if none)", "earliest": "the earliest offset",
                "latest": "the latest offset", "timestamp": f"timestamp {self.timestamp_ms} ms",
                "offsets": f"offsets {self.offsets}"}[self.mode]


def raw_source(topic: str, bootstrap: str, *, group_id: str, bounded: bool = False,
               start: StartPosition | str = "earliest-offset", until_ms: int | None = None) -> TableDescriptor:
    """Kafka source table of raw values (``payload BYTES``) plus key and Kafka metadata.

    Used where undecodable records must survive as data (dead letters) instead of failing the job.
    ``bounded``: stop at the offsets latest at start; ``until_ms``: stop at the first record of
    that timestamp (a backfill of a time range).
    """
    schema = Schema.new_builder().column("record_key", DataTypes.BYTES()).column("payload", DataTypes.BYTES())
    for name, (sql_type, key) in SOURCE_METADATA.items():
        schema.column_by_metadata(name, sql_type, key, True)
    schema.column_by_metadata("kafka_headers", "MAP<STRING, BYTES>", "headers", True)
    builder = (_kafka_common(TableDescriptor.for_connector("kafka"), topic, bootstrap)
               .schema(schema.build())
               .option("key.format", "raw").option("key.fields", "record_key")
               .option("value.format", "raw").option("value.fields-include", "EXCEPT_KEY")
               .option("properties.group.id", group_id)
               .option("properties.isolation.level", "read_committed"))
    for key, value in (start.options() if isinstance(start, StartPosition) else {"scan.startup.mode": start}).items():
        builder = builder.option(key, value)
    if until_ms is not None:
        builder = builder.option("scan.bounded.mode", "timestamp").option("scan.bounded.timestamp-millis", str(until_ms))
    elif bounded:
        builder = builder.option("scan.bounded.mode", "latest-offset")
    return builder.build()


def json_sink(topic: str, bootstrap: str, schema: Schema, *, key_field: str | None = None,
              exactly_once: bool = False, transactional_prefix: str | None = None,
              producer: dict[str, str] | None = None) -> TableDescriptor:
    """Kafka sink table writing JSON; exactly-once (transactions, needs checkpointing) on request.

    ``producer``: Kafka producer properties on top of the connection's (``linger.ms``, ...)."""
    builder = (_kafka_common(TableDescriptor.for_connector("kafka"), topic, bootstrap)
               .schema(schema)
               .option("value.format", "json")
               .option("value.json.timestamp-format.standard", "ISO-8601"))
    for key, value in (producer or {}).items():
        builder = builder.option(f"properties.{key}", value)
    if key_field:
        builder = (builder.option("key.format", "raw").option("key.fields", key_field)
                   .option("value.fields-include", "ALL"))
    if exactly_once:
        builder = (builder.option("sink.delivery-guarantee", "exactly-once")
                   .option("sink.transactional-id-prefix", transactional_prefix or f"vigil-{topic}")
                   .option("properties.transaction.timeout.ms", "900000"))
    else:
        builder = builder.option("sink.delivery-guarantee", "at-least-once")
    return builder.build()


# --- DataStream API -----------------------------------------------------------------------------

def _offsets(start: str) -> KafkaOffsetsInitializer:
    if start in ("earliest", "earliest-offset"):
        return KafkaOffsetsInitializer.earliest()
    if start in ("latest", "latest-offset"):
        return KafkaOffsetsInitializer.latest()
    if start in ("committed", "group-offsets"):
        return KafkaOffsetsInitializer.committed_offsets()
    raise ValueError(f"unknown start position {start!r}; use earliest, latest or committed")


def bytes_stream_source(topic: str, bootstrap: str, *, group_id: str, bounded: bool = False,
                        start: str = "earliest") -> KafkaSource:
    """DataStream KafkaSource yielding each record's value as ``bytes`` (decode it in Python).

    PyFlink has no byte-array DeserializationSchema, so the Java builder gets Kafka's
    ByteArrayDeserializer (shaded inside the SQL connector jar) directly. Use
    ``bytes_type_info()`` as the stream's type.
    """
    jvm = get_gateway().jvm
    deserializer_class = jvm.java.lang.Class.forName(
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.serialization.ByteArrayDeserializer",
        True, jvm.Thread.currentThread().getContextClassLoader())
    j_deserializer = (jvm.org.apache.flink.connector.kafka.source.reader.deserializer
                      .KafkaRecordDeserializationSchema.valueOnly(deserializer_class))
    builder = (KafkaSource.builder().set_bootstrap_servers(bootstrap).set_topics(topic)
               .set_group_id(group_id).set_starting_offsets(_offsets(start))
               .set_property("isolation.level", "read_committed"))
    for key, value in client_properties(bootstrap).items():
        builder = builder.set_property(key, value)
    builder._j_builder.setDeserializer(j_deserializer)
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def bytes_type_info() -> Any:
    return Types.PRIMITIVE_ARRAY(Types.BYTE())


def string_stream_sink(topic: str, bootstrap: str, *, exactly_once: bool = False,
                       transactional_prefix: str | None = None) -> KafkaSink:
    """DataStream KafkaSink for ``str`` records (JSON lines)."""
    serializer = (KafkaRecordSerializationSchema.builder().set_topic(topic)
                  .set_value_serialization_schema(SimpleStringSchema()).build())
    builder = KafkaSink.builder().set_bootstrap_servers(bootstrap).set_record_serializer(serializer)
    for key, value in client_properties(bootstrap).items():
        builder = builder.set_property(key, value)
    if exactly_once:
        builder = (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                   .set_transactional_id_prefix(transactional_prefix or f"vigil-{topic}")
                   .set_property("transaction.timeout.ms", "900000"))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()


def no_watermarks() -> WatermarkStrategy:
    return WatermarkStrategy.no_watermarks()
