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
