"""Notebook 02_primary_capsules' checks: ``check_squash`` (values, the zero
vector and the gradient) and ``check_count_primary_capsules`` (the sizes through
conv1 and the primary capsules' convolution)."""
import math
import re

import keras
import numpy as np

from capslib import layers
from capslib import ops as caps_ops
from capslib.checks._core import (_, _check_gradient, _Checker, _exercise_check, _gradient,
                                  _np_squash)


# -- 3. squash ----------------------------------------------------------------

_SHAPE_ERROR = re.compile(r"incompatible shapes|broadcast|dimensions must be equal",
                          re.IGNORECASE)



@_exercise_check
def check_squash(fn, seed=0):
    """squash(s, axis=-1, epsilon=1e-7) with keras.ops, against capslib.ops.squash."""
    c = _Checker("squash")
    rng = np.random.default_rng(seed)
    epsilon_hint = (_(" Compute the norm as sqrt(|s|^2 + epsilon), with epsilon inside "
                      "the square root."))

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
            return (_("squash sums the squares without keepdims=True: on an input of "
                      "shape {shape}, |s|^2 gets shape {summed} "
                      "instead of {kept} and does not "
                      "line up with s; use ops.sum(ops.square(s), axis=axis, keepdims=True)",
                      shape=s.shape, summed=np.sum(s, axis=a).shape,
                      kept=np.sum(s, axis=a, keepdims=True).shape))

        got = c.array(c.run(fn, s, case=case, explain_error=shape_error, **kwargs), case)
        eps = 1e-7 if epsilon is None else epsilon
        has_zero = not np.all(np.any(s, axis=a))
        wrong_axis = (_("computes the norm over the wrong axis: use the `axis` argument, "
                        "ops.sum(ops.square(s), axis=axis, keepdims=True)"))
        c.compare(
            got, keras.ops.convert_to_numpy(caps_ops.squash(s, **kwargs)), case,
            mistakes=[(wrong_axis, lambda ax=ax: _np_squash(s, axis=ax))
                      for ax in (*range(s.ndim), None) if ax != a % s.ndim] + [
                (_("misses the squares in the scale: it must be |s|^2 / (1 + |s|^2), "
                   "not |s| / (1 + |s|)"), lambda: _np_squash(s, a, square=False)),
                (_("does not normalise the direction: divide s by its norm |s| too "
                   "(v = |s|^2 / (1 + |s|^2) * s / |s|)"),
                 lambda: _np_squash(s, a, normalise=False)),
                (_("divides s by its squared norm |s|^2 instead of its norm |s|: "
                   "v = |s|^2 / (1 + |s|^2) * s / |s|, with |s| = sqrt(|s|^2 + epsilon)"),
                 lambda: _np_squash(s, a, epsilon=eps, by_squared=True)),
                *([(_("returns NaN for the zero vector: it divides by |s| = 0.") + epsilon_hint,
                     lambda: _np_squash(s, a, epsilon=0.0))] if has_zero else []),
                (_("puts epsilon outside the square root (under JAX its gradient at the "
                   "zero vector is NaN): put epsilon inside the square root, "
                   "sqrt(|s|^2 + epsilon), not sqrt(|s|^2) + epsilon"),
                 lambda: _np_squash(s, a, epsilon=eps, outside=True)),
                (_("ignores the `epsilon` argument: compute the norm as "
                   "sqrt(|s|^2 + epsilon) with the epsilon it is given"),
                 lambda: _np_squash(s, a)),
            ],
            shape_rule=_("it must keep the input's shape {shape} (keepdims=True in the sum)",
                         shape=s.shape),
            dtype=np.float32,
            dtype_rule=_("keep the input's dtype float32 (no float64 constants or casts)"),
            hint=epsilon_hint if has_zero else "")

    directions = rng.normal(size=(3, 8))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    s = (directions * np.array([[0.1], [1.0], [10.0]])).astype(np.float32)
    verify(s, _("vectors of length 0.1, 1 and 10 (shape (3, 8))"))
    c.ok(_("short, unit and long vectors: same direction, length |s|^2 / (1 + |s|^2)"))
    verify(rng.normal(size=(4, 1152, 8)).astype(np.float32), _("input (4, 1152, 8)"))
    c.ok(_("a batch of primary capsules (4, 1152, 8)"))
    verify(rng.normal(size=(5, 3, 4)).astype(np.float32), _("axis=1 on a (5, 3, 4) input"),
           axis=1)
    c.ok(_("axis=1 on a (5, 3, 4) input"))

    zero = np.zeros((2, 8), np.float32)
    zero[1] = rng.normal(size=8)
    verify(zero, _("the zero vector (first row of a (2, 8) input)"))
    grad = _gradient(fn, zero, _("your {name}", name=c.name))
    if not np.all(np.isfinite(grad)):
        c.fail(_("squash has a finite value at the zero vector but a NaN or inf gradient "
                 "there: put epsilon inside the square root, sqrt(|s|^2 + epsilon), and "
                 "compute every norm that way (no ops.norm, no ops.where around a division "
                 "by |s|: its other branch still poisons the gradient)"))
    c.ok(_("zero vector: value 0 and a finite gradient"))

    # A large epsilon tells sqrt(|s|^2 + epsilon) from sqrt(|s|^2) + epsilon on
    # every backend: TensorFlow's gradient at the zero vector stays finite for
    # the latter (JAX's does not), so the check above misses it there.
    verify((directions[:2] * np.array([[0.5], [2.0]])).astype(np.float32),
           _("vectors of length 0.5 and 2 with epsilon=1"), epsilon=1.0)
    c.ok(_("epsilon=1: epsilon sits inside the square root"))

    s = rng.normal(size=(3, 8)).astype(np.float32)
    _check_gradient(c, fn, s, [caps_ops.squash], _("on random (3, 8) vectors"))
    c.ok(_("its gradient matches capslib's"))
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
        (_("forgets the stride 2 of the primary capsules' convolution: its output is "
           "(n - 9) // 2 + 1 positions per side"),
         lambda h, w: valid(valid(h)) * valid(valid(w)) * 32),
        (_("uses 'same' padding: the paper's convolutions are 'valid' (no padding), so "
           "each 9x9 kernel shrinks the image"),
         lambda h, w: same(same(h), 2) * same(same(w), 2) * 32),
        (_("forgets conv1 (or pads one convolution): the 9x9 conv1 first shrinks the "
           "image by 8 before the primary capsules' convolution"),
         lambda h, w: valid(h, s=2) * valid(w, s=2) * 32),
        (_("counts positions only: every position holds 32 capsules (one per map), "
           "multiply by 32"),
         lambda h, w: valid(valid(h), s=2) * valid(valid(w), s=2)),
        (_("counts 256 channels per position: the 256 channels form 32 capsules of 8 "
           "dimensions, so count 32 capsules per position, not 256 (x8 too many)"),
         lambda h, w: valid(valid(h), s=2) * valid(valid(w), s=2) * 256),
        (_("divides with / (true division): a convolution's output size is "
           "floor((n - k) / s) + 1, use //"),
         lambda h, w: ((h - 8 - 9) / 2 + 1) * ((w - 8 - 9) / 2 + 1) * 32),
    ]
    for (h, w), text in [
            ((28, 28), _("28x28 (Fashion-MNIST): 1152 capsules")),
            ((32, 32), _("32x32: 2048 capsules")),
            ((40, 30), _("40x30 (not square): 2688 capsules")),
            ((29, 29), _("29x29 (odd: the stride-2 convolution rounds down): 1568 capsules"))]:
        case = f"{h}x{w}"
        got = c.array(c.run(fn, h, w, case=case), case)
        want = _primary_capsules_reference(h, w)
        if got.size != 1:
            c.fail(_("count_primary_capsules returned shape {shape} for {case}: "
                     "it must return one number", shape=got.shape, case=case))
        value = got.item()
        if value != want:
            for message, variant in mistakes:
                if math.isclose(value, variant(h, w)):
                    c.fail(_("count_primary_capsules {message}", message=message))
            c.fail(_("count_primary_capsules({h}, {w}) returned {value}, expected {want}: "
                     "trace the sizes through conv1 (9x9, stride 1, valid) and the primary "
                     "capsules' convolution (9x9, stride 2, valid), 32 capsules per position",
                     h=h, w=w, value=value, want=want))
        if got.dtype.kind not in "iu":
            c.fail(_("count_primary_capsules returns a float ({value!r}) for {case}: "
                     "return an int (use // and int(...))", value=value, case=case))
        c.ok(text)
    c.done()
