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
from dataclasses import dataclass
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
from udfs.drift import baseline as input_baseline
from udfs.feature_set import DEFAULT_STATS, Context, FeatureError, FeatureSet, context_from_frame
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
    history: str | None = option(None, "Parquet history (folder or s3:// prefix) written by the scoring job of "
                                       "this topic: its readings that the Kafka range does not hold are added "
                                       "(each once; --from/--to apply)")
    include_labelled: bool = option(False, "train on labelled failures too")
    leave_out_flagged: str | None = option(None, "a scoring job's scored topic of this topic (<topic>.scored): "
                                                 "the readings it flagged are left out like labelled failures",
                                           show_default="none")
    features: list[str] | None = option(None, "feature columns, comma-separated", parse=comma_list,
                                        show_default="every numeric column of the schema")
    context: Literal["window", "stats", "point"] = option(
        "window", "what the model reads per reading: window (the entity's last --window readings), stats (the "
                  "reading plus --stats over the window) or point (the reading alone)")
    window: int = option(8, "readings per entity the model reads (window, stats): the current one and those "
                            "before it; shortened on short training ranges", ge=2)
    stats: list[str] = option(list(DEFAULT_STATS), "with --context stats: statistics over the window, "
                                                   "comma-separated (diff, mean, std, min, max, dt)", parse=comma_list)
    horizon_seconds: float | None = option(None, "with --context stats: only readings this recent count in the "
                                                 "window statistics", gt=0, show_default="the whole window")
    score_reduce: Literal["sensor", "mean"] = option(
        "sensor", "score: sensor (the largest of the sensors' mean normalised errors: one faulty sensor of many "
                  "stands out) or mean (over all inputs)")
    members: int = option(3, "models in the ensemble (seeds seed, seed+1, ...); the score is their mean", ge=1,
                          le=10)
    hidden: list[int] | None = option(None, "encoder layer sizes, comma-separated (the decoder mirrors them)",
                                      parse=int_list, show_default="from the input width: (min(64, 4b), 2b, b), "
                                                                   "b = round(sqrt(inputs))")
    epochs: int = option(300, "most training epochs (early stopping ends sooner)", ge=1)
    batch_size: int | None = option(None, "training batch size", ge=1,
                                    show_default="rows/16 within 16..256 (>= 16 steps per epoch)")
    patience: int = option(10, "epochs without validation improvement before stopping", ge=1)
    learning_rate: float = option(3e-3, "Adam learning rate", gt=0)
    validation_split: float = option(0.2, "share of the training range kept for validation and the threshold: "
                                          "its newest readings", gt=0, lt=1)
    threshold_quantile: float = option(0.99, "threshold: --threshold-margin x this quantile of the validation "
                                             "scores", gt=0.5, lt=1)
    threshold_margin: float = option(3.0, "threshold: this many times the validation quantile (room for the "
                                          "normal variation a few hundred validation readings do not show)", gt=0)
    threshold_per: Literal["fleet", "entity"] = option(
        "fleet", "fleet: one threshold for every entity; entity: each entity's own, from its own validation "
                 "readings (for fleets of unlike machines; entities with fewer validation readings than the "
                 "minimum below, and new ones, get the fleet's)")
    entity_min_readings: int = option(50, "with --threshold-per entity: the fewest validation readings an "
                                          "entity's own threshold is set from", ge=10)
    eval_fraction: float = option(0.25, "share of readings held out for evaluation", ge=0, lt=1)
    eval_split: Literal["blocks", "tail"] = option("blocks", "evaluation rows: every n-th time block, or the newest")
    eval_block_seconds: float = option(300.0, "length of an evaluation block, seconds of event time", gt=0)
    seed: int = option(42, "random seed (model weights, split)")
    min_rows: int = option(200, "fewest training readings accepted", ge=10)
    quiet: bool = option(False, "no progress output")


# --- data ---------------------------------------------------------------------------------------

PARTITION, OFFSET = "_partition", "_offset"  # where each record was in the log (the jobs' reading order)
FLAGGED = "_flagged"   # a reading a scoring job flagged (--leave-out-flagged): not a normal context

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
            record[PARTITION], record[OFFSET] = msg.partition(), msg.offset()  # the log order, as jobs see it
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

def classification_metrics(predicted: np.ndarray, labels: pd.Series) -> dict[str, Any]:
    """Precision/recall/F1/FPR of the flags ``predicted`` against ``labels`` (non-null = failure)."""
    actual = labels.notna().to_numpy()
    predicted = np.asarray(predicted, dtype=bool)
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    tn = int((~predicted & ~actual).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_mode = {str(mode): float((predicted[(labels == mode).to_numpy()]).mean())
                for mode in sorted(labels.dropna().unique())}
    return {"rows": int(len(predicted)), "anomalies": int(actual.sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
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
    fig.suptitle(title, fontsize=10)
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


@dataclass
class Trained:
    """The fitted ensemble: keras members (saved as member-<i>.keras) and the manifest fields."""

    fields: dict[str, Any]
    members: list[Any]

    def save(self, folder: Path) -> None:
        for member, entry in zip(self.members, self.fields["model"]["members"]):
            member.save(folder / entry["file"])


def effective_window(window: int, frame: pd.DataFrame, entity: str | None, fit_idx: np.ndarray) -> int:
    """The window, shortened so that most of a short training range has full windows: at most a third
    of the median entity's training readings (never under 2)."""
    if entity and entity in frame:
        per_entity = frame[entity].iloc[fit_idx].value_counts()
        rows = int(per_entity.median()) if len(per_entity) else 0
    else:
        rows = len(fit_idx)
    return int(max(2, min(window, rows // 3)))


def no_rows_message(n: int, settings: TrainOptions, left_out: dict[str, int]) -> str:
    """Why too few readings are left to train on, with the remedies that apply."""
    parts = [f"only {n} readings to train on (need >= {settings.min_rows}; --min-rows lowers that)"]
    remedies = {"labelled": "--include-labelled trains on them too",
                "flagged": "without --leave-out-flagged they are trained on",
                "warming": "a shorter --window needs fewer readings per entity",
                "partial": "readings with missing sensors are not trained on",
                "evaluation": "--eval-fraction 0 keeps none aside"}
    for why, count in left_out.items():
        if count:
            parts.append(f"{count} left out as {why} ({remedies[why]})")
    parts.append("or widen the range (--from/--to) or add older history (--history)")
    return "; ".join(parts)


def validation_split(fit_idx: np.ndarray, keys: np.ndarray | None, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) rows of ``fit_idx`` (in time order): validation is the newest ``share``
    of the training range; with ``keys`` (per-entity calibration) the newest ``share`` of each
    entity's rows, so an entity that reports less often, or earlier, still has its own."""
    if keys is None:
        n_val = max(1, int(len(fit_idx) * share))
        return fit_idx[:-n_val], fit_idx[-n_val:]
    fit_keys = pd.Series(keys[fit_idx], dtype=object).fillna("")   # readings of no entity: one group
    rank_from_end = fit_keys.groupby(fit_keys, sort=False).cumcount(ascending=False).to_numpy()
    sizes = fit_keys.map(fit_keys.value_counts()).to_numpy()
    newest = rank_from_end < np.maximum(1, (sizes * share).astype(int))
    return fit_idx[~newest], fit_idx[newest]


def entity_thresholds(keys: np.ndarray | None, val_idx: np.ndarray, val_scores: np.ndarray,
                      settings: TrainOptions) -> dict[str, float]:
    """``--threshold-per entity``: each entity's threshold from its own validation scores, by the
    fleet's rule (margin x quantile), for entities with at least ``--entity-min-readings`` of them."""
    if keys is None:
        return {}
    val_keys = keys[val_idx]
    own = {}
    for key in pd.unique(val_keys):
        mine = val_scores[val_keys == key]
        if key is not None and len(mine) >= settings.entity_min_readings:
            own[key] = float(settings.threshold_margin * np.quantile(mine, settings.threshold_quantile))
    return own


def train(frame: pd.DataFrame, features: FeatureSet, label_col: str | None, time_col: str | None,
          settings: TrainOptions, workdir: Path, entity_col: str | None = None, version: str | None = None,
          entity_keys: pd.Series | None = None) -> Trained:
    """Fit normalisation and the ensemble; returns the manifest fields and the members. Writes report.png.

    Readings are ordered per entity as the jobs read them (the Kafka log order: ``_partition``,
    ``_offset`` when the frame has them, else the frame's order) to build each one's temporal
    context; only full readings of entities past their first window are trained on.
    ``entity_keys``: each row's entity as the jobs name it (its pseudonym), for ``--threshold-per
    entity``; by default the entity column's values.
    """
    from udfs.autoencoder import (Ensemble, NumpyScorer, batch_size_for, build_autoencoder, error_scale,
                                  import_keras, sizing)
    from udfs.anomaly_score import thresholds_for

    keras = import_keras()

    frame = frame.reset_index(drop=True)
    labels = frame[label_col] if label_col and label_col in frame else pd.Series([None] * len(frame), dtype=object)
    eval_idx, fit_idx = split_evaluation(frame, time_col, settings)
    if settings.context == "point":
        features = FeatureSet(features.names)
    else:
        window = effective_window(settings.window, frame, entity_col, fit_idx)
        if window < settings.window and not settings.quiet:
            print(f"window: {window} readings, not {settings.window}: the training range has few readings per entity",
                  flush=True)
        features = FeatureSet(features.names, window=window, context=settings.context,
                              stats=tuple(settings.stats) if settings.context == "stats" else (),
                              horizon_seconds=settings.horizon_seconds if settings.context == "stats" else None)
    if features.input_width < 2:
        raise FeatureError(f"one sensor column ({features.names[0]}) read alone gives the model nothing to learn: "
                           f"use --context window (the default) or --context stats")
    order = [c for c in (PARTITION, OFFSET) if c in frame]
    ctx = context_from_frame(frame, features.names, entity_col, time_col, order, features.window)
    _, _, status = features.prepare(ctx)
    full = np.array([note is None for note in status.note])
    left_out = {"labelled": 0, "flagged": 0, "warming": int(status.warming[fit_idx].sum()),
                "partial": int((~full[fit_idx] & ~status.warming[fit_idx]).sum()), "evaluation": len(eval_idx)}
    fit_idx = fit_idx[full[fit_idx]]
    # a reading whose window holds a labelled failure (or a reading a job flagged) is not a normal
    # context either: trained on, the model would learn to reconstruct the failure in the window's
    # earlier readings
    for why, marked in (("labelled", None if settings.include_labelled else labels.notna()),
                        ("flagged", frame[FLAGGED] if FLAGGED in frame else None)):
        if marked is None:
            continue
        marks = frame.assign(_marked=marked.to_numpy(dtype=float))
        in_window = context_from_frame(marks, ["_marked"], entity_col, time_col, order, features.window)
        normal = ~(np.nan_to_num(in_window.values[fit_idx, :, 0]) > 0).any(axis=1)
        left_out[why] = int((~normal).sum())
        fit_idx = fit_idx[normal]
    if len(fit_idx) < settings.min_rows:
        raise FeatureError(no_rows_message(len(fit_idx), settings, left_out))
    fit_idx = fit_idx[np.argsort(_time_order(frame, time_col)[fit_idx], kind="stable")]
    keys = None
    if settings.threshold_per == "entity":
        if entity_keys is None and not (entity_col and entity_col in frame):
            raise FeatureError("--threshold-per entity needs each reading's entity: the schema names no entity column")
        ids = entity_keys if entity_keys is not None else frame[entity_col]
        # as the jobs name entities: text (an id of another type would miss its own threshold)
        keys = np.array([None if pd.isna(k) else str(k) for k in ids], dtype=object)
    train_idx, val_idx = validation_split(fit_idx, keys, settings.validation_split)

    def sub(idx: np.ndarray) -> Context:
        return Context(ctx.values[idx], ctx.times[idx])

    fitted = features.fit(sub(train_idx))
    x_train, _ = fitted.inputs(sub(train_idx))
    x_val, _ = fitted.inputs(sub(val_idx))
    hidden = tuple(settings.hidden) if settings.hidden else sizing(fitted.input_width)
    batch = settings.batch_size or batch_size_for(len(train_idx))
    started = time.monotonic()
    members, entries, histories = [], [], []
    for i in range(settings.members):
        model = build_autoencoder(fitted.input_width, hidden, learning_rate=settings.learning_rate,
                                  seed=settings.seed + i)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
        progress = EpochProgress(settings.epochs, f"training {i + 1}/{settings.members}", settings.quiet)
        fit = model.fit(x_train, x_train, validation_data=(x_val, x_val), epochs=settings.epochs, batch_size=batch,
                        shuffle=True, callbacks=[stop, progress], verbose=0)
        progress.close()
        scale = error_scale(NumpyScorer.from_model(model), x_train)
        members.append(model)
        histories.append(fit.history)
        entries.append({"file": f"member-{i}.keras", "seed": settings.seed + i, "error_scale": scale.tolist(),
                        "epochs_run": len(fit.history["loss"])})
    seconds = time.monotonic() - started
    ensemble = Ensemble([(NumpyScorer.from_model(m), e["error_scale"]) for m, e in zip(members, entries)],
                        reduce=settings.score_reduce, groups=fitted.input_sensors())

    val_scores = ensemble.score(x_val)
    threshold = float(settings.threshold_margin * np.quantile(val_scores, settings.threshold_quantile))
    own = entity_thresholds(keys, val_idx, val_scores, settings)
    row_threshold = lambda idx: thresholds_for(own, threshold, keys[idx] if own else None, len(idx))  # noqa: E731
    exceed = float((val_scores > row_threshold(val_idx)).mean())
    eval_scores, eval_flags = np.array([]), np.array([], bool)
    if len(eval_idx):
        x_eval, eval_status = fitted.inputs(sub(eval_idx))
        eval_scores = ensemble.score(x_eval)
        eval_flags = (eval_scores > row_threshold(eval_idx)) & ~eval_status.warming
    eval_labels = labels.iloc[eval_idx].reset_index(drop=True) if len(eval_idx) else None
    metrics: dict[str, Any] = {
        "epochs_run": [e["epochs_run"] for e in entries], "train_seconds": round(seconds, 2),
        "final_loss": float(np.mean([h["loss"][-1] for h in histories])),
        "best_val_loss": float(np.mean([min(h["val_loss"]) for h in histories])),
        "validation_score_quantiles": {str(q): float(np.quantile(val_scores, q)) for q in (0.5, 0.9, 0.99, 0.999)},
        "expected_false_alarm_rate": {
            "validation_readings_above": exceed, "validation_readings": int(len(val_idx)),
            "bound": max(exceed, 1.0 / len(val_idx)),
            "note": "share of the newest training readings (normal, not trained on) above the threshold; with "
                    "none above, below 1/readings"},
        "rows": {"read": int(len(frame)), "train": int(len(train_idx)), "validation": int(len(val_idx)),
                 "evaluation": int(len(eval_idx)), "left_out": left_out},
    }
    if eval_labels is not None and eval_labels.notna().any():
        metrics["evaluation"] = classification_metrics(eval_flags, eval_labels)
    elif len(eval_idx):
        metrics["evaluation"] = {"rows": int(len(eval_idx)), "flagged_rate": float(eval_flags.mean())}
    if not len(eval_idx) and settings.eval_fraction > 0 and not settings.quiet:
        print(f"warning: the evaluation hold-out is empty (--eval-split {settings.eval_split}, blocks of "
              f"{settings.eval_block_seconds:g} s on a range of {_span_seconds(frame, time_col):.0f} s): no quality "
              f"figures; use --eval-split tail or shorter --eval-block-seconds", flush=True)
    ev = metrics.get("evaluation", {})
    figures = (f"evaluation: precision {ev['precision']:.3f}, recall {ev['recall']:.3f}, F1 {ev['f1']:.3f}, "
               f"false-positive rate {ev['false_positive_rate']:.4f} on {ev['rows']} readings"
               if "precision" in ev else "no labelled evaluation readings")
    plot_report(workdir / "report.png", histories[0], val_scores, eval_scores, eval_labels, threshold,
                f"Vigil autoencoder{' ' + version if version else ''} on {settings.topic}: {fitted.describe()}, "
                f"{settings.members} member(s)\n"
                f"threshold {threshold:.3g} = {settings.threshold_margin:g} x the {settings.threshold_quantile:g} "
                f"quantile of {len(val_idx)} validation readings; {figures}")
    fields = {
        "features": fitted.to_dict(), "threshold": threshold,
        "threshold_rule": {"quantile": settings.threshold_quantile, "margin": settings.threshold_margin,
                           "per": settings.threshold_per,
                           "of": "validation scores (the newest training readings"
                                 + (" of each entity)" if keys is not None else ")"),
                           **({"entity_min_readings": settings.entity_min_readings,
                               "entities_calibrated": len(own),
                               "entities": int(len(pd.unique(keys[val_idx])))} if keys is not None else {})},
        **({"thresholds_by_entity": own} if own else {}),
        "model": {"kind": "autoencoder_ensemble", "hidden": list(hidden), "inputs": fitted.input_width,
                  "batch_size": batch, "members": entries, "reduce": settings.score_reduce,
                  "score": "squared reconstruction error / its training mean (error_scale) per input; "
                           + ("the largest of the sensors' means" if settings.score_reduce == "sensor"
                              else "the mean over inputs") + "; averaged over members; higher = more anomalous"},
        "metrics": metrics,
        # the input distribution the model was fitted on: jobs/monitor.py measures drift against it
        "baseline": input_baseline(ctx.values[fit_idx, 0, :], features.names),
        "loss_history": {k: [float(v) for v in vals] for k, vals in histories[0].items()},
    }
    return Trained(fields, members)


class EpochProgress:
    """A Keras callback drawing one progress bar per member: epochs, loss and validation loss."""

    def __new__(cls, epochs: int, desc: str, quiet: bool) -> Any:
        from tqdm import tqdm

        from udfs.autoencoder import import_keras

        keras = import_keras()

        class _Bar(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.bar = tqdm(total=epochs, unit="epoch", desc=desc, disable=quiet or None, leave=False)

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                self.bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.4f}",
                                     val=f"{logs.get('val_loss', float('nan')):.4f}", refresh=False)
                self.bar.update(1)

            def close(self) -> None:
                self.bar.close()

        return _Bar()


def _time_order(frame: pd.DataFrame, time_col: str | None) -> np.ndarray:
    if time_col and time_col in frame:
        from udfs.feature_set import time_millis

        millis = time_millis(frame[time_col])
        return np.where(np.isnan(millis), -np.inf, millis)
    return np.arange(len(frame), dtype=np.float64)


def _span_seconds(frame: pd.DataFrame, time_col: str | None) -> float:
    order = _time_order(frame, time_col)
    finite = order[np.isfinite(order)]
    return float((finite.max() - finite.min()) / 1000) if len(finite) and time_col else 0.0


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


def new_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def history_beside(history: pd.DataFrame, ranges: list[PartitionRange], time_col: str | None, start: str | None,
                   end: str | None) -> pd.DataFrame:
    """The tier's readings that add to the Kafka range: each once (by source partition and offset),
    none that the range read too (the same record twice would be trained on twice, or land in the
    evaluation as well as in training), and only those in --from/--to when given."""
    keep = np.ones(len(history), dtype=bool)
    if PARTITION in history and OFFSET in history:  # without a source position (Parquet from elsewhere): kept
        placed = history[PARTITION].notna() & history[OFFSET].notna()
        keep &= ~(placed & history.duplicated([PARTITION, OFFSET])).to_numpy()
        for r in ranges:
            inside = (history[PARTITION] == r.partition) & (history[OFFSET] >= r.start) & (history[OFFSET] < r.end)
            keep &= ~inside.to_numpy()
    if time_col and time_col in history and (start or end):
        times = pd.to_datetime(history[time_col], utc=True, errors="coerce")
        if start:
            keep &= (times >= pd.Timestamp(start)).to_numpy()
        if end:
            keep &= (times < pd.Timestamp(end)).to_numpy()
    return history[keep].reset_index(drop=True)


def flagged_by(bootstrap: str, scored_topic: str, frame: pd.DataFrame) -> pd.Series:
    """Which rows of ``frame`` (read from the scored topic's input) the scoring job flagged: its scored
    records with ``is_anomaly`` true, matched by source partition and offset."""
    import json

    from connectors.kafka_io import read_all
    from connectors.records import SOURCE_FIELDS

    partition, offset = SOURCE_FIELDS
    flagged = set()
    for message in read_all(bootstrap, scored_topic):   # ConnectorError naming a missing topic
        try:
            record = json.loads(message.value())
        except (TypeError, ValueError):
            continue   # not a scored record: nothing flagged
        if isinstance(record, dict) and record.get("is_anomaly") is True:
            flagged.add((record.get(partition), record.get(offset)))
    return pd.Series([(p, o) in flagged for p, o in zip(frame[PARTITION], frame[OFFSET])], index=frame.index)


def entity_pseudonyms(settings: VigilSettings, ids: pd.Series) -> pd.Series:
    """The entity ids as the jobs name them: pseudonymised with the settings' secret."""
    from connectors.privacy import pseudonym
    from vigil.settings import read_pseudonym_secret

    secret = read_pseudonym_secret(settings.pseudonym.secret_file, secret=settings.pseudonym.secret)
    names = {v: pseudonym(secret, v) for v in {str(v) for v in ids if v is not None and v == v}}
    return pd.Series([None if v is None or v != v else names[str(v)] for v in ids], index=ids.index, dtype=object)


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
    if options.leave_out_flagged:
        frame[FLAGGED] = flagged_by(bootstrap, options.leave_out_flagged, frame)
        sources["flagged"] = {"topic": options.leave_out_flagged, "rows": int(frame[FLAGGED].sum())}
    keys = entity_pseudonyms(settings, frame[role["entity"]]) if options.threshold_per == "entity" else None
    if options.history:
        pseudonym = f"{role['entity']}_pseudonym"
        history = read_history(options.history, [*features.names, *(c for c in role.values() if c), pseudonym,
                                                 "source_partition", "source_offset"], settings.s3)
        # the tier keeps ids only as pseudonyms: history readings form sequences of their own
        history = history.rename(columns={pseudonym: role["entity"], "source_partition": PARTITION,
                                          "source_offset": OFFSET})
        read = len(history)
        history = history_beside(history, ranges, role["time"], options.start, options.end)
        sources["history"] = {"uri": options.history, "rows": int(len(history)), "left_out": int(read - len(history))}
        if keys is not None:   # history readings are named by their pseudonyms already
            keys = pd.concat([history[role["entity"]], keys], ignore_index=True)
        frame = pd.concat([history, frame], ignore_index=True)
    if frame.empty:
        raise FeatureError(f"no records in the chosen range of {options.topic!r} "
                           f"(ranges {[(r.partition, r.start, r.end) for r in ranges]})")
    with tempfile.TemporaryDirectory(prefix="vigil-train-") as tmp:
        workdir = Path(tmp)
        version = new_version()
        trained = train(frame, features, role["label"], role["time"], options, workdir, entity_col=role["entity"],
                        version=version, entity_keys=keys)
        trained.save(workdir)
        manifest = {
            "version": version,
            "schema": schema_id(schema),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **trained.fields,
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
