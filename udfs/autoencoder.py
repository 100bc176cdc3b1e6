"""The dense autoencoder and the two ways to score with it.

Score = mean squared reconstruction error of the normalised features. A high score means the
reading is unlike the normal data the model learned from; the manifest's threshold turns it into
an anomaly flag. Two scoring engines give the same numbers (float32, tested to 1e-5):

* ``TfScorer``: one compiled ``tf.function`` call per batch (the model's own graph; uses a GPU
  when TensorFlow sees one). ``model.predict`` is never used per batch: it costs ~35 ms a call.
* ``NumpyScorer``: the dense layers evaluated with numpy matmuls; no TF dispatch overhead, the
  fastest path on CPU for models this small (see benchmarks/).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CUDA-probe noise on CPU hosts; Python errors still raise

ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0, out=z),
    "linear": lambda z: z,
    "tanh": np.tanh,
}


def build_autoencoder(n_features: int, hidden: Sequence[int] = (32, 16, 8), *, learning_rate: float = 1e-3,
                      seed: int = 42) -> Any:
    """A symmetric dense autoencoder: encoder ``hidden``, mirrored decoder, linear output."""
    if n_features < 2:
        raise ValueError(f"an autoencoder needs at least 2 features, got {n_features}")
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden layer sizes must be positive integers, got {list(hidden)}")
    import keras

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

        self._score = _score

    def score(self, x: np.ndarray) -> np.ndarray:
        return self._score(np.asarray(x, dtype=np.float32)).numpy()


def make_scorer(model: Any, engine: str = "numpy") -> NumpyScorer | TfScorer:
    """The scorer for ``engine`` ('numpy' or 'tf')."""
    if engine == "numpy":
        return NumpyScorer.from_model(model)
    if engine == "tf":
        return TfScorer(model)
    raise ValueError(f"unknown scoring engine {engine!r}; use 'numpy' or 'tf'")
