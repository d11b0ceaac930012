"""capslib.equivariance: the measures of notebook 07's equivariance section."""
import numpy as np
import pytest

from capslib import equivariance as eq
from capslib.data import shift_images


def test_bootstrap_interval_brackets_the_estimate_and_repeats():
    values = np.random.default_rng(0).normal(1.0, 1.0, size=400)
    estimate, low, high = eq.bootstrap_interval(values)
    assert estimate == pytest.approx(values.mean())
    assert low < estimate < high
    # About the normal interval of a mean: 1.96 standard errors each side.
    assert high - low == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.2)
    assert eq.bootstrap_interval(values) == (estimate, low, high)  # fixed seed
    # Whole images are resampled: rows stay together.
    rows = np.stack([values, 2 * values], axis=1)
    est, lo, hi = eq.bootstrap_interval(rows, statistic=lambda v: (v[:, 1] - 2 * v[:, 0]).mean())
    assert est == lo == hi == pytest.approx(0.0)


def test_bootstrap_interval_rejects_too_few_images_and_bad_levels():
    with pytest.raises(ValueError, match="at least 2 images"):
        eq.bootstrap_interval(np.array([1.0]))
    with pytest.raises(ValueError, match="level"):
        eq.bootstrap_interval(np.arange(5.0), level=95)


def test_centre_of_ink_follows_a_shift_inside_the_frame():
    image = np.zeros((1, 28, 28, 1), "float32")
    image[0, 10:14, 8:12] = 1.0
    centre = eq.centre_of_ink(image)
    np.testing.assert_allclose(centre, [[11.5, 9.5]])
    np.testing.assert_allclose(eq.centre_of_ink(shift_images(image, 2, -3)), [[13.5, 6.5]])
    assert np.isnan(eq.centre_of_ink(np.zeros((1, 28, 28)))).all()  # no ink


def test_line_r2_is_one_for_lines_and_nan_for_numbers_that_do_not_move():
    x = np.arange(-2, 3)
    values = np.zeros((5, 2, 3))
    values[:, :, 0] = 3 * x[:, None] + 1        # a straight line: R^2 = 1
    values[:, :, 1] = (x ** 2)[:, None]         # symmetric: a line explains nothing
    values[:, :, 2] = 5.0                       # does not move
    r2 = eq.line_r2(x, values)
    assert r2.shape == (2, 3)
    np.testing.assert_allclose(r2[:, 0], 1.0)
    np.testing.assert_allclose(r2[:, 1], 0.0, atol=1e-12)
    assert np.isnan(r2[:, 2]).all()
    with pytest.raises(ValueError, match="len"):
        eq.line_r2(x[:2], values[:2])


def test_untrained_copy_has_the_architecture_and_fresh_seeded_weights():
    import keras

    from capslib import build_capsnet

    keras.utils.set_random_seed(3)
    model = build_capsnet(conv_filters=16, primary_maps=4, decoder_units=(32, 32))
    fresh, again = eq.untrained_copy(model, seed=0), eq.untrained_copy(model, seed=0)
    assert fresh.get_config() == model.get_config()
    assert fresh.count_params() == model.count_params()
    w_model, w_fresh, w_again = (m.conv1.kernel.numpy() for m in (model, fresh, again))
    assert not np.allclose(w_model, w_fresh)
    np.testing.assert_array_equal(w_fresh, w_again)  # the same seed, the same weights
