"""Figures for the course: matplotlib only, each function returns its Figure."""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from capslib.data import CLASS_NAMES
from capslib.stats import accuracy_interval


def _images(x):
    x = np.asarray(x)
    return x[..., 0] if x.ndim == 4 else x


def plot_image_grid(images, titles=None, ncols=10, size=1.2, suptitle=None):
    """Images in a grid, one optional title each."""
    images = _images(images)
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(images[k], cmap="binary", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])  # keep the frame: shifts show against it
        if titles is not None:
            ax.set_title(titles[k], fontsize=10 if size >= 1.5 else 8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_samples_per_class(x, y, per_class=8, class_names=CLASS_NAMES):
    """One row per class, ``per_class`` examples each."""
    rows = [x[np.flatnonzero(y == k)[:per_class]] for k in range(len(class_names))]
    fig, axes = plt.subplots(len(class_names), per_class,
                             figsize=(per_class * 0.9, len(class_names) * 0.95))
    for k, row in enumerate(rows):
        for j in range(per_class):
            ax = axes[k, j]
            ax.imshow(_images(row)[j], cmap="binary", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(class_names[k], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def selected_epoch(history):
    """The 1-based epoch with the lowest finite ``val_loss`` (the first if tied), or None.

    This is the epoch ``capslib.train`` keeps as ``best.keras``.
    """
    val_loss = np.asarray(history.get("val_loss", []), dtype=float)
    finite = np.isfinite(val_loss)
    if not finite.any():
        return None
    return int(np.argmin(np.where(finite, val_loss, np.inf))) + 1


def plot_learning_curves(history, best_epoch=None):
    """Loss and accuracy per epoch, training beside validation.

    ``history``: a dict of lists (``History.history``) or a mapping loaded
    from the CSV log, with keys like ``loss``, ``val_loss``,
    ``lengths_accuracy`` and ``val_lengths_accuracy``. A dashed vertical line
    in both panels marks the selected epoch: ``best_epoch`` (1-based) if given,
    else the one with the lowest validation loss (``selected_epoch``); no line
    without a validation loss.
    """
    epochs = np.arange(1, len(history["loss"]) + 1)
    best = selected_epoch(history) if best_epoch is None else int(best_epoch)
    why = "\n(lowest validation loss)" if best_epoch is None else ""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            ax1.plot(epochs, history[key], "o-", label=label)
    ax1.set(xlabel="epoch", ylabel="total loss", title="Loss")
    # A CapsNet with its decoder logs lengths_accuracy; a one-output model
    # (no decoder, the baseline CNN) logs accuracy.
    name = next((k for k in ("lengths_accuracy", "probabilities_accuracy", "accuracy")
                 if k in history), "accuracy")
    for key, label in ((name, "training"), (f"val_{name}", "validation")):
        if key in history:
            ax2.plot(epochs, 100 * np.asarray(history[key], dtype=float), "o-", label=label)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax1, ax2):
        if best is not None:
            ax.axvline(best, color="gray", ls="--", lw=1.2,
                       label=f"selected: epoch {best}{why}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig


def plot_reconstructions(images, reconstructions, true_labels, pred_labels,
                         class_names=CLASS_NAMES):
    """Originals (top row) above their reconstructions (bottom row)."""
    images, reconstructions = _images(images), _images(reconstructions)
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.5, 3.8), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k], cmap="binary", vmin=0, vmax=1)
        axes[0, k].set_title(f"true:\n{class_names[true_labels[k]]}", fontsize=9)
        axes[1, k].imshow(reconstructions[k], cmap="binary", vmin=0, vmax=1)
        ok = true_labels[k] == pred_labels[k]
        axes[1, k].set_title(f"pred:\n{class_names[pred_labels[k]]}", fontsize=9,
                             color="black" if ok else "red")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm, class_names=CLASS_NAMES, normalize=True, title=None):
    """Rows: true class, columns: predicted class; each cell as a share of its row."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(title or ("Confusion matrix: share of each true class (row)" if normalize
                           else "Confusion matrix: counts"))
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if shown[i, j] > shown.max() / 2 else "black")
    if normalize:
        # Blank and "0.00" differ: no image at all, or a few images (under 0.5%).
        fig.text(0.01, 0.01, "blank: no image; 0.00: under 0.5% of the row", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046,
                 label="share of the true class" if normalize else "images")
    fig.tight_layout()
    return fig


def plot_pose_tweaks(tweaked, steps, title=None, dims=None, size=1.0):
    """A grid of decoded images: one row per pose dimension, one column per step.

    ``tweaked``: (n_dims, n_steps, 28, 28[, 1]); ``steps``: the added values;
    ``dims``: which rows to show (all by default). ``size`` (inches per image)
    keeps each image large enough for a projector.
    """
    tweaked = np.asarray(tweaked)
    if tweaked.ndim == 5:
        tweaked = tweaked[..., 0]
    dims = list(range(len(tweaked))) if dims is None else list(dims)
    n_steps = tweaked.shape[1]
    fig, axes = plt.subplots(len(dims), n_steps, figsize=(n_steps * size + 0.8, len(dims) * size + 0.6),
                             squeeze=False, layout="constrained")
    for row, d in enumerate(dims):
        for s in range(n_steps):
            ax = axes[row, s]
            ax.imshow(tweaked[d, s], cmap="binary", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if s == 0:
                ax.set_ylabel(f"dim {d}", rotation=0, ha="right", va="center", fontsize=10)
            if row == len(dims) - 1:
                ax.set_xlabel(f"{steps[s]:+.2f}", fontsize=10)
    fig.supxlabel("value added to the dimension", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def most_changing_dims(tweaked, top=4):
    """The ``top`` pose dimensions whose tweak changes the decoded image most,
    largest first: mean absolute pixel difference between the last and first step.

    ``tweaked``: (n_dims, n_steps, 28, 28[, 1]). Returns (dims, changes).
    """
    tweaked = np.asarray(tweaked, dtype="float32")
    change = np.abs(tweaked[:, -1] - tweaked[:, 0]).reshape(len(tweaked), -1).mean(axis=1)
    order = np.argsort(-change, kind="stable")[:top]
    return order, change[order]


def plot_pose_tweak_differences(tweaked, steps, top=4, title=None, size=2.0):
    """The few most informative pose tweaks, large: for each of the ``top``
    dimensions that change the image most, the image decoded at the first
    step, at 0 and at the last step, and the difference map (last minus first;
    red: ink added, blue: ink removed; one colour bar for all rows).

    ``tweaked``: (n_dims, n_steps, 28, 28[, 1]); ``steps``: the added values
    (symmetric around 0, as in ``plot_pose_tweaks``).
    """
    tweaked = np.asarray(tweaked, dtype="float32")
    if tweaked.ndim == 5:
        tweaked = tweaked[..., 0]
    steps = np.asarray(steps)
    dims, changes = most_changing_dims(tweaked, top)
    middle = int(np.argmin(np.abs(steps)))
    diffs = tweaked[dims, -1] - tweaked[dims, 0]
    scale = max(float(np.abs(diffs).max()), 1e-6)
    fig, axes = plt.subplots(len(dims), 4, figsize=(4 * size + 1.4, len(dims) * size + 0.9),
                             squeeze=False, layout="constrained")
    columns = [(0, f"{steps[0]:+.2f}"), (middle, f"{steps[middle]:+.2f}"),
               (-1, f"{steps[-1]:+.2f}")]
    for row, (d, change) in enumerate(zip(dims, changes)):
        for col, (s, label) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(tweaked[d, s], cmap="binary", vmin=0, vmax=1)
            if row == 0:
                ax.set_title(f"{label} added" if s != middle else "unchanged", fontsize=11)
        im = axes[row, 3].imshow(diffs[row], cmap="RdBu_r", vmin=-scale, vmax=scale)
        if row == 0:
            axes[row, 3].set_title(f"difference ({steps[-1]:+.2f}) - ({steps[0]:+.2f})",
                                   fontsize=11)
        axes[row, 0].set_ylabel(f"dim {d}\n(mean |change|\n{change:.3f})", rotation=0,
                                ha="right", va="center", fontsize=11)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 3], shrink=0.8,
                 label="pixel change (red: ink added, blue: removed)")
    fig.suptitle(title or f"The {len(dims)} pose dimensions that change the image most",
                 fontsize=13)
    return fig


def plot_couplings(c, class_names=CLASS_NAMES, grid=(6, 6), n_maps=32, title=None,
                   image=None, ncols=5):
    """Coupling coefficients of one image, as a 6x6 map per class.

    ``c``: (1152, n_classes). Each primary position holds ``n_maps`` capsules;
    the map shows their mean coefficient towards each class, coloured by its
    difference from the uniform 1 / n_classes (white), so that small
    departures stay visible. The classes are laid out ``ncols`` to a row (two
    rows of 5 for 10 classes: large enough for a projector), with one labelled
    colour bar; ``image`` (28x28) is drawn first, left of the maps, if given.
    """
    c = np.asarray(c).reshape(grid[0], grid[1], n_maps, -1).mean(axis=2)
    n_classes = c.shape[-1]
    uniform = 1.0 / n_classes
    spread = max(float(np.abs(c - uniform).max()), 1e-6)
    nrows = int(np.ceil(n_classes / ncols))
    layout = [[f"class{row * ncols + col}" if row * ncols + col < n_classes else "."
               for col in range(ncols)] for row in range(nrows)]
    if image is not None:
        layout = [["image"] + row for row in layout]
    fig, axd = plt.subplot_mosaic(layout, figsize=(2.3 * (ncols + (image is not None)) + 1.2,
                                                   2.5 * nrows + 0.8),
                                  layout="constrained")
    if image is not None:
        axd["image"].imshow(_images(np.asarray(image)[None])[0], cmap="binary", vmin=0, vmax=1)
        axd["image"].set_title("input image", fontsize=12)
        axd["image"].set_xticks([]), axd["image"].set_yticks([])
    maps = [axd[f"class{k}"] for k in range(n_classes)]
    for k, ax in enumerate(maps):
        im = ax.imshow(c[..., k], cmap="RdBu_r", vmin=uniform - spread, vmax=uniform + spread)
        ax.set_title(class_names[k], fontsize=12)
        ax.set_xticks([]), ax.set_yticks([])
    cbar = fig.colorbar(im, ax=maps, fraction=0.025, shrink=0.9)
    cbar.set_label(f"mean coupling to the class over {n_maps} capsules per position\n"
                   f"(white: uniform {uniform:.2f}; from {uniform - spread:.3f} to "
                   f"{uniform + spread:.3f})", fontsize=11)
    fig.suptitle(title or f"Coupling of each {grid[0]}x{grid[1]} position to each class",
                 fontsize=13)
    return fig


def plot_transformed_accuracy(results, title=None):
    """Accuracy (%) of each model of an experiment (``capslib.experiment``) on
    each test set, with 95% intervals; ``results`` as in its ``results.json``."""
    variants = results["variants"]
    sets = list(results["test_sets"])
    n = results["sizes"]["transformed"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(13, 5))
    for k, entry in enumerate(variants.values()):
        acc = np.array([entry["accuracy"][s] for s in sets])
        x = np.arange(len(sets)) + (k - (len(variants) - 1) / 2) * width
        bounds = np.array([accuracy_interval(a, n) for a in acc]).T  # (low, high) rows
        ax.bar(x, 100 * acc, width, yerr=100 * np.abs(bounds - acc), capsize=3,
               label=entry["label"])
    ax.set_xticks(range(len(sets)), sets, fontsize=11)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 112), yticks=range(0, 101, 20),
           xlabel=f"test set ({n:,} test images each; bars: 95% interval)")
    ax.set_title(title or "Accuracy on test images the models never trained on", fontsize=13)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=10, ncol=len(variants), loc="upper center")
    fig.tight_layout()
    return fig


def plot_paired_differences(rows, label=None, title=None, alpha=0.05,
                            interval="paired 95% interval"):
    """Forest plot of comparisons: each row's difference of accuracy (points) with its 95%
    interval, a filled dot where the Holm-corrected p is below ``alpha``, an open one where it
    is not. ``rows``: dicts with ``difference``, ``low``, ``high`` (fractions) and ``holm``, as
    ``capslib.experiment.comparisons`` and ``capslib.rounds.comparisons`` return; ``label(row)``
    names a row (default: ``"set: a vs b"``); ``interval`` says what the bars are (the x
    label). Rows are drawn top to bottom in order."""
    label = label or (lambda row: f"{row['set']}: {row['a']} vs {row['b']}")
    rows = list(rows)
    y = np.arange(len(rows))[::-1]
    diff = np.array([100 * r["difference"] for r in rows])
    low = np.array([100 * r["low"] for r in rows])
    high = np.array([100 * r["high"] for r in rows])
    kept = np.array([r["holm"] < alpha for r in rows])
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.6))
    ax.errorbar(diff, y, xerr=[diff - low, high - diff], fmt="none", ecolor="0.35",
                elinewidth=1.8, capsize=3)
    ax.plot(diff[kept], y[kept], "o", color="tab:blue", markersize=8,
            label=f"Holm p < {alpha:g}: a difference")
    ax.plot(diff[~kept], y[~kept], "o", markerfacecolor="white", color="tab:blue",
            markersize=8, label="none detected")
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(y, [label(r) for r in rows], fontsize=10)
    ax.set_xlabel(f"a - b: difference of accuracy (points; bars: {interval})", fontsize=11)
    ax.set_title(title or "Paired differences, with their intervals", fontsize=13)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=10, loc="lower right")
    fig.tight_layout()
    return fig


def plot_shift_sweep(results, title=None):
    """Accuracy and the mean score of the true class against a horizontal shift,
    one line per model; the band marks the shifts seen in training."""
    shifts = results["sizes"]["shifts"]
    n = results["sizes"]["sweep"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for entry in results["variants"].values():
        sweep = entry["shift_sweep"]
        axes[0].plot(shifts, 100 * np.asarray(sweep["accuracy"]), "o-", label=entry["label"])
        axes[1].plot(shifts, sweep["true_class_score"], "o-", label=entry["label"])
    axes[0].set(ylabel="accuracy (%)", ylim=(0, 100), title="Accuracy")
    axes[1].set(ylabel="mean score of the true class", ylim=(0, 1),
                title="Confidence: softmax (CNN) or capsule length")
    for ax in axes:
        ax.axvspan(-2, 2, color="grey", alpha=0.15)
        ax.set_xlabel("horizontal shift (pixels; grey: seen in training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=10)
    fig.suptitle(title or f"Moving the garment sideways ({n:,} test images)", fontsize=13)
    fig.tight_layout()
    return fig


def plot_routing_rounds(couplings, title=None):
    """What routing does to the couplings, round by round (``results["couplings"]``):
    their entropy against the uniform one, and the coupling to the predicted class."""
    per_round = couplings["per_round"]
    rounds = np.arange(1, len(per_round["entropy"]) + 1)
    uniform = couplings["uniform_entropy"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    # The drop below the uniform entropy: tiny values stay readable.
    axes[0].plot(rounds, uniform - np.asarray(per_round["entropy"]), "o-",
                 label="mean over child capsules")
    axes[0].plot(rounds, uniform - np.asarray(per_round["entropy_weighted"]), "s--",
                 label="weighted by the child's length")
    axes[0].axhline(0, color="grey", ls=":", label="uniform couplings (0)")
    axes[0].set(ylabel="entropy below the uniform log 10 (nats)",
                title=f"How concentrated (uniform entropy: {uniform:.3f})")
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useOffset=False)
    axes[1].plot(rounds, per_round["to_predicted"], "o-", label="to the predicted class")
    axes[1].plot(rounds, per_round["max"], "s--", label="largest of the ten")
    axes[1].axhline(0.1, color="grey", ls=":", label="uniform (0.1)")
    axes[1].set(ylabel="mean coupling", title="Where to")
    axes[1].ticklabel_format(axis="y", useOffset=False)
    for ax in axes:
        ax.set_xlabel("routing round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10)
    fig.suptitle(title or f"Couplings of the 3-round CapsNet over {couplings['n_images']:,} "
                 "test images", fontsize=13)
    fig.tight_layout()
    return fig


# The CapsNet drawn as boxes: (name, column, row, title, details). Columns 0-4 from the
# left, rows 0-2 from the top; row 0 runs left to right, rows 1 and 2 right to left.
_ARCHITECTURE = (
    ("image", 0, 0, "image", "28×28×1"),
    ("conv1", 1, 0, "conv1", "256 filters 9×9, ReLU\n→ 20×20×256"),
    ("primary", 2, 0, "primary capsules", "9×9 conv, stride 2\n→ 1152 capsules of 8D"),
    ("predictions", 3, 0, "predictions û", "û = W u, one 16×8 W\nper pair → 1152×10×16"),
    ("routing", 4, 0, "routing", "by agreement, 3 rounds\ncouplings c: 1152×10"),
    ("class_capsules", 4, 1, "class capsules", "10 capsules of 16D\n(poses)"),
    ("lengths", 3, 1, "lengths", "10 class scores in [0, 1)\n(not summing to 1)"),
    ("margin_loss", 2, 1, "margin loss", "true class ≥ 0.9,\nothers ≤ 0.1"),
    ("mask", 4, 2, "mask", "keep 1 capsule (label,\nor the longest) → 160"),
    ("decoder", 3, 2, "decoder", "dense 512 → 1024 → 784"),
    ("reconstruction", 2, 2, "reconstruction", "28×28 = 784 pixels\n(0.0005 × squared error)"),
)
# (from, to): the arrows between the boxes.
_ARROWS = (
    ("image", "conv1"), ("conv1", "primary"), ("primary", "predictions"),
    ("predictions", "routing"), ("routing", "class_capsules"),
    ("class_capsules", "lengths"), ("lengths", "margin_loss"),
    ("class_capsules", "mask"), ("mask", "decoder"), ("decoder", "reconstruction"),
)
ARCHITECTURE_PARTS = tuple(part[0] for part in _ARCHITECTURE)
HIGHLIGHT_COLOR = "#f4a259"  # the part at hand (orange)
_PLAIN_COLOR = "#eeeeee"  # every other part (light grey)


def architecture_diagram(highlight=None, ax=None, title=None):
    """The CapsNet of this course as a block diagram, the part at hand highlighted.

    Boxes from the image to the class capsules (conv1, 1152 primary capsules of 8D,
    the predictions û (1152×10×16), routing by agreement (3 rounds), 10 class capsules
    of 16D), then the two heads: the lengths (class scores) and their margin loss, and
    the mask, the decoder and the reconstruction (784 pixels). Each box gives the shape
    of what it outputs. Text is at least 10 pt, for a projector.

    ``highlight``: None (nothing highlighted), one part name or an iterable of them,
    from ``ARCHITECTURE_PARTS``: "image", "conv1", "primary", "predictions",
    "routing", "class_capsules", "lengths", "margin_loss", "mask", "decoder",
    "reconstruction". Highlighted boxes are filled with ``HIGHLIGHT_COLOR``, the
    others light grey. An unknown name raises ``ValueError`` naming the valid ones.
    ``ax``: a matplotlib Axes to draw into (its figure is returned); by default a new
    11×5.4 in figure. ``title``: the figure title; by default one that names the
    highlighted parts.

    Returns the matplotlib Figure. Each box is a patch whose ``get_gid()`` is its part
    name (``[p for p in ax.patches if p.get_gid() == "routing"]``).
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    if highlight is None:
        chosen = ()
    elif isinstance(highlight, str):
        chosen = (highlight,)
    else:
        chosen = tuple(highlight)
    unknown = [name for name in chosen if name not in ARCHITECTURE_PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(map(repr, unknown))} to highlight; "
                         f"choose from {', '.join(ARCHITECTURE_PARTS)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 5.4))
    else:
        fig = ax.figure
    width, height = 0.86, 0.66  # a box, in column and row units
    centres = {}
    for name, col, row, heading, details in _ARCHITECTURE:
        x, y = col + 0.5, 2.5 - row
        centres[name] = (x, y)
        lit = name in chosen
        box = FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                             boxstyle="round,pad=0.02,rounding_size=0.06",
                             facecolor=HIGHLIGHT_COLOR if lit else _PLAIN_COLOR,
                             edgecolor="black" if lit else "#888888",
                             linewidth=2.2 if lit else 1.0, zorder=2)
        box.set_gid(name)
        ax.add_patch(box)
        ax.text(x, y + 0.17, heading, ha="center", va="center", fontsize=11.5,
                fontweight="bold", zorder=3)
        ax.text(x, y - 0.1, details, ha="center", va="center", fontsize=10,
                linespacing=1.15, zorder=3)
    for start, end in _ARROWS:
        (x0, y0), (x1, y1) = centres[start], centres[end]
        if y0 == y1:  # along a row: from edge to edge
            step = np.sign(x1 - x0) * width / 2
            a, b = (x0 + step, y0), (x1 - step, y1)
        else:  # down a column
            a, b = (x0, y0 - height / 2), (x1, y1 + height / 2)
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=16, lw=1.6,
                                     color="#333333", zorder=1))
    ax.text(0.08, 0.95, "Shapes are per image\n(the batch axis is left out).", fontsize=10,
            ha="left", va="center", color="#444444")
    ax.set_xlim(0, 5)
    ax.set_ylim(0, 3)
    ax.axis("off")
    if chosen:
        ax.legend(handles=[Patch(facecolor=HIGHLIGHT_COLOR, edgecolor="black",
                                 label="this notebook")],
                  loc="lower left", fontsize=11, frameon=False)
    if title is None:
        title = "The CapsNet of this course"
        if chosen:
            title += ": this notebook builds the coloured part"
    ax.set_title(title, fontsize=14)
    if ax is fig.axes[0] and len(fig.axes) == 1:
        fig.tight_layout()
    return fig


def save(fig, path, dpi=100):
    """Save as PNG and close (keeps memory flat in long jobs)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
