"""Decode and pseudonymise raw Kafka payloads inside the Python worker, keeping errors as data.

``DecodeTelemetry`` turns each Avro payload into the schema's columns, replaces the entity id (the
vehicle id) by a keyed pseudonym, and flags readings that cannot be real. It never raises for a
bad record: the ``error`` column says why the row is unusable and every other column is null, so
the scoring jobs can route the original bytes to the dead-letter topic.

Errors (prefix = the DLQ reason):
* ``undecodable: ...``: truncated or random bytes, trailing bytes (a wrong schema version), or a
  record of another schema (see the ``vigil.schema`` header);
* ``impossible_value: col=value, ...``: NaN or infinite numbers, which no sensor reports, and
  timestamps outside what a SQL TIMESTAMP holds (years 1..9999; Avro's long allows far more).

Timestamps become ``datetime64[ms]`` (not pandas' default nanoseconds, which end in 2262), so any
time a SQL TIMESTAMP holds decodes; whether it is *plausible* is the expectation suite's call.

Range, not-null and allowed-value checks are the expectation suite's job (udfs/validate_features).

The pseudonymisation secret never travels with the function: the job ships the *path* of the
secret file, and each worker reads the secret in ``open()`` (``VIGIL_PSEUDONYM_SECRET`` in the
TaskManager's environment wins; see vigil.settings.read_pseudonym_secret).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from connectors.privacy import pseudonym

SQL_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z: the range of a SQL TIMESTAMP, in epoch millis
SQL_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def output_columns(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, Flink type) of DecodeTelemetry's result row: the decoded columns of the record
    contract (connectors.records: the schema's fields, the entity as ``<entity>_pseudonym``, all
    nullable), then ``error``."""
    from connectors.records import decoded_columns

    return [*((c.name, c.type) for c in decoded_columns(schema)), ("error", DataTypes.STRING())]


class DecodeTelemetry(ScalarFunction):
    """Vectorized: a Series of Avro payloads -> a DataFrame of decoded, pseudonymised columns.

    ``secret_file``: where the workers read the pseudonymisation secret (a path, not the secret).
    """

    def __init__(self, schema: dict[str, Any], secret_file: str | None) -> None:
        self.schema = schema
        self.secret_file = secret_file

    def __repr__(self) -> str:
        return f"DecodeTelemetry(schema={self.schema.get('name')!r})"

    def open(self, function_context: FunctionContext | None) -> None:
        import pyarrow as pa
        from pyflink.table.types import to_arrow_type

        from connectors.avro_serde import feature_columns, field_type, roles
        from connectors.flink_kafka import physical_columns
        from connectors.payloads import PayloadDecoder

        # Timestamps are read as their raw epoch millis and converted column-wise: building a
        # datetime per record costs more than decoding it. The topic's registered format (Vigil's
        # Avro, Confluent's wire format, JSON) is the decoder's business (connectors/payloads.py).
        self._timestamps = [f["name"] for f in self.schema["fields"] if field_type(f)[2] == "timestamp-millis"]
        self._decode = PayloadDecoder(self.schema, raw_times=True)
        self._json_times = self._timestamps if self._decode.format == "json" else []  # Avro's are 64-bit
        role = roles(self.schema)
        self._entity = role["entity"]
        self._out = [name for name, _ in output_columns(self.schema)][:-1]
        self._features = feature_columns(self.schema)
        # The Arrow type of each decoded column (from the same Avro -> Flink type mapping the sources
        # use; timestamps as their raw millis), so a batch becomes columns in one C call.
        self._arrow_schema = pa.schema([(name, pa.int64() if name in self._timestamps else to_arrow_type(dtype))
                                        for name, dtype in physical_columns(self.schema)])
        from vigil.settings import read_pseudonym_secret

        self._secret = read_pseudonym_secret(self.secret_file)
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
        decode = self._decode
        beyond: dict[tuple[int, str], int] = {}  # JSON times past 64 bits of millis, by (row, column)
        for payload, header in zip(payloads, headers):
            try:
                record = decode(payload, header)
            except ValueError as exc:  # DecodeError: bytes, header or format that are not this topic's
                records.append({})
                errors.append(f"undecodable: {exc}"[:500])
                continue
            for name in self._json_times:
                millis = record[name]
                if millis is not None and not INT64_MIN <= millis <= INT64_MAX:  # e.g. 1e300: out of range below
                    beyond[len(records), name] = millis
                    record[name] = SQL_MAX_MS + 1 if millis > 0 else SQL_MIN_MS - 1
            records.append(record)
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
        for name in self._timestamps:
            millis = table.column(name)
            outside = pc.fill_null(pc.or_(pc.less(millis, SQL_MIN_MS), pc.greater(millis, SQL_MAX_MS)), False)
            for i in np.flatnonzero(outside.to_numpy(zero_copy_only=False)):
                if errors[i] is None:
                    errors[i] = (f"impossible_value: {name}={beyond.get((i, name), millis[i].as_py())} ms "
                                 "is outside the years 1..9999")
            # naive UTC datetimes of millisecond unit: the TIMESTAMP(3) the job declares, any year 1..9999
            kept = pc.if_else(outside, pa.scalar(None, pa.int64()), millis).cast(pa.timestamp("ms"))
            table = table.set_column(table.schema.get_field_index(name), name, kept)
        frame = table.to_pandas(coerce_temporal_nanoseconds=False)
        if self._entity:
            frame[self._entity] = [None if e is None else self._pseudonym(str(e)) for e in frame[self._entity]]
        frame.columns = self._out
        frame["error"] = pd.Series(errors, dtype=object)
        self._dead.inc(sum(e is not None for e in errors))
        return frame


def decode_udf(schema: dict[str, Any], secret_file: str | None) -> Any:
    """The Flink UDF: ``decode_udf(schema, secret_file)(payload, schema_header)`` -> ROW (see output_columns)."""
    row = DataTypes.ROW([DataTypes.FIELD(name, dtype) for name, dtype in output_columns(schema)])
    return udf(DecodeTelemetry(schema, secret_file), result_type=row, func_type="pandas")


class Pseudonymise(ScalarFunction):
    """PSEUDONYM(id): the keyed pseudonym of an entity id (null stays null), vectorized.

    For SQL, where the function is registered by name: the secret file comes from the job
    parameter ``vigil.pseudonym.secret-file`` (a path), the secret from that file or from
    ``VIGIL_PSEUDONYM_SECRET`` in the worker's environment.
    """

    def __init__(self, secret_file: str | None = None) -> None:
        self.secret_file = secret_file

    def open(self, function_context: FunctionContext | None) -> None:
        from vigil.settings import read_pseudonym_secret

        path = self.secret_file
        if path is None and function_context is not None:
            path = function_context.get_job_parameter("vigil.pseudonym.secret-file", "") or None
        self._secret = read_pseudonym_secret(path)
        self._cache: dict[str, str] = {}

    def eval(self, ids: pd.Series) -> pd.Series:
        out = []
        for entity in ids:
            if entity is None:
                out.append(None)
                continue
            value = self._cache.get(entity)
            if value is None:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                value = self._cache[entity] = pseudonym(self._secret, str(entity))
            out.append(value)
        return pd.Series(out, dtype=object)


# For SQL: CREATE TEMPORARY SYSTEM FUNCTION PSEUDONYM AS 'udfs.preprocess.pseudonymise' LANGUAGE PYTHON;
pseudonymise = udf(Pseudonymise(), result_type=DataTypes.STRING(), func_type="pandas")
