"""The feature set, declared once and shared by training and scoring: columns, temporal context, inputs.

A FeatureSet names the model's sensor columns in order, how much of each entity's recent history
the model sees, and the normalisation fitted on the training data. It travels inside the model
manifest, so every scoring path builds the model's inputs exactly as the trainer did.

**Temporal context.** A model reads, per reading, a :class:`Context`: the entity's last ``window``
readings (the current one and ``window - 1`` before it, in the order the job receives them: the
entity's Kafka log order) with their event times. The jobs compute it where Flink is fast (LAG
over an OVER window per entity in the Table job, keyed state in the DataStream job); the trainer
computes it from the Kafka log with :func:`context_from_frame`. From the context, ``context``
says what the model's inputs are:

* ``point``  (window 1): the current reading alone, z-scored (the dense autoencoder of old);
* ``window``: every reading of the window, each sensor z-scored with its own statistics (shared by
  all lags, so the window is one signal): ``window x sensors`` inputs;
* ``stats``: the current reading plus statistics over the window, per sensor: ``diff`` (change
  since the previous reading), rolling ``mean`` / ``std`` / ``min`` / ``max`` over the window's
  readings (or only those within ``horizon_seconds`` of the current one), and ``dt`` (log of 1 +
  seconds since the previous reading); each statistic z-scored.

**Cold start.** An entity with fewer readings than the window ("warming up") is scored with its
oldest reading repeated in the missing places (the statistics use only the readings it has); the
status says so and the jobs never raise an alarm on such a reading.

**Missing sensors.** A sensor missing (null, NaN, infinite) in a reading is imputed from the
entity's closest earlier reading that has it (else a later one in the window, else the training
mean); the status names the sensors imputed in the current reading. A reading with every sensor
missing has nothing to score: it is unscorable and the jobs route it to the DLQ with the sensors
named.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SCALE = 1e-6
CONTEXTS = ("point", "window", "stats")
STATS = ("diff", "mean", "std", "min", "max", "dt")
DEFAULT_STATS = STATS


class FeatureError(ValueError):
    """Input does not match the feature set (missing columns, wrong count, unfitted set)."""


@dataclass(frozen=True)
class Context:
    """Readings as a model sees them: ``values`` (n, W, F) float64, ``[:, 0]`` the current reading,
    ``[:, k]`` the entity's k-th reading before it (NaN: sensor missing); ``times`` (n, W) epoch
    milliseconds, NaN where the entity has no such earlier reading (and for a current reading
    without a time)."""

    values: np.ndarray
    times: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or self.times.shape != self.values.shape[:2]:
            raise FeatureError(f"a context needs values (n, W, F) and times (n, W), got {self.values.shape} and "
                               f"{self.times.shape}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def window(self) -> int:
        return self.values.shape[1]

    def head(self, window: int) -> Context:
        """The context of a shorter window (the newest ``window`` readings)."""
        if window > self.window:
            raise FeatureError(f"the model reads {window} readings per entity; the job provides {self.window}")
        return Context(self.values[:, :window], self.times[:, :window])

    @classmethod
    def point(cls, x: np.ndarray) -> Context:
        """Current readings only (rows of sensor values), as for a point model."""
        x = np.asarray(x, dtype=np.float64)
        return cls(x[:, None, :], np.zeros((len(x), 1)))


@dataclass(frozen=True)
class Status:
    """What :meth:`FeatureSet.inputs` found per reading: ``note`` (None for a full reading, else why
    it is partial or unscorable), ``warming`` (the entity had fewer readings than the window) and
    ``unscorable`` (every sensor missing)."""

    note: np.ndarray       # object: str | None
    warming: np.ndarray    # bool
    unscorable: np.ndarray  # bool


def _stat_names(names: Sequence[str], stats: Sequence[str]) -> list[str]:
    return [f"{name}.{s}" for s in stats if s != "dt" for name in names] + (["dt"] if "dt" in stats else [])


@dataclass(frozen=True)
class FeatureSet:
    """Sensor columns, temporal context and fitted normalisation (None until ``fit``)."""

    names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    window: int = 1
    context: str = "point"
    stats: tuple[str, ...] = ()
    horizon_seconds: float | None = None
    stat_mean: tuple[float, ...] | None = None
    stat_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise FeatureError("a feature set needs at least one feature column")
        if len(set(self.names)) != len(self.names):
            raise FeatureError(f"duplicate feature names in {list(self.names)}")
        for stat in (self.mean, self.scale):
            if stat is not None and len(stat) != len(self.names):
                raise FeatureError(f"normalisation has {len(stat)} values for {len(self.names)} features")
        if self.context not in CONTEXTS:
            raise FeatureError(f"unknown temporal context {self.context!r}; use one of {', '.join(CONTEXTS)}")
        if not isinstance(self.window, int) or self.window < 1:
            raise FeatureError(f"the window must be a whole number of readings >= 1, got {self.window!r}")
        if (self.context == "point") != (self.window == 1):
            raise FeatureError(f"context {self.context!r} with a window of {self.window}: the point context "
                               f"reads one reading, the others two or more")
        unknown = [s for s in self.stats if s not in STATS]
        if unknown:
            raise FeatureError(f"unknown statistics {unknown}; use some of {', '.join(STATS)}")
        if self.context == "stats" and not self.stats:
            raise FeatureError("the stats context needs at least one statistic")
        if self.stat_mean is not None and len(self.stat_mean) != len(self.stat_names):
            raise FeatureError("the statistics' normalisation does not match the statistics")

    # --- declaration ---------------------------------------------------------------------------
    @classmethod
    def from_schema(cls, schema: dict[str, Any], include: Sequence[str] | None = None,
                    exclude: Sequence[str] = (), **context: Any) -> FeatureSet:
        """The schema's numeric feature columns (connectors.avro_serde.feature_columns), filtered."""
        from connectors.avro_serde import feature_columns

        available = feature_columns(schema)
        if include:
            missing = [c for c in include if c not in available]
            if missing:
                raise FeatureError(f"feature columns {missing} are not numeric columns of {schema.get('name')}; "
                                   f"available: {available}")
            available = list(include)
        return cls(tuple(c for c in available if c not in set(exclude)), **context)

    @property
    def fitted(self) -> bool:
        return self.mean is not None and self.scale is not None and (
            self.context != "stats" or self.stat_mean is not None)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def stat_names(self) -> list[str]:
        return _stat_names(self.names, self.stats) if self.context == "stats" else []

    @property
    def input_width(self) -> int:
        """How many numbers the model reads per reading."""
        if self.context == "window":
            return self.window * len(self.names)
        return len(self.names) + len(self.stat_names)

    def input_sensors(self) -> list[int]:
        """The sensor (index into ``names``) each model input belongs to; the ``dt`` statistic is its own."""
        f = len(self.names)
        if self.context == "window":
            return [j for _ in range(self.window) for j in range(f)]
        stats = [j for s in self.stats if s != "dt" for j in range(f)] + ([f] if "dt" in self.stats else [])
        return list(range(f)) + (stats if self.context == "stats" else [])

    def describe(self) -> str:
        if self.context == "point":
            return f"each reading alone ({len(self.names)} sensor(s))"
        if self.context == "window":
            return f"the entity's last {self.window} readings of {len(self.names)} sensor(s)"
        horizon = f", within {self.horizon_seconds:g} s" if self.horizon_seconds else ""
        return (f"each reading plus {', '.join(self.stats)} over the entity's last {self.window} readings"
                f"{horizon}")

    # --- inputs --------------------------------------------------------------------------------
    def prepare(self, ctx: Context) -> tuple[np.ndarray, np.ndarray, Status]:
        """(values, present, status): the context with imputation and cold-start padding applied."""
        ctx = ctx.head(self.window)
        values = np.array(ctx.values, dtype=np.float64)
        values[~np.isfinite(values)] = np.nan
        n, w, f = values.shape
        present = ~np.isnan(ctx.times)
        present[:, 0] = True
        values[~present] = np.nan
        missing_now = np.isnan(values[:, 0])
        for k in range(w - 2, -1, -1):   # the closest earlier reading that has the sensor
            values[:, k] = np.where(np.isnan(values[:, k]), values[:, k + 1], values[:, k])
        for k in range(1, w):            # else a later one in the window
            gap = np.isnan(values[:, k]) & present[:, k, None]
            values[:, k] = np.where(gap, values[:, k - 1], values[:, k])
        if self.mean is not None:        # else the training mean
            values = np.where(np.isnan(values) & present[:, :, None], np.asarray(self.mean), values)
        for k in range(1, w):            # cold start: the oldest reading repeated
            values[:, k] = np.where(present[:, k, None], values[:, k], values[:, k - 1])
        readings = present.sum(axis=1)
        warming = readings < w
        unscorable = missing_now.all(axis=1)
        note = np.full(n, None, dtype=object)
        for i in np.flatnonzero(missing_now.any(axis=1) | warming):
            sensors = ", ".join(name for name, gone in zip(self.names, missing_now[i]) if gone)
            if unscorable[i]:
                note[i] = f"every sensor missing ({sensors})"
                continue
            parts = [f"imputed {sensors}"] if sensors else []
            if warming[i]:
                parts.append(f"warming up ({readings[i]} of {w} readings)")
            note[i] = "; ".join(parts)
        return values, present, Status(note, warming, unscorable)

    def raw_stats(self, values: np.ndarray, present: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The statistics columns (unnormalised) of prepared values, in ``stat_names`` order."""
        use = present.copy()
        if self.horizon_seconds:
            age = times[:, :1] - times
            use &= ~(age > self.horizon_seconds * 1000)
        use[:, 0] = True
        masked = np.where(use[:, :, None], values, np.nan)
        cols = []
        for s in self.stats:
            if s == "diff":
                cols.append(np.where(present[:, 1:2], values[:, 0] - values[:, 1], 0.0))
            elif s == "mean":
                cols.append(np.nanmean(masked, axis=1))
            elif s == "std":
                cols.append(np.nanstd(masked, axis=1))
            elif s == "min":
                cols.append(np.nanmin(masked, axis=1))
            elif s == "max":
                cols.append(np.nanmax(masked, axis=1))
        out = np.column_stack(cols) if cols else np.empty((len(values), 0))
        if "dt" in self.stats:
            gap = np.where(present[:, 1] & np.isfinite(times[:, 0]) & np.isfinite(times[:, 1]),
                           (times[:, 0] - times[:, 1]) / 1000.0, 0.0)
            out = np.column_stack([out, np.log1p(np.maximum(gap, 0.0))])
        return out

    def inputs(self, ctx: Context) -> tuple[np.ndarray, Status]:
        """The model's normalised float32 inputs (n, input_width) and each reading's status.

        Unscorable rows get zeros (their scores are discarded)."""
        if not self.fitted:
            raise FeatureError("the feature set is not fitted; call fit() on training data first")
        values, present, status = self.prepare(ctx)
        values = np.where(status.unscorable[:, None, None], 0.0, values)
        z = (values - np.asarray(self.mean)) / np.asarray(self.scale)
        if self.context == "window":
            x = z.reshape(len(z), -1)
        elif self.context == "point":
            x = z[:, 0]
        else:
            stats = (self.raw_stats(values, present, ctx.head(self.window).times) - np.asarray(self.stat_mean)) \
                / np.asarray(self.stat_scale)
            x = np.column_stack([z[:, 0], stats])
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), status

    def fit(self, x: np.ndarray | Context) -> FeatureSet:
        """Fit normalisation on training readings (rows of sensor values, or a Context whose current
        readings are the rows); constant columns get scale 1."""
        ctx = x if isinstance(x, Context) else Context.point(self._check(x))
        current = ctx.values[:, 0]
        if current.shape[1] != len(self.names):
            raise FeatureError(f"expected rows of {len(self.names)} features {list(self.names)}, got "
                               f"{current.shape[1]} columns")
        if not np.isfinite(current).all():
            raise FeatureError("training rows contain NaN or infinite values; drop or impute them first")
        mean, scale = _zscore(current)
        fitted = FeatureSet(self.names, mean, scale, self.window, self.context, self.stats, self.horizon_seconds)
        if self.context != "stats":
            return fitted
        values, present, _ = fitted.prepare(ctx)
        stat_mean, stat_scale = _zscore(fitted.raw_stats(values, present, ctx.head(self.window).times))
        return FeatureSet(self.names, mean, scale, self.window, self.context, self.stats, self.horizon_seconds,
                          stat_mean, stat_scale)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of rows of sensor values (point context); NaN/inf stay non-finite."""
        if not self.fitted:
            raise FeatureError("the feature set is not fitted; call fit() on training data first")
        if self.context != "point":
            raise FeatureError(f"this feature set reads {self.describe()}: use inputs(Context)")
        x = self._check(x)
        return ((x - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

    def matrix(self, frame: Any) -> np.ndarray:
        """The feature columns of a pandas DataFrame, in order, as float64."""
        missing = [c for c in self.names if c not in frame.columns]
        if missing:
            raise FeatureError(f"input lacks feature columns {missing}")
        return frame[list(self.names)].to_numpy(dtype=np.float64, na_value=np.nan)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise FeatureError(f"expected rows of {len(self.names)} features {list(self.names)}, got shape {x.shape}")
        return x

    # --- manifest ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": list(self.names), "mean": list(self.mean) if self.mean else None,
                               "scale": list(self.scale) if self.scale else None, "normalisation": "zscore",
                               "window": self.window, "context": self.context}
        if self.context == "stats":
            out.update(stats=list(self.stats), horizon_seconds=self.horizon_seconds,
                       stat_names=self.stat_names, stat_mean=list(self.stat_mean) if self.stat_mean else None,
                       stat_scale=list(self.stat_scale) if self.stat_scale else None)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        if data.get("normalisation", "zscore") != "zscore":
            raise FeatureError(f"unknown normalisation {data.get('normalisation')!r}")
        tup = lambda key: tuple(data[key]) if data.get(key) else None  # noqa: E731
        return cls(tuple(data["names"]), tup("mean"), tup("scale"), int(data.get("window", 1)),
                   data.get("context", "point"), tuple(data.get("stats") or ()), data.get("horizon_seconds"),
                   tup("stat_mean"), tup("stat_scale"))


def _zscore(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    std = x.std(axis=0)
    scale = np.where(std < MIN_SCALE, 1.0, std)
    return tuple(map(float, x.mean(axis=0))), tuple(map(float, scale))


# --- building contexts ----------------------------------------------------------------------------

def context_from_frame(frame: Any, names: Sequence[str], entity: str | None, time: str | None,
                       order: Sequence[str], window: int) -> Context:
    """The context of every row of ``frame`` (in its row order): each entity's previous readings in
    the order given by the ``order`` columns (the Kafka log order: partition, offset). What the
    jobs compute with LAG per entity / keyed state, for the trainer and the tests."""
    import pandas as pd

    n = len(frame)
    values = np.full((n, window, len(names)), np.nan)
    times = np.full((n, window), np.nan)
    if n == 0:
        return Context(values, times)
    sort_cols = [c for c in ([entity] if entity else []) + list(order) if c in frame]
    ordered = frame.sort_values(sort_cols, kind="stable") if sort_cols else frame
    positions = frame.index.get_indexer(ordered.index)
    sensors = ordered[list(names)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64,
                                                                                   na_value=np.nan)
    millis = time_millis(ordered[time]) if time and time in ordered else np.zeros(n)
    keys = ordered[entity].to_numpy() if entity and entity in ordered else np.zeros(n)
    starts = np.r_[True, keys[1:] != keys[:-1]] if n else np.array([], bool)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.arange(n) - group_start
    for k in range(window):
        has = rank >= k
        src = np.arange(n) - k
        values[positions[has], k] = sensors[src[has]]
        times[positions[has], k] = millis[src[has]]
    times[:, 0] = np.where(np.isnan(times[:, 0]), 0.0, times[:, 0])
    return Context(values, times)


def time_millis(series: Any) -> np.ndarray:
    """Epoch milliseconds (float, NaN for missing) of a column of times (datetime, pandas or epoch ms)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    series = pd.Series(series)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
        stamps = series.dt.tz_localize("UTC") if series.dt.tz is None else series  # what Arrow hands the UDF
    else:
        stamps = pd.to_datetime(series, utc=True, errors="coerce")
    nanos = stamps.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    out = nanos.astype(np.float64) / 1e6
    out[stamps.isna().to_numpy()] = np.nan
    return out


def context_from_columns(columns: Sequence[Any], n_features: int) -> Context:
    """A context from the flat argument list the jobs pass: the current reading's sensors, then each
    earlier reading's (window - 1 times), then the window's event times (omitted for a window of 1)."""
    if len(columns) == n_features:
        x = np.column_stack([_numeric(c) for c in columns]) if columns else np.empty((0, 0))
        return Context.point(x)
    window, rest = divmod(len(columns), n_features + 1)
    if rest or window < 2:
        raise FeatureError(f"expected {n_features} sensor columns, or W x {n_features} sensor columns followed by W "
                           f"times (W >= 2), got {len(columns)} columns")
    n = len(columns[0])
    values = np.empty((n, window, n_features))
    for k in range(window):
        for j in range(n_features):
            values[:, k, j] = _numeric(columns[k * n_features + j])
    times = np.column_stack([time_millis_any(c) for c in columns[window * n_features:]])
    return Context(values, times)


def _numeric(series: Any) -> np.ndarray:
    import pandas as pd

    if isinstance(series, pd.Series) and series.dtype.kind == "f":  # the usual case: no conversion
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(pd.Series(series), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def time_millis_any(series: Any) -> np.ndarray:
    import pandas as pd

    return time_millis(pd.Series(series))
