"""The statistics, on constructed data whose answer is known."""

from __future__ import annotations

import math
import random

import pytest

from tuner.base import stats


def test_permutation_p_for_complete_separation_is_the_exact_minimum():
    a = [110, 111, 112, 113, 114]
    b = [100, 101, 102, 103, 104]
    assert stats.permutation_p_greater(a, b) == pytest.approx(1 / math.comb(10, 5))
    assert stats.permutation_p_greater(b, a) == pytest.approx(1.0)


def test_three_rounds_can_never_be_significant_at_5_percent():
    # why validate.rounds must be >= 4
    assert stats.permutation_p_greater([10, 11, 12], [1, 2, 3]) == pytest.approx(0.05)


def test_identical_groups_are_not_significant():
    result = stats.speedup_test([100.0] * 5, [100.0] * 5)
    assert result["speedup"] == 1.0
    assert not result["significant"]
    assert result["p_value"] == 1.0


def test_a_real_15_percent_gain_under_5_percent_noise_is_found():
    rng = random.Random(1)
    base = [1000 * (1 + rng.gauss(0, 0.05)) for _ in range(6)]
    cand = [1150 * (1 + rng.gauss(0, 0.05)) for _ in range(6)]
    result = stats.speedup_test(cand, base)
    assert result["significant"]
    lo, hi = result["speedup_ci95"]
    assert lo <= result["speedup"] <= hi
    assert lo < 1.15 < hi


def test_noise_alone_is_rarely_significant():
    rng = random.Random(2)
    hits = 0
    for _ in range(100):
        base = [1000 * (1 + rng.gauss(0, 0.1)) for _ in range(5)]
        cand = [1000 * (1 + rng.gauss(0, 0.1)) for _ in range(5)]
        hits += stats.speedup_test(cand, base)["significant"]
    assert hits <= 12  # nominal 5%; a broken test would call far more noise "faster"


def test_bimodal_processes_do_not_make_a_slower_candidate_look_faster():
    base = [1000, 1010, 620, 990, 1005]  # one process landed in the slow mode
    cand = [950, 960, 955, 945, 958]
    result = stats.speedup_test(cand, base)
    assert result["speedup"] < 1 and not result["significant"]


def test_bootstrap_ci_brackets_the_median_and_is_reproducible():
    values = [10, 12, 11, 13, 9, 10.5]
    lo, hi = stats.bootstrap_ci(values)
    assert lo <= stats.median(values) <= hi
    assert (lo, hi) == stats.bootstrap_ci(values)
    assert stats.bootstrap_ci([5.0]) == (5.0, 5.0)


def test_large_groups_use_monte_carlo_and_agree():
    a = [100 + i for i in range(15)]
    b = [90 + i for i in range(15)]
    p = stats.permutation_p_greater(a, b)
    assert 0 < p < 0.01


def test_summarize():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0 and s["n"] == 4
    assert s["rel_spread"] == pytest.approx(3 / 2.5)


def test_a_significant_but_tiny_gain_is_not_adopted():
    base = [1000, 1001, 1002, 1003, 1004]
    cand = [1020, 1021, 1022, 1023, 1024]   # 2% faster, every round, p = 1/252
    result = stats.speedup_test(cand, base, min_speedup=1.05)
    assert result["p_value"] < 0.01
    assert not result["significant"] and "below the minimum" in result["reason"]
    assert stats.speedup_test(cand, base, min_speedup=1.0)["significant"]


def test_p_below_alpha_with_an_interval_reaching_1_is_not_adopted():
    # like the benchmark's false positive: p < 0.05, but the bootstrap interval of the ratio of
    # medians reaches below 1, so the evidence does not agree and the defaults are kept
    base = [967, 958, 948, 980, 1044]
    cand = [1012, 970, 1058, 1033, 1065]
    result = stats.speedup_test(cand, base, min_speedup=1.0)
    assert result["p_value"] < 0.05
    assert result["speedup_ci95"][0] <= 1.0
    assert not result["significant"]
    assert "interval reaches" in result["reason"]
