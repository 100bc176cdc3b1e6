"""The ``vigil`` metric group every scoring UDF reports into (names: docs/cluster.md).

PyFlink gauges must return integers and Python distributions never reach the Prometheus
reporter, so scores are exported in millionths and durations in whole milliseconds. Outside a
Flink worker (``function_context`` is None: plain Python, tests) every metric is a no-op.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _NoCounter:
    def inc(self, n: int = 1) -> None:
        pass


def group(function_context: Any) -> Any | None:
    """The worker's ``vigil`` metric group, or None outside a Flink worker."""
    if function_context is None:
        return None
    return function_context.get_metric_group().add_group("vigil")


def counter(metrics: Any | None, name: str) -> Any:
    return metrics.counter(name) if metrics is not None else _NoCounter()


def gauge(metrics: Any | None, name: str, read: Callable[[], int]) -> None:
    if metrics is not None:
        metrics.gauge(name, lambda: int(read()))


class ModelVersionInfo:
    """``vigil_model_version_info{model_version=...}``: 1 for the version in use, 0 for older ones."""

    def __init__(self, metrics: Any | None) -> None:
        self._metrics = metrics
        self._current: str | None = None
        self._seen: set[str] = set()

    def set(self, version: str) -> None:
        self._current = version
        if self._metrics is not None and version not in self._seen:
            self._seen.add(version)
            self._metrics.add_group("model_version", version).gauge(
                "info", lambda v=version: 1 if v == self._current else 0)
