"""The schema of every Vigil topic, stored in Kafka beside the topic's data.

No Confluent-compatible registry installs from the registries we can reach, so the store is a
compacted topic (``_vigil_schemas``) keyed by topic name whose value is the Avro schema JSON. The
latest value per key wins. Training and scoring look a topic's schema up here, which is how the
feature columns of a replayed file are discovered without any side channel.
"""
from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Producer

from connectors.avro_serde import validate_schema
from connectors.errors import SchemaError
from connectors.kafka_io import client_config, create_topic, read_all

SCHEMA_TOPIC = "_vigil_schemas"


def register(bootstrap: str, topic: str, schema: dict[str, Any]) -> None:
    """Record ``schema`` as the current schema of ``topic`` (durably: waits for the broker's ack)."""
    validate_schema(schema)
    create_topic(bootstrap, SCHEMA_TOPIC, partitions=1,
                 config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
    producer = Producer({**client_config(bootstrap), "acks": "all"})
    failures: list[str] = []
    producer.produce(SCHEMA_TOPIC, key=topic.encode(), value=json.dumps(schema).encode(),
                     on_delivery=lambda err, _m: failures.append(str(err)) if err else None)
    if producer.flush(30) or failures:
        raise SchemaError(f"could not store the schema of {topic!r}: {failures or 'flush timed out'}")


def lookup(bootstrap: str, topic: str) -> dict[str, Any] | None:
    """The latest schema registered for ``topic``, or None when there is none."""
    try:
        messages = list(read_all(bootstrap, SCHEMA_TOPIC, isolation="read_uncommitted"))
    except Exception as exc:  # the store topic may not exist yet
        if "does not exist" in str(exc):
            return None
        raise
    latest = None
    for msg in messages:
        if msg.key() == topic.encode():
            latest = msg.value()
    return None if latest is None else json.loads(latest)


def require(bootstrap: str, topic: str) -> dict[str, Any]:
    """Like lookup(), but a missing schema is an error that says how to get one."""
    schema = lookup(bootstrap, topic)
    if schema is None:
        raise SchemaError(
            f"no schema is registered for topic {topic!r} in {SCHEMA_TOPIC!r}; produce to it with "
            f"jobs.simulate_fleet or jobs.replay_file, which register the schema they write"
        )
    return schema

