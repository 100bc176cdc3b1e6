"""Topic administration: create with partitions, describe, delete.

    python -m connectors.topics create telemetry --partitions 3
    python -m connectors.topics describe telemetry
    python -m connectors.topics list
    python -m connectors.topics peek telemetry.enriched --count 3
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from connectors.errors import ConnectorError
from connectors.kafka_io import _QUIET, check_broker, end_offsets


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int
    low: int
    high: int


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str]

    @property
    def messages(self) -> int:
        return sum(p.high - p.low for p in self.partitions)


def _admin(bootstrap: str) -> AdminClient:
    check_broker(bootstrap)
    return AdminClient({"bootstrap.servers": bootstrap, **_QUIET})


def create_topic(bootstrap: str, name: str, partitions: int = 3, config: dict[str, str] | None = None,
                 exist_ok: bool = True) -> bool:
    """Create ``name``; returns False when it already existed (and ``exist_ok``)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    admin = _admin(bootstrap)
    future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                           config=config or {})], operation_timeout=30)[name]
    try:
        future.result(timeout=30)
        return True
    except KafkaException as exc:
        if exc.args[0].name() == "TOPIC_ALREADY_EXISTS" and exist_ok:
            return False
        raise ConnectorError(f"could not create topic {name!r} on {bootstrap}: {exc.args[0].str()}") from exc


def delete_topic(bootstrap: str, name: str) -> None:
    admin = _admin(bootstrap)
    try:
        admin.delete_topics([name], operation_timeout=30)[name].result(timeout=30)
    except KafkaException as exc:
        raise ConnectorError(f"could not delete topic {name!r}: {exc.args[0].str()}") from exc


def list_topics(bootstrap: str) -> list[str]:
    return sorted(t for t in _admin(bootstrap).list_topics(timeout=10).topics if not t.startswith("__"))


def describe_topic(bootstrap: str, name: str) -> TopicInfo:
    admin = _admin(bootstrap)
    meta = admin.list_topics(name, timeout=10).topics.get(name)
    if meta is None or meta.error is not None:
        raise ConnectorError(f"topic {name!r} does not exist on {bootstrap}")
    marks = end_offsets(bootstrap, name)
    parts = [PartitionInfo(p, meta.partitions[p].leader, *marks[p]) for p in sorted(meta.partitions)]
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    config = {k: v.value for k, v in entries.items() if not v.is_default and v.value is not None}
    return TopicInfo(name, parts, config)


def peek(bootstrap: str, name: str, count: int = 5) -> list[str]:
    """The last ``count`` records of each partition of ``name``, decoded for reading.

    Avro topics are decoded with the schema registered in the schema store; other values are
    shown as JSON text when they are UTF-8, else as a byte count.
    """
    import json

    from confluent_kafka import Consumer, TopicPartition

    from connectors import schema_store
    from connectors.avro_serde import AvroDeserializer

    schema = schema_store.lookup(bootstrap, name)
    decode = AvroDeserializer(schema) if schema else None
    marks = end_offsets(bootstrap, name)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "vigil-peek",
                         "enable.auto.commit": False, **_QUIET})
    lines: list[str] = []
    try:
        wanted = {p: max(low, high - count) for p, (low, high) in marks.items() if high > low}
        consumer.assign([TopicPartition(name, p, off) for p, off in wanted.items()])
        remaining = sum(marks[p][1] - off for p, off in wanted.items())
        for _ in range(20):
            if remaining <= 0:
                break
            for msg in consumer.consume(num_messages=remaining, timeout=1.0):
                if msg.error():
                    continue
                remaining -= 1
                value = msg.value() or b""
                if decode is not None:
                    text = json.dumps(decode(value), default=str)
                else:
                    try:
                        text = value.decode()
                    except UnicodeDecodeError:
                        text = f"<{len(value)} bytes>"
                lines.append(f"[p{msg.partition()}@{msg.offset()}] key={msg.key()!r} {text}")
    finally:
        consumer.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    from stack.settings import StackSettings

    parser = argparse.ArgumentParser(prog="python -m connectors.topics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=StackSettings.from_env().bootstrap_servers)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=3)
    create.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    describe = sub.add_parser("describe")
    describe.add_argument("name")
    delete = sub.add_parser("delete")
    delete.add_argument("name")
    sub.add_parser("list")
    peek_cmd = sub.add_parser("peek", help="print the last records of each partition")
    peek_cmd.add_argument("name")
    peek_cmd.add_argument("--count", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            config = dict(item.split("=", 1) for item in args.config)
            made = create_topic(args.bootstrap_servers, args.name, args.partitions, config)
            print(f"{args.name}: {'created' if made else 'already exists'}")
        elif args.command == "describe":
            info = describe_topic(args.bootstrap_servers, args.name)
            print(f"topic {info.name}: {len(info.partitions)} partition(s), {info.messages} message(s)")
            for p in info.partitions:
                print(f"  partition {p.partition}: leader {p.leader}, offsets {p.low}..{p.high}")
            for key, value in sorted(info.config.items()):
                print(f"  {key}={value}")
        elif args.command == "delete":
            delete_topic(args.bootstrap_servers, args.name)
            print(f"{args.name}: deleted")
        elif args.command == "peek":
            print("\n".join(peek(args.bootstrap_servers, args.name, args.count)))
        else:
            print("\n".join(list_topics(args.bootstrap_servers)))
    except (ConnectorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
