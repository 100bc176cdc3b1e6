from __future__ import annotations

import time

import pytest

from connectors import schema_store
from connectors.avro_serde import load_schema
from connectors.errors import BrokerUnavailable, ConnectorError
from connectors.kafka_io import AvroProducer, check_broker, read_all
from connectors.kafka_io import create_topic, describe_topic
from connectors.topics import main, peek
from tests.connectors.test_avro_serde import reading

pytestmark = pytest.mark.kafka


def test_create_and_describe(kafka_bootstrap: str, new_topic):
    name = new_topic("described", partitions=4)
    assert create_topic(kafka_bootstrap, name, partitions=4) is False  # already exists
    info = describe_topic(kafka_bootstrap, name)
    assert [p.partition for p in info.partitions] == [0, 1, 2, 3]
    assert info.messages == 0


def test_produce_then_describe_and_read_back(kafka_bootstrap: str, new_topic):
    name = new_topic("produced")
    schema = load_schema()
    with AvroProducer(kafka_bootstrap, name, schema) as producer:
        for i in range(50):
            producer.send(reading(vehicle_id=f"V{i % 7}"), key=f"V{i % 7}")
    assert producer.stats.delivered == 50
    assert describe_topic(kafka_bootstrap, name).messages == 50
    assert len(list(read_all(kafka_bootstrap, name))) == 50


def test_schema_store_keeps_the_latest_schema_per_topic(kafka_bootstrap: str, new_topic):
    name = new_topic("schema")
    schema = load_schema()
    assert schema_store.lookup(kafka_bootstrap, name) is None
    schema_store.register(kafka_bootstrap, name, schema)
    assert schema_store.lookup(kafka_bootstrap, name) == schema
    newer = {**schema, "doc": "v1 again, new doc"}
    schema_store.register(kafka_bootstrap, name, newer)
    assert schema_store.require(kafka_bootstrap, name)["doc"] == "v1 again, new doc"


def test_peek_decodes_avro_with_the_stored_schema(kafka_bootstrap: str, new_topic):
    name = new_topic("peek", partitions=1)
    schema = load_schema()
    schema_store.register(kafka_bootstrap, name, schema)
    with AvroProducer(kafka_bootstrap, name, schema) as producer:
        for i in range(5):
            producer.send(reading(vehicle_id=f"V{i}"), key=f"V{i}")
    lines = peek(kafka_bootstrap, name, count=2)
    assert len(lines) == 2
    assert '"vehicle_id": "V4"' in lines[-1]


def test_peek_counts_records_not_the_commit_markers_of_transactions(kafka_bootstrap: str, new_topic):
    """Each transaction leaves a commit marker at an offset of its own (the scoring jobs' outputs)."""
    from confluent_kafka import Producer

    name = new_topic("peek.tx", partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"peek-{name}"})
    producer.init_transactions(30)
    for i in range(4):  # one record per transaction: offsets 0..7, records at the even ones
        producer.begin_transaction()
        producer.produce(name, key=f"k{i}".encode(), value=f'{{"i": {i}}}'.encode())
        producer.commit_transaction(30)
    lines = peek(kafka_bootstrap, name, count=3)
    assert [line.split(" ", 1)[0] for line in lines] == ["[p0@2]", "[p0@4]", "[p0@6]"]
    assert lines[-1].endswith('{"i": 3}')
    assert len(peek(kafka_bootstrap, name, count=10)) == 4  # all there is


def test_missing_topic_is_a_clear_error(kafka_bootstrap: str):
    with pytest.raises(ConnectorError, match="does not exist"):
        describe_topic(kafka_bootstrap, "no.such.topic.here")


def test_a_broker_that_is_not_running_gives_one_clear_error(capsys):
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="127.0.0.1:1"):
        check_broker("127.0.0.1:1", timeout=2)
    assert time.monotonic() - started < 10
    assert main(["--bootstrap-servers", "127.0.0.1:1", "list"]) == 1
    err = capsys.readouterr().err
    assert "no Kafka broker answers at 127.0.0.1:1" in err
    assert err.count("\n") <= 2
