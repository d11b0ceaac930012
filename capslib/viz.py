"""Figures for the course: matplotlib only, each function returns its Figure."""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from capslib.data import CLASS_NAMES


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
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap="binary", vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[k], fontsize=7)
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


def plot_learning_curves(history):
    """Loss and accuracy per epoch, training beside validation.

    ``history``: a dict of lists (``History.history``) or a mapping loaded
    from the CSV log, with keys like ``loss``, ``val_loss``,
    ``lengths_accuracy`` and ``val_lengths_accuracy``.
    """
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            ax1.plot(epochs, history[key], "o-", label=label)
    ax1.set(xlabel="epoch", ylabel="total loss", title="Loss")
    for key, label in (("lengths_accuracy", "training"), ("val_lengths_accuracy", "validation")):
        if key in history:
            ax2.plot(epochs, 100 * np.asarray(history[key], dtype=float), "o-", label=label)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_reconstructions(images, reconstructions, true_labels, pred_labels,
                         class_names=CLASS_NAMES):
    """Originals (top row) above their reconstructions (bottom row)."""
    images, reconstructions = _images(images), _images(reconstructions)
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.3, 3.2), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k], cmap="binary", vmin=0, vmax=1)
        axes[0, k].set_title(f"true:\n{class_names[true_labels[k]]}", fontsize=7)
        axes[1, k].imshow(reconstructions[k], cmap="binary", vmin=0, vmax=1)
        ok = true_labels[k] == pred_labels[k]
        axes[1, k].set_title(f"pred:\n{class_names[pred_labels[k]]}", fontsize=7,
                             color="black" if ok else "red")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm, class_names=CLASS_NAMES, normalize=True):
    """Rows: true class, columns: predicted class."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > shown.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_pose_tweaks(tweaked, steps, title=None):
    """A grid of decoded images: one row per pose dimension, one column per step.

    ``tweaked``: (n_dims, n_steps, 28, 28[, 1]); ``steps``: the added values.
    """
    tweaked = np.asarray(tweaked)
    if tweaked.ndim == 5:
        tweaked = tweaked[..., 0]
    n_dims, n_steps = tweaked.shape[:2]
    fig, axes = plt.subplots(n_dims, n_steps, figsize=(n_steps * 0.75, n_dims * 0.78),
                             squeeze=False)
    for d in range(n_dims):
        for s in range(n_steps):
            ax = axes[d, s]
            ax.imshow(tweaked[d, s], cmap="binary", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if s == 0:
                ax.set_ylabel(f"dim {d}", rotation=0, ha="right", va="center", fontsize=7)
            if d == n_dims - 1:
                ax.set_xlabel(f"{steps[s]:+.2f}", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_couplings(c, class_names=CLASS_NAMES, grid=(6, 6), n_maps=32, title=None):
    """Coupling coefficients of one image, as a 6x6 map per class.

    ``c``: (1152, n_classes). Each primary position holds ``n_maps`` capsules;
    the map shows their mean coefficient towards each class.
    """
    c = np.asarray(c).reshape(grid[0], grid[1], n_maps, -1).mean(axis=2)
    n_classes = c.shape[-1]
    fig, axes = plt.subplots(1, n_classes, figsize=(n_classes * 1.25, 1.9))
    vmin, vmax = c.min(), c.max()
    for k, ax in enumerate(axes):
        im = ax.imshow(c[..., k], cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(class_names[k], fontsize=7)
        ax.axis("off")
    fig.colorbar(im, ax=axes.tolist(), fraction=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save(fig, path, dpi=100):
    """Save as PNG and close (keeps memory flat in long jobs)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
