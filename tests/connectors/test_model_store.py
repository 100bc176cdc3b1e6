from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.model_store import LATEST, ModelStore, ModelStoreError
from tests.trained_model import MODEL, REF
from udfs.anomaly_score import AnomalyScore


def artifact(tmp_path: Path, version: str) -> tuple[Path, dict]:
    work = tmp_path / f"work-{version}"
    work.mkdir()
    (work / "model.keras").write_bytes(b"weights " * 1000)
    (work / "report.png").write_bytes(b"\x89PNG fake")
    manifest = {"version": version, "created_at": "2026-01-01T00:00:00+00:00", "features": {"names": ["a", "b"]},
                "threshold": 0.5, "model": {"file": "model.keras"}, "training": {"ranges": [[0, 0, 10]]}}
    return work, manifest


def test_local_round_trip_and_latest(tmp_path: Path):
    store = ModelStore(str(tmp_path / "store"))
    with pytest.raises(ModelStoreError, match="no model has been published"):
        store.latest_version()
    for v in ("v1", "v2"):
        store.publish(*artifact(tmp_path, v))
    assert store.versions() == ["v1", "v2"]
    assert store.latest_version() == "v2"
    folder, manifest = store.fetch()
    assert manifest["version"] == "v2" and manifest["training"]["ranges"] == [[0, 0, 10]]
    assert (folder / "model.keras").read_bytes() == b"weights " * 1000
    assert set(manifest["files"]) == {"model.keras", "report.png"}
    assert store.fetch("v1")[1]["version"] == "v1"
    (tmp_path / "again").mkdir()
    with pytest.raises(ModelStoreError, match="already exists"):
        store.publish(*artifact(tmp_path / "again", "v1"))


def test_file_uri_is_the_same_store(tmp_path: Path):
    ModelStore(str(tmp_path)).publish(*artifact(tmp_path, "v1"))
    assert ModelStore((tmp_path).as_uri()).latest_version() == "v1"


@pytest.mark.s3
def test_s3_round_trip(s3_settings, tmp_path: Path):
    import uuid

    uri = f"s3://{s3_settings.s3.bucket}/models-{uuid.uuid4().hex[:8]}"
    store = ModelStore(uri, s3_settings.s3)
    store.publish(*artifact(tmp_path, "v1"))
    store.publish(*artifact(tmp_path, "v2"))
    assert store.versions() == ["v1", "v2"] and store.latest_version() == "v2"
    folder, manifest = ModelStore(uri, s3_settings.s3).fetch(cache_dir=tmp_path / "cache")
    assert manifest["version"] == "v2"
    assert (folder / "report.png").read_bytes() == b"\x89PNG fake"
    # the objects really are on the S3 server's disk
    s3_dir = s3_settings.home / "s3" / "data" / s3_settings.s3.bucket / uri.rsplit("/", 1)[1]
    assert (s3_dir / "v2" / "manifest.json").exists() or any(s3_dir.rglob("manifest.json"))


def test_damaged_manifest_is_refused_with_a_clear_message(tmp_path: Path):
    store = ModelStore(str(tmp_path))
    store.publish(*artifact(tmp_path, "v1"))
    manifest_path = tmp_path / "v1" / "manifest.json"
    good = manifest_path.read_text()

    manifest_path.write_text(good[: len(good) // 2])
    with pytest.raises(ModelStoreError, match="manifest.json is not valid JSON.*damaged"):
        store.fetch()

    broken = json.loads(good)
    del broken["threshold"]
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(ModelStoreError, match=r"lacks \['threshold'\]"):
        store.fetch()

    future = {**json.loads(good), "format_version": 99}
    manifest_path.write_text(json.dumps(future))
    with pytest.raises(ModelStoreError, match="format 99 is not supported"):
        store.fetch()

    manifest_path.write_text(good)
    (tmp_path / "v1" / "model.keras").write_bytes(b"tampered")
    with pytest.raises(ModelStoreError, match="model.keras does not match its checksum"):
        store.fetch()


def test_incomplete_version_is_never_listed_or_loaded(tmp_path: Path):
    store = ModelStore(str(tmp_path))
    store.publish(*artifact(tmp_path, "v1"))
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "model.keras").write_bytes(b"half")
    assert store.versions() == ["v1"]
    (tmp_path / LATEST).write_text("v2\n")
    with pytest.raises(ModelStoreError, match="no manifest.json"):
        store.fetch()


def test_the_udf_never_fails_on_a_damaged_model(trained_model, tmp_path: Path, caplog):
    import shutil

    import pandas as pd

    store_dir = tmp_path / "store"
    shutil.copytree(trained_model[0], store_dir)
    (store_dir / MODEL / "artifacts" / trained_model[1]["artifact"] / "manifest.json").write_text("{not json")
    fn = AnomalyScore(str(store_dir), REF)
    with caplog.at_level("ERROR"):
        fn.open(None)
    assert "not valid JSON" in caplog.text and "no usable model" in caplog.text
    out = fn.eval(*[pd.Series([1.0]) for _ in trained_model[1]["features"]["names"]])
    assert out["score"].isna().all() and list(out["model_version"]) == ["none"]
