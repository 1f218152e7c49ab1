"""Small, dependency-free statistics for noisy throughput measurements.

The unit of independent evidence is one process: on these machines the same configuration varies
by +-10% (sometimes bimodally, 1.6x) from process to process, while windows inside one process
agree closely. So spreads over windows describe one trial, and every comparison between
configurations uses one value per fresh process.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, spread and relative spread of one set of measurements."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarize")
    mid = median(values)
    q = quantiles(values)
    return {
        "median": mid,
        "min": min(values),
        "max": max(values),
        "iqr": [q[0], q[2]],
        "rel_spread": (max(values) - min(values)) / mid if mid else float("nan"),
        "n": len(values),
    }


def quantiles(values: Sequence[float]) -> list[float]:
    """Quartiles (inclusive method); for one value, that value three times."""
    if len(values) == 1:
        return [float(values[0])] * 3
    return [float(q) for q in statistics.quantiles(values, n=4, method="inclusive")]


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 4000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval for the median. Seeded, so a report is reproducible."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return values[0], values[0]
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(median([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    return _percentile_pair(meds, level)


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], *, level: float = 0.95,
             resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval for median(numerator) / median(denominator), resampling each group."""
    num = [float(v) for v in numerator]
    den = [float(v) for v in denominator]
    rng = random.Random(seed)
    ratios = sorted(
        median([num[rng.randrange(len(num))] for _ in num]) /
        median([den[rng.randrange(len(den))] for _ in den])
        for _ in range(resamples))
    return _percentile_pair(ratios, level)


def _percentile_pair(ordered: list[float], level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo = ordered[int(math.floor(alpha * (len(ordered) - 1)))]
    hi = ordered[int(math.ceil((1 - alpha) * (len(ordered) - 1)))]
    return float(lo), float(hi)


def permutation_p_greater(a: Sequence[float], b: Sequence[float], *, max_exact: int = 50_000,
                          resamples: int = 20_000, seed: int = 0) -> float:
    """One-sided p-value that ``a`` is larger than ``b``: an exact permutation test on the
    difference in mean log values (log, because throughput ratios are what matter).

    Exact over all splits when there are at most ``max_exact`` of them, else Monte Carlo. The
    smallest attainable p is 1 / C(n+m, n): for 4 + 4 rounds that is 0.014, for 3 + 3 only 0.05.
    """
    la = [math.log(v) for v in a]
    lb = [math.log(v) for v in b]
    pooled = la + lb
    n, total = len(la), len(pooled)
    observed = sum(la) / n - sum(lb) / len(lb)
    grand = sum(pooled)
    eps = 1e-12 * max(1.0, abs(observed))

    def diff(sum_a: float) -> float:
        return sum_a / n - (grand - sum_a) / (total - n)

    if math.comb(total, n) <= max_exact:
        hits = count = 0
        for combo in itertools.combinations(pooled, n):
            count += 1
            if diff(sum(combo)) >= observed - eps:
                hits += 1
        return hits / count
    rng = random.Random(seed)
    hits = 1  # the observed split counts, so p is never zero
    for _ in range(resamples):
        sample = rng.sample(pooled, n)
        if diff(sum(sample)) >= observed - eps:
            hits += 1
    return hits / (resamples + 1)


def speedup_test(candidate: Sequence[float], baseline: Sequence[float], *, alpha: float = 0.05,
                 min_speedup: float = 1.0, seed: int = 0
                 ) -> dict[str, float | bool | list[float] | str]:
    """Speedup of ``candidate`` over ``baseline`` (one value per process each), its 95% interval,
    the one-sided p-value, and whether the candidate is faster beyond noise.

    All three must agree: p < ``alpha``, the interval's lower end above 1, and the speedup at
    least ``min_speedup`` (a gain smaller than the drift seen between identical configurations
    measured minutes apart is not worth deploying). ``reason`` says which one failed."""
    speedup = median(candidate) / median(baseline)
    lo, hi = ratio_ci(candidate, baseline, seed=seed)
    p = permutation_p_greater(candidate, baseline, seed=seed)
    if p >= alpha:
        reason = f"not significant (p={p:.3g} >= {alpha:g})"
    elif lo <= 1.0:
        reason = f"the 95% interval reaches {lo:.3f}x, not above 1"
    elif speedup < min_speedup:
        reason = f"{speedup:.3f}x is below the minimum worth adopting ({min_speedup:g}x)"
    else:
        reason = ""
    return {
        "speedup": speedup,
        "speedup_ci95": [lo, hi],
        "p_value": p,
        "significant": not reason,
        "reason": reason,
    }
