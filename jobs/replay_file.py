"""Replay a user's CSV or Parquet sensor file into a Kafka topic, so Vigil can watch their machines.

    python -m jobs.replay_file readings.csv --topic plant-a
    python -m jobs.replay_file readings.parquet --topic plant-a --speed 10 --columns temp,vibration

The file's columns are given roles, by option or by name and content:

* **time** (required): ``--time-column``, else the first column whose name looks like a time
  (time, timestamp, date, datetime, ts, epoch) and holds datetimes or text that parses as such; a
  numeric column so named counts as epoch seconds, millis, micros or nanos (told apart by magnitude).
  Naive times are taken as UTC. It becomes a ``long`` / ``timestamp-millis`` field and the Kafka
  record timestamp.
* **entity** (optional): ``--entity-column``, else a column named like id, machine, device, vehicle,
  unit, asset, sensor_id (``machineID``, ``unit_number``...). It becomes a string field and the Kafka
  key, so each entity's rows keep their file order within one partition. Without one, every row gets
  the constant ``--entity-id`` (default: the file stem) in a field named ``entity_id``.
* **label** (optional): ``--label-column``, else a column named like label, anomaly, failure, fault,
  target, class (``is_anomaly``, ``failure_type``, ``machine_failure``...). Kept as text, except that
  values meaning "normal" (``--normal-labels``, default 0, false, normal, ok, none, no; case-insensitive)
  become null: Vigil's convention is that a null label is a normal reading, anything else a failure.
* **features**: every other numeric (or boolean) column, in file order, as nullable doubles (gaps and
  NaN become null); ``--columns`` limits them. Other columns are left out with a warning.

Column names are sanitised to Avro names (letters, digits, underscore; not starting with a digit);
two columns that end up with the same name are an error. The schema (namespace ``dev.vigil.replay``,
named after the topic, with the record attributes ``vigil.entity``, ``vigil.time``, ``vigil.label``
and ``vigil.source``) is stored with connectors/schema_store.py before any record is written, which
is how training and scoring find the feature columns.

Rows go out in file order (never sorted). The file's structure and first chunk are checked before
anything is written; a bad row found later stops the replay after flushing, and the error says how
many records were already written and at which offsets.

Exit codes: 0 done, 2 bad input (file, columns, values, options), 1 broker or delivery problems,
130 interrupted. Expected errors print ``error: ...`` on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.tseries.api import guess_datetime_format
from tqdm import tqdm

from connectors import schema_store
from connectors.avro_serde import feature_columns, fingerprint, schema_id, validate_schema
from connectors.errors import BrokerUnavailable, ConnectorError, SchemaError
from connectors.kafka_io import AvroProducer, check_broker, end_offsets
from connectors.topics import create_topic, describe_topic

NAMESPACE = "dev.vigil.replay"
CONSTANT_ENTITY_FIELD = "entity_id"
FileFormat = Literal["csv", "parquet"]

_SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
}
_SNIFF_DELIMITERS = ",;\t|"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TIME_TOKENS = {"time", "timestamp", "timestamps", "date", "datetime", "ts", "epoch"}
_ENTITY_RE = re.compile(
    r"^(?:id|(?:machine|device|vehicle|unit|asset|equipment|engine)(?:_?(?:id|no|nr|num|number|name|key))?"
    r"|(?:sensor|entity|node|station|turbine|pump|robot)_?(?:id|no|nr|num|number|name|key))$"
)
_LABEL_RE = re.compile(
    r"^(?:[a-z0-9]+_)?(?:label|labels|anomaly|anomalous|failure|fault|target|class|outlier)"
    r"(?:_(?:label|type|flag|mode|class|status))?$"
)
_DECIMAL_COMMA_RE = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$|^[+-]?\d+$")
_AVRO_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class ReplayError(ValueError):
    """Bad input: the file, its columns or values, or an option. Exit code 2.

    ``written`` is how many records had already been delivered to Kafka when the problem was found
    (0 when it was found before producing anything); ``offsets`` maps partition -> (first, last)
    offset of what was written.
    """

    def __init__(self, message: str, *, written: int = 0,
                 offsets: dict[int, tuple[int, int]] | None = None) -> None:
        super().__init__(message)
        self.written = written
        self.offsets = offsets or {}


def _default_bootstrap() -> str:
    from stack.settings import StackSettings

    return StackSettings.from_env().bootstrap_servers


@dataclass(frozen=True)
class ReplaySettings:
    """Everything one replay needs; validated on construction (ReplayError names the bad value).

    ``speed``: 0 = as fast as possible, 1.0 = the file's own pace (gaps between consecutive
    timestamps), 10 = ten times faster; no single pause is longer than ``max_sleep_s`` seconds.
    ``chunk_size``: rows read, checked and converted at a time (also the unit in which a bad row
    stops a replay: rows of earlier chunks are written, none of the bad chunk).
    ``columns``: feature columns to keep (file names); None = every numeric column.
    """

    path: Path
    topic: str
    format: FileFormat | None = None
    time_column: str | None = None
    entity_column: str | None = None
    label_column: str | None = None
    entity_id: str | None = None
    normal_labels: tuple[str, ...] = ("0", "0.0", "false", "normal", "ok", "none", "no")
    columns: tuple[str, ...] | None = None
    sep: str | None = None
    speed: float = 0.0
    max_sleep_s: float = 10.0
    partitions: int = 3
    chunk_size: int = 50_000
    bootstrap_servers: str = field(default_factory=_default_bootstrap)
    broker_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not _TOPIC_RE.match(self.topic or ""):
            raise ReplayError(f"invalid topic name {self.topic!r}: use 1-249 letters, digits, '.', '_', '-'")
        if self.topic == schema_store.SCHEMA_TOPIC or self.topic.startswith("__"):
            raise ReplayError(f"topic {self.topic!r} is reserved; pick another --topic")
        if self.format is not None:
            fmt = str(self.format).lower()
            if fmt not in ("csv", "parquet"):
                raise ReplayError(f"format must be 'csv' or 'parquet', got {self.format!r}")
            object.__setattr__(self, "format", fmt)
        if self.sep is not None:
            sep = {"\\t": "\t", "tab": "\t"}.get(self.sep, self.sep)
            if len(sep) != 1 or sep in "\r\n\"":
                raise ReplayError(f"separator must be one character, got {self.sep!r}")
            object.__setattr__(self, "sep", sep)
        if self.columns is not None:
            cols = tuple(c.strip() for c in self.columns if c.strip())
            if not cols:
                raise ReplayError(f"--columns names no column: {self.columns!r}")
            object.__setattr__(self, "columns", cols)
        if self.entity_id is not None and not self.entity_id.strip():
            raise ReplayError(f"entity id must not be blank, got {self.entity_id!r}")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ReplayError(f"speed must be a finite number >= 0, got {self.speed!r}")
        if not (math.isfinite(self.max_sleep_s) and self.max_sleep_s > 0):
            raise ReplayError(f"max sleep must be > 0 seconds, got {self.max_sleep_s!r}")
        if self.partitions < 1:
            raise ReplayError(f"partitions must be >= 1, got {self.partitions!r}")
        if self.chunk_size < 1:
            raise ReplayError(f"chunk size must be >= 1, got {self.chunk_size!r}")
        if not self.broker_timeout_s > 0:
            raise ReplayError(f"broker timeout must be > 0 seconds, got {self.broker_timeout_s!r}")

    @property
    def resolved_format(self) -> FileFormat:
        """The given format, else the one the file's suffix names."""
        if self.format is not None:
            return self.format
        fmt = _SUFFIX_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ReplayError(
                f"cannot tell the format of {self.path} from its suffix {self.path.suffix!r}; "
                f"pass --format csv or --format parquet"
            )
        return fmt

    @property
    def constant_entity(self) -> str:
        """The entity id every row gets when the file has no entity column."""
        return self.entity_id or self.path.stem


# --- names -------------------------------------------------------------------------------------

def avro_name(name: str) -> str:
    """``name`` as a valid Avro name: accents dropped, other characters -> '_', no leading digit."""
    decomposed = unicodedata.normalize("NFKD", str(name))
    plain = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    out = re.sub(r"[^A-Za-z0-9_]", "_", plain) or "_"
    return f"_{out}" if out[0].isdigit() else out


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _looks_like_time(name: str) -> bool:
    return any(t in _TIME_TOKENS or t.endswith(("timestamp", "datetime")) for t in _tokens(name))


def _looks_like_entity(name: str) -> bool:
    return bool(_ENTITY_RE.match("_".join(_tokens(name))))


def _looks_like_label(name: str) -> bool:
    return bool(_LABEL_RE.match("_".join(_tokens(name))))


# --- column planning ---------------------------------------------------------------------------

ColumnKind = Literal["numeric", "bool", "datetime", "string", "other"]


def _kind_of_arrow(t: pa.DataType) -> ColumnKind:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_dictionary(t):
        return _kind_of_arrow(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return "other"


def _kind_of_series(s: pd.Series) -> ColumnKind:
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind_of_series(pd.Series(dtype.categories))
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        first = s.dropna()
        if len(first) and isinstance(first.iloc[0], Decimal):
            return "numeric"
        return "string"
    return "other"


def _first_value(s: pd.Series | None) -> Any:
    if s is None:
        return None
    non_null = s.dropna()
    return non_null.iloc[0] if len(non_null) else None


def _parses_as_time(value: Any) -> bool:
    for fmt in ("ISO8601", guess_datetime_format(str(value))):
        if fmt is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not pd.isna(pd.to_datetime(pd.Series([str(value)]), format=fmt, utc=True, errors="coerce")[0]):
                return True
    return False


@dataclass(frozen=True)
class ColumnPlan:
    """Which file column plays which role, the Avro field name of each, and the derived schema."""

    time_column: str
    time_kind: ColumnKind
    entity_column: str | None
    label_column: str | None
    features: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]  # (column, why) for columns not replayed
    field_names: dict[str, str]  # file column -> Avro field name (entity/time/features/label)
    schema: dict[str, Any]

    @property
    def entity_field(self) -> str:
        return self.schema["vigil.entity"]

    @property
    def time_field(self) -> str:
        return self.schema["vigil.time"]


def _available(columns: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in columns)


def plan_columns(source: pd.DataFrame | pa.Schema, settings: ReplaySettings) -> ColumnPlan:
    """Assign roles to ``source``'s columns and derive the Avro schema (see the module docstring).

    ``source`` is a sample of the file (its first chunk) or, for Parquet, its Arrow schema; with
    a sample, text columns are only taken as the time column if their first value parses.
    Raises ReplayError naming the problem (unknown column, no time column, no numeric column,
    name collision).
    """
    if isinstance(source, pa.Schema):
        columns = list(source.names)
        kinds = {name: _kind_of_arrow(source.field(name).type) for name in columns}
        samples: dict[str, pd.Series | None] = dict.fromkeys(columns)
    elif isinstance(source, pd.DataFrame):
        columns = [str(c) for c in source.columns]
        kinds = {str(c): _kind_of_series(source[c]) for c in source.columns}
        samples = {str(c): source[c] for c in source.columns}
    else:
        raise TypeError(f"source must be a pandas DataFrame or a pyarrow Schema, got {type(source).__name__}")
    if not columns:
        raise ReplayError(f"{settings.path} has no columns")

    for option, name in (("--time-column", settings.time_column), ("--entity-column", settings.entity_column),
                         ("--label-column", settings.label_column)):
        if name is not None and name not in kinds:
            raise ReplayError(f"{option} {name!r} is not a column of {settings.path.name}; "
                              f"available: {_available(columns)}")
    explicit = [c for c in (settings.time_column, settings.entity_column, settings.label_column) if c]
    if len(set(explicit)) != len(explicit):
        raise ReplayError(f"one column cannot play two roles: {explicit}")
    if settings.columns:
        missing = [c for c in settings.columns if c not in kinds]
        if missing:
            raise ReplayError(f"--columns names {_available(missing)}, not column(s) of {settings.path.name}; "
                              f"available: {_available(columns)}")

    taken = set(explicit)
    time_col = settings.time_column
    if time_col is not None:
        kind = kinds[time_col]
        if kind not in ("datetime", "numeric", "string"):
            raise ReplayError(f"--time-column {time_col!r} holds {kind} values, not datetimes, text or epoch numbers")
    else:
        time_col = _detect_time(columns, kinds, samples, taken, settings)
    taken.add(time_col)

    entity_col = settings.entity_column or next(
        (c for c in columns if c not in taken and _looks_like_entity(c)), None)
    if entity_col:
        taken.add(entity_col)
    label_col = settings.label_column or next(
        (c for c in columns if c not in taken and _looks_like_label(c)), None)
    if label_col:
        taken.add(label_col)

    features: list[str] = []
    left_out: list[tuple[str, str]] = []
    wanted = set(settings.columns) if settings.columns else None
    for c in columns:
        if c in taken:
            if wanted and c in wanted:
                raise ReplayError(f"--columns names {c!r}, which is the time, entity or label column")
            continue
        numeric = kinds[c] in ("numeric", "bool")
        if wanted is not None:
            if c not in wanted:
                continue
            if not numeric:
                example = _first_value(samples[c])
                raise ReplayError(f"--columns names {c!r}, which is not numeric ({kinds[c]}"
                                  + (f", e.g. {example!r})" if example is not None else ")"))
        if numeric:
            features.append(c)
        else:
            example = _first_value(samples[c])
            left_out.append((c, f"{kinds[c]}, e.g. {example!r}" if example is not None else kinds[c]))
    if not features:
        raise ReplayError(
            f"{settings.path.name} has no numeric feature columns (columns: {_available(columns)}; "
            f"time {time_col!r}, entity {entity_col!r}, label {label_col!r})"
        )

    field_names: dict[str, str] = {}
    owner: dict[str, str] = {}
    if entity_col is None:
        owner[CONSTANT_ENTITY_FIELD] = "the constant entity field (no entity column)"
    for c in [entity_col, time_col, *features, label_col]:
        if c is None:
            continue
        name = avro_name(c)
        if name in owner:
            raise ReplayError(
                f"column {c!r} and {owner[name]!r} both become the Avro field name {name!r}; "
                f"rename one in the file or leave it out with --columns"
            )
        owner[name] = c
        field_names[c] = name

    source_name = settings.path.name
    fields: list[dict[str, Any]] = []
    if entity_col is None:
        fields.append({"name": CONSTANT_ENTITY_FIELD, "type": "string",
                       "doc": f"Constant entity id (the file has no entity column): {settings.constant_entity!r}."})
    else:
        fields.append({"name": field_names[entity_col], "type": "string",
                       "doc": f"Entity id (the Kafka key), column {entity_col!r} of {source_name}."})
    fields.append({"name": field_names[time_col], "type": {"type": "long", "logicalType": "timestamp-millis"},
                   "doc": f"Event time, UTC, column {time_col!r} of {source_name}."})
    for c in features:
        fields.append({"name": field_names[c], "type": ["null", "double"], "default": None,
                       "doc": f"Column {c!r} of {source_name}; null where the file has a gap."})
    if label_col is not None:
        fields.append({"name": field_names[label_col], "type": ["null", "string"], "default": None,
                       "doc": f"Label, column {label_col!r} of {source_name}, as text."})

    record_name = avro_name(settings.topic)
    if record_name in _AVRO_PRIMITIVES:
        record_name += "_record"
    schema: dict[str, Any] = {
        "type": "record",
        "name": record_name,
        "namespace": NAMESPACE,
        "doc": f"Rows of {source_name} replayed by jobs.replay_file.",
        "vigil.entity": field_names[entity_col] if entity_col else CONSTANT_ENTITY_FIELD,
        "vigil.time": field_names[time_col],
    }
    if label_col is not None:
        schema["vigil.label"] = field_names[label_col]
    schema["vigil.source"] = source_name
    schema["fields"] = fields
    try:
        validate_schema(schema)
    except SchemaError as exc:
        raise ReplayError(str(exc)) from exc
    return ColumnPlan(time_col, kinds[time_col], entity_col, label_col, tuple(features), tuple(left_out),
                      field_names, schema)


def _detect_time(columns: list[str], kinds: dict[str, ColumnKind], samples: dict[str, pd.Series | None],
                 taken: set[str], settings: ReplaySettings) -> str:
    candidates = [c for c in columns if c not in taken and _looks_like_time(c)]
    rejected: list[str] = []
    for c in candidates:  # real datetimes (or text that parses as such) win over epoch numbers
        if kinds[c] == "datetime":
            return c
        if kinds[c] == "string":
            first = _first_value(samples[c])
            if samples[c] is None or (first is not None and _parses_as_time(first)):
                return c
            rejected.append(f"{c!r} (first value {first!r} does not parse as a date/time)")
    for c in candidates:
        if kinds[c] == "numeric":
            return c
    detail = f"; rejected {', '.join(rejected)}" if rejected else ""
    raise ReplayError(
        f"no timestamp column found in {settings.path.name} (columns: {_available(columns)}){detail}; "
        f"name one with --time-column"
    )


def derive_schema(source: pd.DataFrame | pa.Schema, settings: ReplaySettings) -> dict[str, Any]:
    """The Avro record schema a replay of ``source`` writes (see plan_columns for the rules)."""
    return plan_columns(source, settings).schema


# --- converting rows ---------------------------------------------------------------------------

def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Converter:
    """Turns one chunk (a DataFrame) into Avro-ready dicts; the time format/unit is fixed up front."""

    def __init__(self, plan: ColumnPlan, first_chunk: pd.DataFrame, settings: ReplaySettings) -> None:
        self.plan = plan
        self.settings = settings
        self.constant_entity = settings.constant_entity
        self.time_format: str | None = None
        self.epoch_factor: float | None = None
        s = first_chunk[plan.time_column]
        if plan.time_kind == "string" or _kind_of_series(s) == "string":
            self.time_format = self._pick_format(s)
        elif _kind_of_series(s) == "numeric":
            values = pd.to_numeric(s, errors="coerce").dropna().abs()
            median = float(values.median()) if len(values) else 0.0
            # 1e11 s is the year 5138 and 1e11 ms is 1973: magnitude tells the unit apart.
            self.epoch_factor = 1000.0 if median < 1e11 else 1.0 if median < 1e14 else 1e-3 if median < 1e17 else 1e-6

    @staticmethod
    def _pick_format(s: pd.Series) -> str:
        text = s.dropna().astype(str)
        candidates = ["ISO8601"]
        if len(text):  # month-first and day-first readings of the first value compete on the whole chunk
            for dayfirst in (False, True):
                with warnings.catch_warnings():  # "dayfirst ignored for ISO dates" is expected here
                    warnings.simplefilter("ignore")
                    guessed = guess_datetime_format(text.iloc[0], dayfirst=dayfirst)
                if guessed and guessed not in candidates:
                    candidates.append(guessed)
        best, best_bad = candidates[0], None
        for fmt in candidates:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bad = int(pd.to_datetime(text, format=fmt, utc=True, errors="coerce").isna().sum())
            if best_bad is None or bad < best_bad:
                best, best_bad = fmt, bad
            if bad == 0:
                break
        return best

    def convert(self, df: pd.DataFrame, first_row: int) -> list[dict[str, Any]]:
        """Records for ``df``, whose first row is data row ``first_row`` (1-based) of the file."""
        plan = self.plan
        n = len(df)
        cols: dict[str, list[Any]] = {}
        if plan.entity_column is None:
            cols[CONSTANT_ENTITY_FIELD] = [self.constant_entity] * n
        else:
            s = df[plan.entity_column]
            self._no_gaps(s, first_row, f"the entity column {plan.entity_column!r} is empty")
            cols[plan.field_names[plan.entity_column]] = [_text(v) for v in s.tolist()]
        cols[plan.field_names[plan.time_column]] = self._millis(df[plan.time_column], first_row)
        for c in plan.features:
            cols[plan.field_names[c]] = self._doubles(df[c], c, first_row)
        if plan.label_column is not None:
            s = df[plan.label_column]
            normal = {n.lower() for n in self.settings.normal_labels}
            texts = [None if pd.isna(v) else _text(v) for v in s.tolist()]
            cols[plan.field_names[plan.label_column]] = [None if t is None or t.strip().lower() in normal else t
                                                         for t in texts]
        names = list(cols)
        return [dict(zip(names, values)) for values in zip(*cols.values())]

    @staticmethod
    def _no_gaps(s: pd.Series, first_row: int, what: str) -> None:
        missing = s.isna().to_numpy()
        if missing.any():
            raise ReplayError(f"row {first_row + int(np.argmax(missing))}: {what}")

    def _millis(self, s: pd.Series, first_row: int) -> list[int]:
        column = self.plan.time_column
        self._no_gaps(s, first_row, f"the time column {column!r} is empty")
        kind = _kind_of_series(s)
        if self.time_format is not None or kind == "string":
            text = s.astype(str)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(text, format=self.time_format or "ISO8601", utc=True, errors="coerce")
            bad = parsed.isna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise ReplayError(
                    f"row {first_row + i}: cannot parse {text.iloc[i]!r} in the time column {column!r} as a "
                    f"date/time (expected the format of its first value, {self.time_format or 'ISO 8601'})"
                )
            s, kind = parsed, "datetime"
        if kind == "datetime":
            if getattr(s.dtype, "tz", None) is not None:
                s = s.dt.tz_convert("UTC").dt.tz_localize(None)
            return s.to_numpy().astype("datetime64[ms]").astype("int64").tolist()
        if kind in ("numeric", "bool"):
            factor = self.epoch_factor or 1000.0
            values = pd.to_numeric(s)
            if pd.api.types.is_integer_dtype(values.dtype) and factor >= 1:
                return (values.to_numpy(dtype="int64") * int(factor)).tolist()
            return np.round(values.to_numpy(dtype="float64") * factor).astype("int64").tolist()
        raise ReplayError(f"row {first_row}: the time column {column!r} holds {kind} values here")

    @staticmethod
    def _doubles(s: pd.Series, column: str, first_row: int) -> list[float | None]:
        if _kind_of_series(s) in ("numeric", "bool") and not pd.api.types.is_object_dtype(s.dtype):
            values = s.to_numpy(dtype="float64", na_value=np.nan)
        else:  # text in what was a numeric column (CSV chunks are typed one by one) or Decimals
            coerced = pd.to_numeric(s, errors="coerce")
            bad = (coerced.isna() & s.notna()).to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise ReplayError(f"row {first_row + i}: {s.iloc[i]!r} in column {column!r} is not a number")
            values = coerced.to_numpy(dtype="float64", na_value=np.nan)
        return [None if v != v else v for v in values.tolist()]


# --- reading files -----------------------------------------------------------------------------

def sniff_separator(path: Path) -> str:
    """The CSV separator csv.Sniffer finds in the first KB of ``path`` (',' when it cannot tell)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        sample = fh.read(1024)
    if len(sample) == 1024 and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]  # only whole lines: a cut one skews the counts
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return ","


class ReplaySource:
    """An opened, checked file: its format, column plan, schema and (lazily) its records in file order.

    ``open()`` reads the header and the first chunk, plans the columns and converts that chunk, so
    structural problems and bad values near the top raise ReplayError before anything is written.
    ``records()`` re-reads the file from the start; a bad row in a later chunk raises ReplayError
    when that chunk is reached (no record of it is yielded).
    """

    def __init__(self, settings: ReplaySettings) -> None:
        self.settings = settings
        self.format: FileFormat = settings.resolved_format
        self.sep: str | None = None
        self.decimal = "."
        self.total_rows: int | None = None
        self._dtype: dict[str, Any] | None = None
        self.plan: ColumnPlan
        self._converter: _Converter

    @classmethod
    def open(cls, settings: ReplaySettings) -> ReplaySource:
        path = settings.path
        if not path.exists():
            raise ReplayError(f"no such file: {path}")
        if not path.is_file():
            raise ReplayError(f"not a file: {path}")
        if path.stat().st_size == 0:
            raise ReplayError(f"{path} is empty (0 bytes)")
        self = cls(settings)
        first = self._open_csv() if self.format == "csv" else self._open_parquet()
        self._converter = _Converter(self.plan, first, settings)
        self._converter.convert(first, 1)
        return self

    @property
    def schema(self) -> dict[str, Any]:
        return self.plan.schema

    @property
    def feature_fields(self) -> list[str]:
        return feature_columns(self.schema)

    # CSV -----------------------------------------------------------------------------------
    def _open_csv(self) -> pd.DataFrame:
        settings = self.settings
        self.sep = settings.sep or sniff_separator(settings.path)
        try:
            header = pd.read_csv(settings.path, sep=self.sep, nrows=0, encoding="utf-8-sig")
        except pd.errors.EmptyDataError as exc:
            raise ReplayError(f"{settings.path} is empty (no header, no rows)") from exc
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ReplayError(f"cannot read {settings.path} as CSV: {exc}") from exc
        names = [str(c) for c in header.columns]
        # Ids and labels stay text ("007" keeps its zeros); the roles depend on names only.
        text_cols = {settings.entity_column, settings.label_column} - {None}
        if settings.entity_column is None:
            text_cols |= {next((c for c in names if _looks_like_entity(c) and c != settings.time_column
                                and c != settings.label_column), None)}
        if settings.label_column is None:
            text_cols |= {next((c for c in names if _looks_like_label(c) and c != settings.time_column
                                and c not in text_cols), None)}
        self._dtype = {c: str for c in text_cols if c in names}
        first = self._first_csv_chunk()
        if self.sep != "," and self._has_decimal_commas(first):
            self.decimal = ","
            first = self._first_csv_chunk()
        self.plan = plan_columns(first, settings)
        return first

    def _first_csv_chunk(self) -> pd.DataFrame:
        first = next(self._csv_chunks(), None)
        if first is None or first.empty:
            raise ReplayError(f"{self.settings.path} has a header but no data rows")
        return first

    def _has_decimal_commas(self, df: pd.DataFrame) -> bool:
        for c in df.columns:
            if c in (self._dtype or {}) or _kind_of_series(df[c]) != "string":
                continue
            text = df[c].dropna().astype(str)
            if len(text) and text.str.contains(",").any() and text.str.match(_DECIMAL_COMMA_RE).all():
                return True
        return False

    def _csv_chunks(self) -> Iterator[pd.DataFrame]:
        path = self.settings.path
        try:
            reader = pd.read_csv(path, sep=self.sep, decimal=self.decimal, chunksize=self.settings.chunk_size,
                                 encoding="utf-8-sig", dtype=self._dtype, skipinitialspace=True,
                                 float_precision="round_trip")
            with reader:
                yield from reader
        except pd.errors.EmptyDataError as exc:
            raise ReplayError(f"{path} is empty (no header, no rows)") from exc
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ReplayError(f"cannot read {path} as CSV (separator {self.sep!r}): {str(exc).strip()}") from exc

    # Parquet -------------------------------------------------------------------------------
    def _parquet_file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.settings.path)
        except (pa.ArrowException, OSError) as exc:
            raise ReplayError(f"cannot read {self.settings.path} as Parquet: {exc}") from exc

    def _open_parquet(self) -> pd.DataFrame:
        pf = self._parquet_file()
        self.total_rows = pf.metadata.num_rows
        if self.total_rows == 0:
            raise ReplayError(f"{self.settings.path} has no rows")
        first = next(self._parquet_chunks(pf, columns=None))
        self.plan = plan_columns(first, self.settings)
        return first

    def _parquet_chunks(self, pf: pq.ParquetFile, columns: list[str] | None) -> Iterator[pd.DataFrame]:
        try:
            for batch in pf.iter_batches(batch_size=self.settings.chunk_size, columns=columns):
                yield batch.to_pandas(date_as_object=False)
        except (pa.ArrowException, OSError) as exc:
            raise ReplayError(f"cannot read {self.settings.path} as Parquet: {exc}") from exc

    # both ----------------------------------------------------------------------------------
    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        """Converted chunks in file order; raises ReplayError at the first bad chunk."""
        if self.format == "csv":
            frames = self._csv_chunks()
        else:
            plan = self.plan
            used = [c for c in (plan.entity_column, plan.time_column, *plan.features, plan.label_column) if c]
            frames = self._parquet_chunks(self._parquet_file(), columns=used)
        row = 1
        for df in frames:
            yield self._converter.convert(df, row)
            row += len(df)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every row as an Avro-ready dict, in file order."""
        for chunk in self.chunks():
            yield from chunk


def read_rows(settings: ReplaySettings) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """(schema, records in file order) of the file ``settings`` names.

    Problems found in the header or first chunk raise ReplayError here; later ones when the
    iterator reaches them. Records hold the time as epoch millis and None for gaps.
    """
    source = ReplaySource.open(settings)
    return source.schema, source.records()


# --- producing ---------------------------------------------------------------------------------

class Pacer:
    """Paces records at ``speed`` times the file's own rhythm (0 = no pacing).

    Waits are scheduled against one start instant, so they do not drift; time only moves forward
    (a timestamp earlier than one already seen adds no wait) and no gap adds more than
    ``max_sleep_s`` seconds.
    """

    def __init__(self, speed: float, max_sleep_s: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed = speed
        self.max_sleep_s = max_sleep_s
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._high_ms: int | None = None
        self._due_s = 0.0

    def wait(self, event_ms: int) -> None:
        """Block until the record with event time ``event_ms`` is due."""
        if self.speed <= 0:
            return
        if self._start is None or self._high_ms is None:
            self._start, self._high_ms = self._clock(), event_ms
            return
        gap_s = max(0, event_ms - self._high_ms) / 1000.0 / self.speed
        self._high_ms = max(self._high_ms, event_ms)
        self._due_s += min(gap_s, self.max_sleep_s)
        delay = self._start + self._due_s - self._clock()
        if delay > 0:
            self._sleep(delay)


@dataclass(frozen=True)
class ReplayResult:
    """What a finished replay wrote."""

    topic: str
    rows: int
    feature_columns: list[str]
    schema_id: str
    offsets: dict[int, tuple[int, int]]  # partition -> (first, last) offset written
    produce_seconds: float  # time spent in the produce loop, pacing included


def _written_offsets(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
                     ) -> dict[int, tuple[int, int]]:
    return {p: (before.get(p, (0, 0))[1], high - 1) for p, (_, high) in after.items()
            if high > before.get(p, (0, 0))[1]}


def _describe_offsets(offsets: dict[int, tuple[int, int]]) -> str:
    if not offsets:
        return "no offsets"
    return ", ".join(f"partition {p}: {a}..{b}" for p, (a, b) in sorted(offsets.items()))


def replay(settings: ReplaySettings, *, progress: bool = True, source: ReplaySource | None = None) -> ReplayResult:
    """Replay the file into Kafka: check file, broker, create topic, register schema, produce.

    Raises ReplayError for bad input (with ``written`` > 0 when a later chunk turned out bad after
    earlier ones were delivered), BrokerUnavailable when no broker answers (nothing written) and
    ConnectorError when Kafka refuses the topic, the schema or records.
    """
    source = source or ReplaySource.open(settings)
    schema = source.schema
    bootstrap, topic = settings.bootstrap_servers, settings.topic
    check_broker(bootstrap, timeout=settings.broker_timeout_s)
    try:
        created = create_topic(bootstrap, topic, partitions=settings.partitions)
        if not created:
            _refuse_other_schema(bootstrap, topic, schema)
        schema_store.register(bootstrap, topic, schema)
    except ConnectorError as exc:
        raise type(exc)(f"{exc} (no records were written)") from exc

    entity_field, time_field = source.plan.entity_field, source.plan.time_field
    before = end_offsets(bootstrap, topic)
    producer = AvroProducer(bootstrap, topic, schema)
    pacer = Pacer(settings.speed, settings.max_sleep_s)
    paced = settings.speed > 0
    bar = tqdm(total=source.total_rows, unit="rows", desc=topic, file=sys.stderr,
               disable=None if progress else True)
    started = time.monotonic()
    problem: BaseException | None = None
    try:
        for chunk in source.chunks():
            for record in chunk:
                ts = record[time_field]
                if paced:
                    pacer.wait(ts)
                    bar.update(1)
                producer.send(record, key=record[entity_field], timestamp_ms=ts)
            if not paced:
                bar.update(len(chunk))
    except (ReplayError, KeyboardInterrupt, ConnectorError) as exc:
        problem = exc
    finally:
        bar.close()
    elapsed = time.monotonic() - started

    undelivered: ConnectorError | None = None
    try:
        stats = producer.close()
    except ConnectorError as exc:
        undelivered, stats = exc, producer.stats
    offsets = _written_offsets(before, end_offsets(bootstrap, topic))
    if problem is not None or undelivered is not None:
        note = (f"{stats.delivered} records were already written to topic {topic!r} "
                f"({_describe_offsets(offsets)})")
        if isinstance(problem, ReplayError):
            raise ReplayError(f"{problem}; stopped there: {note}", written=stats.delivered, offsets=offsets) from problem
        if isinstance(problem, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted: {note}") from problem
        cause = problem or undelivered
        raise ConnectorError(f"{cause}; {note}") from cause
    return ReplayResult(topic, stats.delivered, source.feature_fields, schema_id(schema), offsets, elapsed)


def _refuse_other_schema(bootstrap: str, topic: str, schema: dict[str, Any]) -> None:
    """Refuse to mix two record layouts in one topic: readers decode with the one stored schema."""
    existing = schema_store.lookup(bootstrap, topic)
    if existing is None or fingerprint(existing) == fingerprint(schema):
        return
    held = describe_topic(bootstrap, topic).messages
    if held:
        raise ReplayError(
            f"topic {topic!r} already holds {held} records written with schema {schema_id(existing)}, "
            f"not this file's {schema_id(schema)}; replay into a new --topic (or delete this one with "
            f"`python -m connectors.topics delete {topic}`)"
        )


# --- command line ------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> tuple[ReplaySettings, bool]:
    """(settings, dry_run) from the command line; ReplayError for a bad value."""
    parser = argparse.ArgumentParser(prog="python -m jobs.replay_file", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="CSV or Parquet file to replay")
    parser.add_argument("--topic", required=True, help="Kafka topic to write (created if missing)")
    parser.add_argument("--format", choices=["csv", "parquet"], help="file format (default: from the suffix)")
    parser.add_argument("--time-column", help="event time column (default: detected)")
    parser.add_argument("--entity-column", help="machine/device id column, the Kafka key (default: detected)")
    parser.add_argument("--entity-id", help="entity id for every row when there is no entity column "
                                            "(default: the file stem)")
    parser.add_argument("--label-column", help="label column (default: detected; none if no column looks like one)")
    parser.add_argument("--normal-labels", default="0,0.0,false,normal,ok,none,no",
                        help="comma-separated label values that mean a normal reading; stored as null")
    parser.add_argument("--columns", help="comma-separated numeric feature columns to keep (default: all)")
    parser.add_argument("--sep", help="CSV separator (default: detected); '\\t' or 'tab' for tabs")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="0 = as fast as possible (default), 1 = original pace, 10 = ten times faster")
    parser.add_argument("--max-sleep", type=float, default=10.0, dest="max_sleep_s",
                        help="longest pause between two records when pacing, in seconds (default 10)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions if the topic is created (default 3)")
    parser.add_argument("--chunk-size", type=int, default=50_000, help="rows read and checked at a time")
    parser.add_argument("--bootstrap-servers", default=None, help="Kafka bootstrap servers (default: local stack)")
    parser.add_argument("--broker-timeout", type=float, default=5.0, dest="broker_timeout_s",
                        help="seconds to wait for the broker to answer (default 5)")
    parser.add_argument("--dry-run", action="store_true",
                        help="read and check the whole file and print its schema; write nothing")
    args = parser.parse_args(argv)
    settings = ReplaySettings(
        path=args.path, topic=args.topic, format=args.format, time_column=args.time_column,
        entity_column=args.entity_column, label_column=args.label_column, entity_id=args.entity_id,
        normal_labels=tuple(v.strip() for v in args.normal_labels.split(",") if v.strip()),
        columns=tuple(args.columns.split(",")) if args.columns is not None else None, sep=args.sep,
        speed=args.speed, max_sleep_s=args.max_sleep_s, partitions=args.partitions, chunk_size=args.chunk_size,
        broker_timeout_s=args.broker_timeout_s,
        **({"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else {}),
    )
    return settings, args.dry_run


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 2 bad input, 1 broker, 130 interrupted)."""
    try:
        settings, dry_run = parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message
        return int(exc.code or 0)
    except ReplayError as exc:
        _error(str(exc))
        return 2
    try:
        source = ReplaySource.open(settings)
        for column, why in source.plan.left_out:
            print(f"warning: left out non-numeric column {column!r} ({why})", file=sys.stderr)
        if dry_run:
            rows = sum(len(chunk) for chunk in source.chunks())
            print(json.dumps(source.schema, indent=2))
            print(f"checked {rows} rows of {settings.path.name}; features: {', '.join(source.feature_fields)}; "
                  f"nothing written (dry run)")
            return 0
        result = replay(settings, source=source)
    except ReplayError as exc:
        _error(str(exc) if exc.written else f"{exc} (nothing was written to Kafka)")
        return 2
    except BrokerUnavailable as exc:
        _error(f"{exc} (nothing was written)")
        return 1
    except ConnectorError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt as exc:
        _error(str(exc) or "interrupted")
        return 130
    print(f"wrote {result.rows} rows to topic {result.topic!r}; feature columns: "
          f"{', '.join(result.feature_columns)}; schema id: {result.schema_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
