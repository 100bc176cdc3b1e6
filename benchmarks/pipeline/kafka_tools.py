"""Kafka helpers of the pipeline benchmark: the corpus, producing, counting, timestamps, rates."""
from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    from connectors.avro_serde import (
        SCHEMA_HEADER,
        AvroSerializer,
        load_schema,
        schema_id,
    )
    from jobs.simulation import FleetSettings, generate

    schema = load_schema()
    serialize = AvroSerializer(schema)
    records = [(r["vehicle_id"].encode(), serialize(r))
               for r in generate(FleetSettings(vehicles=50, events=unique, failure_rate=failure_rate, seed=11))]
    return Corpus(records, [(SCHEMA_HEADER, schema_id(schema).encode())])


def produce_one(producer: Any, topic: str, key: bytes, value: bytes, headers: Any, timestamp: int = 0) -> None:
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
        produce_one(producer, topic, key, value, corpus.headers)
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


def assigned_consumer(bootstrap: str, topic: str, isolation: str = "read_committed") -> tuple[Any, dict[int, int]]:
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

    consumer, targets = assigned_consumer(bootstrap, topic, isolation)
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
