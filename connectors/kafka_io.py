"""Plain-Python Kafka clients (confluent-kafka) for producers and tools outside Flink.

Flink jobs use Flink's own Kafka connector (connectors/flink_kafka.py); this module serves the
simulator, replay, the schema store, the topic tools and the tests.

Every client here, and every client elsewhere in the project, is configured from
:func:`client_config`: the address plus the connection's security (SASL/SCRAM over TLS when
``kafka.security_protocol`` is SASL_SSL). Functions take the bootstrap servers as a str; pass
``settings.bootstrap_servers`` (a :class:`vigil.settings.KafkaAddress`, which carries the login),
and a plain str means a PLAINTEXT connection.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from connectors.avro_serde import SCHEMA_HEADER, AvroSerializer, schema_id
from connectors.errors import BrokerUnavailable, ConnectorError
from vigil.settings import KafkaAddress, KafkaSettings

_QUIET = {"log_level": 0}  # errors surface as exceptions here, not as librdkafka log spam
DEFAULT_PARTITIONS = 3  # of every topic Vigil creates, unless a command is told otherwise


def client_config(bootstrap: str | KafkaSettings) -> dict[str, Any]:
    """The librdkafka configuration of a client of ``bootstrap``: address, security, quiet logging.

    The one place a Python client's connection is configured; add the client's own keys to a copy
    (``{**client_config(bootstrap), "group.id": ...}``). SASL_SSL: SCRAM login with the
    connection's user and password, the brokers' certificates verified against ``ssl_ca_file``
    (host names included). Raises SettingsError naming a missing login or CA file.
    """
    kafka = KafkaAddress.of(bootstrap).connection
    config: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers, **_QUIET}
    if kafka.security_protocol == "SASL_SSL":
        user, password = kafka.require_sasl()
        config.update({
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(kafka.require_ca_file()),
            "ssl.endpoint.identification.algorithm": "https",
        })
    return config


def describe(bootstrap: str | KafkaSettings) -> str:
    """The address and how it is reached, for messages: ``127.0.0.1:9092 (SASL_SSL, user vigil)``."""
    kafka = KafkaAddress.of(bootstrap).connection
    if kafka.security_protocol == "PLAINTEXT":
        return kafka.bootstrap_servers
    return f"{kafka.bootstrap_servers} ({kafka.security_protocol}, user {kafka.sasl_username or '(none)'})"


def check_broker(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise BrokerUnavailable, naming the address, unless a broker answers within ``timeout``.

    A broker that refuses the login (wrong user or password, a plaintext client on a TLS
    listener) is reported as such.
    """
    errors: list[KafkaError] = []
    admin = AdminClient({**client_config(bootstrap), "error_cb": errors.append})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.5)  # serves error_cb: why the connections failed
        refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if refused:
            raise BrokerUnavailable(f"the Kafka broker at {describe(bootstrap)} refused the login: "
                                    f"{refused[0].str()}") from exc
        why = next((e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN), None)
        raise BrokerUnavailable(
            f"no Kafka broker answers at {describe(bootstrap)} (waited {timeout:.0f}s{'; ' + why if why else ''}). "
            f"Start the local one with `make up` or set --bootstrap-servers."
        ) from exc


@dataclass
class DeliveryStats:
    """Counts of records handed to the producer and confirmed (or refused) by the broker."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class AvroProducer:
    """Produce dicts as schemaless Avro to one topic, tagging each record with the schema header.

    Delivery is confirmed per record (acks=all, idempotent). ``close()`` flushes and raises
    ConnectorError if any record was not delivered, so nothing is lost silently.
    """

    def __init__(self, bootstrap: str, topic: str, schema: dict[str, Any], *, linger_ms: int = 20,
                 extra_config: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self.serialize = AvroSerializer(schema)
        self._headers = [(SCHEMA_HEADER, schema_id(schema).encode())]
        self.stats = DeliveryStats()
        self._producer = Producer({
            **client_config(bootstrap),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            **(extra_config or {}),
        })

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            if len(self.stats.errors) < 10:
                self.stats.errors.append(str(err))

    def send(self, record: dict[str, Any], key: str | None = None, timestamp_ms: int | None = None) -> None:
        value = self.serialize(record)
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key.encode() if key is not None else None,
                    timestamp=timestamp_ms or 0, headers=self._headers, on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # local queue full: let the broker catch up
                self._producer.poll(0.1)
        self.stats.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for outstanding deliveries; returns the number still undelivered."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 60.0) -> DeliveryStats:
        left = self.flush(timeout)
        if left or self.stats.failed:
            raise ConnectorError(
                f"{self.stats.failed + left} of {self.stats.sent} records to {self.topic!r} were not delivered "
                f"({self.stats.delivered} were); first errors: {self.stats.errors or ['flush timed out']}"
            )
        return self.stats

    def __enter__(self) -> AvroProducer:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.flush(10)


def end_offsets(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} watermarks of a topic."""
    consumer = Consumer({**client_config(bootstrap), "group.id": "vigil-offsets"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise ConnectorError(f"topic {topic!r} does not exist on {bootstrap}")
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                for p in sorted(tmeta.partitions)}
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, *, timeout: float = 30.0, isolation: str = "read_committed",
             ) -> Iterator[Any]:
    """Yield every message currently in ``topic`` (all partitions, from the start) and stop.

    Bounded: stops once each partition reached the end offset it had at call time, or raises
    ConnectorError after ``timeout`` seconds without reaching it.
    """
    import time

    targets = {p: high for p, (low, high) in end_offsets(bootstrap, topic).items() if high > low}
    consumer = Consumer({
        **client_config(bootstrap), "group.id": f"vigil-read-all-{time.time_ns()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": isolation,
    })
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in targets])
        position = dict.fromkeys(targets, -1)
        deadline = time.monotonic() + timeout
        while any(position[p] + 1 < targets[p] for p in targets):
            if time.monotonic() > deadline:
                raise ConnectorError(f"reading {topic!r} timed out at {position} (targets {targets})")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ConnectorError(f"error reading {topic!r}: {msg.error()}")
                position[msg.partition()] = msg.offset()
                yield msg
            # With read_committed, aborted records and transaction markers never arrive: jump
            # past them by asking where the consumer stands.
            for tp in consumer.position([TopicPartition(topic, p) for p in targets]):
                if tp.offset >= 0:
                    position[tp.partition] = max(position[tp.partition], tp.offset - 1)
    finally:
        consumer.close()


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition: what a reader consumed (lineage)."""

    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


def plan_ranges(bootstrap: str, topic: str, *, start_ms: int | None = None, end_ms: int | None = None,
                start_offsets: dict[int, int] | None = None, end_offsets_: dict[int, int] | None = None,
                timeout: float = 10.0) -> list[PartitionRange]:
    """Resolve a time or offset range into per-partition offset ranges, for every partition.

    Defaults: from the earliest retained offset to the end offset as of now. Timestamps are Kafka
    record timestamps in epoch milliseconds (the producers set them to the event time).
    """
    marks = end_offsets(bootstrap, topic, timeout)
    starts = {p: low for p, (low, _) in marks.items()}
    ends = {p: high for p, (_, high) in marks.items()}
    if start_ms is not None or end_ms is not None:
        consumer = Consumer({**client_config(bootstrap), "group.id": "vigil-plan"})
        try:
            for bound, target in ((start_ms, starts), (end_ms, ends)):
                if bound is None:
                    continue
                found = consumer.offsets_for_times([TopicPartition(topic, p, bound) for p in marks], timeout=timeout)
                for tp in found:
                    # -1: no record at or after the timestamp -> the partition's end
                    target[tp.partition] = marks[tp.partition][1] if tp.offset < 0 else tp.offset
        finally:
            consumer.close()
    for given, target in ((start_offsets, starts), (end_offsets_, ends)):
        for p, off in (given or {}).items():
            if p not in marks:
                raise ConnectorError(f"topic {topic!r} has no partition {p} (it has {sorted(marks)})")
            low, high = marks[p]
            if not low <= off <= high:
                raise ConnectorError(f"offset {off} is outside partition {p}'s retained range {low}..{high}")
            target[p] = off
    return [PartitionRange(p, starts[p], max(starts[p], ends[p])) for p in sorted(marks)]


def consume_ranges(bootstrap: str, topic: str, ranges: list[PartitionRange], *, timeout: float = 60.0,
                   progress: Any = None) -> Iterator[Any]:
    """Yield every message of ``ranges`` (committed records only); bounded by ``timeout`` of silence.

    ``progress`` is an optional callable taking the number of messages just read (e.g. tqdm.update).
    """
    import time

    todo = {r.partition: r for r in ranges if r.count > 0}
    if not todo:
        return
    consumer = Consumer({
        **client_config(bootstrap), "group.id": f"vigil-range-{time.time_ns()}",
        "enable.auto.commit": False, "isolation.level": "read_committed",
    })
    try:
        consumer.assign([TopicPartition(topic, r.partition, r.start) for r in todo.values()])
        quiet_since = time.monotonic()
        while todo:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            read = 0
            for msg in batch:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ConnectorError(f"error reading {topic!r}: {msg.error()}")
                r = todo.get(msg.partition())
                if r is None or msg.offset() >= r.end:
                    continue
                read += 1
                yield msg
            if progress is not None and read:
                progress(read)
            if read:
                quiet_since = time.monotonic()
            for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= todo[tp.partition].end:
                    del todo[tp.partition]
            if todo and time.monotonic() - quiet_since > timeout:
                raise ConnectorError(f"reading {topic!r} stalled for {timeout:.0f}s before reaching {list(todo.values())}")
    finally:
        consumer.close()


# --- topic administration -----------------------------------------------------------------------

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
    return AdminClient(client_config(bootstrap))


def create_topic(bootstrap: str, name: str, partitions: int = DEFAULT_PARTITIONS, config: dict[str, str] | None = None,
                 exist_ok: bool = True) -> bool:
    """Create ``name``; returns False when it already existed (and ``exist_ok``).

    The replication factor and min ISR are the cluster's defaults (``default.replication.factor``,
    ``min.insync.replicas``): 1 on the single local broker, 3 and 2 on a local cluster of three.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    admin = _admin(bootstrap)
    future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=-1,
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
