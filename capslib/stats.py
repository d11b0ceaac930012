"""How much of a difference in accuracy is noise: intervals and tests for
accuracies measured on n test images (notebooks 06 and 08)."""
import math


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
