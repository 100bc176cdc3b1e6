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


def model_inputs(frame: pd.DataFrame, manifest: dict) -> list[pd.Series]:
    """The ANOMALY arguments for the rows of ``frame`` (in order, per vehicle) for the model of
    ``manifest``: its sensors, and for a model with a window, each vehicle's earlier readings and
    the times, as the jobs pass them (udfs/feature_set.context_from_columns)."""
    from udfs.feature_set import context_from_frame

    names, window = manifest["features"]["names"], manifest["features"].get("window", 1)
    if window == 1:
        return [frame[c] for c in names]
    ctx = context_from_frame(frame.reset_index(drop=True), names, "vehicle_id", "event_time", [], window)
    sensors = [pd.Series(ctx.values[:, k, j]) for k in range(window) for j in range(len(names))]
    return sensors + [pd.Series(ctx.times[:, k]) for k in range(window)]


def publish(registry: ModelRegistry, work: Path, name: str, frame: pd.DataFrame | None = None,
            **options) -> dict:
    """Train on ``frame`` (simulated readings by default) with the trainer's defaults overridden by
    ``options`` (TrainOptions fields), publish as the next version of ``name``; returns its manifest."""
    schema = load_schema()
    frame = simulated_frame() if frame is None else frame
    settings = TrainOptions(**{"epochs": 12, "quiet": True, "min_rows": 100, **options})
    trained = train(frame, FeatureSet.from_schema(schema), roles(schema)["label"], roles(schema)["time"],
                    settings, work, entity_col=roles(schema)["entity"])
    trained.save(work)
    manifest = {"version": new_version(), "created_at": "2026-01-01T00:00:00+00:00", "schema": schema_id(schema),
                **trained.fields, "training": {"sources": {"test": True}}, "libraries": library_versions()}
    return registry.manifest(registry.publish(name, work, manifest))


def _train(tmp_path_factory: pytest.TempPathFactory, name: str, **options) -> tuple[str, dict]:
    store_dir = tmp_path_factory.mktemp("models")
    manifest = publish(ModelRegistry(str(store_dir)), tmp_path_factory.mktemp("train"), name, **options)
    return str(store_dir), manifest


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """(store uri, manifest) of a quickly trained model with the trainer's defaults (each vehicle's
    last readings in a window, an ensemble): version 1 of model ``telemetry``, its champion."""
    return _train(tmp_path_factory, MODEL)


@pytest.fixture(scope="session")
def point_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """The same, reading each reading alone (``--context point``, one member): ``ANOMALY(sensors...)``."""
    return _train(tmp_path_factory, MODEL, context="point", members=1)


@pytest.fixture
def model_dir(trained_model) -> Path:
    return Path(trained_model[0])
