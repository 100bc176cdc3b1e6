"""Rows/s of the scoring function alone, for each engine, at several Arrow batch sizes.

    python -m benchmarks.score_function [--quick] [--out .vigil/benchmarks]

Engines, all on the same model and the same rows, measured in one run:
* ``udf-numpy``: AnomalyScore.eval (pandas in, DataFrame out) with the numpy engine — what a
  Flink Python worker runs per Arrow batch;
* ``udf-tf``: the same with the compiled tf.function engine;
* ``numpy`` / ``tf``: the scorers alone on a ready float32 matrix;
* ``keras-predict``: ``model.predict`` per batch, the path the UDF must never take (reference).
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


def make_model(workdir: Path) -> tuple[str, dict]:
    """Train a model on simulated readings (few epochs: speed does not depend on quality)."""
    from connectors.avro_serde import load_schema, roles, schema_id
    from connectors.model_registry import ModelRegistry
    from jobs.simulation import FleetSettings, generate
    from jobs.training.trainer import TrainOptions, library_versions, new_version, train
    from udfs.feature_set import FeatureSet

    schema = load_schema()
    frame = pd.DataFrame(list(generate(FleetSettings(vehicles=10, events=5000))))
    settings = TrainOptions(epochs=3, quiet=True, min_rows=100)
    fields, model = train(frame, FeatureSet.from_schema(schema), roles(schema)["label"], roles(schema)["time"],
                          settings, workdir)
    model.save(workdir / "model.keras")
    manifest = {"version": new_version(), "created_at": "bench", "model": {"file": "model.keras"}, **fields,
                "schema": schema_id(schema), "libraries": library_versions()}
    store = workdir.parent / "store"
    registry = ModelRegistry(str(store))
    return str(store), registry.manifest(registry.publish(MODEL, workdir, manifest))


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


def run(_settings: VigilSettings, args: ScoreFunctionOptions) -> int:
    min_seconds = 0.3 if args.quick else 2.0
    batches = args.batches

    from udfs.anomaly_score import AnomalyScore
    from udfs.feature_set import FeatureSet

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "work").mkdir()
        uri, manifest = make_model(Path(tmp) / "work")
        udf_np, udf_tf = AnomalyScore(uri, MODEL, engine="numpy"), AnomalyScore(uri, MODEL, engine="tf")
        udf_np.open(None)
        udf_tf.open(None)
        features = FeatureSet.from_dict(manifest["features"])
        model = udf_tf._model.scorer.model
        rng = np.random.default_rng(0)
        results = []
        for batch in batches:
            raw = rng.normal(np.asarray(features.mean), np.asarray(features.scale), size=(batch, len(features)))
            cols = [pd.Series(raw[:, i]) for i in range(raw.shape[1])]
            x = features.transform(raw)
            engines = {
                "udf-numpy": lambda: udf_np.eval(*cols),
                "udf-tf": lambda: udf_tf.eval(*cols),
                "numpy": lambda: udf_np._model.scorer.score(x),
                "tf": lambda: udf_tf._model.scorer.score(x),
                "keras-predict": lambda: model.predict(x, batch_size=batch, verbose=0),
            }
            row = {"batch": batch}
            for name, fn in engines.items():
                if name == "keras-predict" and batch > 10_000 and args.quick:
                    continue
                row[name] = rate(fn, batch, min_seconds)
            results.append(row)

    names = ["udf-numpy", "udf-tf", "numpy", "tf", "keras-predict"]
    header = "| batch | " + " | ".join(f"{n} rows/s" for n in names) + " | udf-numpy / udf-tf |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for row in results:
        cells = [f"{row[n]:,.0f}" if n in row else "-" for n in names]
        lines.append(f"| {row['batch']:,} | " + " | ".join(cells) + f" | {row['udf-numpy'] / row['udf-tf']:.2f} |")
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
