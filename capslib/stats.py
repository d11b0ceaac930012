"""How much of a difference in accuracy is noise: intervals and tests for
accuracies measured on n test images (notebooks 06 and 08).

An accuracy's interval and the unpaired comparison of two (two-proportion
z-test, interval of the difference); Holm's correction for a family of tests;
the paired comparison (McNemar's test, interval of the paired difference) for
two models whose answer on every image is known.
"""
import math
from typing import NamedTuple


def accuracy_interval(accuracy, n, z=1.96):
    """Normal-approximation interval ``(low, high)`` of an accuracy measured on
    ``n`` images (95% with z = 1.96), clipped to [0, 1]."""
    if n < 1:
        raise ValueError(f"n must be >= 1 image, got {n}")
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    half = z * math.sqrt(accuracy * (1 - accuracy) / n)
    return max(0.0, accuracy - half), min(1.0, accuracy + half)


def two_proportion_z_test(acc_1, n_1, acc_2, n_2):
    """``(z, p)``: pooled two-proportion z-test of acc_1 - acc_2, two-sided p.

    For two models tested on the same images it is conservative (it ignores
    that their errors are paired), so a small p is all the more convincing.
    """
    pooled = (acc_1 * n_1 + acc_2 * n_2) / (n_1 + n_2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_1 + 1 / n_2))
    if se == 0:
        return 0.0, 1.0
    z = (acc_1 - acc_2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def difference_interval(acc_1, n_1, acc_2, n_2, z=1.96):
    """Interval ``(low, high)`` of the difference acc_1 - acc_2 of two
    accuracies measured on independent sets of n_1 and n_2 images (95% with
    z = 1.96), as fractions.

    The Wald interval, with the unpooled standard error
    ``sqrt(a1 (1 - a1) / n1 + a2 (1 - a2) / n2)``: method 1 of R. G. Newcombe,
    "Interval estimation for the difference between independent proportions:
    comparison of eleven methods", Statistics in Medicine 17 (1998) 873-890.
    Fine for thousands of images and accuracies far from 0 and 1. For two
    models tested on the same images it is conservative (too wide), like
    :func:`two_proportion_z_test`; with per-image results use
    :func:`paired_difference_interval`.
    """
    for acc, n in ((acc_1, n_1), (acc_2, n_2)):
        if n < 1:
            raise ValueError(f"n must be >= 1 image, got {n}")
        if not 0 <= acc <= 1:
            raise ValueError(f"accuracy must be a fraction in [0, 1], got {acc}")
    half = z * math.sqrt(acc_1 * (1 - acc_1) / n_1 + acc_2 * (1 - acc_2) / n_2)
    return acc_1 - acc_2 - half, acc_1 - acc_2 + half


def holm(p_values):
    """Holm-adjusted p-values of a family of tests, in the order given.

    S. Holm, "A simple sequentially rejective multiple test procedure",
    Scandinavian Journal of Statistics 6 (1979) 65-70. Sort the m p-values,
    p_(1) <= ... <= p_(m); the adjusted p_(i) is the largest of
    min(1, (m - k + 1) p_(k)) over k <= i. Rejecting every hypothesis whose
    adjusted p is below alpha keeps the chance of any false rejection in the
    family below alpha, whatever the dependence between the tests (it is
    Bonferroni made less strict step by step).

    >>> holm([0.01, 0.04, 0.03, 0.005])
    [0.03, 0.06, 0.06, 0.02]
    """
    p_values = [float(p) for p in p_values]
    for p in p_values:
        if not 0 <= p <= 1:
            raise ValueError(f"p-values must be in [0, 1], got {p}")
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _correct_pairs(correct_a, correct_b):
    a, b = list(correct_a), list(correct_b)
    for x in a + b:
        if x not in (0, 1):  # True and False are 1 and 0
            raise ValueError("paired results are one bool per image (whether the model got it "
                             f"right), got {x!r}; compare predictions with the labels first")
    a, b = [bool(x) for x in a], [bool(x) for x in b]
    if len(a) != len(b):
        raise ValueError(f"paired results need one per image for both models, got {len(a)} "
                         f"and {len(b)}")
    if not a:
        raise ValueError("paired results of no image")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    return only_a, only_b, len(a)


class McNemar(NamedTuple):
    """What :func:`mcnemar` returns."""
    only_a: int  # images model a got right and model b wrong
    only_b: int  # images model b got right and model a wrong
    p: float  # two-sided p-value


def mcnemar(correct_a, correct_b):
    """McNemar's exact test of two models' accuracies on the same images.

    ``correct_a``, ``correct_b``: one bool per image, whether each model got
    it right. Only the images on which they disagree count: ``only_a`` (a
    right, b wrong) and ``only_b``. If both models were equally accurate, each
    of those n = only_a + only_b images would be one of a's or one of b's
    with probability 1/2, so the two-sided p-value is the exact binomial one,
    ``min(1, 2 P(X <= min(only_a, only_b)))`` with X ~ Binomial(n, 1/2)
    (Q. McNemar, Psychometrika 12 (1947) 153-157, for the test; the exact
    conditional form as in M. W. Fagerland, S. Lydersen and P. Laake, BMC
    Medical Research Methodology 13 (2013) 91), computed by SciPy's exact
    ``binomtest``. Returns ``McNemar(only_a, only_b, p)``.

    It uses the pairing that :func:`two_proportion_z_test` ignores, so it
    detects smaller differences on the same images.
    """
    only_a, only_b, _ = _correct_pairs(correct_a, correct_b)
    n = only_a + only_b
    if n == 0:
        return McNemar(0, 0, 1.0)
    from scipy.stats import binomtest  # lazy: the rest of capslib.stats is plain Python

    # The smaller count as k: the same p whichever model is called a.
    return McNemar(only_a, only_b, float(binomtest(min(only_a, only_b), n, 0.5).pvalue))


def paired_difference_interval(correct_a, correct_b, z=1.96):
    """Interval ``(low, high)`` of accuracy_a - accuracy_b (fractions) for two
    models tested on the same images, from one bool per image and model.

    The Wald interval for paired proportions: the difference is
    d = (only_a - only_b) / n and its standard error
    sqrt(only_a + only_b - (only_a - only_b)^2 / n) / n (method 1 of R. G.
    Newcombe, "Improved confidence intervals for the difference between
    binomial proportions based on paired data", Statistics in Medicine 17
    (1998) 2635-2650).
    """
    only_a, only_b, n = _correct_pairs(correct_a, correct_b)
    d = (only_a - only_b) / n
    half = z * math.sqrt(max(0.0, only_a + only_b - (only_a - only_b) ** 2 / n)) / n
    return d - half, d + half


def format_p(p):
    """A p-value as the course prints it: 3 decimals, or one digit and an exponent below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"
