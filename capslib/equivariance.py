"""Measuring invariance and equivariance under shifts (notebook 07).

* :func:`bootstrap_interval`: a percentile bootstrap interval of any statistic
  of per-image values, resampling whole images (what varies from one sample
  of test images to another).
* :func:`centre_of_ink`: the (row, column) centre of the ink of each image,
  the hand-made "pose" of notebook 02, used here on decoded reconstructions.
* :func:`line_r2`: how much of a number's change over the shifts a straight
  line in the shift explains, for many numbers at once.
* :func:`untrained_copy`: the same architecture with fresh weights (a null
  model: what the architecture alone does, before any training).
"""
import numpy as np


def bootstrap_interval(values, statistic=np.mean, n_boot=1000, level=0.95, seed=0):
    """``(estimate, low, high)``: ``statistic(values)`` and its percentile
    bootstrap interval.

    ``values``: an array whose first axis is the images; each of ``n_boot``
    resamples draws as many images with replacement (all their numbers
    together), and ``statistic`` maps such an array to a number (``np.mean``
    over axis 0 by default; ``np.nanmedian`` pools everything). Fixed ``seed``:
    the same interval every run.
    """
    values = np.asarray(values)
    if values.ndim == 0 or len(values) < 2:
        raise ValueError(f"need at least 2 images along the first axis, got shape {values.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(int(n_boot), len(values)))
    boot = np.array([float(statistic(values[p])) for p in picks])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(statistic(values)), float(low), float(high)


def centre_of_ink(images):
    """(N, 2): the (row, column) centre of the ink of each image (N, H, W[, 1]),
    in pixels; NaN for an image without ink."""
    images = np.asarray(images, dtype="float64")
    if images.ndim == 4:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 1), got {images.shape}")
    rows, cols = np.indices(images.shape[1:])
    ink = images.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([(images * rows).sum(axis=(1, 2)) / ink,
                         (images * cols).sum(axis=(1, 2)) / ink], axis=1)


def line_r2(x, values, min_range=0.05):
    """R^2 of a straight line in ``x`` fitted to each number of ``values``.

    ``x``: (S,) shifts; ``values``: (S, N, M), M numbers of N images at each
    shift. Returns (N, M): the share of each number's change over the shifts
    that the line explains, NaN where the number hardly moves (its range under
    ``min_range`` times the largest |value| of that image at the first shift),
    since a number that does not move has nothing to explain.
    """
    x = np.asarray(x, dtype="float64")
    values = np.asarray(values, dtype="float64")
    if values.ndim != 3 or len(values) != len(x) or len(x) < 3:
        raise ValueError(f"values must be (len(x), N, M) with len(x) >= 3; "
                         f"got x {x.shape}, values {values.shape}")
    flat = values.reshape(len(x), -1)
    slope, intercept = np.polyfit(x, flat, 1)
    residual = flat - (np.outer(x, slope) + intercept)
    total = ((flat - flat.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = (1 - (residual ** 2).sum(axis=0) / total).reshape(values.shape[1:])
    scale = np.abs(values[0]).max(axis=1, keepdims=True)  # (N, 1)
    moving = np.ptp(values, axis=0) > min_range * scale
    return np.where(moving, r2, np.nan)


def untrained_copy(model, seed=0):
    """A model of the same class and configuration with fresh (untrained)
    weights, drawn with ``seed``: the same architecture, no training."""
    import keras

    keras.utils.set_random_seed(seed)
    fresh = type(model).from_config(model.get_config())
    fresh.build((None, *fresh.image_shape))
    return fresh
