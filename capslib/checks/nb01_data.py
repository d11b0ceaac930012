"""Notebook 01_data's checks: ``check_shift_image`` (moving an image by whole
pixels, the augmentation's shift) and ``check_stratified_split`` (a validation
split with as many images of each class)."""
import numpy as np

from capslib import data
from capslib.checks._core import _, _Checker, _exercise_check, _wrong_order


# -- 1. shift_image -----------------------------------------------------------

def _shift_reference(image, dy, dx):
    """Content moved down by dy and right by dx, zeros where nothing came in."""
    return data.shift_images(image[None], dy, dx)[0]


@_exercise_check
def check_shift_image(fn, seed=0):
    """shift_image(image, dy, dx): a new array, content moved down/right, zero fill."""
    c = _Checker("shift_image", reference=_("the expected shift"))
    rng = np.random.default_rng(seed)
    reversed_ = (_("moves the content the wrong way (direction reversed): it moved up "
                   "when asked to move down; positive dy moves the content down, "
                   "positive dx to the right"))

    def verify(image, dy, dx, case, want=None):
        arg = image.copy()
        got = c.array(c.run(fn, arg, dy, dx, case=case), case)
        if not np.array_equal(arg, image):
            c.fail(_("shift_image modifies the input image in place: start from a new "
                     "array (np.zeros_like(image)) and leave image unchanged"))
        if np.shares_memory(got, arg):
            c.fail(_("shift_image returned the input image itself (or a view of it) for "
                     "{case}: return a new array, e.g. built with np.zeros_like(image)",
                     case=case))
        c.compare(
            got, _shift_reference(image, dy, dx) if want is None else want, case,
            mistakes=[
                (_("wraps around like np.roll: pixels that leave one side come back on "
                   "the other; fill the rows and columns nothing moved into with zeros"),
                 lambda: np.roll(image, (dy, dx), axis=(0, 1))),
                (_("swaps dy and dx: it moved right when asked to move down; dy moves "
                   "the rows (axis 0), dx the columns (axis 1)"),
                 lambda: _shift_reference(image, dx, dy)),
                (reversed_, lambda: _shift_reference(image, -dy, -dx)),
                (reversed_, lambda: _shift_reference(image, -dy, dx)),
                (reversed_, lambda: _shift_reference(image, dy, -dx)),
            ],
            shape_rule=_("it must keep the image's shape {shape}", shape=image.shape),
            dtype=image.dtype,
            dtype_rule=_("keep the image's dtype {dtype} (np.zeros_like(image) does)",
                         dtype=image.dtype),
            rtol=0, atol=0)

    toy = np.arange(1, 10, dtype=np.uint8).reshape(3, 3)
    verify(toy, 1, 0, _("the 3x3 toy image moved down by 1"),
           want=np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6]], np.uint8))
    c.ok(_("3x3 toy image, dy=1: moved down one row, zeros on top"))
    verify(toy, 0, -1, _("the 3x3 toy image moved left by 1"),
           want=np.array([[2, 3, 0], [5, 6, 0], [8, 9, 0]], np.uint8))
    c.ok(_("3x3 toy image, dx=-1: moved left one column, zeros on the right"))
    image = rng.uniform(0.1, 1.0, (5, 6)).astype(np.float32)
    verify(image, 0, 0, _("no shift (dy=0, dx=0)"))
    c.ok(_("no shift (0, 0): an equal copy"))
    verify(rng.uniform(0.1, 1.0, (6, 5, 2)).astype(np.float32), -2, 1,
           _("a (6, 5, 2) image with channels, moved up 2 and right 1"))
    c.ok(_("an image with channels (6, 5, 2), up 2 and right 1"))
    verify(rng.uniform(0.1, 1.0, (7, 7)).astype(np.float32), 5, -5,
           _("a 7x7 image moved down 5 and left 5"))
    c.ok(_("a large shift of 5 on a 7x7 image: only a 2x2 corner stays"))

    # capslib.data.augment_batch draws the offsets; no zero pixel in the image,
    # so each augmented copy reveals its offset unambiguously.
    image = rng.uniform(0.1, 1.0, (7, 7)).astype(np.float32)
    augmented = data.augment_batch(np.repeat(image[None], 6, axis=0), rng,
                                   max_shift=2, flip=False)
    for copy in augmented:
        dy, dx = next(((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                       if np.array_equal(_shift_reference(image, dy, dx), copy)), (None, None))
        if dy is None:
            raise RuntimeError("capslib.data.augment_batch no longer shifts as expected")
        verify(image, dy, dx, _("a shift of dy={dy}, dx={dx} drawn by "
                 "capslib.data.augment_batch", dy=dy, dx=dx), want=copy)
    c.ok(_("6 random shifts in [-2, 2] match capslib.data.augment_batch"))
    c.done()


# -- 2. stratified_split ------------------------------------------------------

@_exercise_check
def check_stratified_split(fn, seed=0):
    """stratified_split(labels, val_per_class, seed) -> (train_idx, val_idx)."""
    c = _Checker("stratified_split")
    rng = np.random.default_rng(seed)

    def verify(labels, val_per_class, split_seed, case):
        n = len(labels)
        result = c.run(fn, labels.copy(), val_per_class, split_seed, case=case)
        train, val = c.pair(result, case, ("train_idx", "val_idx"))
        for name, idx in (("train_idx", train), ("val_idx", val)):
            if idx.dtype == bool:
                c.fail(_("stratified_split returns boolean masks instead of indices: turn "
                         "a mask into indices with np.flatnonzero(mask)"))
            if idx.dtype.kind not in "iu" or idx.ndim != 1:
                c.fail(_("stratified_split returned {name} with dtype {dtype} and shape "
                         "{shape} for {case}: it must be a 1-D array of integer indices",
                         name=name, dtype=idx.dtype, shape=idx.shape, case=case))
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                c.fail(_("stratified_split returned {name} with indices outside 0..{last} "
                         "for {case}: indices point into labels",
                         name=name, last=n - 1, case=case))
        for name, idx in (("train_idx", train), ("val_idx", val)):
            repeated = len(idx) - len(np.unique(idx))
            if repeated:
                c.fail(_("stratified_split: an index appears twice in {name} ({repeated} "
                         "repeated), as if sampled with replacement: draw without "
                         "replacement, e.g. rng.choice(idx, k, replace=False)",
                         name=name, repeated=repeated))
        both = np.intersect1d(train, val)
        if both.size:
            c.fail(_("stratified_split: train and val overlap ({size} images are in "
                     "both), so images leak from training into validation: train must "
                     "hold only the images not chosen for validation", size=both.size))
        neither = n - len(np.union1d(train, val))
        if neither:
            c.fail(_("stratified_split leaves images out: {neither} of the {n} images are "
                     "in neither set; every image not chosen for validation belongs to train",
                     neither=neither, n=n))
        classes = np.unique(labels)
        expected = val_per_class * len(classes)
        if len(val) != expected and len(train) == expected and all(
                np.sum(labels[train] == k) == val_per_class for k in classes):
            c.fail("stratified_split " + _wrong_order(("train_idx", "val_idx")))
        if len(val) != expected:
            c.fail(_("stratified_split returned a val_idx of the wrong size for {case}: "
                     "{n_val} indices, expected {val_per_class} per class x "
                     "{n_classes} classes = {expected}",
                     case=case, n_val=len(val), val_per_class=val_per_class,
                     n_classes=len(classes), expected=expected))
        for k in classes:
            count = int(np.sum(labels[val] == k))
            if count != val_per_class:
                c.fail(_("stratified_split: validation is not stratified: class {k} has "
                         "{count} images in val_idx, expected {val_per_class}; draw "
                         "val_per_class indices from each class separately",
                         k=k, count=count, val_per_class=val_per_class))
        return train, val

    labels = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 2, 1])
    verify(labels, 2, 0, _("12 labels of 3 classes, 2 per class"))
    c.ok(_("12 labels of 3 classes: val holds 2 of each class, train the other 6"))
    counts = rng.integers(3, 8, size=10)
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    first = verify(labels, 2, 7, _("random labels of 10 classes, 2 per class"))
    c.ok(_("random labels of 10 classes: an exact stratified partition"))
    again = verify(labels, 2, 7, _("the same labels and seed again"))
    if not all(np.array_equal(a, b) for a, b in zip(first, again)):
        c.fail(_("stratified_split is not reproducible: two calls with the same seed gave "
                 "different splits; draw from np.random.default_rng(seed)"))
    c.ok(_("the same seed gives the same split"))
    other = verify(labels, 2, 8, _("the same labels with another seed"))
    if np.array_equal(np.sort(first[1]), np.sort(other[1])):
        c.fail(_("stratified_split ignores its seed: seeds 7 and 8 chose the same "
                 "validation images; draw from np.random.default_rng(seed)"))
    c.ok(_("another seed gives another split"))
    c.done()
