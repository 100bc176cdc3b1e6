"""The pipeline benchmark runs end to end at its smallest size: every variant reports a rate.

No performance is asserted here (house style: measure, don't time); the figures of a smoke run
are noise. This only proves that ``python -m benchmarks.pipeline`` works against the real broker
and the local Flink mini-cluster, so the benchmark cannot rot between full runs.
"""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

VARIANTS = {"a-produce", "a-consume", "b-raw", "b", "c", "d", "e", "d-full", "e-full", "f", "g"}
RATIOS = {"d/c", "d/f", "c/b", "e/d", "g/d"}


def test_pipeline_benchmark_smoke_reports_every_variant(kafka_bootstrap, flink_activated, tmp_path):
    from benchmarks import pipeline

    assert pipeline.main(["--smoke", "--bootstrap-servers", kafka_bootstrap, "--out", str(tmp_path)]) == 0

    result = json.loads((tmp_path / "pipeline.json").read_text())
    assert result["mode"] == "smoke"
    assert VARIANTS <= set(result["variants"])
    for name, variant in result["variants"].items():
        assert variant["rate"] > 0, name
        assert variant["method"], name
    assert RATIOS <= set(result["ratios"])
    assert all(result["ratios"][r] > 0 for r in RATIOS)
    assert len(result["goals"]) == len(pipeline.GOALS)
    assert all(g["measured"] is not None and g["met"] in (True, False) for g in result["goals"])
    latency = result["latency"][0]
    assert not latency["exactly_once"] and latency["alerts"] > 0
    assert latency["alert_timestamp"]["p50_ms"] <= latency["alert_timestamp"]["p99_ms"]
    assert "| goal | measured | met? |" in (tmp_path / "pipeline.md").read_text()
