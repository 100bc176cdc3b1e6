"""The vigil metric group: what each UDF reports per batch (a recording metric group stands in for
the worker's; the names are the contract in docs/cluster.md)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from udfs.anomaly_score import AnomalyScore
from udfs.preprocess import DecodeTelemetry
from tests.trained_model import model_inputs, REF, simulated_frame


class Recorder:
    """Records counters and gauges the way Flink's MetricGroup API is called."""

    def __init__(self, path: str = "") -> None:
        self.path, self.counters, self.gauges, self.children = path, {}, {}, {}

    def add_group(self, name: str, value: str | None = None) -> "Recorder":
        key = f"{name}={value}" if value is not None else name
        return self.children.setdefault(key, Recorder(f"{self.path}/{key}"))

    def counter(self, name: str):
        rec = self

        class C:
            def inc(self, n: int = 1) -> None:
                rec.counters[name] = rec.counters.get(name, 0) + n

        return C()

    def gauge(self, name: str, fn) -> None:
        self.gauges[name] = fn


class Context:
    def __init__(self) -> None:
        self.metrics = Recorder()

    def get_metric_group(self) -> Recorder:
        return self.metrics

    def get_job_parameter(self, key: str, default: str) -> str:
        return default


def test_anomaly_reports_scored_anomalies_quantiles_latency_and_version(trained_model):
    uri, manifest = trained_model
    ctx = Context()
    fn = AnomalyScore(uri, REF)
    fn.open(ctx)
    frame = simulated_frame(events=1000, seed=4, failure_rate=0.05)
    cols = model_inputs(frame, manifest)
    n = len(manifest["features"]["names"])
    for j in range(n):   # every sensor of the first reading missing: unscorable
        cols[j] = cols[j].copy()
        cols[j].iloc[0] = np.nan
    out = fn.eval(*cols)
    assert out["partial"].iloc[0].startswith("every sensor missing")
    vigil = ctx.metrics.children["vigil"]
    assert vigil.counters["events_scored"] == 999
    assert vigil.counters["anomalies"] == sum(bool(flag) for flag in out["is_anomaly"] if flag is not None)
    assert vigil.gauges["score_p50"]() == int(np.nanmedian(out["score"]) * 1_000_000)
    assert vigil.gauges["score_p99"]() > vigil.gauges["score_p50"]()
    assert isinstance(vigil.gauges["scoring_latency_ms"](), int)
    assert vigil.children[f"model_version={manifest['version']}"].gauges["info"]() == 1


def test_decode_counts_dead_letters(tmp_path):
    from connectors.avro_serde import load_schema

    (tmp_path / "key").write_text("k")
    ctx = Context()
    fn = DecodeTelemetry(load_schema(), str(tmp_path / "key"))
    fn.open(ctx)
    fn.eval(pd.Series([b"\x00", b"garbage!", None], dtype=object))
    assert ctx.metrics.children["vigil"].counters["dead_letters"] == 3


def test_anomaly_reports_the_drift_of_its_input_against_the_training_baseline(trained_model):
    from jobs.simulation import RECALIBRATION
    from udfs.anomaly_score import DRIFT_WINDOW
    from udfs.drift import psi

    uri, manifest = trained_model
    ctx = Context()
    fn = AnomalyScore(uri, REF)
    fn.open(ctx)
    vigil = ctx.metrics.children["vigil"]
    names = manifest["features"]["names"]
    assert set(vigil.children) >= {f"feature={n}" for n in names}
    assert vigil.gauges["drift_max_psi"]() == -1                    # no full window yet

    frame = simulated_frame(events=DRIFT_WINDOW, seed=11)           # the fleet as trained: one full window
    fn.eval(*model_inputs(frame, manifest))
    expected = {n: psi(manifest["baseline"]["features"][n], frame[n]) for n in names}
    for n in names:
        assert vigil.children[f"feature={n}"].gauges["drift_psi"]() == round(expected[n] * 1_000_000), n
    assert vigil.gauges["drift_max_psi"]() == round(max(expected.values()) * 1_000_000)

    shifted = simulated_frame(events=DRIFT_WINDOW, seed=12)         # the gauges recalibrated
    for name, offset in RECALIBRATION.items():
        shifted[name] += offset
    fn.eval(*model_inputs(shifted, manifest))
    z = vigil.children["feature=accel_z_g"].gauges["drift_psi"]()
    assert z > 1_000_000 and z > 4 * vigil.children["feature=accel_x_g"].gauges["drift_psi"]()   # not recalibrated
    assert z == round(psi(manifest["baseline"]["features"]["accel_z_g"], shifted["accel_z_g"]) * 1_000_000)
