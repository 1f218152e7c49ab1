"""Small, dependency-free statistics for noisy throughput measurements.

The unit of independent evidence is one process: on these machines the same configuration varies
by +-10% (sometimes bimodally, 1.6x) from process to process, while windows inside one process
agree closely. So spreads over windows describe one trial, and every comparison between
configurations uses one value per fresh process.
"""

from __future__ import annotations

import functools
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


# -- sequential validation: noise, alpha spending, rounds for a given power -------------------
#
# The model behind the planning: log(throughput) of one process is normal with the same standard
# deviation sigma for every configuration (lognormal noise, a coefficient of variation
# sqrt(exp(sigma^2) - 1)), so a speedup is a difference of log means and the evidence after n
# rounds per side is a Brownian motion observed at "information times" n / N. That is the
# standard group-sequential setting (Jennison & Turnbull, *Group Sequential Methods*, 2000), in
# which the exact permutation test on mean log values is, for large samples, the z-test.

def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """The standard normal quantile, by bisection (plenty for these uses, and exact enough)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"norm_ppf: {p!r} is not in (0, 1)")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if norm_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def log_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The pooled within-group standard deviation of log values, and its degrees of freedom.

    Each group holds fresh-process values of one configuration (a baseline's replicates, one
    candidate's screening or final rounds); groups of one value carry no information on noise."""
    squares, df = 0.0, 0
    for group in groups:
        logs = [math.log(v) for v in group]
        if len(logs) < 2:
            continue
        mean = sum(logs) / len(logs)
        squares += sum((x - mean) ** 2 for x in logs)
        df += len(logs) - 1
    return (math.sqrt(squares / df) if df else float("nan")), df


def sd_upper(sigma: float, df: int, confidence: float = 0.8) -> float:
    """An upper confidence bound for a standard deviation estimated with ``df`` degrees of
    freedom (the chi-square interval, its quantile by the Wilson-Hilferty approximation).

    Rounds planned from the estimate itself fall short about half the time, and power lost then
    is not made up when the estimate is high; planning from an 80% upper bound is the usual
    remedy in designs that size themselves from a pilot's variance (Browne 1995)."""
    if df <= 0 or not sigma > 0:
        return sigma
    a = 2.0 / (9.0 * df)
    quantile = df * max(1.0 - a + norm_ppf(1.0 - confidence) * math.sqrt(a), 1e-3) ** 3
    return sigma * math.sqrt(df / quantile)


def cv_of(sigma: float) -> float:
    """The coefficient of variation of a lognormal value whose log has standard deviation
    ``sigma``."""
    return math.sqrt(math.expm1(sigma * sigma))


def spent_alpha(t: float, alpha: float) -> float:
    """Lan-DeMets alpha spending of Pocock type: the false-positive probability a sequential test
    may have used by information time ``t`` (0..1), alpha * ln(1 + (e - 1) t).

    Pocock-type rather than O'Brien-Fleming-type, because the first look here is small (4-5
    rounds) and an exact permutation test on 5 + 5 values cannot reach p below 1/252 = 0.004:
    O'Brien-Fleming would spend 0.0007 at a quarter of the information, so a clear win could
    never stop at the first look. Pocock spends about 0.018 there."""
    t = min(max(t, 0.0), 1.0)
    return alpha * math.log1p((math.e - 1.0) * t)


_GRID = 240        # points between the grid's lower end and a boundary
_LOW = -8.0        # the Brownian motion at time <= 1 is below this with probability < 1e-15


def nominal_levels(times: Sequence[float], spend: Sequence[float]) -> list[float]:
    """One-sided nominal p-value thresholds for looks at increasing information ``times`` (the
    last normally 1) such that the probability, under no effect, of first crossing at look k
    is ``spend[k] - spend[k-1]`` (``spend`` cumulative, as :func:`spent_alpha` gives it).

    Computed by the usual recursive numerical integration (Armitage, McPherson & Rowe 1969)
    of the Brownian motion S(t) over the region where no earlier look stopped: the sub-density
    on a grid that ends exactly at the previous boundary, each crossing probability integrated
    against the exact normal tail. A futility stop is not part of it (a non-binding futility
    rule only lowers the false-positive rate)."""
    levels: list[float] = []
    grid: list[float] = []
    weights: list[float] = []   # sub-density x quadrature weight at each grid point
    prev_t, prev_spend = 0.0, 0.0
    root2pi = math.sqrt(2 * math.pi)
    for k, (t, cum) in enumerate(zip(times, spend)):
        target = max(cum - prev_spend, 0.0)
        sd_t, step_sd = math.sqrt(t), math.sqrt(t - prev_t)
        if k == 0:
            bound = sd_t * norm_ppf(1.0 - target) if target > 0 else 12.0
        else:
            bound = _solve_decreasing(
                lambda b, g=grid, w=weights, sd=step_sd: sum(
                    wi * norm_sf((b - si) / sd) for si, wi in zip(g, w)),
                target) if target > 0 else 12.0
        levels.append(norm_sf(bound / sd_t) if target > 0 else 0.0)
        if k + 1 < len(times):
            h = (bound - _LOW) / _GRID
            new_grid = [_LOW + i * h for i in range(_GRID + 1)]
            quad = [h / 3 * (1 if i in (0, _GRID) else 4 if i % 2 else 2)
                    for i in range(_GRID + 1)]  # Simpson's rule (_GRID is even)
            if k == 0:
                density = [math.exp(-0.5 * u * u / t) / (sd_t * root2pi) for u in new_grid]
            else:
                c = 1.0 / (step_sd * root2pi)
                density = [c * sum(wi * math.exp(-0.5 * ((u - si) / step_sd) ** 2)
                                   for si, wi in zip(grid, weights)) for u in new_grid]
            weights = [q * d for q, d in zip(quad, density)]
            grid = new_grid
        prev_t, prev_spend = t, max(cum, prev_spend)
    return levels


def _solve_decreasing(f, target: float) -> float:
    """The x in [-12, 12] where the decreasing function ``f`` equals ``target``, by bisection."""
    lo, hi = -12.0, 12.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# The speedup and its interval are ratios of medians; for normal log values the sample median's
# variance is pi/2 times the mean's (its asymptotic efficiency is 2/pi).
MEDIAN_VARIANCE = math.pi / 2


def rule_power(delta: float, sigma: float, n: int, level: float, *, min_speedup: float = 1.0,
               ci_level: float = 0.95) -> float:
    """Approximate probability that the adoption rule of :func:`speedup_test` holds after ``n``
    rounds per side, for a true log speedup ``delta`` and per-process log noise ``sigma``:

    - p < ``level``: the test on mean log values, a z-test with standard error
      sigma * sqrt(2 / n);
    - the interval's lower end above 1: a one-sided test at (1 - ci_level) / 2 on the log ratio
      of medians, whose standard error is sqrt(pi / 2) times larger;
    - the median ratio at least ``min_speedup``.

    The three are strongly correlated, so the chance that all hold is taken as the smallest
    of the three (slightly optimistic); the earlier looks of a sequential design, which only add
    chances to confirm, are left out (pessimistic)."""
    if sigma <= 0:
        return 1.0 if delta >= math.log(min_speedup) and delta > 0 else 0.0
    se_mean = sigma * math.sqrt(2.0 / n)
    se_median = se_mean * math.sqrt(MEDIAN_VARIANCE)
    z_ci = norm_ppf(1 - (1 - ci_level) / 2)
    z_p = norm_ppf(1 - level) if level > 0 else float("inf")
    return min(norm_cdf(delta / se_mean - z_p), norm_cdf(delta / se_median - z_ci),
               norm_cdf((delta - math.log(min_speedup)) / se_median))


def detectable_speedup(sigma: float, n: int, level: float, *, power: float = 0.8,
                       min_speedup: float = 1.0, ci_level: float = 0.95) -> float:
    """The smallest speedup the adoption rule confirms with probability ``power`` after ``n``
    rounds per side at per-process log noise ``sigma`` (the inverse of :func:`rule_power`):
    a win at least this large would most likely have been adopted."""
    z_b = norm_ppf(power)
    se_mean = max(sigma, 0.0) * math.sqrt(2.0 / n)
    se_median = se_mean * math.sqrt(MEDIAN_VARIANCE)
    z_ci = norm_ppf(1 - (1 - ci_level) / 2)
    z_p = norm_ppf(1 - level) if level > 0 else float("inf")
    delta = max(se_mean * (z_p + z_b), se_median * (z_ci + z_b),
                math.log(min_speedup) + se_median * z_b)
    return math.exp(delta)


@functools.lru_cache(maxsize=512)
def look_levels(sizes: tuple[int, ...], cap: int, alpha: float) -> tuple[float, ...]:
    """Nominal one-sided levels for looks after ``sizes`` rounds (cumulative), the last one the
    final analysis, which spends whatever alpha is left.

    The first look spends alpha as if the cap were the final size: it runs before the noise is
    known, so before the plan is. The plan made from its noise then spends by the fraction of
    its own total (Lan-DeMets spending allows the looks and the total to be chosen as the
    study goes, as long as the choice does not depend on the effect seen so far: here it
    depends only on the noise, which for normal log values is independent of the mean)."""
    total = sizes[-1]
    spend = [spent_alpha(sizes[0] / cap, alpha)]
    spend += [max(spend[-1], spent_alpha(n / total, alpha)) for n in sizes[1:]]
    spend[-1] = alpha if len(sizes) > 1 or total >= cap else spend[-1]
    return tuple(nominal_levels([n / total for n in sizes], spend))


def look_sizes(first: int, total: int, looks: int) -> tuple[int, ...]:
    """``looks`` looks (at most) from ``first`` to ``total`` rounds, equally spaced."""
    if total <= first or looks < 2:
        return (first,)
    sizes = [first] + [round(first + (total - first) * j / (looks - 1))
                       for j in range(1, looks)]
    return tuple(sorted(set(sizes)))


def plan_rounds(first: int, cap: int, looks: int, sigma: float, *, alpha: float,
                effect: float, power: float, min_speedup: float = 1.0,
                ci_level: float = 0.95) -> tuple[int, ...]:
    """After an inconclusive first look of ``first`` rounds: the rounds at each look, the
    fewest in total (up to ``cap``) for which the rule confirms a true ``effect`` with
    probability ``power`` at per-process log noise ``sigma`` (see :func:`rule_power`).
    ``(first,)`` when the first look already had that power: then an inconclusive first look
    means the effect is smaller, and more rounds are not worth their time."""
    delta = math.log(effect)
    if rule_power(delta, sigma, first, look_levels((first,), cap, alpha)[0],
                  min_speedup=min_speedup, ci_level=ci_level) >= power:
        return (first,)
    sizes = (first,)
    for total in range(first + 1, cap + 1):
        sizes = look_sizes(first, total, looks)
        level = look_levels(sizes, cap, alpha)[-1]
        if rule_power(delta, sigma, total, level, min_speedup=min_speedup,
                      ci_level=ci_level) >= power:
            break
    return sizes
