"""Training as a library: read a topic's range from Kafka, fit the autoencoder, evaluate, publish.

``train_from_kafka(settings, options)`` is what ``python -m jobs.train_autoencoder`` runs;
``train(frame, ...)`` is the pure part (no Kafka), used by tests and benchmarks.
"""
from __future__ import annotations

import datetime as dt
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from connectors import schema_store
from connectors.avro_serde import SCHEMA_HEADER, roles, schema_id
from connectors.errors import DecodeError
from connectors.kafka_io import PartitionRange, check_broker, consume_ranges, plan_ranges
from connectors.model_registry import ModelRegistry
from connectors.payloads import PayloadDecoder
from udfs.feature_set import FeatureError, FeatureSet
from vigil.commands import Options, comma_list, int_list, option, partition_offsets
from vigil.settings import S3Settings, VigilSettings


def parse_time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot parse time {value!r}; use ISO 8601 such as 2026-01-01T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _checked_time(value: str) -> str:
    parse_time(value)
    return value


class TrainOptions(Options):
    """What to train on and how; each flag's help says what it does."""

    topic: str = option("telemetry", "Kafka topic to train on (its schema must be registered)")
    model_name: str | None = option(None, "registry name of the model", show_default="the topic")
    alias: str | None = option(None, "alias to point at the new version",
                               show_default="champion for a model's first version, else challenger")
    reason: str = option("", "why this version was trained (kept in the registry's history)")
    start: str | None = option(None, "first event time, ISO 8601", flag="--from", parse=_checked_time,
                               show_default="earliest retained")
    end: str | None = option(None, "end event time, exclusive, ISO 8601", flag="--to", parse=_checked_time,
                             show_default="now")
    start_offsets: dict[int, int] | None = option(None, "first offset per partition", flag="--from-offsets",
                                                  parse=partition_offsets, metavar="P:OFF,...")
    end_offsets: dict[int, int] | None = option(None, "end offset per partition, exclusive", flag="--to-offsets",
                                                parse=partition_offsets, metavar="P:OFF,...")
    history: str | None = option(None, "Parquet history (folder or s3:// prefix) written by the scoring job")
    include_labelled: bool = option(False, "train on labelled failures too")
    features: list[str] | None = option(None, "feature columns, comma-separated", parse=comma_list,
                                        show_default="every numeric column of the schema")
    hidden: list[int] = option([32, 16, 8], "encoder layer sizes, comma-separated (the decoder mirrors them)",
                               parse=int_list)
    epochs: int = option(150, "most training epochs (early stopping ends sooner)", ge=1)
    batch_size: int = option(256, "training batch size", ge=1)
    patience: int = option(6, "epochs without validation improvement before stopping", ge=1)
    learning_rate: float = option(3e-3, "Adam learning rate", gt=0)
    validation_split: float = option(0.2, "share of training rows kept for validation and the threshold",
                                     gt=0, lt=1)
    threshold_quantile: float = option(0.995, "threshold: this quantile of validation errors", gt=0.5, lt=1)
    eval_fraction: float = option(0.25, "share of readings held out for evaluation", ge=0, lt=1)
    eval_split: Literal["blocks", "tail"] = option("blocks", "evaluation rows: every n-th time block, or the newest")
    eval_block_seconds: float = option(300.0, "length of an evaluation block, seconds of event time", gt=0)
    seed: int = option(42, "random seed (model weights, split)")
    min_rows: int = option(200, "fewest training rows accepted", ge=10)
    quiet: bool = option(False, "no progress output")


# --- data ---------------------------------------------------------------------------------------

def read_topic(bootstrap: str, options: TrainOptions, schema: dict[str, Any],
               ) -> tuple[pd.DataFrame, list[PartitionRange], int]:
    """Decode the planned range of the topic into a DataFrame; returns (frame, ranges, undecodable)."""
    from tqdm import tqdm

    ms = lambda v: int(parse_time(v).timestamp() * 1000) if v else None  # noqa: E731
    ranges = plan_ranges(bootstrap, options.topic, start_ms=ms(options.start), end_ms=ms(options.end),
                         start_offsets=options.start_offsets, end_offsets_=options.end_offsets)
    decode = PayloadDecoder(schema, raw_times=False)  # the topic's registered format, header checked
    rows: list[dict[str, Any]] = []
    bad = 0
    total = sum(r.count for r in ranges)
    with tqdm(total=total, unit="rec", desc=f"reading {options.topic}", disable=options.quiet or None) as bar:
        for msg in consume_ranges(bootstrap, options.topic, ranges, progress=bar.update):
            try:
                record = decode(msg.value(), _header(msg))
            except DecodeError:
                bad += 1  # the scoring job routes these to the DLQ; training just leaves them out
                continue
            rows.append(record)
    return pd.DataFrame(rows), ranges, bad


def _header(message) -> bytes | None:
    """The ``vigil.schema`` header of a Kafka message, if it has one."""
    return next((value for key, value in message.headers() or () if key == SCHEMA_HEADER), None)


def read_history(uri: str, columns: list[str], s3: S3Settings) -> pd.DataFrame:
    """Parquet history from the object tier (local folder or s3://), only the needed columns."""
    import pyarrow.dataset as ds

    if uri.startswith(("s3://", "s3a://")):
        from connectors.object_store import s3_filesystem

        dataset = ds.dataset(uri.split("://", 1)[1], format="parquet", filesystem=s3_filesystem(s3),
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
                     settings: TrainOptions) -> tuple[np.ndarray, np.ndarray]:
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
          settings: TrainOptions, workdir: Path) -> tuple[dict[str, Any], Any]:
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


def train_from_kafka(settings: VigilSettings, options: TrainOptions) -> dict[str, Any]:
    """Read, train, evaluate and publish; returns the published manifest."""
    bootstrap = settings.bootstrap_servers
    check_broker(bootstrap)
    schema = schema_store.require(bootstrap, options.topic)
    role = roles(schema)
    features = FeatureSet.from_schema(schema, include=options.features)
    frame, ranges, undecodable = read_topic(bootstrap, options, schema)
    sources = {"kafka": {"topic": options.topic, "bootstrap_servers": bootstrap,
                         "schema": schema_id(schema),
                         "ranges": [r.__dict__ for r in ranges], "undecodable": undecodable}}
    if options.history:
        history = read_history(options.history, [*features.names, *(c for c in role.values() if c)], settings.s3)
        sources["history"] = {"uri": options.history, "rows": int(len(history))}
        frame = pd.concat([history, frame], ignore_index=True)
    if frame.empty:
        raise FeatureError(f"no records in the chosen range of {options.topic!r} "
                           f"(ranges {[(r.partition, r.start, r.end) for r in ranges]})")
    with tempfile.TemporaryDirectory(prefix="vigil-train-") as tmp:
        workdir = Path(tmp)
        fields, model = train(frame, features, role["label"], role["time"], options, workdir)
        version = new_version()
        model.save(workdir / "model.keras")
        manifest = {
            "version": version,
            "schema": schema_id(schema),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"kind": "dense_autoencoder", "hidden": options.hidden, "file": "model.keras",
                      "score": "mean squared reconstruction error of z-scored features; higher = more anomalous",
                      "seed": options.seed},
            **fields,
            "training": {"sources": sources, "include_labelled": options.include_labelled,
                         "entity": role["entity"], "time": role["time"], "label": role["label"]},
            "libraries": library_versions(),
        }
        registry = ModelRegistry(settings.model_store, settings.s3 if settings.s3_for(settings.model_store) else None)
        name = options.model_name or options.topic
        version = registry.publish(name, workdir, manifest, alias=options.alias, reason=options.reason or "trained",
                                   figures=manifest["metrics"].get("evaluation", {}))
    state = registry.state(name)
    return registry.manifest(version) | {"alias": ", ".join(state.aliases_of(version.number)) or "no alias"}
