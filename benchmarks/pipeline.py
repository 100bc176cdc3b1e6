"""Events/s of every stage of the scoring pipeline, side by side on one machine, and event-to-alert latency.

    python -m benchmarks.pipeline [--smoke | --quick] [--events N] [--out .vigil/benchmarks]

Variants, all measured in one run against the local Kafka broker (see benchmarks/README.md):

* ``a-produce`` / ``a-consume``: confluent-kafka producing N pre-serialised Avro records, then
  consuming them all (the Python-client ceiling of the broker on this machine);
* ``b-raw``: Flink Kafka -> Kafka copying the raw bytes (no format, no Python);
* ``b``: Flink Kafka (Avro, decoded in Java) -> Kafka JSON, no Python;
* ``c``: ``b`` plus a no-op pandas UDF on the 17 features (the Python boundary alone);
* ``d``: ``b`` plus ANOMALY on the 17 features (the model's cost inside Flink);
* ``e``: ``d`` plus the compiled telemetry-v1 expectation suite (validate_udf);
* ``d-full`` / ``e-full``: the real scoring job (``jobs.score_events.build``: Python decode and
  pseudonymisation, scoring, routing to scored/alerts/dlq) without / with the suite;
* ``f``: a hand-rolled Python consumer: batch consume, fastavro decode, numpy autoencoder,
  batch produce of JSON results;
* ``g``: the numpy scorer alone on a ready float32 matrix.

Flink variants run bounded (``scan.bounded.mode=latest-offset``) on input topics pre-filled
once, at N and at 2N events. Each gets three rates: wall (submission to finish), marginal
N / (t(2N) - t(N)) (fixed start-up cost removed) and output-span (the pace of the 2N run's output
records by their Kafka timestamps), the headline (see METHOD). Latency is measured on
an unbounded run of the real job at half its measured capacity: alert's Kafka timestamp (the sink's write time)
minus the input record's Kafka timestamp (stamped with wall-clock time at produce).

Goals are reported, never asserted. Writes ``pipeline.json`` and ``pipeline.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

# --- sizes and goals ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchSettings:
    """What one run measures. ``events`` is N: every Flink variant runs at N and at 2N events."""

    mode: str
    events: int
    unique_events: int               # distinct simulated records; the topic repeats them
    latency_seconds: float           # measured window of each latency run
    sweep: bool                      # try Python UDF knob settings for (d)
    exactly_once_latency: bool       # also measure latency with exactly-once sinks
    bundle_time_latency: bool        # also measure latency with python bundle.time = 100 ms
    parallelism2: bool               # also run (d) at parallelism 2
    bootstrap_servers: str
    out: Path
    keep_topics: bool = False
    failure_rate: float = 0.05       # share of simulated readings inside a failure episode

    def __post_init__(self) -> None:
        if self.events < 100:
            raise ValueError(f"events must be >= 100, got {self.events}")
        if self.latency_seconds <= 0:
            raise ValueError(f"latency_seconds must be > 0, got {self.latency_seconds}")


MODES: dict[str, dict[str, Any]] = {
    # CI smoke test: every variant once, no knob sweep; figures are noise at this size.
    "smoke": {"events": 3_000, "unique_events": 3_000, "latency_seconds": 4.0, "sweep": False,
              "exactly_once_latency": False, "bundle_time_latency": False, "parallelism2": False},
    # A few minutes: indicative figures, one knob setting (the configured one).
    "quick": {"events": 30_000, "unique_events": 20_000, "latency_seconds": 8.0, "sweep": False,
              "exactly_once_latency": False, "bundle_time_latency": False, "parallelism2": False},
    # ~10 minutes on 2 cores: the figures to quote.
    "full": {"events": 200_000, "unique_events": 50_000, "latency_seconds": 25.0, "sweep": True,
             "exactly_once_latency": True, "bundle_time_latency": True, "parallelism2": True},
}

# (arrow batch size, bundle size, bundle time ms) tried for (d) in full mode.
SWEEP: list[tuple[int, int, int]] = [
    (1_000, 100_000, 100), (1_000, 100_000, 1_000),
    (10_000, 100_000, 100), (10_000, 100_000, 1_000),
    (50_000, 100_000, 100), (50_000, 100_000, 1_000),
]
KNOB_KEYS = ("python.fn-execution.arrow.batch.size", "python.fn-execution.bundle.size",
             "python.fn-execution.bundle.time")

GOALS: list[tuple[str, str, float, str]] = [
    # (label, measured key, target, comparison)
    ("(d) events/s", "d", 150_000, ">="),
    ("(d)/(c)", "d/c", 0.8, ">="),
    ("(d)/(f)", "d/f", 1.0, ">="),
    ("(e)/(d)", "e/d", 0.9, ">="),
    ("event-to-alert p99 ms at half load", "latency_p99_ms", 200, "<="),
]
RATIOS: list[tuple[str, str]] = [("d", "c"), ("d", "f"), ("c", "b"), ("e", "d"), ("g", "d"),
                                 ("d-full", "d"), ("e-full", "d-full"), ("b", "a-consume")]

DESCRIPTIONS = {
    "a-produce": "confluent-kafka produce, pre-serialised Avro (idempotent, acks=all, lz4)",
    "a-consume": "confluent-kafka consume(num_messages=10000), no decode",
    "b-raw": "Flink raw bytes -> raw bytes, no Python",
    "b": "Flink Avro (Java decode) -> JSON, no Python",
    "c": "(b) + no-op pandas UDF on the 17 features",
    "d": "(b) + ANOMALY pandas UDF on the 17 features",
    "e": "(d) + VALIDATE (compiled telemetry-v1 suite)",
    "d-full": "score_events.build, no suite: Python decode + ANOMALY -> scored/alerts/dlq",
    "e-full": "score_events.build with the suite (the real job, at-least-once sinks, no Parquet tier)",
    "f": "hand-rolled Python: consume batch, fastavro, numpy model, produce JSON",
    "g": "NumpyScorer.score on a ready float32 matrix (10k rows)",
}


# --- Kafka helpers -----------------------------------------------------------------------------

_QUIET = {"log_level": 0}


def producer_config(bootstrap: str, linger_ms: int = 20) -> dict[str, Any]:
    """The project producer's settings (connectors.kafka_io.AvroProducer), for raw bytes."""
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms,
            "compression.type": "lz4", "queue.buffering.max.messages": 500_000, **_QUIET}


@dataclass
class Corpus:
    """Pre-serialised telemetry records: (key, Avro value), plus the schema header to send with them."""

    records: list[tuple[bytes, bytes]]
    headers: list[tuple[str, bytes]]

    def take(self, n: int) -> Iterator[tuple[bytes, bytes]]:
        return itertools.islice(itertools.cycle(self.records), n)


def make_corpus(unique: int, failure_rate: float) -> Corpus:
    """``unique`` simulated readings (with failure episodes), serialised once."""
    from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, load_schema, schema_id
    from jobs.simulate_fleet import FleetSettings, generate

    schema = load_schema()
    serialize = AvroSerializer(schema)
    records = [(r["vehicle_id"].encode(), serialize(r))
               for r in generate(FleetSettings(vehicles=50, events=unique, failure_rate=failure_rate, seed=11))]
    return Corpus(records, [(SCHEMA_HEADER, schema_id(schema).encode())])


def _produce(producer: Any, topic: str, key: bytes, value: bytes, headers: Any, timestamp: int = 0) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, timestamp=timestamp)
            return
        except BufferError:  # local queue full: let the broker catch up
            producer.poll(0.05)


def produce_all(bootstrap: str, topic: str, corpus: Corpus, n: int) -> float:
    """Produce ``n`` records (cycling the corpus) and wait for every ack; returns seconds taken."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap))
    start = time.perf_counter()
    for i, (key, value) in enumerate(corpus.take(n)):
        _produce(producer, topic, key, value, corpus.headers)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"producing to {topic!r}: records left undelivered after 120 s")
    seconds = time.perf_counter() - start
    if (stored := topic_count(bootstrap, topic)) != n:
        raise RuntimeError(f"topic {topic!r} holds {stored} records, expected {n}")
    return seconds


def topic_count(bootstrap: str, topic: str) -> int:
    """Records in a topic by its watermarks (transaction markers included)."""
    from connectors.kafka_io import end_offsets

    return sum(high - low for low, high in end_offsets(bootstrap, topic).values())


def _assigned_consumer(bootstrap: str, topic: str, isolation: str = "read_committed") -> tuple[Any, dict[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka_io import end_offsets

    targets = {p: high for p, (low, high) in end_offsets(bootstrap, topic).items()}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": isolation, **_QUIET})
    consumer.assign([TopicPartition(topic, p, 0) for p in targets])
    return consumer, targets


def consume_batches(bootstrap: str, topic: str, batch: int = 10_000, timeout: float = 60.0,
                    isolation: str = "read_committed") -> Iterator[list[Any]]:
    """Every message in ``topic`` now, in batches of consume(num_messages=batch); stops at the end."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer, targets = _assigned_consumer(bootstrap, topic, isolation)
    todo = {p for p, high in targets.items() if high > 0}
    deadline = time.monotonic() + timeout
    try:
        while todo:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic!r} timed out with partitions {sorted(todo)} unfinished")
            messages = [m for m in consumer.consume(num_messages=batch, timeout=0.5)
                        if m.error() is None or m.error().code() != KafkaError._PARTITION_EOF]
            for m in messages:
                if m.error() is not None:
                    raise RuntimeError(f"error reading {topic!r}: {m.error()}")
            if messages:
                yield messages
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= targets[tp.partition]:
                    todo.discard(tp.partition)
    finally:
        consumer.close()


def output_timestamps(bootstrap: str, topic: str) -> np.ndarray:
    """Kafka timestamps (ms) of every record in ``topic``: set by Flink's sink when it wrote them."""
    stamps = [m.timestamp()[1] for batch in consume_batches(bootstrap, topic) for m in batch]
    return np.sort(np.asarray(stamps, dtype=np.int64))


def span_rate(stamps: np.ndarray) -> float | None:
    """Records/s between the 5th and 95th percentile of output timestamps (steady state), or None."""
    n = len(stamps)
    lo, hi = int(0.05 * n), int(0.95 * n) - 1
    if n < 100 or stamps[hi] <= stamps[lo]:
        return None  # everything came out in one burst: too small a run to see a rate
    return (hi - lo) / ((stamps[hi] - stamps[lo]) / 1000)


# --- the model ---------------------------------------------------------------------------------

@dataclass
class Model:
    uri: str
    manifest: dict[str, Any]
    loaded: Any  # udfs.anomaly_score.LoadedModel (numpy engine)


def make_model(workdir: Path) -> Model:
    """A quickly trained autoencoder in a local store (speed does not depend on its quality)."""
    from benchmarks.score_function import make_model as train_quick
    from connectors.model_store import ModelStore
    from udfs.anomaly_score import LoadedModel

    (workdir / "work").mkdir()
    uri, _ = train_quick(workdir / "work")
    folder, manifest = ModelStore(uri).fetch("latest", cache_dir=workdir / "cache")
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
            _produce(producer, sink, m.key(), value.encode(), None)
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
                                 "model_version": np.full(n, "noop", dtype=object)})

    return udf(NoOp(), result_type=RESULT_TYPE, func_type="pandas")


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
        from jobs.flink_env import load_configuration
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

    def _scoring_settings(self, input_topic: str, outputs: dict[str, str]) -> Any:
        from pydantic import SecretStr

        from jobs.score_events import ScoreSettings

        return ScoreSettings(input_topic=input_topic, scored_topic=outputs["scored"], alerts_topic=outputs["alerts"],
                             dlq_topic=outputs["dlq"], bootstrap_servers=self.settings.bootstrap_servers,
                             model_store=self.model.uri, tier=None,
                             pseudonym_secret=SecretStr("benchmark-secret"), bounded=True)

    def statements(self, variant: str, input_topic: str, *, bounded: bool = True,
                   exactly_once: bool = False) -> tuple[Any, dict[str, str]]:
        """(statement set, output topics by role) of ``variant``.

        Roles: ``main`` (one record per input record that scored; its timestamps show progress),
        ``dlq`` (the rest, full job only) and ``alerts`` (a subset of main, full job only).
        """
        from pyflink.table.expressions import col, lit

        from udfs.anomaly_score import anomaly_udf

        statements = self.t_env.create_statement_set()
        if variant in ("d-full", "e-full"):
            from connectors.avro_serde import roles
            from jobs.score_events import build

            outputs = {name: self.new_topic(f"{variant}.{name}") for name in ("scored", "alerts", "dlq")}
            settings = self._scoring_settings(input_topic, outputs)
            tables = build(self._raw(input_topic, bounded), settings, self.schema, self.model.manifest,
                           self.suite if variant == "e-full" else None)
            entity = f"{roles(self.schema)['entity']}_pseudonym"
            for name, table, key in (("scored", tables.scored, entity), ("alerts", tables.alerts, entity),
                                     ("dlq", tables.dead_letters, "record_key")):
                statements.add_insert(self._json_sink(table, outputs[name], key, exactly_once), table)
            return statements, {"main": outputs["scored"], "dlq": outputs["dlq"], "alerts": outputs["alerts"]}

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
            fn = noop_udf() if variant == "c" else anomaly_udf(self.model.uri, version="latest")
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
                    parallelism: int = 1, timestamps: bool = False) -> FlinkRun:
        """Run ``variant`` over ``input_topic`` to its end; seconds from submission to finish."""
        statements, outputs = self.statements(variant, input_topic)
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
                knobs: dict[str, str] | None = None) -> dict[str, Any]:
        """Event-to-alert latency of the real scoring job (e-full, unbounded) under ``rate`` events/s."""
        from confluent_kafka import Producer

        from pyflink.java_gateway import get_gateway

        bootstrap = self.settings.bootstrap_servers
        source = self.new_topic("latency.in")
        interval_ms = get_gateway().jvm.org.apache.flink.util.TimeUtils.parseDuration(
            self.checkpoint_interval).toMillis()
        statements, outputs = self.statements("e-full", source, bounded=False, exactly_once=exactly_once)
        alerts_topic, counted = outputs["alerts"], (outputs["main"], outputs["dlq"])
        self.env.enable_checkpointing(interval_ms)
        self._configure("latency", knobs, 1)
        seen = AlertWatcher(bootstrap, alerts_topic)
        producer = Producer(producer_config(bootstrap, linger_ms=5))
        records = itertools.cycle(corpus.records)
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                key, value = next(records)
                _produce(producer, source, key, value, corpus.headers, timestamp=int(time.time() * 1000))
            sent += count
            producer.poll(0)

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
            if producer.flush(30):
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
        consumer, _ = _assigned_consumer(self.bootstrap, self.topic)
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


# --- the run ---------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One row of the results: events/s by every method that applies, and the one used for ratios."""

    name: str
    description: str
    events: int | None = None
    seconds_n: float | None = None
    seconds_2n: float | None = None
    wall_rate: float | None = None       # 2N / seconds_2n: submission to finish, nothing subtracted
    marginal_rate: float | None = None   # N / (seconds_2n - seconds_n): fixed costs removed
    span_rate: float | None = None       # 5th..95th percentile of the 2N run's output timestamps
    rate: float = 0.0
    method: str = ""
    knobs: dict[str, str] = field(default_factory=dict)
    parallelism: int = 1

    def settle(self) -> Variant:
        """Pick the headline rate: output-span when measurable, else marginal, else wall.

        Span comes first because it is measured inside one run: on a shared 2-core machine the
        start of a job (submission, Python worker, TensorFlow import) varies by seconds from run
        to run, which the marginal rate takes as processing time unless N takes far longer.
        """
        if self.marginal_rate is None and self.seconds_2n is not None:
            self.wall_rate = 2 * self.events / self.seconds_2n
            if self.seconds_n is not None and self.seconds_2n > self.seconds_n:
                self.marginal_rate = self.events / (self.seconds_2n - self.seconds_n)
        for method in ("span_rate", "marginal_rate", "wall_rate"):
            if getattr(self, method):
                self.rate, self.method = getattr(self, method), method.removesuffix("_rate")
                break
        return self


def flink_variant(bench: FlinkBench, name: str, topics: dict[int, str], n: int, *, label: str | None = None,
                  knobs: dict[str, str] | None = None, parallelism: int = 1, only_2n: bool = False) -> Variant:
    """Run ``name`` at N and 2N events (or 2N only: no marginal rate) and settle its rates."""
    label = label or name
    small = None
    if not only_2n:
        log(f"  {label}: N={n:,} ...")
        small = bench.run_bounded(name, topics[n], n, knobs=knobs, parallelism=parallelism)
    log(f"  {label}: 2N={2 * n:,} ...")
    large = bench.run_bounded(name, topics[2 * n], 2 * n, knobs=knobs, parallelism=parallelism, timestamps=True)
    description = DESCRIPTIONS.get(name, name) + (f", parallelism {parallelism}" if parallelism != 1 else "")
    variant = Variant(label, description, n, small.seconds if small else None, large.seconds,
                      span_rate=large.span_rate, knobs=knobs or {}, parallelism=parallelism).settle()
    log(f"  {label}: {variant.rate:,.0f} events/s ({variant.method}); wall "
        f"{f'{small.seconds:.1f}s / ' if small else ''}{large.seconds:.1f}s")
    return variant


_T0 = time.perf_counter()


def half_load_latency(bench: FlinkBench, corpus: Corpus, load: float, basis: str, seconds: float,
                      exactly_once: bool, knobs: dict[str, str] | None, *, retry: bool = True,
                      attempts: int = 3) -> tuple[dict[str, Any], float, str]:
    """One latency run; if the job could not keep up, again at half the rate it sustained.

    The load derived from the bounded runs can exceed what the unbounded job sustains next to its
    own producer (checkpoints, the producer's CPU); an overloaded run measures a growing queue,
    so it is kept in ``earlier_attempts`` and repeated. Returns (result, load, basis) for the next run.
    """
    earlier: list[dict[str, Any]] = []
    for attempt in range(attempts):
        sinks = "exactly-once" if exactly_once else "at-least-once"
        log(f"latency, {sinks} sinks{f', {knobs}' if knobs else ''}: {load:,.0f} events/s for {seconds:g} s ...")
        r = bench.latency(corpus, load, seconds, exactly_once=exactly_once, knobs=knobs)
        r["load_basis"] = basis
        log(f"  {r['alerts']:,} alerts, p50 {_fmt(r['alert_timestamp']['p50_ms'])} ms, "
            f"p99 {_fmt(r['alert_timestamp']['p99_ms'])} ms, sustained {r['sustained_rate']:,.0f}/s, "
            f"backlog {r['backlog_at_end']:,}{' (overloaded)' if r['overloaded'] else ''}")
        if not (retry and r["overloaded"]) or attempt == attempts - 1:
            break
        earlier.append({k: r[k] for k in ("rate", "sustained_rate", "backlog_at_end", "alert_timestamp")})
        load, basis = r["sustained_rate"] / 2, "half the rate sustained by an overloaded run"
    r["earlier_attempts"] = earlier
    return r, load, basis


def log(message: str) -> None:
    """Progress on stderr with seconds since import (the run's phases and what they cost)."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def ratios(variants: dict[str, Variant]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for top, bottom in RATIOS:
        if top in variants and bottom in variants and variants[bottom].rate:
            out[f"{top}/{bottom}"] = variants[top].rate / variants[bottom].rate
    return out


def goals(variants: dict[str, Variant], ratio: dict[str, float | None],
          latency: list[dict[str, Any]]) -> list[dict[str, Any]]:
    headline = next((r for r in latency if not r["exactly_once"] and not r.get("knobs")), None)
    measured_by_key: dict[str, float | None] = {
        "d": variants["d"].rate if "d" in variants else None, **ratio,
        "latency_p99_ms": headline["alert_timestamp"]["p99_ms"] if headline else None,
    }
    rows = []
    for label, key, target, op in GOALS:
        value = measured_by_key.get(key)
        met = None if value is None else bool(value >= target if op == ">=" else value <= target)
        rows.append({"goal": f"{label} {op} {target:g}", "measured": value, "met": met})
    return rows


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Pipeline benchmark ({result['mode']}, N={result['events']:,}, {result['host']}, "
             f"{result['cpus']} CPUs); events/s; headline = output-span rate of the 2N run unless noted.", "",
             "| variant | what | N s | 2N s | wall ev/s | marginal ev/s | output-span ev/s | headline ev/s |",
             "|---|---|---|---|---|---|---|---|"]
    for v in result["variants"].values():
        lines.append(f"| {v['name']} | {v['description']} | {_fmt(v['seconds_n'], 1)} | {_fmt(v['seconds_2n'], 1)} "
                     f"| {_fmt(v['wall_rate'])} | {_fmt(v['marginal_rate'])} | {_fmt(v['span_rate'])} "
                     f"| **{_fmt(v['rate'])}** ({v['method']}) |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v, 2)} |" for k, v in result["ratios"].items()]
    if result["sweep"]:
        lines += ["", "Python UDF knobs for (d), one 2N run each (arrow batch / bundle size / bundle time ms; the configured setting is (d) itself):", "",
                  "| setting | marginal ev/s | output-span ev/s | wall ev/s | headline ev/s |", "|---|---|---|---|---|"]
        for v in result["sweep"]:
            k = v["knobs"]
            tag = " (best)" if v["name"] == result["best_knobs"] else ""
            lines.append(f"| {k[KNOB_KEYS[0]]} / {k[KNOB_KEYS[1]]} / {k[KNOB_KEYS[2]]}{tag} | {_fmt(v['marginal_rate'])} "
                         f"| {_fmt(v['span_rate'])} | {_fmt(v['wall_rate'])} | {_fmt(v['rate'])} |")
    if result["latency"]:
        probe = result.get("capacity_probe")
        head = "Event-to-alert latency of the real job (e-full, unbounded)"
        if probe:
            head += (f"; half load = half of the {probe['sustained_rate']:,.0f} events/s it sustained in a capacity "
                     f"probe fed {probe['rate']:,.0f} events/s")
        lines += ["", head + ":", "",
                  "| sinks | python knobs | load ev/s | events | alerts | p50 ms | p99 ms | max ms "
                  "| visible p50 ms | visible p99 ms | backlog at end |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["latency"]:
            sinks = f"exactly-once, checkpoint {r['interval_ms'] / 1000:g} s" if r["exactly_once"] else "at-least-once"
            knobs = ", ".join(f"{k.rsplit('.', 2)[-2]}.{k.rsplit('.', 1)[-1]}={v}" for k, v in (r["knobs"] or {}).items())
            a, s = r["alert_timestamp"], r["alert_visible"]
            lines.append(f"| {sinks} | {knobs or 'configured'} | {_fmt(r['achieved_rate'])} | {r['events_in_window']:,} "
                         f"| {r['alerts']:,} | {_fmt(a['p50_ms'])} | {_fmt(a['p99_ms'])} | {_fmt(a['max_ms'])} "
                         f"| {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} "
                         f"| {r['backlog_at_end']:,}{' (overloaded)' if r['overloaded'] else ''} |")
        for r in result["latency"]:
            for e in r.get("earlier_attempts", []):
                lines.append(f"\nAn earlier attempt at {e['rate']:,.0f} events/s was overloaded (sustained "
                             f"{e['sustained_rate']:,.0f}/s, backlog {e['backlog_at_end']:,}); repeated at half "
                             f"the sustained rate.")
    lines += ["", "| goal | measured | met? |", "|---|---|---|"]
    for g in result["goals"]:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "no")
        digits = 0 if g["measured"] is not None and g["measured"] > 100 else 2
        lines.append(f"| {g['goal']} | {_fmt(g['measured'], digits)} | {met} |")
    return "\n".join(lines)


METHOD = (
    "Flink variants run bounded (scan.bounded.mode=latest-offset, parallelism 1 unless noted, checkpointing "
    "off, at-least-once sinks) on input topics pre-filled once with N and 2N events (3 partitions, the simulated "
    "records cycled), after one unmeasured warm-up job in the same JVM. Three rates per variant: wall = 2N / time "
    "from submission to finish of the 2N run, nothing subtracted; marginal = N / (t(2N) - t(N)), which removes the "
    "fixed cost of submitting the job and starting Python workers; output-span = the records between the 5th and "
    "95th percentile of the 2N run's output Kafka timestamps (stamped by Flink's producer when it writes them) "
    "divided by that span of time. The headline rate, used in ratios and goals, is output-span (falling back to "
    "marginal, then wall): it is measured inside one run, while job start-up varies by seconds between runs on a "
    "shared machine, which the marginal rate counts as processing time. Output-span needs many Arrow batches "
    "per run (2N >> python.fn-execution.arrow.batch.size); at smoke/quick sizes every rate is indicative only. "
    "(a) and (f) are timed from the first call to the last acknowledgement; (g) is the best of repeated calls. "
    "Latency: the real job (score_events.build with the suite, at-least-once sinks) runs unbounded with "
    "checkpointing at the configured interval; input is produced at half load = half the rate the unbounded job "
    "sustained in a capacity probe fed at e-full's bounded rate (half of (d) is several times what the real job "
    "sustains; an overloaded run is repeated at half its sustained rate), each record's Kafka timestamp set to "
    "wall-clock time at produce; latency = the alert's Kafka timestamp (the sink's write time) - the input "
    "record's, over inputs produced in the measured window (after 3 s of settling). 'visible' = when a "
    "read_committed consumer received the alert - the input timestamp. With exactly-once sinks alerts become "
    "visible only when a checkpoint commits, so visible latency is bounded below by the checkpoint interval."
)


def main(argv: Sequence[str] | None = None) -> int:
    from stack import flink_home
    from stack.settings import StackSettings

    stack = StackSettings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode", help="N=30k, ~3-4 min")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="mode",
                      help="N=3k, every variant once: checks the benchmark runs, figures are noise")
    parser.add_argument("--events", type=int, help="N (overrides the mode's)")
    parser.add_argument("--latency-seconds", type=float, help="measured window of each latency run")
    parser.add_argument("--latency-rate", type=float,
                        help="events/s fed to the latency runs (default: half of what the real job sustains "
                             "in a capacity probe)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the Python UDF knob sweep")
    parser.add_argument("--bootstrap-servers", default=stack.bootstrap_servers)
    parser.add_argument("--out", default=".vigil/benchmarks")
    parser.add_argument("--keep-topics", action="store_true", help="leave the benchmark's topics on the broker")
    args = parser.parse_args(argv)
    mode = args.mode or "full"
    preset = dict(MODES[mode])
    if args.events:
        preset["events"] = args.events
        preset["unique_events"] = min(preset["unique_events"], args.events)
    if args.latency_seconds:
        preset["latency_seconds"] = args.latency_seconds
    if args.no_sweep:
        preset["sweep"] = False
    settings = BenchSettings(mode=mode, bootstrap_servers=args.bootstrap_servers, out=Path(args.out),
                             keep_topics=args.keep_topics, **preset)

    from connectors.kafka_io import check_broker
    from connectors.topics import create_topic, delete_topic

    check_broker(settings.bootstrap_servers)
    flink_home.activate(stack)
    run_id = uuid.uuid4().hex[:8]
    created: list[str] = []

    def new_topic(name: str, partitions: int = 3) -> str:
        topic = f"bench.pipeline.{run_id}.{name}.{len(created)}"
        create_topic(settings.bootstrap_servers, topic, partitions)
        created.append(topic)
        return topic

    started = time.perf_counter()
    n = settings.events
    variants: dict[str, Variant] = {}
    sweep: list[Variant] = []
    latency: list[dict[str, Any]] = []
    capacity_probe: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
            log("training a quick model ...")
            model = make_model(Path(tmp))
            log(f"simulating {settings.unique_events:,} readings ...")
            corpus = make_corpus(settings.unique_events, settings.failure_rate)

            log(f"(a) producing N={n:,} and 2N={2 * n:,} records ...")
            topics = {n: new_topic("in-n"), 2 * n: new_topic("in-2n")}
            produce_all(settings.bootstrap_servers, topics[n], corpus, n)
            seconds = produce_all(settings.bootstrap_servers, topics[2 * n], corpus, 2 * n)
            variants["a-produce"] = Variant("a-produce", DESCRIPTIONS["a-produce"], 2 * n, rate=2 * n / seconds,
                                            method="wall", wall_rate=2 * n / seconds)
            consumed = consume_rate(settings.bootstrap_servers, topics[2 * n], 2 * n)
            variants["a-consume"] = Variant("a-consume", DESCRIPTIONS["a-consume"], 2 * n, rate=consumed,
                                            method="wall", wall_rate=consumed)
            log(f"  produce {variants['a-produce'].rate:,.0f}/s, consume {consumed:,.0f}/s")

            log("(g) model alone ...")
            g = model_alone(model, min_seconds=0.3 if mode != "full" else 2.0)
            variants["g"] = Variant("g", DESCRIPTIONS["g"], rate=g, method="best-of", wall_rate=g)
            log("(f) hand-rolled Python consumer ...")
            f = hand_rolled(settings.bootstrap_servers, topics[2 * n], new_topic("f"), model, 2 * n)
            variants["f"] = Variant("f", DESCRIPTIONS["f"], 2 * n, rate=f, method="wall", wall_rate=f)
            log(f"  (g) {g:,.0f} rows/s, (f) {f:,.0f} events/s")

            log("Flink: starting the JVM and a warm-up job (not measured) ...")
            bench = FlinkBench(settings, model, new_topic)
            bench.run_bounded("b", topics[n], n)
            for name in ("b-raw", "b", "c", "d", "e", "d-full", "e-full"):
                variants[name] = flink_variant(bench, name, topics, n)
            if settings.parallelism2:
                variants["d@p2"] = flink_variant(bench, "d", topics, n, label="d@p2", parallelism=2)
            if settings.sweep:
                log("Python UDF knob sweep for (d) ...")
                configured = tuple(bench.configured_knobs[k] for k in KNOB_KEYS)
                for batch, bundle, bundle_ms in SWEEP:
                    knobs = dict(zip(KNOB_KEYS, (str(batch), str(bundle), str(bundle_ms))))
                    if (str(batch), str(bundle), str(bundle_ms)) == configured:
                        sweep.append(replace(variants["d"], name=f"d {batch}/{bundle}/{bundle_ms}", knobs=knobs))
                        continue
                    sweep.append(flink_variant(bench, "d", topics, n, label=f"d {batch}/{bundle}/{bundle_ms}",
                                               knobs=knobs, only_2n=True))

            # Half of (d) is several times what the real job sustains, so "half load" is half the
            # real job's own capacity, measured unbounded: a probe fed at its bounded (e-full) rate.
            load, basis = args.latency_rate, "--latency-rate"
            if not load:
                fed = variants["e-full"].rate
                log(f"latency: capacity probe of the unbounded job fed {fed:,.0f} events/s ...")
                probe = bench.latency(corpus, fed, min(settings.latency_seconds, 10.0), exactly_once=False)
                capacity = min(fed, probe["sustained_rate"])
                load, basis = capacity / 2, "half the rate the unbounded job sustained in the capacity probe"
                capacity_probe = {k: probe[k] for k in ("rate", "sustained_rate", "backlog_at_end", "overloaded")}
                log(f"  sustained {probe['sustained_rate']:,.0f}/s (backlog {probe['backlog_at_end']:,}): "
                    f"half load = {load:,.0f} events/s")
            runs: list[tuple[bool, dict[str, str] | None, float]] = [(False, None, settings.latency_seconds)]
            if settings.bundle_time_latency:
                runs.append((False, {KNOB_KEYS[2]: "100"}, settings.latency_seconds))
            if settings.exactly_once_latency:  # a few checkpoint intervals
                runs.append((True, None, max(settings.latency_seconds, 30.0)))
            for exactly_once, knobs, seconds in runs:
                r, load, basis = half_load_latency(bench, corpus, load, basis, seconds, exactly_once, knobs,
                                                   retry=not args.latency_rate)
                latency.append(r)
    finally:
        if not settings.keep_topics:
            for topic in created:
                try:
                    delete_topic(settings.bootstrap_servers, topic)
                except Exception as exc:  # cleanup must not hide the run's own error
                    log(f"could not delete {topic}: {exc}")

    ratio = ratios(variants)
    best = max(sweep, key=lambda v: v.rate).name if sweep else None
    result = {
        "mode": mode, "events": n, "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "seconds": time.perf_counter() - started, "method": METHOD,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "configured_knobs": bench.configured_knobs, "checkpoint_interval": bench.checkpoint_interval,
        "variants": {name: asdict(v) for name, v in variants.items()}, "ratios": ratio,
        "sweep": [asdict(v) for v in sweep], "best_knobs": best, "capacity_probe": capacity_probe,
        "latency": latency,
        "goals": goals(variants, ratio, latency),
    }
    table = markdown(result)
    print(table)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(result, indent=2))
    (out / "pipeline.md").write_text(table + "\n\n" + METHOD + "\n")
    log(f"\nwritten: {out / 'pipeline.json'}, {out / 'pipeline.md'} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
