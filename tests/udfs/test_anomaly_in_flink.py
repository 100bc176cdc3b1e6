"""The UDF inside Flink's Python workers (mini-cluster): same scores as plain Python, callable from SQL.

A point model (``ANOMALY(sensor, ...)``, as from the SQL client) and the default windowed model
(``ANOMALY(sensors, earlier readings' sensors, times)``, as the jobs call it) in one job each.
"""
from __future__ import annotations

import numpy as np
import pytest

from jobs.run_sql import job_parameters
from tests.trained_model import REF, model_inputs, simulated_frame
from udfs.anomaly_score import AnomalyScore, anomaly_udf

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def rows_and_expected(point_model):
    uri, manifest = point_model
    names = manifest["features"]["names"]
    frame = simulated_frame(events=800, seed=11, failure_rate=0.05)
    frame.loc[5, names[3]] = np.nan  # a missing sensor: imputed, flagged partial
    frame.loc[6, names] = np.nan     # every sensor missing: unscorable
    fn = AnomalyScore(uri, REF)
    fn.open(None)
    expected = fn.eval(*[frame[c] for c in names])
    assert expected.loc[5, "partial"] == f"imputed {names[3]}" and np.isnan(expected.loc[6, "score"])
    return frame, names, expected


def _table(t_env, frame, names):
    from pyflink.table import DataTypes

    row_type = DataTypes.ROW([DataTypes.FIELD("id", DataTypes.BIGINT())]
                             + [DataTypes.FIELD(c, DataTypes.DOUBLE()) for c in names])
    rows = [(int(i), *[None if np.isnan(v) else float(v) for v in values])
            for i, values in zip(frame.index, frame[names].to_numpy())]
    return t_env.from_elements(rows, row_type)


def test_same_scores_in_a_minicluster_job_as_in_python(point_model, rows_and_expected, flink_activated):
    from pyflink.table.expressions import col

    from jobs.core.flink_env import table_environment

    uri, manifest = point_model
    frame, names, expected = rows_and_expected
    t_env = table_environment(streaming=False, parallelism__default=1,
                              **{"python__fn-execution__arrow__batch__size": 100})
    scored = _table(t_env, frame, names).select(col("id"), anomaly_udf(uri, REF)(*[col(c) for c in names]).alias("r"))
    # flattened: PyFlink's collect() cannot unpickle a null inside a nested row
    flat = scored.select(col("id"), col("r").get("score"), col("r").get("is_anomaly"), col("r").get("model_version"))
    out = {r[0]: tuple(r)[1:] for r in flat.execute().collect()}
    assert len(out) == len(frame)
    for i, row in expected.iterrows():
        got = out[i]
        if np.isnan(row["score"]):
            assert got[0] is None and got[1] is None
        else:
            # float32 model: Arrow batches of other sizes round the last digits differently
            assert got[0] == pytest.approx(row["score"], rel=1e-5)
            assert got[1] == bool(row["is_anomaly"])
        assert got[2] == manifest["version"]


def test_sql_calls_the_function_by_name(point_model, rows_and_expected, flink_activated):
    from jobs.core.flink_env import table_environment

    uri, manifest = point_model
    frame, names, expected = rows_and_expected
    t_env = table_environment(streaming=False, parallelism__default=1,
                              **{"pipeline__global-job-parameters": job_parameters({"vigil.model.uri": uri,
                                                                                     "vigil.model.ref": REF})})
    t_env.create_temporary_view("readings", _table(t_env, frame.head(50), names))
    t_env.execute_sql("CREATE TEMPORARY SYSTEM FUNCTION ANOMALY AS 'udfs.anomaly_score.anomaly' LANGUAGE PYTHON")
    result = t_env.execute_sql(
        f"SELECT id, ANOMALY({', '.join(names)}).score, ANOMALY({', '.join(names)}).model_version FROM readings")
    rows = sorted(result.collect(), key=lambda r: r[0])
    assert len(rows) == 50
    for r in rows:
        exp = expected.loc[r[0], "score"]
        assert (r[1] is None) if np.isnan(exp) else r[1] == pytest.approx(exp, rel=1e-5)
        assert r[2] == manifest["version"]


def test_a_windowed_model_scores_the_same_in_flink_as_in_python(trained_model, flink_activated):
    import pandas as pd
    from pyflink.table import DataTypes
    from pyflink.table.expressions import col

    from jobs.core.flink_env import table_environment

    uri, manifest = trained_model
    frame = simulated_frame(events=300, seed=12, failure_rate=0.05)
    args = model_inputs(frame, manifest)
    fn = AnomalyScore(uri, REF)
    fn.open(None)
    expected = fn.eval(*args)
    names = [f"a{i}" for i in range(len(args))]
    matrix = pd.concat(args, axis=1).to_numpy()
    rows = [(i, *[None if np.isnan(v) else float(v) for v in values]) for i, values in enumerate(matrix)]
    row_type = DataTypes.ROW([DataTypes.FIELD("id", DataTypes.BIGINT())]
                             + [DataTypes.FIELD(n, DataTypes.DOUBLE()) for n in names])
    t_env = table_environment(streaming=False, parallelism__default=1,
                              **{"python__fn-execution__arrow__batch__size": 64})
    scored = t_env.from_elements(rows, row_type).select(col("id"), anomaly_udf(uri, REF)(*[col(n) for n in names])
                                                        .alias("r"))
    flat = scored.select(col("id"), col("r").get("score"), col("r").get("is_anomaly"))
    out = {r[0]: tuple(r)[1:] for r in flat.execute().collect()}
    assert len(out) == len(frame)
    for i, row in expected.iterrows():
        assert out[i][0] == pytest.approx(row["score"], rel=1e-5) and out[i][1] == bool(row["is_anomaly"])
