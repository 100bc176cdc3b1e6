"""Decode and pseudonymise raw Kafka payloads inside the Python worker, keeping errors as data.

``DecodeTelemetry`` turns each Avro payload into the schema's columns, replaces the entity id (the
vehicle id) by a keyed pseudonym, and flags readings that cannot be real. It never raises for a
bad record: the ``error`` column says why the row is unusable and every other column is null, so
the scoring jobs can route the original bytes to the dead-letter topic.

Errors (prefix = the DLQ reason):
* ``undecodable: ...``: truncated or random bytes, trailing bytes (a wrong schema version), or a
  record of another schema (see the ``vigil.schema`` header);
* ``impossible_value: col=value, ...``: NaN or infinite numbers, which no sensor reports.

Range, not-null and allowed-value checks are the expectation suite's job (udfs/validate_features).
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf


def pseudonym(secret: bytes, entity: str) -> str:
    """Stable keyed pseudonym: ``p-`` + 20 hex of HMAC-SHA256(secret, entity).

    Without the secret the mapping cannot be reversed or recomputed; with it, the same entity
    always gets the same pseudonym, so per-vehicle state and history still line up.
    """
    return "p-" + hmac.new(secret, entity.encode(), hashlib.sha256).hexdigest()[:20]


def output_columns(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, Flink type) of DecodeTelemetry's result row: the schema's fields (entity renamed to
    ``<entity>_pseudonym``), all nullable, then ``error``."""
    from connectors.flink_kafka import physical_columns
    from connectors.avro_serde import roles

    entity = roles(schema)["entity"]
    cols = [(f"{name}_pseudonym" if name == entity else name, dtype.nullable())
            for name, dtype in physical_columns(schema)]
    return [*cols, ("error", DataTypes.STRING())]


class DecodeTelemetry(ScalarFunction):
    """Vectorized: a Series of Avro payloads -> a DataFrame of decoded, pseudonymised columns."""

    def __init__(self, schema: dict[str, Any], pseudonym_secret: bytes) -> None:
        self.schema = schema
        self._secret = pseudonym_secret  # never logged; travels pickled inside the job graph only

    def __repr__(self) -> str:  # keep the secret out of logs and plans
        return f"DecodeTelemetry(schema={self.schema.get('name')!r})"

    def open(self, function_context: FunctionContext | None) -> None:
        from connectors.avro_serde import AvroDeserializer, feature_columns, field_type, roles, schema_id

        self._decode = AvroDeserializer(self.schema)
        self._schema_id = schema_id(self.schema)
        role = roles(self.schema)
        self._entity = role["entity"]
        self._time = role["time"]
        self._names = [f["name"] for f in self.schema["fields"]]
        self._out = [name for name, _ in output_columns(self.schema)][:-1]
        self._features = feature_columns(self.schema)
        self._feature_idx = [self._names.index(f) for f in self._features]
        self._timestamps = [f["name"] for f in self.schema["fields"] if field_type(f)[2] == "timestamp-millis"]
        self._cache: dict[str, str] = {}
        from udfs import metrics

        self._dead = metrics.counter(metrics.group(function_context), "dead_letters")

    def _pseudonym(self, entity: str) -> str:
        value = self._cache.get(entity)
        if value is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            value = self._cache[entity] = pseudonym(self._secret, entity)
        return value

    def eval(self, payloads: pd.Series, schema_ids: pd.Series | None = None) -> pd.DataFrame:
        """``schema_ids``: the ``vigil.schema`` header of each record (bytes or None), if known."""
        rows: list[list[Any]] = []
        errors: list[str | None] = []
        empty = [None] * len(self._names)
        headers = schema_ids if schema_ids is not None else [None] * len(payloads)
        for payload, header in zip(payloads, headers):
            if payload is None:
                rows.append(empty)
                errors.append("undecodable: empty payload")
                continue
            if header is not None and bytes(header).decode(errors="replace") != self._schema_id:
                rows.append(empty)
                errors.append(f"undecodable: written with schema {bytes(header).decode(errors='replace')}, "
                              f"this job reads {self._schema_id}")
                continue
            try:
                record = self._decode(bytes(payload))
            except ValueError as exc:  # DecodeError
                rows.append(empty)
                errors.append(f"undecodable: {exc}"[:500])
                continue
            rows.append([record[n] for n in self._names])
            errors.append(None)
        frame = pd.DataFrame(rows, columns=self._names)
        ok = np.array([e is None for e in errors])
        if len(frame) and self._features:
            # Null (absent) values are the expectation suite's business; NaN and inf are impossible.
            # Look at the decoded objects: pandas would turn None into NaN and hide the difference.
            raw = np.array(rows, dtype=object)[:, self._feature_idx]
            present = raw != None  # noqa: E711 - elementwise on an object array
            values = np.where(present, raw, np.nan).astype(np.float64)
            bad = present & ~np.isfinite(values)
            for i in np.flatnonzero(bad.any(axis=1) & ok):
                cols = [f"{self._features[j]}={values[i, j]}" for j in np.flatnonzero(bad[i])]
                errors[i] = "impossible_value: " + ", ".join(cols)
        if self._entity:
            frame[self._entity] = [None if e is None else self._pseudonym(str(e)) for e in frame[self._entity]]
        for col in self._timestamps:
            # Arrow needs naive UTC datetimes for TIMESTAMP(3)
            frame[col] = pd.to_datetime(frame[col], utc=True).dt.tz_localize(None)
        frame.columns = self._out
        frame["error"] = pd.Series(errors, dtype=object)
        self._dead.inc(sum(e is not None for e in errors))
        return frame


def decode_udf(schema: dict[str, Any], pseudonym_secret: bytes) -> Any:
    """The Flink UDF: ``decode_udf(schema, secret)(payload, schema_header)`` -> ROW (see output_columns)."""
    row = DataTypes.ROW([DataTypes.FIELD(name, dtype) for name, dtype in output_columns(schema)])
    return udf(DecodeTelemetry(schema, pseudonym_secret), result_type=row, func_type="pandas")
