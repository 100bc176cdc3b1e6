"""The contract every UDF in udfs/ passes: pickles before open, length in == length out, defined NaN/inf."""
from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from tests.trained_model import REF
from udfs.anomaly_score import AnomalyScore


def all_udfs(uri: str) -> list:
    return [AnomalyScore(uri, REF), AnomalyScore(uri, REF, engine="tf"), AnomalyScore(uri, REF, engine="numpy")]


@pytest.fixture
def udf_cases(point_model):
    """ANOMALY(sensors...) of a point model: one argument per sensor (windows: tests/udfs/test_anomaly_score.py)."""
    uri, manifest = point_model
    return [(fn, len(manifest["features"]["names"])) for fn in all_udfs(uri)]


def test_pickles_before_open(udf_cases):
    for fn, _ in udf_cases:
        clone = pickle.loads(cloudpickle.dumps(fn))
        assert clone.model_uri == fn.model_uri


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_length_in_equals_length_out(udf_cases, rows):
    rng = np.random.default_rng(rows)
    for fn, n in udf_cases:
        fn.open(None)
        out = fn.eval(*[pd.Series(rng.normal(size=rows) * 10 + 50) for _ in range(n)])
        assert len(out) == rows


def test_nan_inf_and_null_are_imputed_or_unscorable_never_a_crash(udf_cases, point_model):
    names = point_model[1]["features"]["names"]
    for fn, n in udf_cases:
        fn.open(None)
        cols = [pd.Series([1.0, np.nan, np.inf, -np.inf, None, 2.0, np.nan], dtype="float64") for _ in range(n)]
        cols[0] = pd.Series([1.0, 1.0, 1.0, 1.0, 1.0, np.nan, None])
        out = fn.eval(*cols)
        assert len(out) == 7
        # a missing or non-finite sensor is imputed (and named); with every sensor missing, nothing to score
        assert out["score"].notna().tolist() == [True] * 6 + [False]
        assert out["is_anomaly"].isna().tolist() == [False] * 6 + [True]
        assert out["partial"].isna().tolist()[0] and out["partial"][1] == "imputed " + ", ".join(names[1:])
        assert out["partial"][5] == f"imputed {names[0]}" and out["partial"][6].startswith("every sensor missing")
        assert out["model_version"].notna().all()


def test_empty_batch(udf_cases):
    for fn, n in udf_cases:
        fn.open(None)
        assert len(fn.eval(*[pd.Series([], dtype="float64") for _ in range(n)])) == 0
