"""The dense autoencoder, its ensemble, and the two ways to score with it.

The model's inputs are built by the feature set (udfs/feature_set.py: one reading, a window of
an entity's readings, or a reading plus window statistics). Score = the mean over inputs of the
squared reconstruction error, each divided by that input's mean squared error on the training
rows (``error_scale``), so one input that is hard to reconstruct (a slowly drifting channel)
cannot dominate the rest; an ensemble averages the scores of members trained with other seeds.
A high score means the reading is unlike the normal data the model learned from; the manifest's
threshold turns it into an anomaly flag. Two scoring engines give the same numbers (float32,
tested to 1e-5):

* ``TfScorer``: one compiled ``tf.function`` call per batch (the model's own graph; uses a GPU
  when TensorFlow sees one). ``model.predict`` is never used per batch: it costs ~35 ms a call.
* ``NumpyScorer``: the dense layers evaluated with numpy matmuls; no TF dispatch overhead, the
  fastest path on CPU for models this small (see benchmarks/).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CUDA-probe noise on CPU hosts; Python errors still raise


def import_keras() -> Any:
    """``import keras`` (and TensorFlow) without the C++ start-up noise TF prints to stderr on CPU hosts
    (CUDA factory registration, absl warnings) whatever TF_CPP_MIN_LOG_LEVEL says. Python errors still
    raise; VIGIL_TF_VERBOSE=1 shows everything."""
    import sys

    if "keras" in sys.modules or os.environ.get("VIGIL_TF_VERBOSE") == "1":
        import keras

        return keras
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401 - the import is the point
        import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras

ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0, out=z),
    "linear": lambda z: z,
    "tanh": np.tanh,
}


def sizing(n_inputs: int) -> tuple[int, ...]:
    """Encoder sizes from the input width: bottleneck b = max(2, round(sqrt(n))), encoder (min(64, 4b), 2b, b).

    The bottleneck is always narrower than the input, so the model must compress (layers as wide as
    the input reconstruct faults as well as normal readings)."""
    b = max(2, round(math.sqrt(n_inputs)))
    b = min(b, max(1, n_inputs - 1))
    return (min(64, 4 * b), 2 * b, b)


def batch_size_for(rows: int) -> int:
    """At least 16 steps per epoch, a batch between 16 and 256 readings."""
    return int(min(256, max(16, rows // 16)))


def build_autoencoder(n_features: int, hidden: Sequence[int] = (32, 16, 8), *, learning_rate: float = 1e-3,
                      seed: int = 42) -> Any:
    """A symmetric dense autoencoder: encoder ``hidden``, mirrored decoder, linear output."""
    if n_features < 2:
        raise ValueError(f"an autoencoder needs at least 2 inputs, got {n_features}: a single sensor needs "
                         f"temporal context (a window of readings)")
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden layer sizes must be positive integers, got {list(hidden)}")
    keras = import_keras()

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    for i, size in enumerate(hidden):
        x = keras.layers.Dense(size, activation="relu", name=f"enc_{i}")(x)
    for i, size in enumerate(reversed(hidden[:-1])):
        x = keras.layers.Dense(size, activation="relu", name=f"dec_{i}")(x)
    outputs = keras.layers.Dense(n_features, activation="linear", name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="vigil_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def dense_layers(model: Any) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(kernel, bias, activation) of each Dense layer, in order."""
    layers = []
    for layer in model.layers:
        if not layer.weights:
            continue
        config = layer.get_config()
        activation = config.get("activation", "linear")
        if activation not in ACTIVATIONS:
            raise ValueError(f"layer {layer.name}: activation {activation!r} has no numpy twin")
        kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
        layers.append((kernel, bias, activation))
    return layers


class NumpyScorer:
    """Reconstruction error with the dense weights evaluated in numpy (float32)."""

    engine = "numpy"

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, str]]) -> None:
        self.layers = layers

    @classmethod
    def from_model(cls, model: Any) -> NumpyScorer:
        return cls(dense_layers(model))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float32)
        for kernel, bias, activation in self.layers:
            z = z @ kernel
            z += bias
            z = ACTIVATIONS[activation](z)
        return z

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        diff = self.reconstruct(x) - x
        return np.einsum("ij,ij->i", diff, diff) / x.shape[1]

    def weighted_score(self, x: np.ndarray, inverse_scale: np.ndarray) -> np.ndarray:
        """Mean over inputs of squared error / error_scale (``inverse_scale`` = 1 / error_scale)."""
        x = np.asarray(x, dtype=np.float32)
        diff = self.reconstruct(x) - x
        return (diff * diff) @ (inverse_scale / x.shape[1])


class TfScorer:
    """Reconstruction error with one compiled TensorFlow call per batch."""

    engine = "tf"

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        n = model.input_shape[-1]

        @tf.function(input_signature=[tf.TensorSpec([None, n], tf.float32)], reduce_retracing=True)
        def _score(x: Any) -> Any:
            recon = model(x, training=False)
            return tf.reduce_mean(tf.square(recon - x), axis=1)

        @tf.function(input_signature=[tf.TensorSpec([None, n], tf.float32), tf.TensorSpec([n], tf.float32)],
                     reduce_retracing=True)
        def _weighted(x: Any, inverse_scale: Any) -> Any:
            recon = model(x, training=False)
            return tf.reduce_mean(tf.square(recon - x) * inverse_scale, axis=1)

        @tf.function(input_signature=[tf.TensorSpec([None, n], tf.float32)], reduce_retracing=True)
        def _reconstruct(x: Any) -> Any:
            return model(x, training=False)

        self._score = _score
        self._weighted = _weighted
        self._reconstruct = _reconstruct

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self._reconstruct(np.asarray(x, dtype=np.float32)).numpy()

    def score(self, x: np.ndarray) -> np.ndarray:
        return self._score(np.asarray(x, dtype=np.float32)).numpy()

    def weighted_score(self, x: np.ndarray, inverse_scale: np.ndarray) -> np.ndarray:
        return self._weighted(np.asarray(x, dtype=np.float32), np.asarray(inverse_scale, dtype=np.float32)).numpy()


REDUCTIONS = ("sensor", "mean")


class Ensemble:
    """Members (a scorer and its per-input error scale each); the score is the members' mean.

    Per member, each input's squared error is divided by its error scale; ``reduce`` turns them into
    one score: ``mean`` over all inputs, or ``sensor``: the mean over each sensor's inputs (its
    readings in the window, its statistics), then the largest of those, so a fault in one sensor
    of many is not diluted by the others (``groups`` maps each input to its sensor).
    """

    def __init__(self, members: Sequence[tuple[NumpyScorer | TfScorer, np.ndarray | None]],
                 reduce: str = "mean", groups: Sequence[int] | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown score reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")
        self.members = [(scorer, None if scale is None else (1.0 / np.asarray(scale, dtype=np.float32)))
                        for scorer, scale in members]
        self.engine = members[0][0].engine
        self.reduce = reduce
        self._average = None
        if reduce == "sensor":
            if groups is None:
                raise ValueError("the sensor reduction needs each input's sensor (groups)")
            groups = np.asarray(groups)
            average = (groups[:, None] == np.unique(groups)[None, :]).astype(np.float32)
            self._average = average / average.sum(axis=0, keepdims=True)

    def score(self, x: np.ndarray) -> np.ndarray:
        total = np.zeros(len(x), dtype=np.float64)
        for scorer, inverse in self.members:
            if self._average is None:
                total += scorer.score(x) if inverse is None else scorer.weighted_score(x, inverse)
                continue
            x32 = np.asarray(x, dtype=np.float32)
            diff = scorer.reconstruct(x32) - x32
            weighted = diff * diff if inverse is None else diff * diff * inverse
            total += (weighted @ self._average).max(axis=1)
        return total / len(self.members)


def error_scale(scorer: NumpyScorer, x: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Per-input mean squared reconstruction error on (training) rows ``x``, floored."""
    x = np.asarray(x, dtype=np.float32)
    diff = scorer.reconstruct(x) - x
    return np.maximum((diff * diff).mean(axis=0), floor).astype(np.float64)


def make_scorer(model: Any, engine: str = "numpy") -> NumpyScorer | TfScorer:
    """The scorer for ``engine`` ('numpy' or 'tf')."""
    if engine == "numpy":
        return NumpyScorer.from_model(model)
    if engine == "tf":
        return TfScorer(model)
    raise ValueError(f"unknown scoring engine {engine!r}; use 'numpy' or 'tf'")
