"""Train the autoencoder straight from the Kafka log and publish a versioned model.

    python -m jobs.train_autoencoder --topic telemetry [--from 2026-01-01T00:00:00Z] [--to ...]

No data lake: the job reads the chosen range of every partition of the topic from Kafka (adding
older Parquet history from the object tier with ``--history`` when retention no longer holds it),
decodes it with the schema registered for the topic, and learns what *normal* readings look like:

1. ``--eval-fraction`` of the readings is kept aside as the evaluation range: by default every
   n-th block of ``--eval-block-seconds`` of event time (blocked hold-out: no neighbouring,
   autocorrelated readings on both sides, while slow drifts are covered), or with
   ``--eval-split tail`` simply the newest readings;
2. the rest, minus labelled failures (unless ``--include-labelled``), is split into training and
   validation rows; training stops early when the validation loss stops improving;
3. the anomaly threshold is the ``--threshold-quantile`` of the validation rows' reconstruction
   errors (so ~1 - q of normal readings are flagged);
4. where the evaluation range has labels, precision, recall, F1 and the false-positive rate are
   computed and kept in the manifest, next to the exact partition/offset ranges read (lineage).

The artifact (model, manifest, report.png) is published to the model store and becomes LATEST.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer, roles, schema_id
from connectors.errors import ConnectorError, DecodeError, SchemaError
from connectors.kafka_io import PartitionRange, check_broker, consume_ranges, plan_ranges
from connectors.model_store import ModelStore, ModelStoreError
from stack.settings import StackSettings
from udfs.feature_set import FeatureError, FeatureSet


class TrainSettings(BaseModel):
    """Everything the training job needs; built from CLI flags by ``from_args``."""

    topic: str = "telemetry"
    bootstrap_servers: str
    model_store: str
    start: str | None = None
    end: str | None = None
    start_offsets: dict[int, int] | None = None
    end_offsets: dict[int, int] | None = None
    history: str | None = None
    include_labelled: bool = False
    features: list[str] | None = None
    hidden: list[int] = [32, 16, 8]
    epochs: int = Field(150, ge=1)
    batch_size: int = Field(256, ge=1)
    patience: int = Field(6, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    validation_split: float = Field(0.2, gt=0, lt=1)
    threshold_quantile: float = Field(0.995, gt=0.5, lt=1)
    eval_fraction: float = Field(0.25, ge=0, lt=1)
    eval_split: str = Field("blocks", pattern="^(blocks|tail)$")
    eval_block_seconds: float = Field(300.0, gt=0)
    seed: int = 42
    min_rows: int = Field(200, ge=10)
    quiet: bool = False

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> TrainSettings:
        stack = StackSettings.from_env()
        p = argparse.ArgumentParser(prog="python -m jobs.train_autoencoder", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--topic", default="telemetry")
        p.add_argument("--bootstrap-servers", default=stack.bootstrap_servers)
        p.add_argument("--model-store", default=(stack.home / "models").as_uri(),
                       help="local path, file:// or s3://bucket/prefix (default: %(default)s)")
        p.add_argument("--from", dest="start", help="first event time, ISO 8601 (default: earliest retained)")
        p.add_argument("--to", dest="end", help="end event time, exclusive, ISO 8601 (default: now)")
        p.add_argument("--from-offsets", dest="start_offsets", type=parse_offsets, metavar="P:OFF,...")
        p.add_argument("--to-offsets", dest="end_offsets", type=parse_offsets, metavar="P:OFF,...")
        p.add_argument("--history", help="Parquet history (folder or s3:// prefix) written by the scoring job")
        p.add_argument("--include-labelled", action="store_true", help="train on labelled failures too")
        p.add_argument("--features", type=lambda s: s.split(","), help="comma-separated feature columns")
        p.add_argument("--hidden", type=lambda s: [int(x) for x in s.split(",")], default=[32, 16, 8])
        p.add_argument("--epochs", type=int, default=150)
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--patience", type=int, default=6)
        p.add_argument("--learning-rate", type=float, default=3e-3)
        p.add_argument("--validation-split", type=float, default=0.2)
        p.add_argument("--threshold-quantile", type=float, default=0.995)
        p.add_argument("--eval-fraction", type=float, default=0.25)
        p.add_argument("--eval-split", choices=["blocks", "tail"], default="blocks",
                       help="evaluation rows: every n-th time block (default) or the newest rows")
        p.add_argument("--eval-block-seconds", type=float, default=300.0)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--quiet", action="store_true")
        return cls(**vars(p.parse_args(argv)))


def parse_time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot parse time {value!r}; use ISO 8601 such as 2026-01-01T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def parse_offsets(value: str) -> dict[int, int]:
    try:
        return {int(p): int(o) for p, o in (item.split(":") for item in value.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"offsets must look like 0:120,1:0 — got {value!r}") from None


# --- data ---------------------------------------------------------------------------------------

def read_topic(settings: TrainSettings, schema: dict[str, Any]) -> tuple[pd.DataFrame, list[PartitionRange], int]:
    """Decode the planned range of the topic into a DataFrame; returns (frame, ranges, undecodable)."""
    from tqdm import tqdm

    ms = lambda v: int(parse_time(v).timestamp() * 1000) if v else None  # noqa: E731
    ranges = plan_ranges(settings.bootstrap_servers, settings.topic, start_ms=ms(settings.start),
                         end_ms=ms(settings.end), start_offsets=settings.start_offsets,
                         end_offsets_=settings.end_offsets)
    decode = AvroDeserializer(schema)
    rows: list[dict[str, Any]] = []
    bad = 0
    total = sum(r.count for r in ranges)
    with tqdm(total=total, unit="rec", desc=f"reading {settings.topic}", disable=settings.quiet or None) as bar:
        for msg in consume_ranges(settings.bootstrap_servers, settings.topic, ranges, progress=bar.update):
            try:
                record = decode(msg.value())
            except DecodeError:
                bad += 1  # the scoring job routes these to the DLQ; training just leaves them out
                continue
            rows.append(record)
    return pd.DataFrame(rows), ranges, bad


def read_history(uri: str, columns: list[str], stack: StackSettings) -> pd.DataFrame:
    """Parquet history from the object tier (local folder or s3://), only the needed columns."""
    import pyarrow.dataset as ds

    if uri.startswith(("s3://", "s3a://")):
        from connectors.object_store import s3_filesystem

        dataset = ds.dataset(uri.split("://", 1)[1], format="parquet", filesystem=s3_filesystem(stack),
                             partitioning="hive")
    else:
        dataset = ds.dataset(uri.removeprefix("file://"), format="parquet", partitioning="hive")
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present).to_pandas()


# --- model --------------------------------------------------------------------------------------

def classification_metrics(scores: np.ndarray, threshold: float, labels: pd.Series) -> dict[str, Any]:
    """Precision/recall/F1/FPR of ``score > threshold`` against ``labels`` (non-null = failure)."""
    actual = labels.notna().to_numpy()
    predicted = scores > threshold
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    tn = int((~predicted & ~actual).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_mode = {str(mode): float((predicted[(labels == mode).to_numpy()]).mean())
                for mode in sorted(labels.dropna().unique())}
    return {"rows": int(len(scores)), "anomalies": int(actual.sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": precision, "recall": recall, "f1": f1,
            "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0, "recall_by_mode": per_mode}


def plot_report(path: Path, history: dict[str, list[float]], val_scores: np.ndarray, eval_scores: np.ndarray,
                eval_labels: pd.Series | None, threshold: float, title: str) -> None:
    """report.png: loss curves and the reconstruction-error histogram with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_hist) = plt.subplots(1, 2, figsize=(13, 4.8))
    epochs = range(1, len(history["loss"]) + 1)
    ax_loss.plot(epochs, history["loss"], label="training loss")
    ax_loss.plot(epochs, history["val_loss"], label="validation loss")
    ax_loss.set(xlabel="epoch", ylabel="mean squared error (normalised)", yscale="log", title="Loss")
    ax_loss.legend()
    floor = 1e-4
    bins = np.logspace(np.log10(max(floor, min(val_scores.min(), eval_scores.min() if len(eval_scores) else 1))),
                       np.log10(max(val_scores.max(), eval_scores.max() if len(eval_scores) else 1) + floor), 60)
    # counts on a log axis: the few labelled failures stay visible next to thousands of normal rows
    ax_hist.hist(np.maximum(val_scores, floor), bins=bins, alpha=0.6, label="validation (normal)")
    if eval_labels is not None and eval_labels.notna().any():
        failing = eval_labels.notna().to_numpy()
        ax_hist.hist(np.maximum(eval_scores[~failing], floor), bins=bins, alpha=0.5, label="evaluation, normal")
        ax_hist.hist(np.maximum(eval_scores[failing], floor), bins=bins, alpha=0.7,
                     label="evaluation, labelled failures")
    elif len(eval_scores):
        ax_hist.hist(np.maximum(eval_scores, floor), bins=bins, alpha=0.5, label="evaluation")
    ax_hist.axvline(threshold, color="crimson", linestyle="--", label=f"threshold {threshold:.3g}")
    ax_hist.set(xscale="log", yscale="log", xlabel="reconstruction error", ylabel="readings",
                title="Reconstruction error")
    ax_hist.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def split_evaluation(frame: pd.DataFrame, time_col: str | None,
                     settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation row indices, fitting row indices) as chosen by eval_split/eval_fraction."""
    if settings.eval_fraction == 0:
        return np.array([], dtype=int), np.arange(len(frame))
    if time_col not in frame:
        order = np.arange(len(frame))
    else:
        times = pd.to_datetime(frame[time_col], utc=True)
        if settings.eval_split == "blocks":
            every = max(2, round(1 / settings.eval_fraction))
            seconds = (times - times.min()).dt.total_seconds().to_numpy()
            held = (seconds // settings.eval_block_seconds).astype(np.int64) % every == every - 1
            return np.flatnonzero(held), np.flatnonzero(~held)
        order = np.argsort(times.to_numpy(), kind="stable")
    n_eval = int(len(frame) * settings.eval_fraction)
    return order[len(order) - n_eval:], order[: len(order) - n_eval]


def train(frame: pd.DataFrame, features: FeatureSet, label_col: str | None, time_col: str | None,
          settings: TrainSettings, workdir: Path) -> tuple[dict[str, Any], Any]:
    """Fit normalisation and the model; returns (manifest fields, keras model). Writes report.png."""
    from udfs.autoencoder import NumpyScorer, build_autoencoder  # sets TF's log level before TF loads

    import keras

    rng = np.random.default_rng(settings.seed)
    x_all = features.matrix(frame)
    finite = np.isfinite(x_all).all(axis=1)
    dropped_non_finite = int((~finite).sum())
    frame, x_all = frame[finite].reset_index(drop=True), x_all[finite]
    labels = frame[label_col] if label_col and label_col in frame else pd.Series([None] * len(frame), dtype=object)

    eval_idx, fit_idx = split_evaluation(frame, time_col, settings)
    if not settings.include_labelled:
        fit_idx = fit_idx[labels.iloc[fit_idx].isna().to_numpy()]
    if len(fit_idx) < settings.min_rows:
        raise FeatureError(f"only {len(fit_idx)} rows to train on (need >= {settings.min_rows}); "
                           f"widen the range or add --history")
    fit_idx = rng.permutation(fit_idx)
    n_val = max(1, int(len(fit_idx) * settings.validation_split))
    val_idx, train_idx = fit_idx[:n_val], fit_idx[n_val:]

    fitted = features.fit(x_all[train_idx])
    x_train, x_val = fitted.transform(x_all[train_idx]), fitted.transform(x_all[val_idx])
    model = build_autoencoder(len(fitted), settings.hidden, learning_rate=settings.learning_rate, seed=settings.seed)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
    started = time.monotonic()
    fit = model.fit(x_train, x_train, validation_data=(x_val, x_val), epochs=settings.epochs,
                    batch_size=settings.batch_size, shuffle=True, callbacks=[stop],
                    verbose=0 if settings.quiet else 2)
    seconds = time.monotonic() - started

    scorer = NumpyScorer.from_model(model)
    val_scores = scorer.score(x_val)
    threshold = float(np.quantile(val_scores, settings.threshold_quantile))
    eval_scores = scorer.score(fitted.transform(x_all[eval_idx])) if len(eval_idx) else np.array([])
    eval_labels = labels.iloc[eval_idx].reset_index(drop=True) if len(eval_idx) else None
    metrics: dict[str, Any] = {
        "epochs_run": len(fit.history["loss"]), "train_seconds": round(seconds, 2),
        "final_loss": float(fit.history["loss"][-1]), "best_val_loss": float(min(fit.history["val_loss"])),
        "validation_score_quantiles": {str(q): float(np.quantile(val_scores, q)) for q in (0.5, 0.9, 0.99, 0.999)},
        "rows": {"read": int(len(finite)), "dropped_non_finite": dropped_non_finite, "train": int(len(train_idx)),
                 "validation": int(len(val_idx)), "evaluation": int(len(eval_idx))},
    }
    if eval_labels is not None and eval_labels.notna().any():
        metrics["evaluation"] = classification_metrics(eval_scores, threshold, eval_labels)
    elif len(eval_idx):
        metrics["evaluation"] = {"rows": int(len(eval_idx)), "flagged_rate": float((eval_scores > threshold).mean())}
    plot_report(workdir / "report.png", fit.history, val_scores, eval_scores, eval_labels, threshold,
                f"Vigil autoencoder on {settings.topic}")
    fields = {"features": fitted.to_dict(), "threshold": threshold,
              "threshold_quantile": settings.threshold_quantile, "metrics": metrics,
              "loss_history": {k: [float(v) for v in vals] for k, vals in fit.history.items()}}
    return fields, model


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


def new_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run(settings: TrainSettings) -> dict[str, Any]:
    """Read, train, evaluate and publish; returns the published manifest."""
    stack = StackSettings.from_env()
    check_broker(settings.bootstrap_servers)
    schema = schema_store.require(settings.bootstrap_servers, settings.topic)
    role = roles(schema)
    features = FeatureSet.from_schema(schema, include=settings.features)
    frame, ranges, undecodable = read_topic(settings, schema)
    sources = {"kafka": {"topic": settings.topic, "bootstrap_servers": settings.bootstrap_servers,
                         "schema": schema_id(schema),
                         "ranges": [r.__dict__ for r in ranges], "undecodable": undecodable}}
    if settings.history:
        history = read_history(settings.history, [*features.names, *(c for c in role.values() if c)], stack)
        sources["history"] = {"uri": settings.history, "rows": int(len(history))}
        frame = pd.concat([history, frame], ignore_index=True)
    if frame.empty:
        raise FeatureError(f"no records in the chosen range of {settings.topic!r} "
                           f"(ranges {[(r.partition, r.start, r.end) for r in ranges]})")
    with tempfile.TemporaryDirectory(prefix="vigil-train-") as tmp:
        workdir = Path(tmp)
        fields, model = train(frame, features, role["label"], role["time"], settings, workdir)
        version = new_version()
        model.save(workdir / "model.keras")
        manifest = {
            "version": version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"kind": "dense_autoencoder", "hidden": settings.hidden, "file": "model.keras",
                      "score": "mean squared reconstruction error of z-scored features; higher = more anomalous",
                      "seed": settings.seed},
            **fields,
            "training": {"sources": sources, "include_labelled": settings.include_labelled,
                         "entity": role["entity"], "time": role["time"], "label": role["label"]},
            "libraries": library_versions(),
        }
        ModelStore(settings.model_store, stack).publish(workdir, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    try:
        settings = TrainSettings.from_args(argv)
        manifest = run(settings)
    except (ConnectorError, SchemaError, FeatureError, ModelStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ev = manifest["metrics"].get("evaluation", {})
    print(f"model {manifest['version']} published to {settings.model_store} (LATEST)")
    print(f"  features: {len(manifest['features']['names'])}, threshold {manifest['threshold']:.4g} "
          f"(q={manifest['threshold_quantile']}), epochs {manifest['metrics']['epochs_run']}")
    if "precision" in ev:
        print(f"  evaluation on {ev['rows']} readings ({ev['anomalies']} labelled failures): "
              f"precision {ev['precision']:.3f}, recall {ev['recall']:.3f}, F1 {ev['f1']:.3f}, "
              f"false-positive rate {ev['false_positive_rate']:.4f}")
        print(f"  recall by failure mode: {json.dumps({k: round(v, 3) for k, v in ev['recall_by_mode'].items()})}")
    print(f"  report: {settings.model_store.rstrip('/')}/{manifest['version']}/report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
