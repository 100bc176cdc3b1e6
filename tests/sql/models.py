"""Two versions of one model for the SQL tests (champion and challenger), trained once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from connectors.avro_serde import load_schema, roles, schema_id
from connectors.model_registry import ModelRegistry
from jobs.training.trainer import TrainOptions, library_versions, new_version, train
from tests.trained_model import simulated_frame
from udfs.feature_set import FeatureSet

MODEL = "telemetry"


def _publish(registry: ModelRegistry, work: Path, *, seed: int, epochs: int) -> dict:
    schema = load_schema()
    settings = TrainOptions(epochs=epochs, quiet=True, min_rows=100, seed=seed)
    fields, model = train(simulated_frame(seed=seed), FeatureSet.from_schema(schema), roles(schema)["label"],
                          roles(schema)["time"], settings, work)
    model.save(work / "model.keras")
    manifest = {"version": new_version(), "created_at": "2026-01-01T00:00:00+00:00", "schema": schema_id(schema),
                "model": {"kind": "dense_autoencoder", "hidden": settings.hidden, "file": "model.keras"},
                **fields, "training": {"sources": {"test": True}}, "libraries": library_versions()}
    return registry.manifest(registry.publish(MODEL, work, manifest))


@pytest.fixture(scope="session")
def point_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, dict]:
    """(store, champion manifest, challenger manifest) of model ``telemetry``: two versions (each reads
    one reading, what SQL sessions call), trained with different seeds."""
    store = tmp_path_factory.mktemp("sql-models")
    registry = ModelRegistry(str(store))
    champion = _publish(registry, tmp_path_factory.mktemp("train-1"), seed=7, epochs=12)
    challenger = _publish(registry, tmp_path_factory.mktemp("train-2"), seed=8, epochs=6)
    assert registry.state(MODEL).aliases == {"champion": 1, "challenger": 2}
    return str(store), champion, challenger
