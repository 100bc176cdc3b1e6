"""MQTT devices -> Kafka: bridge JSON readings from an MQTT broker into the Avro telemetry topic.

    python -m connectors.mqtt_bridge --mqtt-topic 'vigil/telemetry/#' --topic telemetry

Devices publish one JSON object per reading (the telemetry schema's fields; ``event_time`` as ISO
8601 or epoch milliseconds; ``vehicle_id`` may be left out when the MQTT topic ends with it, as
in ``vigil/telemetry/VIN-00042``). Each reading is converted with the topic's Avro schema and
produced keyed by vehicle. Nothing is lost silently:

* subscriptions use QoS 1 and each MQTT message is acknowledged only after Kafka confirmed the
  delivery (paho's manual acks), so a bridge that dies re-receives what it had not delivered;
* a message that is not a valid reading goes to ``<topic>.mqtt-dlq`` with the reason, and is then
  acknowledged;
* a reading Kafka refuses (a far-future timestamp: INVALID_TIMESTAMP, a record too large, ...) is
  produced again on its own (the broker refuses whole batches: a good reading that shared a batch
  with a bad one goes through alone), up to ``MAX_ATTEMPTS`` times, then goes to the DLQ and is
  acknowledged: no message can stop the bridge, now or when it restarts.

A dead letter holds no raw id: the MQTT topic (which may end with the device id) as a pseudonym,
the payload sealed as in the jobs' DLQ (udfs/dead_letters.py: encrypted prefix, size, SHA-256).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import threading
import time
from typing import Any

from confluent_kafka import Producer
from pydantic import BaseModel, ConfigDict, Field

from connectors import schema_store
from connectors.avro_serde import (
    SCHEMA_HEADER,
    AvroSerializer,
    field_type,
    load_schema,
    roles,
    schema_id,
)
from connectors.errors import ConnectorError
from connectors.kafka_io import _QUIET, DEFAULT_PARTITIONS, check_broker, create_topic
from vigil.commands import Options, command, option
from vigil.settings import MqttSettings, VigilSettings, read_pseudonym_secret


class BridgeOptions(Options):
    """What the bridge subscribes to and where it writes; the brokers' addresses are settings."""

    mqtt_topic: str = option("vigil/telemetry/#", "MQTT topic filter to subscribe to (QoS 1)")
    client_id: str = option("vigil-mqtt-bridge", "MQTT client id (a persistent session: unacked messages return)")
    topic: str = option("telemetry", "Kafka topic to write (created if missing)")
    partitions: int = option(DEFAULT_PARTITIONS, "partitions if the Kafka topic is created", ge=1)
    max_messages: int | None = option(None, "stop after this many messages", show_default="run until Ctrl-C")


MAX_ATTEMPTS = 3  # deliveries of one reading Kafka refuses with a retriable error, before its dead letter


class BridgeSettings(BaseModel):
    """Where to read (MQTT) and write (Kafka): the options plus the brokers' addresses."""

    model_config = ConfigDict(frozen=True)

    mqtt_host: str = VigilSettings.model_fields["host"].default
    mqtt_port: int = Field(MqttSettings.model_fields["port"].default, ge=1, le=65535)
    mqtt_topic: str = BridgeOptions.model_fields["mqtt_topic"].default
    client_id: str = BridgeOptions.model_fields["client_id"].default
    bootstrap_servers: str
    topic: str = BridgeOptions.model_fields["topic"].default
    partitions: int = Field(BridgeOptions.model_fields["partitions"].default, ge=1)
    # the pseudonymisation secret's file (dead letters hold no raw id)
    secret_file: str | None = Field(default_factory=lambda: str(VigilSettings.load().pseudonym.secret_file))

    @classmethod
    def of(cls, settings: VigilSettings, options: BridgeOptions) -> BridgeSettings:
        return cls(mqtt_host=settings.mqtt.host, mqtt_port=settings.mqtt.port, mqtt_topic=options.mqtt_topic,
                   client_id=options.client_id, bootstrap_servers=settings.bootstrap_servers, topic=options.topic,
                   partitions=options.partitions,
                   secret_file=str(settings.pseudonym.secret_file) if settings.pseudonym.secret_file else None)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.mqtt-dlq"


def to_record(payload: bytes, mqtt_topic: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One JSON reading -> a record of ``schema``; ValueError says what is wrong with it."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    entity = roles(schema)["entity"]
    if entity and entity not in data and "/" in mqtt_topic:
        data[entity] = mqtt_topic.rsplit("/", 1)[1]
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        base, nullable, logical = field_type(field)
        if name not in data or data[name] is None:
            if nullable:
                record[name] = None
                continue
            raise ValueError(f"missing field {name!r}")
        value = data[name]
        if logical == "timestamp-millis":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=value)
            else:
                try:
                    value = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"{name}: cannot parse time {value!r}") from None
                value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        elif base in ("double", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            value = float(value)
        elif base in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: expected an integer, got {value!r}")
        elif base == "string":
            value = str(value)
        record[name] = value
    return record


class MqttBridge:
    """Subscribe, convert, produce, acknowledge. ``run()`` blocks until ``stop()`` or a limit."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.forwarded = 0
        self.dead_letters = 0
        self._stop = threading.Event()
        self._error: str | None = None

    def prepare(self) -> dict[str, Any]:
        """Check Kafka, create the topics, and use (or register) the topic's schema."""
        s = self.settings
        check_broker(s.bootstrap_servers)
        create_topic(s.bootstrap_servers, s.topic, s.partitions)
        create_topic(s.bootstrap_servers, s.dlq_topic, 1)
        schema = schema_store.lookup(s.bootstrap_servers, s.topic)
        if schema is None:
            schema = load_schema()
            schema_store.register(s.bootstrap_servers, s.topic, schema)
        return schema

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_messages: int | None = None, ready: threading.Event | None = None) -> None:
        import paho.mqtt.client as mqtt

        from connectors.privacy import payload_key, pseudonym, seal

        s = self.settings
        schema = self.prepare()
        secret = read_pseudonym_secret(s.secret_file)
        aes = payload_key(secret)
        serialize = AvroSerializer(schema)
        headers = [(SCHEMA_HEADER, schema_id(schema).encode())]
        entity = roles(schema)["entity"]
        time_col = roles(schema)["time"]
        producer = Producer({"bootstrap.servers": s.bootstrap_servers, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5, **_QUIET})
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, clean_session=False,
                             manual_ack=True)
        handled = [0]
        retries: list[Any] = []  # (message, attempt) to produce again from the main loop

        def done(mid: int, qos: int) -> None:
            client.ack(mid, qos)
            handled[0] += 1
            if max_messages is not None and handled[0] >= max_messages:
                self._stop.set()

        def dead_letter(msg: Any, reason: str) -> None:
            self.dead_letters += 1
            letter = {"reason": reason, "mqtt_topic_pseudonym": pseudonym(secret, msg.topic),
                      "received_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                      **{k: v for k, v in seal(secret, None, msg.payload, aes_key=aes).items() if k != "key_pseudonym"}}
            letter["payload"] = base64.b64encode(letter["payload"]).decode()

            def on_delivery(err: Any, _m: Any) -> None:
                if err is not None:  # the DLQ itself refused: not acked, Mosquitto redelivers later
                    self._error = f"Kafka refused a dead letter on {s.dlq_topic}: {err}"
                    self._stop.set()
                    return
                done(msg.mid, msg.qos)

            producer.produce(s.dlq_topic, value=json.dumps(letter).encode(), on_delivery=on_delivery)

        def forward(msg: Any, record: dict[str, Any], value: bytes, attempt: int) -> None:
            def on_delivery(err: Any, _m: Any) -> None:
                if err is None:
                    self.forwarded += 1
                    done(msg.mid, msg.qos)
                elif attempt < MAX_ATTEMPTS:
                    retries.append((msg, record, value, attempt + 1))
                else:
                    dead_letter(msg, f"kafka_refused: {err.name()}: {err.str()} (after {attempt} attempt(s))")

            ts = int(record[time_col].timestamp() * 1000) if time_col else None
            producer.produce(s.topic, key=str(record[entity]).encode() if entity else None, value=value,
                             headers=headers, timestamp=ts or 0, on_delivery=on_delivery)

        def on_message(_client: Any, _userdata: Any, msg: Any) -> None:
            try:
                record = to_record(msg.payload, msg.topic, schema)
                value = serialize(record)
            except ValueError as exc:
                dead_letter(msg, f"invalid_reading: {exc}")
                return
            forward(msg, record, value, 1)

        def on_connect(_client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
            if reason.is_failure:
                self._error = f"MQTT broker at {s.mqtt_host}:{s.mqtt_port} refused the connection: {reason}"
                self._stop.set()
                return
            client.subscribe(s.mqtt_topic, qos=1)

        def on_subscribe(*_args: Any) -> None:
            if ready is not None:
                ready.set()

        client.on_connect, client.on_message, client.on_subscribe = on_connect, on_message, on_subscribe
        try:
            client.connect(s.mqtt_host, s.mqtt_port, keepalive=30)
        except OSError as exc:
            raise ConnectorError(f"no MQTT broker answers at {s.mqtt_host}:{s.mqtt_port} ({exc}); "
                                 f"start the local one with `python -m stack up mosquitto`") from exc
        client.loop_start()
        try:
            while not self._stop.is_set():
                producer.poll(0.1)
                while retries:  # one at a time, each in its own batch
                    forward(*retries.pop(0))
                    producer.flush(30)
        finally:
            client.loop_stop()
            producer.flush(30)
            client.disconnect()
        if self._error:
            raise ConnectorError(self._error)


def run(settings: VigilSettings, options: BridgeOptions) -> int:
    bridge = MqttBridge(BridgeSettings.of(settings, options))
    started = time.monotonic()
    try:
        bridge.run(max_messages=options.max_messages)
    except KeyboardInterrupt:
        bridge.stop()
    print(f"forwarded {bridge.forwarded} readings to {options.topic!r}, {bridge.dead_letters} to "
          f"{options.topic}.mqtt-dlq in {time.monotonic() - started:.1f}s")
    return 0


COMMAND = command("mqtt-bridge", __doc__, run, options=BridgeOptions,
                  settings_flags=("mqtt.host", "mqtt.port", "kafka.bootstrap_servers"),
                  expected_errors=(ConnectorError,), prog="python -m connectors.mqtt_bridge")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
