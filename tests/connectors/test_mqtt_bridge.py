"""MQTT devices -> Kafka through the real Mosquitto broker and the real Kafka broker."""
from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer, load_schema
from connectors.errors import ConnectorError
from connectors.kafka_io import read_all
from connectors.mqtt_bridge import BridgeSettings, MqttBridge, to_record
from jobs import simulation
from udfs.dead_letters import open_payload
from vigil.settings import read_pseudonym_secret

pytestmark = pytest.mark.kafka


def test_json_readings_convert_with_clear_errors():
    schema = load_schema()
    reading = next(simulation.generate(simulation.FleetSettings(vehicles=1, events=1)))
    body = {**reading, "event_time": reading["event_time"].isoformat()}
    del body["vehicle_id"]
    record = to_record(json.dumps(body).encode(), "vigil/telemetry/VIN-7", schema)
    assert record["vehicle_id"] == "VIN-7" and record["event_time"] == reading["event_time"]
    with pytest.raises(ValueError, match="not JSON"):
        to_record(b"{oops", "t/x", schema)
    with pytest.raises(ValueError, match="missing field 'coolant_temp_c'"):
        to_record(json.dumps({k: v for k, v in body.items() if k != "coolant_temp_c"}).encode(), "t/x", schema)
    with pytest.raises(ValueError, match="speed_kmh: expected a number"):
        to_record(json.dumps({**body, "speed_kmh": "fast"}).encode(), "t/x", schema)


def test_bridge_forwards_readings_and_dead_letters_bad_ones(mqtt_settings, kafka_bootstrap):
    topic = f"test.mqtt.{uuid.uuid4().hex[:8]}"
    mqtt_topic = f"vigil-test/{uuid.uuid4().hex[:6]}"
    readings = list(simulation.generate(simulation.FleetSettings(vehicles=5, events=200, seed=2)))
    # a new topic: the vehicle schema is named (before, the bridge registered it on any new topic)
    bridge = MqttBridge(BridgeSettings(mqtt_port=mqtt_settings.mqtt.port, mqtt_topic=f"{mqtt_topic}/#",
                                       client_id=f"bridge-{topic}", bootstrap_servers=kafka_bootstrap, topic=topic,
                                       schema_file="telemetry-v1"))
    ready = threading.Event()
    runner = threading.Thread(target=bridge.run, kwargs={"max_messages": len(readings) + 2, "ready": ready})
    runner.start()
    assert ready.wait(30), "the bridge did not subscribe"

    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{topic}")
    device.connect("127.0.0.1", mqtt_settings.mqtt.port)
    device.loop_start()
    for r in readings:
        body = {**r, "event_time": int(r["event_time"].timestamp() * 1000)}
        device.publish(f"{mqtt_topic}/{r['vehicle_id']}", json.dumps(body), qos=1).wait_for_publish(10)
    device.publish(f"{mqtt_topic}/VIN-X", b"\xff\xfe not json", qos=1).wait_for_publish(10)
    device.publish(f"{mqtt_topic}/VIN-X", json.dumps({"speed_kmh": 3}), qos=1).wait_for_publish(10)
    runner.join(60)
    device.loop_stop()
    assert not runner.is_alive()

    decode = AvroDeserializer(schema_store.require(kafka_bootstrap, topic))
    got = [decode(m.value()) for m in read_all(kafka_bootstrap, topic)]
    assert len(got) == len(readings) == bridge.forwarded
    key = lambda r: (r["vehicle_id"], r["event_time"])  # noqa: E731
    assert sorted(got, key=key) == sorted(readings, key=key)
    dlq = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.mqtt-dlq")]
    assert len(dlq) == 2 == bridge.dead_letters
    assert {d["reason"].split(":")[0] for d in dlq} == {"invalid_reading"}
    secret = read_pseudonym_secret(bridge.settings.secret_file)
    sealed = base64.b64decode(next(d for d in dlq if "not JSON" in d["reason"])["payload"])
    assert open_payload(secret, sealed) == b"\xff\xfe not json" and b"not json" not in sealed
    assert all("VIN-X" not in json.dumps(d) for d in dlq)  # no raw id, not even in the MQTT topic


def test_a_reading_kafka_refuses_is_dead_lettered_not_a_poison_pill(mqtt_settings, kafka_bootstrap):
    """A far-future event time: the broker refuses the record (INVALID_TIMESTAMP). Before, the bridge
    died, and died again on restart when Mosquitto redelivered the unacknowledged message."""
    topic = f"test.mqtt.pill.{uuid.uuid4().hex[:8]}"
    mqtt_topic = f"vigil-test/{uuid.uuid4().hex[:6]}"
    reading = next(simulation.generate(simulation.FleetSettings(vehicles=1, events=1)))
    ok = {**reading, "event_time": int(reading["event_time"].timestamp() * 1000)}
    pill = {**ok, "event_time": int(dt.datetime(3000, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)}

    def run_bridge(messages: list[dict], expect: int, schema_file: str | None = None) -> MqttBridge:
        bridge = MqttBridge(BridgeSettings(mqtt_port=mqtt_settings.mqtt.port, mqtt_topic=f"{mqtt_topic}/#",
                                           client_id=f"bridge-{topic}", bootstrap_servers=kafka_bootstrap,
                                           topic=topic, schema_file=schema_file))
        ready = threading.Event()
        runner = threading.Thread(target=bridge.run, kwargs={"max_messages": expect, "ready": ready}, daemon=True)
        runner.start()
        assert ready.wait(30)
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{uuid.uuid4().hex[:6]}")
        device.connect("127.0.0.1", mqtt_settings.mqtt.port)
        device.loop_start()
        for body in messages:
            device.publish(f"{mqtt_topic}/VIN-PILL", json.dumps(body), qos=1).wait_for_publish(10)
        runner.join(60)
        device.loop_stop()
        assert not runner.is_alive(), "the bridge stopped handling messages"
        return bridge

    first = run_bridge([pill, ok], expect=2, schema_file="telemetry-v1")  # a new topic: name its schema
    assert (first.forwarded, first.dead_letters) == (1, 1)
    dlq = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.mqtt-dlq")]
    assert len(dlq) == 1 and dlq[0]["reason"].startswith("kafka_refused: INVALID_TIMESTAMP")
    # a restarted bridge gets nothing back: the refused reading was acknowledged after its dead letter
    # (and it needs no --schema now: the topic's schema is registered)
    second = run_bridge([ok], expect=1)
    assert (second.forwarded, second.dead_letters) == (1, 0)
    assert len(list(read_all(kafka_bootstrap, topic))) == 2


def test_no_mqtt_broker_is_one_clear_error(kafka_bootstrap):
    bridge = MqttBridge(BridgeSettings(mqtt_port=1, bootstrap_servers=kafka_bootstrap,
                                       topic=f"test.mqtt.none.{uuid.uuid4().hex[:6]}", schema_file="telemetry-v1"))
    with pytest.raises(ConnectorError, match="no MQTT broker answers at 127.0.0.1:1"):
        bridge.run(max_messages=1)
