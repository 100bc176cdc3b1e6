"""A Flink SQL session in which every registered topic is a table and every model a function.

The session is an init script for ``sql-client.sh -i`` plus a jar of functions (jobs/sql/functions.py),
both generated from what the project already knows: the schema store (``_vigil_schemas``), the
model registry and the record contract (connectors/records.py). Nobody writes DDL by hand.

Catalog ``vigil`` (a generic in-memory catalog; current catalog of the session), database ``topics``:

* ``<topic>`` (a view) for every topic with a registered schema: the topic's fields decoded by the
  Table job's own decoder (udfs/preprocess.DecodeTelemetry: Avro, Confluent wire format or JSON,
  whatever the topic is registered with), the entity id as ``<entity>_pseudonym`` (never the raw
  id), then ``error`` (null for a usable reading, else the dead-letter reason: ``undecodable: ...``,
  ``impossible_value: ...``, ``validation_failed: ...`` from the topic's expectation suite) and the
  Kafka metadata ``kafka_partition``, ``kafka_offset``, ``kafka_timestamp`` (a time attribute,
  watermarked: windows over it need no DDL). A bad record is a row with an ``error``, never a
  failed query.
* ``<topic>.scored``, ``<topic>.alerts``, ``<topic>.dlq`` (tables): the scoring jobs' outputs with
  exactly the contract's columns (JSON), readable and writable (exactly-once, in transactions that
  commit on checkpoints); ``<topic>.tier``: the Parquet tier, when the settings have one.
* ``<topic>.window<W>`` (a view), for a model of the session that reads each entity's last W readings:
  the topic view's columns plus each entity's previous readings of its features
  (``<feature>__lag<k>``, ``_time__lag<k>``: LAG over an OVER window per entity in arrival order),
  the arguments such a model's function takes (jobs.core.scoring.context_columns).
* ``<topic>.scored_by.<model@alias>`` (a view) for every model of the session that fits the topic:
  its usable readings with the model's score, flag, version and ``partial`` (no call to write).
* ``model_functions`` (a view): one row per model function: its name, the model reference it follows, the
  version it resolved to when the session started, its features in order, threshold, schema, the
  call, its window and the view a windowed model is called from.
* functions ``ANOMALY_<MODEL>`` (the champion), ``ANOMALY_<MODEL>_<ALIAS>`` for other aliases,
  ``ANOMALY_<MODEL>_V<N>`` for versions asked for with ``--model name@N``: one per model reference,
  typed and named after the model's features (``DESCRIBE FUNCTION``), returning
  ``ROW<score DOUBLE, is_anomaly BOOLEAN, model_version STRING, partial STRING>``; an alias is followed (a
  promotion is hot-swapped in). ``ANOMALY('name@alias', <features>)``: every one of those model
  references behind one function, the model named by its first argument (a string literal; the
  planner checks the rest against that model's features: jobs/sql/java ModelAnomalyFunction).
  ``PSEUDONYM(id)``: the keyed pseudonym of a raw id (for joins).

Database ``raw``: the Kafka tables of raw bytes behind the views and their decode/validate functions.

A scoring job (jobs/run_sql.py) adds database ``job``: its source, the views that produce each
output exactly as the Table job does (``job.scored_rows``, ``job.alert_rows``,
``job.dead_letter_rows``, ``job.tier_rows``) and its exactly-once sinks (``job.scored``, ...).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.avro_serde import SCHEMA_HEADER, schema_id
from connectors.flink_kafka import StartPosition, sql_type, table_options
from connectors.kafka_io import read_all
from connectors.model_registry import ModelRef, ModelRegistry
from connectors.records import Contract, Outputs, decoded_columns, outputs
from connectors.schema_store import SCHEMA_TOPIC
from jobs.sql.functions import SqlFunction
from udfs.anomaly_score import NO_MODEL, RESULT_TYPE

CATALOG = "vigil"
TOPICS_DB = "topics"
RAW_DB = "raw"
JOB_DB = "job"
# How far behind the latest event time a partition has delivered its watermark lags. Unbounded:
# 5 s, so windows close soon (a record more than 5 s older than its partition's latest is late).
# Bounded: a year, so no record is late; the end of the input closes every window. (A scoring
# job's outputs are not in event-time order within a partition: it writes whole input batches.)
WATERMARK_DELAY = "INTERVAL '5' SECOND"
BOUNDED_WATERMARK_DELAY = "INTERVAL '365' DAY(3)"


def watermark_delay(bounded: bool) -> str:
    return BOUNDED_WATERMARK_DELAY if bounded else WATERMARK_DELAY
COMPANIONS = ("scored", "alerts", "dlq")
KAFKA_METADATA = ("kafka_partition", "kafka_offset", "kafka_timestamp")  # what a topic's view keeps of Kafka
MODELS_VIEW = "model_functions"  # (``models`` is a reserved word of Flink SQL)


# --- SQL text ---------------------------------------------------------------------------------------

def quote(name: str) -> str:
    """A Flink SQL identifier, back-quoted (any topic name works: dots, dashes)."""
    return "`" + str(name).replace("`", "``") + "`"


def literal(value: Any) -> str:
    """A single-quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def with_options(options: dict[str, str]) -> str:
    return "WITH (\n" + ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items()) + "\n)"


def sql_name(*parts: str) -> str:
    """An upper-case SQL function name from free text (``plant-a.pumps`` -> ``PLANT_A_PUMPS``)."""
    text = "_".join(re.sub(r"[^A-Za-z0-9]+", "_", p).strip("_") for p in parts if p).upper()
    return text if re.match(r"^[A-Z]", text) else f"X_{text}"


def unique_name(name: str, taken: set[str], key: str) -> str:
    """``name``, or ``name`` plus a short hash of ``key`` when another object already has it."""
    if name in taken:
        import hashlib

        name = f"{name}_{hashlib.sha256(key.encode()).hexdigest()[:6].upper()}"
    taken.add(name)
    return name


# --- what the session shows ---------------------------------------------------------------------------

def registered_topics(bootstrap: str) -> dict[str, dict[str, Any]]:
    """Every topic of the schema store with its latest schema (a compacted topic: latest value wins)."""
    import json

    try:
        messages = list(read_all(bootstrap, SCHEMA_TOPIC, isolation="read_uncommitted"))
    except Exception as exc:  # noqa: BLE001 - the store topic does not exist before the first registration
        if "does not exist" in str(exc):
            return {}
        raise
    latest: dict[str, bytes | None] = {}
    for msg in messages:
        if msg.key() is not None:
            latest[msg.key().decode()] = msg.value()
    return {topic: json.loads(value) for topic, value in sorted(latest.items()) if value}


@dataclass(frozen=True)
class ModelInput:
    """One argument of a model's ANOMALY function: its name, SQL type and the SQL that feeds it."""

    name: str
    type: str
    expression: str


DEFAULT_TIME = ("event_time", "TIMESTAMP(3)")  # a window model's time argument when no topic says otherwise


def model_window(manifest: dict[str, Any]) -> int:
    """How many readings of an entity the model reads (1: each reading alone)."""
    return int(manifest["features"].get("window") or 1)


def model_inputs_sql(manifest: dict[str, Any], time: tuple[str, str] = DEFAULT_TIME,
                     window: int | None = None) -> list[ModelInput]:
    """The arguments of the ANOMALY function of a model, from its manifest: the one place they are made.

    A point model reads one row's features, in the manifest's order: argument ``<feature> => DOUBLE``
    fed by the column of that name. A model with a window (``window``: at least the model's) reads
    each reading with its entity's previous ones, laid out as the jobs pass them
    (jobs.core.scoring.context_columns): every reading's sensors newest first (``<feature>__lag<k>``),
    then their times (``time``: the column and its SQL type, then ``_time__lag<k>``), fed by the
    columns of a window view (:func:`window_select`). Every caller (the function's signature, the
    scoring job's call, the ``call`` column of ``model_functions``) takes names, types and
    expressions from this list.
    """
    from jobs.core.scoring import context_columns

    names = list(manifest["features"]["names"])
    window = window or model_window(manifest)
    if window <= 1:
        return [ModelInput(name, "DOUBLE", quote(name)) for name in names]
    sensors = window * len(names)
    return [ModelInput(c, "DOUBLE" if i < sensors else time[1], quote(c))
            for i, c in enumerate(context_columns(names, window, time[0]))]


def anomaly_call(function: str, manifest: dict[str, Any], time: tuple[str, str] = DEFAULT_TIME) -> str:
    """``ANOMALY_X(`f1`, `f2`, ...)``: the call that scores a table holding the model's columns."""
    return f"{function}({', '.join(i.expression for i in model_inputs_sql(manifest, time))})"


def time_input(schema: dict[str, Any]) -> tuple[str, str]:
    """The column whose values are a window's reading times in a topic's view, and its SQL type: the
    event time, else the Kafka timestamp (jobs.core.scoring.context_time)."""
    from jobs.core.scoring import context_time

    name = context_time(outputs(schema))
    types = {c.name: sql_type(c.type) for c in decoded_columns(schema)}
    return name, types.get(name, "TIMESTAMP_LTZ(3)")


def window_select(schema: dict[str, Any], checked: str, columns: Sequence[str], features: Sequence[str],
                  window: int) -> str:
    """``checked`` (a decoded_select keeping ``_proc``) with each reading's entity's previous
    ``window - 1`` readings of ``features`` and their times: LAG over an OVER window per entity in
    arrival order (processing time; Java, kept in Flink state), as the Table job does. A record with an
    ``error`` is nobody's context (as in training, which skips it). ``columns``: what it keeps."""
    from jobs.core.scoring import lag_expressions

    entity = outputs(schema).entity
    key = f"CASE WHEN `error` IS NULL THEN {quote(entity)} END" if entity else "CASE WHEN `error` IS NULL THEN 0 END"
    lags = ",\n    ".join(lag_expressions(list(features), window, time_input(schema)[0]))
    kept = ", ".join(quote(c) for c in columns)
    return (f"SELECT {kept},\n    {lags}\nFROM (\n{checked})\n"
            f"WINDOW w AS (PARTITION BY {key} ORDER BY `_proc`)")


def fits(manifest: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether a model can score a topic: its features are the topic's columns, its schema the topic's."""
    names = {c.name for c in decoded_columns(schema)}
    theirs = manifest.get("schema")
    return (all(f in names for f in manifest["features"]["names"])
            and (not theirs or theirs.split("@")[-1] == schema_id(schema).split("@")[-1]))


@dataclass(frozen=True)
class ModelFunction:
    """An ANOMALY function of the session: the model reference it scores with and its manifest then."""

    function: str
    ref: str
    manifest: dict[str, Any]
    time: tuple[str, str] = DEFAULT_TIME  # a window model's time argument (the topic it scores)
    source: str | None = None  # the view that holds its arguments (a window model's: ``<topic>.window<W>``)

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"]["names"])

    @property
    def window(self) -> int:
        return model_window(self.manifest)

    @property
    def inputs(self) -> list[ModelInput]:
        return model_inputs_sql(self.manifest, self.time)


def model_functions(registry: ModelRegistry, refs: Sequence[str] = ()) -> list[ModelFunction]:
    """One function per reference: ``refs`` when given, else every alias of every model in the registry.

    Raises RegistryError (naming what is unknown) for a reference that does not resolve.
    """
    wanted: list[ModelRef] = []
    if refs:
        wanted = [ModelRef.parse(r) for r in refs]
    else:
        for name in registry.models():
            state = registry.state(name)
            wanted += [ModelRef(name, alias) for alias in sorted(state.aliases, key=lambda a: (a != "champion", a))]
    taken: set[str] = set()
    found = []
    for ref in dict.fromkeys(wanted):
        manifest = registry.manifest(registry.resolve(ref))
        suffix = "" if ref.alias == "champion" else (f"V{ref.number}" if ref.number is not None else ref.alias or "")
        name = unique_name(sql_name("ANOMALY", ref.name, suffix), taken, str(ref))
        found.append(ModelFunction(name, str(ref), manifest))
    return found


# --- functions ----------------------------------------------------------------------------------------

def decode_function(name: str, schema: dict[str, Any], secret_file: str | None) -> SqlFunction:
    from udfs.preprocess import DecodeTelemetry, output_columns

    row = "ROW<" + ", ".join(f"{quote(n)} {sql_type(t)}" for n, t in output_columns(schema)) + ">"
    return SqlFunction(name, (("payload", "BYTES"), ("schema_header", "BYTES")), row,
                       DecodeTelemetry(schema, secret_file), doc="decode and pseudonymise one topic's payloads")


def validate_function(name: str, schema: dict[str, Any], suite: dict[str, Any], engine: str) -> SqlFunction:
    from udfs.validate_features import ValidateFeatures, suite_columns

    types = {c.name: sql_type(c.type) for c in decoded_columns(schema)}
    columns = suite_columns(suite)
    missing = [c for c in columns if c not in types]
    if missing:
        from connectors.errors import SchemaError

        raise SchemaError(f"suite {suite.get('name')!r} reads column(s) {missing} that schema "
                          f"{schema.get('name')!r} does not have")
    return SqlFunction(name, tuple((c, types[c]) for c in columns), "STRING", ValidateFeatures(suite, columns, engine),
                       doc="the expectation suite: null or the failed expectations")


def anomaly_function(name: str, model_store: str, ref: str, manifest: dict[str, Any], *, s3: Any = None,
                     refresh_seconds: float | None = None, schema: str | None = None,
                     time: tuple[str, str] = DEFAULT_TIME, context: int | None = None) -> SqlFunction:
    """ANOMALY for one model reference: its arguments from :func:`model_inputs_sql` (``context``: the
    readings per entity its caller passes, at least the model's window)."""
    from udfs.anomaly_score import AnomalyScore

    context = context or model_window(manifest)
    inputs = model_inputs_sql(manifest, time, context)
    udf = AnomalyScore(model_store, ref, features=list(manifest["features"]["names"]),
                       schema=schema or manifest.get("schema"), fallback=manifest.get("number"),
                       refresh_seconds=refresh_seconds, s3=s3, context=context)
    return SqlFunction(name, tuple((i.name, i.type) for i in inputs), sql_type(RESULT_TYPE), udf, deterministic=False,
                       doc=f"{ref}: reconstruction error of the autoencoder; higher is more anomalous")


MODEL_ANOMALY_CLASS = "dev.vigil.sql.ModelAnomalyFunction"
MODEL_ANOMALY = "ANOMALY"


def model_anomaly_function(models: Sequence[ModelFunction], model_store: str, *, s3: Any = None,
                           refresh_seconds: float | None = None) -> SqlFunction:
    """``ANOMALY('name@alias', features...)``: every model reference of the session behind one function.

    The planner checks a call against the model its first argument (a string literal) names: its
    features, in :func:`model_inputs_sql` order (jobs/sql/java ModelAnomalyFunction)."""
    from udfs.anomaly_score import AnomalyScore, NamedModelsScore

    scorers = {}
    extra = [("models", "\t".join(m.ref for m in models))]
    for i, m in enumerate(models):
        scorers[m.ref] = AnomalyScore(model_store, m.ref, features=m.features, schema=m.manifest.get("schema"),
                                      fallback=m.manifest.get("number"), refresh_seconds=refresh_seconds, s3=s3,
                                      context=m.window)
        extra.append((f"features.{i}", "\t".join(x.name for x in m.inputs)))
        extra.append((f"types.{i}", "\t".join(x.type for x in m.inputs)))
    return SqlFunction(MODEL_ANOMALY, (("model", "STRING"),), sql_type(RESULT_TYPE), NamedModelsScore(scorers),
                       deterministic=False, base=MODEL_ANOMALY_CLASS, extra=tuple(extra),
                       doc="ANOMALY('name@alias', features...): the model named by its first argument")


def pseudonym_function(secret_file: str | None) -> SqlFunction:
    from udfs.preprocess import Pseudonymise

    return SqlFunction("PSEUDONYM", (("id", "STRING"),), "STRING", Pseudonymise(secret_file),
                       doc="the keyed pseudonym of an entity id, as every output carries it")


def seal_function(secret_file: str | None) -> SqlFunction:
    from udfs.dead_letters import SEALED_TYPE, SealPayload

    return SqlFunction("SEAL", (("record_key", "BYTES"), ("payload", "BYTES")), sql_type(SEALED_TYPE),
                       SealPayload(secret_file), doc="what a dead letter keeps of its record")


def create_function(function: SqlFunction, database: str) -> str:
    return (f"CREATE FUNCTION {quote(CATALOG)}.{quote(database)}.{function.name} AS {literal(function.java_class)} "
            f"LANGUAGE JAVA")


# --- tables and views -----------------------------------------------------------------------------------

def raw_source_options(topic: str, bootstrap: str, *, group_id: str, start: StartPosition | None = None,
                       bounded: bool = False, until_ms: int | None = None) -> dict[str, str]:
    """The options of a Kafka table of raw records (the SQL twin of connectors.flink_kafka.raw_source)."""
    options = {"connector": "kafka", "topic": topic, **table_options(bootstrap),
               "key.format": "raw", "key.fields": "record_key", "value.format": "raw",
               "value.fields-include": "EXCEPT_KEY", "properties.group.id": group_id,
               "properties.isolation.level": "read_committed",
               **(start or StartPosition("earliest")).options()}
    if until_ms is not None:
        options.update({"scan.bounded.mode": "timestamp", "scan.bounded.timestamp-millis": str(until_ms)})
    elif bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return options


def raw_table(name: str, options: dict[str, str], delay: str = WATERMARK_DELAY) -> str:
    return (f"CREATE TABLE {name} (\n"
            "  `record_key` BYTES,\n"
            "  `payload` BYTES,\n"
            "  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,\n"
            "  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,\n"
            "  `kafka_timestamp` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,\n"
            "  `kafka_headers` MAP<STRING, BYTES> METADATA FROM 'headers' VIRTUAL,\n"
            "  `_proc` AS PROCTIME(),\n"
            f"  WATERMARK FOR `kafka_timestamp` AS `kafka_timestamp` - {delay}\n"
            f") {with_options(options)}")


def decoded_select(schema: dict[str, Any], source: str, decode: str, validate: tuple[str, list[str]] | None,
                   keep: Sequence[str] = KAFKA_METADATA) -> str:
    """SELECT of a raw table's records decoded, pseudonymised and checked: the decoded columns,
    ``error`` (decode error or validation failure, as a dead-letter reason), then ``keep``.

    ``decode``: the qualified name of the topic's DECODE function; ``validate``: the VALIDATE
    function's name and its argument columns, or None when the topic has no expectation suite.
    """
    names = [c.name for c in decoded_columns(schema)]
    kept = ", ".join(quote(k) for k in keep)
    decoded = ",\n    ".join(f"`d`.{quote(n)} AS {quote(n)}" for n in names)
    inner = (f"SELECT {kept},\n    {decoded},\n    `d`.`error` AS `decode_error`\n"
             f"  FROM (SELECT {kept}, {decode}(`payload`, `kafka_headers`[{literal(SCHEMA_HEADER)}]) AS `d` "
             f"FROM {source})")
    if validate is None:
        check, inner_check = "`decode_error`", inner
    else:
        function, columns = validate
        args = ", ".join(quote(c) for c in columns)
        # each Python result referenced once: the planner would otherwise call VALIDATE twice
        check = "COALESCE(`decode_error`, CONCAT('validation_failed: ', `validation_error`))"
        inner_check = f"SELECT *, {function}({args}) AS `validation_error` FROM (\n  {inner})"
    columns = ", ".join(quote(n) for n in names)
    return f"SELECT {columns}, {check} AS `error`, {kept}\nFROM (\n  {inner_check})"


def json_table(name: str, contract: Contract, topic: str, bootstrap: str, *, time_col: str | None,
               group_id: str, transactional_prefix: str, start: StartPosition | None = None,
               bounded: bool = False, metadata: bool = True, delay: str = WATERMARK_DELAY) -> str:
    """A Kafka table of JSON records shaped as ``contract``: readable, and writable exactly-once."""
    columns = [f"  {quote(c.name)} {sql_type(c.type)}" for c in contract.columns]
    if metadata:
        columns += ["  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL",
                    "  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL",
                    "  `kafka_timestamp` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL"]
    if time_col:
        columns.append(f"  WATERMARK FOR {quote(time_col)} AS {quote(time_col)} - {delay}")
    options = {"connector": "kafka", "topic": topic, **table_options(bootstrap)}
    if contract.key:
        options.update({"key.format": "raw", "key.fields": contract.key, "value.fields-include": "ALL"})
    options.update({"value.format": "json", "value.json.timestamp-format.standard": "ISO-8601",
                    "properties.group.id": group_id, "properties.isolation.level": "read_committed",
                    **(start or StartPosition("earliest")).options(),
                    "sink.delivery-guarantee": "exactly-once", "sink.transactional-id-prefix": transactional_prefix,
                    "properties.transaction.timeout.ms": "900000"})
    if bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return f"CREATE TABLE {name} (\n" + ",\n".join(columns) + f"\n) {with_options(options)}"


def tier_table(name: str, contract: Contract, path: str | None) -> str:
    """The Parquet tier, partitioned by dt/hr (a blackhole when there is no tier: nothing is written)."""
    columns = ",\n".join(f"  {quote(c.name)} {sql_type(c.type)}" for c in contract.columns)
    if path is None:
        return f"CREATE TABLE {name} (\n{columns}\n) WITH ('connector' = 'blackhole')"
    options = {"connector": "filesystem", "path": path, "format": "parquet",
               "sink.partition-commit.policy.kind": "success-file"}
    return f"CREATE TABLE {name} (\n{columns}\n) PARTITIONED BY (`dt`, `hr`) {with_options(options)}"


def models_view(models: Sequence[ModelFunction]) -> str:
    """``model_functions``: one row per ANOMALY function of the session (what it scores with, which features)."""
    columns = ("function", "model", "version", "features", "threshold", "schema", "call", "window", "source")
    rows = [f"({literal(m.function)}, {literal(m.ref)}, {literal(m.manifest['version'])}, "
            f"ARRAY[{', '.join(literal(f) for f in m.features)}], CAST({float(m.manifest['threshold'])!r} AS DOUBLE), "
            f"{literal(m.manifest.get('schema') or '')}, {literal(anomaly_call(m.function, m.manifest, m.time))}, "
            f"{m.window}, " + (literal(m.source) if m.source else "CAST(NULL AS STRING)") + ")"
            for m in models]
    if not rows:  # VALUES needs a row: one typed row, filtered away
        rows = ["(CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS ARRAY<STRING>), "
                "CAST(NULL AS DOUBLE), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS INT), "
                "CAST(NULL AS STRING))"]
        where = " WHERE `function` IS NOT NULL"
    else:
        where = ""
    return (f"CREATE VIEW {quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(MODELS_VIEW)} AS SELECT * FROM (VALUES\n  "
            + ",\n  ".join(rows) + f"\n) AS t({', '.join(quote(c) for c in columns)}){where}")


# --- the session ------------------------------------------------------------------------------------------

@dataclass
class Session:
    """An init script's statements and the functions its jar must hold."""

    statements: list[str] = field(default_factory=list)
    functions: list[SqlFunction] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    models: list[ModelFunction] = field(default_factory=list)
    # each topic's DECODE function and (VALIDATE function, its argument columns) or None, qualified
    readers: dict[str, tuple[str, tuple[str, list[str]] | None]] = field(default_factory=dict)

    def add_function(self, function: SqlFunction, database: str) -> str:
        """Register ``function`` in ``database``; returns its qualified name for SQL text."""
        self.functions.append(function)
        self.statements.append(create_function(function, database))
        return f"{quote(CATALOG)}.{quote(database)}.{function.name}"

    def script(self, header: str = "") -> str:
        return header + "".join(f"{s};\n\n" for s in self.statements)


@dataclass(frozen=True)
class SessionSettings:
    """What a session is generated from (all resolved at the edge: no environment reads here)."""

    bootstrap_servers: str
    model_store: str
    secret_file: str | None
    python: str
    session_id: str
    s3: Any = None
    tier: str | None = None       # the Parquet tier every topic shares (set explicitly), or None
    tier_root: str | None = None  # else each topic's is <tier_root>/<topic> (VigilSettings.tier_for)
    bounded: bool = False
    validation_engine: str = "compiled"
    model_refresh_seconds: float | None = None
    restart_attempts: int | None = 2

    def tier_for(self, topic: str) -> str | None:
        """The Parquet tier of ``topic``'s scoring jobs (None: no tier)."""
        return self.tier or (f"{self.tier_root.rstrip('/')}/{topic}" if self.tier_root else None)


def settings_statements(s: SessionSettings) -> list[str]:
    """SETs every session starts with: the interpreter, one computation for shared views, restarts."""
    out = [f"SET 'python.executable' = {literal(s.python)}",
           f"SET 'python.client.executable' = {literal(s.python)}",
           # A view that several INSERTs of one statement set read (the scoring job's outputs) is
           # optimised once and its Python calls run once, as the Table job's DataStream boundary does.
           "SET 'table.optimizer.reuse-optimize-block-with-digest-enabled' = 'true'"]
    if not s.bounded:
        # Unbounded: a partition that gets no records for a while does not hold the windows of the
        # others back. Not when bounded: there the end of input closes every window, and a partition
        # marked idle while it was only slow (a busy machine) would have its records dropped as late.
        out.append("SET 'table.exec.source.idle-timeout' = '10 s'")
    if s.restart_attempts is not None:
        # A query that fails (a Python worker raising) fails after a few tries instead of restarting
        # for ever with the client showing nothing.
        out += ["SET 'restart-strategy.type' = 'fixed-delay'",
                f"SET 'restart-strategy.fixed-delay.attempts' = '{s.restart_attempts}'",
                "SET 'restart-strategy.fixed-delay.delay' = '2 s'"]
    return out


def topic_objects(session: Session, s: SessionSettings, topic: str, schema: dict[str, Any], taken: set[str],
                  *, suite: dict[str, Any] | None, existing: set[str] | None = None,
                  registered: frozenset[str] | set[str] = frozenset()) -> None:
    """The view of ``topic``, its raw table and functions, and its companion tables (those of the
    outputs in ``existing`` when given: a scoring job has not written the others yet; none that is
    itself a ``registered`` topic, which is a view of its own)."""
    out = outputs(schema)
    base = sql_name(topic)
    raw = f"{quote(CATALOG)}.{quote(RAW_DB)}.{quote(topic)}"
    group = f"vigil-sql-{s.session_id}"
    session.statements.append(raw_table(raw, raw_source_options(topic, s.bootstrap_servers, group_id=group,
                                                                 bounded=s.bounded), watermark_delay(s.bounded)))
    decode = session.add_function(decode_function(unique_name(f"DECODE_{base}", taken, topic), schema, s.secret_file),
                                  RAW_DB)
    validate = None
    if suite is not None:
        function = validate_function(unique_name(f"VALIDATE_{base}", taken, topic), schema, suite, s.validation_engine)
        validate = (session.add_function(function, RAW_DB), [a for a, _ in function.arguments])
    session.readers[topic] = (decode, validate)
    view = f"{quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(topic)}"
    session.statements.append(f"CREATE VIEW {view} AS\n{decoded_select(schema, raw, decode, validate)}")
    session.topics.append(topic)
    session.tables.append(topic)
    for name, contract in (("scored", out.scored), ("alerts", out.alerts), ("dlq", out.dead_letters)):
        table = f"{topic}.{name}"
        if existing is not None and table not in existing or table in registered:
            continue
        time_col = "source_timestamp" if name == "dlq" else out.time
        session.statements.append(json_table(
            f"{quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(table)}", contract, table, s.bootstrap_servers,
            time_col=time_col, group_id=group, transactional_prefix=f"{group}-{table}", bounded=s.bounded,
            delay=watermark_delay(s.bounded)))
        session.tables.append(table)
    tier = s.tier_for(topic)
    if tier and f"{topic}.tier" not in registered:
        session.statements.append(tier_table(f"{quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(topic + '.tier')}",
                                             out.tier, tier))
        session.tables.append(f"{topic}.tier")


def window_view(topic: str, window: int) -> str:
    """The view of a topic's readings with their entity's last ``window`` readings."""
    return f"{topic}.window{window}"


def placed(models: Sequence[ModelFunction], topics: dict[str, dict[str, Any]]) -> list[ModelFunction]:
    """``models`` with, for each one that reads a window, the topic view it is called from (the first
    topic it fits) and that topic's time column. A model that fits no topic keeps the defaults."""
    import dataclasses

    out = []
    for m in models:
        if m.window > 1:
            home = next((t for t, schema in topics.items() if fits(m.manifest, schema)), None)
            if home is not None:
                m = dataclasses.replace(m, time=time_input(topics[home]), source=window_view(home, m.window))
        out.append(m)
    return out


def window_objects(session: Session, topic: str, schema: dict[str, Any], models: Sequence[ModelFunction]) -> None:
    """One view per window size the session's models read on ``topic``: the topic view's columns plus
    each entity's previous readings of those models' features (``<feature>__lag<k>``, ``_time__lag<k>``),
    so that ``model_functions``' ``call`` scores from it as written."""
    raw = f"{quote(CATALOG)}.{quote(RAW_DB)}.{quote(topic)}"
    decode, validate = session.readers[topic]
    names = [c.name for c in decoded_columns(schema)]
    checked = decoded_select(schema, raw, decode, validate, keep=(*KAFKA_METADATA, "_proc"))
    for window in sorted({m.window for m in models}):
        wanted = {f for m in models if m.window == window for f in m.features}
        features = [n for n in names if n in wanted]
        view = f"{quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(window_view(topic, window))}"
        session.statements.append(f"CREATE VIEW {view} AS\n"
                                  + window_select(schema, checked, [*names, "error", *KAFKA_METADATA], features,
                                                  window))
        session.tables.append(window_view(topic, window))


def scored_by_view(topic: str, model: ModelFunction) -> str:
    """The view of a topic's usable readings scored by one model reference of the session."""
    return f"{topic}.scored_by.{model.ref}"


def scored_by_objects(session: Session, topic: str, schema: dict[str, Any], models: Sequence[ModelFunction]) -> None:
    """``<topic>.scored_by.<model@alias>`` for every session model that fits the topic: its usable
    readings (``error`` null) with the model's ``score``, ``is_anomaly``, ``model_version`` and
    ``partial``; a model with a window reads them from its window view. No argument list to write."""
    names = [quote(c.name) for c in decoded_columns(schema)]
    kept = [quote(c) for c in KAFKA_METADATA]
    fields = ", ".join(f"`s`.{quote(f.name)} AS {quote(f.name)}" for f in RESULT_TYPE.fields)
    for m in models:
        source = topic if m.window <= 1 else m.source if m.source == window_view(topic, m.window) else None
        if source is None or not fits(m.manifest, schema):
            continue
        call = anomaly_call(f"{quote(CATALOG)}.{quote(TOPICS_DB)}.{m.function}", m.manifest, m.time)
        view = scored_by_view(topic, m)
        session.statements.append(
            f"CREATE VIEW {quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(view)} AS\n"
            f"SELECT {', '.join([*names, *kept])}, {fields}\n"
            f"FROM (SELECT *, {call} AS `s` FROM {quote(CATALOG)}.{quote(TOPICS_DB)}.{quote(source)} "
            f"WHERE `error` IS NULL)")
        session.tables.append(view)


def build_session(s: SessionSettings, topics: dict[str, dict[str, Any]], models: Sequence[ModelFunction],
                  suites: dict[str, dict[str, Any] | None] | None = None, existing: set[str] | None = None) -> Session:
    """The session: settings, catalog, every topic's objects, every model's function, ``model_functions``.

    ``existing``: the topics the broker has (when given, a registered topic it does not have is left
    out, and so are output tables of outputs not written yet).
    """
    session = Session(statements=settings_statements(s))
    session.statements += [
        f"CREATE CATALOG {quote(CATALOG)} WITH ('type' = 'generic_in_memory', 'default-database' = {literal(TOPICS_DB)})",
        f"CREATE DATABASE {quote(CATALOG)}.{quote(RAW_DB)}",
    ]
    taken: set[str] = {"PSEUDONYM", "SEAL", MODEL_ANOMALY}
    shown = {t: schema for t, schema in topics.items() if existing is None or t in existing}
    for topic, schema in shown.items():
        suite = (suites or {}).get(topic)
        topic_objects(session, s, topic, schema, taken, suite=suite, existing=existing, registered=set(topics))
    models = placed(models, shown)
    for topic, schema in shown.items():
        window_objects(session, topic, schema, [m for m in models if m.source == window_view(topic, m.window)])
    for model in models:
        session.add_function(anomaly_function(model.function, s.model_store, model.ref, model.manifest, s3=s.s3,
                                              refresh_seconds=s.model_refresh_seconds, time=model.time), TOPICS_DB)
        session.models.append(model)
    for topic, schema in shown.items():
        scored_by_objects(session, topic, schema, models)
    if models:
        session.add_function(model_anomaly_function(models, s.model_store, s3=s.s3,
                                                    refresh_seconds=s.model_refresh_seconds), TOPICS_DB)
    session.add_function(pseudonym_function(s.secret_file), TOPICS_DB)
    session.statements.append(models_view(models))
    session.statements.append(f"USE CATALOG {quote(CATALOG)}")
    return session


# --- a scoring job: the Table job's outputs in SQL -----------------------------------------------------

def _cast(expression: str, column: Any) -> str:
    return f"CAST({expression} AS {sql_type(column.type)}) AS {quote(column.name)}"


def scored_expressions(out: Outputs) -> list[str]:
    """One expression per column of the scored record, from ``job.scoring``'s columns (the decoded
    columns and ANOMALY's result fields go by their names; derived features by their SQL)."""
    special = {"source_partition": "`kafka_partition`", "source_offset": "`kafka_offset`", **out.derived}
    return [_cast(special.get(c.name, quote(c.name)), c) for c in out.scored.columns]


def _reading_row(column: Any, values: dict[str, str]) -> str:
    """One element of an ARRAY<ROW<...>> column of the contract (``readings``): each field of the
    contract's row type from ``values`` by name (NULL for a field this does not know)."""
    element = column.type.element_type
    fields = [(f.name, sql_type(f.data_type)) for f in element.fields]
    row = "ROW<" + ", ".join(f"{quote(n)} {t}" for n, t in fields) + ">"
    parts = ", ".join(f"CAST({values.get(n, 'NULL')} AS {t})" for n, t in fields)
    return f"ARRAY[CAST(ROW({parts}) AS {row})]"


def alert_expressions(out: Outputs) -> list[str]:
    """The alert of one anomalous reading, over ``job.scored_rows``: one expression per column of
    the contract's alert record (connectors/records.py), in its order.

    A column named like a scored column takes the reading's value; the episode columns that the
    contract has are those of an episode of that one reading (``anomalies`` 1, first and last event
    time the reading's, ``max_score`` its score, ``readings`` the one reading; where the contract
    has them, ``episode_id`` = pseudonym:partition:offset and ``status`` 'open'). The Table job's
    episodes with hysteresis (udfs/alert_rules.Hysteresis) keep per-entity state in a keyed Python
    function, which Flink SQL cannot call: a column this does not know is NULL, so the alert still
    has exactly the contract's columns."""
    t = quote(out.time) if out.time else "CAST(NULL AS TIMESTAMP(3))"
    label = quote(out.label) if out.label else "CAST(NULL AS STRING)"
    known = set(out.scored.names)
    per_reading = {"event_time": t, "score": "`score`", "source_partition": "`source_partition`",
                   "source_offset": "`source_offset`", "label": label}
    special = {"episode_id": f"CONCAT({quote(out.entity)}, ':', CAST(`source_partition` AS STRING), ':', "
                             f"CAST(`source_offset` AS STRING))",
               "status": "'open'", "anomalies": "1", "window_seconds": "0.0", "first_event_time": t,
               "last_event_time": t, "max_score": "`score`"}
    expressions = []
    for c in out.alerts.columns:
        if c.name == "readings":
            expression = _reading_row(c, per_reading)
        else:
            expression = special.get(c.name, quote(c.name) if c.name in known else "NULL")
        expressions.append(_cast(expression, c))
    return expressions


def dead_letter_expressions(out: Outputs, topic: str) -> list[str]:
    special = {"reason": "`dlq_reason`", "stage": "SPLIT_INDEX(`dlq_reason`, ':', 0)", "source_topic": literal(topic),
               "source_partition": "`kafka_partition`", "source_offset": "`kafka_offset`",
               "source_timestamp": "`kafka_timestamp`"}
    sealed = {"key_pseudonym", "payload", "payload_bytes", "payload_sha256", "payload_truncated"}
    return [_cast(special.get(c.name, f"`sealed`.{quote(c.name)}" if c.name in sealed else quote(c.name)), c)
            for c in out.dead_letters.columns]


def job_objects(session: Session, s: SessionSettings, plan: Any) -> None:
    """Database ``job``: a scoring job reading ``plan.input_topic`` (a jobs.core.scoring.ScoringPlan),
    shaped exactly as the Table job: each record to one of scored or dead letters, anomalies alerted."""
    out: Outputs = plan.outputs
    db = f"{quote(CATALOG)}.{quote(JOB_DB)}"
    session.statements.append(f"CREATE DATABASE {db}")
    session.statements.append(raw_table(f"{db}.`source`", raw_source_options(
        plan.input_topic, plan.bootstrap_servers, group_id=plan.group_id, start=plan.start, bounded=plan.bounded,
        until_ms=plan.until_ms)))
    decode = session.add_function(decode_function("JOB_DECODE", plan.schema, plan.secret_file), JOB_DB)
    validate = None
    if plan.suite is not None:
        function = validate_function("JOB_VALIDATE", plan.schema, plan.suite, plan.validation_engine)
        validate = (session.add_function(function, JOB_DB), [a for a, _ in function.arguments])
    time = time_input(plan.schema)
    anomaly = session.add_function(anomaly_function(
        "JOB_ANOMALY", plan.model_store, plan.model_ref, plan.manifest, s3=plan.s3,
        refresh_seconds=plan.model_refresh_seconds, schema=schema_id(plan.schema), time=time,
        context=plan.context), JOB_DB)
    seal = session.add_function(seal_function(plan.secret_file), JOB_DB)
    keep = ("record_key", "payload", *KAFKA_METADATA)
    columns = [*(c.name for c in decoded_columns(plan.schema)), "error", *keep]
    if plan.context > 1:  # each reading with its entity's previous ones, as the Table job passes them
        checked = window_select(plan.schema, decoded_select(plan.schema, f"{db}.`source`", decode, validate,
                                                            keep=(*keep, "_proc")),
                                columns, plan.features, plan.context)
    else:
        checked = decoded_select(plan.schema, f"{db}.`source`", decode, validate, keep=keep)
    inputs = ", ".join(i.expression for i in model_inputs_sql(plan.manifest, time, plan.context))
    passed = ", ".join(quote(c) for c in columns)
    result = [f.name for f in RESULT_TYPE.fields]
    fields = ", ".join(f"`s`.{quote(f)} AS {quote(f)}" for f in result)
    no_score = "COALESCE(`s`.`partial`, 'no score')" if "partial" in result else "'no score'"
    # The Table job's routing (jobs/core/scoring.build): the first reason a record cannot be scored.
    session.statements.append(
        f"CREATE VIEW {db}.`scoring` AS\nSELECT {passed}, {fields},\n"
        f"  CASE WHEN `error` IS NOT NULL THEN `error`\n"
        f"       WHEN `s`.`model_version` = '{NO_MODEL}' THEN 'unscorable: no usable model (see the job log)'\n"
        f"       WHEN `s`.`score` IS NULL THEN CONCAT('unscorable: ', {no_score}) END AS `dlq_reason`\n"
        f"FROM (SELECT *, {anomaly}({inputs}) AS `s` FROM (\n{checked}))")
    scored = ",\n  ".join(scored_expressions(out))
    session.statements.append(f"CREATE VIEW {db}.`scored_rows` AS\nSELECT\n  {scored}\n"
                              f"FROM {db}.`scoring` WHERE `dlq_reason` IS NULL")
    session.statements.append(f"CREATE VIEW {db}.`alert_rows` AS\nSELECT\n  " + ",\n  ".join(alert_expressions(out))
                              + f"\nFROM {db}.`scored_rows` WHERE `is_anomaly`")
    session.statements.append(
        f"CREATE VIEW {db}.`dead_letter_rows` AS\nSELECT\n  " + ",\n  ".join(dead_letter_expressions(out, plan.input_topic))
        + f"\nFROM (SELECT *, {seal}(`record_key`, `payload`) AS `sealed` FROM {db}.`scoring` "
          f"WHERE `dlq_reason` IS NOT NULL)")
    if out.time:
        dt, hr = f"DATE_FORMAT({quote(out.time)}, 'yyyy-MM-dd')", f"DATE_FORMAT({quote(out.time)}, 'HH')"
    else:
        dt, hr = "CAST(NULL AS STRING)", "CAST(NULL AS STRING)"
    session.statements.append(f"CREATE VIEW {db}.`tier_rows` AS\nSELECT *, {dt} AS `dt`, {hr} AS `hr` "
                              f"FROM {db}.`scored_rows`")
    for name, contract in (("scored", out.scored), ("alerts", out.alerts), ("dlq", out.dead_letters)):
        session.statements.append(json_table(
            f"{db}.{quote(name)}", contract, plan.topics[name], plan.bootstrap_servers, time_col=None,
            group_id=plan.group_id, transactional_prefix=f"{plan.transactional_prefix}-{name}", metadata=False))
    session.statements.append(tier_table(f"{db}.`tier`", out.tier, plan.tier))


def topics_named(available: dict[str, dict[str, Any]], wanted: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``available`` limited to ``wanted`` (all when empty); SchemaError naming a topic with no schema."""
    wanted = list(wanted)
    if not wanted:
        return available
    unknown = [t for t in wanted if t not in available]
    if unknown:
        from connectors.errors import SchemaError

        raise SchemaError(f"no schema is registered for topic(s) {', '.join(map(repr, unknown))} in "
                          f"{SCHEMA_TOPIC!r} ({len(available)} topic(s) are)")
    return {t: available[t] for t in wanted}

