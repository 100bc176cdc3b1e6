"""Which file column plays which role (time, entity, label, features), and the Avro schema derived from that."""
from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
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
_ID_SUFFIX = r"(?:id|no|nr|num|number|name|key)"
# Names of the machine itself: alone ("car", "pump") or with an id suffix ("truck_id", "hostID").
_MACHINE_NOUNS = r"(?:machine|device|vehicle|unit|asset|equipment|engine|car|truck|vin|pump|line|host|node)"
# Names that need the suffix to mean an id ("sensor" alone is more likely a reading than an id).
_SUFFIXED_NOUNS = r"(?:sensor|entity|station|turbine|robot)"
_ENTITY_RANKS = (  # the first that matches gives a column's rank: a lower rank wins
    re.compile(rf"^(?:id|vin|{_MACHINE_NOUNS}_?{_ID_SUFFIX}|{_SUFFIXED_NOUNS}_?{_ID_SUFFIX})$"),
    re.compile(rf"^{_MACHINE_NOUNS}$"),
    re.compile(r"^[a-z0-9_]+_id$"),  # any other <x>_id / <x>ID: customer_id, orderId
)
_ENTITY_RANK_WHY = ("its name", "its name", "its name ends in id")
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


def looks_like_time(name: str) -> bool:
    """Whether ``name`` reads like a time column (time, timestamp, date, datetime, ts, epoch...)."""
    return any(t in _TIME_TOKENS or t.endswith(("timestamp", "datetime")) for t in _tokens(name))


def entity_rank(name: str) -> int | None:
    """How strongly ``name`` reads like an entity id column: 0, 1, 2 (lower wins), None if not at all.

    0: ``id``, ``vin``, or a machine noun with an id suffix (``vehicle_id``, ``truck_no``, ``hostID``,
    ``sensor_id``); 1: a machine noun alone (``car``, ``pump``, ``host``, ``node``, ``line``...);
    2: any other ``<x>_id`` / ``<x>ID`` (``customer_id``, ``orderId``). Names are compared by their
    words (``machineID`` = ``machine id`` = ``machine_id``), case-insensitively.
    """
    joined = "_".join(_tokens(name))
    return next((rank for rank, pattern in enumerate(_ENTITY_RANKS) if pattern.match(joined)), None)


def looks_like_entity(name: str) -> bool:
    """Whether ``name`` reads like an entity id column at all (see entity_rank)."""
    return entity_rank(name) is not None


def pick_entity(columns: Sequence[str], exclude: Collection[str | None] = ()) -> tuple[str | None, str]:
    """(the entity column, why) among ``columns``: the lowest entity_rank, then the first in file order."""
    ranked = sorted((rank, i, c) for i, c in enumerate(columns)
                    if c not in exclude and (rank := entity_rank(c)) is not None)
    if not ranked:
        return None, "no column looks like one"
    rank, _, chosen = ranked[0]
    others = [c for _, _, c in sorted(ranked[1:], key=lambda r: r[1])]
    why = _ENTITY_RANK_WHY[rank]
    if others:
        why += f"; also looked like one: {', '.join(others)}"
    return chosen, why


def looks_like_label(name: str) -> bool:
    """Whether ``name`` reads like a failure-label column (label, anomaly, failure, fault...)."""
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
    why: dict[str, str] = field(default_factory=dict)  # role (time/entity/label/features) -> why so
    dropped: tuple[tuple[str, str], ...] = ()  # (column, why) for every column not replayed, in file order

    def role_lines(self, time_detail: str | None = None) -> list[str]:
        """One line per role and per dropped column: the column chosen and why (``entity: car (its name)``)."""
        def line(role: str, column: str | None, detail: str | None = None) -> str:
            main, _, more = (self.why.get(role) or "").partition("; ")  # the detail goes after the main reason
            reason = "; ".join(p for p in (main, detail, more) if p)
            return f"{role}: {column if column is not None else 'none'}" + (f" ({reason})" if reason else "")

        lines = [line("time", self.time_column, time_detail), line("entity", self.entity_column),
                 line("label", self.label_column),
                 f"features: {', '.join(self.features)} ({self.why.get('features', 'numeric')})"]
        lines += [f"dropped: {c} ({why})" for c, why in self.dropped]
        return lines

    @property
    def entity_field(self) -> str:
        return self.schema["vigil.entity"]

    @property
    def time_field(self) -> str:
        return self.schema["vigil.time"]


def _available(columns: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in columns)


def plan_columns(source: pd.DataFrame | pa.Schema, settings: ReplaySettings, *,
                 text_notes: Mapping[str, str] | None = None) -> ColumnPlan:
    """Assign roles to ``source``'s columns and derive the Avro schema (see jobs/replay_file.py).

    ``source`` is a sample of the file (its first chunk) or, for Parquet, its Arrow schema; with
    a sample, text columns are only taken as the time column if their first value parses.
    ``text_notes``: why a text column is not numeric, where the reader knows better than its type
    (numbers in mixed formats); used in the dropped columns' reasons.
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
    why: dict[str, str] = {}
    time_col = settings.time_column
    if time_col is not None:
        kind = kinds[time_col]
        if kind not in ("datetime", "numeric", "string"):
            raise ReplayError(f"--time-column {time_col!r} holds {kind} values, not datetimes, text or epoch numbers")
        why["time"] = "--time-column"
    else:
        time_col, why["time"] = _detect_time(columns, kinds, samples, taken, settings)
    taken.add(time_col)

    entity_col = settings.entity_column
    if entity_col is not None:
        why["entity"] = "--entity-column"
    else:
        entity_col, why["entity"] = pick_entity(columns, taken)
        if entity_col is None:
            why["entity"] += f"; every row gets {CONSTANT_ENTITY_FIELD} {settings.constant_entity!r}"
    if entity_col:
        taken.add(entity_col)
    label_col = settings.label_column
    if label_col is not None:
        why["label"] = "--label-column"
    else:
        label_col = next((c for c in columns if c not in taken and looks_like_label(c)), None)
        why["label"] = "its name" if label_col else "no column looks like one"
    if label_col:
        taken.add(label_col)

    features: list[str] = []
    left_out: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    notes = dict(text_notes or {})
    wanted = set(settings.columns) if settings.columns else None
    for c in columns:
        if c in taken:
            if wanted and c in wanted:
                raise ReplayError(f"--columns names {c!r}, which is the time, entity or label column")
            continue
        numeric = kinds[c] in ("numeric", "bool")
        if wanted is not None:
            if c not in wanted:
                dropped.append((c, "not named in --columns"))
                continue
            if not numeric:
                example = _first_value(samples[c])
                detail = notes.get(c) or (f"{kinds[c]}, e.g. {example!r}" if example is not None else kinds[c])
                raise ReplayError(f"--columns names {c!r}, which is not numeric ({detail})")
        if wanted is None and looks_like_entity(c):  # another id (customer_id beside car): not a measurement
            left_out.append((c, "an id"))
            dropped.append((c, "its name looks like an id, not a measurement; --columns keeps it"))
        elif numeric:
            features.append(c)
        else:
            example = _first_value(samples[c])
            left_out.append((c, f"{kinds[c]}, e.g. {example!r}" if example is not None else kinds[c]))
            dropped.append((c, notes.get(c) or _not_numeric(kinds[c], example)))
    why["features"] = "named in --columns" if wanted is not None else "numeric"
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
                      field_names, schema, why, tuple(dropped))


def _not_numeric(kind: ColumnKind, example: Any) -> str:
    what = {"string": "text", "datetime": "date/time values", "bool": "true/false"}.get(kind, f"{kind} values")
    return f"{what}, not numeric" + (f", e.g. {example!r}" if example is not None else "")


def _detect_time(columns: list[str], kinds: dict[str, ColumnKind], samples: dict[str, pd.Series | None],
                 taken: set[str], settings: ReplaySettings) -> tuple[str, str]:
    """(the time column, why): the first time-like name holding datetimes or parsable text, else epoch numbers."""
    candidates = [c for c in columns if c not in taken and looks_like_time(c)]
    rejected: list[str] = []

    def chosen(c: str) -> tuple[str, str]:
        others = [o for o in candidates if o != c]
        return c, "its name" + (f"; also looked like one: {', '.join(others)}" if others else "")

    for c in candidates:  # real datetimes (or text that parses as such) win over epoch numbers
        if kinds[c] == "datetime":
            return chosen(c)
        if kinds[c] == "string":
            first = _first_value(samples[c])
            if samples[c] is None or (first is not None and _parses_as_time(first)):
                return chosen(c)
            rejected.append(f"{c!r} (first value {first!r} does not parse as a date/time)")
    for c in candidates:
        if kinds[c] == "numeric":
            return chosen(c)
    detail = f"; rejected {', '.join(rejected)}" if rejected else ""
    raise ReplayError(
        f"no timestamp column found in {settings.path.name} (columns: {_available(columns)}){detail}; "
        f"name one with --time-column"
    )


def derive_schema(source: pd.DataFrame | pa.Schema, settings: ReplaySettings) -> dict[str, Any]:
    """The Avro record schema a replay of ``source`` writes (see plan_columns for the rules)."""
    return plan_columns(source, settings).schema
