import keras
import numpy as np
import pytest
from keras import ops

from backend_utils import numpy
from capslib.bench import TiledDigitCapsules
from capslib.layers import DigitCapsules, Length, Mask, PrimaryCapsules


def test_primary_capsules_shape_and_squash():
    layer = PrimaryCapsules()
    x = np.random.default_rng(0).normal(size=(3, 20, 20, 256)).astype("float32")
    out = numpy(layer(x))
    assert out.shape == (3, 1152, 8)
    assert np.all(np.linalg.norm(out, axis=-1) < 1)
    assert layer.count_params() == 9 * 9 * 256 * 256 + 256


def test_primary_capsules_channel_layout():
    """Capsule (position, map) holds channels map*dims ... map*dims+dims-1."""
    layer = PrimaryCapsules(n_maps=2, dims=3, kernel_size=1, strides=1)
    x = np.random.default_rng(1).normal(size=(1, 2, 2, 4)).astype("float32")
    layer.build(x.shape)
    maps = numpy(layer.conv(x))  # (1, 2, 2, 6)
    out = numpy(layer(x))
    n2 = (maps[0, 1, 0, 3:6] ** 2).sum()
    expected = n2 / (1 + n2) * maps[0, 1, 0, 3:6] / np.sqrt(n2)
    np.testing.assert_allclose(out[0, (1 * 2 + 0) * 2 + 1], expected, rtol=1e-4)


def test_digit_capsules_weights():
    layer = DigitCapsules()
    layer.build((None, 1152, 8))
    w = numpy(layer.W)
    assert w.shape == (1152, 10, 16, 8)
    assert abs(w.std() - 0.1) < 0.005 and abs(w.mean()) < 0.005


def test_einsum_predictions_equal_tiled_batched_matmul():
    u = np.random.default_rng(2).normal(size=(4, 1152, 8)).astype("float32")
    fast, naive = DigitCapsules(), TiledDigitCapsules()
    fast.build(u.shape)
    naive.build(u.shape)
    naive.W.assign(fast.W)
    a, b = numpy(fast.predictions(u)), numpy(naive.predictions(u))
    assert a.shape == (4, 1152, 10, 16)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_digit_capsules_returns_couplings():
    layer = DigitCapsules(routing_iterations=2)
    u = np.random.default_rng(3).normal(size=(2, 1152, 8)).astype("float32")
    v, c = layer(u, return_couplings=True)
    assert tuple(v.shape) == (2, 10, 16) and tuple(c.shape) == (2, 1152, 10)
    np.testing.assert_allclose(numpy(layer(u)), numpy(v), rtol=1e-6)


def test_length_and_mask():
    poses = np.zeros((2, 3, 4), "float32")
    poses[0, 1] = [3, 4, 0, 0]
    poses[1, 2] = [0, 0, 1, 0]
    lengths = numpy(Length()(poses))
    np.testing.assert_allclose(lengths[0], [0, 5, 0], atol=1e-3)
    mask = Mask()
    by_prediction = numpy(mask(poses, lengths=lengths))
    assert by_prediction.shape == (2, 12)
    np.testing.assert_allclose(by_prediction[0, 4:8], [3, 4, 0, 0])
    assert np.count_nonzero(by_prediction[1]) == 1
    by_label = numpy(mask(poses, lengths=lengths, labels=np.array([2, 2])))
    assert np.count_nonzero(by_label[0]) == 0  # capsule 2 of example 0 is zero
    one_hot = numpy(mask(poses, labels=np.eye(3, dtype="float32")[[1, 2]]))
    np.testing.assert_allclose(one_hot, by_prediction)
    with pytest.raises(ValueError, match="labels"):
        mask(poses)


@pytest.mark.parametrize("layer", [PrimaryCapsules(n_maps=4, dims=6, kernel_size=3),
                                   DigitCapsules(n_caps=5, dims=7, routing_iterations=2),
                                   Length(), Mask()])
def test_layers_serialize(layer):
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


def test_dynamic_batch_in_a_compiled_function():
    layer = DigitCapsules(routing_iterations=3)
    for batch in (1, 5):
        u = ops.convert_to_tensor(np.ones((batch, 1152, 8), "float32"))
        assert tuple(layer(u).shape) == (batch, 10, 16)
