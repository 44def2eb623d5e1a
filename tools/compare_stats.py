"""Statistics of `make compare` (issue #21 item 4): differences paired by seed, their mean with a
two-sided Student-t confidence interval (scipy), and a verdict per row.

A row is trained with the same seeds as the row it is compared with; seed s of both shares the
data order and initialisation, so the per-seed differences d_s = row_s - reference_s are the
observations (a paired design: the seed-to-seed spread common to both rows cancels).
"""
import math

import numpy as np
from scipy import stats

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"


def paired_differences(row, reference):
    """row, reference: {seed: value}. Returns ([seeds], [row - reference]) over the seeds both have,
    in seed order. ValueError naming the seeds when they share none."""
    seeds = sorted(set(row) & set(reference))
    if not seeds:
        raise ValueError(f"no common seed: the row has seeds {sorted(row)}, its reference {sorted(reference)}")
    return seeds, [float(row[s]) - float(reference[s]) for s in seeds]


def mean_ci(values, confidence=0.95):
    """(mean, low, high): the mean of `values` and its two-sided Student-t confidence interval,
    mean -/+ t_{(1+confidence)/2, n-1} * sd / sqrt(n) (sd with n - 1 degrees of freedom).
    With fewer than 2 values the interval is (nan, nan)."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - half, m + half


def verdict(low, high):
    """better when the whole interval is above 0, worse when below, else no detectable difference
    (also when the interval is undefined, i.e. fewer than 2 seeds)."""
    if math.isnan(low) or math.isnan(high):
        return NO_DIFFERENCE
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NO_DIFFERENCE


def compare_rows(row, reference, confidence=0.95):
    """{"seeds", "differences", "mean", "low", "high", "verdict"} of row - reference (each {seed: value})."""
    seeds, d = paired_differences(row, reference)
    m, lo, hi = mean_ci(d, confidence)
    return {"seeds": seeds, "differences": d, "mean": m, "low": lo, "high": hi, "verdict": verdict(lo, hi)}
