"""Avro schemas kept in this repo and schemaless Avro (de)serialisation.

Records travel as *schemaless* Avro binary (no container header, no registry prefix): exactly what
Flink's ``'format' = 'avro'`` reads and writes. The writer schema is identified by the Kafka header
``vigil.schema`` (``<full name>@<fingerprint>``) and, for any topic, by the schema store
(connectors/schema_store.py).

Schemas carry record-level attributes that tell later stages what each column means:
``vigil.entity`` (the id column, also the Kafka key), ``vigil.time`` (event time) and
``vigil.label`` (optional failure label). Every other numeric column is a feature.

They also carry the domain facts of their record type, so that every stage reads them from one
place: ``vigil.range`` on a numeric field (its physical range: the simulator stays inside it, the
expectation suite checks it), ``vigil.values`` on the label field (the failure modes) and the
record-level ``vigil.derived`` (derived features: Flink SQL expressions over the fields).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
from importlib import resources
from typing import Any

import fastavro

from connectors.errors import DecodeError, SchemaError

SCHEMA_HEADER = "vigil.schema"
TELEMETRY_SCHEMA_NAME = "telemetry-v1"
NUMERIC_TYPES = {"double", "float", "int", "long"}


def load_schema(name: str = TELEMETRY_SCHEMA_NAME) -> dict[str, Any]:
    """Load ``connectors/schemas/<name>.avsc`` as a plain dict (validated by fastavro)."""
    try:
        text = resources.files("connectors").joinpath("schemas", f"{name}.avsc").read_text()
    except FileNotFoundError as exc:
        raise SchemaError(f"no schema named {name!r} in connectors/schemas/") from exc
    schema = json.loads(text)
    validate_schema(schema)
    return schema


def validate_schema(schema: dict[str, Any]) -> None:
    """Raise SchemaError unless ``schema`` is a valid Avro record schema."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError("an Avro schema of type 'record' is required")
    try:
        fastavro.parse_schema(copy.deepcopy(schema))
    except Exception as exc:  # fastavro raises several exception types
        raise SchemaError(f"invalid Avro schema {schema.get('name')!r}: {exc}") from exc


def fingerprint(schema: dict[str, Any]) -> str:
    """Short, stable fingerprint of the schema's canonical form (first 16 hex of its SHA-256)."""
    canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(schema)))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def schema_id(schema: dict[str, Any]) -> str:
    """The value of the ``vigil.schema`` header: ``<namespace.name>@<fingerprint>``."""
    full = ".".join(p for p in (schema.get("namespace"), schema["name"]) if p)
    return f"{full}@{fingerprint(schema)}"


def _base_type(field: dict[str, Any]) -> str | None:
    """The primitive type of a field with a primitive or ["null", T] type, else None."""
    try:
        return field_type(field)[0]
    except (SchemaError, KeyError, TypeError):
        return None


def field_type(field: dict[str, Any]) -> tuple[str, bool, str | None]:
    """(base type, nullable, logicalType) of an Avro field with a primitive or ["null", T] type."""
    t = field["type"]
    nullable = False
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        if len(non_null) != 1:
            raise SchemaError(f"field {field['name']!r}: only [\"null\", T] unions are supported")
        nullable = "null" in t
        t = non_null[0]
    if isinstance(t, dict):
        return t["type"], nullable, t.get("logicalType")
    return t, nullable, None


def roles(schema: dict[str, Any]) -> dict[str, str | None]:
    """The entity, time and label column names declared on the schema (None where absent)."""
    return {r: schema.get(f"vigil.{r}") for r in ("entity", "time", "label")}


def feature_columns(schema: dict[str, Any]) -> list[str]:
    """Numeric columns in schema order, leaving out the entity, time and label columns."""
    special = {v for v in roles(schema).values() if v}
    out = []
    for field in schema["fields"]:
        base, _, logical = field_type(field)
        if field["name"] not in special and base in NUMERIC_TYPES and logical is None:
            out.append(field["name"])
    return out


def _ranges(schema: dict[str, Any], kind: type) -> dict[str, tuple[Any, Any]]:
    out = {}
    for field in schema["fields"]:
        bounds = field.get("vigil.range")
        if bounds is None:
            continue
        if not (isinstance(bounds, list) and len(bounds) == 2 and type(bounds[0]) is type(bounds[1])
                and bounds[0] <= bounds[1]):
            raise SchemaError(f"field {field['name']!r}: vigil.range must be [low, high], got {bounds!r}")
        if kind is float and isinstance(bounds[0], (int, float)) and not isinstance(bounds[0], bool):
            out[field["name"]] = (float(bounds[0]), float(bounds[1]))
        elif kind is str and isinstance(bounds[0], str):
            out[field["name"]] = (bounds[0], bounds[1])
    return out


def physical_ranges(schema: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{field: (low, high)}`` for every numeric field with a ``vigil.range``, in schema order."""
    return _ranges(schema, float)


def plausible_times(schema: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """``{field: (first, last)}`` ISO times for every timestamp field with a ``vigil.range``."""
    return _ranges(schema, str)


def label_values(schema: dict[str, Any]) -> tuple[str, ...]:
    """The allowed values of the label column (``vigil.values``); empty when none are declared."""
    label = roles(schema)["label"]
    for field in schema["fields"]:
        if field["name"] == label:
            return tuple(field.get("vigil.values") or ())
    return ()


_SQL_WORDS = {"least", "greatest", "sqrt", "abs", "power", "case", "when", "then", "else", "end", "and", "or",
              "not", "null", "is", "cast", "as", "double"}


def derived_features(schema: dict[str, Any], columns: list[str] | None = None) -> dict[str, str]:
    """``{name: Flink SQL expression}`` of the schema's derived features (``vigil.derived``).

    With ``columns``, only those whose every input column is among them.
    """
    import re

    derived = dict(schema.get("vigil.derived") or {})
    if columns is None:
        return derived
    present = set(columns)
    return {name: expr for name, expr in derived.items()
            if {t for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr) if t.lower() not in _SQL_WORDS} <= present}


class AvroSerializer:
    """dict -> schemaless Avro bytes for one schema. Raises ValueError naming the bad field."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._parsed = fastavro.parse_schema(copy.deepcopy(schema))

    def __call__(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self._parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"record does not match schema {self.schema['name']}: {exc}") from exc
        return buf.getvalue()


class AvroDeserializer:
    """Schemaless Avro bytes -> dict. Raises DecodeError for truncated, garbage or trailing bytes."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._parsed = fastavro.parse_schema(copy.deepcopy(schema))
        # fastavro reads an int's varint to any width; a value beyond 32 bits is not an Avro int
        self._ints = [f["name"] for f in schema.get("fields", []) if _base_type(f) == "int"]

    def __call__(self, payload: bytes) -> dict[str, Any]:
        buf = io.BytesIO(payload)
        try:
            record = fastavro.schemaless_reader(buf, self._parsed, None)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, ... all mean "not this schema"
            raise DecodeError(f"cannot decode {len(payload)} bytes as {self.schema['name']}: {exc!r}") from exc
        if buf.tell() != len(payload):
            raise DecodeError(
                f"{len(payload) - buf.tell()} trailing bytes after a {self.schema['name']} record "
                f"(wrong schema version?)"
            )
        for name in self._ints:
            value = record.get(name)
            if value is not None and not -2**31 <= value < 2**31:
                raise DecodeError(f"cannot decode {len(payload)} bytes as {self.schema['name']}: "
                                  f"{name}={value} does not fit an Avro int (32 bits)")
        return record
