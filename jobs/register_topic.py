"""Make an existing topic trainable and scorable: register its schema, format and column roles.

    vigil register cars --schema car.avsc                       # plain Avro written by your producer
    vigil register cars --schema car.avsc --format confluent    # Confluent's wire format (magic byte + id)
    vigil register pumps --json-schema pump.schema.json         # JSON records

Vigil reads any topic whose schema is in its schema store (the compacted topic ``_vigil_schemas``).
Topics written by Vigil's own producers are registered by them; for a topic your producers write,
register the Avro schema they write with (``--schema``, an .avsc file) or a JSON Schema of the
JSON objects they send (``--json-schema``). Records then need no ``vigil.schema`` header (one that
names another schema is still refused), and bad records go to the dead-letter topic as usual.

The roles of the columns are detected from their names, as for replayed files, or named:
the entity (its id: the Kafka key, pseudonymised in every output; ``car``, ``vin``, ``device_id``,
``hostID`` ...), the event time (a timestamp-millis or epoch-milliseconds long field in Avro; ISO
8601 or epoch milliseconds in JSON), an optional failure label, and the features: every other
numeric field. The command prints what it chose and why, and stores the schema with those roles.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from connectors import schema_store
from connectors.avro_serde import feature_columns, field_type, schema_id, validate_schema
from connectors.errors import ConnectorError, SchemaError
from connectors.kafka_io import check_broker, describe_topic
from connectors.payloads import FORMATS
from jobs.replay.roles import looks_like_label, looks_like_time, pick_entity
from vigil.commands import Options, OptionsError, command, option
from vigil.settings import VigilSettings


class RegisterOptions(Options):
    topic: str = option(..., "the topic to register (it must exist)", argument=True, metavar="TOPIC")
    avro_schema: Path | None = option(None, "Avro schema (.avsc) the topic's records are written with",
                                      flag="--schema")
    json_schema: Path | None = option(None, "JSON Schema (draft 7 style: an object with typed properties) of the "
                                            "topic's JSON records")
    format: Literal["avro", "confluent"] | None = option(
        None, "how Avro records are framed: avro (plain) or confluent (magic byte 0 + 4-byte schema id)",
        show_default="avro with --schema, json with --json-schema")
    confluent_id: int | None = option(None, "with --format confluent: the only registry schema id to accept",
                                      show_default="any id")
    entity_column: str | None = option(None, "the id column (the Kafka key)", show_default="detected from names")
    time_column: str | None = option(None, "the event time column", show_default="detected from names and types")
    label_column: str | None = option(None, "a failure label column (null/absent = normal)",
                                      show_default="detected; none if no column looks like one")


def json_schema_to_avro(spec: dict[str, Any], topic: str) -> dict[str, Any]:
    """An Avro record schema for JSON objects described by a JSON Schema (flat, typed properties)."""
    if spec.get("type") != "object" or not isinstance(spec.get("properties"), dict):
        raise SchemaError("the JSON Schema must describe an object with 'properties'")
    required = set(spec.get("required") or [])
    fields = []
    for name, prop in spec["properties"].items():
        kinds = prop.get("type")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        nullable = "null" in kinds or name not in required
        kinds = [k for k in kinds if k != "null"]
        if len(kinds) != 1:
            raise SchemaError(f"property {name!r}: one type (plus null) is supported, got {prop.get('type')!r}")
        kind = kinds[0]
        if kind == "string" and prop.get("format") == "date-time" or kind == "integer" and prop.get(
                "format") in ("epoch-millis", "timestamp-millis"):
            avro: Any = {"type": "long", "logicalType": "timestamp-millis"}
        else:
            avro = {"number": "double", "integer": "long", "string": "string", "boolean": "boolean"}.get(kind)
            if avro is None:
                raise SchemaError(f"property {name!r}: type {kind!r} is not supported (number, integer, string, "
                                  f"boolean, date-time strings)")
        fields.append({"name": name, "type": ["null", avro] if nullable else avro,
                       **({"default": None} if nullable else {})})
    safe = "".join(c if c.isalnum() else "_" for c in topic)
    return {"type": "record", "name": safe, "namespace": "dev.vigil.registered", "fields": fields,
            "doc": spec.get("description") or f"JSON records of topic {topic}"}


def assign_roles(schema: dict[str, Any], o: RegisterOptions) -> tuple[dict[str, Any], list[str]]:
    """The schema with vigil.entity/time/label set, and one line per decision (what and why)."""
    fields = {f["name"]: f for f in schema["fields"]}
    notes = []

    def pick(option_value: str | None, role: str, test: Any, required: bool) -> str | None:
        if option_value:
            if option_value not in fields:
                raise OptionsError(f"--{role}-column {option_value!r} is not a field of the schema; fields: "
                                   f"{', '.join(fields)}")
            notes.append(f"{role}: {option_value} (as given)")
            return option_value
        if schema.get(f"vigil.{role}"):
            notes.append(f"{role}: {schema[f'vigil.{role}']} (declared in the schema)")
            return schema[f"vigil.{role}"]
        found = [n for n, f in fields.items() if test(n, f)]
        if found:
            notes.append(f"{role}: {found[0]} (its name{' and type' if role == 'time' else ''}"
                         f"{'; also candidates: ' + ', '.join(found[1:]) if found[1:] else ''})")
            return found[0]
        if required:
            raise OptionsError(f"no field looks like the {role} column; name it with --{role}-column "
                               f"(fields: {', '.join(fields)})")
        notes.append(f"{role}: none (no field's name looks like one)")
        return None

    def is_time(name: str, f: dict[str, Any]) -> bool:
        base, _, logical = field_type(f)
        return logical == "timestamp-millis" or (looks_like_time(name) and base == "long")

    if o.entity_column or schema.get("vigil.entity"):
        entity = pick(o.entity_column, "entity", lambda n, f: False, True)
    else:  # the same rule, and order, as a replayed file's columns (jobs/replay/roles.py)
        entity, why = pick_entity(list(fields))
        if entity is None:
            raise OptionsError(f"no field looks like the entity column; name it with --entity-column "
                               f"(fields: {', '.join(fields)})")
        notes.append(f"entity: {entity} ({why})")
    time_col = pick(o.time_column, "time", is_time, True)
    label = pick(o.label_column, "label", lambda n, f: looks_like_label(n) and field_type(f)[0] in (
        "string", "boolean", "int", "long"), False)
    base, nullable, logical = field_type(fields[time_col])
    if logical != "timestamp-millis":
        if base != "long":
            raise OptionsError(f"the time column {time_col!r} is {base}: Vigil reads event times as timestamp-millis "
                               f"or epoch-millisecond longs")
        # the same bytes, read as a time: a logical type does not change the encoding
        timestamp = {"type": "long", "logicalType": "timestamp-millis"}
        fields[time_col] = {**fields[time_col], "type": ["null", timestamp] if nullable else timestamp}
        notes.append(f"time: {time_col} holds epoch milliseconds (read as timestamp-millis)")
    if field_type(fields[entity])[0] not in ("string", "int", "long"):
        raise OptionsError(f"the entity column {entity!r} must be a string or an integer")
    out = {**schema, "fields": [fields[f["name"]] for f in schema["fields"]], "vigil.entity": entity,
           "vigil.time": time_col}
    if label:
        out["vigil.label"] = label
    else:
        out.pop("vigil.label", None)
    return out, notes


def run(settings: VigilSettings, o: RegisterOptions) -> int:
    if (o.avro_schema is None) == (o.json_schema is None):
        raise OptionsError("give the topic's schema: --schema file.avsc or --json-schema file.json")
    try:
        if o.avro_schema is not None:
            schema = json.loads(o.avro_schema.read_text())
            fmt = o.format or "avro"
        else:
            if o.format:
                raise OptionsError("--format frames Avro; JSON records need none")
            schema = json_schema_to_avro(json.loads(o.json_schema.read_text()), o.topic)
            fmt = "json"
    except (OSError, json.JSONDecodeError) as exc:
        raise OptionsError(f"cannot read the schema file: {exc}") from None
    validate_schema(schema)
    if o.confluent_id is not None and fmt != "confluent":
        raise OptionsError("--confluent-id applies to --format confluent only")
    schema, notes = assign_roles(schema, o)
    schema["vigil.format"] = fmt
    if o.confluent_id is not None:
        schema["vigil.confluent_id"] = o.confluent_id
    assert fmt in FORMATS
    validate_schema(schema)
    features = feature_columns(schema)
    if not features:
        raise OptionsError("the schema has no numeric field left as a feature once the roles are taken")
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    info = describe_topic(bootstrap, o.topic)
    schema_store.register(bootstrap, o.topic, schema)
    for note in notes:
        print(f"  {note}")
    print(f"  features: {', '.join(features)}")
    print(f"registered {o.topic} ({fmt}, {info.messages} record(s) now): schema {schema_id(schema)}; "
          f"train with: vigil train --topic {o.topic}")
    return 0


COMMAND = command("register", __doc__, run, options=RegisterOptions, settings_flags=("kafka.bootstrap_servers",),
                  expected_errors=(ConnectorError, SchemaError), prog="vigil register")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
