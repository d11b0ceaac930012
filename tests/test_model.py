import keras
import numpy as np
import pytest

from capslib import build_capsnet, compile_capsnet
from capslib.data import load_fashion_mnist


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_capsnet()


@pytest.fixture(scope="module")
def images():
    (x, y), _ = load_fashion_mnist()
    return x[:6], y[:6]


def test_parameter_counts(model):
    assert model.count_params() == 8_215_568
    assert build_capsnet(decoder=False).count_params() == 6_804_224
    counts = {layer.name: layer.count_params() for layer in model.layers}
    assert counts["conv1"] == 20_992
    assert counts["primary_caps"] == 5_308_672
    assert counts["digit_caps"] == 1_474_560
    assert counts["decoder"] == 1_411_344


def test_outputs_and_batch_of_one(model, images):
    x, _ = images
    for batch in (1, 6):
        out = model(x[:batch])
        assert tuple(out["lengths"].shape) == (batch, 10)
        assert tuple(out["poses"].shape) == (batch, 10, 16)
        assert tuple(out["reconstruction"].shape) == (batch, 28, 28, 1)
    assert model.predict(x[:1], verbose=0)["lengths"].shape == (1, 10)


def test_masks_by_label_only_while_training(model, images):
    x, _ = images
    out = model(x)
    poses = keras.ops.convert_to_numpy(out["poses"])
    predicted = np.argmax(keras.ops.convert_to_numpy(out["lengths"]), axis=1)
    other = (predicted + 1) % 10
    by_label = model({"image": x, "label": other}, training=True)["reconstruction"]
    at_inference = model({"image": x, "label": other}, training=False)["reconstruction"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(by_label),
                               model.decode(poses, other), rtol=0, atol=1e-7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(at_inference),
                               model.decode(poses, predicted), rtol=0, atol=1e-7)
    assert not np.array_equal(model.decode(poses, other), model.decode(poses, predicted))


def test_coupling_coefficients(model, images):
    c = model.coupling_coefficients(images[0][:2])
    assert c.shape == (2, 1152, 10)
    np.testing.assert_allclose(c.sum(axis=-1), 1, atol=1e-5)


def test_save_and_load_in_safe_mode(model, images, tmp_path):
    x, _ = images
    path = tmp_path / "capsnet.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    a, b = model.predict(x, verbose=0), restored.predict(x, verbose=0)
    for key in ("lengths", "poses", "reconstruction"):
        np.testing.assert_array_equal(a[key], b[key])
    assert restored.get_config() == model.get_config()


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 28, 28), "float32"), r"shape \(batch, 28, 28, 1\)"),
    (np.zeros((2, 32, 32, 1), "float32"), r"shape \(batch, 28, 28, 1\)"),
    (np.zeros((2, 28, 28, 1), "uint8"), "float images"),
])
def test_wrong_images_raise_clear_errors(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_wrong_labels_raise_clear_errors(model, images):
    poses = np.zeros((2, 10, 16), "float32")
    with pytest.raises(ValueError, match="0..9"):
        model.decode(poses, np.array([3, 10]))
    with pytest.raises(ValueError, match="keys"):
        model({"images": images[0]})


@pytest.mark.heavy
def test_overfits_a_few_dozen_images():
    """The whole model learns: 30 images, 3 per class, learned in a few steps."""
    (x, y), _ = load_fashion_mnist()
    idx = np.concatenate([np.flatnonzero(y == k)[:3] for k in range(10)])
    x, y = x[idx], y[idx]
    keras.utils.set_random_seed(1)
    net = compile_capsnet(build_capsnet(), learning_rate=1e-3)
    targets = {"lengths": np.eye(10, dtype="float32")[y], "reconstruction": x}
    history = net.fit({"image": x, "label": y}, targets, batch_size=30, epochs=25, verbose=0)
    accuracy = np.mean(np.argmax(net.predict(x, verbose=0)["lengths"], axis=1) == y)
    assert accuracy >= 0.95, (accuracy, history.history["loss"][-5:])
    assert history.history["loss"][-1] < 0.3 * history.history["loss"][0]
