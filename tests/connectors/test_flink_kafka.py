"""Flink's Kafka connector from the DataStream API: raw-bytes source, JSON string sink."""
from __future__ import annotations

import json

import pytest

from connectors import flink_kafka
from connectors.avro_serde import AvroDeserializer, load_schema
from connectors.kafka_io import AvroProducer, read_all
from tests.connectors.test_avro_serde import reading

pytestmark = [pytest.mark.flink, pytest.mark.kafka]


class DecodeToJson:
    """Picklable map function: Avro bytes -> JSON line (decoder built lazily in the worker)."""

    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self._decode = None

    def __call__(self, payload: bytes) -> str:
        if self._decode is None:
            self._decode = AvroDeserializer(self.schema)
        record = self._decode(bytes(payload))
        return json.dumps({"vehicle_id": record["vehicle_id"], "speed_kmh": record["speed_kmh"]})


def test_datastream_source_and_sink_move_every_record(kafka_bootstrap, new_topic, flink_activated):
    from pyflink.common import Types

    from jobs.core.flink_env import stream_environment

    source, target = new_topic("ds-in"), new_topic("ds-out")
    schema = load_schema()
    with AvroProducer(kafka_bootstrap, source, schema) as producer:
        for i in range(120):
            producer.send(reading(vehicle_id=f"V{i}", speed_kmh=float(i)), key=f"V{i}")

    env = stream_environment(parallelism__default=1)
    stream = env.from_source(
        flink_kafka.bytes_stream_source(source, kafka_bootstrap, group_id=f"g-{source}", bounded=True),
        flink_kafka.no_watermarks(), "telemetry-bytes", type_info=flink_kafka.bytes_type_info())
    (stream.map(DecodeToJson(schema), output_type=Types.STRING()).name("decode-avro")
     .sink_to(flink_kafka.string_stream_sink(target, kafka_bootstrap)).name("json-to-kafka"))
    env.execute("test-datastream-kafka")

    out = [json.loads(m.value()) for m in read_all(kafka_bootstrap, target)]
    assert len(out) == 120
    assert sorted(o["speed_kmh"] for o in out) == [float(i) for i in range(120)]
