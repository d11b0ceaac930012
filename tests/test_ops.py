import numpy as np
import pytest

from backend_utils import gradient, numpy
from capslib.ops import safe_norm, squash


def test_squash_keeps_direction_and_shrinks_length():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(50, 8)).astype("float32") * rng.uniform(0.01, 20, (50, 1)).astype("float32")
    v = numpy(squash(s))
    len_s, len_v = np.linalg.norm(s, axis=-1), np.linalg.norm(v, axis=-1)
    assert np.all(len_v < 1)
    np.testing.assert_allclose(len_v, len_s ** 2 / (1 + len_s ** 2), rtol=1e-4)
    cosine = np.sum(s * v, axis=-1) / (len_s * len_v)
    np.testing.assert_allclose(cosine, 1, atol=1e-5)


def test_squash_axis_argument():
    s = np.random.default_rng(1).normal(size=(3, 8, 5)).astype("float32")
    expected = np.moveaxis(numpy(squash(np.moveaxis(s, 1, -1))), -1, 1)
    np.testing.assert_allclose(numpy(squash(s, axis=1)), expected, rtol=1e-5)


def test_safe_norm_matches_norm_away_from_zero():
    s = np.random.default_rng(2).normal(size=(4, 10, 16)).astype("float32")
    np.testing.assert_allclose(numpy(safe_norm(s)), np.linalg.norm(s, axis=-1), rtol=1e-5)
    assert numpy(safe_norm(s, keepdims=True)).shape == (4, 10, 1)


@pytest.mark.parametrize("fn", [squash, safe_norm], ids=["squash", "safe_norm"])
def test_zero_vector_is_finite_with_finite_gradient(fn):
    zero = np.zeros((2, 8), dtype="float32")
    assert np.all(np.isfinite(numpy(fn(zero))))
    grad = gradient(fn, zero)
    assert np.all(np.isfinite(grad))
