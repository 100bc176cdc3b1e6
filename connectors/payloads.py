"""Record values in the formats Vigil reads: its own schemaless Avro, Confluent's wire format, JSON.

A topic's format is part of its registered schema (``vigil.format``; connectors/schema_store.py):

* ``avro`` (the default): schemaless Avro, what Vigil's producers write, tagged with the
  ``vigil.schema`` header (``<name>@<fingerprint>``). A record whose header names another schema is
  refused; a record without the header is read with the registered schema (a plain Avro producer
  that knows nothing of Vigil);
* ``confluent``: Confluent's wire format, a magic byte 0 and a 4-byte big-endian schema id before
  the Avro body. ``vigil.confluent_id`` (optional) is the id the registered schema has in the
  producer's registry; records with another id are refused;
* ``json``: one JSON object per record, with the schema's fields (times as ISO 8601 or epoch
  milliseconds); numbers are coerced to the field's type, a missing required field is an error.

``PayloadDecoder(schema)(value, header)`` returns the record as a dict in the shape fastavro gives
(timestamps as epoch millis when ``raw_times``) or raises DecodeError saying why.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import struct
import sys
from typing import Any

from connectors.avro_serde import AvroDeserializer, field_type, schema_id
from connectors.errors import DecodeError, SchemaError

FORMATS = ("avro", "confluent", "json")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def payload_format(schema: dict[str, Any]) -> str:
    fmt = schema.get("vigil.format", "avro")
    if fmt not in FORMATS:
        raise SchemaError(f"schema {schema.get('name')!r}: vigil.format must be one of {FORMATS}, got {fmt!r}")
    return fmt


def _raw_time_reader(schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The schema with timestamp-millis fields read as their raw longs, and those fields' names."""
    times = [f["name"] for f in schema["fields"] if field_type(f)[2] == "timestamp-millis"]

    def raw(t: Any) -> Any:
        return [raw(x) for x in t] if isinstance(t, list) else (t["type"] if isinstance(t, dict) else t)

    return {**schema, "fields": [{**f, "type": raw(f["type"])} if f["name"] in times else f
                                 for f in schema["fields"]]}, times


class PayloadDecoder:
    """Decode one topic's record values; see the module docstring. Raises DecodeError, never anything else."""

    def __init__(self, schema: dict[str, Any], *, raw_times: bool = True) -> None:
        self.schema = schema
        self.format = payload_format(schema)
        self.schema_id = schema_id(schema)
        self._header = self.schema_id.encode()
        reader, self._times = _raw_time_reader(schema) if raw_times else (schema, [])
        self._raw_times = raw_times
        self._avro = AvroDeserializer(reader) if self.format != "json" else None
        self._confluent_id = schema.get("vigil.confluent_id")

    def __call__(self, value: bytes | None, header: bytes | None = None) -> dict[str, Any]:
        if value is None:
            raise DecodeError("empty payload")
        if header is not None and bytes(header) != self._header:
            raise DecodeError(f"written with schema {bytes(header).decode(errors='replace')}, this job reads "
                              f"{self.schema_id}")
        value = bytes(value)
        if self.format == "avro":
            return self._avro(value)
        if self.format == "confluent":
            if len(value) < 5 or value[0] != 0:
                raise DecodeError(f"not Confluent's wire format (magic byte {value[:1].hex() or 'missing'}, "
                                  f"expected 00)")
            (written_id,) = struct.unpack(">I", value[1:5])
            if self._confluent_id is not None and written_id != int(self._confluent_id):
                raise DecodeError(f"written with registry schema id {written_id}, this topic is registered "
                                  f"with id {self._confluent_id}")
            return self._avro(value[5:])
        return self._json(value)

    def _json(self, value: bytes) -> dict[str, Any]:
        data = parse_json(value)
        if not isinstance(data, dict):
            raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
        return json_record(data, self.schema, raw_times=self._raw_times)


# JSON nested deeper than this is refused: Python's parser raises RecursionError near 1000 levels,
# and the JVM decode (connectors/jvm) refuses the same depth with the same reason.
MAX_DEPTH = 990
_NESTED = f"nested deeper than {MAX_DEPTH} levels"
_INT_RANGE = {"int": (-2**31, 2**31 - 1), "long": (-2**63, 2**63 - 1)}


def _too_deep(text: str) -> int | None:
    """Where ``text`` opens its array or object number MAX_DEPTH + 1 in depth, or None (strings skipped)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth, in_string, escaped = 0, False, False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return i
        elif c in "]}":
            depth -= 1
    return None


def parse_json(value: bytes) -> Any:
    """``json.loads(value)``, every failure a DecodeError: ``not JSON: ...``, or nesting deeper than
    MAX_DEPTH (where Python's parser would raise RecursionError)."""
    deep_at = None
    try:
        text = value.decode(json.detect_encoding(value), "surrogatepass")  # as json.loads(bytes) does
        deep_at = _too_deep(text)
        data = _loads(text)
    except RecursionError:
        raise DecodeError(_NESTED) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if deep_at is not None and getattr(exc, "pos", -1) > deep_at:  # the JVM's parser stops there first
            raise DecodeError(_NESTED) from None
        raise DecodeError(f"not JSON: {exc}") from None
    if deep_at is not None:
        raise DecodeError(_NESTED)
    return data


def _loads(text: str) -> Any:
    """``json.loads``; a document with many brackets is parsed with room for MAX_DEPTH levels above
    the caller's stack, so whether it parses does not depend on how deep that stack is."""
    if text.count("[") + text.count("{") <= 100:
        return json.loads(text)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2 * MAX_DEPTH)
    try:
        return json.loads(text)
    finally:
        sys.setrecursionlimit(limit)


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: each lone surrogate (which JSON can spell) becomes '?', as the
    JVM's UTF-8 encoder writes it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text


def json_record(data: dict[str, Any], schema: dict[str, Any], *, raw_times: bool = True) -> dict[str, Any]:
    """A JSON object as a record of ``schema`` (DecodeError naming the field that does not fit).

    Values a column cannot hold are refused here, each with the JVM decode's reason: integers out
    of an int or long field's range or too large for a float, non-strings in a bytes field, and an
    entity id with a lone surrogate (it has no UTF-8 form to pseudonymise; other strings get '?')."""
    entity = schema.get("vigil.entity")
    lone_entity = False
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        base, nullable, logical = field_type(field)
        value = data.get(name)
        if value is None:
            if nullable:
                record[name] = None
                continue
            raise DecodeError(f"missing field {name!r}")
        if logical == "timestamp-millis":
            value = _millis(name, value)
            if not raw_times:
                try:
                    value = _EPOCH + dt.timedelta(milliseconds=value)
                except OverflowError:  # beyond datetime's years 1..9999
                    raise DecodeError(f"{name}: time out of range") from None
            record[name] = value
            continue
        if base in ("double", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DecodeError(f"{name}: expected a number, got {value!r}")
            try:
                value = float(value)
            except OverflowError:
                raise DecodeError(f"{name}: int too large to convert to float") from None
        elif base in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise DecodeError(f"{name}: expected an integer, got {value!r}")
            low, high = _INT_RANGE[base]
            if not low <= value <= high:
                raise DecodeError(f"{name}: {value} does not fit the field's type {base}")
        elif base == "boolean":
            if not isinstance(value, bool):
                raise DecodeError(f"{name}: expected true or false, got {value!r}")
        elif base == "string":
            text = str(value)
            value = _utf8(text)
            lone_entity = lone_entity or (name == entity and value != text)
        elif base == "bytes":
            if not isinstance(value, str):
                raise DecodeError(f"{name}: expected a string for a bytes field, got {value!r}")
            value = value.encode("utf-8", "replace")
        record[name] = value
    if lone_entity:  # after every field, as the JVM decode checks it
        raise DecodeError(f"{entity} is not encodable as UTF-8 (a lone surrogate)")
    return record


def _millis(name: str, value: Any) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise DecodeError(f"{name}: {value!r} is not a time")
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DecodeError(f"{name}: cannot parse time {value!r}") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return (parsed - _EPOCH) // dt.timedelta(milliseconds=1)
