"""capslib.stats against values computed by hand (notebooks 06 and 08)."""
import math

import numpy as np
import pytest

from capslib import stats

# The same under every Keras backend: not run again in the JAX pass (Makefile).
pytestmark = pytest.mark.backend_free


def test_holm_on_a_hand_computed_example():
    # Sorted: 0.005, 0.01, 0.03, 0.04 (m = 4), multiplied by 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04; each at least the one before: 0.02, 0.03, 0.06, 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_caps_at_one_and_keeps_ties_and_order():
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]
    assert stats.holm([0.02, 0.02, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert stats.holm([0.04]) == [0.04]  # one test: nothing to correct
    assert stats.holm([]) == []


def test_holm_rejects_what_the_step_down_rule_rejects():
    # Holm 1979: reject H_(1), H_(2), ... while p_(i) <= alpha / (m - i + 1).
    p = [0.001, 0.009, 0.02, 0.03, 0.2, 0.012]
    alpha, m = 0.05, len(p)
    rejected = set()
    for i, k in enumerate(sorted(range(m), key=p.__getitem__)):
        if p[k] > alpha / (m - i):
            break
        rejected.add(k)
    assert rejected == {0, 1, 5}  # 0.001 <= 0.05/6, 0.009 <= 0.05/5, 0.012 <= 0.05/4; 0.02 > 0.05/3
    assert {k for k, q in enumerate(stats.holm(p)) if q <= alpha} == rejected


def test_holm_refuses_what_is_not_a_p_value():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.1, 1.5])


def test_difference_interval_by_hand():
    # 0.8 and 0.7 on 100 images each: se = sqrt(0.16/100 + 0.21/100) = 0.0608276
    low, high = stats.difference_interval(0.8, 100, 0.7, 100)
    half = 1.96 * math.sqrt(0.0037)
    assert (low, high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-12)
    assert (low, high) == pytest.approx((-0.019222, 0.219222), abs=1e-6)
    assert stats.difference_interval(0.7, 100, 0.8, 100) == pytest.approx((-high, -low))
    assert stats.difference_interval(1.0, 50, 1.0, 80) == (0.0, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        stats.difference_interval(80, 100, 0.7, 100)


def test_difference_interval_agrees_with_the_z_test_at_the_edge():
    # Notebook 08's decoder comparison: p just below 0.05, interval just above 0.
    low, high = stats.difference_interval(0.7427, 10_000, 0.7303, 10_000)
    assert 0 < low < 0.001 and high == pytest.approx(0.0246, abs=1e-4)
    assert 0.04 < stats.two_proportion_z_test(0.7427, 10_000, 0.7303, 10_000)[1] < 0.05


def test_mcnemar_exact_by_hand():
    # 10 images only a gets right, 2 only b, 50 both: n = 12 discordant,
    # P(X <= 2) = (1 + 12 + 66) / 4096, two-sided: 79 / 2048.
    a = [True] * 10 + [False] * 2 + [True] * 50
    b = [False] * 10 + [True] * 2 + [True] * 50
    result = stats.mcnemar(a, b)
    assert (result.only_a, result.only_b) == (10, 2)
    assert result.p == pytest.approx(79 / 2048, rel=1e-12)
    assert stats.mcnemar(b, a).p == result.p  # symmetric
    assert stats.mcnemar(np.array(a), np.array(b)) == result  # NumPy bools too


def test_mcnemar_without_a_difference():
    assert stats.mcnemar([True, False, True], [True, False, True]) == (0, 0, 1.0)
    assert stats.mcnemar([True, False] * 5, [False, True] * 5).p == 1.0  # 5 against 5
    big = stats.mcnemar([True] * 4990 + [False] * 5010, [False] * 4990 + [True] * 5010)
    assert 0.8 < big.p < 0.9  # thousands of disagreements: exact in whole numbers, no overflow


def test_mcnemar_sees_what_the_unpaired_test_misses():
    # 1,000 images: both right on 800, only a on 15, only b on 2. Accuracies
    # 81.5% and 80.2%: the unpaired test sees noise, the paired one does not.
    a = np.array([1] * 800 + [1] * 15 + [0] * 2 + [0] * 183, bool)
    b = np.array([1] * 800 + [0] * 15 + [1] * 2 + [0] * 183, bool)
    assert stats.two_proportion_z_test(a.mean(), 1000, b.mean(), 1000)[1] > 0.4
    assert stats.mcnemar(a, b).p < 0.003
    low, high = stats.paired_difference_interval(a, b)
    assert 0 < low < a.mean() - b.mean() < high
    unpaired_low, unpaired_high = stats.difference_interval(a.mean(), 1000, b.mean(), 1000)
    assert high - low < unpaired_high - unpaired_low


def test_paired_difference_interval_by_hand():
    # 100 images, only a: 10, only b: 2: d = 0.08, se = sqrt(12 - 64/100) / 100.
    a = [True] * 10 + [False] * 2 + [True] * 88
    b = [False] * 10 + [True] * 2 + [True] * 88
    half = 1.96 * math.sqrt(11.36) / 100
    assert stats.paired_difference_interval(a, b) == pytest.approx((0.08 - half, 0.08 + half))


def test_paired_tests_refuse_predictions_and_unequal_lengths():
    with pytest.raises(ValueError, match="one bool per image"):
        stats.mcnemar([3, 1, 0], [1, 1, 0])  # classes, not right/wrong
    with pytest.raises(ValueError, match="got 3 and 2"):
        stats.mcnemar([True, False, True], [True, False])
    with pytest.raises(ValueError, match="no image"):
        stats.paired_difference_interval([], [])


def test_format_p():
    assert stats.format_p(0.8712) == "0.871"
    assert stats.format_p(0.001) == "0.001"
    assert stats.format_p(2.1e-8) == "2e-08"
    assert stats.format_p(1.0) == "1.000"
