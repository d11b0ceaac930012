import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from capslib import viz  # noqa: E402

HISTORY = {
    "epoch": [0, 1, 2, 3],
    "loss": [0.9, 0.5, 0.4, 0.3],
    "val_loss": [0.6, 0.35, 0.4, 0.35],  # lowest at epoch 2, tied again at epoch 4
    "lengths_accuracy": [0.6, 0.8, 0.85, 0.9],
    "val_lengths_accuracy": [0.7, 0.82, 0.81, 0.83],
}


def selection_lines(ax):
    """x of each vertical line (two equal x values) whose legend entry names the selection."""
    return [line.get_xdata()[0] for line in ax.get_lines()
            if str(line.get_label()).startswith("selected")
            and np.ptp(np.asarray(line.get_xdata(), dtype=float)) == 0]


def test_selected_epoch_is_the_first_lowest_finite_validation_loss():
    assert viz.selected_epoch(HISTORY) == 2
    assert viz.selected_epoch({"val_loss": [np.nan, 0.5, np.inf, 0.4]}) == 4
    assert viz.selected_epoch({"val_loss": [np.nan, np.nan]}) is None
    assert viz.selected_epoch({"loss": [1.0]}) is None


def test_learning_curves_mark_the_selected_epoch_in_both_panels():
    fig = viz.plot_learning_curves(HISTORY)
    try:
        for ax in fig.axes:
            assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
            assert selection_lines(ax) == [2]
            legend = [t.get_text() for t in ax.get_legend().get_texts()]
            assert "selected: epoch 2\n(lowest validation loss)" in legend
            assert {"training", "validation"} <= set(legend)
    finally:
        plt.close(fig)


def test_learning_curves_take_the_selected_epoch_when_given():
    fig = viz.plot_learning_curves(HISTORY, best_epoch=3)
    try:
        for ax in fig.axes:
            assert selection_lines(ax) == [3]
            assert "selected: epoch 3" in [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)


@pytest.mark.parametrize("history", [
    {"loss": [0.9, 0.5], "accuracy": [0.6, 0.7]},  # no validation: nothing was selected
    {"loss": [0.9, 0.5], "val_loss": [np.nan, np.nan]},
])
def test_learning_curves_without_a_validation_loss_mark_nothing(history):
    fig = viz.plot_learning_curves(history)
    try:
        for ax in fig.axes:
            assert selection_lines(ax) == []
    finally:
        plt.close(fig)


def test_most_changing_dims_ranks_by_the_pixel_change_between_the_end_steps():
    tweaked = np.zeros((5, 3, 28, 28), "float32")
    tweaked[2, -1] = 0.5           # dim 2 adds the most ink
    tweaked[4, 0, :14] = 0.5       # dim 4 removes ink from half the image
    tweaked[1, 1] = 1.0            # dim 1 changes only in the middle: no end-to-end change
    dims, changes = viz.most_changing_dims(tweaked, top=3)
    assert list(dims[:2]) == [2, 4]
    np.testing.assert_allclose(changes[:2], [0.5, 0.25])


def test_tweak_differences_show_the_top_dimensions_with_one_colour_bar():
    rng = np.random.default_rng(0)
    tweaked = rng.uniform(size=(16, 11, 28, 28, 1)).astype("float32")
    tweaked[7, -1] += 0.5
    fig = viz.plot_pose_tweak_differences(tweaked, np.linspace(-0.25, 0.25, 11), top=3)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("dim")]
    assert len(labels) == 3 and labels[0].startswith("dim 7")
    colorbars = [ax for ax in fig.axes if "pixel change" in ax.get_ylabel()]
    assert len(colorbars) == 1
    assert fig._suptitle.get_text()
    plt.close(fig)


def boxes(fig):
    """The diagram's boxes, by part name."""
    return {p.get_gid(): p for ax in fig.axes for p in ax.patches if p.get_gid()}


def test_architecture_diagram_draws_every_part_and_colours_only_the_highlighted_ones():
    fig = viz.architecture_diagram(highlight=("predictions", "routing"))
    try:
        parts = boxes(fig)
        assert set(parts) == set(viz.ARCHITECTURE_PARTS)
        lit = {name for name, p in parts.items()
               if matplotlib.colors.same_color(p.get_facecolor(), viz.HIGHLIGHT_COLOR)}
        assert lit == {"predictions", "routing"}
        plain = {tuple(p.get_facecolor()) for name, p in parts.items() if name not in lit}
        assert len(plain) == 1 and plain != {tuple(parts["routing"].get_facecolor())}
        texts = [t for ax in fig.axes for t in ax.texts]
        assert min(t.get_fontsize() for t in texts) >= 10  # readable on a projector
        shown = " ".join(t.get_text() for t in texts)
        for shape in ("28×28", "1152", "1152×10×16", "3 rounds", "16D", "784"):
            assert shape in shown
        assert fig.axes[0].get_title()
    finally:
        plt.close(fig)


def test_architecture_diagram_takes_one_name_an_axes_or_nothing_to_highlight():
    fig, ax = plt.subplots()
    try:
        assert viz.architecture_diagram("lengths", ax=ax) is fig
        parts = boxes(fig)
        assert parts["lengths"].get_facecolor() != parts["mask"].get_facecolor()
    finally:
        plt.close(fig)
    fig = viz.architecture_diagram()
    try:
        assert len({tuple(p.get_facecolor()) for p in boxes(fig).values()}) == 1
    finally:
        plt.close(fig)


def test_architecture_diagram_refuses_an_unknown_part_and_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown part.*'decoders'.*choose from.*decoder"):
        viz.architecture_diagram(highlight=["decoders"])
    with pytest.raises(ValueError, match="unknown part"):
        viz.architecture_diagram(highlight="Routing")


def test_couplings_are_a_2x5_grid_with_a_labelled_colour_bar_and_readable_text():
    rng = np.random.default_rng(0)
    c = rng.dirichlet(np.ones(10) * 50, size=1152)  # (1152, 10), rows sum to 1
    fig = viz.plot_couplings(c, image=rng.random((28, 28)), title="test image")
    try:
        maps = [ax for ax in fig.axes if ax.get_title() in viz.CLASS_NAMES]
        assert len(maps) == 10
        rows = sorted({round(ax.get_position().y0, 3) for ax in maps})
        assert len(rows) == 2  # two rows of 5, not one row of 10
        bar = [ax for ax in fig.axes if ax.get_ylabel().startswith("mean coupling")]
        assert len(bar) == 1 and "uniform 0.10" in bar[0].get_ylabel()
        assert any(ax.get_title() == "input image" for ax in fig.axes)
        assert fig.get_suptitle() == "test image"
        texts = [t for ax in fig.axes for t in (ax.title, ax.yaxis.label)] + [fig._suptitle]
        assert min(t.get_fontsize() for t in texts if t.get_text()) >= 10
    finally:
        plt.close(fig)
