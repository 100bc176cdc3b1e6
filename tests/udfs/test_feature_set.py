"""The feature set's temporal context: cold start, imputation, statistics, the jobs' argument layout."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udfs.feature_set import Context, FeatureError, FeatureSet, context_from_columns, context_from_frame

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def frame(values: dict[str, list], entity: list[str], seconds: list[float] | None = None) -> pd.DataFrame:
    n = len(entity)
    return pd.DataFrame({"id": entity, "t": T0 + pd.to_timedelta(seconds or list(range(n)), unit="s"),
                         "p": range(n), **values})


def fitted(context: str = "window", window: int = 3, **kwargs) -> FeatureSet:
    names = ("a", "b")
    return FeatureSet(names, (10.0, 100.0), (1.0, 10.0), window, context, **kwargs)


def test_each_entity_sees_its_own_previous_readings_in_log_order():
    rows = frame({"a": [1, 2, 3, 4, 5], "b": [10, 20, 30, 40, 50]}, ["x", "y", "x", "y", "x"])
    ctx = context_from_frame(rows, ["a", "b"], "id", "t", ["p"], 3)
    # row 4 (x's third reading): itself, then x's readings 2 and 0
    assert ctx.values[4, :, 0].tolist() == [5, 3, 1]
    assert ctx.times[4].tolist() == [(T0 + pd.Timedelta(seconds=s)).value / 1e6 for s in (4, 2, 0)]
    # row 1 (y's first reading): nothing before it
    assert ctx.values[1, 0].tolist() == [2, 20] and np.isnan(ctx.times[1, 1:]).all()


def test_an_entity_warming_up_is_padded_with_its_oldest_reading_and_says_so():
    rows = frame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}, ["x", "x", "x"])
    features = fitted(window=3)
    values, present, status = features.prepare(context_from_frame(rows, ["a", "b"], "id", "t", ["p"], 3))
    assert values[0, :, 0].tolist() == [1, 1, 1] and values[1, :, 0].tolist() == [2, 1, 1]
    assert status.warming.tolist() == [True, True, False]
    assert status.note.tolist() == ["warming up (1 of 3 readings)", "warming up (2 of 3 readings)", None]
    assert present.tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_a_missing_sensor_is_imputed_from_the_closest_reading_and_named():
    rows = frame({"a": [1.0, np.nan, 3.0, np.inf], "b": [10.0, 20.0, np.nan, 40.0]}, ["x"] * 4)
    features = fitted(window=3)
    values, _, status = features.prepare(context_from_frame(rows, ["a", "b"], "id", "t", ["p"], 3))
    assert values[1, 0].tolist() == [1.0, 20.0]   # a: from the reading before
    assert values[2, 0].tolist() == [3.0, 20.0]   # b: the closest earlier reading that has it
    assert values[3, 0].tolist() == [3.0, 40.0]   # inf is missing too
    assert status.note[1] == "imputed a; warming up (2 of 3 readings)"
    assert status.note[3] == "imputed a" and not status.unscorable.any()
    # an entity's first reading has no earlier one: the training mean
    alone = np.full((1, 3, 2), np.nan)
    alone[0, 0] = [np.nan, 5.0]
    first = features.prepare(Context(alone, np.array([[0.0, np.nan, np.nan]])))[0]
    assert first[0, 0].tolist() == [10.0, 5.0]


def test_a_reading_with_every_sensor_missing_is_unscorable_and_names_them():
    features = fitted(context="point", window=1)
    x, status = features.inputs(Context.point(np.array([[np.nan, None], [11.0, 90.0]], dtype=float)))
    assert status.unscorable.tolist() == [True, False]
    assert status.note[0] == "every sensor missing (a, b)"
    assert x[1].tolist() == pytest.approx([1.0, -1.0])


def test_window_statistics_within_a_horizon():
    rows = frame({"a": [1.0, 2.0, 4.0, 8.0], "b": [10.0] * 4}, ["x"] * 4, seconds=[0, 1, 2, 30])
    ctx = context_from_frame(rows, ["a", "b"], "id", "t", ["p"], 4)
    features = FeatureSet(("a", "b"), (0.0, 0.0), (1.0, 1.0), 4, "stats", ("diff", "mean", "max", "dt"))
    values, present, _ = features.prepare(ctx)
    stats = features.raw_stats(values, present, ctx.times)
    assert features.stat_names == ["a.diff", "b.diff", "a.mean", "b.mean", "a.max", "b.max", "dt"]
    assert stats[3].tolist() == pytest.approx([4.0, 0.0, 15 / 4, 10.0, 8.0, 10.0, np.log1p(28.0)])
    near = FeatureSet(("a", "b"), (0.0, 0.0), (1.0, 1.0), 4, "stats", ("mean",), horizon_seconds=5)
    assert near.raw_stats(values, present, ctx.times)[3].tolist() == [8.0, 10.0]  # only itself is that recent


def test_the_jobs_argument_layout_gives_the_trainers_context():
    rng = np.random.default_rng(1)
    rows = frame({"a": rng.normal(size=12), "b": rng.normal(size=12)}, ["x", "y", "z"] * 4)
    ctx = context_from_frame(rows, ["a", "b"], "id", "t", ["p"], 3)
    # what the jobs pass: the sensors of each lag (newest first), then the lags' times
    cols = [pd.Series(ctx.values[:, k, j]) for k in range(3) for j in range(2)]
    cols += [pd.Series(pd.to_datetime(ctx.times[:, k], unit="ms", utc=True)) for k in range(3)]
    again = context_from_columns(cols, 2)
    np.testing.assert_array_equal(np.isnan(again.values), np.isnan(ctx.values))
    np.testing.assert_allclose(np.nan_to_num(again.values), np.nan_to_num(ctx.values))
    np.testing.assert_allclose(np.nan_to_num(again.times[:, 1:], nan=-1), np.nan_to_num(ctx.times[:, 1:], nan=-1))
    with pytest.raises(FeatureError, match="expected 2 sensor columns"):
        context_from_columns(cols[:5], 2)


def test_fitting_on_one_sensor_with_a_window_learns_the_shape():
    series = np.sin(np.arange(300) / 5.0)
    rows = frame({"v": series}, ["m"] * 300)
    ctx = context_from_frame(rows, ["v"], "id", "t", ["p"], 4)
    features = FeatureSet(("v",), window=4, context="window").fit(ctx)
    x, status = features.inputs(ctx)
    assert x.shape == (300, 4) and features.input_sensors() == [0, 0, 0, 0]
    assert status.warming.sum() == 3
    assert FeatureSet.from_dict(features.to_dict()) == features
