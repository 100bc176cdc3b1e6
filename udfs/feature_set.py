"""The feature set, declared once and shared by training and scoring.

A FeatureSet names the model's input columns in order and carries the normalisation fitted on
the training data (z-score: ``(x - mean) / scale``). It travels inside the model manifest, so the
scoring UDF applies exactly the transformation the model was trained with.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SCALE = 1e-6


class FeatureError(ValueError):
    """Input does not match the feature set (missing columns, wrong count, unfitted set)."""


@dataclass(frozen=True)
class FeatureSet:
    """Ordered feature names plus fitted normalisation (None until ``fit``)."""

    names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise FeatureError("a feature set needs at least one feature column")
        if len(set(self.names)) != len(self.names):
            raise FeatureError(f"duplicate feature names in {list(self.names)}")
        for stat in (self.mean, self.scale):
            if stat is not None and len(stat) != len(self.names):
                raise FeatureError(f"normalisation has {len(stat)} values for {len(self.names)} features")

    @classmethod
    def from_schema(cls, schema: dict[str, Any], include: Sequence[str] | None = None,
                    exclude: Sequence[str] = ()) -> FeatureSet:
        """The schema's numeric feature columns (connectors.avro_serde.feature_columns), filtered."""
        from connectors.avro_serde import feature_columns

        available = feature_columns(schema)
        if include:
            missing = [c for c in include if c not in available]
            if missing:
                raise FeatureError(f"feature columns {missing} are not numeric columns of {schema.get('name')}; "
                                   f"available: {available}")
            available = list(include)
        return cls(tuple(c for c in available if c not in set(exclude)))

    @property
    def fitted(self) -> bool:
        return self.mean is not None and self.scale is not None

    def __len__(self) -> int:
        return len(self.names)

    def fit(self, x: np.ndarray) -> FeatureSet:
        """Fit mean/scale on rows of ``x`` (n, len(self)); constant columns get scale 1."""
        x = self._check(x)
        if not np.isfinite(x).all():
            raise FeatureError("training rows contain NaN or infinite values; drop or impute them first")
        std = x.std(axis=0)
        scale = np.where(std < MIN_SCALE, 1.0, std)
        return FeatureSet(self.names, tuple(map(float, x.mean(axis=0))), tuple(map(float, scale)))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of ``x``; NaN/inf stay non-finite (callers decide what that means)."""
        if not self.fitted:
            raise FeatureError("the feature set is not fitted; call fit() on training data first")
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

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "mean": list(self.mean) if self.mean else None,
                "scale": list(self.scale) if self.scale else None, "normalisation": "zscore"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        if data.get("normalisation", "zscore") != "zscore":
            raise FeatureError(f"unknown normalisation {data.get('normalisation')!r}")
        mean, scale = data.get("mean"), data.get("scale")
        return cls(tuple(data["names"]), tuple(mean) if mean else None, tuple(scale) if scale else None)
