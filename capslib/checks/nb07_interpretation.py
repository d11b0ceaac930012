"""Notebook 07_interpretation's checks: ``check_tweak_pose`` (one copy of the
poses per step, one dimension moved), ``check_centre_of_ink`` (the ink-weighted
(row, column) centre of each image) and ``check_confusion_matrix`` (counts, rows
the true classes; the exercise of earlier editions, kept for their notebooks)."""
import numpy as np

from capslib.checks._core import _, _Checker, _exercise_check
from capslib.equivariance import centre_of_ink  # the reference: the library's own


# -- 13. tweak_pose -----------------------------------------------------------

def _tweak_reference(poses, label, dim, steps):
    out = np.repeat(np.asarray(poses, np.float64)[None], len(steps), axis=0)
    out[:, label, dim] += np.asarray(steps, np.float64)
    return out


@_exercise_check
def check_tweak_pose(fn, seed=0):
    """tweak_pose(poses, label, dim, steps): one copy per step, poses[label, dim] += step."""
    c = _Checker("tweak_pose", reference=_("the expected copies"))
    rng = np.random.default_rng(seed)

    def verify(poses, label, dim, steps, case):
        arg = poses.copy()
        got = c.array(c.run(fn, arg, label, dim, steps, case=case), case)
        if not np.array_equal(arg, poses):
            c.fail(_("tweak_pose modifies the input poses in place: tweak copies "
                     "(poses.copy()) and leave poses unchanged"))
        want = _tweak_reference(poses, label, dim, steps)
        steps_ = np.asarray(steps, np.float64)
        n = len(steps_)

        def tweak(lab, d, values, every_capsule=False, set_=False):
            out = np.repeat(np.asarray(poses, np.float64)[None], n, axis=0)
            rows = slice(None) if every_capsule else lab
            if set_:
                out[:, rows, d] = values[:, None] if every_capsule else values
            else:
                out[:, rows, d] += values[:, None] if every_capsule else values
            return out

        same_copy = (_("returns the same array for every step (one array modified again "
                       "and again): make a fresh copy of poses for each step"))
        mistakes = [
            (_("tweaks dimension `dim` of every capsule: change only capsule `label`, "
               "poses[label, dim]"), lambda: tweak(label, dim, steps_, every_capsule=True)),
            (_("sets poses[label, dim] to the step instead of adding it: use += step"),
             lambda: tweak(label, dim, steps_, set_=True)),
            (_("lets the steps accumulate: start every copy from the original poses"),
             lambda: tweak(label, dim, np.cumsum(steps_))),
            (same_copy, lambda: np.repeat(want[-1:], n, axis=0)),
            (same_copy, lambda: np.repeat(tweak(label, dim, np.cumsum(steps_))[-1:], n, 0)),
        ]
        if dim < poses.shape[0] and label < poses.shape[1]:
            mistakes.insert(0, (_("swaps label and dim: the capsule comes first, "
                                  "poses[label, dim]"), lambda: tweak(dim, label, steps_)))
        c.compare(got, want, case, mistakes=mistakes,
                  shape_rule=_("expected (len(steps), n_caps, dims) = {shape}", shape=want.shape))

    verify(rng.normal(size=(10, 16)).astype(np.float32), 3, 5,
           np.linspace(-0.25, 0.5, 4), _("poses (10, 16), label 3, dim 5, 4 steps"))
    c.ok(_("poses (10, 16), 4 steps: only capsule 3, dimension 5 moves"))
    verify(rng.normal(size=(10, 16)).astype(np.float32), 9, 15, [0.1, -0.2],
           _("poses (10, 16), label 9, dim 15, steps given as a list"))
    c.ok(_("the last capsule and dimension, steps given as a list"))
    c.done()


# -- 14. confusion_matrix -----------------------------------------------------

def _confusion_reference(y_true, y_pred, n_classes):
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


@_exercise_check
def check_confusion_matrix(fn, seed=0):
    """confusion_matrix(y_true, y_pred, n_classes=10): counts, rows = true classes."""
    c = _Checker("confusion_matrix", reference=_("the expected counts"))
    rng = np.random.default_rng(seed)

    def verify(y_true, y_pred, n_classes, case):
        kwargs = {} if n_classes is None else {"n_classes": n_classes}
        n_classes = n_classes or 10
        got = c.array(c.run(fn, y_true.copy(), y_pred.copy(), case=case, **kwargs), case)
        if got.ndim == 2 and got.shape[0] == got.shape[1] and got.shape[0] < n_classes:
            c.fail(_("confusion_matrix returned shape {shape} for {case}: classes are "
                     "missing (built from the classes present); every one of the "
                     "n_classes = {n_classes} classes needs a row and a column, even absent",
                     shape=got.shape, case=case, n_classes=n_classes))
        want = _confusion_reference(y_true, y_pred, n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = want / want.sum(axis=1, keepdims=True)
        normalised = (_("normalises the rows to shares: return the counts "
                        "(integers) themselves"))
        c.compare(
            got, want, case,
            mistakes=[
                (_("is transposed (rows are the predictions): rows must be the true "
                   "classes and columns the predictions, cm[true, pred] += 1"),
                 lambda: want.T),
                (normalised, lambda: shares),
                (normalised, lambda: np.nan_to_num(shares)),
                (_("counts only the diagonal (the correct predictions): count every "
                   "(true, predicted) pair"), lambda: np.diag(np.diag(want))),
            ],
            shape_rule=_("expected (n_classes, n_classes) = {shape}", shape=want.shape),
            dtype="integer",
            dtype_rule=_("count with integers, e.g. np.zeros((n_classes, n_classes), "
                         "dtype=int)"),
            rtol=0, atol=0)

    verify(np.array([0, 1, 1, 2, 2, 2]), np.array([0, 2, 1, 2, 0, 2]), 4,
           _("6 labels of 4 classes (class 3 absent)"))
    c.ok(_("6 labels, n_classes=4: rows are true classes, class 3 a row and column of zeros"))
    y_true = rng.integers(0, 8, size=40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, 8, size=40))
    verify(y_true, y_pred, None, _("40 random labels of classes 0-7, default n_classes"))
    c.ok(_("40 random labels, classes 8 and 9 absent, default n_classes=10"))
    c.done()


# -- 14b. centre_of_ink -----------------------------------------------------------

@_exercise_check
def check_centre_of_ink(fn, seed=0):
    """centre_of_ink(images): (N, 2), the ink-weighted (row, column) of each image; NaN
    where an image has no ink."""
    c = _Checker("centre_of_ink", reference=_("the expected centres"))
    rng = np.random.default_rng(seed)

    def verify(images, case):
        arg = images.copy()
        got = c.array(c.run(fn, arg, case=case), case)
        if not np.array_equal(arg, images):
            c.fail(_("centre_of_ink changes the images it is given: compute from them, "
                     "leave them as they are"))
        want = centre_of_ink(images)
        if len(images) == 1 and got.shape == (2,):
            c.fail(_("centre_of_ink returned shape (2,) for {case}: np.squeeze also removes "
                     "the axis of the images when there is one; drop only the channel axis "
                     "(images[..., 0]) and return (1, 2)", case=case))
        if images.ndim == 4 and got.shape != want.shape:
            c.fail(_("centre_of_ink returned shape {shape} for {case}: images of shape (N, H, "
                     "W, 1) have a channel axis; drop it first (images[..., 0]), then sum over "
                     "the rows and columns", shape=got.shape, case=case))
        flat = images[..., 0] if images.ndim == 4 else images
        n, h, w = flat.shape
        rows, cols = np.indices((h, w))
        inked = (flat > 0).astype(np.float64)
        darkest = np.array([np.unravel_index(np.argmax(im), im.shape) for im in flat], np.float64)
        ink = flat.sum(axis=(1, 2))
        weighted = np.stack([(flat * rows).sum(axis=(1, 2)), (flat * cols).sum(axis=(1, 2))], 1)
        c.compare(
            got, want, case,
            mistakes=[
                (_("returns (column, row): the row (the vertical position, axis 1 of "
                   "the images) comes first, then the column"), lambda: want[:, ::-1]),
                (_("weights every pixel with ink the same: weight each pixel's row and "
                   "column by its ink, the pixel's value"),
                 lambda: centre_of_ink(inked)),
                (_("returns the darkest pixel, not the centre of all the ink"),
                 lambda: darkest),
                (_("counts rows and columns from 1: they start at 0 (the top-left pixel "
                   "is row 0, column 0)"), lambda: want + 1),
                (_("forgets to divide by the total ink: the sums of ink x row and ink x "
                   "column are weighted totals, not a position"), lambda: weighted),
                (_("divides by the number of pixels instead of the total ink"),
                 lambda: weighted / (h * w)),
                (_("measures from the middle of the image: measure from the top-left "
                   "corner (row 0, column 0)"),
                 lambda: want - np.array([(h - 1) / 2, (w - 1) / 2])),
            ],
            shape_rule=_("expected (N, 2) = {shape}: one (row, column) per image",
                         shape=want.shape),
            hint=_(" Each pixel's row and column, weighted by its ink, divided by the "
                   "image's total ink."))
        return ink

    dot = np.zeros((3, 6, 8), np.float32)
    dot[0, 1, 6] = 1.0  # one pixel: its own position
    dot[1, 4, 2], dot[1, 2, 2] = 1.0, 0.5  # two pixels on one column, one darker
    dot[2, 0, 0], dot[2, 5, 7] = 0.25, 0.75
    verify(dot, _("3 images of 6 x 8 pixels, one or two pixels with ink"))
    c.ok(_("hand-made images: (row, column) from the top-left, weighted by ink"))
    garments = rng.random((5, 28, 28, 1)).astype(np.float32) * (rng.random((5, 28, 28, 1)) < 0.3)
    verify(garments, _("5 random images (5, 28, 28, 1)"))
    c.ok(_("5 images (5, 28, 28, 1) with a channel axis: shape (5, 2)"))
    one = np.zeros((1, 28, 28, 1), np.float32)
    one[0, 5:9, 20:22, 0] = 0.5
    verify(one, _("one image (1, 28, 28, 1)"))
    c.ok(_("a single image keeps its axis: shape (1, 2)"))
    empty = np.zeros((2, 28, 28), np.float32)
    empty[1, 10, 20] = 1.0
    got = c.array(c.run(fn, empty.copy(), case=_("an image without ink")),
                  _("an image without ink"))
    if got.shape != (2, 2):
        c.fail(_("centre_of_ink returned shape {shape} for an image without ink and one "
                 "with: expected (2, 2)", shape=got.shape))
    if not np.allclose(got[1], [10, 20]):
        c.fail(_("centre_of_ink gives the wrong centre for one pixel at row 10, column 20 "
                 "beside an image without ink: {got}", got=got[1].tolist()))
    if not np.all(np.isnan(got[0])):
        c.fail(_("centre_of_ink returns {got} for an image without ink: it has no centre; "
                 "return NaN (0 / 0 in NumPy gives NaN; np.errstate hides the warning)",
                 got=got[0].tolist()))
    c.ok(_("an image without ink: NaN, no centre"))
    c.done()
