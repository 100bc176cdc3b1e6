"""Rows/s of the scoring function alone, for each engine, at several Arrow batch sizes.

    python -m benchmarks.score_function [--quick] [--out .vigil/benchmarks]

The model is the trainer's default (each reading with its entity's last readings in a window, an
ensemble of members: jobs/training/trainer.TrainOptions). Engines, all on the same model and the
same rows, measured in one run:
* ``udf-numpy``: AnomalyScore.eval (pandas in: sensors x window lags and times; DataFrame out) with
  the numpy engine — what a Flink Python worker runs per Arrow batch;
* ``udf-tf``: the same with the compiled tf.function engine;
* ``numpy`` / ``tf``: the ensembles alone on a ready float32 input matrix;
* ``keras-predict``: ``model.predict`` of each member per batch, the path the UDF must never take
  (reference).
Prints a table with rows/s and the ratios to ``udf-tf``, and writes JSON and markdown.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vigil.commands import Options, command, int_list, option
from vigil.settings import VigilSettings


MODEL = "bench"  # the registry name of the benchmarks' model (version 1 is its champion)


def make_model(workdir: Path, **options) -> tuple[str, dict]:
    """Train a model on simulated readings (few epochs: speed does not depend on quality); ``options``
    are TrainOptions fields (default: the trainer's defaults)."""
    from connectors.avro_serde import load_schema, roles, schema_id
    from connectors.model_registry import ModelRegistry
    from jobs.simulation import FleetSettings, generate
    from jobs.training.trainer import TrainOptions, library_versions, new_version, train
    from udfs.feature_set import FeatureSet

    schema = load_schema()
    frame = pd.DataFrame(list(generate(FleetSettings(vehicles=10, events=5000))))
    settings = TrainOptions(**{"epochs": 3, "quiet": True, "min_rows": 100, **options})
    trained = train(frame, FeatureSet.from_schema(schema), roles(schema)["label"], roles(schema)["time"],
                    settings, workdir, entity_col=roles(schema)["entity"])
    trained.save(workdir)
    manifest = {"version": new_version(), "created_at": "bench", **trained.fields,
                "schema": schema_id(schema), "libraries": library_versions()}
    store = workdir.parent / "store"
    registry = ModelRegistry(str(store))
    return str(store), registry.manifest(registry.publish(MODEL, workdir, manifest))


def readings(features, rows: int, rng: np.random.Generator) -> tuple[list[pd.Series], object]:
    """``rows`` random readings, each with ``window - 1`` earlier ones a second apart: the UDF's
    arguments (sensors per lag, newest first, then the times) and the same as a Context."""
    from udfs.feature_set import context_from_columns

    sensors = len(features)
    window = features.window
    raw = rng.normal(np.asarray(features.mean[:sensors]), np.asarray(features.scale[:sensors]),
                     size=(rows, window, sensors))
    cols = [pd.Series(raw[:, k, j]) for k in range(window) for j in range(sensors)]
    if window > 1:
        now = pd.Timestamp("2026-01-01T00:00:00Z") + pd.to_timedelta(np.arange(rows), unit="s")
        cols += [pd.Series(now - pd.Timedelta(seconds=k)) for k in range(window)]
    return cols, context_from_columns(cols, sensors)


def rate(fn, rows: int, min_seconds: float) -> float:
    """Rows per second of ``fn()`` (which scores ``rows`` rows), best of repeated timed loops."""
    fn()  # warm-up: tracing, allocation
    best = 0.0
    deadline = time.perf_counter() + min_seconds
    while True:
        start = time.perf_counter()
        fn()
        best = max(best, rows / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            return best


class ScoreFunctionOptions(Options):
    quick: bool = option(False, "short timing loops (CI)")
    batches: list[int] = option([1000, 10000, 50000], "Arrow batch sizes to measure, comma-separated", parse=int_list)
    out: Path = option(Path(".vigil/benchmarks"), "folder for score_function.json and .md")


MODELS = {  # the models measured side by side: TrainOptions on top of the trainer's defaults
    "window x3 (default)": {},
    "point x1": {"context": "point", "members": 1},
}
ENGINES = ["udf-numpy", "udf-tf", "numpy", "tf", "keras-predict"]


def measure(workdir: Path, options: dict, batches: list[int], min_seconds: float, quick: bool) -> list[dict]:
    """Rows/s of each engine at each batch size for one model."""
    from udfs.anomaly_score import AnomalyScore
    from udfs.feature_set import FeatureSet

    (workdir / "work").mkdir(parents=True)
    uri, manifest = make_model(workdir / "work", **options)  # a store of its own: <workdir>/store
    udf_np, udf_tf = AnomalyScore(uri, MODEL, engine="numpy"), AnomalyScore(uri, MODEL, engine="tf")
    udf_np.open(None)
    udf_tf.open(None)
    features = FeatureSet.from_dict(manifest["features"])
    members = [scorer.model for scorer, _ in udf_tf._model.scorer.members]
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        cols, ctx = readings(features, batch, rng)
        x, _ = features.inputs(ctx)
        x = x.astype(np.float32)
        engines = {
            "udf-numpy": lambda: udf_np.eval(*cols),
            "udf-tf": lambda: udf_tf.eval(*cols),
            "numpy": lambda: udf_np._model.scorer.score(x),
            "tf": lambda: udf_tf._model.scorer.score(x),
            "keras-predict": lambda: [m.predict(x, batch_size=batch, verbose=0) for m in members],
        }
        row = {"batch": batch, "inputs": features.input_width, "members": len(members)}
        for name, fn in engines.items():
            if name == "keras-predict" and batch > 10_000 and quick:
                continue
            row[name] = rate(fn, batch, min_seconds)
        results.append(row)
    return results


def run(_settings: VigilSettings, args: ScoreFunctionOptions) -> int:
    min_seconds = 0.3 if args.quick else 2.0
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, options) in enumerate(MODELS.items()):
            results[model] = measure(Path(tmp) / f"m{i}", options, args.batches, min_seconds, args.quick)

    header = ("| model | inputs | batch | " + " | ".join(f"{n} rows/s" for n in ENGINES)
              + " | udf-numpy / udf-tf |")
    lines = [header, "|" + "---|" * (len(ENGINES) + 4)]
    for model, rows in results.items():
        for row in rows:
            cells = [f"{row[n]:,.0f}" if n in row else "-" for n in ENGINES]
            lines.append(f"| {model} | {row['inputs']} | {row['batch']:,} | " + " | ".join(cells)
                         + f" | {row['udf-numpy'] / row['udf-tf']:.2f} |")
    default, point = (results[m] for m in MODELS)
    lines += ["", "| batch | default / point (udf, best engine) |", "|---|---|"]
    for d, p in zip(default, point):
        best = max(d["udf-numpy"], d["udf-tf"]) / max(p["udf-numpy"], p["udf-tf"])
        lines.append(f"| {d['batch']:,} | {best:.2f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "score_function.json").write_text(json.dumps({"quick": args.quick, "results": results}, indent=2))
    (out / "score_function.md").write_text(table + "\n")
    print(f"\nwritten: {out / 'score_function.json'}, {out / 'score_function.md'}")
    return 0


COMMAND = command("score-function", __doc__, run, options=ScoreFunctionOptions, prog="python -m benchmarks.score_function")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
