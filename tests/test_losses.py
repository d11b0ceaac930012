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
