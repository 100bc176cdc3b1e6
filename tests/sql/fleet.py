"""A simulated fleet's readings in a real topic, with hostile records among them, for the SQL tests."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.kafka_io import AvroProducer, create_topic
from jobs import simulation

# What each hostile record becomes: its dead-letter stage.
HOSTILE_STAGES = {"random bytes": "undecodable", "truncated": "undecodable", "NaN speed": "impossible_value",
                  "speed out of range": "validation_failed"}


@dataclass
class Fleet:
    """The topic, the readings written to it (in order) and how many hostile records followed them."""

    topic: str
    schema: dict[str, Any]
    records: list[dict[str, Any]]
    hostile: dict[str, str] = field(default_factory=dict)  # kind -> expected stage

    @property
    def stages(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for stage in self.hostile.values():
            counts[stage] = counts.get(stage, 0) + 1
        return counts


def unique_topic(prefix: str) -> str:
    return f"test.sql.{prefix}.{uuid.uuid4().hex[:8]}"


def produce_fleet(bootstrap: str, topic: str, *, events: int = 1300, vehicles: int = 10, seed: int = 31,
                  failure_rate: float = 0.3, hostile: bool = True, partitions: int = 3) -> Fleet:
    """Register the telemetry schema for ``topic``, write simulated readings, then the hostile records."""
    schema = load_schema()
    create_topic(bootstrap, topic, partitions=partitions)
    schema_store.register(bootstrap, topic, schema)
    records = list(simulation.generate(simulation.FleetSettings(vehicles=vehicles, events=events, seed=seed,
                                                                failure_rate=failure_rate)))
    fleet = Fleet(topic, schema, records)
    send(bootstrap, fleet, records)
    if hostile:
        write_hostile(bootstrap, fleet)
    return fleet


def send(bootstrap: str, fleet: Fleet, records: list[dict[str, Any]]) -> None:
    with AvroProducer(bootstrap, fleet.topic, fleet.schema) as producer:
        for record in records:
            producer.send(record, key=record["vehicle_id"],
                          timestamp_ms=simulation.event_time_ms(record))


def write_hostile(bootstrap: str, fleet: Fleet) -> None:
    """Bytes that are no reading, a cut-off reading, a NaN and a reading outside the physical range."""
    from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, schema_id

    template = dict(fleet.records[-1])
    serialize = AvroSerializer(fleet.schema)
    header = [(SCHEMA_HEADER, schema_id(fleet.schema).encode())]
    producer = Producer({"bootstrap.servers": bootstrap})
    values = {"random bytes": os.urandom(40), "truncated": serialize(template)[:7],
              "NaN speed": serialize({**template, "speed_kmh": float("nan")}),
              "speed out of range": serialize({**template, "speed_kmh": 900.0})}
    for kind, value in values.items():
        producer.produce(fleet.topic, key=template["vehicle_id"].encode(), value=value, headers=header)
        fleet.hostile[kind] = HOSTILE_STAGES[kind]
    assert producer.flush(30) == 0, "hostile records were not delivered"
