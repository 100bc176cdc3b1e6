"""The variants measured side by side: plain Python (a, f, g) and Flink (b ... e-full), and latency."""
from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.pipeline.kafka_tools import (
    Corpus,
    assigned_consumer,
    consume_batches,
    output_timestamps,
    produce_one,
    producer_config,
    span_rate,
    topic_count,
)
from benchmarks.pipeline.settings import KNOB_KEYS, BenchSettings

# --- the model ---------------------------------------------------------------------------------

@dataclass
class Model:
    uri: str
    manifest: dict[str, Any]
    loaded: Any  # udfs.anomaly_score.LoadedModel (numpy engine)


def make_model(workdir: Path) -> Model:
    """A quickly trained autoencoder in a local store (speed does not depend on its quality).

    A point model (each reading alone, one member): the variants compare Flink's stages on the same
    one-call-per-reading function. The trainer's default (a window of readings, three members)
    costs more per reading in the function itself; benchmarks/score_function.py measures that."""
    from benchmarks.score_function import MODEL
    from benchmarks.score_function import make_model as train_quick
    from connectors.model_registry import ModelRegistry
    from udfs.anomaly_score import LoadedModel

    (workdir / "work").mkdir()
    uri, _ = train_quick(workdir / "work", context="point", members=1)
    registry = ModelRegistry(uri)
    folder, manifest = registry.fetch(registry.resolve(MODEL), cache_dir=workdir / "cache")
    return Model(uri, manifest, LoadedModel(folder, manifest, "numpy"))


# --- plain Python variants (a, f, g) -----------------------------------------------------------

def consume_rate(bootstrap: str, topic: str, expected: int) -> float:
    start = time.perf_counter()
    count = sum(len(batch) for batch in consume_batches(bootstrap, topic))
    seconds = time.perf_counter() - start
    if count != expected:
        raise RuntimeError(f"consumed {count} records from {topic!r}, expected {expected}")
    return count / seconds


def hand_rolled(bootstrap: str, source: str, sink: str, model: Model, expected: int, batch: int = 10_000) -> float:
    """(f): consume a batch, decode each record with fastavro, score the batch, produce JSON per record.

    Returns events/s from the first consume call to the last acknowledged result.
    """
    from confluent_kafka import Producer

    from connectors.avro_serde import AvroDeserializer, load_schema

    decode = AvroDeserializer(load_schema())
    features = list(model.manifest["features"]["names"])
    scorer, version = model.loaded, model.loaded.version
    producer = Producer(producer_config(bootstrap))
    start = time.perf_counter()
    done = 0
    for messages in consume_batches(bootstrap, source, batch=batch):
        records = [decode(m.value()) for m in messages]
        x = np.array([[r[f] for f in features] for r in records], dtype=np.float64)
        scores = scorer.score(x)
        flags = scores > scorer.threshold
        for m, r, score, flag in zip(messages, records, scores.tolist(), flags.tolist()):
            value = json.dumps({"vehicle_id": r["vehicle_id"], "event_time": r["event_time"].isoformat(),
                                "source_partition": m.partition(), "source_offset": m.offset(),
                                "score": score, "is_anomaly": flag, "model_version": version})
            produce_one(producer, sink, m.key(), value.encode(), None)
        producer.poll(0)
        done += len(messages)
    if producer.flush(120):
        raise RuntimeError(f"(f): results to {sink!r} left undelivered")
    seconds = time.perf_counter() - start
    if done != expected:
        raise RuntimeError(f"(f) scored {done} records, expected {expected}")
    return done / seconds


def model_alone(model: Model, rows: int = 10_000, min_seconds: float = 1.0) -> float:
    """(g): rows/s of NumpyScorer.score on a ready, scaled float32 matrix; best of repeated calls."""
    features = model.loaded.features
    rng = np.random.default_rng(0)
    raw = rng.normal(np.asarray(features.mean), np.asarray(features.scale), size=(rows, len(features)))
    x = features.transform(raw).astype(np.float32)
    scorer = model.loaded.scorer
    scorer.score(x)
    best, deadline = 0.0, time.perf_counter() + min_seconds
    while True:
        start = time.perf_counter()
        scorer.score(x)
        best = max(best, rows / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            return best


# --- Flink variants ----------------------------------------------------------------------------

def noop_udf() -> Any:
    """A pandas UDF with ANOMALY's signature and result type that does no work.

    Built inside a function so cloudpickle ships it by value: the Python workers cannot import
    the benchmarks package (it is not part of the installed distribution).
    """
    import pandas as pd
    from pyflink.table.udf import ScalarFunction, udf

    from udfs.anomaly_score import RESULT_TYPE

    class NoOp(ScalarFunction):
        def eval(self, *columns: pd.Series) -> pd.DataFrame:
            n = len(columns[0])
            return pd.DataFrame({"score": np.zeros(n), "is_anomaly": np.zeros(n, dtype=bool).astype(object),
                                 "model_version": np.full(n, "noop", dtype=object),
                                 "partial": np.full(n, None, dtype=object)})

    return udf(NoOp(), result_type=RESULT_TYPE, func_type="pandas")


# --- the real job with its Python stages moved: the candidates of issue 13 -----------------------

REAL_JOB = ("d-full", "e-full", "d-full-jvm", "e-full-jvm")
# e-full-jvm with its sinks changed: the scored topic in Avro, and the Kafka producers' own batching
SINK_VARIANTS = ("e-full-jvm/avro", "e-full-jvm/unbatched")
# one stage, decode + validate + score, with a plain sink: candidate (a) and (b) side by side
STAGES = ("a-stage", "b-stage")


def avro_value(descriptor: Any) -> Any:
    """The same Kafka sink writing its values in Flink's avro format (schemaless Avro) instead of JSON."""
    from pyflink.table import TableDescriptor

    builder = TableDescriptor.for_connector("kafka").schema(descriptor.get_schema())
    for key, value in descriptor.get_options().items():
        if key != "connector" and not key.startswith("value.json."):
            builder = builder.option(key, "avro" if key == "value.format" else value)
    return builder.build()


def fused_udf(plan: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """Candidate (a), a benchmark prototype: decode + validate + score in one pandas UDF on the raw payload.

    Returns (the UDF, its result columns): the decoded columns and ``error``, then
    ``_validation_error`` and ANOMALY's fields as ``_score``, ``_is_anomaly``, ... (the same
    udfs classes as the real job, called one after the other in one Python call).
    """
    import pandas as pd
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    from udfs.anomaly_score import RESULT_TYPE, AnomalyScore
    from udfs.preprocess import DecodeTelemetry, output_columns
    from udfs.validate_features import ValidateFeatures, suite_columns

    if plan.context != 1:
        raise ValueError(f"the fused prototype scores single readings; this plan's context is {plan.context}")
    suite_cols = suite_columns(plan.suite) if plan.suite is not None else []
    columns = [*output_columns(plan.schema), ("_validation_error", DataTypes.STRING()),
               *[(f"_{f.name}", f.data_type) for f in RESULT_TYPE.fields]]

    class Fused(ScalarFunction):
        def __init__(self) -> None:
            self.decode = DecodeTelemetry(plan.schema, plan.secret_file)
            self.validate = (ValidateFeatures(plan.suite, suite_cols, plan.validation_engine)
                             if plan.suite is not None else None)
            self.score = AnomalyScore(plan.model_store, plan.model_ref, features=plan.features, schema=plan.schema_id,
                                      fallback=plan.model_number, refresh_seconds=plan.model_refresh_seconds,
                                      s3=plan.s3, context=plan.context, entity=True)

        def open(self, function_context: Any) -> None:
            self.decode.open(function_context)
            if self.validate is not None:
                self.validate.open(function_context)
            self.score.open(function_context)

        def eval(self, payloads: pd.Series, headers: pd.Series) -> pd.DataFrame:
            frame = self.decode.eval(payloads, headers)
            rows = len(frame)
            frame["_validation_error"] = (self.validate.eval(*[frame[c] for c in suite_cols])
                                          if self.validate is not None else pd.Series([None] * rows, dtype=object))
            scored = self.score.eval(frame[plan.outputs.entity], *[frame[f] for f in plan.features])
            for name in scored.columns:
                frame[f"_{name}"] = scored[name].to_numpy()
            return frame

    row = DataTypes.ROW([DataTypes.FIELD(name, dtype) for name, dtype in columns])
    return udf(Fused(), result_type=row, func_type="pandas"), columns


@dataclass
class FlinkRun:
    seconds: float
    outputs: int
    span_rate: float | None


class FlinkBench:
    """One StreamTableEnvironment (one JVM) for every Flink variant, checkpointing off for bounded runs."""

    def __init__(self, settings: BenchSettings, model: Model, new_topic: Callable[[str], str]) -> None:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.table import EnvironmentSettings, StreamTableEnvironment

        from connectors.avro_serde import load_schema
        from jobs.core.flink_env import load_configuration
        from udfs.validate_features import load_suite

        self.settings = settings
        self.model = model
        self.new_topic = new_topic
        self.schema = load_schema()
        self.suite = load_suite("telemetry-v1")
        config = load_configuration({"parallelism.default": 1})
        # Bounded runs finish without checkpoints; latency runs switch the configured interval on.
        self.checkpoint_interval = config.get_string("execution.checkpointing.interval", "10 s")
        config.remove_config("execution.checkpointing.interval")
        self.configured_knobs = {k: config.get_string(k, "") for k in KNOB_KEYS}
        self.env = StreamExecutionEnvironment.get_execution_environment(config)
        self.t_env = StreamTableEnvironment.create(
            self.env, environment_settings=EnvironmentSettings.new_instance().in_streaming_mode()
            .with_configuration(config).build())

    # --- declaring ------------------------------------------------------------------------------
    def _avro(self, topic: str) -> Any:
        from connectors import flink_kafka

        return self.t_env.from_descriptor(flink_kafka.avro_source(
            topic, self.settings.bootstrap_servers, self.schema, group_id=f"bench-{uuid.uuid4().hex[:8]}",
            bounded=True))

    def _raw(self, topic: str, bounded: bool) -> Any:
        from connectors import flink_kafka

        return self.t_env.from_descriptor(flink_kafka.raw_source(
            topic, self.settings.bootstrap_servers, group_id=f"bench-{uuid.uuid4().hex[:8]}", bounded=bounded))

    def _json_sink(self, table: Any, topic: str, key: str, exactly_once: bool = False) -> Any:
        from pyflink.table import Schema

        from connectors import flink_kafka

        schema = Schema.new_builder().from_row_data_type(table.get_schema().to_row_data_type()).build()
        return flink_kafka.json_sink(topic, self.settings.bootstrap_servers, schema, key_field=key,
                                     exactly_once=exactly_once, transactional_prefix=f"bench-{topic}")

    def _raw_sink(self, topic: str) -> Any:
        """Kafka sink of key and value bytes as they came (the raw format both ways)."""
        from pyflink.table import DataTypes, Schema, TableDescriptor

        schema = (Schema.new_builder().column("record_key", DataTypes.BYTES())
                  .column("payload", DataTypes.BYTES()).build())
        return (TableDescriptor.for_connector("kafka").schema(schema)
                .option("topic", topic).option("properties.bootstrap.servers", self.settings.bootstrap_servers)
                .option("key.format", "raw").option("key.fields", "record_key")
                .option("value.format", "raw").option("value.fields-include", "EXCEPT_KEY")
                .option("sink.delivery-guarantee", "at-least-once").build())

    def _scoring_plan(self, input_topic: str, outputs: dict[str, str], suite: dict[str, Any] | None) -> Any:
        """The real job's plan for this run (jobs.core.scoring.assemble: no Kafka checks, no topics made)."""
        from jobs.core.scoring import ScoreOptions, assemble
        from vigil.settings import VigilSettings

        settings = VigilSettings.load({"kafka.bootstrap_servers": self.settings.bootstrap_servers,
                                       "model.store": self.model.uri, "tier": "none"})
        options = ScoreOptions(input_topic=input_topic, model=self.model.manifest["model_name"],
                               scored_topic=outputs["scored"],
                               alerts_topic=outputs["alerts"], dlq_topic=outputs["dlq"], bounded=True,
                               expectations=None if suite is not None else "none")
        return assemble(settings, options, self.schema, self.model.manifest, suite, job="bench-pipeline")

    def _stage(self, variant: str, raw: Any, input_topic: str) -> Any:
        """Decode + validate + score as one stage, one output row per record (no routing, one sink).

        ``a-stage``: the fused pandas UDF on the raw payload (candidate a); ``b-stage``: VIGIL_DECODE,
        then VALIDATE and ANOMALY in one Python stage (candidate b), both as the real job calls them.
        """
        from pyflink.table.expressions import col

        from connectors.avro_serde import SCHEMA_HEADER
        from jobs.core import jvm_decode, scoring
        from udfs.validate_features import suite_columns, validate_udf

        plan = self._scoring_plan(input_topic, {r: f"unused.{r}" for r in ("scored", "alerts", "dlq")}, self.suite)
        ids = [col("vehicle_id_pseudonym"), col("kafka_partition").alias("source_partition"),
               col("kafka_offset").alias("source_offset"), col("error")]
        if variant == "a-stage":
            fused, columns = fused_udf(plan)
            r = raw.select(col("kafka_partition"), col("kafka_offset"),
                           fused(col("payload"), col("kafka_headers").at(SCHEMA_HEADER)).alias("r"))
            r = r.select(col("kafka_partition"), col("kafka_offset"), *[col("r").get(n).alias(n) for n, _ in columns])
            return r.select(*ids, col("_validation_error").alias("validation_error"), col("_score").alias("score"),
                            col("_is_anomaly").alias("is_anomaly"), col("_model_version").alias("model_version"))
        decoded = jvm_decode.decoded(raw, ("kafka_partition", "kafka_offset"), plan.schema, plan.secret_file,
                                     self.settings.decode_jar)
        columns = suite_columns(plan.suite)
        anomaly = scoring.anomaly_of(plan, plan.model_ref, plan.model_number)
        # the DataStream boundary of the real job (scoring.computed_once): the planner cannot split a
        # projection that reads the fields of the Python result it computes
        checked = scoring.computed_once(decoded.add_columns(
            validate_udf(plan.suite, columns, plan.validation_engine)(*[col(c) for c in columns])
            .alias("validation_error"), anomaly(col(plan.outputs.entity), *[col(f) for f in plan.features]).alias("s")))
        return checked.select(*ids, col("validation_error"), col("s").get("score").alias("score"),
                              col("s").get("is_anomaly").alias("is_anomaly"),
                              col("s").get("model_version").alias("model_version"))

    def statements(self, variant: str, input_topic: str, *, bounded: bool = True, exactly_once: bool = False,
                   producer: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
        """(statement set, output topics by role) of ``variant``.

        Roles: ``main`` (one record per input record that scored; its timestamps show progress),
        ``dlq`` (the rest, full job only) and ``alerts`` (a subset of main, full job only).
        """
        from pyflink.table.expressions import col, lit

        from udfs.anomaly_score import anomaly_udf

        statements = self.t_env.create_statement_set()
        if variant in REAL_JOB or variant in SINK_VARIANTS:
            from jobs.core import scoring, sinks

            outputs = {name: self.new_topic(f"{variant.replace('/', '.')}.{name}")
                       for name in ("scored", "alerts", "dlq")}
            plan = self._scoring_plan(input_topic, outputs, self.suite if variant.startswith("e-") else None)
            raw = self._raw(input_topic, bounded)
            # --decode jvm (the job's default) or --decode python
            decode_jar = self.settings.decode_jar if "-jvm" in variant else None
            plan = replace(plan, decode_jar=decode_jar)
            if producer is not None or variant == "e-full-jvm/unbatched":  # another --profile's, or Kafka's own
                plan = replace(plan, producer=producer or {})
            tables = scoring.build(raw, plan)
            if variant == "e-full-jvm/avro":
                out = plan.outputs
                for name, table, contract in (("scored", tables.scored, out.scored),
                                              ("alerts", tables.alerts, out.alerts),
                                              ("dlq", tables.dead_letters, out.dead_letters)):
                    sink = sinks.kafka_sink(contract, outputs[name], plan.bootstrap_servers,
                                            exactly_once=exactly_once, producer=plan.producer)
                    statements.add_insert(avro_value(sink) if name == "scored" else sink, table)
            else:
                sinks.attach(statements, tables, plan, exactly_once=exactly_once)
            return statements, {"main": outputs["scored"], "dlq": outputs["dlq"], "alerts": outputs["alerts"]}
        if variant in STAGES:
            out = self.new_topic(variant)
            table = self._stage(variant, self._raw(input_topic, bounded), input_topic)
            statements.add_insert(self._json_sink(table, out, "vehicle_id_pseudonym", exactly_once), table)
            return statements, {"main": out}

        out = self.new_topic(variant)
        if variant == "b-raw":
            statements.add_insert(self._raw_sink(out), self._raw(input_topic, bounded).select(
                col("record_key"), col("payload")))
            return statements, {"main": out}

        source = self._avro(input_topic)
        ids = [col("vehicle_id"), col("event_time"), col("kafka_partition").alias("source_partition"),
               col("kafka_offset").alias("source_offset")]
        features = [col(f) for f in self.model.manifest["features"]["names"]]
        if variant == "b":
            table = source.select(*ids, lit(0.0).alias("score"), lit(False).alias("is_anomaly"),
                                  lit("none").alias("model_version"))
        elif variant in ("c", "d", "e"):
            fn = noop_udf() if variant == "c" else anomaly_udf(self.model.uri, self.model.manifest["model_name"])
            scored = source.add_columns(fn(*features).alias("s"))
            extra = []
            if variant == "e":
                from udfs.validate_features import suite_columns, validate_udf

                columns = suite_columns(self.suite)
                scored = scored.add_columns(validate_udf(self.suite, columns)(*[col(c) for c in columns])
                                            .alias("validation_error"))
                extra = [col("validation_error")]
            # One Python call per row: the planner turns the three field reads into one PythonCalc.
            table = scored.select(*ids, col("s").get("score").alias("score"),
                                  col("s").get("is_anomaly").alias("is_anomaly"),
                                  col("s").get("model_version").alias("model_version"), *extra)
        else:
            raise ValueError(f"unknown Flink variant {variant!r}")
        statements.add_insert(self._json_sink(table, out, "vehicle_id", exactly_once), table)
        return statements, {"main": out}

    # --- running --------------------------------------------------------------------------------
    def _configure(self, name: str, knobs: dict[str, str] | None, parallelism: int) -> None:
        config = self.t_env.get_config()
        config.set("pipeline.name", f"bench-pipeline:{name}")
        for key, value in {**self.configured_knobs, **(knobs or {})}.items():
            if value:
                config.set(key, str(value))
        self.env.set_parallelism(parallelism)

    def run_bounded(self, variant: str, input_topic: str, events: int, *, knobs: dict[str, str] | None = None,
                    parallelism: int = 1, timestamps: bool = False,
                    producer: dict[str, str] | None = None) -> FlinkRun:
        """Run ``variant`` over ``input_topic`` to its end; seconds from submission to finish.

        ``knobs`` and ``producer``: Flink configuration and the real job's sink producer properties
        (a --profile's); None: the configured ones and the job's default profile."""
        statements, outputs = self.statements(variant, input_topic, producer=producer)
        self._configure(variant, knobs, parallelism)
        start = time.perf_counter()
        statements.execute().wait()
        seconds = time.perf_counter() - start
        written = sum(topic_count(self.settings.bootstrap_servers, outputs[role]) for role in ("main", "dlq")
                      if role in outputs)
        if written != events:  # a benchmark that lost or doubled records measures nothing
            raise RuntimeError(f"{variant}: {written} records written for {events} read")
        rate = span_rate(output_timestamps(self.settings.bootstrap_servers, outputs["main"])) if timestamps else None
        return FlinkRun(seconds, written, rate)

    def latency(self, corpus: Corpus, rate: float, seconds: float, *, exactly_once: bool,
                knobs: dict[str, str] | None = None, variant: str = "e-full",
                producer: dict[str, str] | None = None) -> dict[str, Any]:
        """Event-to-alert latency of the real scoring job (``variant``, unbounded) under ``rate`` events/s."""
        from confluent_kafka import Producer
        from pyflink.java_gateway import get_gateway

        bootstrap = self.settings.bootstrap_servers
        source = self.new_topic("latency.in")
        interval_ms = get_gateway().jvm.org.apache.flink.util.TimeUtils.parseDuration(
            self.checkpoint_interval).toMillis()
        statements, outputs = self.statements(variant, source, bounded=False, exactly_once=exactly_once,
                                              producer=producer)
        alerts_topic, counted = outputs["alerts"], (outputs["main"], outputs["dlq"])
        self.env.enable_checkpointing(interval_ms)
        self._configure("latency", knobs, 1)
        seen = AlertWatcher(bootstrap, alerts_topic)
        feed = Producer(producer_config(bootstrap, linger_ms=5))
        records = itertools.cycle(corpus.records)
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                key, value = next(records)
                produce_one(feed, source, key, value, corpus.headers, timestamp=int(time.time() * 1000))
            sent += count
            feed.poll(0)

        result = statements.execute()
        job = result.get_job_client()
        try:
            seen.start()
            # Trickle until the job answers (Python workers up), so the timed load meets a running job.
            deadline = time.monotonic() + 180
            while topic_count(bootstrap, outputs["main"]) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("latency run: the scoring job wrote nothing within 180 s")
                send(20)
                time.sleep(0.1)
            settle = 3.0  # the trickle's backlog drains; not measured

            def processed() -> int:
                return sum(topic_count(bootstrap, t) for t in counted)

            measure_from_ms = int((time.time() + settle) * 1000)
            loaded, start, at_window = 0, time.perf_counter(), None
            while (elapsed := time.perf_counter() - start) < settle + seconds:
                if (target := int(rate * elapsed)) > loaded:
                    send(target - loaded)
                    loaded = target
                if at_window is None and elapsed >= settle:
                    at_window = (processed(), time.perf_counter())
                time.sleep(0.002)
            measure_to_ms = int(time.time() * 1000)
            # Input not yet scored when the load stops, and the rate the job sustained meanwhile:
            # a job that cannot keep up makes the latency measure a growing queue, not the pipeline.
            done = processed()
            backlog = sent - done
            base, since = at_window or (0, start)
            sustained = (done - base) / (time.perf_counter() - since)
            if feed.flush(30):
                raise RuntimeError("latency run: input records left undelivered")
            # Drain: everything written (at-least-once), or two checkpoints' time (exactly-once).
            drain_deadline = time.monotonic() + (2 * interval_ms / 1000 + 5 if exactly_once else 20)
            while time.monotonic() < drain_deadline:
                if not exactly_once and processed() >= sent:
                    break
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            seen.stop()
            job.cancel().result()
        return latency_figures(bootstrap, source, alerts_topic, seen.received, measure_from_ms, measure_to_ms,
                               rate=rate, exactly_once=exactly_once, interval_ms=interval_ms, knobs=knobs,
                               variant=variant,
                               backlog_at_end=backlog,
                               # Up to bundle.time (1 s) of input waits in each of the two Python
                               # stages by design; more, or falling behind the feed, is overload.
                               # Exactly-once: records count only once a checkpoint commits them.
                               overloaded=bool((backlog > 2.5 * rate and not exactly_once)
                                               or (sustained < 0.9 * rate and backlog > rate)),
                               sustained_rate=sustained)


class AlertWatcher:
    """A read_committed consumer on the alerts topic noting when each alert became visible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.received: dict[tuple[int, int], int] = {}  # (source partition, offset) -> wall ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer, _ = assigned_consumer(self.bootstrap, self.topic)
        try:
            while not self._stop.is_set():
                for m in consumer.consume(num_messages=1000, timeout=0.05):
                    if m.error() is None:
                        now = int(time.time() * 1000)
                        alert = json.loads(m.value())
                        self.received.setdefault((alert["source_partition"], alert["source_offset"]), now)
        finally:
            consumer.close()


def latency_figures(bootstrap: str, source: str, alerts_topic: str, received: dict[tuple[int, int], int],
                    from_ms: int, to_ms: int, **meta: Any) -> dict[str, Any]:
    """p50/p99 of alert timestamp - input timestamp for inputs produced in [from_ms, to_ms]."""
    produced = {(m.partition(), m.offset()): m.timestamp()[1]
                for batch in consume_batches(bootstrap, source) for m in batch}
    in_window = sum(from_ms <= ts <= to_ms for ts in produced.values())
    written, visible = [], []
    for batch in consume_batches(bootstrap, alerts_topic):
        for m in batch:
            alert = json.loads(m.value())
            key = (alert["source_partition"], alert["source_offset"])
            ts = produced[key]
            if from_ms <= ts <= to_ms:
                written.append(m.timestamp()[1] - ts)
                if key in received:
                    visible.append(received[key] - ts)

    def stats(values: list[int]) -> dict[str, float | None]:
        if not values:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None}
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(max(values))}

    return {**meta, "window_s": (to_ms - from_ms) / 1000, "events_in_window": in_window,
            "achieved_rate": in_window / max((to_ms - from_ms) / 1000, 1e-9), "alerts": len(written),
            "alert_timestamp": stats(written), "alert_visible": stats(visible)}
