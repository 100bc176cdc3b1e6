"""The scoring job, declared once: options, the client-side plan, and ``build(raw, plan)``.

    raw Kafka records -> decode + pseudonymise (udfs/preprocess) -> validate (udfs/validate_features)
    -> ANOMALY(...) (udfs/anomaly_score) -> route: scored | alerts | dead letters

``plan(settings, options)`` does every check that can be done before submitting (the broker
answers, the topic has a schema, the model exists and its features are columns of the topic,
the suite loads, the pseudonymisation secret is readable) and creates the output topics.
``build(raw, plan)`` declares the pipeline on a table of raw Kafka records (``raw_source``
columns: record_key, payload, kafka_partition, kafka_offset, kafka_timestamp, kafka_headers) and
returns the three outputs, shaped exactly as the record contract (connectors/records.py) says;
jobs attach sinks to them with jobs/core/sinks.py. A bad record never fails the job and never
disappears: each input record ends up in exactly one of scored or dead letters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pyflink.table import Table
from pyflink.table.expressions import call_sql, col, lit

from connectors import schema_store
from connectors.avro_serde import SCHEMA_HEADER, schema_id
from connectors.errors import SchemaError
from connectors.flink_kafka import StartPosition
from connectors.kafka_io import DEFAULT_PARTITIONS, check_broker, create_topic
from connectors.model_registry import ModelRef, ModelRegistry, compatible
from connectors.records import Outputs, outputs
from udfs.alert_rules import Hysteresis
from udfs.anomaly_score import NO_MODEL, REFRESH_SECONDS
from vigil.commands import Options, OptionsError, option, partition_offsets
from vigil.settings import S3Settings, VigilSettings


def _iso_millis(text: str) -> str:
    import datetime as dt

    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2026-01-01T00:00:00Z, got {text!r}") from None
    return text


def millis(text: str | None) -> int | None:
    """Epoch milliseconds of an ISO 8601 time (naive = UTC)."""
    import datetime as dt

    if text is None:
        return None
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp() * 1000)


class ScoreOptions(Options):
    """Options of both scoring jobs (Table API and DataStream); each flag's help says what it does."""

    input_topic: str = option("telemetry", "Kafka topic to score (its schema must be registered)", flag="--input")
    scored_topic: str | None = option(None, "topic for every scored event", show_default="<input>.scored")
    alerts_topic: str | None = option(None, "topic for alerts", show_default="<input>.alerts")
    dlq_topic: str | None = option(None, "topic for dead letters (records that could not be scored)",
                                   show_default="<input>.dlq")
    model: str | None = option(None, "model to score with: name@alias (followed: a promotion is hot-swapped "
                                     "in), name@N (fixed) or name (= name@champion)",
                               show_default="<input>@champion")
    model_refresh_seconds: float = option(REFRESH_SECONDS, "how often workers look where the model's alias points "
                                                           "(0 = never)", ge=0)
    expectations: str | None = option(None, "Great Expectations suite JSON; 'none' skips validation",
                                      show_default="the suite named after the topic's schema, if any")
    validation_engine: Literal["compiled", "gx"] = option(
        "compiled", "compiled: the suite as vectorized masks; gx: Great Expectations itself (slow, the reference)")
    group_id: str | None = option(None, "Kafka consumer group: a resubmitted job with the same group goes on "
                                        "where its committed output ended", show_default="vigil-<job>")
    from_earliest: bool = option(False, "backfill: read the topic from its earliest offset, not from the group's "
                                        "committed offsets (use other output topics and group)")
    from_timestamp: str | None = option(None, "backfill: start at the first record of this time (ISO 8601)",
                                        parse=_iso_millis)
    from_offsets: dict[int, int] | None = option(None, "start at these offsets", parse=partition_offsets,
                                                 metavar="P:OFF,...")
    from_savepoint: str | None = option(None, "resume from this savepoint or retained checkpoint (its offsets and "
                                              "state); see python -m stack cluster upgrade")
    until: str | None = option(None, "stop at the first record of this time (ISO 8601): a backfill of a range",
                               parse=_iso_millis)
    bounded: bool = option(False, "stop at the offsets that were latest when the job started")
    parallelism: int = option(1, "parallelism of the job", ge=1)
    checkpoint_interval: str | None = option(None, "checkpoint interval; the Kafka sinks commit on checkpoints",
                                             show_default="execution.checkpointing.interval of flink-conf/")
    output_partitions: int = option(DEFAULT_PARTITIONS, "partitions of output topics the job creates", ge=1)
    context: int | None = option(None, "readings per entity the job gives the model (the current one and those "
                                       "before it); more than the model reads leaves room to hot-swap in a "
                                       "version with a longer window", ge=1, show_default="the model's window")
    alarm_enter: int = option(Hysteresis.enter, "alerts: an entity's alarm opens when this many of its last "
                                                "--alarm-within readings are anomalous", ge=1)
    alarm_within: int = option(Hysteresis.within, "alerts: readings the --alarm-enter count looks back over", ge=1)
    alarm_clear: int = option(Hysteresis.clear, "alerts: consecutive normal readings that close an alarm", ge=1)


class JobOptions(ScoreOptions):
    """The options of the scoring jobs that Vigil submits itself (Table API and DataStream; the SQL
    script's job is configured by its session)."""

    profile: Literal["throughput", "low-latency"] = option(
        "throughput", "throughput: the Python stage's bundles and Arrow batches of flink-conf/ (up to 1 s, 10,000 "
                      "rows), sinks that batch for up to 20 ms; low-latency: bundles of at most 1,000 rows "
                      "flushed every 10 ms, network buffers every 10 ms, sinks that send at once, for alerts "
                      "within a few hundred ms at about half the events/s (benchmarks/README.md has both "
                      "figures)")
    delivery: Literal["exactly-once", "at-least-once"] = option(
        "exactly-once", "the Kafka sinks: exactly-once (transactions, visible to read_committed consumers at each "
                        "checkpoint) or at-least-once (visible at once; a restart may write a record twice)")


SCORE_SETTINGS_FLAGS = ("kafka.bootstrap_servers", "model.store", "tier", "pseudonym.secret_file")


@dataclass(frozen=True)
class ScoringPlan:
    """What a scoring job reads, scores with and writes: resolved on the client, before submission.

    Holds no secret: the pseudonymisation secret is named by its file, S3 by its address only.
    """

    job: str
    input_topic: str
    topics: dict[str, str]  # scored / alerts / dlq -> topic
    bootstrap_servers: str
    group_id: str
    start: StartPosition
    savepoint: str | None
    until_ms: int | None
    bounded: bool
    parallelism: int
    checkpoint_interval: str | None
    schema: dict[str, Any]
    outputs: Outputs
    manifest: dict[str, Any]
    suite: dict[str, Any] | None
    model_store: str
    model_ref: str
    model_refresh_seconds: float
    validation_engine: str
    secret_file: str | None
    s3: S3Settings | None
    tier: str | None
    context: int = 1            # readings per entity given to the model (>= its window)
    alarm: Hysteresis = Hysteresis()
    shadow_ref: str | None = None  # a second model that scores every event in shadow (--shadow)
    shadow_manifest: dict[str, Any] | None = None
    decode_jar: str | None = None  # VIGIL_DECODE's jar: decode on the JVM (jobs/core/jvm_decode); None: in Python
    knobs: dict[str, str] = field(default_factory=dict)  # Flink configuration of the --profile
    producer: dict[str, str] = field(default_factory=dict)  # the Kafka sinks' producer properties (--profile)
    exactly_once: bool = True   # the Kafka sinks' delivery (--delivery)

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"]["names"])

    @property
    def schema_id(self) -> str:
        return schema_id(self.schema)

    @property
    def model_number(self) -> int | None:
        """The version the plan resolved: the workers' fallback at (re)start."""
        return self.manifest.get("number")

    @property
    def transactional_prefix(self) -> str:
        return f"{self.group_id}-{self.input_topic}"


def model_ref(options: ScoreOptions) -> ModelRef:
    """The model the job scores with: ``--model``, else the input topic's champion."""
    return ModelRef.parse(options.model or options.input_topic)


def load_suite(expectations: str | None, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The expectation suite for this topic: the one given, else the one named after the schema."""
    if expectations == "none":
        return None
    from udfs import validate_features

    if expectations:
        return validate_features.load_suite(expectations)
    if schema.get("namespace") == "dev.vigil.telemetry.v1":
        return validate_features.load_suite("telemetry-v1")
    return None  # replayed topics: decoding + impossible-value checks + scoring still apply


def plan(settings: VigilSettings, options: ScoreOptions, *, job: str, topic_infix: str = "",
         tier: bool = True) -> ScoringPlan:
    """Client-side checks and topic creation, then the plan; see the module docstring.

    ``topic_infix``: e.g. ``.stream`` makes the default outputs ``<input>.stream.scored`` etc.
    """
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    schema = schema_store.require(bootstrap, options.input_topic)
    store_s3 = settings.s3 if settings.s3_for(settings.model_store) else None
    registry = ModelRegistry(settings.model_store, store_s3)
    manifest = registry.manifest(registry.resolve(model_ref(options)))
    shadow = getattr(options, "shadow", None)
    shadow_manifest = registry.manifest(registry.resolve(ModelRef.parse(shadow))) if shadow else None
    suite = load_suite(options.expectations, schema)
    settings.pseudonym.check_readable()
    made = assemble(settings, options, schema, manifest, suite, job=job, topic_infix=topic_infix, tier=tier,
                    shadow_manifest=shadow_manifest)
    for topic in made.topics.values():
        create_topic(bootstrap, topic, options.output_partitions)
    return made


def assemble(settings: VigilSettings, options: ScoreOptions, schema: dict[str, Any], manifest: dict[str, Any],
             suite: dict[str, Any] | None, *, job: str, topic_infix: str = "", tier: bool = True,
             shadow_manifest: dict[str, Any] | None = None) -> ScoringPlan:
    """The plan from values already looked up (no Kafka, no store): what plan() returns after its checks.

    Raises SchemaError when the model (or the shadow model) needs a column the topic does not have,
    or the shadow model reads other features than the scoring model.
    """
    contracts = outputs(schema)
    decoded = {c.name for c in contracts.scored_base.columns}
    missing = [f for f in manifest["features"]["names"] if f not in decoded]
    if missing:
        raise SchemaError(f"model {manifest['version']} needs columns {missing} that topic "
                          f"{options.input_topic!r} does not have")
    window = int(manifest["features"].get("window", 1))
    if shadow_manifest is not None:
        why = compatible(shadow_manifest, manifest["features"]["names"], schema_id(schema))
        if why:
            raise SchemaError(f"--shadow {shadow_manifest['version']} cannot score beside {manifest['version']}: {why}")
        window = max(window, int(shadow_manifest["features"].get("window", 1)))
    context = options.context or window
    if context < window:
        raise OptionsError(f"--context {context}: model {manifest['version']} reads the last {window} readings of "
                           f"each entity; give --context {window} or more")
    try:
        alarm = Hysteresis(options.alarm_enter, options.alarm_within, options.alarm_clear)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
    why = compatible(manifest, manifest["features"]["names"], schema_id(schema))
    if why:
        raise SchemaError(f"model {manifest['version']} cannot score topic {options.input_topic!r}: {why}")
    chosen = [f for f in ("from_earliest", "from_timestamp", "from_offsets", "from_savepoint") if getattr(options, f)]
    if len(chosen) > 1:
        raise OptionsError(f"{' and '.join('--' + c.replace('_', '-') for c in chosen)} each choose where to "
                           f"start: give one")
    start = (StartPosition("earliest") if options.from_earliest
             else StartPosition("timestamp", timestamp_ms=millis(options.from_timestamp)) if options.from_timestamp
             else StartPosition("offsets", offsets=options.from_offsets) if options.from_offsets
             else StartPosition())
    base = f"{options.input_topic}{topic_infix}"
    topics = {"scored": options.scored_topic or f"{base}.scored",
              "alerts": options.alerts_topic or f"{base}.alerts",
              "dlq": options.dlq_topic or f"{base}.dlq"}
    if shadow_manifest is not None:
        topics["shadow"] = getattr(options, "shadow_topic", None) or f"{base}.shadow"
    tier_uri = settings.tier_for(options.input_topic) if tier else None
    decode_jar = None
    if getattr(options, "decode", "python") == "jvm":
        from jobs.core import jvm_decode

        decode_jar = str(jvm_decode.check_jar(jvm_decode.jar_path(settings)))
    profile = getattr(options, "profile", "throughput")
    return ScoringPlan(
        job=job, input_topic=options.input_topic, topics=topics, bootstrap_servers=settings.bootstrap_servers,
        group_id=options.group_id or f"vigil-{job}", start=start, savepoint=options.from_savepoint,
        until_ms=millis(options.until), bounded=options.bounded, parallelism=options.parallelism,
        checkpoint_interval=options.checkpoint_interval, schema=schema, outputs=contracts, manifest=manifest,
        suite=suite, model_store=settings.model_store, model_ref=str(model_ref(options)),
        model_refresh_seconds=options.model_refresh_seconds, validation_engine=options.validation_engine,
        secret_file=str(settings.pseudonym.secret_file) if settings.pseudonym.secret_file else None,
        s3=settings.s3_for(settings.model_store, tier_uri), tier=tier_uri, context=context, alarm=alarm,
        shadow_ref=str(ModelRef.parse(getattr(options, "shadow"))) if shadow_manifest is not None else None,
        shadow_manifest=shadow_manifest, decode_jar=decode_jar,
        knobs=dict(PROFILES[profile]), producer=dict(PRODUCER_PROFILES[profile]),
        exactly_once=getattr(options, "delivery", "exactly-once") == "exactly-once")


@dataclass
class ScoredTables:
    """What build() declares, each shaped as its record contract: scored, alerts, dead letters."""

    scored: Table
    alerts: Table
    dead_letters: Table
    shadow: Table | None = None  # both models' scores per event, when the plan scores in shadow


RAW_COLUMNS = ("record_key", "payload", "kafka_partition", "kafka_offset", "kafka_timestamp")


def anomaly_of(plan: ScoringPlan, ref: str, fallback: int | None) -> Any:
    """ANOMALY as the Table job calls it on ``ref``: the plan's store, features, schema, refresh and
    context, with the entity pseudonym as first argument (a model calibrated per entity flags on its
    own threshold)."""
    from udfs.anomaly_score import anomaly_udf

    return anomaly_udf(plan.model_store, ref, features=plan.features, schema=plan.schema_id, fallback=fallback,
                       refresh_seconds=plan.model_refresh_seconds, s3=plan.s3, context=plan.context, entity=True)


def build(raw: Table, plan: ScoringPlan) -> ScoredTables:
    """Declare decoding, validation, scoring and routing on a raw Kafka table (module docstring)."""
    from udfs.dead_letters import SEALED_TYPE, seal_udf
    from udfs.preprocess import decode_udf, output_columns

    out = plan.outputs
    if plan.decode_jar:  # the same table, decoded on the JVM: validation and scoring are the one Python stage
        from jobs.core import jvm_decode

        decoded = jvm_decode.decoded(raw, RAW_COLUMNS, plan.schema, plan.secret_file, plan.decode_jar)
    else:
        decoded_cols = [name for name, _ in output_columns(plan.schema)]
        decode = decode_udf(plan.schema, plan.secret_file)
        decoded = raw.select(
            *[col(c) for c in RAW_COLUMNS],
            decode(col("payload"), col("kafka_headers").at(SCHEMA_HEADER)).alias("d"),
        ).select(*[col(c) for c in RAW_COLUMNS], *[col("d").get(name).alias(name) for name in decoded_cols])
    model_inputs = [col(f) for f in plan.features]
    if plan.context > 1:
        decoded, model_inputs = with_context(decoded, plan)
    model_inputs = [col(out.entity), *model_inputs]   # a model calibrated per entity flags on its own threshold
    if plan.suite is not None:
        from udfs.validate_features import suite_columns, validate_udf

        suite_cols = suite_columns(plan.suite)
        check = validate_udf(plan.suite, suite_cols, plan.validation_engine)(*[col(c) for c in suite_cols])
    else:
        check = call_sql("CAST(NULL AS STRING)")
    anomaly = anomaly_of(plan, plan.model_ref, plan.model_number)
    # The boundary comes right after the Python calls: any later expression that reads their
    # results twice (the CASE below, each sink's projection) would otherwise call them again.
    shadow_calls = []
    if plan.shadow_ref:  # the same inputs, a second model: its score goes to the shadow topic only
        shadow = anomaly_of(plan, plan.shadow_ref, plan.shadow_manifest.get("number"))
        shadow_calls = [shadow(*model_inputs).alias("shadow_s")]
    checked = computed_once(decoded.add_columns(
        check.alias("validation_error"),
        anomaly(*model_inputs).alias("s"),
        *shadow_calls,
    ), proctime=ALERT_TIME)
    scored_all = checked.add_columns(
        col("s").get("score").alias("score"),
        col("s").get("is_anomaly").alias("is_anomaly"),
        col("s").get("model_version").alias("model_version"),
        col("s").get("partial").alias("partial"),
        col("kafka_partition").alias("source_partition"),
        col("kafka_offset").alias("source_offset"),
    ).add_columns(call_sql(
        "CASE WHEN `error` IS NOT NULL THEN `error` "
        "WHEN validation_error IS NOT NULL THEN CONCAT('validation_failed: ', validation_error) "
        f"WHEN model_version = '{NO_MODEL}' THEN 'unscorable: no usable model (see the job log)' "
        "WHEN score IS NULL THEN CONCAT('unscorable: ', COALESCE(`partial`, 'no score')) END").alias("dlq_reason"))

    scored_rows = scored_all.where(col("dlq_reason").is_null)
    scored = out.scored.project(with_derived(scored_rows, out))
    alerts = episode_alerts(scored_rows, plan)
    # Only dead letters reach this Python call (the filter runs first, in Java): sealing costs nothing
    # on the scored path.
    # (The planner cannot read the fields of a Python result in the projection that computes it when
    # that projection also has a filter below it: a boundary separates the two.)
    sealed = computed_once(scored_all.where(col("dlq_reason").is_not_null).select(
        col("dlq_reason").alias("reason"),
        call_sql("SPLIT_INDEX(dlq_reason, ':', 0)").alias("stage"),
        lit(plan.input_topic).alias("source_topic"),
        col("kafka_partition").alias("source_partition"), col("kafka_offset").alias("source_offset"),
        col("kafka_timestamp").alias("source_timestamp"), col("model_version"),
        seal_udf(plan.secret_file)(col("record_key"), col("payload")).alias("sealed"),
    ))
    dead_letters = out.dead_letters.project(
        sealed.add_columns(*[col("sealed").get(f.name).alias(f.name) for f in SEALED_TYPE.fields]))
    shadowed = None
    if plan.shadow_ref:
        from connectors.records import shadow_contract

        shadowed = shadow_contract(plan.schema).project(scored_rows.add_columns(
            col("shadow_s").get("score").alias("shadow_score"),
            col("shadow_s").get("is_anomaly").alias("shadow_is_anomaly"),
            col("shadow_s").get("model_version").alias("shadow_model_version")))
    return ScoredTables(scored, alerts, dead_letters, shadowed)


# Flink configuration each --profile sets on the job (its table config); throughput keeps flink-conf/'s.
# low-latency: the Python stage's bundles, and the network buffers before the alerts' keyed steps, are
# flushed every 10 ms (Flink's default buffer timeout is 100 ms per exchange).
PROFILES: dict[str, dict[str, str]] = {
    "throughput": {},
    "low-latency": {"python.fn-execution.bundle.time": "10", "python.fn-execution.bundle.size": "1000",
                    "python.fn-execution.arrow.batch.size": "1000", "execution.buffer-timeout.interval": "10ms"},
}
# The Kafka producer properties each --profile gives the job's sinks: throughput fills batches for up
# to 20 ms (5-9% more events/s in benchmarks.pipeline); low-latency sends each batch at once.
PRODUCER_PROFILES: dict[str, dict[str, str]] = {
    "throughput": {"linger.ms": "20", "batch.size": "262144"},
    "low-latency": {"linger.ms": "0"},
}


CONTEXT_KEY, CONTEXT_TIME, ALERT_TIME = "_ctx_key", "_ctx_pt", "_alert_pt"


def context_time(out: Outputs) -> str:
    """The column whose LAGs give the context's times: the event time, else the Kafka timestamp."""
    return out.time or "kafka_timestamp"


def context_columns(features: list[str], window: int, time_col: str) -> list[str]:
    """The ANOMALY arguments of a window: each reading's sensors (newest first), then their times."""
    sensors = [f if k == 0 else f"{f}__lag{k}" for k in range(window) for f in features]
    return sensors + [time_col if k == 0 else f"_time__lag{k}" for k in range(window)]


def lag_expressions(features: list[str], window: int, time_col: str) -> list[str]:
    """SQL for the previous ``window - 1`` readings' sensors and times over an OVER window ``w``,
    aliased as :func:`context_columns` names them (the Table job and the SQL script both use it)."""
    lags = [f"LAG(`{f}`, {k}) OVER w AS `{f}__lag{k}`" for k in range(1, window) for f in features]
    return lags + [f"LAG(`{time_col}`, {k}) OVER w AS `_time__lag{k}`" for k in range(1, window)]


def with_context(decoded: Table, plan: ScoringPlan) -> tuple[Table, list[Any]]:
    """The decoded table plus each reading's entity's previous ``context - 1`` readings (LAG over an
    OVER window per entity, in arrival order: computed in Java, kept in Flink state and checkpoints).
    Records that did not decode are nobody's context (as in training, which skips them)."""
    out, window = plan.outputs, plan.context
    keyed = computed_once(decoded.add_columns(
        call_sql(f"CASE WHEN `error` IS NULL THEN `{out.entity}` END").alias(CONTEXT_KEY)), proctime=CONTEXT_TIME)
    t_env = decoded._t_env
    view = f"vigil_context_{id(keyed):x}"
    t_env.create_temporary_view(view, keyed)
    time_col = context_time(out)
    lags = lag_expressions(plan.features, window, time_col)
    # the time attribute stays behind: a Python call cannot read a processing time
    keep = ", ".join(f"`{c}`" for c in decoded.get_schema().get_field_names())
    with_lags = t_env.sql_query(f"SELECT {keep}, {', '.join(lags)} FROM `{view}` "
                                f"WINDOW w AS (PARTITION BY `{CONTEXT_KEY}` ORDER BY `{CONTEXT_TIME}`)")
    return with_lags, [col(c) for c in context_columns(plan.features, window, time_col)]


def episode_alerts(scored: Table, plan: ScoringPlan) -> Table:
    """Alerts of the Table job: alarm episodes per entity (udfs/alert_rules.Hysteresis).

    The anomaly flags of each entity's last readings come from LAG over an OVER window (Java); only
    the readings at which an alarm can open or close (the anomalous ones, and those where an anomaly
    leaves the window) reach the episode builder, a keyed Python function with the rule's state."""
    from pyflink.common import Types

    from udfs.score_per_entity import BuildEpisodes

    out, rule = plan.outputs, plan.alarm
    t_env = scored._t_env
    view = f"vigil_alarm_{id(scored):x}"
    t_env.create_temporary_view(view, scored.add_columns(
        call_sql("CASE WHEN is_anomaly THEN 1 ELSE 0 END").alias("_flag")))
    lags = [f"COALESCE(LAG(_flag, {k}) OVER w, 0) AS `_flag__lag{k}`" for k in range(1, rule.lags + 1)]
    keep = ", ".join(f"`{c}`" for c in scored.get_schema().get_field_names() if c != ALERT_TIME)
    flagged = t_env.sql_query(f"SELECT {keep}, _flag, {', '.join(lags)} FROM `{view}` "
                              f"WINDOW w AS (PARTITION BY `{out.entity}` ORDER BY `{ALERT_TIME}`)")
    flag = ["_flag"] + [f"_flag__lag{k}" for k in range(1, rule.lags + 1)]
    count = " + ".join(flag[:rule.within])
    recent = " + ".join(flag[:rule.clear])
    relevant = f"_flag = 1 OR `{flag[rule.clear]}` = 1 OR `{flag[rule.within]}` = 1"
    t = f"`{out.time}`" if out.time else "CAST(NULL AS TIMESTAMP(3))"
    label = f"`{out.label}`" if out.label else "CAST(NULL AS STRING)"
    rows = flagged.where(call_sql(relevant)).select(
        col(out.entity).alias("entity"), call_sql(t).alias("event_time"), col("score"),
        col("source_partition"), col("source_offset"), call_sql(label).alias("label"), col("model_version"),
        call_sql("_flag = 1").alias("anomalous"), call_sql(count).alias("count"),
        call_sql(f"({recent}) = 0").alias("quiet"))
    stream = t_env.to_data_stream(rows)
    events = (stream.key_by(lambda r: r["entity"], key_type=Types.STRING())
              .process(BuildEpisodes(rule, out), output_type=out.alerts.type_info())
              .name("alert-episodes").uid("alert-episodes"))
    return out.alerts.project(t_env.from_data_stream(events))


def with_derived(table: Table, out: Outputs) -> Table:
    """``table`` plus the schema's derived features, computed by the same SQL in every job."""
    if not out.derived:
        return table
    return table.add_columns(*[call_sql(expr).alias(name) for name, expr in out.derived.items()])


def computed_once(table: Table, proctime: str | None = None) -> Table:
    """The same table behind a DataStream boundary, so every branch reads one computed result.

    The planner pushes each sink's projection down into the Python calls; branches that need
    different columns (the DLQ keeps the payload, the scored topic does not) would otherwise each
    decode, validate and score every record again. Only a StreamTableEnvironment can do this; in a
    plain TableEnvironment the table is returned unchanged. ``proctime`` adds a processing-time
    attribute of that name (for OVER windows after the boundary).
    """
    from pyflink.table import Schema, StreamTableEnvironment

    t_env = table._t_env
    if not isinstance(t_env, StreamTableEnvironment):
        if proctime:
            raise TypeError("temporal context and alarms need a StreamTableEnvironment")
        return table
    stream = t_env.to_data_stream(table)
    if proctime is None:
        return t_env.from_data_stream(stream)
    schema = table.get_schema()
    builder = Schema.new_builder()
    for name, dtype in zip(schema.get_field_names(), schema.get_field_data_types()):
        builder.column(name, dtype)
    return t_env.from_data_stream(stream, builder.column_by_expression(proctime, "PROCTIME()").build())
