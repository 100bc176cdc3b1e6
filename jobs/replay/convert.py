"""Turning a chunk of file rows into Avro-ready records (times as epoch millis, gaps as None)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from jobs.replay.roles import ColumnPlan, kind_of_series
from jobs.replay.settings import CONSTANT_ENTITY_FIELD, ReplayError, ReplaySettings

# --- converting rows ---------------------------------------------------------------------------

def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Converter:
    """Turns one chunk (a DataFrame) into Avro-ready dicts; the time format/unit is fixed up front."""

    def __init__(self, plan: ColumnPlan, first_chunk: pd.DataFrame, settings: ReplaySettings) -> None:
        self.plan = plan
        self.settings = settings
        self.constant_entity = settings.constant_entity
        self.time_format: str | None = None
        self.epoch_factor: float | None = None
        s = first_chunk[plan.time_column]
        if plan.time_kind == "string" or kind_of_series(s) == "string":
            self.time_format = self._pick_format(s)
        elif kind_of_series(s) == "numeric":
            values = pd.to_numeric(s, errors="coerce").dropna().abs()
            median = float(values.median()) if len(values) else 0.0
            # 1e11 s is the year 5138 and 1e11 ms is 1973: magnitude tells the unit apart.
            self.epoch_factor = 1000.0 if median < 1e11 else 1.0 if median < 1e14 else 1e-3 if median < 1e17 else 1e-6

    @property
    def time_detail(self) -> str:
        """How the time column is read: ``ISO 8601 text``, ``epoch milliseconds by magnitude``..."""
        if self.time_format is not None:
            return "ISO 8601 text" if self.time_format == "ISO8601" else f"text like {self.time_format}"
        if self.epoch_factor is not None:
            unit = {1000.0: "seconds", 1.0: "milliseconds", 1e-3: "microseconds", 1e-6: "nanoseconds"}
            return f"epoch {unit.get(self.epoch_factor, 'numbers')} by magnitude"
        return "date/time values"

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
        kind = kind_of_series(s)
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
        if kind_of_series(s) in ("numeric", "bool") and not pd.api.types.is_object_dtype(s.dtype):
            values = s.to_numpy(dtype="float64", na_value=np.nan)
        else:  # text in what was a numeric column (CSV chunks are typed one by one) or Decimals
            coerced = pd.to_numeric(s, errors="coerce")
            bad = (coerced.isna() & s.notna()).to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise ReplayError(f"row {first_row + i}: {s.iloc[i]!r} in column {column!r} is not a number")
            values = coerced.to_numpy(dtype="float64", na_value=np.nan)
        return [None if v != v else v for v in values.tolist()]
