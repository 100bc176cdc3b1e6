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
        import pyarrow as pa
        from pyflink.table.types import to_arrow_type

        from connectors.avro_serde import AvroDeserializer, feature_columns, field_type, roles, schema_id
        from connectors.flink_kafka import physical_columns

        # Timestamps are read as their raw epoch millis (the logical type dropped from the reader
        # schema) and converted column-wise: building a datetime per record costs more than decoding it.
        self._timestamps = [f["name"] for f in self.schema["fields"] if field_type(f)[2] == "timestamp-millis"]

        def raw(t: Any) -> Any:
            return [raw(x) for x in t] if isinstance(t, list) else (t["type"] if isinstance(t, dict) else t)

        reader = {**self.schema, "fields": [{**f, "type": raw(f["type"])} if f["name"] in self._timestamps else f
                                            for f in self.schema["fields"]]}
        self._decode = AvroDeserializer(reader)
        self._schema_id = schema_id(self.schema)
        self._schema_header = self._schema_id.encode()
        role = roles(self.schema)
        self._entity = role["entity"]
        self._out = [name for name, _ in output_columns(self.schema)][:-1]
        self._features = feature_columns(self.schema)
        # The Arrow type of each decoded column (from the same Avro -> Flink type mapping the sources
        # use; timestamps as their raw millis), so a batch becomes columns in one C call.
        self._arrow_schema = pa.schema([(name, pa.int64() if name in self._timestamps else to_arrow_type(dtype))
                                        for name, dtype in physical_columns(self.schema)])
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
        import pyarrow as pa
        import pyarrow.compute as pc

        records: list[dict[str, Any]] = []
        errors: list[str | None] = []
        headers = schema_ids if schema_ids is not None else [None] * len(payloads)
        decode, expected = self._decode, self._schema_header
        for payload, header in zip(payloads, headers):
            if payload is None:
                records.append({})
                errors.append("undecodable: empty payload")
                continue
            if header is not None and header != expected and bytes(header) != expected:
                records.append({})
                errors.append(f"undecodable: written with schema {bytes(header).decode(errors='replace')}, "
                              f"this job reads {self._schema_id}")
                continue
            try:
                records.append(decode(bytes(payload)))
            except ValueError as exc:  # DecodeError
                records.append({})
                errors.append(f"undecodable: {exc}"[:500])
                continue
            errors.append(None)
        # Records that failed to decode are empty dicts: every column null for them.
        table = pa.Table.from_pylist(records, schema=self._arrow_schema)
        if self._features and table.num_rows:
            # Null (absent) values are the expectation suite's business; NaN and inf are impossible.
            # Arrow keeps null and NaN apart (pandas would turn None into NaN and hide the difference).
            bad_cols = {f: pc.fill_null(pc.invert(pc.is_finite(table.column(f))), False).to_numpy(zero_copy_only=False)
                        for f in self._features}
            bad = np.column_stack(list(bad_cols.values()))
            for i in np.flatnonzero(bad.any(axis=1)):
                if errors[i] is None:
                    cols = [f"{f}={table.column(f)[i].as_py()}" for f, b in bad_cols.items() if b[i]]
                    errors[i] = "impossible_value: " + ", ".join(cols)
        frame = table.to_pandas()
        if self._entity:
            frame[self._entity] = [None if e is None else self._pseudonym(str(e)) for e in frame[self._entity]]
        for name in self._timestamps:
            # Arrow needs naive UTC datetimes for TIMESTAMP(3)
            frame[name] = pd.to_datetime(frame[name], unit="ms")
        frame.columns = self._out
        frame["error"] = pd.Series(errors, dtype=object)
        self._dead.inc(sum(e is not None for e in errors))
        return frame


def decode_udf(schema: dict[str, Any], pseudonym_secret: bytes) -> Any:
    """The Flink UDF: ``decode_udf(schema, secret)(payload, schema_header)`` -> ROW (see output_columns)."""
    row = DataTypes.ROW([DataTypes.FIELD(name, dtype) for name, dtype in output_columns(schema)])
    return udf(DecodeTelemetry(schema, pseudonym_secret), result_type=row, func_type="pandas")
