"""Small, honest statistics for evaluation: pass@k, bootstrap intervals and paired comparisons.

Pure functions over plain Python numbers and numpy arrays (no scipy), so results are reproducible from
a seed and cheap enough to run after every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rewardlab.errors import RewardlabError

# Upper bound on the number of resampled values held in memory at once (about 8 MB of float64 indices).
_MAX_CHUNK_ELEMENTS = 1_000_000
# Below this many examples a percentile bootstrap is too narrow (at n = 10 a "95%" interval covers about
# 91%; at n = 3 with equal differences it collapses to a point): results say so.
SMALL_N = 30
INTERVAL_METHOD = "paired percentile bootstrap over examples, 10,000 resamples"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    Computes ``1 - C(n-c, k) / C(n, k)`` as the product ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` so large
    ``n`` neither overflows nor loses precision the way a ratio of huge binomials would.
    """
    if k > n:
        raise ValueError(f"pass@k needs k <= n, got n={n}, k={k}")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if n - c < k:
        # Every k-subset must contain at least one correct sample.
        return 1.0
    factors = 1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(factors))


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """Mean pass@k over problems, each sampled ``n`` times with ``correct_counts[i]`` correct."""
    if len(correct_counts) == 0:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return float(np.mean([pass_at_k(n, c, k) for c in correct_counts]))


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """A 1-D float array, rejecting empty input since no statistic of nothing is meaningful."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("need at least one value")
    return array


def _bootstrap_means(values: np.ndarray, num_resamples: int, seed: int) -> np.ndarray:
    """Means of ``num_resamples`` resamples of the rows of ``values`` with replacement, drawn in chunks to
    bound memory. Columns (paired scores, one per system) are resampled together, row by row."""
    rng = np.random.default_rng(seed)
    size = values.shape[0]
    chunk = max(1, _MAX_CHUNK_ELEMENTS // size)
    means = np.empty((num_resamples, *values.shape[1:]), dtype=np.float64)
    for start in range(0, num_resamples, chunk):
        stop = min(start + chunk, num_resamples)
        indices = rng.integers(0, size, size=(stop - start, size))
        means[start:stop] = values[indices].mean(axis=1)
    return means


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    num_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean; the same seed gives the same interval.

    Makes no normality assumption, which matters for bounded, often bimodal per-example rewards.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    array = _as_array(values)
    means = _bootstrap_means(array, num_resamples, seed)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def sign_test_p_value(wins: int, losses: int) -> float:
    """Two-sided exact sign test: how surprising ``wins`` vs ``losses`` is if each were a coin flip.

    Ties must already be dropped. Exact integer binomial sums avoid both scipy and float overflow.
    """
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(math.comb(trials, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**trials)


@dataclass
class PairedComparison:
    """System B against system A on the same examples; every difference is ``b - a``."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci95: tuple[float, float]
    wins: int
    ties: int
    losses: int
    p_value_sign: float
    per_example: list[tuple[str, float, float, float]] = field(default_factory=list)
    method: str = INTERVAL_METHOD
    warnings: list[str] = field(default_factory=list)


def paired_comparison(
    a: dict[str, float],
    b: dict[str, float],
    tie_tolerance: float = 1e-9,
    num_resamples: int = 10000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two systems example by example, which is far more sensitive than comparing two means.

    Only ids present in both dicts count. The 95% interval is a paired bootstrap of the mean difference
    over examples; wins/losses are differences beyond ``tie_tolerance`` either way.
    """
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise RewardlabError(f"no shared example ids to compare: a has {len(a)} ids, b has {len(b)} ids")
    a_values = np.array([a[key] for key in shared], dtype=np.float64)
    b_values = np.array([b[key] for key in shared], dtype=np.float64)
    diffs = b_values - a_values
    wins = int(np.sum(diffs > tie_tolerance))
    losses = int(np.sum(diffs < -tie_tolerance))
    per_example = [
        (key, float(x), float(y), float(d))
        for key, x, y, d in zip(shared, a_values, b_values, diffs, strict=True)
    ]
    return PairedComparison(
        n=len(shared),
        mean_a=float(a_values.mean()),
        mean_b=float(b_values.mean()),
        mean_diff=float(diffs.mean()),
        ci95=bootstrap_ci(diffs, num_resamples=num_resamples, confidence=0.95, seed=seed),
        wins=wins,
        ties=len(shared) - wins - losses,
        losses=losses,
        p_value_sign=sign_test_p_value(wins, losses),
        per_example=per_example,
        warnings=[small_sample_warning(len(shared))] if len(shared) < SMALL_N else [],
    )


def small_sample_warning(n: int) -> str:
    return (
        f"only {n} paired example{'s' if n != 1 else ''} (fewer than {SMALL_N}): the 95% interval is too "
        "narrow at this size; evaluate more examples before trusting it"
    )


@dataclass
class RelativeGain:
    """(B - A) / A of one per-example score, with a paired bootstrap interval of that ratio.

    ``value`` is None when A's mean is not positive: a gain relative to zero or to a negative base has no
    meaning (a move from -0.5 to -0.25 is not "-50%"), and ``reason`` says so.
    """

    value: float | None
    ci95: tuple[float, float] | None
    component: str | None = None
    reason: str | None = None


def relative_gain(
    a: dict[str, float],
    b: dict[str, float],
    component: str | None = None,
    num_resamples: int = 10000,
    seed: int = 0,
) -> RelativeGain:
    """The relative change of ``b``'s mean over ``a``'s on the ids both hold, resampling whole examples.

    Resamples whose base mean is not positive have no ratio. When more than 1% of them fall there, no
    interval is given; fewer are placed above every ratio (an infinite gain), which leaves the 97.5th
    percentile finite.
    """
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise RewardlabError(f"no shared example ids to compare: a has {len(a)} ids, b has {len(b)} ids")
    a_values = np.array([a[key] for key in shared], dtype=np.float64)
    b_values = np.array([b[key] for key in shared], dtype=np.float64)
    base = float(a_values.mean())
    if base <= 0:
        return RelativeGain(None, None, component, f"n/a: the base mean is {base:.3g}, not positive")
    value = float(b_values.mean()) / base - 1.0
    means = _bootstrap_means(np.stack([a_values, b_values], axis=1), num_resamples, seed)
    means_a, means_b = means[:, 0], means[:, 1]
    positive = means_a > 0
    if 1.0 - positive.mean() > 0.01:
        return RelativeGain(value, None, component, "no interval: the base mean is 0 in too many resamples")
    ratios = np.where(positive, means_b / np.where(positive, means_a, 1.0) - 1.0, np.inf)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return RelativeGain(value, (float(low), float(high)), component)


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof=1), the usual spread to report across seeds.

    With a single value the spread is unknown, so the std is reported as 0.0 rather than NaN; an empty
    input raises ValueError.
    """
    array = _as_array(values)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std
