"""MQTT devices -> Kafka: bridge JSON readings of any machine from an MQTT broker into an Avro topic.

    vigil mqtt --mqtt-topic 'vigil/telemetry/#' --topic telemetry
    vigil mqtt --mqtt-topic 'plant/pumps/#' --topic pumps --schema pump.avsc

**Which schema.** The readings are converted with the Kafka topic's registered schema (the schema
store, connectors/schema_store.py: what jobs.simulate_fleet, jobs.replay_file or jobs.register_topic
stored). A topic with no registered schema needs ``--schema FILE.avsc``: an Avro record schema whose
``vigil.entity`` and ``vigil.time`` attributes name its id field and its event-time field (a
``{"type": "long", "logicalType": "timestamp-millis"}`` field); the bridge registers it before
forwarding anything. (``--schema telemetry-v1`` names the vehicle schema shipped in
connectors/schemas/.) Without either the bridge refuses to start, with one error line naming both
remedies, and creates nothing. ``--schema`` for a topic registered with another schema (other
fields or roles) is refused too: one topic holds one record layout, the one its readers decode.

**Payload.** One JSON object per MQTT message, with the schema's field names as keys:

* the time field as ISO 8601 text (``2026-03-01T10:00:00Z``; no offset means UTC) or as epoch
  milliseconds (a number);
* the entity id as text; it may be left out when the last level of the MQTT topic is the id, as in
  ``plant/pumps/P-7`` or ``vigil/telemetry/VIN-00042``;
* numeric fields as JSON numbers (``12.5``, not ``"12.5"``), booleans as true/false, strings as text;
  nullable fields (``["null", ...]``) may be null or left out; other keys are ignored.

Each reading is produced keyed by its entity id, with the event time as the Kafka timestamp and
the ``vigil.schema`` header. Nothing is lost silently:

* subscriptions use QoS 1 and each MQTT message is acknowledged only after Kafka confirmed the
  delivery (paho's manual acks), so a bridge that dies re-receives what it had not delivered;
* a message that is not a valid reading goes to ``<topic>.mqtt-dlq`` with the reason
  ``invalid_reading: ...`` (not JSON, not an object, a missing required field, a value of the wrong
  type, a time that does not parse), and is then acknowledged;
* a reading Kafka refuses (a far-future timestamp: INVALID_TIMESTAMP, a record too large, ...) is
  produced again on its own (the broker refuses whole batches: a good reading that shared a batch
  with a bad one goes through alone), up to ``MAX_ATTEMPTS`` times, then goes to the DLQ as
  ``kafka_refused: ...`` and is acknowledged: no message can stop the bridge, now or when it restarts.

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
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors import schema_store
from connectors.avro_serde import (
    SCHEMA_HEADER,
    AvroSerializer,
    field_type,
    fingerprint,
    load_schema,
    roles,
    schema_id,
    validate_schema,
)
from connectors.errors import ConnectorError, DecodeError, SchemaError
from connectors.kafka_io import DEFAULT_PARTITIONS, check_broker, client_config, create_topic
from connectors.payloads import json_record, parse_json, payload_format
from vigil.commands import Options, OptionsError, command, option
from vigil.settings import KafkaAddress, MqttSettings, VigilSettings, read_pseudonym_secret


class BridgeOptions(Options):
    """What the bridge subscribes to and where it writes; the brokers' addresses are settings."""

    mqtt_topic: str = option("vigil/telemetry/#", "MQTT topic filter to subscribe to (QoS 1)")
    client_id: str = option("vigil-mqtt-bridge", "MQTT client id (a persistent session: unacked messages return)")
    topic: str = option("telemetry", "Kafka topic to write (created if missing)")
    schema_file: str | None = option(
        None, "Avro record schema (.avsc) for a topic with no registered schema, with vigil.entity and "
              "vigil.time naming its id and event-time fields; telemetry-v1 names the vehicle schema",
        flag="--schema", metavar="FILE", show_default="the topic's registered schema")
    partitions: int = option(DEFAULT_PARTITIONS, "partitions if the Kafka topic is created", ge=1)
    max_messages: int | None = option(None, "stop after this many messages", show_default="run until Ctrl-C")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class BridgeSchemaError(SchemaError):
    """The topic's schema cannot be chosen or used (none registered and no --schema, a conflict, no roles)."""


MAX_ATTEMPTS = 3  # deliveries of one reading Kafka refuses with a retriable error, before its dead letter


class BridgeSettings(BaseModel):
    """Where to read (MQTT) and write (Kafka): the options plus the brokers' addresses."""

    model_config = ConfigDict(frozen=True)

    mqtt_host: str = VigilSettings.model_fields["host"].default
    mqtt_port: int = Field(MqttSettings.model_fields["port"].default, ge=1, le=65535)
    mqtt_username: str | None = None  # with mqtt_password: the bridge's login (mqtt.username/password)
    mqtt_password: SecretStr | None = None
    mqtt_topic: str = BridgeOptions.model_fields["mqtt_topic"].default
    client_id: str = BridgeOptions.model_fields["client_id"].default
    bootstrap_servers: KafkaAddress  # carries the Kafka login (kafka.security_protocol, kafka.sasl_*)
    topic: str = BridgeOptions.model_fields["topic"].default
    partitions: int = Field(BridgeOptions.model_fields["partitions"].default, ge=1)
    schema_file: str | None = None  # for a topic with no registered schema (see the module docstring)
    # the pseudonymisation secret's file (dead letters hold no raw id)
    secret_file: str | None = Field(default_factory=lambda: str(VigilSettings.load().pseudonym.secret_file))

    @model_validator(mode="after")
    def _login_complete(self) -> BridgeSettings:
        if bool(self.mqtt_username) != bool(self.mqtt_password and self.mqtt_password.get_secret_value()):
            raise ValueError("mqtt_username and mqtt_password are given together (or neither: anonymous)")
        return self

    @classmethod
    def of(cls, settings: VigilSettings, options: BridgeOptions) -> BridgeSettings:
        return cls(mqtt_host=settings.mqtt.host, mqtt_port=settings.mqtt.port, mqtt_username=settings.mqtt.username,
                   mqtt_password=settings.mqtt.password, mqtt_topic=options.mqtt_topic,
                   client_id=options.client_id, bootstrap_servers=settings.bootstrap_servers, topic=options.topic,
                   partitions=options.partitions, schema_file=options.schema_file,
                   secret_file=str(settings.pseudonym.secret_file) if settings.pseudonym.secret_file else None)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.mqtt-dlq"


def to_record(payload: bytes, mqtt_topic: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One JSON reading -> a record of ``schema`` (times as UTC datetimes); ValueError says what is wrong.

    The entity id may come from the MQTT topic's last level (see the module docstring).
    """
    data = parse_json(payload)  # a DecodeError (a ValueError) says why it is not JSON
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    entity = roles(schema)["entity"]
    if entity and data.get(entity) is None and "/" in mqtt_topic:
        data[entity] = mqtt_topic.rsplit("/", 1)[1]
    try:
        record = json_record(data, schema, raw_times=False)
    except DecodeError as exc:
        raise ValueError(str(exc)) from None
    for role, name in roles(schema).items():
        if role != "label" and name and record.get(name) is None:
            raise ValueError(f"missing field {name!r} (the {role})")
    return record


def read_schema_file(text: str) -> dict[str, Any]:
    """The schema ``--schema`` names: an .avsc file, or a schema shipped in connectors/schemas/."""
    path = Path(text)
    try:
        if not path.is_file() and path.suffix == "" and "/" not in text:
            return load_schema(text)
        schema = json.loads(path.read_text())
        validate_schema(schema)
    except OSError as exc:
        raise BridgeSchemaError(f"cannot read the schema file {text}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise BridgeSchemaError(f"the schema file {text} is not JSON: {exc}") from None
    except SchemaError as exc:
        raise BridgeSchemaError(f"--schema {text}: {exc}") from None
    return schema


def check_roles(schema: dict[str, Any], where: str) -> None:
    """BridgeSchemaError unless ``schema`` names an entity field and a timestamp-millis time field."""
    fields = {f["name"]: f for f in schema["fields"]}
    names = ", ".join(fields)
    r = roles(schema)
    for role, attr in (("entity", "vigil.entity"), ("time", "vigil.time")):
        if not r[role]:
            what = "id" if role == "entity" else "event-time"
            raise BridgeSchemaError(f'{where} declares no {attr}: add "{attr}": "<field>" to the record, '
                                    f"naming its {what} field (fields: {names})")
        if r[role] not in fields:
            raise BridgeSchemaError(f"{where}: {attr} names {r[role]!r}, not one of its fields ({names})")
    if field_type(fields[r["time"]])[2] != "timestamp-millis":
        raise BridgeSchemaError(f"{where}: the time field {r['time']!r} must be "
                                f'{{"type": "long", "logicalType": "timestamp-millis"}}')
    if field_type(fields[r["entity"]])[0] not in ("string", "int", "long"):
        raise BridgeSchemaError(f"{where}: the entity field {r['entity']!r} must be a string or an integer")


def _same_layout(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return fingerprint(a) == fingerprint(b) and roles(a) == roles(b)


class MqttBridge:
    """Subscribe, convert, produce, acknowledge. ``run()`` blocks until ``stop()`` or a limit."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.forwarded = 0
        self.dead_letters = 0
        self._stop = threading.Event()
        self._error: str | None = None
        self._schema: dict[str, Any] | None = None

    def prepare(self) -> dict[str, Any]:
        """Check Kafka, choose the schema (registered, else ``--schema``), create the topics.

        Raises BridgeSchemaError, before creating anything, when the topic has no registered schema and
        none is given, when the given one differs from the registered one, or when the schema lacks
        the entity or time role.
        """
        s = self.settings
        check_broker(s.bootstrap_servers)
        registered = schema_store.lookup(s.bootstrap_servers, s.topic)
        given = read_schema_file(s.schema_file) if s.schema_file else None
        if registered is not None:
            if given is not None and not _same_layout(given, registered):
                raise BridgeSchemaError(
                    f"topic {s.topic!r} is registered with schema {schema_id(registered)} (entity "
                    f"{roles(registered)['entity']!r}, time {roles(registered)['time']!r}), not --schema "
                    f"{s.schema_file}'s {schema_id(given)}: one topic holds one record layout; leave --schema out "
                    f"to use the registered one, or bridge into a new --topic")
            if payload_format(registered) != "avro":
                raise BridgeSchemaError(f"topic {s.topic!r} is registered for {payload_format(registered)} "
                                        f"records; the bridge writes Vigil's Avro: bridge into another --topic")
            check_roles(registered, f"the registered schema of topic {s.topic!r}")
            schema = registered
        elif given is not None:
            check_roles(given, f"--schema {s.schema_file}")
            schema = given
        else:
            raise BridgeSchemaError(
                f"topic {s.topic!r} has no registered schema, so the bridge cannot tell what a reading holds: "
                f"pass --schema FILE.avsc (an Avro record schema whose vigil.entity and vigil.time name its id "
                f"and event-time fields; telemetry-v1 for the vehicle schema), or register the topic's schema "
                f"first (vigil register {s.topic} --schema FILE.avsc detects the roles by name)")
        create_topic(s.bootstrap_servers, s.topic, s.partitions)
        create_topic(s.bootstrap_servers, s.dlq_topic, 1)
        if registered is None:
            schema_store.register(s.bootstrap_servers, s.topic, schema)
        self._schema = schema
        return schema

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_messages: int | None = None, ready: threading.Event | None = None) -> None:
        import paho.mqtt.client as mqtt

        from connectors.privacy import payload_key, pseudonym, seal

        s = self.settings
        schema = self._schema or self.prepare()
        secret = read_pseudonym_secret(s.secret_file)
        aes = payload_key(secret)
        serialize = AvroSerializer(schema)
        headers = [(SCHEMA_HEADER, schema_id(schema).encode())]
        entity = roles(schema)["entity"]
        time_col = roles(schema)["time"]
        producer = Producer({**client_config(s.bootstrap_servers), "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5})
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

            ts = (record[time_col] - _EPOCH) // dt.timedelta(milliseconds=1)
            producer.produce(s.topic, key=str(record[entity]).encode(), value=value,
                             headers=headers, timestamp=ts, on_delivery=on_delivery)

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
        if s.mqtt_username and s.mqtt_password:
            client.username_pw_set(s.mqtt_username, s.mqtt_password.get_secret_value())
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
    try:
        schema = bridge.prepare()
    except BridgeSchemaError as exc:  # bad input, like a bad flag: exit code 2
        raise OptionsError(str(exc)) from None
    r = roles(schema)
    print(f"bridging {options.mqtt_topic!r} -> {options.topic!r} with schema {schema_id(schema)} "
          f"(entity {r['entity']!r}, time {r['time']!r})", flush=True)
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
