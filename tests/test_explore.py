"""capslib.explore: the pose and routing explorers, driven from Python."""
import base64

import keras
import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from capslib import build_capsnet, explore, pretrained  # noqa: E402
from capslib.data import load_fashion_mnist  # noqa: E402

N = 12  # test images


def small_capsnet():
    """The shipped model when the repository has one; else a small random
    CapsNet (the paper's decoder, a narrower encoder) whose part-to-whole
    matrices are scaled up so that poses and routing move visibly."""
    if pretrained.available():
        return pretrained.load_pretrained()
    keras.utils.set_random_seed(0)
    model = build_capsnet(conv_filters=32, primary_maps=8)
    W = model.digit_caps.W
    W.assign(20 * W.numpy())
    return model


@pytest.fixture(scope="module")
def model():
    return small_capsnet()


@pytest.fixture(scope="module")
def data():
    # One batch size everywhere: JAX compiles each operation once per shape.
    _, (x, y) = load_fashion_mnist()
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def poser(model, data):
    return explore.pose_explorer(model, *data)


def test_pose_sliders_change_the_reconstruction_and_reset_restores_it(model, data, poser):
    x, y = data
    poser.select(0)
    n_dims = model.digit_dims
    assert len(poser.sliders) == n_dims and poser.ranges.shape == (n_dims, 2)
    assert np.all(poser.ranges[:, 0] < poser.ranges[:, 1])
    # The starting view is the model's own reconstruction of the image.
    out = model(x)
    np.testing.assert_allclose(poser.reconstruction,
                               keras.ops.convert_to_numpy(out["reconstruction"])[0, ..., 0],
                               atol=1e-5)
    before = poser.reconstruction.copy()
    assert poser.tweaked_dims == []
    far_end = max(poser.ranges[3], key=lambda v: abs(v - poser.pose[3]))
    poser.sliders[3].value = float(far_end)
    assert poser.tweaked_dims == [3]
    assert poser.reconstruction.shape == before.shape
    assert np.abs(poser.reconstruction - before).max() > 1e-4
    png_moved = poser.reconstruction_view.value
    poser.reset()
    np.testing.assert_array_equal(poser.reconstruction, before)
    assert poser.reconstruction_view.value != png_moved
    assert poser.sliders[3].value == pytest.approx(float(poser.pose[3]))
    # The update (decoder + image) is timed; the paper's decoder is a small MLP.
    times = poser.update_times_ms
    print(f"pose explorer update: last {poser.last_update_ms:.1f} ms, median "
          f"{np.median(times):.1f} ms over {len(times)} updates")
    assert poser.last_update_ms is not None and np.median(times) < 250


def test_pose_explorer_picks_images_and_capsules(poser):
    poser.select(0)
    first = poser.original.copy()
    poser.image_slider.value = 1
    assert poser.index == 1 and not np.array_equal(poser.original, first)
    assert poser.class_id == poser.predicted[1]
    other = (poser.class_id + 1) % 10
    shown = poser.reconstruction.copy()
    poser.class_picker.value = other
    assert poser.class_id == other and not np.array_equal(poser.reconstruction, shown)
    for d, slider in enumerate(poser.sliders):  # each slider holds the new capsule's pose
        assert slider.min <= poser.pose[d] <= slider.max
    with pytest.raises(ValueError, match="index"):
        poser.select(len(poser.images))


def test_pose_static_picture(poser):
    poser.select(2)
    fig = poser.figure()
    texts = [t.get_text() for ax in fig.axes for t in (ax.title, ax.xaxis.label)]
    assert any("pose value" in t for t in texts)
    assert min(t.get_fontsize() for ax in fig.axes
               for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_text()) >= 10
    bundle = poser._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith(f"PoseExplorer: {N} images")
    static = explore.pose_explorer(poser.model, poser.images, static=True)
    assert static.widget is None and set(static._repr_mimebundle_()) == {"text/plain",
                                                                          "image/png"}
    before = static.reconstruction.copy()
    far_end = max(static.ranges[0], key=lambda v: abs(v - static.pose[0]))
    static.set_dim(0, float(far_end))
    assert not np.array_equal(static.reconstruction, before)


def test_routing_rounds_change_the_couplings(model, data):
    x, y = data
    router = explore.routing_explorer(model, x, y, top_k=8)
    rounds = model.routing_iterations
    assert router.round_slider.min == 1 and router.round_slider.max == rounds
    assert router.couplings.shape == (8, 10)
    router.round_slider.value = 1
    np.testing.assert_allclose(router.couplings, 0.1, atol=1e-6)  # uniform before routing
    first_png = router.view.value
    router.round_slider.value = rounds
    assert np.abs(router.couplings - 0.1).max() > 1e-3
    assert router.view.value != first_png
    # The last round is the model's own (routing_trace).
    trace, primary_lengths, lengths = model.routing_trace(x)
    np.testing.assert_allclose(router.couplings, trace[-1, 0][router.parts], atol=1e-5)
    np.testing.assert_allclose(router.class_lengths, lengths[0], atol=1e-5)
    # The parts shown are the longest primary capsules, longest first.
    assert np.all(np.diff(primary_lengths[0][router.parts]) <= 0)
    assert primary_lengths[0][router.parts[-1]] >= np.sort(primary_lengths[0])[-8]
    router.image_slider.value = 2
    assert router.index == 2 and router.round == rounds
    fig = router.figure()  # every round side by side
    assert sum("couplings, round" in ax.get_title() for ax in fig.axes) == rounds
    assert any("coupling" in ax.get_ylabel() for ax in fig.axes)  # the colour bar
    assert router._repr_mimebundle_()["image/png"]


def test_routing_view_draws_the_strongest_part_s_receptive_field(model, data):
    """conv1 9x9 then primary capsules 9x9 stride 2: each part sees 17x17 px,
    drawn as a square centred on the first part's dot, inside the image."""
    import matplotlib.patches

    x, y = data
    router = explore.routing_explorer(model, x, y, top_k=4, static=True)
    assert router.field == 17
    fig = router.figure()
    ax_in = fig.axes[0]
    squares = [p for p in ax_in.patches if isinstance(p, matplotlib.patches.Rectangle)
               and p.get_label() == "receptive field"]
    assert len(squares) == 1
    square = squares[0]
    assert square.get_width() == square.get_height() == 17
    row, col = router.part_centres()[0]
    assert square.get_x() + 8.5 == col and square.get_y() + 8.5 == row
    assert -0.5 <= square.get_x() and square.get_x() + 17 <= x.shape[2] - 0.5
    assert "17x17 px" in ax_in.get_xlabel()
