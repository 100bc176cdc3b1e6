"""The benchmarks run end to end at their smallest size: every pipeline variant reports a rate, the
quality benchmark its figures.

No performance is asserted here (house style: measure, don't time); the figures of a smoke run
are noise. This only proves that ``python -m benchmarks.pipeline`` works against the real broker
and the local Flink mini-cluster, so the benchmark cannot rot between full runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

VARIANTS = {"a-produce", "a-consume", "b-raw", "b", "c", "d", "e", "d-full", "e-full", "f", "g",
            "d-full-jvm", "e-full-jvm", "a-stage", "b-stage", "e-full-jvm/low-latency", "e-full-jvm/avro",
            "e-full-jvm/unbatched"}
RATIOS = {"d/c", "d/f", "c/b", "e/d", "g/d", "e-full-jvm/b", "e-full-jvm/f", "e-full-jvm/e-full", "b-stage/a-stage",
          "e-full-jvm/low-latency/e-full-jvm", "e-full-jvm/avro/e-full-jvm", "e-full-jvm/e-full-jvm/unbatched"}
# measured in full mode only (exactly-once latency runs last 30 s each)
FULL_ONLY_GOALS = {"low-latency profile, exactly-once: visible p99 ms beyond the checkpoint interval <= 1000"}


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
    measured = [g for g in result["goals"] if g["goal"] not in FULL_ONLY_GOALS]
    assert len(measured) == len(pipeline.GOALS) - len(FULL_ONLY_GOALS)
    assert all(g["measured"] is not None and g["met"] in (True, False) for g in measured), measured
    # the Python-decode job, then the JVM-decode job with each profile
    assert [(r.get("variant"), bool(r["knobs"])) for r in result["latency"]] == \
        [("e-full", False), ("e-full-jvm", False), ("e-full-jvm", True)]
    for latency in result["latency"]:
        assert not latency["exactly_once"] and latency["alerts"] > 0
        assert latency["alert_timestamp"]["p50_ms"] <= latency["alert_timestamp"]["p99_ms"]
    assert "| goal | measured | met? |" in (tmp_path / "pipeline.md").read_text()


def test_quality_benchmark_quick_mode_measures_the_default_model_on_real_and_simulated_data(
        kafka_bootstrap, flink_activated, tmp_path):
    """``python -m benchmarks.quality --quick``: one real NAB file and the simulator through replay,
    training from Kafka and the Table job; the figures are computed from the scored topic."""
    from benchmarks.quality import run as quality

    assert quality.main(["--quick", "--bootstrap-servers", kafka_bootstrap, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "quality.json").read_text())
    assert result["mode"] == "quick" and result["candidates"] == ["window"]
    assert set(result["datasets"]) == {*quality.QUICK_NAB, "sim"}
    for name, entry in result["datasets"].items():
        (run,) = entry["candidates"]["window"]
        assert "error" not in run, (name, run)
        point = run["point"]
        assert point["readings"] > 0 and point["anomalous"] > 0, name
        assert 0 <= point["false_alarm_rate"] <= 1 and 0 <= point["f1"] <= 1
        assert set(run["hysteresis"]) == set(result["hysteresis"])
    # the simulator's faults are found; the real file's windows are hard (benchmarks/README.md)
    sim = result["datasets"]["sim"]["candidates"]["window"][0]["point"]
    assert sim["f1"] >= 0.5 and sim["false_alarm_rate"] <= 0.05, sim
    assert {"window/nab", "window/sim"} <= set(result["summary"])


@pytest.mark.parametrize("batch", [1000])
def test_score_function_benchmark_measures_both_models_side_by_side(tmp_path, batch):
    from benchmarks import score_function

    assert score_function.main(["--quick", "--batches", str(batch), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "score_function.json").read_text())
    assert set(result["results"]) == set(score_function.MODELS)
    for model, (row,) in result["results"].items():
        assert row["batch"] == batch and all(row[e] > 0 for e in score_function.ENGINES), model
    assert "default / point" in (tmp_path / "score_function.md").read_text()


def test_margin_benchmark_quick_mode_chooses_the_margin_leave_one_file_out(tmp_path):
    """``python -m benchmarks.quality.margin --quick``: two NAB files, one seed, plain Python (no
    Kafka, no Flink); each fold's margin is chosen on the other file. Sanity only: the structure and
    figures in [0, 1], no quality asserted."""
    from benchmarks.quality import margin

    assert margin.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "quality-margin.json").read_text())
    assert result["mode"] == "quick" and result["seeds"] == [42]
    assert result["files"] == list(margin.QUICK_FILES) and result["simulator"] == {"skipped": "--quick"}
    grid = {f"{m:g}" for m in margin.MARGINS}
    assert set(result["all_files"]) == grid
    loo = result["loo"]
    assert set(loo["folds"]) == set(result["files"]) == set(loo["per_seed"]["42"]["folds"])
    figs = [loo["per_seed"]["42"]["pooled"]]
    for name, fold in loo["per_seed"]["42"]["folds"].items():
        assert fold["margin"] in grid and fold["chosen_on"] == [n for n in result["files"] if n != name]
        figs.append(fold["held_out"])
    figs += [result["per_seed_all_files"]["42"][m] for m in grid]
    for fig in figs:
        assert all(0 <= fig[k] <= 1 for k in ("f1", "false_alarm_rate", "missed_rate", "precision", "recall")), fig
        assert 0 <= fig["windows_caught"] <= fig["windows"]
    for summary in [loo["pooled"], *(f["held_out"] for f in loo["folds"].values()), *result["all_files"].values()]:
        assert all(0 <= summary[k]["mean"] <= 1 for k in ("f1", "false_alarm_rate", "missed_rate")), summary


def test_fleet_benchmark_quick_mode_flags_each_machine_both_ways(tmp_path):
    """``python -m benchmarks.quality.fleet --quick``: two NAB files as one fleet, one model, each
    machine's figures with the fleet's threshold and its own. Sanity only, no quality asserted."""
    from benchmarks.quality import fleet

    assert fleet.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "quality-fleet.json").read_text())
    (run,) = result["runs"]
    machines = {Path(n).stem for n in result["files"]}
    assert set(run["own_thresholds"]) == machines and run["fleet_threshold"] > 0
    for calibration in fleet.CALIBRATIONS:
        assert set(run["per_file"][calibration]) == machines
        for fig in [*run["per_file"][calibration].values(), run["pooled"][calibration]]:
            assert all(0 <= fig[k] <= 1 for k in ("f1", "false_alarm_rate", "missed_rate")), fig
