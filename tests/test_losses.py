import keras
import numpy as np
import pytest

from backend_utils import numpy
from capslib.losses import RECONSTRUCTION_WEIGHT, margin_loss, reconstruction_loss


def test_margin_loss_hand_computed():
    lengths = np.array([[0.9, 0.1, 0.05], [0.5, 0.6, 0.0], [0.95, 0.3, 0.2]], "float32")
    labels = np.array([0, 0, 2])
    # row 0: present 0.9 -> 0; absent 0.1 and 0.05 -> 0
    # row 1: present 0.5 -> 0.4^2 = 0.16; absent 0.6 -> 0.5 * 0.5^2 = 0.125
    # row 2: present 0.2 -> 0.7^2 = 0.49; absent 0.95 -> 0.5 * 0.85^2; 0.3 -> 0.5 * 0.2^2
    expected = [0.0, 0.16 + 0.125, 0.49 + 0.5 * 0.85 ** 2 + 0.5 * 0.2 ** 2]
    np.testing.assert_allclose(numpy(margin_loss(labels, lengths)), expected, rtol=1e-5)


def test_margin_loss_accepts_one_hot_and_custom_margins():
    lengths = np.array([[0.7, 0.4]], "float32")
    one_hot = np.array([[1.0, 0.0]], "float32")
    np.testing.assert_allclose(numpy(margin_loss(one_hot, lengths)),
                               numpy(margin_loss(np.array([0]), lengths)))
    value = numpy(margin_loss(one_hot, lengths, m_plus=0.8, m_minus=0.2, lambda_=1.0))
    np.testing.assert_allclose(value, [0.1 ** 2 + 0.2 ** 2], rtol=1e-5)
    np.testing.assert_allclose(numpy(margin_loss([0], lengths)),  # a plain list works too
                               numpy(margin_loss(np.array([0]), lengths)))


def test_reconstruction_loss_is_a_sum_per_example():
    images = np.zeros((2, 28, 28, 1), "float32")
    recon = np.zeros_like(images)
    recon[0, 0, 0, 0] = 0.5
    recon[1] = 0.1
    expected = [0.25, 784 * 0.01]
    np.testing.assert_allclose(numpy(reconstruction_loss(images, recon)), expected, rtol=1e-5)


def test_paper_weight():
    assert RECONSTRUCTION_WEIGHT == pytest.approx(0.0005)


# -- wrong input is refused, with a message naming the problem --------------------


def traced(fn):
    """``fn`` compiled the way ``fit`` compiles a loss: its inputs are symbolic."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn)
    if backend == "jax":
        import jax
        return jax.jit(fn)
    pytest.skip(f"no tracing helper for {backend}")


def test_reconstruction_loss_flattens_each_side_when_sizes_agree():
    rng = np.random.default_rng(0)
    images = rng.random((2, 28, 28, 1), dtype=np.float32)
    flat = rng.random((2, 784), dtype=np.float32)
    expected = ((images.reshape(2, -1) - flat) ** 2).sum(axis=1)
    # Before: (2, 784) - (2, 28, 28, 1) broadcast to (2, 28, 28, 784), a value 800x too large.
    np.testing.assert_allclose(numpy(reconstruction_loss(images, flat)), expected, rtol=1e-5)
    np.testing.assert_allclose(numpy(reconstruction_loss(flat, images)), expected, rtol=1e-5)


@pytest.mark.parametrize("images, recon, message", [
    ((2, 784), (2, 28), r"values per example \(784 vs 28\)"),
    ((2, 28, 28, 1), (2, 27, 28, 1), "784 vs 756"),
    ((2, 784), (3, 784), "batch size"),
])
def test_reconstruction_loss_refuses_other_sizes(images, recon, message):
    with pytest.raises(ValueError, match=message) as err:
        reconstruction_loss(np.zeros(images, "float32"), np.zeros(recon, "float32"))
    assert str(images) in str(err.value) and str(recon) in str(err.value)


LENGTHS = np.full((2, 10), 0.5, "float32")


@pytest.mark.parametrize("labels, message", [
    ([12, 0], r"class ids 0..9.*from 0 to 12"),
    ([-1, 0], r"class ids 0..9.*from -1 to 0"),
    ([3.7, 1.0], r"whole class ids.*3.7"),
    ([np.nan, 1.0], "whole class ids"),
    (np.zeros((2, 1), "float32"), r"one-hot targets of shape \(2, 1\)"),
    (np.zeros((2, 9), "float32"), r"one-hot targets of shape \(2, 9\)"),
    ([1], r"shaped \(2,\)"),
    (np.zeros((2, 10, 1)), "got shape"),
])
def test_margin_loss_refuses_bad_labels(labels, message):
    # Before: 12 and -1 counted as "no class present", 3.7 was truncated to 3.
    with pytest.raises(ValueError, match=message):
        margin_loss(labels, LENGTHS)


def test_margin_loss_takes_whole_float_labels():
    np.testing.assert_allclose(numpy(margin_loss(np.array([3.0, 1.0]), LENGTHS)),
                               numpy(margin_loss(np.array([3, 1]), LENGTHS)))


def test_losses_still_trace_with_symbolic_inputs():
    # Inside fit the values are unknown: shape checks still run, value checks are skipped.
    labels = np.array([3, 1])
    value = traced(lambda y, x: margin_loss(y, x))(labels, LENGTHS)
    np.testing.assert_allclose(numpy(value), numpy(margin_loss(labels, LENGTHS)), rtol=1e-6)
    flat = np.zeros((2, 784), "float32")
    images = np.ones((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(numpy(traced(reconstruction_loss)(images, flat)), [784, 784])
    with pytest.raises(ValueError, match="values per example"):
        traced(reconstruction_loss)(images, np.zeros((2, 783), "float32"))
