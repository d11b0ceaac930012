"""Visible checks for the course's exercises.

``check_<name>(fn, seed=0)`` runs a student's ``fn`` on hand-made and random
cases and compares it with capslib (or a reference written here). It prints
one ``✓`` line per case passed and ``All N checks passed.``, or raises
``CheckFailed`` (an ``AssertionError``) naming the mistake in plain words; a
notebook shows that one line, without a traceback. A ``NotImplementedError``
from the student's stub, and any error raised inside the student's function,
propagate unchanged, their traceback cut down to the student's own code.

Printed lines hold no random numbers: notebooks store them and compare them
when re-executed.
"""
import functools
import math
import re

import keras
import numpy as np
from keras import ops

from capslib import data, layers, losses, stats
from capslib import ops as caps_ops
from capslib import routing as caps_routing

__all__ = [
    "CheckFailed", "check_best_epoch", "check_capsule_lengths", "check_confusion_matrix",
    "check_accuracy_interval", "check_coupling_entropy",
    "check_count_primary_capsules", "check_margin_loss", "check_mask_poses",
    "check_prediction_vectors", "check_reconstruction_loss", "check_routing",
    "check_shift_image", "check_squash", "check_stratified_split",
    "check_tweak_pose", "check_two_proportion_z_test",
]

_USE_KERAS_OPS = (
    "write it with keras.ops (ops.sum, ops.square, ops.sqrt, ops.einsum, ...) instead "
    "of NumPy: NumPy functions cut the gradient, and the model is trained through "
    "this step")


class CheckFailed(AssertionError):
    """A check found a mistake; the message names it in plain words.

    IPython (Jupyter) calls ``_render_traceback_`` instead of printing a
    traceback: the student sees ``CheckFailed: <message>`` and nothing of
    this module's code. nbgrader still sees an error output (ename
    ``CheckFailed``), so the check cell scores 0.
    """

    def _render_traceback_(self):
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


def _student_part(tb):
    """The part of a traceback inside the student's function: what follows the
    last frame of ``_Checker.run`` or ``_gradient`` (the calls of that function),
    or all of it when the error did not come from the student's code."""
    calls = (_Checker.run.__code__, _gradient.__code__)
    start, entry = tb, tb
    while entry is not None:
        if entry.tb_frame.f_code in calls and entry.tb_next is not None:
            start = entry.tb_next
        entry = entry.tb_next
    return start


def _exercise_check(check):
    """A public check: its failures are ``CheckFailed``; an error raised in the
    student's function (``NotImplementedError`` from the stub included) goes
    on unchanged, with a traceback that shows the student's code, not this
    module's (whose source would show the wording of other mistakes)."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True  # noqa: F841  (IPython and pytest skip this frame)
        try:
            return check(*args, **kwargs)
        except CheckFailed:
            raise
        except Exception as e:
            tb = _student_part(e.__traceback__)
            if tb is e.__traceback__:
                raise  # not from the student's function: a bug here, shown whole
            raise e.with_traceback(tb)
    return wrapper


# -- Shared machinery ---------------------------------------------------------

def _to_numpy(x):
    """A result (NumPy, backend tensor, Python number, list of those) as NumPy."""
    if isinstance(x, (list, tuple)):
        return np.stack([_to_numpy(e) for e in x]) if len(x) else np.asarray(x)
    if isinstance(x, np.ndarray):
        return x  # kept as is: the identity matters for the "new array" checks
    return np.asarray(ops.convert_to_numpy(x))


def _matches(a, b, rtol, atol, equal_nan=False):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(
        a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol,
        equal_nan=equal_nan))


def _as_tuple(x):
    return tuple(x) if isinstance(x, tuple) else (x,)


class _Checker:
    """One exercise's verdicts: runs the student's function, compares, prints."""

    def __init__(self, name, reference="capslib"):
        self.name, self.reference, self.passed = name, reference, 0

    def run(self, fn, *args, case, explain_error=None, **kwargs):
        """fn(*args, **kwargs); ``explain_error(e)`` may turn an error that a
        known mistake causes into its message (None: the error goes on)."""
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise  # the stub: the notebook must stop on this very error
        except Exception as e:
            message = explain_error(e) if explain_error is not None else None
            if message is None:
                # The student's own error, kept with its traceback; the note
                # says which input triggered it.
                if hasattr(e, "add_note"):  # Python >= 3.11
                    e.add_note(f"(raised by your {self.name} on the check's case: {case})")
                raise
        self.fail(message)  # outside the except block: no chained traceback

    def ok(self, text):
        self.passed += 1
        print(f"✓ {text}")

    def done(self):
        print(f"All {self.passed} checks passed.")

    def fail(self, message):
        """Stop with the message (which starts with the function's name)."""
        raise CheckFailed(f"your {message}")

    def array(self, result, case):
        """The result as a numeric NumPy array, or a plain-words failure."""
        if result is None:
            self.fail(f"{self.name} returned None for {case}: did you forget `return`?")
        try:
            a = _to_numpy(result)
        except Exception:
            a = None  # failed outside the except block: no chained traceback
        if a is None:
            self.fail(f"{self.name} returned a {type(result).__name__} for {case}, "
                      "which cannot be read as one array")
        if a.dtype.kind not in "biuf":
            self.fail(f"{self.name} returned {a.dtype} values for {case}: "
                      "it must return numbers")
        return a

    def pair(self, result, case, names):
        """Split a result that must be a tuple of len(names) arrays."""
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            what = type(result).__name__
            if isinstance(result, (tuple, list)):
                what += f" of {len(result)} items"
            self.fail(f"{self.name} returned a {what} for {case}: it must return "
                      f"the pair ({', '.join(names)})")
        return tuple(self.array(r, case) for r in result)

    def compare(self, got, want, case, *, mistakes=(), names=None, shape_rule=None,
                dtype="floating", dtype_rule=None, diagnose=None, hint="",
                rtol=1e-4, atol=1e-5):
        """Pass, or name the mistake: known wrong variants first, then shape,
        finiteness, dtype, ``diagnose(gots)``, and at last the largest error.

        ``got``/``want`` are arrays or tuples of arrays (several outputs);
        ``mistakes`` are ``(message, variant)`` pairs, ``variant()`` giving
        what that mistake would return for this case.
        """
        gots, wants = _as_tuple(got), _as_tuple(want)
        names = names or ("",) * len(wants)
        rules = shape_rule if isinstance(shape_rule, tuple) else (shape_rule,) * len(wants)

        def dtype_ok(g):
            if dtype is None:
                return True
            if isinstance(dtype, str):  # "floating" or "integer": any width
                return g.dtype.kind in ("f" if dtype == "floating" else "iu")
            return g.dtype == np.dtype(dtype)

        if all(_matches(g, w, rtol, atol) and dtype_ok(g) for g, w in zip(gots, wants)):
            return
        for message, variant in mistakes:
            outs = _as_tuple(variant())
            # A variant equal to the right answer here says nothing.
            if all(_matches(o, w, rtol, atol, equal_nan=True) for o, w in zip(outs, wants)):
                continue
            if all(_matches(g, o, rtol, atol, equal_nan=True) for g, o in zip(gots, outs)):
                self.fail(f"{self.name} {message}")
        for g, w, n, rule in zip(gots, wants, names, rules):
            if g.shape != w.shape:
                what = f"{n} of " if n else ""
                self.fail(f"{self.name} returned {what}shape {g.shape} for {case}: "
                          f"{rule or f'expected {w.shape}'}")
        for g, w, n in zip(gots, wants, names):
            if not np.all(np.isfinite(g.astype(np.float64))) and np.all(np.isfinite(w)):
                what = f" in {n}" if n else ""
                self.fail(f"{self.name} returned NaN or inf{what} for {case}.{hint}")
        for g, n in zip(gots, names):
            if not dtype_ok(g):
                what = f"{n} with " if n else ""
                rule = dtype_rule or {
                    "floating": "it must return floating-point values",
                    "integer": "it must return integers"}.get(dtype, f"expected {dtype}")
                self.fail(f"{self.name} returned {what}dtype {g.dtype} for {case}: {rule}")
        if diagnose is not None:
            message = diagnose(gots)
            if message:
                self.fail(f"{self.name} {message}")
        for g, w, n in zip(gots, wants, names):
            if not _matches(g, w, rtol, atol):
                err = float(np.max(np.abs(g.astype(np.float64) - w)))
                what = f" ({n})" if n else ""
                self.fail(f"{self.name} differs from {self.reference} on {case}{what}: "
                          f"largest error {err:.3g}.{hint}")


def _gradient(fn, x, who):
    """d sum(fn(x)) / dx as NumPy, with the active backend's autodiff, or a
    CheckFailed naming ``who`` ("your squash") when fn cannot be differentiated.

    fn is traced as the model's training step traces it (a tf.function graph,
    or JAX's tracing): a NumPy call on its input fails there, on every backend,
    rather than silently cutting part of the gradient."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise RuntimeError(
            f"gradient checks support the tensorflow and jax backends, not {backend}")
    x = np.asarray(x, dtype="float32")
    refused = CheckFailed(f"{who} cannot be differentiated: {_USE_KERAS_OPS}")
    no_gradient = []
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            def gradient(xt):
                with tf.GradientTape() as tape:
                    tape.watch(xt)
                    y = tf.reduce_sum(tf.convert_to_tensor(fn(xt)))
                g = tape.gradient(y, xt)
                if g is None:  # the result does not depend on x
                    no_gradient.append(True)
                    g = tf.zeros_like(xt)
                return g

            # get_concrete_function: traced once, no "retracing" warning.
            traced = tf.function(gradient, autograph=False).get_concrete_function(
                tf.TensorSpec(x.shape, tf.float32))
            g = traced(tf.constant(x))
        else:
            import jax
            import jax.numpy as jnp
            g = jax.grad(lambda a: jnp.sum(jnp.asarray(fn(a))))(jnp.asarray(x))
    except Exception as e:
        # NumPy on a traced value: TensorFlow's "Cannot convert a symbolic
        # tf.Tensor" (a NotImplementedError, not the stub's), JAX's
        # TracerArrayConversionError.
        numpy = ("Cannot convert a symbolic" in str(e)
                 or type(e).__name__ == "TracerArrayConversionError")
        if isinstance(e, NotImplementedError) and not numpy:
            raise
        first_line = (str(e).splitlines() or [""])[0][:120]
        detail = "" if numpy else f" ({type(e).__name__}: {first_line})"
        raise CheckFailed(f"{refused}{detail}") from None
    if no_gradient:
        raise refused
    return np.asarray(g)


def _check_gradient(c, fn, x, references, what, reference="capslib's"):
    """Fail unless fn (the student's, a function of x alone) can be
    differentiated at x and its gradient matches one of the references'."""
    got = _gradient(fn, x, f"your {c.name}")
    wants = [_gradient(r, x, f"{reference} {c.name}") for r in references]
    if not any(_matches(got, w, 1e-3, 1e-4) for w in wants):
        err = min(float(np.max(np.abs(got - w))) for w in wants)
        c.fail(f"{c.name}'s gradient {what} differs from {reference} (largest error "
               f"{err:.3g}) although its values match: something in it blocks part of "
               "the gradient (ops.stop_gradient, a constant computed outside keras.ops); "
               "compute every step from the input with keras.ops")


def _np_squash(s, axis=-1, epsilon=1e-7, square=True, normalise=True, outside=False,
               by_squared=False):
    """Squash in float64, with switches for the usual mistakes."""
    s = np.asarray(s, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        squared = np.sum(s ** 2, axis=axis, keepdims=True)
        length2 = squared if square else np.sqrt(squared)
        scale = length2 / (1.0 + length2)
        if by_squared:
            scale = scale / (squared + epsilon)
        elif normalise:
            norm = np.sqrt(squared) + epsilon if outside else np.sqrt(squared + epsilon)
            scale = scale / norm
        return scale * s


_SHAPE_ERROR = re.compile(r"incompatible shapes|broadcast|dimensions must be equal",
                          re.IGNORECASE)


def _np_softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _np_norm(x, axis=-1, epsilon=1e-7):
    return np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=axis) + epsilon)


# -- 1. shift_image -----------------------------------------------------------

def _shift_reference(image, dy, dx):
    """Content moved down by dy and right by dx, zeros where nothing came in."""
    return data.shift_images(image[None], dy, dx)[0]


@_exercise_check
def check_shift_image(fn, seed=0):
    """shift_image(image, dy, dx): a new array, content moved down/right, zero fill."""
    c = _Checker("shift_image", reference="the expected shift")
    rng = np.random.default_rng(seed)
    reversed_ = ("moves the content the wrong way (direction reversed): it moved up "
                 "when asked to move down; positive dy moves the content down, "
                 "positive dx to the right")

    def verify(image, dy, dx, case, want=None):
        arg = image.copy()
        got = c.array(c.run(fn, arg, dy, dx, case=case), case)
        if not np.array_equal(arg, image):
            c.fail("shift_image modifies the input image in place: start from a new "
                   "array (np.zeros_like(image)) and leave image unchanged")
        if np.shares_memory(got, arg):
            c.fail(f"shift_image returned the input image itself (or a view of it) for "
                   f"{case}: return a new array, e.g. built with np.zeros_like(image)")
        c.compare(
            got, _shift_reference(image, dy, dx) if want is None else want, case,
            mistakes=[
                ("wraps around like np.roll: pixels that leave one side come back on "
                 "the other; fill the rows and columns nothing moved into with zeros",
                 lambda: np.roll(image, (dy, dx), axis=(0, 1))),
                ("swaps dy and dx: it moved right when asked to move down; dy moves "
                 "the rows (axis 0), dx the columns (axis 1)",
                 lambda: _shift_reference(image, dx, dy)),
                (reversed_, lambda: _shift_reference(image, -dy, -dx)),
                (reversed_, lambda: _shift_reference(image, -dy, dx)),
                (reversed_, lambda: _shift_reference(image, dy, -dx)),
            ],
            shape_rule=f"it must keep the image's shape {image.shape}",
            dtype=image.dtype,
            dtype_rule=f"keep the image's dtype {image.dtype} (np.zeros_like(image) does)",
            rtol=0, atol=0)

    toy = np.arange(1, 10, dtype=np.uint8).reshape(3, 3)
    verify(toy, 1, 0, "the 3x3 toy image moved down by 1",
           want=np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6]], np.uint8))
    c.ok("3x3 toy image, dy=1: moved down one row, zeros on top")
    verify(toy, 0, -1, "the 3x3 toy image moved left by 1",
           want=np.array([[2, 3, 0], [5, 6, 0], [8, 9, 0]], np.uint8))
    c.ok("3x3 toy image, dx=-1: moved left one column, zeros on the right")
    image = rng.uniform(0.1, 1.0, (5, 6)).astype(np.float32)
    verify(image, 0, 0, "no shift (dy=0, dx=0)")
    c.ok("no shift (0, 0): an equal copy")
    verify(rng.uniform(0.1, 1.0, (6, 5, 2)).astype(np.float32), -2, 1,
           "a (6, 5, 2) image with channels, moved up 2 and right 1")
    c.ok("an image with channels (6, 5, 2), up 2 and right 1")
    verify(rng.uniform(0.1, 1.0, (7, 7)).astype(np.float32), 5, -5,
           "a 7x7 image moved down 5 and left 5")
    c.ok("a large shift of 5 on a 7x7 image: only a 2x2 corner stays")

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
        verify(image, dy, dx, f"a shift of dy={dy}, dx={dx} drawn by "
               "capslib.data.augment_batch", want=copy)
    c.ok("6 random shifts in [-2, 2] match capslib.data.augment_batch")
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
                c.fail("stratified_split returns boolean masks instead of indices: turn "
                       "a mask into indices with np.flatnonzero(mask)")
            if idx.dtype.kind not in "iu" or idx.ndim != 1:
                c.fail(f"stratified_split returned {name} with dtype {idx.dtype} and shape "
                       f"{idx.shape} for {case}: it must be a 1-D array of integer indices")
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                c.fail(f"stratified_split returned {name} with indices outside 0..{n - 1} "
                       f"for {case}: indices point into labels")
        for name, idx in (("train_idx", train), ("val_idx", val)):
            repeated = len(idx) - len(np.unique(idx))
            if repeated:
                c.fail(f"stratified_split: an index appears twice in {name} ({repeated} "
                       "repeated), as if sampled with replacement: draw without "
                       "replacement, e.g. rng.choice(idx, k, replace=False)")
        both = np.intersect1d(train, val)
        if both.size:
            c.fail(f"stratified_split: train and val overlap ({both.size} images are in "
                   "both), so images leak from training into validation: train must "
                   "hold only the images not chosen for validation")
        neither = n - len(np.union1d(train, val))
        if neither:
            c.fail(f"stratified_split leaves images out: {neither} of the {n} images are "
                   "in neither set; every image not chosen for validation belongs to train")
        classes = np.unique(labels)
        expected = val_per_class * len(classes)
        if len(val) != expected and len(train) == expected and all(
                np.sum(labels[train] == k) == val_per_class for k in classes):
            c.fail("stratified_split " + _wrong_order(("train_idx", "val_idx")))
        if len(val) != expected:
            c.fail(f"stratified_split returned a val_idx of the wrong size for {case}: "
                   f"{len(val)} indices, expected {val_per_class} per class x "
                   f"{len(classes)} classes = {expected}")
        for k in classes:
            count = int(np.sum(labels[val] == k))
            if count != val_per_class:
                c.fail(f"stratified_split: validation is not stratified: class {k} has "
                       f"{count} images in val_idx, expected {val_per_class}; draw "
                       "val_per_class indices from each class separately")
        return train, val

    labels = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 2, 1])
    verify(labels, 2, 0, "12 labels of 3 classes, 2 per class")
    c.ok("12 labels of 3 classes: val holds 2 of each class, train the other 6")
    counts = rng.integers(3, 8, size=10)
    labels = rng.permutation(np.repeat(np.arange(10), counts))
    first = verify(labels, 2, 7, "random labels of 10 classes, 2 per class")
    c.ok("random labels of 10 classes: an exact stratified partition")
    again = verify(labels, 2, 7, "the same labels and seed again")
    if not all(np.array_equal(a, b) for a, b in zip(first, again)):
        c.fail("stratified_split is not reproducible: two calls with the same seed gave "
               "different splits; draw from np.random.default_rng(seed)")
    c.ok("the same seed gives the same split")
    other = verify(labels, 2, 8, "the same labels with another seed")
    if np.array_equal(np.sort(first[1]), np.sort(other[1])):
        c.fail("stratified_split ignores its seed: seeds 7 and 8 chose the same "
               "validation images; draw from np.random.default_rng(seed)")
    c.ok("another seed gives another split")
    c.done()


# -- 3. squash ----------------------------------------------------------------

@_exercise_check
def check_squash(fn, seed=0):
    """squash(s, axis=-1, epsilon=1e-7) with keras.ops, against capslib.ops.squash."""
    c = _Checker("squash")
    rng = np.random.default_rng(seed)
    epsilon_hint = (" Compute the norm as sqrt(|s|^2 + epsilon), with epsilon inside "
                    "the square root.")

    def verify(s, case, axis=None, epsilon=None):
        kwargs = {} if axis is None else {"axis": axis}
        if epsilon is not None:
            kwargs["epsilon"] = epsilon
        a = -1 if axis is None else axis

        def shape_error(e):
            # No test case lets a sum without keepdims broadcast against s: the
            # mistake shows as the backend's "Incompatible shapes", caught here.
            if not _SHAPE_ERROR.search(f"{type(e).__name__} {e}"):
                return None
            return ("squash sums the squares without keepdims=True: on an input of "
                    f"shape {s.shape}, |s|^2 gets shape {np.sum(s, axis=a).shape} "
                    f"instead of {np.sum(s, axis=a, keepdims=True).shape} and does not "
                    "line up with s; use ops.sum(ops.square(s), axis=axis, keepdims=True)")

        got = c.array(c.run(fn, s, case=case, explain_error=shape_error, **kwargs), case)
        eps = 1e-7 if epsilon is None else epsilon
        has_zero = not np.all(np.any(s, axis=a))
        wrong_axis = ("computes the norm over the wrong axis: use the `axis` argument, "
                      "ops.sum(ops.square(s), axis=axis, keepdims=True)")
        c.compare(
            got, keras.ops.convert_to_numpy(caps_ops.squash(s, **kwargs)), case,
            mistakes=[(wrong_axis, lambda ax=ax: _np_squash(s, axis=ax))
                      for ax in (*range(s.ndim), None) if ax != a % s.ndim] + [
                ("misses the squares in the scale: it must be |s|^2 / (1 + |s|^2), "
                 "not |s| / (1 + |s|)", lambda: _np_squash(s, a, square=False)),
                ("does not normalise the direction: divide s by its norm |s| too "
                 "(v = |s|^2 / (1 + |s|^2) * s / |s|)",
                 lambda: _np_squash(s, a, normalise=False)),
                ("divides s by its squared norm |s|^2 instead of its norm |s|: "
                 "v = |s|^2 / (1 + |s|^2) * s / |s|, with |s| = sqrt(|s|^2 + epsilon)",
                 lambda: _np_squash(s, a, epsilon=eps, by_squared=True)),
                *([("returns NaN for the zero vector: it divides by |s| = 0." + epsilon_hint,
                     lambda: _np_squash(s, a, epsilon=0.0))] if has_zero else []),
                ("puts epsilon outside the square root (under JAX its gradient at the "
                 "zero vector is NaN): put epsilon inside the square root, "
                 "sqrt(|s|^2 + epsilon), not sqrt(|s|^2) + epsilon",
                 lambda: _np_squash(s, a, epsilon=eps, outside=True)),
                ("ignores the `epsilon` argument: compute the norm as "
                 "sqrt(|s|^2 + epsilon) with the epsilon it is given",
                 lambda: _np_squash(s, a)),
            ],
            shape_rule=f"it must keep the input's shape {s.shape} (keepdims=True in the sum)",
            dtype=np.float32,
            dtype_rule="keep the input's dtype float32 (no float64 constants or casts)",
            hint=epsilon_hint if has_zero else "")

    directions = rng.normal(size=(3, 8))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    s = (directions * np.array([[0.1], [1.0], [10.0]])).astype(np.float32)
    verify(s, "vectors of length 0.1, 1 and 10 (shape (3, 8))")
    c.ok("short, unit and long vectors: same direction, length |s|^2 / (1 + |s|^2)")
    verify(rng.normal(size=(4, 1152, 8)).astype(np.float32), "input (4, 1152, 8)")
    c.ok("a batch of primary capsules (4, 1152, 8)")
    verify(rng.normal(size=(5, 3, 4)).astype(np.float32), "axis=1 on a (5, 3, 4) input",
           axis=1)
    c.ok("axis=1 on a (5, 3, 4) input")

    zero = np.zeros((2, 8), np.float32)
    zero[1] = rng.normal(size=8)
    verify(zero, "the zero vector (first row of a (2, 8) input)")
    grad = _gradient(fn, zero, f"your {c.name}")
    if not np.all(np.isfinite(grad)):
        c.fail("squash has a finite value at the zero vector but a NaN or inf gradient "
               "there: put epsilon inside the square root, sqrt(|s|^2 + epsilon), and "
               "compute every norm that way (no ops.norm, no ops.where around a division "
               "by |s|: its other branch still poisons the gradient)")
    c.ok("zero vector: value 0 and a finite gradient")

    # A large epsilon tells sqrt(|s|^2 + epsilon) from sqrt(|s|^2) + epsilon on
    # every backend: TensorFlow's gradient at the zero vector stays finite for
    # the latter (JAX's does not), so the check above misses it there.
    verify((directions[:2] * np.array([[0.5], [2.0]])).astype(np.float32),
           "vectors of length 0.5 and 2 with epsilon=1", epsilon=1.0)
    c.ok("epsilon=1: epsilon sits inside the square root")

    s = rng.normal(size=(3, 8)).astype(np.float32)
    _check_gradient(c, fn, s, [caps_ops.squash], "on random (3, 8) vectors")
    c.ok("its gradient matches capslib's")
    c.done()


# -- 4. count_primary_capsules ------------------------------------------------

def _primary_capsules_reference(height, width):
    """Shape inference through the paper's layers: no weights are built."""
    conv1 = keras.layers.Conv2D(256, 9)
    primary = layers.PrimaryCapsules()
    shape = primary.compute_output_shape(conv1.compute_output_shape((None, height, width, 1)))
    return int(shape[1])


@_exercise_check
def check_count_primary_capsules(fn, seed=0):
    """count_primary_capsules(height, width): the paper's primary capsule count."""
    del seed  # no random case: the sizes below cover the rounding
    c = _Checker("count_primary_capsules")

    def valid(n, k=9, s=1):
        return (n - k) // s + 1

    def same(n, s=1):
        return -(-n // s)

    mistakes = [
        ("forgets the stride 2 of the primary capsules' convolution: its output is "
         "(n - 9) // 2 + 1 positions per side",
         lambda h, w: valid(valid(h)) * valid(valid(w)) * 32),
        ("uses 'same' padding: the paper's convolutions are 'valid' (no padding), so "
         "each 9x9 kernel shrinks the image",
         lambda h, w: same(same(h), 2) * same(same(w), 2) * 32),
        ("forgets conv1 (or pads one convolution): the 9x9 conv1 first shrinks the "
         "image by 8 before the primary capsules' convolution",
         lambda h, w: valid(h, s=2) * valid(w, s=2) * 32),
        ("counts positions only: every position holds 32 capsules (one per map), "
         "multiply by 32",
         lambda h, w: valid(valid(h), s=2) * valid(valid(w), s=2)),
        ("counts 256 channels per position: the 256 channels form 32 capsules of 8 "
         "dimensions, so count 32 capsules per position, not 256 (x8 too many)",
         lambda h, w: valid(valid(h), s=2) * valid(valid(w), s=2) * 256),
        ("divides with / (true division): a convolution's output size is "
         "floor((n - k) / s) + 1, use //",
         lambda h, w: ((h - 8 - 9) / 2 + 1) * ((w - 8 - 9) / 2 + 1) * 32),
    ]
    for (h, w), text in [
            ((28, 28), "28x28 (Fashion-MNIST): 1152 capsules"),
            ((32, 32), "32x32: 2048 capsules"),
            ((40, 30), "40x30 (not square): 2688 capsules"),
            ((29, 29), "29x29 (odd: the stride-2 convolution rounds down): 1568 capsules")]:
        case = f"{h}x{w}"
        got = c.array(c.run(fn, h, w, case=case), case)
        want = _primary_capsules_reference(h, w)
        if got.size != 1:
            c.fail(f"count_primary_capsules returned shape {got.shape} for {case}: "
                   "it must return one number")
        value = got.item()
        if value != want:
            for message, variant in mistakes:
                if math.isclose(value, variant(h, w)):
                    c.fail(f"count_primary_capsules {message}")
            c.fail(f"count_primary_capsules({h}, {w}) returned {value}, expected {want}: "
                   "trace the sizes through conv1 (9x9, stride 1, valid) and the primary "
                   "capsules' convolution (9x9, stride 2, valid), 32 capsules per position")
        if got.dtype.kind not in "iu":
            c.fail(f"count_primary_capsules returns a float ({value!r}) for {case}: "
                   "return an int (use // and int(...))")
        c.ok(text)
    c.done()


# -- 5. prediction_vectors ----------------------------------------------------

def _predictions_reference(W, u):
    """capslib's DigitCapsules.predictions with the given W."""
    n_in, n_caps, dims, in_dims = W.shape
    layer = layers.DigitCapsules(n_caps, dims, dtype="float32")
    layer.build((None, n_in, in_dims))
    layer.W.assign(W)
    return keras.ops.convert_to_numpy(layer.predictions(u))


@_exercise_check
def check_prediction_vectors(fn, seed=0):
    """prediction_vectors(W, u): u_hat[b, i, j] = W[i, j] @ u[b, i]."""
    c = _Checker("prediction_vectors", reference="capslib's DigitCapsules")
    rng = np.random.default_rng(seed)

    def verify(n_in, n_caps, dims, in_dims, batch, gradient=False):
        W = rng.normal(size=(n_in, n_caps, dims, in_dims)).astype(np.float32)
        u = rng.normal(size=(batch, n_in, in_dims)).astype(np.float32)
        case = f"W {W.shape} and u {u.shape}"
        got = c.array(c.run(fn, W.copy(), u.copy(), case=case), case)
        want = _predictions_reference(W, u)
        mistakes = [
            ("puts the output axes in the wrong order (batch, n_caps, n_in, dims): "
             "u_hat must be (batch, n_in, n_caps, dims)",
             lambda: np.einsum("ijkd,bid->bjik", W, u)),
            ("sums over the children: keep one prediction per child i, "
             "shape (batch, n_in, n_caps, dims)",
             lambda: np.einsum("ijkd,bid->bjk", W, u)),
            ("uses the same W for every child: child i has its own matrices W[i, j]",
             lambda: np.einsum("jkd,bid->bijk", W[0], u)),
        ]
        if dims == in_dims:
            mistakes.insert(0, (
                "uses W transposed (W[i, j].T, contracting the wrong axis of W): "
                "u_hat[b, i, j] = W[i, j] @ u[b, i] sums over W's last axis (in_dims)",
                lambda: np.einsum("ijdk,bid->bijk", W, u)))
        c.compare(got, want, case, mistakes=mistakes,
                  shape_rule=f"expected (batch, n_in, n_caps, dims) = {want.shape}",
                  atol=1e-4)
        if gradient:  # the model trains W, and conv layers through u
            def reference(w, x):
                return ops.einsum("ijkd,bid->bijk", w, x)
            _check_gradient(c, lambda w: fn(w, u), W, [lambda w: reference(w, u)],
                            "with respect to W")
            _check_gradient(c, lambda x: fn(W, x), u, [lambda x: reference(W, x)],
                            "with respect to u")

    verify(3, 2, 4, 4, 2, gradient=True)
    c.ok("dims == in_dims: a transposed W would fit the shapes, not the values")
    verify(5, 2, 4, 3, 2)
    c.ok("small sizes: u_hat[b, i, j] = W[i, j] @ u[b, i]")
    verify(1152, 10, 16, 8, 2)
    c.ok("the paper's sizes: (2, 1152, 8) -> (2, 1152, 10, 16)")
    c.done()


# -- 6. routing ---------------------------------------------------------------

def _np_routing(u_hat, iterations, softmax_axis=2, accumulate=True, squash=True,
                return_s=False, extra_update=False, reset=False, agree_with="v"):
    """Routing by agreement in float64, with switches for the usual mistakes."""
    u = np.asarray(u_hat, np.float64)
    logits = np.zeros(u.shape[:3])
    for r in range(iterations):
        if reset:
            logits = np.zeros(u.shape[:3])
        c = _np_softmax(logits, softmax_axis)
        s = np.einsum("bij,bijk->bjk", c, u)
        v = _np_squash(s) if squash else s
        if r < iterations - 1 or extra_update:
            if agree_with == "children summed":  # one agreement for all children
                agreement = np.broadcast_to(
                    np.einsum("bijk,bjk->bj", u, v)[:, None], logits.shape)
            else:
                agreement = np.einsum("bijk,bjk->bij", u, {"v": v, "s": s}[agree_with])
            logits = logits + agreement if accumulate else agreement
    if extra_update:
        c = _np_softmax(logits, softmax_axis)
    return (s if return_s else v), c


def _wrong_order(names):
    """The message for a pair returned the wrong way round."""
    first, second = names
    return (f"returns ({second}, {first}), the pair in the wrong order: "
            f"return ({first}, {second})")


def _swap_pairs(values):
    """(a1, b1, a2, b2, ...) -> (b1, a1, b2, a2, ...)."""
    return tuple(x for i in range(0, len(values), 2) for x in values[i:i + 2][::-1])


def _routing_mistakes(u_hat, iterations_list):
    """(message, variant) pairs; a variant returns v and c for every iteration count."""
    def variant(**switches):
        return lambda: tuple(x for it in iterations_list
                             for x in _np_routing(u_hat, it, **switches))

    def rounds(delta):
        return lambda: tuple(x for it in iterations_list
                             for x in _np_routing(u_hat, max(it + delta, 1)))

    return [
        ("takes the softmax over the children (axis 1) instead of the parents "
         "(axis 2): each child's coupling coefficients must sum to 1 over the parents",
         variant(softmax_axis=1)),
        ("resets the logits b to zero inside the loop, so every round starts again "
         "from uniform couplings: set b to zeros once, before the loop, and add each "
         "round's agreement to it (b = b + agreement)", variant(reset=True)),
        ("does not accumulate the logits between rounds: b = agreement must be "
         "b = b + agreement", variant(accumulate=False)),
        ("computes the agreement with s instead of v: the agreement is u_hat · v with "
         "the squashed v = squash(s), ops.einsum('bijk,bjk->bij', u_hat, v)",
         variant(agree_with="s")),
        ("sums the agreement over the children (u_hat summed over i): each child i has "
         "its own agreement with parent j, u_hat[:, i, j] · v[:, j], "
         "ops.einsum('bijk,bjk->bij', u_hat, v)", variant(agree_with="children summed")),
        ("never squashes s: the parents are v = squash(s), and the agreement uses v",
         variant(squash=False)),
        ("returns s (the weighted sum) instead of v = squash(s)", variant(return_s=True)),
        ("returns c from one round too many: it makes an agreement update after the "
         "last round; return the c that made the final v", variant(extra_update=True)),
        ("runs one round too many (iterations off by one): run exactly `iterations` "
         "rounds", rounds(+1)),
        # b updated with the previous round's v gives the same results.
        ("runs one round too few (iterations off by one), or updates b with the "
         "previous round's v: run exactly `iterations` rounds, each one c = softmax(b), "
         "v = squash(s), then b = b + u_hat · v with the v just computed", rounds(-1)),
    ]


def _couplings_sum_to_one(gots):
    for c in gots[1::2]:
        if not np.allclose(np.sum(c, axis=2), 1.0, atol=1e-4):
            return ("returns coupling coefficients that do not sum to 1 over the parents "
                    "for each child: c = ops.softmax(b, axis=2)")
    return None


@_exercise_check
def check_routing(fn, seed=0):
    """routing(u_hat, iterations=3) -> (v, c), against capslib's routing_by_agreement."""
    c = _Checker("routing")
    rng = np.random.default_rng(seed)

    def verify(u_hat, iterations_list, case):
        batch, n_in, n_out, d = u_hat.shape
        gots, wants = (), ()
        for it in iterations_list:
            label = f"{case}, iterations={it}"
            gots += c.pair(c.run(fn, u_hat.copy(), it, case=label), label, ("v", "c"))
            wants += tuple(keras.ops.convert_to_numpy(x)
                           for x in caps_routing.routing_by_agreement(u_hat, it))
        c.compare(
            gots, wants, case,
            mistakes=[(_wrong_order("vc"), lambda: _swap_pairs(wants)),
                      *_routing_mistakes(u_hat, iterations_list)],
            names=tuple(f"{x} (iterations={it})" for it in iterations_list for x in "vc"),
            shape_rule=(f"expected v of shape (batch, n_out, d) = {(batch, n_out, d)}",
                        f"expected c of shape (batch, n_in, n_out) = {(batch, n_in, n_out)}"
                        ) * len(iterations_list),
            diagnose=_couplings_sum_to_one)

    u_hat = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)
    verify(u_hat, (1, 2, 3), "random u_hat (2, 6, 3, 4)")
    # The model trains through routing: a gradient must reach u_hat (through
    # every round, or only the last weighted sum as capslib does).
    _check_gradient(
        c, lambda x: fn(x, 3)[0], u_hat,
        [lambda x, stop=stop: caps_routing.routing_by_agreement(x, 3, stop)[0]
         for stop in (True, False)],
        "(of v with respect to u_hat)")
    for it in (1, 2, 3):
        c.ok(f"iterations={it}: v and c match capslib")
    default = c.pair(c.run(fn, u_hat.copy(), case="routing(u_hat) without iterations"),
                     "routing(u_hat) without iterations", ("v", "c"))
    want = caps_routing.routing_by_agreement(u_hat, 3)
    if not all(_matches(g, keras.ops.convert_to_numpy(w), 1e-4, 1e-5)
               for g, w in zip(default, want)):
        c.fail("routing(u_hat) without `iterations` differs from routing(u_hat, 3): "
               "the default must be iterations=3")
    c.ok("default: iterations=3")

    # Parent 0 hears (1, 0) from children 0 and 1 and the opposite from child 2;
    # parent 1 hears (0, 1) from children 0 and 2 and the opposite from child 1.
    # Routing couples child 1 to parent 0 (c = 0.74) and child 2 to parent 1.
    u_hat = np.zeros((1, 3, 2, 2), np.float32)
    u_hat[0, :, 0] = [[1, 0], [1, 0], [-1, 0]]
    u_hat[0, :, 1] = [[0, 1], [0, -1], [0, 1]]
    verify(u_hat, (3,), "the hand-made u_hat (1, 3, 2, 2)")
    c.ok("hand-made case: a child that agrees with a parent couples more to it")
    c.done()


# -- 7. margin_loss -----------------------------------------------------------

def _np_margin(t, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5, present_weight=1.0,
               absent_weight=None, reduce="sum", square=True, clip=True):
    """Margin loss in float64, with switches for the usual mistakes."""
    t, lengths = np.asarray(t, np.float64), np.asarray(lengths, np.float64)
    f = (lambda x: np.maximum(x, 0.0)) if clip else (lambda x: x)
    g = np.square if square else (lambda x: x)
    absent_weight = lambda_ if absent_weight is None else absent_weight
    terms = (present_weight * t * g(f(m_plus - lengths))
             + absent_weight * (1 - t) * g(f(lengths - m_minus)))
    per_example = terms.mean(-1) if reduce == "mean" else terms.sum(-1)
    return {"batch_mean": per_example.mean(), "batch_sum": per_example.sum()}.get(
        reduce, per_example)


@_exercise_check
def check_margin_loss(fn, seed=0):
    """margin_loss(targets, lengths, m_plus, m_minus, lambda_) -> one loss per example."""
    c = _Checker("margin_loss")
    rng = np.random.default_rng(seed)

    def verify(t, lengths, case, describe=None, **params):
        got = c.array(c.run(fn, t.copy(), lengths.copy(), case=case, **params), case)
        want = keras.ops.convert_to_numpy(losses.margin_loss(t, lengths, **params))
        m_plus, m_minus = params.get("m_plus", 0.9), params.get("m_minus", 0.1)
        lambda_ = params.get("lambda_", 0.5)

        def variant(t=t, **switches):
            kw = dict(m_plus=m_plus, m_minus=m_minus, lambda_=lambda_)
            return lambda: _np_margin(t, lengths, **{**kw, **switches})

        no_max = ("forgets max(0, ·) (ops.relu or ops.maximum): a true capsule longer "
                  "than m_plus or an absent one shorter than m_minus must cost exactly "
                  "0, not be penalised or rewarded with a negative loss")
        mistakes = [
            ("applies lambda_ to both terms: only the absent classes' term is "
             "multiplied by lambda_", variant(present_weight=lambda_)),
            ("applies lambda_ to the present class: lambda_ down-weights only the "
             "absent classes' term", variant(present_weight=lambda_, absent_weight=1.0)),
            ("averages over the classes: sum the per-class terms "
             "(ops.sum(..., axis=-1))", variant(reduce="mean")),
            ("returns the batch mean (one number): return one loss per example, "
             "shape (batch,)", variant(reduce="batch_mean")),
            ("returns the sum over the batch (one number): return one loss per "
             "example, shape (batch,)", variant(reduce="batch_sum")),
            ("forgets the square: each term is max(0, ...)^2", variant(square=False)),
            (no_max, variant(clip=False)),
            (no_max, variant(clip=False, square=False)),
            ("swaps m_plus and m_minus: the true class is pushed above m_plus (0.9), "
             "the absent ones below m_minus (0.1)", variant(m_plus=m_minus, m_minus=m_plus)),
            ("inverts the targets: T_k = 1 marks the true class (the m_plus term), "
             "0 the absent ones", variant(t=1.0 - t)),
        ]
        if params:
            mistakes.append(("ignores m_plus, m_minus or lambda_: use the arguments, "
                             "not fixed numbers", lambda: _np_margin(t, lengths)))

        def diagnose(gots):
            if np.min(gots[0]) < -1e-6:
                return "gives a negative loss: " + no_max
            if describe:
                i = int(np.argmax(np.abs(gots[0] - want)))
                return (f"gives {gots[0][i]:.4g} for the example '{describe[i]}', "
                        f"expected {want[i]:.4g}")
            return None

        c.compare(got, want, case, mistakes=mistakes, diagnose=diagnose,
                  shape_rule=f"it must return one loss per example, shape (batch,) = "
                             f"{want.shape}")

    cases = [  # (true class, lengths, description printed on success)
        (0, [0.9, 0.1, 0.1, 0.1], "true class at 0.9, the others at 0.1: loss 0"),
        (1, [0.0, 1.0, 0.0, 0.0], "true class at 1.0 (past m+), the others at 0: loss 0"),
        (2, [0.1, 0.1, 0.5, 0.1], "true class at 0.5: loss (0.9 - 0.5)^2 = 0.16"),
        (3, [0.1, 0.6, 0.1, 0.9], "an absent class at 0.6: loss 0.5 (0.6 - 0.1)^2 = 0.125"),
        (0, [0.5, 0.1, 0.6, 0.1], "both terms: 0.16 + 0.125 = 0.285"),
    ]
    t = np.eye(4, dtype=np.float32)[[k for k, _, _ in cases]]
    lengths = np.array([x for _, x, _ in cases], np.float32)
    texts = [text for _, _, text in cases]
    verify(t, lengths, "the hand-made batch (5, 4)", describe=texts)
    # The model trains through the loss: a gradient must reach the lengths (on
    # lengths away from m_plus and m_minus, where max(0, .) has no kink).
    grad_rng = np.random.default_rng(seed + 1)
    grad_t = np.eye(10, dtype=np.float32)[grad_rng.integers(0, 10, size=4)]
    grad_lengths = grad_rng.choice([0.05, 0.3, 0.5, 0.7, 0.95], size=(4, 10)).astype(
        np.float32)
    _check_gradient(c, lambda x: fn(grad_t, x), grad_lengths,
                    [lambda x: losses.margin_loss(grad_t, x)], "with respect to the lengths")
    for text in texts:
        c.ok(text)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=6)]
    lengths = rng.uniform(0.0, 1.0, size=(6, 10)).astype(np.float32)
    verify(t, lengths, "a random batch (6, 10)")
    c.ok("a random batch (6, 10)")
    verify(t, lengths, "a random batch (6, 10) with m_plus=0.8, m_minus=0.2, lambda_=0.25",
           m_plus=0.8, m_minus=0.2, lambda_=0.25)
    c.ok("other m_plus, m_minus and lambda_ are used")
    c.done()


# -- 8. capsule_lengths -------------------------------------------------------

@_exercise_check
def check_capsule_lengths(fn, seed=0):
    """capsule_lengths(poses) -> (batch, n_caps), like capslib.ops.safe_norm."""
    c = _Checker("capsule_lengths")
    rng = np.random.default_rng(seed)
    nan_grad = ("gives a NaN gradient at a zero capsule: put a small epsilon inside the "
                "square root, ops.sqrt(ops.sum(ops.square(poses), axis=-1) + epsilon) "
                "(like capslib.ops.safe_norm)")

    def verify(poses, case, atol=1e-5):
        got = c.array(c.run(fn, poses.copy(), case=case), case)
        want = keras.ops.convert_to_numpy(caps_ops.safe_norm(poses, axis=-1))
        c.compare(
            got, want, case,
            mistakes=[
                ("computes the norm over the wrong axis (over the capsules, axis 1): a "
                 "capsule's length is the norm of its own pose, axis=-1",
                 lambda: _np_norm(poses, axis=1)),
                ("returns the squared length: take the square root (ops.sqrt)",
                 lambda: np.sum(np.square(poses, dtype=np.float64), axis=-1)),
                ("applies a softmax to the lengths: the lengths themselves are the "
                 "class scores", lambda: _np_softmax(_np_norm(poses), axis=-1)),
            ],
            shape_rule=f"expected (batch, n_caps) = {want.shape} (no keepdims)",
            atol=atol)

    verify(rng.normal(0, 0.3, size=(3, 10, 16)).astype(np.float32),
           "class capsules (3, 10, 16)")
    c.ok("a batch of class capsules (3, 10, 16)")
    verify(rng.normal(0, 0.3, size=(2, 5, 5)).astype(np.float32), "poses (2, 5, 5)")
    c.ok("as many capsules as dimensions (2, 5, 5)")
    poses = rng.normal(0, 0.3, size=(2, 4, 3)).astype(np.float32)
    poses[0, 1] = 0.0
    # Epsilons differ between students: the zero capsule's length only needs
    # to be about 0.
    verify(poses, "poses (2, 4, 3) with a zero capsule", atol=1e-3)
    if not np.all(np.isfinite(_gradient(fn, poses, f"your {c.name}"))):
        c.fail("capsule_lengths " + nan_grad)
    c.ok("zero capsule: a length of about 0 and a finite gradient")
    poses = rng.normal(0, 0.3, size=(2, 4, 3)).astype(np.float32)
    _check_gradient(c, fn, poses, [lambda p: caps_ops.safe_norm(p, axis=-1)],
                    "on random poses (2, 4, 3)")
    c.ok("its gradient matches capslib's")
    c.done()


# -- 9. mask_poses ------------------------------------------------------------

@_exercise_check
def check_mask_poses(fn, seed=0):
    """mask_poses(poses, labels) -> (batch, n_caps * dims), like capslib's Mask.

    NumPy is accepted here (no gradient check): the course's own answer in
    05_decoder is written with NumPy and the notebook uses mask_poses only on
    NumPy arrays, to draw; the model masks with capslib's Mask layer.
    """
    c = _Checker("mask_poses", reference="capslib's Mask")
    rng = np.random.default_rng(seed)

    def verify(poses, labels, case):
        batch, n_caps, dims = poses.shape
        got = c.array(c.run(fn, poses.copy(), labels.copy(), case=case), case)
        # float32 whatever the global dtype policy (a notebook may set mixed precision).
        want = keras.ops.convert_to_numpy(
            layers.Mask(dtype="float32")(poses, labels=labels))
        keep = np.eye(n_caps)[labels][:, :, None]
        c.compare(
            got, want, case,
            mistakes=[
                ("does not flatten: reshape the masked poses to (batch, n_caps * dims)",
                 lambda: poses * keep),
                ("inverts the mask: it keeps every capsule except the label's; keep only "
                 "capsule `label`", lambda: (poses * (1 - keep)).reshape(batch, -1)),
                ("flattens in the wrong order (pose dimensions before capsules): reshape "
                 "(batch, n_caps, dims) directly, without transposing",
                 lambda: (poses * keep).transpose(0, 2, 1).reshape(batch, -1)),
                ("keeps pose dimension `label` of every capsule instead of capsule "
                 "`label`: the one-hot mask selects along the capsule axis, shape "
                 "(batch, n_caps, 1)",
                 lambda: (poses * np.eye(dims)[labels][:, None, :]).reshape(batch, -1)),
            ],
            shape_rule=f"expected (batch, n_caps * dims) = {want.shape}")

    verify(rng.normal(size=(3, 4, 5)).astype(np.float32), np.array([2, 0, 3]),
           "poses (3, 4, 5) with labels [2, 0, 3]")
    c.ok("poses (3, 4, 5): only the label's capsule kept, flattened capsule by capsule")
    verify(rng.normal(size=(2, 10, 16)).astype(np.float32),
           np.array([9, 0], np.int32), "poses (2, 10, 16) with int32 labels [9, 0]")
    c.ok("the paper's class capsules (2, 10, 16), first and last class")
    c.done()


# -- 10. reconstruction_loss --------------------------------------------------

@_exercise_check
def check_reconstruction_loss(fn, seed=0):
    """reconstruction_loss(images, reconstructions) -> sum of squared errors per image."""
    c = _Checker("reconstruction_loss")
    rng = np.random.default_rng(seed)

    def verify(images, reconstructions, case):
        got = c.array(c.run(fn, images.copy(), reconstructions.copy(), case=case), case)
        want = keras.ops.convert_to_numpy(
            losses.reconstruction_loss(images, reconstructions))
        diff = (images.astype(np.float64) - reconstructions).reshape(len(images), -1)
        sse = np.sum(diff ** 2, axis=-1)
        no_square = "forgets the square (absolute error): sum the squared pixel errors"
        c.compare(
            got, want, case,
            mistakes=[
                (f"averages over the pixels ({diff.shape[1]} times smaller): sum the "
                 "squared errors over the pixels", lambda: np.mean(diff ** 2, axis=-1)),
                ("returns the batch mean (one number): return one loss per image, "
                 "shape (batch,)", lambda: np.mean(sse)),
                ("sums over the whole batch (one number): sum over each image's pixels "
                 "only, one loss per image", lambda: np.sum(sse)),
                (no_square, lambda: np.sum(np.abs(diff), axis=-1)),
                (no_square, lambda: np.sum(diff, axis=-1)),
                ("takes the square root of the sum (a distance, not a squared error): "
                 "return the sum of squared errors itself", lambda: np.sqrt(sse)),
            ],
            shape_rule=f"it must return one loss per image, shape (batch,) = {want.shape}")

    images = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    reconstructions = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    verify(images, reconstructions, "images (3, 28, 28, 1)")
    # The decoder trains through this loss: a gradient must reach the reconstructions.
    _check_gradient(c, lambda r: fn(images, r), reconstructions,
                    [lambda r: losses.reconstruction_loss(images, r)],
                    "with respect to the reconstructions")
    c.ok("images (3, 28, 28, 1): one sum of squared errors per image")
    verify(images.reshape(3, 784), reconstructions.reshape(3, 784), "flat images (3, 784)")
    c.ok("flat images (3, 784)")
    verify(images, images.copy(), "a perfect reconstruction")
    c.ok("a perfect reconstruction: loss 0")
    c.done()


# -- 11. best_epoch -----------------------------------------------------------

def _history(val_loss, val_acc, loss, val_lengths_loss):
    """A history shaped like capslib.train.read_log's (0-based 'epoch' column)."""
    n = len(val_loss)
    return {
        "epoch": [float(e) for e in range(n)],
        "lengths_accuracy": list(np.linspace(0.75, 0.92, n)),
        "loss": list(loss),
        "val_lengths_accuracy": list(val_acc),
        "val_lengths_loss": list(val_lengths_loss),
        "val_loss": list(val_loss),
    }


@_exercise_check
def check_best_epoch(fn, seed=0):
    """best_epoch(history): 1-based epoch of the lowest val_loss (first on ties)."""
    c = _Checker("best_epoch")
    rng = np.random.default_rng(seed)

    def verify(history, case):
        arg = {k: list(v) for k, v in history.items()}
        got = c.array(c.run(fn, arg, case=case), case)
        if got.size != 1:
            c.fail(f"best_epoch returned shape {got.shape} for {case}: it must return "
                   "one epoch number")
        value = got.item()
        val_loss = np.array(history["val_loss"])
        want = int(np.argmin(val_loss)) + 1
        if value != want:
            mistakes = [
                ("returns the loss value instead of the epoch number: return the "
                 "(1-based) epoch at which the lowest 'val_loss' occurs",
                 float(np.min(val_loss))),
                ("returns a 0-based epoch (a list index, or history['epoch'], which "
                 "counts from 0): the course numbers epochs from 1, add 1", want - 1),
                ("picks the epoch with the highest validation loss: use the lowest "
                 "(argmin)", int(np.argmax(val_loss)) + 1),
                ("chose the epoch with the best validation accuracy; the course selects "
                 "on validation loss (history['val_loss'])",
                 int(np.argmax(history["val_lengths_accuracy"])) + 1),
                ("selects on the training loss ('loss'): select on the validation loss "
                 "('val_loss')", int(np.argmin(history["loss"])) + 1),
                ("selects on 'val_lengths_loss' (the margin loss alone): select on "
                 "'val_loss', the total validation loss",
                 int(np.argmin(history["val_lengths_loss"])) + 1),
                ("always returns the last epoch: return the epoch with the lowest "
                 "'val_loss'", len(val_loss)),
                ("picks the last of tied epochs: on ties take the first (np.argmin does)",
                 len(val_loss) - int(np.argmin(val_loss[::-1]))),
            ]
            for message, variant in mistakes:
                if variant != want and math.isclose(value, variant):
                    c.fail(f"best_epoch {message}")
            c.fail(f"best_epoch returned {value!r} for {case}, expected epoch {want} "
                   "(the first epoch with the lowest 'val_loss', counted from 1)")
        if got.dtype.kind not in "iu":
            c.fail(f"best_epoch returns a float ({value!r}) for {case}: return the epoch "
                   "as an int, e.g. int(np.argmin(...)) + 1")

    # Every wrong rule picks another epoch here: highest val_loss 1, 0-based 2,
    # right 3, best val accuracy 4, last tie 5, lowest training loss 6,
    # lowest val_lengths_loss 7, last 8.
    verify(_history(val_loss=[0.80, 0.55, 0.42, 0.47, 0.42, 0.50, 0.61, 0.58],
                    val_acc=[0.70, 0.80, 0.84, 0.86, 0.85, 0.83, 0.82, 0.81],
                    loss=[1.00, 0.60, 0.45, 0.38, 0.33, 0.30, 0.31, 0.32],
                    val_lengths_loss=[0.50, 0.40, 0.33, 0.34, 0.32, 0.31, 0.29, 0.30]),
           "the hand-made history of 8 epochs")
    c.ok("8 epochs with a tie: the first epoch with the lowest val_loss (3)")
    n = 8
    verify(_history(val_loss=rng.uniform(0.1, 0.5, n), val_acc=rng.uniform(0.8, 0.9, n),
                    loss=rng.uniform(0.1, 0.5, n), val_lengths_loss=rng.uniform(0.1, 0.5, n)),
           "a random history of 8 epochs")
    c.ok("a random history of 8 epochs")
    verify(_history([0.3], [0.8], [0.4], [0.2]), "a history of one epoch")
    c.ok("a single epoch: 1")
    c.done()


# -- 12. two_proportion_z_test ------------------------------------------------

def _z_test(acc_1, n_1, acc_2, n_2, se="pooled", tail="two", sign=1.0):
    """Two-proportion z-test in pure Python, with switches for the usual mistakes."""
    p = (acc_1 * n_1 + acc_2 * n_2) / (n_1 + n_2)
    variance = {
        "pooled": p * (1 - p) * (1 / n_1 + 1 / n_2),
        "unpooled": acc_1 * (1 - acc_1) / n_1 + acc_2 * (1 - acc_2) / n_2,
        "first only": p * (1 - p) / n_1,
        "second only": p * (1 - p) / n_2,
    }
    if se == "no sqrt":
        z = (acc_1 - acc_2) / variance["pooled"]
    else:
        z = (acc_1 - acc_2) / math.sqrt(variance[se])
    two_sided = math.erfc(abs(z) / math.sqrt(2))
    p_value = {
        "two": two_sided,
        "one": two_sided / 2,
        "one signed": math.erfc(z / math.sqrt(2)) / 2,
        "complement": 1 - two_sided,
        "no abs": math.erfc(z / math.sqrt(2)),
    }[tail]
    return np.float64(sign * z if sign else abs(z)), np.float64(p_value)


@_exercise_check
def check_two_proportion_z_test(fn, seed=0):
    """two_proportion_z_test(acc_1, n_1, acc_2, n_2) -> (z, p), pooled, two-sided."""
    c = _Checker("two_proportion_z_test", reference="the pooled two-sided z-test")
    rng = np.random.default_rng(seed)

    def verify(acc_1, n_1, acc_2, n_2, case):
        args = (acc_1, n_1, acc_2, n_2)
        got = c.pair(c.run(fn, *args, case=case), case, ("z", "p"))
        for x, name in zip(got, "zp"):
            if x.size != 1:
                c.fail(f"two_proportion_z_test returned {name} of shape {x.shape} for "
                       f"{case}: {name} must be one number")
        got = tuple(np.float64(x.item()) for x in got)
        one_sample = ("uses the variance of one sample only: the standard error counts "
                      "both, sqrt(p (1 - p) (1/n_1 + 1/n_2))")
        one_sided = ("returns a one-sided p-value (half the two-sided one): the test is "
                     "two-sided, p = erfc(|z| / sqrt(2))")
        c.compare(
            got, _z_test(*args), case, names=("z", "p"),
            mistakes=[
                (_wrong_order("zp"), lambda: _z_test(*args)[::-1]),
                (one_sided, lambda: _z_test(*args, tail="one")),
                (one_sided, lambda: _z_test(*args, tail="one signed")),
                ("uses the unpooled standard error: under the null hypothesis both "
                 "accuracies are equal, so pool them, p = (acc_1 n_1 + acc_2 n_2) / "
                 "(n_1 + n_2)", lambda: _z_test(*args, se="unpooled")),
                ("treats the accuracies as percentages (divides them by 100): they are "
                 "fractions in [0, 1]",
                 lambda: _z_test(acc_1 / 100, n_1, acc_2 / 100, n_2)),
                ("forgets the square root in the standard error: se = sqrt(p (1 - p) "
                 "(1/n_1 + 1/n_2))", lambda: _z_test(*args, se="no sqrt")),
                (one_sample, lambda: _z_test(*args, se="first only")),
                (one_sample, lambda: _z_test(*args, se="second only")),
                ("returns the p-value of the wrong tail (1 - p): p = erfc(|z| / sqrt(2)) "
                 "is small when |z| is large", lambda: _z_test(*args, tail="complement")),
                ("returns a p-value of the wrong tail, above 1 for a negative z: use "
                 "|z|, p = erfc(|z| / sqrt(2))", lambda: _z_test(*args, tail="no abs")),
                ("returns |z|: keep the sign, z = (acc_1 - acc_2) / se is negative when "
                 "acc_1 < acc_2", lambda: _z_test(*args, sign=0.0)),
                ("computes acc_2 - acc_1: z = (acc_1 - acc_2) / se",
                 lambda: _z_test(*args, sign=-1.0)),
            ],
            hint=(" Keep the accuracies as fractions in [0, 1] (percentages make "
                  "p (1 - p) negative)."),
            rtol=1e-3, atol=1e-7)

    verify(0.8718, 5000, 0.8499, 10000, "acc 0.8718 on 5000 vs 0.8499 on 10000")
    c.ok("0.8718 on 5000 images vs 0.8499 on 10000: z and p match")
    verify(0.9, 2000, 0.9, 8000, "equal accuracies 0.9 on 2000 and 8000")
    c.ok("equal accuracies: z = 0 and p = 1")
    verify(0.8499, 10000, 0.8718, 5000, "acc 0.8499 on 10000 vs 0.8718 on 5000")
    c.ok("acc_1 < acc_2: a negative z, the same p")
    verify(float(rng.uniform(0.8, 0.9)), int(rng.integers(1000, 10000)),
           float(rng.uniform(0.8, 0.9)), int(rng.integers(1000, 10000)),
           "random accuracies and sizes")
    c.ok("random accuracies and sizes")
    c.done()


# -- 13. tweak_pose -----------------------------------------------------------

def _tweak_reference(poses, label, dim, steps):
    out = np.repeat(np.asarray(poses, np.float64)[None], len(steps), axis=0)
    out[:, label, dim] += np.asarray(steps, np.float64)
    return out


@_exercise_check
def check_tweak_pose(fn, seed=0):
    """tweak_pose(poses, label, dim, steps): one copy per step, poses[label, dim] += step."""
    c = _Checker("tweak_pose", reference="the expected copies")
    rng = np.random.default_rng(seed)

    def verify(poses, label, dim, steps, case):
        arg = poses.copy()
        got = c.array(c.run(fn, arg, label, dim, steps, case=case), case)
        if not np.array_equal(arg, poses):
            c.fail("tweak_pose modifies the input poses in place: tweak copies "
                   "(poses.copy()) and leave poses unchanged")
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

        same_copy = ("returns the same array for every step (one array modified again "
                     "and again): make a fresh copy of poses for each step")
        mistakes = [
            ("tweaks dimension `dim` of every capsule: change only capsule `label`, "
             "poses[label, dim]", lambda: tweak(label, dim, steps_, every_capsule=True)),
            ("sets poses[label, dim] to the step instead of adding it: use += step",
             lambda: tweak(label, dim, steps_, set_=True)),
            ("lets the steps accumulate: start every copy from the original poses",
             lambda: tweak(label, dim, np.cumsum(steps_))),
            (same_copy, lambda: np.repeat(want[-1:], n, axis=0)),
            (same_copy, lambda: np.repeat(tweak(label, dim, np.cumsum(steps_))[-1:], n, 0)),
        ]
        if dim < poses.shape[0] and label < poses.shape[1]:
            mistakes.insert(0, ("swaps label and dim: the capsule comes first, "
                                "poses[label, dim]", lambda: tweak(dim, label, steps_)))
        c.compare(got, want, case, mistakes=mistakes,
                  shape_rule=f"expected (len(steps), n_caps, dims) = {want.shape}")

    verify(rng.normal(size=(10, 16)).astype(np.float32), 3, 5,
           np.linspace(-0.25, 0.5, 4), "poses (10, 16), label 3, dim 5, 4 steps")
    c.ok("poses (10, 16), 4 steps: only capsule 3, dimension 5 moves")
    verify(rng.normal(size=(10, 16)).astype(np.float32), 9, 15, [0.1, -0.2],
           "poses (10, 16), label 9, dim 15, steps given as a list")
    c.ok("the last capsule and dimension, steps given as a list")
    c.done()


# -- 14. confusion_matrix -----------------------------------------------------

def _confusion_reference(y_true, y_pred, n_classes):
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


@_exercise_check
def check_confusion_matrix(fn, seed=0):
    """confusion_matrix(y_true, y_pred, n_classes=10): counts, rows = true classes."""
    c = _Checker("confusion_matrix", reference="the expected counts")
    rng = np.random.default_rng(seed)

    def verify(y_true, y_pred, n_classes, case):
        kwargs = {} if n_classes is None else {"n_classes": n_classes}
        n_classes = n_classes or 10
        got = c.array(c.run(fn, y_true.copy(), y_pred.copy(), case=case, **kwargs), case)
        if got.ndim == 2 and got.shape[0] == got.shape[1] and got.shape[0] < n_classes:
            c.fail(f"confusion_matrix returned shape {got.shape} for {case}: classes are "
                   "missing (built from the classes present); every one of the "
                   f"n_classes = {n_classes} classes needs a row and a column, even absent")
        want = _confusion_reference(y_true, y_pred, n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = want / want.sum(axis=1, keepdims=True)
        normalised = ("normalises the rows to shares: return the counts "
                      "(integers) themselves")
        c.compare(
            got, want, case,
            mistakes=[
                ("is transposed (rows are the predictions): rows must be the true "
                 "classes and columns the predictions, cm[true, pred] += 1",
                 lambda: want.T),
                (normalised, lambda: shares),
                (normalised, lambda: np.nan_to_num(shares)),
                ("counts only the diagonal (the correct predictions): count every "
                 "(true, predicted) pair", lambda: np.diag(np.diag(want))),
            ],
            shape_rule=f"expected (n_classes, n_classes) = {want.shape}",
            dtype="integer",
            dtype_rule="count with integers, e.g. np.zeros((n_classes, n_classes), "
                       "dtype=int)",
            rtol=0, atol=0)

    verify(np.array([0, 1, 1, 2, 2, 2]), np.array([0, 2, 1, 2, 0, 2]), 4,
           "6 labels of 4 classes (class 3 absent)")
    c.ok("6 labels, n_classes=4: rows are true classes, class 3 a row and column of zeros")
    y_true = rng.integers(0, 8, size=40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, 8, size=40))
    verify(y_true, y_pred, None, "40 random labels of classes 0-7, default n_classes")
    c.ok("40 random labels, classes 8 and 9 absent, default n_classes=10")
    c.done()


# -- 15. coupling_entropy -------------------------------------------------------

@_exercise_check
def check_coupling_entropy(fn, seed=0):
    """coupling_entropy(c) -> entropy in nats over the last axis, like capslib.routing."""
    c = _Checker("coupling_entropy", reference="capslib.routing.coupling_entropy")
    rng = np.random.default_rng(seed)

    def verify(couplings, case):
        got = c.array(c.run(fn, couplings.copy(), case=case), case)
        want = caps_routing.coupling_entropy(couplings)
        p = couplings.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = p * np.log(p)
            c.compare(
                got, want, case,
                mistakes=[
                    ("uses log base 2 (bits): use the natural log, np.log, so that "
                     "uniform couplings over 10 parents give log 10 = 2.303",
                     lambda: want / np.log(2)),
                    ("has the wrong sign: the entropy is -sum(c * log c), which is >= 0",
                     lambda: -want),
                    ("takes the mean over the parents instead of the sum",
                     lambda: want / p.shape[-1]),
                    ("sums over the wrong axis (the children, axis 1): each child's "
                     "couplings are along the last axis, axis=-1",
                     lambda: -np.nansum(plogp, axis=1)),
                ],
                shape_rule=f"expected one entropy per child, {want.shape} (axis=-1 "
                           "summed away, no keepdims)",
                hint=(" A coupling of exactly 0 gives 0 * log(0) = 0 * -inf = NaN: count "
                      "those terms as 0, e.g. np.where(c > 0, c * np.log(c), 0) or "
                      "np.log(np.maximum(c, 1e-12))."))

    verify(np.full((2, 3, 10), 0.1, np.float32), "uniform couplings (2, 3, 10)")
    c.ok("uniform couplings over 10 parents: log 10 = 2.303 for every child")
    one_hot = np.zeros((1, 4, 5), np.float32)
    one_hot[0, np.arange(4), [0, 2, 4, 1]] = 1.0
    verify(one_hot, "one-hot couplings (1, 4, 5)")
    c.ok("a child sending everything to one parent: 0 (no NaN)")
    logits = rng.normal(0, 2, size=(3, 6, 10))
    random_c = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    verify(random_c.astype(np.float32), "random couplings (3, 6, 10)")
    c.ok("random couplings (3, 6, 10): one entropy per child, shape (3, 6)")
    c.done()


# -- 16. accuracy_interval ------------------------------------------------------

@_exercise_check
def check_accuracy_interval(fn, seed=0):
    """accuracy_interval(accuracy, n, z=1.96) -> (low, high), like capslib.stats."""
    c = _Checker("accuracy_interval", reference="capslib.stats.accuracy_interval")

    def verify(accuracy, n, case, **kwargs):
        got = c.pair(c.run(fn, accuracy, n, case=case, **kwargs), case, ("low", "high"))
        want = tuple(np.float64(v) for v in stats.accuracy_interval(accuracy, n, **kwargs))
        z = kwargs.get("z", 1.96)
        se = math.sqrt(accuracy * (1 - accuracy) / n)
        c.compare(
            got, want, case,
            mistakes=[
                (_wrong_order(("low", "high")), lambda: want[::-1]),
                ("forgets the square root: the standard error is "
                 "sqrt(accuracy * (1 - accuracy) / n)",
                 lambda: (np.float64(accuracy - z * se ** 2), np.float64(accuracy + z * se ** 2))),
                ("forgets z: the half-width is z * standard error (1.96 for 95%)",
                 lambda: (np.float64(accuracy - se), np.float64(accuracy + se))),
                ("divides by n outside the square root: sqrt(accuracy * (1 - accuracy)) / n "
                 "is too small; use sqrt(accuracy * (1 - accuracy) / n)",
                 lambda: (np.float64(accuracy - z * math.sqrt(accuracy * (1 - accuracy)) / n),
                          np.float64(accuracy + z * math.sqrt(accuracy * (1 - accuracy)) / n))),
                ("does not clip to [0, 1]: an accuracy cannot be below 0 or above 1 "
                 "(use max(0.0, low) and min(1.0, high))",
                 lambda: (np.float64(accuracy - z * se), np.float64(accuracy + z * se))),
                ("uses the standard error of the number of correct images, "
                 "sqrt(n * accuracy * (1 - accuracy)): divide by n inside the square root",
                 lambda: (np.float64(max(0.0, accuracy - z * math.sqrt(n * accuracy * (1 - accuracy)))),
                          np.float64(min(1.0, accuracy + z * math.sqrt(n * accuracy * (1 - accuracy)))))),
                ("ignores the z argument: use it instead of a fixed 1.96",
                 lambda: tuple(np.float64(v) for v in stats.accuracy_interval(accuracy, n))),
            ],
            names=("low", "high"), dtype=None, rtol=1e-6, atol=1e-9)

    verify(0.8, 10_000, "accuracy 0.8 on 10,000 images")
    c.ok("0.8 on 10,000 images: (0.7922, 0.8078)")
    verify(0.75, 400, "accuracy 0.75 on 400 images, z=2.576", z=2.576)
    c.ok("0.75 on 400 images with z = 2.576 (99%): a wider interval")
    verify(0.99, 50, "accuracy 0.99 on 50 images")
    c.ok("0.99 on 50 images: clipped at 1")
    c.done()
