from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udfs.anomaly_score import AnomalyScore
from udfs.autoencoder import NumpyScorer, TfScorer
from tests.trained_model import simulated_frame


def opened(uri: str, **options) -> AnomalyScore:
    fn = AnomalyScore(uri, **options)
    fn.open(None)
    return fn


def test_scores_flags_and_version(trained_model):
    uri, manifest = trained_model
    fn = opened(uri)
    frame = simulated_frame(events=2000, seed=99, failure_rate=0.05)
    names = manifest["features"]["names"]
    out = fn.eval(*[frame[c] for c in names])
    assert len(out) == len(frame)
    assert (out["model_version"] == manifest["version"]).all()
    assert out["score"].notna().all() and (out["score"] >= 0).all()
    assert (out["is_anomaly"] == (out["score"] > manifest["threshold"])).all()
    labelled = frame["failure_label"].notna()
    # failures score far above normal readings (the model must have learned something)
    assert out.loc[labelled, "score"].median() > 5 * out.loc[~labelled, "score"].median()


def test_numpy_and_tf_engines_agree(trained_model):
    uri, manifest = trained_model
    tf_fn, np_fn = opened(uri, engine="tf"), opened(uri, engine="numpy")
    assert isinstance(tf_fn._model.scorer, TfScorer) and isinstance(np_fn._model.scorer, NumpyScorer)
    frame = simulated_frame(events=1500, seed=3)
    cols = [frame[c] for c in manifest["features"]["names"]]
    np.testing.assert_allclose(tf_fn.eval(*cols)["score"], np_fn.eval(*cols)["score"], rtol=1e-4, atol=1e-6)


def test_wrong_number_of_columns_names_the_features(trained_model):
    fn = opened(trained_model[0])
    with pytest.raises(ValueError, match="expects 17 feature columns"):
        fn.eval(pd.Series([1.0]), pd.Series([2.0]))


def test_no_model_configured_is_a_clear_error():
    with pytest.raises(ValueError, match="vigil.model.uri"):
        AnomalyScore().open(None)


def test_hot_swap_picks_up_a_newly_published_model(trained_model, tmp_path):
    import shutil

    from connectors.model_store import ModelStore

    uri, manifest = trained_model
    store_dir = tmp_path / "store"
    shutil.copytree(uri, store_dir)
    fn = opened(str(store_dir), refresh_seconds=0.01)
    frame = simulated_frame(events=50, seed=5)
    cols = [frame[c] for c in manifest["features"]["names"]]
    assert set(fn.eval(*cols)["model_version"]) == {manifest["version"]}

    src = store_dir / manifest["version"]
    work = tmp_path / "next"
    shutil.copytree(src, work)
    (work / "manifest.json").unlink()
    newer = {**manifest, "version": manifest["version"] + "-b", "threshold": manifest["threshold"] * 2}
    ModelStore(str(store_dir)).publish(work, newer)
    import time

    time.sleep(0.05)
    out = fn.eval(*cols)
    assert set(out["model_version"]) == {newer["version"]}


def test_device_selection_falls_back_to_the_cpu_and_says_so_once(monkeypatch, caplog):
    """A worker that sees no GPU: 'auto' and 'gpu:N' fall back to the CPU, logged once."""
    import tensorflow as tf

    from udfs import anomaly_score

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(anomaly_score, "_device_logged", False)
    with caplog.at_level("WARNING", logger=anomaly_score.log.name):
        assert anomaly_score.select_device("auto") == "cpu"
        assert anomaly_score.select_device("gpu:1") == "cpu"
    messages = [r.getMessage() for r in caplog.records if "ANOMALY scores on the CPU" in r.getMessage()]
    assert messages == ["ANOMALY scores on the CPU: no GPU is visible to this worker (asked for auto)"]
    with pytest.raises(ValueError, match="auto, cpu, gpu or gpu:N"):
        anomaly_score.select_device("tpu")
