"""The paper's losses, per example: margin loss and reconstruction loss.

total = margin + RECONSTRUCTION_WEIGHT * reconstruction (the paper's 0.0005,
applied to a *sum* of squared pixel errors; a mean would be 784x weaker).
"""
import keras
from keras import ops

RECONSTRUCTION_WEIGHT = 0.0005


def _one_hot_targets(labels, lengths):
    """Accept integer labels (batch,) or one-hot targets (batch, n_classes)."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(lengths.shape):
        return ops.cast(labels, lengths.dtype)
    n_classes = lengths.shape[-1]
    return ops.one_hot(ops.cast(labels, "int32"), n_classes, dtype=lengths.dtype)


def margin_loss(labels, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """Paper's eq. 4, summed over classes: one value per example.

    L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2
    """
    lengths = ops.cast(lengths, "float32")
    t = _one_hot_targets(labels, lengths)
    present = t * ops.square(ops.relu(m_plus - lengths))
    absent = lambda_ * (1.0 - t) * ops.square(ops.relu(lengths - m_minus))
    return ops.sum(present + absent, axis=-1)


def reconstruction_loss(images, reconstructions):
    """Sum of squared pixel errors, one value per example."""
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    batch = ops.shape(images)[0]
    diff = ops.reshape(images - reconstructions, (batch, -1))
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
