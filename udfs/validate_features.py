"""VALIDATE_TELEMETRY(...): a Great Expectations suite applied to every row, as a vectorized Flink UDF.

The suite lives in the repo as GX 1.x ExpectationSuite JSON (``udfs/expectations/<name>.json``) and
is judged per row: the UDF returns, for each input row, ``None`` when the row meets every
expectation, else the failed expectations joined by ``"; "``, e.g.
``expect_column_values_to_not_be_null(speed_kmh); expect_column_values_to_be_between(coolant_temp_c)``.
A job routes rows with a non-null result to the dead-letter topic with that string as the reason.

Two engines give the same answer for every row (tests/udfs/test_validate_features.py proves it):

* ``engine="gx"`` runs Great Expectations itself on each batch (an ephemeral context made once in
  ``open()``) and maps every expectation's ``unexpected_index_list`` back to rows. GX costs a fixed
  ~0.2-0.5 s per batch with the telemetry suite (~35k rows/s at 10k-row batches): far too slow for
  a 150k events/s pipeline, kept as the reference (see benchmarks/validation_cost.py).
* ``engine="compiled"`` (the default) parses the same JSON with GX's own classes and turns each
  expectation into a numpy/pandas row mask, with GX's pandas semantics copied exactly (see below).

Supported expectation types (anything else raises ValueError at construction/open, naming it):
``expect_column_values_to_not_be_null``, ``expect_column_values_to_be_between``,
``expect_column_values_to_be_in_set``, ``expect_column_values_to_match_regex``.
Both engines accept exactly the same suites, so they stay interchangeable.

GX semantics the compiled engine reproduces (GX 1.x, pandas execution engine):

* null is what ``pandas.isna`` says: None, NaN (also in float columns), NaT, pd.NA. ``not_be_null``
  flags them; ``between``, ``in_set`` and ``match_regex`` never flag a null (GX filters nulls out
  before those checks). ±inf is not null: ``not_be_null`` passes it, ``between`` flags it.
* ``between`` compares in float64 (GX compares Python floats for non-float64 columns);
  ``strict_min``/``strict_max`` make the bound exclusive; a missing bound is open. A column holding
  strings fails the batch with TypeError in both engines (GX reports the exception; this is a
  schema fault, not a bad row).
* ``match_regex`` is ``str(value)`` searched with Python's ``re.search`` (``Series.str.contains``):
  so ``$`` also matches before a final newline ("3.2.1\\n" passes ``^\\d+\\.\\d+\\.\\d+$``) and ``\\d``
  matches any Unicode digit. Anchor with ``^...$`` yourself; an unanchored pattern matches substrings.
* ``in_set`` is ``Series.isin(value_set)`` (exact, case-sensitive; ``1 == 1.0 == True``).

``mostly`` is refused unless it is 1: GX uses it to pass a *batch* in which a share of rows fails,
but here every row is routed on its own, so a tolerance has no meaning and silently ignoring it
would surprise whoever wrote it. ``row_condition`` is refused too. ``severity`` is not used: every
failed expectation routes its row.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

log = logging.getLogger("vigil.udfs.validate_features")

TELEMETRY_SUITE_NAME = "telemetry-v1"
SEMVER_REGEX = r"^\d+\.\d+\.\d+$"
ENGINES = ("compiled", "gx")
SUPPORTED_TYPES = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_match_regex",
)
# Fields of a GX expectation that say nothing about which rows fail; any other non-default field
# (a kwarg this module does not interpret) makes the expectation unsupported.
_IGNORED_FIELDS = {"id", "meta", "notes", "result_format", "description", "catch_exceptions", "rendered_content",
                   "severity", "windows", "batch_id", "column", "mostly", "row_condition", "condition_parser"}
_TYPE_FIELDS = {
    "expect_column_values_to_not_be_null": set(),
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"value_set"},
    "expect_column_values_to_match_regex": {"regex"},
}
FAILURE_SEPARATOR = "; "
# Package data (pyproject.toml); next to this file both in a checkout and in an installed wheel.
SUITES_DIR = Path(__file__).parent / "expectations"


# --- the suite file ----------------------------------------------------------------------------
def load_suite(path_or_name: str | Path) -> dict[str, Any]:
    """A suite as a plain dict: a name like ``"telemetry-v1"`` (from udfs/expectations/) or a path."""
    text_path = str(path_or_name)
    if isinstance(path_or_name, Path) or text_path.endswith(".json") or "/" in text_path:
        path = Path(path_or_name)
        if not path.is_file():
            raise ValueError(f"no expectation suite file at {str(path)!r}")
        return json.loads(path.read_text())
    path = SUITES_DIR / f"{text_path}.json"
    if not path.is_file():
        raise ValueError(f"no expectation suite named {text_path!r} in udfs/expectations/")
    return json.loads(path.read_text())


def suite_columns(suite: dict[str, Any]) -> list[str]:
    """The columns a suite reads, in order of first use (plain dict access: no GX import)."""
    columns: list[str] = []
    for expectation in suite.get("expectations", []):
        column = expectation.get("kwargs", {}).get("column")
        if column is None:
            raise ValueError(f"{expectation.get('type')!r} has no column: only column expectations are supported")
        if column not in columns:
            columns.append(column)
    return columns


def build_telemetry_suite() -> dict[str, Any]:
    """The telemetry-v1 suite as GX writes it; ``python -m udfs.validate_features`` saves it to the repo.

    Every feature column: not null and within its physical range (the ``vigil.range`` of its field
    in telemetry-v1.avsc, which the simulator also obeys); firmware_version: not null and
    semver-like; failure_label: one of the schema's ``vigil.values``, or null.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from connectors.avro_serde import label_values, load_schema, physical_ranges, plausible_times

    schema = load_schema(TELEMETRY_SUITE_NAME)
    expectations: list[Any] = []
    for column, (first, last) in plausible_times(schema).items():
        expectations.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=first, max_value=last))
    for column, (low, high) in physical_ranges(schema).items():
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        expectations.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
    expectations.append(gxe.ExpectColumnValuesToNotBeNull(column="firmware_version"))
    expectations.append(gxe.ExpectColumnValuesToMatchRegex(column="firmware_version", regex=SEMVER_REGEX))
    expectations.append(gxe.ExpectColumnValuesToBeInSet(column="failure_label", value_set=list(label_values(schema))))
    notes = ("Generated by `python -m udfs.validate_features` (build_telemetry_suite) from the vigil.range and "
             "vigil.values attributes of connectors/schemas/telemetry-v1.avsc: change the schema, then "
             "regenerate this file.")
    suite = gx.ExpectationSuite(name=TELEMETRY_SUITE_NAME, expectations=expectations, notes=notes)
    return suite.to_json_dict()


def main() -> int:
    """Regenerate udfs/expectations/telemetry-v1.json from build_telemetry_suite()."""
    path = SUITES_DIR / f"{TELEMETRY_SUITE_NAME}.json"
    path.write_text(json.dumps(build_telemetry_suite(), indent=2) + "\n")
    print(f"written: {path}")
    return 0


# --- parsing ------------------------------------------------------------------------------------
def _parse(suite: dict[str, Any]) -> tuple[Any, list[Any]]:
    """(GX ExpectationSuite, its expectations) after checking every expectation can judge single rows."""
    import great_expectations as gx

    parsed = gx.ExpectationSuite(**suite)
    for exp in parsed.expectations:
        kind = exp.expectation_type
        where = f"{kind} on column {getattr(exp, 'column', None)!r} in suite {parsed.name!r}"
        if kind not in SUPPORTED_TYPES:
            raise ValueError(f"unsupported expectation type {kind!r} in suite {parsed.name!r}: row validation "
                             f"supports {', '.join(SUPPORTED_TYPES)}")
        if exp.mostly != 1:
            raise ValueError(f"{where}: mostly={exp.mostly} is not supported; every row is judged on its own, "
                             "so drop mostly (or set it to 1)")
        if exp.row_condition:
            raise ValueError(f"{where}: row_condition is not supported")
        unknown = set(exp.configuration.kwargs) - _IGNORED_FIELDS - _TYPE_FIELDS[kind]
        if unknown:
            raise ValueError(f"{where}: unsupported argument(s) {sorted(unknown)}")
        if kind == "expect_column_values_to_be_between":
            bounds = [v for v in (exp.min_value, exp.max_value) if v is not None]
            times = all(_is_time(v) for v in bounds)
            for bound in ("min_value", "max_value"):
                value = getattr(exp, bound)
                if value is None:
                    continue
                if times:
                    try:
                        _time_bound(value)
                    except ValueError:
                        raise ValueError(f"{where}: {bound} must be a number or an ISO time, got {value!r}") from None
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{where}: {bound} must be a number or an ISO time, got {value!r}")
            if exp.min_value is None and exp.max_value is None:
                raise ValueError(f"{where}: min_value and max_value cannot both be None")
            if exp.min_value is not None and exp.max_value is not None and exp.min_value > exp.max_value:
                raise ValueError(f"{where}: min_value {exp.min_value} > max_value {exp.max_value}")
        if kind == "expect_column_values_to_match_regex":
            re.compile(exp.regex)
    return parsed, list(parsed.expectations)


def failure_name(expectation: Any) -> str:
    """How a failed expectation is named in the result: ``expect_..._be_between(coolant_temp_c)``."""
    return f"{expectation.expectation_type}({expectation.column})"


# --- compiled engine ----------------------------------------------------------------------------
Mask = Callable[[pd.Series], np.ndarray]


def _as_float64(column: pd.Series, where: str) -> np.ndarray:
    """The column as float64 with NaN for nulls; TypeError when it holds non-numbers (GX raises too)."""
    if column.dtype == np.float64:
        return column.to_numpy()
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    if column.dtype == object:
        kind = pd.api.types.infer_dtype(column, skipna=True)
        if kind in ("floating", "integer", "mixed-integer-float", "boolean", "empty"):
            return column.where(column.notna(), np.nan).astype(np.float64).to_numpy()
    raise TypeError(f"{where}: column of dtype {column.dtype} holds non-numeric values; "
                    "min_value and max_value are numbers")


def _is_time(value: Any) -> bool:
    """A bound that is a time: an ISO string in the suite file, a datetime once GX has parsed it."""
    import datetime as dt

    return isinstance(value, (str, dt.date))


def _time_bound(value: Any) -> np.datetime64:
    import datetime as dt

    if isinstance(value, dt.datetime) and value.tzinfo is not None:  # times are naive UTC everywhere here
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return np.datetime64(value, "ms")


def _as_datetime64(column: pd.Series, where: str) -> np.ndarray:
    """The column as datetime64 (any unit, NaT for nulls); TypeError when it holds no times."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return column.to_numpy()
    if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) in ("datetime", "datetime64", "empty"):
        return np.array([np.datetime64(v, "ms") if v is not None and not pd.isna(v) else np.datetime64("NaT", "ms")
                         for v in column], dtype="datetime64[ms]")
    raise TypeError(f"{where}: column of dtype {column.dtype} holds no times; min_value and max_value are times")


def _per_distinct_string(s: pd.Series, passes: Callable[[pd.Series], np.ndarray]) -> np.ndarray | None:
    """Unexpected mask from judging each distinct value once; None unless every non-null value is a str.

    Telemetry string columns hold a handful of distinct values (firmware versions, labels), so this
    is much cheaper than judging 10k values. Only for pure strings: there, equal values are the same
    value, whereas factorize would merge 1, 1.0 and True, whose str() differ. Nulls are never flagged.
    """
    if s.dtype != object:
        return None
    codes, uniques = pd.factorize(s)  # nulls get code -1
    if len(uniques) and pd.api.types.infer_dtype(uniques, skipna=False) != "string":
        return None
    if not len(uniques):
        return np.zeros(len(s), dtype=bool)
    failing = np.append(~passes(pd.Series(uniques, dtype=object)), False)  # index -1: null, passes
    return failing[codes]


def _compile(expectation: Any) -> Mask:
    """A function column -> bool array, True where the row is unexpected (GX's pandas semantics)."""
    kind = expectation.expectation_type
    where = failure_name(expectation)
    if kind == "expect_column_values_to_not_be_null":
        def null(s: pd.Series) -> np.ndarray:
            if s.dtype == np.float64:
                return np.isnan(s.to_numpy())  # what isna() does for float64, without its overhead
            return s.isna().to_numpy()

        return null

    if kind == "expect_column_values_to_be_between":
        low, high = expectation.min_value, expectation.max_value
        strict_min, strict_max = bool(expectation.strict_min), bool(expectation.strict_max)
        if _is_time(low) or _is_time(high):
            first = _time_bound(low) if low is not None else None
            last = _time_bound(high) if high is not None else None

            def between_times(s: pd.Series) -> np.ndarray:
                x = _as_datetime64(s, where)
                inside = np.ones(len(x), dtype=bool)
                if first is not None:
                    inside &= (x > first) if strict_min else (x >= first)
                if last is not None:
                    inside &= (x < last) if strict_max else (x <= last)
                return ~inside & ~np.isnat(x)  # nulls are never unexpected here

            return between_times

        def between(s: pd.Series) -> np.ndarray:
            x = _as_float64(s, where)
            inside = np.ones(len(x), dtype=bool)
            if low is not None:
                inside &= (x > low) if strict_min else (x >= low)
            if high is not None:
                inside &= (x < high) if strict_max else (x <= high)
            return ~inside & ~np.isnan(x)  # nulls are never unexpected here; ±inf is

        return between

    if kind == "expect_column_values_to_be_in_set":
        value_set = expectation.value_set
        if value_set is None:  # GX: vacuously true
            return lambda s: np.zeros(len(s), dtype=bool)
        values = list(value_set)

        def in_set(s: pd.Series) -> np.ndarray:
            fast = _per_distinct_string(s, lambda u: u.isin(values).to_numpy(dtype=bool))
            return fast if fast is not None else (s.notna() & ~s.isin(values)).to_numpy()  # GX's call

        return in_set

    if kind == "expect_column_values_to_match_regex":
        regex = expectation.regex

        def match(s: pd.Series) -> np.ndarray:
            fast = _per_distinct_string(s, lambda u: u.str.contains(regex).to_numpy(dtype=bool))
            if fast is not None:
                return fast
            out = np.zeros(len(s), dtype=bool)
            present = s.notna().to_numpy()
            out[present] = ~s[present].astype(str).str.contains(regex).to_numpy(dtype=bool)  # GX's call
            return out

        return match

    raise ValueError(f"unsupported expectation type {kind!r}")  # _parse refuses these first


# --- the validator ------------------------------------------------------------------------------
class SuiteValidator:
    """Which expectations of a suite each row of a frame fails; see the module docstring.

    ``failures(frame)`` returns a Series aligned with ``frame.index`` (object dtype): None for a row
    that meets every expectation, else the failed expectations in suite order, joined by "; ".
    Raises ValueError when the frame lacks a column the suite needs.
    """

    def __init__(self, suite: dict[str, Any], engine: str = "compiled") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine
        self._suite, self._expectations = _parse(suite)
        self.name: str = self._suite.name
        self.columns: list[str] = suite_columns(suite)
        self._names = np.array([failure_name(e) for e in self._expectations], dtype=object)
        if engine == "compiled":
            self._masks = [(e.column, _compile(e)) for e in self._expectations]
        else:
            self._batch_definition = _gx_batch_definition()

    def failures(self, frame: pd.DataFrame) -> pd.Series:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"suite {self.name!r} needs column(s) {missing} that the frame lacks")
        judged = self.judge({c: frame[c] for c in self.columns}, len(frame))
        return pd.Series(judged, index=frame.index, dtype=object, name="failures")

    def judge(self, columns: Mapping[str, pd.Series], rows: int) -> np.ndarray:
        """``failures`` on equally long columns (a dict holding every name in ``self.columns``),
        as an object array; spares the UDF building a DataFrame per batch."""
        unexpected = np.zeros((len(self._expectations), rows), dtype=bool)
        if rows:
            if self.engine == "compiled":
                for i, (column, mask) in enumerate(self._masks):
                    unexpected[i] = mask(columns[column])
            else:
                self._gx_unexpected(columns, unexpected)
        return self._describe(unexpected)

    def _gx_unexpected(self, columns: Mapping[str, pd.Series], unexpected: np.ndarray) -> None:
        """Fill ``unexpected`` from a real GX validation of the batch (positions via a RangeIndex)."""
        data = pd.DataFrame({c: columns[c].reset_index(drop=True) for c in self.columns})
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": data})
        result = batch.validate(self._suite, result_format={"result_format": "COMPLETE"})
        if len(result.results) != len(self._expectations):
            raise RuntimeError(f"GX returned {len(result.results)} results for {len(self._expectations)} expectations")
        # GX does not keep suite order in its results: match each result to its expectation by
        # type and arguments (identical duplicates flag identical rows, so their order is moot).
        positions: dict[str, list[int]] = {}
        for i, exp in enumerate(self._expectations):
            positions.setdefault(_key(exp.expectation_type, exp.configuration.kwargs), []).append(i)
        for res in result.results:
            config = res.expectation_config
            slots = positions.get(_key(config.type, config.kwargs))
            if not slots:
                raise RuntimeError(f"GX returned a result for {config.type}({config.kwargs.get('column')}) "
                                   "that matches no expectation of the suite")
            i = slots.pop(0)
            name = self._names[i]
            error = _gx_exception(res.exception_info)
            if error:
                raise TypeError(f"{name}: GX raised {error}")
            rows = res.result.get("unexpected_index_list")
            if rows is None and not res.success:
                raise RuntimeError(f"{name} failed without an unexpected_index_list")
            if rows:
                unexpected[i, np.asarray(rows, dtype=np.int64)] = True

    def _describe(self, unexpected: np.ndarray) -> np.ndarray:
        """Per row: None, or the names of the failed expectations joined (one join per failure pattern)."""
        out = np.full(unexpected.shape[1], None, dtype=object)
        bad = np.flatnonzero(unexpected.any(axis=0))
        if len(bad):
            # rows as bit-packed byte strings: np.unique over them is far faster than unique(axis=0)
            packed = np.ascontiguousarray(np.packbits(unexpected[:, bad], axis=0).T)
            keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
            _, first, which = np.unique(keys, return_index=True, return_inverse=True)
            texts = np.array([FAILURE_SEPARATOR.join(self._names[unexpected[:, bad[i]]]) for i in first],
                             dtype=object)
            out[bad] = texts[which.reshape(-1)]
        return out


def _gx_exception(info: dict[str, Any] | None) -> str | None:
    """The message of an exception GX caught, if any (flat, or keyed by metric when a metric failed)."""
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return "; ".join(str(v.get("exception_message")) for v in nested) or None


def _key(kind: str, kwargs: dict[str, Any]) -> str:
    """Identity of an expectation across GX's results (GX adds batch_id to the kwargs it reports)."""
    meaning = {k: v for k, v in kwargs.items() if k not in ("batch_id", "result_format", "catch_exceptions")}
    return kind + json.dumps(meaning, sort_keys=True, default=repr)


def _gx_batch_definition() -> Any:
    """A whole-dataframe batch definition in an in-memory GX context (no analytics, no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    source = context.data_sources.add_pandas("vigil-rows")
    return source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole-batch")


# --- the Flink UDF ------------------------------------------------------------------------------
class ValidateFeatures(ScalarFunction):
    """Vectorized validation UDF: input column i is ``columns[i]``; output per row is None or the
    failed expectations joined by "; " (a STRING column; see the module docstring)."""

    def __init__(self, suite: dict[str, Any], columns: Sequence[str], engine: str = "compiled") -> None:
        # Only plain, picklable values here: the function is shipped to the workers before open().
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.suite = suite
        self.columns = list(columns)
        self.engine = engine
        needed = suite_columns(suite)
        missing = [c for c in needed if c not in self.columns]
        if missing:
            raise ValueError(f"suite {suite.get('name')!r} reads column(s) {missing} not among the UDF's "
                             f"columns {self.columns}")
        self._validator: SuiteValidator | None = None

    def open(self, function_context: FunctionContext | None) -> None:
        from udfs import metrics

        self._validator = SuiteValidator(self.suite, self.engine)
        self._dead = metrics.counter(metrics.group(function_context), "dead_letters")
        log.info("VALIDATE uses suite %r (%d expectations, %s engine)", self._validator.name,
                 len(self._validator._expectations), self.engine)

    def eval(self, *columns: pd.Series) -> pd.Series:
        if self._validator is None:
            raise RuntimeError("VALIDATE.eval() called before open()")
        if len(columns) != len(self.columns):
            raise ValueError(f"VALIDATE expects {len(self.columns)} columns {self.columns}, got {len(columns)}")
        rows = len(columns[0]) if columns else 0
        if any(len(c) != rows for c in columns):
            raise ValueError(f"VALIDATE got columns of different lengths {[len(c) for c in columns]}")
        # object dtype with None: PyFlink's Arrow writer rejects pandas' nullable string arrays
        result = pd.Series(self._validator.judge(dict(zip(self.columns, columns)), rows), dtype=object)
        if rows:
            # rows whose every input is null were undecodable: DecodeTelemetry counted them already
            decoded = ~np.logical_and.reduce([c.isna().to_numpy() for c in columns]) if columns else np.ones(rows, bool)
            self._dead.inc(int((result.notna().to_numpy() & decoded).sum()))
        return result

    def close(self) -> None:
        self._validator = None


def validate_udf(suite: dict[str, Any], columns: Sequence[str], engine: str = "compiled") -> Any:
    """The Flink UDF object for Table API use: ``validate_udf(suite, cols)(*[col(c) for c in cols])``."""
    return udf(ValidateFeatures(suite, columns, engine), result_type=DataTypes.STRING(), func_type="pandas")


# For SQL: CREATE TEMPORARY SYSTEM FUNCTION VALIDATE_TELEMETRY AS 'udfs.validate_features.validate_telemetry'
# LANGUAGE PYTHON; called with TELEMETRY_COLUMNS in this order.
TELEMETRY_COLUMNS: list[str] = suite_columns(load_suite(TELEMETRY_SUITE_NAME))
validate_telemetry = validate_udf(load_suite(TELEMETRY_SUITE_NAME), TELEMETRY_COLUMNS)


if __name__ == "__main__":
    raise SystemExit(main())
