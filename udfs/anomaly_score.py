"""ANOMALY(...): the autoencoder's reconstruction error as a vectorized (pandas) Flink UDF.

Arguments: the model's sensor columns for the current reading, in the manifest's order; for a model
with temporal context (udfs/feature_set.py) also each of the entity's W - 1 earlier readings'
sensor columns (the jobs get them with LAG over an OVER window per entity) and then the W event
times (the current reading's first): W x (sensors + 1) columns. A job may provide more readings
than the model reads (room for a later version with a longer window); the model takes the newest.
A UDF made with ``entity=True`` (the Table job's) takes the reading's entity pseudonym first: a
model calibrated per entity (``vigil train --threshold-per entity``) then flags each reading
against its entity's own threshold. Without it, and for entities the model was not calibrated on,
the fleet's threshold applies.

Returns one row per input row: ``score`` (higher = more anomalous; null when the reading is
unscorable: every sensor missing, or no usable model), ``is_anomaly`` (score above the model's
calibrated threshold; never on a reading of an entity still warming up; null when the score is
null), ``model_version`` (``name@N``: the registry version that produced the score; ``none``
when no usable model could be loaded, and then every score is null: the rows go to the DLQ as
unscorable instead of the job failing) and ``partial`` (null for a full reading; else what was
imputed or that the entity is warming up, or why the reading is unscorable).

The model is loaded once per Python worker in ``open()`` from the model registry
(connectors/model_registry.py) by reference (``name@alias`` or ``name@N``), and each Arrow batch
is scored with one call (numpy matmuls on CPU, one compiled TensorFlow call on GPU). With an
alias the worker looks every ``refresh_seconds`` where the alias points and swaps the new
version in between batches, so a promotion reaches a running job without a restart. It swaps
only to a version that reads the same features in the same order from the same schema as the
one it was started with; anything else is refused with one log line and the ``model_refusals``
metric, and scoring goes on. At (re)start, a target that cannot be loaded falls back to the
version the job was submitted with, then to the alias's earlier targets (``model_fallbacks``).

Configuration comes from the constructor or, for SQL use where the function is registered by name,
from job parameters (``pipeline.global-job-parameters``): ``vigil.model.uri`` (the store),
``vigil.model.ref``, ``vigil.model.refresh-seconds``, ``vigil.scoring.device``
(auto | cpu | gpu | gpu:N), ``vigil.scoring.engine`` (auto | numpy | tf) and, for s3:// stores,
``vigil.s3.endpoint``. S3 keys are never job parameters (those show in plans and the web UI): the
worker reads them from its own environment or the local stack's secrets (vigil.settings).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from udfs.drift import DriftWindow
from vigil.settings import S3Settings, VigilSettings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: CUDA-probe noise on CPU hosts
log = logging.getLogger("vigil.udfs.anomaly_score")

REFRESH_SECONDS = 30.0    # how often a worker scoring an alias looks where it points
NO_MODEL = "none"         # model_version of rows no model could score
DRIFT_WINDOW = 1000       # readings per subtask in each window of the drift gauges
RESULT_TYPE = DataTypes.ROW([
    DataTypes.FIELD("score", DataTypes.DOUBLE()),
    DataTypes.FIELD("is_anomaly", DataTypes.BOOLEAN()),
    DataTypes.FIELD("model_version", DataTypes.STRING()),
    DataTypes.FIELD("partial", DataTypes.STRING()),
])

_device_logged = False


def select_device(requested: str) -> str:
    """Make TensorFlow use the requested device; returns 'cpu' or 'gpu:N'. Logs the CPU fallback once.

    The GPU index is relative to what the worker sees (CUDA_VISIBLE_DEVICES, set per TaskManager).
    Memory growth is switched on so several workers can share one GPU.
    """
    global _device_logged
    from udfs.autoencoder import import_keras

    import_keras()
    import tensorflow as tf

    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "gpu") and not requested.startswith("gpu:"):
        raise ValueError(f"vigil.scoring.device must be auto, cpu, gpu or gpu:N, got {requested!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "cpu" or not gpus:
        if not _device_logged:
            reason = "as requested" if requested == "cpu" else f"no GPU is visible to this worker (asked for {requested})"
            log.warning("ANOMALY scores on the CPU: %s", reason)
            _device_logged = True
        return "cpu"
    index = int(requested.split(":")[1]) if ":" in requested else 0
    if index >= len(gpus):
        raise ValueError(f"vigil.scoring.device={requested} but this worker sees only {len(gpus)} GPU(s)")
    try:
        tf.config.set_visible_devices(gpus[index], "GPU")
        tf.config.experimental.set_memory_growth(gpus[index], True)
    except RuntimeError:
        pass  # already initialised by an earlier model in this worker: the setting stands
    if not _device_logged:
        log.warning("ANOMALY scores on GPU %d of %d", index, len(gpus))
        _device_logged = True
    return f"gpu:{index}"


def thresholds_for(own: dict[str, float], fleet: float, entities: Any, rows: int) -> np.ndarray | float:
    """The threshold of each of ``rows`` readings: its entity's own (``own``: pseudonym -> threshold,
    a model calibrated per entity) where there is one, else the fleet's; the fleet's for every row
    when there are no own thresholds or no ``entities``. The trainer calibrates by the same rule."""
    if not own or entities is None:
        return fleet
    return np.fromiter((own.get(e, fleet) if isinstance(e, str) else fleet for e in entities),
                       dtype=np.float64, count=rows)


class LoadedModel:
    """A verified model artifact ready to score: feature set, threshold, scorer, version."""

    def __init__(self, folder: Any, manifest: dict[str, Any], engine: str) -> None:
        from udfs.autoencoder import Ensemble, import_keras, make_scorer
        from udfs.feature_set import FeatureSet

        keras = import_keras()  # without TensorFlow's C++ start-up noise

        self.manifest = manifest
        self.version: str = manifest["version"]
        self.features = FeatureSet.from_dict(manifest["features"])
        self.threshold = float(manifest["threshold"])
        # per-entity calibration (train --threshold-per entity): entity pseudonym -> its threshold
        self.thresholds = {str(k): float(v) for k, v in (manifest.get("thresholds_by_entity") or {}).items()}
        self.window = self.features.window
        members = manifest["model"].get("members") or [{"file": manifest["model"]["file"], "error_scale": None}]
        self.scorer = Ensemble([(make_scorer(keras.models.load_model(folder / m["file"], compile=False), engine),
                                 m.get("error_scale")) for m in members],
                               reduce=manifest["model"].get("reduce", "mean"), groups=self.features.input_sensors())

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores for rows of raw feature values of a point model; NaN where a row is not finite."""
        scores = np.full(len(x), np.nan)
        finite = np.isfinite(x).all(axis=1)
        if finite.any():
            scores[finite] = self.scorer.score(self.features.transform(x[finite]))
        return scores

    def flags(self, scores: np.ndarray, status: Any, entities: Any = None) -> np.ndarray:
        """is_anomaly of scored readings (object array): None where unscorable, never while warming
        up, else the score above the reading's threshold (see :func:`thresholds_for`)."""
        threshold = thresholds_for(self.thresholds, self.threshold, entities, len(scores))
        return np.where(status.unscorable, None, (scores > threshold) & ~status.warming).astype(object)

    def score_context(self, ctx: Any, entities: Any = None) -> tuple[np.ndarray, np.ndarray, Any]:
        """(scores, is_anomaly, status) of readings in their temporal context (udfs/feature_set.py).

        ``entities``: each reading's entity pseudonym, for a model calibrated per entity. Unscorable
        readings get NaN and no flag; readings of a warming-up entity are scored but never flagged."""
        x, status = self.features.inputs(ctx)
        scores = self.scorer.score(x) if len(x) else np.zeros(0)
        scores = np.where(status.unscorable, np.nan, scores)
        return scores, self.flags(scores, status, entities), status


class ModelHandle:
    """The model a worker scores with: configured with plain values, loaded in ``open()``.

    Shared by the ANOMALY UDF and the DataStream job (see the module docstring for the rules).
    ``features``/``schema``: what the job feeds the model (its columns, in order, and the input
    schema's id); a version that differs is never used. ``fallback``: the version number the job
    was planned with. ``current()`` returns None when no usable version exists.
    """

    def __init__(self, model_uri: str | None = None, ref: str | None = None, *, features: list[str] | None = None,
                 schema: str | None = None, fallback: int | None = None, engine: str | None = None,
                 device: str | None = None, refresh_seconds: float | None = None,
                 s3: S3Settings | None = None, context: int | None = None) -> None:
        # Only plain, picklable values here: the handle is shipped to the workers before open().
        self.model_uri = model_uri
        self.ref = ref
        self.features = list(features) if features is not None else None
        self.schema = schema
        self.fallback = fallback
        self.engine = engine
        self.device = device
        self.refresh_seconds = refresh_seconds
        self.s3 = s3.without_credentials() if s3 is not None else None
        self.context = context  # readings per entity the job provides; a model needing more is refused
        self.model: LoadedModel | None = None

    def open(self, param: Any = None, group: Any = None) -> None:
        """Load the model; ``param(key, default)`` reads job parameters for unset options."""
        from connectors.model_registry import ModelRef
        from udfs import metrics

        param = param or (lambda key, default: default)
        self.model_uri = self.model_uri or param("vigil.model.uri", "")
        if not self.model_uri:
            raise ValueError("ANOMALY has no model store: pass model_uri or set the job parameter vigil.model.uri")
        self.ref = self.ref or param("vigil.model.ref", "")
        if not self.ref:
            raise ValueError("ANOMALY has no model: pass ref (name@alias) or set the job parameter vigil.model.ref")
        self._ref = ModelRef.parse(self.ref)
        self.refresh_seconds = float(self.refresh_seconds if self.refresh_seconds is not None
                                     else param("vigil.model.refresh-seconds", str(REFRESH_SECONDS)))
        if self.s3 is None and self.model_uri.startswith(("s3://", "s3a://")):
            endpoint = param("vigil.s3.endpoint", "")
            own = VigilSettings.load().s3
            self.s3 = own.model_copy(update={"endpoint": endpoint}) if endpoint else own
        device = select_device(self.device or param("vigil.scoring.device", "auto"))
        engine = (self.engine or param("vigil.scoring.engine", "auto")).lower()
        self._engine = ("tf" if device.startswith("gpu") else "numpy") if engine == "auto" else engine
        self._refusals = metrics.counter(group, "model_refusals")
        self._fallbacks = metrics.counter(group, "model_fallbacks")
        self._refused: set[int] = set()
        self._registry = self._open_registry()
        self.model = self._first_usable()
        self._checked_at = time.monotonic()

    def _open_registry(self) -> Any:
        from connectors.model_registry import ModelRegistry

        return ModelRegistry(self.model_uri, self.s3)

    def _load(self, version: Any) -> LoadedModel:
        """Load and check one version; raises (ModelStoreError, ValueError) saying why it is unusable."""
        from connectors.model_registry import compatible

        folder, manifest = self._registry.fetch(version)
        if self.features is not None:
            why = compatible(manifest, self.features, self.schema, self.context)
            if why:
                raise ValueError(f"{version.ref} does not fit this job: {why}")
        return LoadedModel(folder, manifest, self._engine)

    def _first_usable(self) -> LoadedModel | None:
        """The referenced version, else the planned one, else the alias's earlier targets; None if none loads."""
        problems = []
        try:
            state = self._registry.state(self._ref.name)
        except Exception as exc:  # noqa: BLE001 - a damaged or unreachable registry must not stop the job
            log.error("ANOMALY cannot read the model registry at %s: %s", self.model_uri, exc)
            return None
        candidates: list[Any] = []
        try:
            candidates.append(self._registry.resolve(self._ref, state))
        except Exception as exc:  # noqa: BLE001
            problems.append(str(exc))
        numbers = [self.fallback] if self.fallback is not None else []
        if self._ref.alias:
            numbers += state.previous_targets(self._ref.alias)
        candidates += [state.versions[n] for n in dict.fromkeys(numbers) if n in state.versions]
        unique, seen = [], set()
        for version in candidates:
            if version.number not in seen:
                seen.add(version.number)
                unique.append(version)
        for i, version in enumerate(unique):
            try:
                model = self._load(version)
            except Exception as exc:  # noqa: BLE001 - damaged files, checksum, incompatible: try the next
                problems.append(f"{version.ref}: {exc}")
                continue
            if i:
                self._fallbacks.inc()
                log.error("ANOMALY falls back to %s for %s: %s", version.ref, self._ref, "; ".join(problems))
            log.warning("ANOMALY loaded model %s from %s (%s engine)", model.version, self.model_uri, self._engine)
            return model
        log.error("ANOMALY has no usable model for %s; every row is unscorable until one is promoted: %s",
                  self._ref, "; ".join(problems) or "nothing to load")
        return None

    def current(self) -> LoadedModel | None:
        """The model to score the next batch with (after looking where the alias points, when due)."""
        if not hasattr(self, "_ref"):
            raise RuntimeError("the model handle was used before open()")
        if self.refresh_seconds > 0 and (self._ref.alias or self.model is None):
            now = time.monotonic()
            if now - self._checked_at >= self.refresh_seconds:
                self._checked_at = now
                self._refresh()
        return self.model

    def _refresh(self) -> None:
        if self.model is None:
            self.model = self._first_usable()
            return
        try:
            target = self._registry.resolve(self._ref)
        except Exception as exc:  # noqa: BLE001 - the registry changing under us must not stop scoring
            log.error("ANOMALY keeps model %s: cannot resolve %s: %s", self.model.version, self._ref, exc)
            return
        if target.ref == self.model.version or target.number in self._refused:
            return
        try:
            self.model = self._load(target)
            log.warning("ANOMALY swapped to model %s (%s)", target.ref, self._ref)
        except Exception as exc:  # noqa: BLE001 - refuse it once, keep scoring with the model we have
            self._refused.add(target.number)
            self._refusals.inc()
            log.error("ANOMALY refuses %s and keeps %s: %s", target.ref, self.model.version, exc)


class AnomalyScore(ScalarFunction):
    """Vectorized scoring UDF; see the module docstring for the contract."""

    def __init__(self, model_uri: str | None = None, ref: str | None = None, *, entity: bool = False,
                 **options: Any) -> None:
        self.handle = ModelHandle(model_uri, ref, **options)
        self.entity = entity  # the first argument is the entity pseudonym

    @property
    def model_uri(self) -> str | None:
        return self.handle.model_uri

    @property
    def _model(self) -> LoadedModel | None:
        return self.handle.model

    def is_deterministic(self) -> bool:
        # A hot-swapped model changes the result for the same input: never constant-fold or cache it.
        return False

    def open(self, function_context: FunctionContext | None) -> None:
        from udfs import metrics

        group = metrics.group(function_context)
        self.handle.open(function_context.get_job_parameter if function_context else None, group)
        self._scored = metrics.counter(group, "events_scored")
        self._anomalies = metrics.counter(group, "anomalies")
        self._version_info = metrics.ModelVersionInfo(group)
        self._last = {"p50": 0.0, "p99": 0.0, "latency_ms": 0.0}
        self._arity_logged: int | None = None
        metrics.gauge(group, "score_p50", lambda: self._last["p50"] * 1_000_000)
        metrics.gauge(group, "score_p99", lambda: self._last["p99"] * 1_000_000)
        # wall time of the latest batch's model call (event-to-score latency: benchmarks/pipeline.py)
        metrics.gauge(group, "scoring_latency_ms", lambda: round(self._last["latency_ms"]))
        # input drift of the latest full window of DRIFT_WINDOW readings against the model's training
        # baseline, in millionths; -1 until a window is full, or for a manifest without a baseline
        self._drift: DriftWindow | None = None
        metrics.gauge(group, "drift_max_psi", lambda: self._drift_gauge(None))
        model = self.handle.model
        for name in model.features.names if model is not None else ():
            metrics.gauge(group.add_group("feature", name) if group is not None else None, "drift_psi",
                          lambda name=name: self._drift_gauge(name))

    def _drift_gauge(self, feature: str | None) -> int:
        value = None if self._drift is None else (
            self._drift.max_psi if feature is None else self._drift.latest.get(feature))
        return -1 if value is None else round(value * 1_000_000)

    def eval(self, *columns: pd.Series) -> pd.DataFrame:
        from udfs.feature_set import FeatureError, context_from_columns

        if not hasattr(self.handle, "_ref"):
            raise RuntimeError("ANOMALY.eval() called before open()")
        started = time.perf_counter()
        model = self.handle.current()
        rows = len(columns[0]) if columns else 0
        entities = None
        if self.entity and columns:
            entities, columns = columns[0], columns[1:]
        ctx = None
        if model is not None:
            try:
                ctx = context_from_columns(columns, len(model.features)).head(model.window)
            except FeatureError as exc:
                if self._arity_logged != len(columns):
                    self._arity_logged = len(columns)
                    log.error("ANOMALY with model %s (features %s, %s): %s; every row is unscorable", model.version,
                              list(model.features.names), model.features.describe(), exc)
        if ctx is None:
            return pd.DataFrame({"score": np.full(rows, np.nan), "is_anomaly": np.full(rows, None, dtype=object),
                                 "model_version": np.full(rows, NO_MODEL, dtype=object),
                                 "partial": np.full(rows, None, dtype=object)})
        self._version_info.set(model.version)
        scores, flags, status = model.score_context(ctx, entities)
        self._observe(scores, flags, started)
        if self._drift is None or self._drift.version != model.version:   # a new version: its own baseline
            self._drift = DriftWindow(model.manifest.get("baseline"), model.features.names, DRIFT_WINDOW,
                                      version=model.version)
        self._drift.add(ctx.values[:, 0, :])
        # object dtype with None: PyFlink's Arrow writer rejects pandas' nullable "boolean" arrays
        return pd.DataFrame({"score": scores, "is_anomaly": flags,
                             "model_version": np.full(len(scores), model.version, dtype=object),
                             "partial": status.note})

    def _observe(self, scores: np.ndarray, flags: np.ndarray, started: float) -> None:
        valid = scores[~np.isnan(scores)]
        if len(valid):
            self._scored.inc(len(valid))
            self._anomalies.inc(int(np.sum(flags == True)))  # noqa: E712 - object array of True/False/None
            self._last["p50"], self._last["p99"] = np.quantile(valid, [0.5, 0.99])
        self._last["latency_ms"] = (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.handle.model = None


class _ModelContext:
    """The worker's function context for one model of NamedModelsScore: its metrics in a group of
    their own (``model=<ref>``), so two models' gauges never share a name."""

    def __init__(self, context: Any, ref: str) -> None:
        self._context, self._ref = context, ref

    def get_metric_group(self) -> Any:
        return self._context.get_metric_group().add_group("model", self._ref)

    def get_job_parameter(self, key: str, default: str) -> str:
        return self._context.get_job_parameter(key, default)


class NamedModelsScore(ScalarFunction):
    """``ANOMALY('name@alias', features...)`` of a SQL session: an AnomalyScore per model reference,
    chosen by the first argument (a constant the planner checked: jobs/sql/java ModelAnomalyFunction).
    A model is loaded the first time a batch asks for it."""

    def __init__(self, scorers: dict[str, AnomalyScore]) -> None:
        self.scorers = dict(scorers)

    def is_deterministic(self) -> bool:
        return False

    def open(self, function_context: FunctionContext | None) -> None:
        self._context = function_context
        self._opened: set[str] = set()

    def eval(self, ref: Any, *columns: pd.Series) -> pd.DataFrame:
        if isinstance(ref, pd.Series):
            ref = ref.iloc[0] if len(ref) else None
        scorer = self.scorers.get(ref)
        if scorer is None:  # the planner refuses such a call; a stale jar would get here
            raise ValueError(f"ANOMALY: no model {ref!r} in this session (models: {sorted(self.scorers)})")
        if ref not in self._opened:
            scorer.open(_ModelContext(self._context, ref) if self._context is not None else None)
            self._opened.add(ref)
        return scorer.eval(*columns)

    def close(self) -> None:
        for scorer in self.scorers.values():
            scorer.close()


def anomaly_udf(model_uri: str | None = None, ref: str | None = None, **options: Any) -> Any:
    """The Flink UDF object for Table API use: ``anomaly_udf(store, "name@alias")(*feature_columns)``."""
    return udf(AnomalyScore(model_uri, ref, **options), result_type=RESULT_TYPE, func_type="pandas")


# For SQL: CREATE TEMPORARY SYSTEM FUNCTION ANOMALY AS 'udfs.anomaly_score.anomaly' LANGUAGE PYTHON;
# configured through job parameters (see the module docstring).
anomaly = anomaly_udf()
