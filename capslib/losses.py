"""The paper's losses, per example: margin loss and reconstruction loss.

total = margin + RECONSTRUCTION_WEIGHT * reconstruction (the paper's 0.0005,
applied to a *sum* of squared pixel errors; a mean would be 784x weaker).
"""
import math

import keras
import numpy as np
from keras import ops

RECONSTRUCTION_WEIGHT = 0.0005


def _values_if_known(x):
    """``x`` as a NumPy array when its values exist now (eager), else None.

    Inside ``fit`` the losses are traced (symbolic TensorFlow tensors, JAX
    tracers): only shapes can be checked there, so value checks are skipped.
    """
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)):
        return np.asarray(x)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        if not tf.executing_eagerly():  # inside a tf.function
            return None
    try:
        return ops.convert_to_numpy(x)
    except Exception:  # each backend says "not concrete" with its own error type
        return None


def _check_class_ids(values, n_classes):
    valid = f"class ids 0..{n_classes - 1} (or one-hot targets)"
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"labels must be {valid}, got dtype {values.dtype}.")
    not_whole = values[~np.isfinite(values) | (values != np.round(values))]
    if not_whole.size:
        raise ValueError(f"labels must be whole {valid}, found {not_whole[:3].tolist()}.")
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if low < 0 or high >= n_classes:
        found = f"{low:g}" if low == high else f"values from {low:g} to {high:g}"
        raise ValueError(f"labels must be {valid}, found {found}.")


def _compatible(shape_a, shape_b):
    """Equal shapes, where unknown (None) dimensions match anything."""
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b))


def _one_hot_targets(labels, lengths):
    """Accept class ids (batch,) or one-hot targets (batch, n_classes)."""
    values = _values_if_known(labels)
    labels = ops.convert_to_tensor(labels)
    if len(lengths.shape) != 2:
        raise ValueError(f"lengths must have shape (batch, n_classes), got {lengths.shape}.")
    batch, n_classes = lengths.shape
    if len(labels.shape) == 2:
        if not _compatible(labels.shape, lengths.shape):
            raise ValueError(f"one-hot targets of shape {labels.shape} do not match lengths "
                             f"of shape {lengths.shape}.")
        return ops.cast(labels, lengths.dtype)
    if len(labels.shape) != 1 or not _compatible(labels.shape, (batch,)):
        raise ValueError(f"labels must be class ids shaped ({batch},) or one-hot targets "
                         f"shaped like lengths {lengths.shape}, got shape {labels.shape}.")
    if values is not None:
        _check_class_ids(values, n_classes)
    return ops.one_hot(ops.cast(labels, "int32"), n_classes, dtype=lengths.dtype)


def margin_loss(labels, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """Paper's eq. 4, summed over classes: one value per example.

    L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2

    ``labels`` are class ids 0..n_classes-1 (integers, or floats with whole
    values) or one-hot targets shaped like ``lengths``; anything else is a
    ValueError (ids are checked where their values are known, outside ``fit``).
    """
    lengths = ops.cast(lengths, "float32")
    t = _one_hot_targets(labels, lengths)
    present = t * ops.square(ops.relu(m_plus - lengths))
    absent = lambda_ * (1.0 - t) * ops.square(ops.relu(lengths - m_minus))
    return ops.sum(present + absent, axis=-1)


def _per_example_size(shape):
    dims = shape[1:]
    return math.prod(dims) if None not in dims else None


def reconstruction_loss(images, reconstructions):
    """Sum of squared pixel errors, one value per example.

    ``images`` and ``reconstructions`` may differ in shape, e.g. (B, 28, 28, 1)
    against flat (B, 784), as long as each example has as many values in both;
    otherwise (or for another batch size) it is a ValueError naming both shapes.
    """
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    a, b = tuple(images.shape), tuple(reconstructions.shape)
    size_a, size_b = _per_example_size(a), _per_example_size(b)
    if len(a) < 1 or not _compatible(a[:1], b[:1]):
        raise ValueError(f"images {a} and reconstructions {b} differ in batch size.")
    if None not in (size_a, size_b) and size_a != size_b:
        raise ValueError(f"images {a} and reconstructions {b} differ in values per example "
                         f"({size_a} vs {size_b}).")
    batch = ops.shape(images)[0]
    # Flattened separately: (B, 784) - (B, 28, 28, 1) would broadcast silently.
    diff = ops.reshape(images, (batch, -1)) - ops.reshape(reconstructions, (batch, -1))
    return ops.sum(ops.square(diff), axis=-1)


@keras.saving.register_keras_serializable(package="capslib")
class MarginLoss(keras.losses.Loss):
    """``margin_loss`` as a Keras loss (averaged over the batch by Keras)."""

    def __init__(self, m_plus=0.9, m_minus=0.1, lambda_=0.5, name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.m_plus, self.m_minus, self.lambda_ = m_plus, m_minus, lambda_

    def call(self, y_true, y_pred):
        return margin_loss(y_true, y_pred, self.m_plus, self.m_minus, self.lambda_)

    def get_config(self):
        return {**super().get_config(), "m_plus": self.m_plus,
                "m_minus": self.m_minus, "lambda_": self.lambda_}


@keras.saving.register_keras_serializable(package="capslib")
class ReconstructionLoss(keras.losses.Loss):
    """``reconstruction_loss`` as a Keras loss (averaged over the batch by Keras)."""

    def __init__(self, name="reconstruction_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return reconstruction_loss(y_true, y_pred)
