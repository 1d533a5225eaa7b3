"""Verdicts against numbers worked by hand: the t-intervals, Welch's test and its degrees of freedom."""
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from normlab.experiments.verdicts import confidence_interval, welch

T_975 = {2: 4.302652729749462, 4: 2.7764451051977934}   # Student's t quantiles from a table


def test_interval_of_the_mean_over_three_seeds():
    low, high = confidence_interval([0.80, 0.82, 0.84])
    half = T_975[2] * 0.02 / math.sqrt(3)                  # sample std 0.02
    assert (low, high) == pytest.approx((0.82 - half, 0.82 + half))
    assert confidence_interval([0.8]) is None and confidence_interval([0.7, 0.7]) == (0.7, 0.7)


def test_welch_with_equal_variances_worked_by_hand():
    verdict = welch([0.80, 0.82, 0.84], [0.70, 0.74, 0.72])
    se = math.sqrt(0.0004 / 3 + 0.0004 / 3)               # both sample variances 0.0004
    t = 0.10 / se                                          # 6.12; df = 4 when n = m and the variances agree
    u = t / math.sqrt(t * t + 4)                           # t-distribution with 4 df in closed form:
    p = 1 - 1.5 * u + 0.5 * u ** 3                         # P(|T| > t) = 1 − (3/2)u + (1/2)u³
    assert verdict.diff == pytest.approx(0.10)
    assert verdict.interval == pytest.approx((0.10 - T_975[4] * se, 0.10 + T_975[4] * se))
    assert verdict.p == pytest.approx(p) and p == pytest.approx(0.0036, abs=1e-4)
    assert (verdict.separable, verdict.label) == (True, "separable")


def test_welch_uses_the_satterthwaite_degrees_of_freedom():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.1]          # unequal variances and sizes
    vx, vy = statistics.variance(x) / 5, statistics.variance(y) / 2
    df = (vx + vy) ** 2 / (vx ** 2 / 4 + vy ** 2 / 1)     # 4.1, where Student's test would use 5
    verdict = welch(x, y)
    half = (verdict.interval[1] - verdict.interval[0]) / 2
    assert half == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(vx + vy))
    assert verdict.p == pytest.approx(2 * stats.t.sf(0.95 / math.sqrt(vx + vy), df))
    assert verdict.label == "not separable"                # Δ = 0.95 within seeds that scatter by 1.6


def test_no_verdict_below_two_seeds_and_exact_differences_without_scatter():
    assert welch([0.9], [0.8, 0.81]) is None and welch([0.9, 0.91], [0.8]) is None
    same = welch([0.5, 0.5], [0.5, 0.5, 0.5])
    assert (same.diff, same.p, same.label) == (0.0, 1.0, "not separable")
    apart = welch([0.6, 0.6], [0.5, 0.5])
    assert (apart.diff, *apart.interval, apart.p) == pytest.approx((0.1, 0.1, 0.1, 0.0)) and apart.separable


values = st.lists(st.integers(0, 10_000).map(lambda k: k / 10_000), min_size=2, max_size=6)  # accuracies


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_separable_exactly_when_the_interval_of_the_difference_excludes_zero(x, y):
    verdict = welch(x, y)
    low, high = verdict.interval
    assert low <= verdict.diff <= high
    if abs(low) > 1e-9 and abs(high) > 1e-9 and 1e-6 < verdict.p and abs(verdict.p - 0.05) > 1e-9:
        assert verdict.separable == (low > 0 or high < 0), (x, y, verdict)
