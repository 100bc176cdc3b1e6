"""Topic tools on the command line: create with partitions, describe, delete, list, peek.

    vigil topics create telemetry --partitions 3
    vigil topics describe telemetry
    vigil topics list
    vigil topics peek telemetry.enriched --count 3
"""
from __future__ import annotations

import sys

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer
from connectors.errors import ConnectorError
from connectors.kafka_io import DEFAULT_PARTITIONS, client_config, create_topic, delete_topic, describe_topic, end_offsets, list_topics
from vigil.commands import Options, command, group, key_values, option
from vigil.settings import VigilSettings


def peek(bootstrap: str, name: str, count: int = 5) -> list[str]:
    """The last ``count`` records of each partition of ``name``, decoded for reading.

    Avro topics are decoded with the schema registered in the schema store; other values are
    shown as JSON text when they are UTF-8, else as a byte count. Offsets are not records: a
    transactional writer's commit markers take offsets too (every output of the scoring jobs), so
    each partition is read back further until it gave ``count`` committed records or its start.
    """
    import json

    schema = schema_store.lookup(bootstrap, name)
    decode = AvroDeserializer(schema) if schema else None
    lines: list[str] = []
    for partition, (low, high) in sorted(end_offsets(bootstrap, name).items()):
        for msg in _last_records(bootstrap, name, partition, low, high, count):
            value = msg.value() or b""
            if decode is not None:
                text = json.dumps(decode(value), default=str)
            else:
                try:
                    text = value.decode()
                except UnicodeDecodeError:
                    text = f"<{len(value)} bytes>"
            lines.append(f"[p{msg.partition()}@{msg.offset()}] key={msg.key()!r} {text}")
    return lines


def _last_records(bootstrap: str, name: str, partition: int, low: int, high: int, count: int) -> list:
    """The newest ``count`` committed records of one partition (fewer when it holds fewer)."""
    from confluent_kafka import Consumer, TopicPartition

    back = count
    while True:
        start = max(low, high - back)
        consumer = Consumer({**client_config(bootstrap), "group.id": "vigil-peek", "enable.auto.commit": False,
                             "isolation.level": "read_committed"})
        got = []
        try:
            consumer.assign([TopicPartition(name, partition, start)])
            for round_ in range(20):  # bounded: each round waits at most 1 s
                if start >= high:
                    break
                batch = [m for m in consumer.consume(num_messages=high - start, timeout=1.0) if not m.error()]
                got += batch
                # the last record is at high - 1, or high - 2 before a commit marker; a quiet round
                # after data (or a third one with none: only markers in range) means the end
                if (got and got[-1].offset() >= high - 2) or (not batch and (got or round_ >= 2)):
                    break
        finally:
            consumer.close()
        if len(got) >= count or start == low:
            return got[-count:]
        back *= 2


class CreateOptions(Options):
    name: str = option(..., "topic to create", argument=True, metavar="TOPIC")
    partitions: int = option(DEFAULT_PARTITIONS, "partitions", ge=1)
    topic_config: dict[str, str] = option({}, "topic configs, comma-separated KEY=VALUE pairs",
                                          parse=key_values, show_default=False)


class TopicOptions(Options):
    name: str = option(..., "the topic", argument=True, metavar="TOPIC")


class PeekOptions(Options):
    name: str = option(..., "the topic", argument=True, metavar="TOPIC")
    count: int = option(3, "records to show per partition (the newest)", ge=1)


def _create(settings: VigilSettings, o: CreateOptions) -> int:
    made = create_topic(settings.bootstrap_servers, o.name, o.partitions, o.topic_config)
    print(f"{o.name}: {'created' if made else 'already exists'}")
    return 0


def _describe(settings: VigilSettings, o: TopicOptions) -> int:
    info = describe_topic(settings.bootstrap_servers, o.name)
    print(f"topic {info.name}: {len(info.partitions)} partition(s), {info.messages} offset(s) (records, plus "
          f"the commit markers of transactional writers)")
    for p in info.partitions:
        print(f"  partition {p.partition}: leader {p.leader}, offsets {p.low}..{p.high}")
    for key, value in sorted(info.config.items()):
        print(f"  {key}={value}")
    return 0


def _delete(settings: VigilSettings, o: TopicOptions) -> int:
    delete_topic(settings.bootstrap_servers, o.name)
    print(f"{o.name}: deleted")
    return 0


def _list(settings: VigilSettings, _o: None) -> int:
    print("\n".join(list_topics(settings.bootstrap_servers)))
    return 0


def _peek(settings: VigilSettings, o: PeekOptions) -> int:
    print("\n".join(peek(settings.bootstrap_servers, o.name, o.count)))
    return 0


_KAFKA = ("kafka.bootstrap_servers",)
_ERRORS = (ConnectorError, ValueError)
TOPICS = group("topics", __doc__, {
    "create": command("create", "Create a topic (an existing one is left as it is).", _create,
                      options=CreateOptions, settings_flags=_KAFKA, expected_errors=_ERRORS),
    "describe": command("describe", "Partitions, offsets and non-default configs of a topic.", _describe,
                        options=TopicOptions, settings_flags=_KAFKA, expected_errors=_ERRORS),
    "delete": command("delete", "Delete a topic and its records.", _delete, options=TopicOptions,
                      settings_flags=_KAFKA, expected_errors=_ERRORS),
    "list": command("list", "Every topic but Kafka's internal ones.", _list, settings_flags=_KAFKA,
                    expected_errors=_ERRORS),
    "peek": command("peek", "The newest records of each partition, decoded with the topic's schema.", _peek,
                    options=PeekOptions, settings_flags=_KAFKA, expected_errors=_ERRORS),
}, prog="python -m connectors.topics", settings_flags=_KAFKA)


def main(argv: list[str] | None = None) -> int:
    return TOPICS.main(argv)


if __name__ == "__main__":
    sys.exit(main())
