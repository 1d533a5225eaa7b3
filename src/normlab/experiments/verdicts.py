"""Verdicts: does a variant differ from the baseline by more than the seeds scatter?

Over a group's n seeds with values x₁…xₙ (mean x̄, sample std s):

    95% CI of the mean     x̄ ± t₀.₉₇₅(n − 1) · s/√n

Against the baseline variant at the same grid point (values y, m seeds), Welch's t-test, which
does not assume the two variances equal:

    Δ = x̄ − ȳ,   se = √(s_x²/n + s_y²/m)
    df = se⁴ / ((s_x²/n)²/(n − 1) + (s_y²/m)²/(m − 1))          (Welch–Satterthwaite)
    95% CI of Δ            Δ ± t₀.₉₇₅(df) · se
    p                      two-sided

scipy computes them: stats.ttest_1samp(x, 0) and stats.ttest_ind(x, y, equal_var=False), with their
confidence_interval(0.95).

"separable" when p < 0.05 (the interval of Δ excludes 0), else "not separable": the seeds cannot
tell the two apart, which is not the same as showing them equal. A verdict needs at least two
seeds on each side. When neither side scatters at all (every seed the same value), se = 0 and the
test is undefined: Δ ≠ 0 is then separable (p reported as 0), Δ = 0 not (p 1).
"""
from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95        # the confidence level of every interval
ALPHA = 1 - LEVEL   # the test's threshold: p < 0.05 is "separable"


def confidence_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% t-interval of the mean of `values`; None for fewer than two."""
    if len(values) < 2:
        return None
    if statistics.stdev(values) == 0:  # scipy's interval is undefined (nan) without scatter
        return values[0], values[0]
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(LEVEL)
    return float(low), float(high)


@dataclass(frozen=True)
class Verdict:
    diff: float                          # mean(values) − mean(baseline)
    interval: tuple[float, float]        # its 95% Welch interval
    p: float                             # two-sided Welch t-test
    separable: bool

    @property
    def label(self) -> str:
        return "separable" if self.separable else "not separable"


def welch(values: list[float], baseline: list[float]) -> Verdict | None:
    """`values` against `baseline` (see the module docstring); None unless both have two or more."""
    if len(values) < 2 or len(baseline) < 2:
        return None
    diff = statistics.fmean(values) - statistics.fmean(baseline)
    if statistics.stdev(values) == 0 and statistics.stdev(baseline) == 0:  # se = 0: the difference is exact
        return Verdict(diff, (diff, diff), 0.0 if diff else 1.0, diff != 0)
    with warnings.catch_warnings():  # one side without scatter is exact, not "nearly identical" data
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        test = stats.ttest_ind(values, baseline, equal_var=False)
        low, high = test.confidence_interval(LEVEL)
    p = float(test.pvalue)
    return Verdict(diff, (float(low), float(high)), p, p < ALPHA)
