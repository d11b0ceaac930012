"""Notebook 08_does_routing_help's checks: ``check_coupling_entropy`` (of each
child's couplings, in nats) and ``check_accuracy_interval`` (the normal
approximation, clipped to [0, 1])."""
import math

import numpy as np

from capslib import stats
from capslib import routing as caps_routing
from capslib.checks._core import _, _Checker, _exercise_check, _wrong_order


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
                    (_("uses log base 2 (bits): use the natural log, np.log, so that "
                       "uniform couplings over 10 parents give log 10 = 2.303"),
                     lambda: want / np.log(2)),
                    (_("has the wrong sign: the entropy is -sum(c * log c), which is >= 0"),
                     lambda: -want),
                    (_("takes the mean over the parents instead of the sum"),
                     lambda: want / p.shape[-1]),
                    (_("sums over the wrong axis (the children, axis 1): each child's "
                       "couplings are along the last axis, axis=-1"),
                     lambda: -np.nansum(plogp, axis=1)),
                ],
                shape_rule=_("expected one entropy per child, {shape} (axis=-1 "
                             "summed away, no keepdims)", shape=want.shape),
                hint=(_(" A coupling of exactly 0 gives 0 * log(0) = 0 * -inf = NaN: count "
                        "those terms as 0, e.g. np.where(c > 0, c * np.log(c), 0) or "
                        "np.log(np.maximum(c, 1e-12)).")))

    verify(np.full((2, 3, 10), 0.1, np.float32), _("uniform couplings (2, 3, 10)"))
    c.ok(_("uniform couplings over 10 parents: log 10 = 2.303 for every child"))
    one_hot = np.zeros((1, 4, 5), np.float32)
    one_hot[0, np.arange(4), [0, 2, 4, 1]] = 1.0
    verify(one_hot, _("one-hot couplings (1, 4, 5)"))
    c.ok(_("a child sending everything to one parent: 0 (no NaN)"))
    logits = rng.normal(0, 2, size=(3, 6, 10))
    random_c = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    verify(random_c.astype(np.float32), _("random couplings (3, 6, 10)"))
    c.ok(_("random couplings (3, 6, 10): one entropy per child, shape (3, 6)"))
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
                (_("forgets the square root: the standard error is "
                   "sqrt(accuracy * (1 - accuracy) / n)"),
                 lambda: (np.float64(accuracy - z * se ** 2), np.float64(accuracy + z * se ** 2))),
                (_("forgets z: the half-width is z * standard error (1.96 for 95%)"),
                 lambda: (np.float64(accuracy - se), np.float64(accuracy + se))),
                (_("divides by n outside the square root: sqrt(accuracy * (1 - accuracy)) / n "
                   "is too small; use sqrt(accuracy * (1 - accuracy) / n)"),
                 lambda: (np.float64(accuracy - z * math.sqrt(accuracy * (1 - accuracy)) / n),
                          np.float64(accuracy + z * math.sqrt(accuracy * (1 - accuracy)) / n))),
                (_("does not clip to [0, 1]: an accuracy cannot be below 0 or above 1 "
                   "(use max(0.0, low) and min(1.0, high))"),
                 lambda: (np.float64(accuracy - z * se), np.float64(accuracy + z * se))),
                (_("uses the standard error of the number of correct images, "
                   "sqrt(n * accuracy * (1 - accuracy)): divide by n inside the square root"),
                 lambda: (np.float64(max(0.0, accuracy - z * math.sqrt(n * accuracy * (1 - accuracy)))),
                          np.float64(min(1.0, accuracy + z * math.sqrt(n * accuracy * (1 - accuracy)))))),
                (_("ignores the z argument: use it instead of a fixed 1.96"),
                 lambda: tuple(np.float64(v) for v in stats.accuracy_interval(accuracy, n))),
            ],
            names=("low", "high"), dtype=None, rtol=1e-6, atol=1e-9)

    verify(0.8, 10_000, _("accuracy 0.8 on 10,000 images"))
    c.ok(_("0.8 on 10,000 images: (0.7922, 0.8078)"))
    verify(0.75, 400, _("accuracy 0.75 on 400 images, z=2.576"), z=2.576)
    c.ok(_("0.75 on 400 images with z = 2.576 (99%): a wider interval"))
    verify(0.99, 50, _("accuracy 0.99 on 50 images"))
    c.ok(_("0.99 on 50 images: clipped at 1"))
    c.done()
