"""What a reader meets with the wrong images: one line saying what is wrong and
the fix, before Keras touches the model (on TensorFlow and on JAX alike)."""
import keras
import numpy as np
import pytest

import capslib
from capslib.data import CapsuleDataset
from capslib.model import CapsNet, compile_capsnet

RANGE = r"images must be scaled to \[0, 1\], got values from 0 to 255: divide by 255"


@pytest.fixture(scope="module")
def small():
    """A CapsNet of the paper's shape but few channels: quick to compile on JAX."""
    keras.utils.set_random_seed(0)
    model = CapsNet(conv_filters=8, primary_maps=2, decoder_units=(16,), name="small")
    model.build((None, *model.image_shape))
    return compile_capsnet(model)


def images(n=4, scale=1.0, dtype="float32"):
    x = np.random.default_rng(0).random((n, 28, 28, 1)) * scale
    x[0, 0, 0, 0], x[0, 0, 1, 0] = 0, scale  # the exact range
    return x.astype(dtype)


def targets(x):
    return {"lengths": np.eye(10, dtype="float32")[np.arange(len(x)) % 10],
            "reconstruction": x}


def one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_summary_prints_the_parameter_count():
    lines = []
    capslib.build_capsnet().summary(print_fn=lambda line, **kw: lines.append(line))
    text = "\n".join(lines)
    assert "Total params: 8,215,568" in text
    assert "(None, 1152, 8)" in text and "(None, 160)" in text  # primary caps, mask


# -- 0-255 floats are refused everywhere ----------------------------------------------

def test_dataset_refuses_0_255_floats():
    with pytest.raises(ValueError, match=RANGE) as error:
        CapsuleDataset(images(scale=255), np.arange(4))
    one_line(error)


@pytest.mark.parametrize("how", ["call", "predict", "fit", "evaluate", "predict_on_batch"])
def test_model_refuses_0_255_floats(small, how):
    x = images(scale=255)
    run = {"call": lambda: small(x),
           "predict": lambda: small.predict(x, verbose=0),
           "fit": lambda: small.fit({"image": x, "label": np.arange(4)}, targets(x), epochs=1,
                                    verbose=0),
           "evaluate": lambda: small.evaluate({"image": x, "label": np.arange(4)}, targets(x),
                                              verbose=0),
           "predict_on_batch": lambda: small.predict_on_batch(x)}[how]
    with pytest.raises(ValueError, match="CapsNet: " + RANGE) as error:
        run()
    one_line(error)


def test_fit_checks_the_validation_images_too(small):
    x = images()
    with pytest.raises(ValueError, match=RANGE):
        small.fit(x, targets(x), validation_data=(x * 255, targets(x)), verbose=0)


@pytest.mark.parametrize("x, fix", [
    (images() - 0.5, r"values from -0.5 to 0.5: undo the normalisation"),
    (images() * 1.2, r"values from 0 to 1.2: clip them with np.clip\(x, 0, 1\)"),
])
def test_other_ranges_get_their_own_fix(small, x, fix):
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\], got " + fix):
        small.predict(x, verbose=0)


def test_images_in_range_pass(small):
    assert small.predict(images(), verbose=0)["lengths"].shape == (4, 10)
    CapsuleDataset(images(), np.arange(4))


def test_uint8_is_refused_with_the_conversion(small):
    """uint8 pixels were refused before (no silent conversion); now with the fix."""
    fix = r"got dtype uint8 and the model takes float images scaled to \[0, 1\]: convert " \
          r"with x.astype\('float32'\) / 255"
    x = images(scale=255, dtype="uint8")
    for run in (lambda: small.predict(x, verbose=0), lambda: small(x),
                lambda: small.coupling_coefficients(x)):
        with pytest.raises(ValueError, match="CapsNet: " + fix) as error:
            run()
        one_line(error)
    with pytest.raises(ValueError, match="CapsuleDataset: " + fix):
        CapsuleDataset(x, np.arange(4))


def test_nan_pixels_are_counted(small):
    x = images()
    x[2, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"CapsNet: images hold 1 NaN .* at index 2"):
        small.predict(x, verbose=0)


# -- shapes: the fix for each mistake ---------------------------------------------------

SHAPES = [
    (np.zeros((3, 28, 28), "float32"), r"got shape \(3, 28, 28\): add the channel axis with "
                                       r"x\[\.\.\., None\]"),
    (np.zeros((3, 28, 28, 3), "float32"), r"RGB images and the model expects one grey channel: "
                                          r"convert them with x\[\.\.\., :3\]\.mean\(axis=-1, "
                                          r"keepdims=True\)"),
    (np.zeros((28, 28), "float32"), r"one image without batch and channel axes"),
    (np.zeros((3, 24, 24, 1), "float32"), r"24x24 pixels; the model takes 28x28 only: pad or "
                                          r"resize them\.$"),
    (np.zeros((3, 16, 16, 1), "float32"), r"under 17x17 are too small for any CapsNet of these "
                                          r"layers: conv 9x9, then primary capsules 9x9 stride 2"),
]


@pytest.mark.parametrize("x, fix", SHAPES)
@pytest.mark.parametrize("how", ["call", "predict"])
def test_wrong_shapes_say_the_fix(small, x, fix, how):
    with pytest.raises(ValueError, match=fix) as error:
        small(x) if how == "call" else small.predict(x, verbose=0)
    assert one_line(error).startswith("CapsNet expects images of shape (batch, 28, 28, 1), got")


@pytest.mark.parametrize("x, fix", SHAPES[:2])
def test_dataset_says_the_same(x, fix):
    with pytest.raises(ValueError, match=fix):
        CapsuleDataset(x, np.arange(len(x)))


def test_smallest_image_shape_is_named():
    assert capslib.build_capsnet(image_shape=(17, 17, 1), decoder=False).count_params() > 0
    with pytest.raises(ValueError, match=r"image_shape \(16, 16, 1\): .* at least 17 "
                                         r"\(conv 9x9, then primary capsules 9x9 stride 2\)"):
        CapsNet(image_shape=(16, 16, 1))


# -- a refused call leaves the model working (JAX took its weights out) -------------------

def test_a_good_call_works_after_refused_ones(small):
    x = images()
    before = small.predict(x, verbose=0)["lengths"]
    for bad in (x * 255, x[..., 0], np.repeat(x, 3, axis=-1), {"images": x}):
        with pytest.raises(ValueError):
            small.predict(bad, verbose=0)
        with pytest.raises(ValueError):
            small.evaluate(bad, targets(x), verbose=0)
    np.testing.assert_array_equal(small.predict(x, verbose=0)["lengths"], before)
    with pytest.raises(ValueError):
        small.fit(x * 255, targets(x), verbose=0)
    small.fit({"image": x, "label": np.arange(4)}, targets(x), epochs=1, verbose=0)
    assert small.predict(x, verbose=0)["lengths"].shape == (4, 10)


class Interrupt(keras.callbacks.Callback):
    """Ctrl-C after the first batch."""

    def on_predict_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt

    on_test_batch_end = on_predict_batch_end


def test_an_interrupted_predict_keeps_the_weights(small):
    """Whatever stops predict or evaluate midway (Ctrl-C here), JAX's weights come back."""
    x = images(8)
    before = small.predict(x, verbose=0)["lengths"]
    with pytest.raises(KeyboardInterrupt):
        small.predict(x, batch_size=4, verbose=0, callbacks=[Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        small.evaluate(x, targets(x), batch_size=4, verbose=0, callbacks=[Interrupt()])
    np.testing.assert_allclose(small.predict(x, verbose=0)["lengths"], before, rtol=1e-6)
