"""A small model trained once per session on simulated readings, published to a local store."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from connectors.avro_serde import load_schema, roles, schema_id
from connectors.model_registry import ModelRegistry
from jobs import simulation
from jobs.training.trainer import TrainOptions, library_versions, new_version, train
from udfs.feature_set import FeatureSet

MODEL = "telemetry"  # the registry name of the session's model
REF = f"{MODEL}@champion"


def simulated_frame(events: int = 6000, seed: int = 7, failure_rate: float = 0.03) -> pd.DataFrame:
    settings = simulation.FleetSettings(vehicles=10, events=events, seed=seed, failure_rate=failure_rate)
    return pd.DataFrame(list(simulation.generate(settings)))


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """(store uri, manifest) of a quickly trained model: version 1 of model ``telemetry``, its champion."""
    schema = load_schema()
    frame = simulated_frame()
    settings = TrainOptions(epochs=12, quiet=True,
                             min_rows=100)
    work = tmp_path_factory.mktemp("train")
    fields, model = train(frame, FeatureSet.from_schema(schema), roles(schema)["label"], roles(schema)["time"],
                          settings, work)
    model.save(work / "model.keras")
    manifest = {"version": new_version(), "created_at": "2026-01-01T00:00:00+00:00", "schema": schema_id(schema),
                "model": {"kind": "dense_autoencoder", "hidden": settings.hidden, "file": "model.keras"},
                **fields, "training": {"sources": {"test": True}}, "libraries": library_versions()}
    store_dir = tmp_path_factory.mktemp("models")
    registry = ModelRegistry(str(store_dir))
    version = registry.publish(MODEL, work, manifest)
    return str(store_dir), registry.manifest(version)


@pytest.fixture
def model_dir(trained_model) -> Path:
    return Path(trained_model[0])
