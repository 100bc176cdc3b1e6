"""Input drift against the training baseline: the baseline, the population stability index (PSI),
and the drift gauge of a scoring UDF.

The training baseline (``baseline()``, kept as ``baseline`` in the manifest by the trainer): per
feature, the edges of ``bins`` quantile bins of the readings the model was fitted on (their minimum,
the inner quantiles, their maximum) and the share of those readings in each bin: bin i holds
edges[i-1] <= x < edges[i], so bin 0 holds what is below every training reading (share 0) and the
last bin what is at or above the training maximum; a reading outside the training range counts.
The population stability index of readings against it is ``sum((a - e) * ln(a / e))`` over the
bins (a, e: the readings' and the baseline's shares, each floored at ``PSI_FLOOR`` so an empty bin
does not give infinity). The usual reading: < 0.1 stable, 0.1 to 0.2 a moderate shift, > 0.2 a
shift that matters (the default drift threshold).

``DriftWindow`` is what a scoring UDF keeps per model: the readings it scores, counted into the
baseline's bins, and the PSI of each full window of ``size`` readings (the ``drift_max_psi`` Flink
gauge; ``vigil monitor`` computes the same PSI per minute from the scored topic).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PSI_FLOOR = 1e-4
DEFAULT_BINS = 10


def baseline(values: np.ndarray, names: Sequence[str], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The training baseline of ``values`` (rows x len(names)): per feature, quantile bin edges and
    the share of rows per bin (see the module docstring). Duplicate edges (a feature with few
    distinct values) are merged, so a feature may have fewer bins."""
    values = np.asarray(values, dtype=np.float64)
    features: dict[str, Any] = {}
    for j, name in enumerate(names):
        column = values[:, j]
        column = column[np.isfinite(column)]
        if not len(column):
            continue
        edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)))
        counts = bin_counts({"edges": edges}, column)
        features[name] = {"edges": [float(e) for e in edges], "shares": [float(c) for c in counts / len(column)]}
    return {"method": f"{bins} quantile bins of the training readings; PSI = sum((a - e) ln(a / e)), shares "
                      f"floored at {PSI_FLOOR:g}", "bins": bins, "rows": int(len(values)), "features": features}


def bin_counts(feature_baseline: Mapping[str, Any], values: np.ndarray) -> np.ndarray:
    """How many of the finite ``values`` fall in each of the baseline's bins."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    edges = np.asarray(feature_baseline["edges"], dtype=np.float64)
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)


def psi(feature_baseline: Mapping[str, Any], values: Iterable[float]) -> float | None:
    """The population stability index of ``values`` against one feature's baseline (None: no values)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return psi_of_counts(feature_baseline, bin_counts(feature_baseline, x))


def psi_of_counts(feature_baseline: Mapping[str, Any], counts: Sequence[int]) -> float | None:
    """PSI of readings already counted into the baseline's bins (None: no readings)."""
    total = sum(counts)
    if not total:
        return None
    expected = np.maximum(np.asarray(feature_baseline["shares"], dtype=np.float64), PSI_FLOOR)
    actual = np.maximum(np.asarray(counts, dtype=np.float64) / total, PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def summarise_drift(values: Mapping[str, float | None], watched: Sequence[str] | None) -> dict[str, Any]:
    values = {k: round(v, 5) for k, v in values.items() if v is not None}
    candidates = [k for k in values if watched is None or k in watched]
    top = max(candidates, key=values.get) if candidates else None
    return {"psi": values, "max_psi": values[top] if top else None, "max_feature": top}


def drift(base: Mapping[str, Any], columns: Mapping[str, Sequence[float]],
          watched: Sequence[str] | None = None) -> dict[str, Any]:
    """PSI per feature of ``columns`` against ``base`` (a manifest's ``baseline``), the largest and its
    feature (the largest among ``watched`` when given)."""
    return summarise_drift({name: psi(fb, columns.get(name, ())) for name, fb in base["features"].items()}, watched)


class DriftWindow:
    """PSI of one model's input over consecutive windows of ``size`` readings.

    ``add(rows)`` counts each feature's values (rows x features, in ``names`` order) into the
    baseline's bins; once a feature has ``size`` readings, its PSI becomes ``latest[name]`` and its
    counting starts again (``version`` names the model whose baseline it is). ``max_psi`` is the
    largest latest PSI among ``watched`` (every feature when None), None before a window is full or
    without a baseline (a manifest older than baselines)."""

    def __init__(self, base: Mapping[str, Any] | None, names: Sequence[str], size: int = 1000,
                 watched: Sequence[str] | None = None, version: str | None = None) -> None:
        self.size, self.version = size, version
        self.watched = list(watched) if watched else None
        features = (base or {}).get("features") or {}
        self._columns = [(j, name, features[name]) for j, name in enumerate(names) if name in features]
        self._counts = {name: np.zeros(len(fb["edges"]) + 1, dtype=np.int64) for _, name, fb in self._columns}
        self.latest: dict[str, float] = {}

    @property
    def available(self) -> bool:
        return bool(self._columns)

    def add(self, rows: np.ndarray) -> None:
        for j, name, fb in self._columns:
            values = rows[:, j]
            values = values[np.isfinite(values)]
            while len(values):
                counts = self._counts[name]
                room = self.size - int(counts.sum())
                counts += bin_counts(fb, values[:room])
                values = values[room:]
                if int(counts.sum()) >= self.size:
                    self.latest[name] = psi_of_counts(fb, counts)
                    counts[:] = 0

    @property
    def max_psi(self) -> float | None:
        values = [v for k, v in self.latest.items() if self.watched is None or k in self.watched]
        return max(values) if values else None
