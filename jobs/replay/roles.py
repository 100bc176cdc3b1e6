"""Which file column plays which role (time, entity, label, features), and the Avro schema derived from that."""
from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from pandas.tseries.api import guess_datetime_format

from connectors.avro_serde import validate_schema
from connectors.errors import SchemaError
from jobs.replay.settings import (
    CONSTANT_ENTITY_FIELD,
    NAMESPACE,
    ReplayError,
    ReplaySettings,
)

_TIME_TOKENS = {"time", "timestamp", "timestamps", "date", "datetime", "ts", "epoch"}
_ENTITY_RE = re.compile(
    r"^(?:id|(?:machine|device|vehicle|unit|asset|equipment|engine)(?:_?(?:id|no|nr|num|number|name|key))?"
    r"|(?:sensor|entity|node|station|turbine|pump|robot)_?(?:id|no|nr|num|number|name|key))$"
)
_LABEL_RE = re.compile(
    r"^(?:[a-z0-9]+_)?(?:label|labels|anomaly|anomalous|failure|fault|target|class|outlier)"
    r"(?:_(?:label|type|flag|mode|class|status))?$"
)
_AVRO_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


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


def looks_like_entity(name: str) -> bool:
    return bool(_ENTITY_RE.match("_".join(_tokens(name))))


def looks_like_label(name: str) -> bool:
    return bool(_LABEL_RE.match("_".join(_tokens(name))))


# --- column planning ---------------------------------------------------------------------------

ColumnKind = Literal["numeric", "bool", "datetime", "string", "other"]


def kind_of_arrow(t: pa.DataType) -> ColumnKind:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_dictionary(t):
        return kind_of_arrow(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return "other"


def kind_of_series(s: pd.Series) -> ColumnKind:
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return kind_of_series(pd.Series(dtype.categories))
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
        kinds = {name: kind_of_arrow(source.field(name).type) for name in columns}
        samples: dict[str, pd.Series | None] = dict.fromkeys(columns)
    elif isinstance(source, pd.DataFrame):
        columns = [str(c) for c in source.columns]
        kinds = {str(c): kind_of_series(source[c]) for c in source.columns}
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
        (c for c in columns if c not in taken and looks_like_entity(c)), None)
    if entity_col:
        taken.add(entity_col)
    label_col = settings.label_column or next(
        (c for c in columns if c not in taken and looks_like_label(c)), None)
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
