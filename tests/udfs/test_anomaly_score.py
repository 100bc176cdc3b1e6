from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udfs.anomaly_score import AnomalyScore
from udfs.autoencoder import NumpyScorer, TfScorer
from tests.trained_model import MODEL, REF, model_inputs, simulated_frame


def opened(uri: str, **options) -> AnomalyScore:
    fn = AnomalyScore(uri, REF, **options)
    fn.open(None)
    return fn


def test_scores_flags_and_version(trained_model):
    uri, manifest = trained_model
    fn = opened(uri)
    frame = simulated_frame(events=2000, seed=99, failure_rate=0.05)
    out = fn.eval(*model_inputs(frame, manifest))
    assert len(out) == len(frame)
    assert (out["model_version"] == manifest["version"]).all()
    assert out["score"].notna().all() and (out["score"] >= 0).all()
    warming = out["partial"].fillna("").str.startswith("warming up")
    assert warming.sum() == frame["vehicle_id"].nunique() * (manifest["features"]["window"] - 1)
    assert (out["is_anomaly"] == ((out["score"] > manifest["threshold"]) & ~warming)).all()
    labelled = frame["failure_label"].notna()
    # failures score far above normal readings (the model must have learned something)
    assert out.loc[labelled, "score"].median() > 5 * out.loc[~labelled, "score"].median()


def test_numpy_and_tf_engines_agree(trained_model):
    uri, manifest = trained_model
    tf_fn, np_fn = opened(uri, engine="tf"), opened(uri, engine="numpy")
    assert all(isinstance(m, TfScorer) for m, _ in tf_fn._model.scorer.members)
    assert all(isinstance(m, NumpyScorer) for m, _ in np_fn._model.scorer.members)
    frame = simulated_frame(events=1500, seed=3)
    cols = model_inputs(frame, manifest)
    np.testing.assert_allclose(tf_fn.eval(*cols)["score"], np_fn.eval(*cols)["score"], rtol=1e-4, atol=1e-6)


def test_wrong_number_of_columns_names_the_features_and_scores_nothing(trained_model, caplog):
    fn = opened(trained_model[0])
    with caplog.at_level("ERROR"):
        out = fn.eval(pd.Series([1.0]), pd.Series([2.0]))
    assert out["score"].isna().all() and list(out["model_version"]) == ["none"]
    assert "expected 17 sensor columns, or W x 17 sensor columns followed by W times" in caplog.text


def test_no_model_configured_is_a_clear_error():
    with pytest.raises(ValueError, match="vigil.model.uri"):
        AnomalyScore().open(None)
    with pytest.raises(ValueError, match="vigil.model.ref"):
        AnomalyScore("/some/store").open(None)


def _next_version(trained_model, store_dir, **changes):
    """Publish a copy of the session's model with ``changes`` to its manifest as the next version."""
    import shutil

    from connectors.model_registry import ModelRegistry

    uri, manifest = trained_model
    registry = ModelRegistry(str(store_dir))
    folder, _ = registry.fetch(registry.resolve(f"{MODEL}@1"))
    work = store_dir.parent / f"work-{len(list(store_dir.parent.iterdir()))}"
    shutil.copytree(folder, work)
    (work / "manifest.json").unlink()
    raw = {k: v for k, v in manifest.items() if k not in ("artifact", "model_name", "number", "files")}
    raw.update(version=f"{manifest['artifact']}-{work.name}", **changes)
    return registry, registry.publish(MODEL, work, raw, alias="challenger")


def test_hot_swap_follows_the_alias_and_refuses_what_does_not_fit(trained_model, tmp_path):
    import shutil
    import time

    uri, manifest = trained_model
    store_dir = tmp_path / "store"
    shutil.copytree(uri, store_dir)
    fn = opened(str(store_dir), refresh_seconds=0.01, features=manifest["features"]["names"],
                schema=manifest["schema"])
    frame = simulated_frame(events=50, seed=5)
    cols = model_inputs(frame, manifest)
    assert set(fn.eval(*cols)["model_version"]) == {f"{MODEL}@1"}

    registry, v2 = _next_version(trained_model, store_dir, threshold=manifest["threshold"] * 2)
    time.sleep(0.05)
    assert set(fn.eval(*cols)["model_version"]) == {f"{MODEL}@1"}  # a challenger is not scored with
    registry.set_alias(MODEL, "champion", v2.number, reason="test promotion")
    time.sleep(0.05)
    assert set(fn.eval(*cols)["model_version"]) == {f"{MODEL}@2"}

    # a version with its features in another order, and one of another schema: refused, scoring goes on
    reordered = dict(manifest["features"], names=list(reversed(manifest["features"]["names"])))
    for changes in ({"features": reordered}, {"schema": "dev.other.Thing@0123456789abcdef"}):
        _, bad = _next_version(trained_model, store_dir, **changes)
        registry.set_alias(MODEL, "champion", bad.number, reason="a mistake")
        time.sleep(0.05)
        out = fn.eval(*cols)
        assert set(out["model_version"]) == {f"{MODEL}@2"} and out["score"].notna().all()


def test_a_damaged_champion_falls_back_and_never_fails(trained_model, tmp_path):
    import shutil

    uri, manifest = trained_model
    store_dir = tmp_path / "store"
    shutil.copytree(uri, store_dir)
    registry, v2 = _next_version(trained_model, store_dir)
    registry.set_alias(MODEL, "champion", v2.number)
    (store_dir / MODEL / "artifacts" / v2.artifact / "member-0.keras").write_bytes(b"damaged")
    frame = simulated_frame(events=20, seed=6)
    cols = model_inputs(frame, manifest)
    # a (re)starting worker: the champion's files fail their checksum -> the version the job was planned with
    fn = opened(str(store_dir), fallback=1, features=manifest["features"]["names"])
    assert set(fn.eval(*cols)["model_version"]) == {f"{MODEL}@1"}
    # no fallback given: the alias's earlier target
    assert set(opened(str(store_dir)).eval(*cols)["model_version"]) == {f"{MODEL}@1"}
    # nothing usable at all: every row unscorable (the jobs dead-letter them), no exception
    (store_dir / MODEL / "artifacts" / manifest["artifact"] / "member-0.keras").write_bytes(b"damaged too")
    out = opened(str(store_dir)).eval(*cols)
    assert out["score"].isna().all() and set(out["model_version"]) == {"none"}


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
