"""Checks for rewardlab.eval.stats against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rewardlab.errors import RewardlabError
from rewardlab.eval.stats import (
    PairedComparison,
    bootstrap_ci,
    mean_pass_at_k,
    mean_std,
    paired_comparison,
    pass_at_k,
    sign_test_p_value,
)


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n,c", [(5, 2), (6, 1), (7, 4), (4, 0), (4, 4)])
def test_pass_at_k_matches_enumeration(n: int, c: int) -> None:
    for k in range(1, n + 1):
        assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_matches_closed_form_for_large_n() -> None:
    n, c, k = 200, 13, 10
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12)


def test_pass_at_1_is_fraction_correct() -> None:
    for n in (1, 3, 10, 64):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_pass_at_k_edge_cases() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # every 3-subset includes a correct sample


def test_pass_at_k_rejects_k_above_n() -> None:
    with pytest.raises(ValueError, match=r"n=3.*k=4"):
        pass_at_k(3, 1, 4)


def test_mean_pass_at_k() -> None:
    assert mean_pass_at_k([0, 2, 5], n=5, k=1) == pytest.approx((0 + 0.4 + 1.0) / 3)


def test_bootstrap_ci_known_normal() -> None:
    mu, sigma, n = 3.0, 2.0, 2000
    values = np.random.default_rng(123).normal(mu, sigma, size=n)
    low, high = bootstrap_ci(values, num_resamples=4000, seed=0)
    assert low < mu < high
    expected_width = 2 * 1.96 * sigma / math.sqrt(n)
    assert (high - low) == pytest.approx(expected_width, rel=0.15)


def test_bootstrap_ci_is_deterministic_given_seed() -> None:
    values = [0.0, 1.0, 1.0, 0.5, 0.25, 0.0, 1.0]
    assert bootstrap_ci(values, num_resamples=500, seed=7) == bootstrap_ci(values, num_resamples=500, seed=7)
    assert bootstrap_ci(values, num_resamples=500, seed=7) != bootstrap_ci(values, num_resamples=500, seed=8)


def test_bootstrap_ci_chunking_covers_every_resample(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny chunk bound must give a valid interval, i.e. no resample slot is left unfilled."""
    import rewardlab.eval.stats as stats

    monkeypatch.setattr(stats, "_MAX_CHUNK_ELEMENTS", 7)
    low, high = bootstrap_ci([1.0, 2.0, 3.0], num_resamples=101, seed=1)
    assert 1.0 <= low <= 2.0 <= high <= 3.0


def test_paired_comparison_constant_shift() -> None:
    a = {f"ex{i}": i / 8 for i in range(8)}
    b = {key: value + 0.5 for key, value in a.items()}
    result = paired_comparison(a, b, num_resamples=500)
    assert isinstance(result, PairedComparison)
    assert result.n == 8
    assert result.mean_diff == pytest.approx(0.5)
    assert result.mean_b - result.mean_a == pytest.approx(0.5)
    assert result.ci95 == pytest.approx((0.5, 0.5))
    assert (result.wins, result.ties, result.losses) == (8, 0, 0)
    assert result.p_value_sign == pytest.approx(2 / 2**8)
    assert [row[0] for row in result.per_example] == sorted(a)


def test_paired_comparison_counts_mixed_outcomes_and_ignores_unshared_ids() -> None:
    a = {"w1": 0.0, "w2": 0.2, "t1": 1.0, "t2": 0.5, "l1": 1.0, "only_a": 0.0}
    b = {"w1": 1.0, "w2": 0.3, "t1": 1.0, "t2": 0.5 + 1e-12, "l1": 0.0, "only_b": 1.0}
    result = paired_comparison(a, b, num_resamples=200)
    assert result.n == 5
    assert (result.wins, result.ties, result.losses) == (2, 2, 1)
    diffs = {key: diff for key, _, _, diff in result.per_example}
    assert diffs["l1"] == -1.0 and diffs["w2"] == pytest.approx(0.1)
    assert result.p_value_sign == pytest.approx(1.0)  # 2 wins vs 1 loss is no evidence
    low, high = result.ci95
    assert low <= result.mean_diff <= high


def test_sign_test_p_value_hand_computed() -> None:
    expected = 2 * (math.comb(10, 9) + math.comb(10, 10)) / 2**10
    assert sign_test_p_value(9, 1) == pytest.approx(expected)
    assert sign_test_p_value(1, 9) == pytest.approx(expected)
    assert sign_test_p_value(0, 0) == 1.0
    assert sign_test_p_value(5, 5) == 1.0
    a = {str(i): 0.0 for i in range(10)}
    b = {str(i): (1.0 if i < 9 else -1.0) for i in range(10)}
    assert paired_comparison(a, b, num_resamples=100).p_value_sign == pytest.approx(expected)


def test_paired_comparison_no_shared_ids() -> None:
    with pytest.raises(RewardlabError, match="a has 2 ids, b has 3 ids") as info:
        paired_comparison({"x": 1.0, "y": 0.0}, {"p": 1.0, "q": 0.0, "r": 1.0})
    assert "\n" not in str(info.value)


def test_mean_std() -> None:
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, float(np.std([1, 2, 3, 4], ddof=1))))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_std([])
