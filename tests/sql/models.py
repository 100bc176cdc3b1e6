"""Models for the SQL tests, trained once per test session: two versions of one point model
(champion and challenger) and a store whose champion reads each vehicle's last readings (a window)."""
from __future__ import annotations

import pytest

from connectors.model_registry import ModelRegistry
from tests.trained_model import publish, simulated_frame

MODEL = "telemetry"


@pytest.fixture(scope="session")
def point_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, dict]:
    """(store, champion manifest, challenger manifest) of model ``telemetry``: two versions (each reads
    one reading), trained with different seeds."""
    store = tmp_path_factory.mktemp("sql-models")
    registry = ModelRegistry(str(store))
    point = {"context": "point", "members": 1}
    champion = publish(registry, tmp_path_factory.mktemp("train-1"), MODEL, simulated_frame(seed=7), seed=7,
                       epochs=12, **point)
    challenger = publish(registry, tmp_path_factory.mktemp("train-2"), MODEL, simulated_frame(seed=8), seed=8,
                         epochs=6, **point)
    assert registry.state(MODEL).aliases == {"champion": 1, "challenger": 2}
    return str(store), champion, challenger


@pytest.fixture(scope="session")
def window_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """(store, manifest) of model ``telemetry`` trained with the trainer's defaults: it reads each
    vehicle's last readings (a window, LAG in SQL) with an ensemble."""
    store = tmp_path_factory.mktemp("sql-window-model")
    manifest = publish(ModelRegistry(str(store)), tmp_path_factory.mktemp("train-w"), MODEL)
    assert int(manifest["features"]["window"]) > 1
    return str(store), manifest
