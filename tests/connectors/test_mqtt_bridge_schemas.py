"""The MQTT bridge for any machine: a topic's registered schema, else --schema, else one clear error.

Real Mosquitto and real Kafka, as in test_mqtt_bridge.py.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from connectors import schema_store
from connectors.avro_serde import SCHEMA_HEADER, AvroDeserializer, fingerprint, load_schema, schema_id
from connectors.kafka_io import list_topics, read_all
from connectors.mqtt_bridge import BridgeSettings, MqttBridge, main, to_record

pytestmark = pytest.mark.kafka

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
PUMP_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "pump_reading", "namespace": "plant.pumps",
    "vigil.entity": "pump", "vigil.time": "ts",
    "fields": [
        {"name": "pump", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "flow_m3h", "type": "double"},
        {"name": "pressure_bar", "type": "double"},
        {"name": "bearing_temp_c", "type": ["null", "double"], "default": None},
        {"name": "rpm", "type": "long"},
    ],
}


def _write_schema(tmp_path: Path, schema: dict[str, Any] = PUMP_SCHEMA, name: str = "pump.avsc") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(schema))
    return path


def _topics() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"test.mqtt.pumps.{tag}", f"plant-{tag}/pumps"


def test_pump_readings_convert_with_the_pump_schema() -> None:
    body = {"ts": "2026-03-01T10:00:00Z", "flow_m3h": 12, "pressure_bar": 2.5, "rpm": 1450}
    record = to_record(json.dumps(body).encode(), "plant/pumps/P-7", PUMP_SCHEMA)
    assert record == {"pump": "P-7", "ts": T0, "flow_m3h": 12.0, "pressure_bar": 2.5, "bearing_temp_c": None,
                      "rpm": 1450}
    millis = {**body, "ts": int(T0.timestamp() * 1000) + 500, "pump": "P-8"}
    assert to_record(json.dumps(millis).encode(), "plant/pumps/P-7", PUMP_SCHEMA)["ts"] == \
        T0 + dt.timedelta(milliseconds=500)
    assert to_record(json.dumps(millis).encode(), "plant/pumps/P-7", PUMP_SCHEMA)["pump"] == "P-8"
    with pytest.raises(ValueError, match="flow_m3h: expected a number, got '12.5'"):
        to_record(json.dumps({**body, "flow_m3h": "12.5"}).encode(), "plant/pumps/P-7", PUMP_SCHEMA)
    with pytest.raises(ValueError, match="missing field 'ts'"):
        to_record(json.dumps({k: v for k, v in body.items() if k != "ts"}).encode(), "p/P-7", PUMP_SCHEMA)
    with pytest.raises(ValueError, match="missing field 'pump'"):
        to_record(json.dumps(body).encode(), "no-levels", PUMP_SCHEMA)
    with pytest.raises(ValueError, match="ts: time out of range"):
        to_record(json.dumps({**body, "ts": 10**20}).encode(), "p/P-7", PUMP_SCHEMA)


def test_a_pump_with_its_own_schema_is_bridged_end_to_end(mqtt_settings, kafka_bootstrap, tmp_path):
    topic, mqtt_topic = _topics()
    schema_path = _write_schema(tmp_path)
    readings = []
    for i in range(60):
        pump = f"P-{i % 3}"
        ts = T0 + dt.timedelta(seconds=i)
        body: dict[str, Any] = {"ts": ts.isoformat().replace("+00:00", "Z") if i % 2 else int(ts.timestamp() * 1000),
                                "flow_m3h": 10 + i / 4, "pressure_bar": 2 + i / 100, "rpm": 1400 + i}
        if i % 5:
            body["bearing_temp_c"] = 40.0 + i % 7
        if i % 3 == 0:
            body["pump"] = pump  # the others take the id from the MQTT topic's last level
        readings.append((pump, ts, body))
    bad = {"ts": "2026-03-01T11:00:00Z", "flow_m3h": "12.5", "pressure_bar": 2.0, "rpm": 1400}

    bridge = MqttBridge(BridgeSettings(mqtt_port=mqtt_settings.mqtt.port, mqtt_topic=f"{mqtt_topic}/#",
                                       client_id=f"bridge-{topic}", bootstrap_servers=kafka_bootstrap, topic=topic,
                                       schema_file=str(schema_path)))
    ready = threading.Event()
    runner = threading.Thread(target=bridge.run, kwargs={"max_messages": len(readings) + 1, "ready": ready},
                              daemon=True)
    runner.start()
    assert ready.wait(30), "the bridge did not subscribe"
    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pump-{topic}")
    device.connect("127.0.0.1", mqtt_settings.mqtt.port)
    device.loop_start()
    for pump, _, body in readings:
        device.publish(f"{mqtt_topic}/{pump}", json.dumps(body), qos=1).wait_for_publish(10)
    device.publish(f"{mqtt_topic}/P-9", json.dumps(bad), qos=1).wait_for_publish(10)
    runner.join(60)
    device.loop_stop()
    assert not runner.is_alive(), "the bridge stopped handling messages"
    assert (bridge.forwarded, bridge.dead_letters) == (60, 1)

    registered = schema_store.require(kafka_bootstrap, topic)
    assert fingerprint(registered) == fingerprint(PUMP_SCHEMA)
    assert (registered["vigil.entity"], registered["vigil.time"]) == ("pump", "ts")
    decode = AvroDeserializer(registered)
    got = {}
    for m in read_all(kafka_bootstrap, topic):
        rec = decode(m.value())
        assert m.key().decode() == rec["pump"]
        assert m.timestamp()[1] == int(rec["ts"].timestamp() * 1000)
        assert dict(m.headers())[SCHEMA_HEADER] == schema_id(registered).encode()
        got[(rec["pump"], rec["ts"])] = rec
    assert len(got) == 60
    for pump, ts, body in readings:
        rec = got[(pump, ts)]
        assert (rec["flow_m3h"], rec["pressure_bar"], rec["rpm"]) == (body["flow_m3h"], body["pressure_bar"],
                                                                      body["rpm"])
        assert rec["bearing_temp_c"] == body.get("bearing_temp_c")
    dlq = [json.loads(m.value()) for m in read_all(kafka_bootstrap, f"{topic}.mqtt-dlq")]
    assert [d["reason"] for d in dlq] == ["invalid_reading: flow_m3h: expected a number, got '12.5'"]


def test_a_new_topic_without_a_schema_is_one_clear_error(kafka_bootstrap, capsys):
    topic, mqtt_topic = _topics()
    rc = main(["--topic", topic, "--mqtt-topic", f"{mqtt_topic}/#", "--bootstrap-servers", kafka_bootstrap,
               "--max-messages", "1"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: topic {topic!r} has no registered schema")
    assert "pass --schema FILE.avsc" in lines[0] and f"vigil register {topic}" in lines[0]
    assert "bridging" not in captured.out
    assert not {topic, f"{topic}.mqtt-dlq"} & set(list_topics(kafka_bootstrap))  # nothing was created
    assert schema_store.lookup(kafka_bootstrap, topic) is None


def test_another_schema_for_a_registered_topic_is_refused(kafka_bootstrap, tmp_path, capsys):
    topic, mqtt_topic = _topics()
    schema_store.register(kafka_bootstrap, topic, load_schema())  # the vehicle schema
    rc = main(["--topic", topic, "--mqtt-topic", f"{mqtt_topic}/#", "--bootstrap-servers", kafka_bootstrap,
               "--schema", str(_write_schema(tmp_path)), "--max-messages", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"error: topic {topic!r} is registered with schema {schema_id(load_schema())} "
                             f"(entity 'vehicle_id', time 'event_time'), not --schema ")
    assert "one topic holds one record layout" in err[0]
    assert fingerprint(schema_store.require(kafka_bootstrap, topic)) == fingerprint(load_schema())

    # the same layout again (a restarted bridge with the same --schema), or none: the registered one
    same = MqttBridge(BridgeSettings(bootstrap_servers=kafka_bootstrap, topic=topic, schema_file="telemetry-v1"))
    assert fingerprint(same.prepare()) == fingerprint(load_schema())
    plain = MqttBridge(BridgeSettings(bootstrap_servers=kafka_bootstrap, topic=topic))
    assert fingerprint(plain.prepare()) == fingerprint(load_schema())
    # the same fields with other roles are another layout
    moved = {**load_schema(), "vigil.entity": "firmware"}
    other = MqttBridge(BridgeSettings(bootstrap_servers=kafka_bootstrap, topic=topic,
                                      schema_file=str(_write_schema(tmp_path, moved, "moved.avsc"))))
    with pytest.raises(ValueError, match="one topic holds one record layout"):
        other.prepare()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("vigil.time"), r'declares no vigil.time: add "vigil.time": "<field>" to the record'),
    (lambda s: s.update({"vigil.entity": "serial"}), r"vigil.entity names 'serial', not one of its fields"),
    (lambda s: s["fields"][1].update({"type": "string"}), r"the time field 'ts' must be"),
])
def test_a_schema_file_without_usable_roles_is_refused(kafka_bootstrap, tmp_path, capsys, change, message):
    topic, mqtt_topic = _topics()
    schema = copy.deepcopy(PUMP_SCHEMA)
    change(schema)
    rc = main(["--topic", topic, "--mqtt-topic", f"{mqtt_topic}/#", "--bootstrap-servers", kafka_bootstrap,
               "--schema", str(_write_schema(tmp_path, schema)), "--max-messages", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert topic not in list_topics(kafka_bootstrap)


def test_an_unreadable_schema_file_is_one_clear_error(kafka_bootstrap, tmp_path, capsys):
    topic, _ = _topics()
    (tmp_path / "broken.avsc").write_text("{not json")
    for path, message in ((tmp_path / "missing.avsc", "cannot read the schema file"),
                          (tmp_path / "broken.avsc", "is not JSON")):
        assert main(["--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--schema", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
