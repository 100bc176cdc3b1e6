"""Producing a replayed file to Kafka: topic, schema store, records, and what was written."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from connectors import schema_store
from connectors.avro_serde import fingerprint, schema_id
from connectors.errors import ConnectorError
from connectors.kafka_io import (
    AvroProducer,
    check_broker,
    create_topic,
    describe_topic,
    end_offsets,
)
from jobs.replay.pacing import Pacer
from jobs.replay.settings import ReplayError, ReplaySettings
from jobs.replay.source import ReplaySource


@dataclass(frozen=True)
class ReplayResult:
    """What a finished replay wrote."""

    topic: str
    rows: int
    feature_columns: list[str]
    schema_id: str
    offsets: dict[int, tuple[int, int]]  # partition -> (first, last) offset written
    produce_seconds: float  # time spent in the produce loop, pacing included


def _written_offsets(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
                     ) -> dict[int, tuple[int, int]]:
    return {p: (before.get(p, (0, 0))[1], high - 1) for p, (_, high) in after.items()
            if high > before.get(p, (0, 0))[1]}


def _describe_offsets(offsets: dict[int, tuple[int, int]]) -> str:
    if not offsets:
        return "no offsets"
    return ", ".join(f"partition {p}: {a}..{b}" for p, (a, b) in sorted(offsets.items()))


def replay(settings: ReplaySettings, *, progress: bool = True, source: ReplaySource | None = None) -> ReplayResult:
    """Replay the file into Kafka: check file, broker, create topic, register schema, produce.

    Raises ReplayError for bad input (with ``written`` > 0 when a later chunk turned out bad after
    earlier ones were delivered), BrokerUnavailable when no broker answers (nothing written) and
    ConnectorError when Kafka refuses the topic, the schema or records.
    """
    source = source or ReplaySource.open(settings)
    schema = source.schema
    bootstrap, topic = settings.bootstrap_servers, settings.topic
    check_broker(bootstrap, timeout=settings.broker_timeout_s)
    try:
        created = create_topic(bootstrap, topic, partitions=settings.partitions)
        if not created:
            _refuse_other_schema(bootstrap, topic, schema)
        schema_store.register(bootstrap, topic, schema)
    except ConnectorError as exc:
        raise type(exc)(f"{exc} (no records were written)") from exc

    entity_field, time_field = source.plan.entity_field, source.plan.time_field
    before = end_offsets(bootstrap, topic)
    producer = AvroProducer(bootstrap, topic, schema)
    pacer = Pacer(settings.speed, settings.max_sleep_s)
    paced = settings.speed > 0
    bar = tqdm(total=source.total_rows, unit="rows", desc=topic, file=sys.stderr,
               disable=None if progress else True)
    started = time.monotonic()
    problem: BaseException | None = None
    try:
        for chunk in source.chunks():
            for record in chunk:
                ts = record[time_field]
                if paced:
                    pacer.wait(ts)
                    bar.update(1)
                producer.send(record, key=record[entity_field], timestamp_ms=ts)
            if not paced:
                bar.update(len(chunk))
    except (ReplayError, KeyboardInterrupt, ConnectorError) as exc:
        problem = exc
    finally:
        bar.close()
    elapsed = time.monotonic() - started

    undelivered: ConnectorError | None = None
    try:
        stats = producer.close()
    except ConnectorError as exc:
        undelivered, stats = exc, producer.stats
    offsets = _written_offsets(before, end_offsets(bootstrap, topic))
    if problem is not None or undelivered is not None:
        note = (f"{stats.delivered} records were already written to topic {topic!r} "
                f"({_describe_offsets(offsets)})")
        if isinstance(problem, ReplayError):
            raise ReplayError(f"{problem}; stopped there: {note}", written=stats.delivered, offsets=offsets) from problem
        if isinstance(problem, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted: {note}") from problem
        cause = problem or undelivered
        raise ConnectorError(f"{cause}; {note}") from cause
    return ReplayResult(topic, stats.delivered, source.feature_fields, schema_id(schema), offsets, elapsed)


def _refuse_other_schema(bootstrap: str, topic: str, schema: dict[str, Any]) -> None:
    """Refuse to mix two record layouts in one topic: readers decode with the one stored schema."""
    existing = schema_store.lookup(bootstrap, topic)
    if existing is None or fingerprint(existing) == fingerprint(schema):
        return
    held = describe_topic(bootstrap, topic).messages
    if held:
        raise ReplayError(
            f"topic {topic!r} already holds {held} records written with schema {schema_id(existing)}, "
            f"not this file's {schema_id(schema)}; replay into a new --topic (or delete this one with "
            f"`python -m connectors.topics delete {topic}`)"
        )
