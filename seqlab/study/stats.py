r"""The study's statistics, free of training code: numpy and scipy on arrays of scores.

The headline comparison of two configurations is a **two-level paired bootstrap**: each resample
draws the seeds with replacement and the test documents with replacement, and recomputes, for
every drawn seed, both configurations' scores on the drawn documents; the statistic is the mean
over the drawn seeds of the paired difference. Seeds and documents are crossed (every seed is
scored on the same documents), so one draw of documents serves all the seeds of a resample:
document-level sampling error is shared by the seeds, as it is in the data. The interval is the
95% percentile interval; the p-value is the two-sided percentile p-value (twice the smaller share
of resamples on either side of 0, counted with the observed statistic, so it is never 0).

Equivalence: two one-sided tests (TOST) against a margin ``m``: ``max`` of the shares of
resamples at or beyond ``-m`` and ``+m``; "no detectable difference" is claimed only when it is
below 0.05, which is the 90% interval lying inside ``(-m, m)``.

Several comparisons (the losses of a grid against its baseline) are adjusted with Holm's
step-down method (:func:`holm`); the unadjusted p-values are kept beside the adjusted ones.

A verdict (:func:`verdict`) asks the seeds as well. With a handful of seeds the bootstrap's seed
level is too narrow (a percentile bootstrap of a mean over n draws has no small-sample
correction; ``scripts/study_coverage.py`` measures it): where the seed moves F1 by several points
its 95% interval holds a true null only 75-90% of the time. So "better" or "worse" also needs the
paired t-test over seeds, and "no detectable difference" also needs the seed-level equivalence
test (:func:`t_tost_p`); each pair is an intersection-union test, of level ``alpha`` when each of
its parts is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

ECE_BINS = 15
RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261130
MARGIN = 0.005            # the equivalence margin: 0.5 points of F1 (scores are fractions)
ALPHA = 0.05
MIN_SEEDS = 2             # paired seeds a verdict needs: with one, no seed variation is resampled
MIN_WILCOXON_PAIRS = 6    # below this the exact two-sided Wilcoxon p cannot reach 0.05


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float | None:
    r"""Expected calibration error with ``bins`` equal-width bins:
    :math:`\sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|`. A confidence ``c`` falls in
    bin ``min(floor(c * bins), bins - 1)``. None for no items.

    Example:
        >>> expected_calibration_error([0.9, 0.9, 0.6], [True, False, True], bins=10)
        0.4
    """
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        return None
    idx = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() / c.size * abs(ok[sel].mean() - c[sel].mean())
    return float(total)


def summary(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, median and the values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else None,
            "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "median": float(np.median(v)) if v.size else None,
            "values": [float(x) for x in v]}


def wilcoxon_min_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with ``n``
    pairs: every sign alike, ``2 / 2^n``."""
    return min(1.0, 2.0 ** (1 - n))


def t_tost_p(diffs: Sequence[float], margin: float) -> float | None:
    """The seed-level equivalence test: two one-sided paired t-tests of the mean difference
    against ``-margin`` and ``+margin``, the larger p. None below 2 pairs; with every difference
    equal (no spread), 0 inside the margin and 1 outside.

    Example:
        >>> round(t_tost_p([0.001, -0.001, 0.0], 0.005), 4)
        0.0065
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if d.size < 2:
        return None
    if np.all(d == d[0]):
        return 0.0 if abs(d[0]) < margin else 1.0
    low = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    high = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(low, high))


def paired_tests(a: Sequence[float], b: Sequence[float], margin: float | None = None) -> dict:
    """Seed-level tests of the paired differences ``a - b``: the mean and standard deviation,
    the wins (seeds where ``a`` is higher) with the two-sided sign-test p-value, the paired
    t-test p-value, and the Wilcoxon signed-rank p-value when there are at least
    :data:`MIN_WILCOXON_PAIRS` pairs (else None, with the smallest p it could reach); None where
    a test is undefined (fewer than 2 pairs, or every difference 0). Given an equivalence
    ``margin``, also :func:`t_tost_p` as ``t_tost_p``."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    out = {"pairs": int(d.size), "mean_diff": float(d.mean()) if d.size else None,
           "sd_diff": float(d.std(ddof=1)) if d.size > 1 else None,
           "diffs": [float(x) for x in d], "wins": wins,
           "sign_test_p": (float(stats.binomtest(wins, wins + losses).pvalue)
                           if wins + losses else None),
           "t_test_p": None, "wilcoxon_p": None, "wilcoxon_min_p": wilcoxon_min_p(int(d.size))}
    if margin is not None:
        out["t_tost_p"] = t_tost_p(d, margin)
    if d.size >= 2 and np.any(d != 0):
        t = stats.ttest_rel(a, b)
        out["t_test_p"] = None if math.isnan(t.pvalue) else float(t.pvalue)
        if d.size >= MIN_WILCOXON_PAIRS:
            out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def per_document(counts: np.ndarray, documents: Sequence | None) -> np.ndarray:
    """Unit counts ``(..., U, k)`` summed by document ``(..., D, k)`` (each unit its own
    document when ``documents`` is None), documents in order of first appearance."""
    if documents is None:
        return counts
    index: dict[str, int] = {}
    idx = np.array([index.setdefault(str(d), len(index)) for d in documents])
    out = np.zeros(counts.shape[:-2] + (len(index), counts.shape[-1]), dtype=np.float64)
    for lead in np.ndindex(counts.shape[:-2]):
        np.add.at(out[lead], idx, counts[lead])
    return out


def two_level_bootstrap(counts_a: np.ndarray, counts_b: np.ndarray,
                        score: Callable[[np.ndarray], np.ndarray], *,
                        documents: Sequence | None = None, resamples: int = RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, margin: float = MARGIN,
                        chunk: int = 500) -> dict:
    """The paired difference of two configurations, resampling seeds and documents.

    Args:
        counts_a, counts_b: ``(S, U, k)``: per paired seed (the same seeds in the same order)
            and per unit (sentence or question, the same units in the same order), the
            additive statistics of the score.
        score: the score of summed counts ``(..., k) -> (...)`` (entity F1 from true
            positives, predicted and gold; mean F1 from an F1 sum and a count).
        documents: each unit's document, or None (each unit its own).
        resamples, seed: the bootstrap's size and its random seed (a fixed draw).
        margin: the equivalence margin of :func:`tost_p`.

    Returns:
        ``diff`` (the mean over seeds of the paired difference), ``ci_low``/``ci_high`` (95%
        percentile interval), ``ci90_low``/``ci90_high``, ``p_value`` (two-sided), ``tost_p``
        (equivalence within ``margin``), ``resamples``, ``seed``, ``seeds``, ``documents``.
    """
    a = per_document(np.asarray(counts_a, dtype=np.float64), documents)
    b = per_document(np.asarray(counts_b, dtype=np.float64), documents)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (seeds, units, k) arrays of one shape, got {a.shape} "
                         f"and {b.shape}")
    n_seeds, n_docs, _ = a.shape
    observed = float(np.mean(score(a.sum(1)) - score(b.sum(1))))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for lo in range(0, resamples, chunk):
        r = min(chunk, resamples - lo)
        weights = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=r)    # (r, D)
        drawn = rng.integers(0, n_seeds, size=(r, n_seeds))                          # (r, S)
        sa = np.einsum("rd,sdk->rsk", weights, a)
        sb = np.einsum("rd,sdk->rsk", weights, b)
        diff = score(sa) - score(sb)                                                 # (r, S)
        stats[lo: lo + r] = np.take_along_axis(diff, drawn, axis=1).mean(1)
    low, high = np.percentile(stats, [2.5, 97.5])
    low90, high90 = np.percentile(stats, [5, 95])
    return {"diff": observed, "ci_low": float(low), "ci_high": float(high),
            "ci90_low": float(low90), "ci90_high": float(high90),
            "p_value": percentile_p(stats), "tost_p": tost_p(stats, margin), "margin": margin,
            "resamples": resamples, "seed": seed, "seeds": n_seeds, "documents": n_docs}


def percentile_p(stats: np.ndarray) -> float:
    """Two-sided p-value of 0 under a bootstrap distribution: twice the smaller share of
    resamples at or beyond 0 on either side, counting the observed statistic (+1), at most 1."""
    n = stats.size
    below = (1 + int((stats <= 0).sum())) / (n + 1)
    above = (1 + int((stats >= 0).sum())) / (n + 1)
    return min(1.0, 2 * min(below, above))


def tost_p(stats: np.ndarray, margin: float) -> float:
    """Two one-sided tests of equivalence within ``(-margin, margin)``: the larger of the
    shares of resamples at or below ``-margin`` and at or above ``margin`` (+1 counted)."""
    n = stats.size
    return max((1 + int((stats <= -margin).sum())) / (n + 1),
               (1 + int((stats >= margin).sum())) / (n + 1))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are left out of the
    family and stay None): the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1)
    p_(j))``."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    order = sorted(idx, key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(bootstrap: dict, p_adjusted: float | None, tost_adjusted: float | None, *,
            seed_p: float | None, seed_tost: float | None, alpha: float = ALPHA,
            seeds: int | None = None) -> str:
    """The words a comparison may use: ``better`` or ``worse`` when the adjusted bootstrap
    p-value and the adjusted paired t-test over seeds (``seed_p``) are both below ``alpha``;
    ``no detectable difference`` when the adjusted bootstrap equivalence test and the adjusted
    seed-level one (``seed_tost``, :func:`t_tost_p`) both are; else ``inconclusive``. An
    undefined test (None) supports nothing. Below :data:`MIN_SEEDS` paired seeds the interval
    is conditional on one trained model, and there is no verdict."""
    if seeds is not None and seeds < MIN_SEEDS:
        return "one seed: no verdict"

    def below(*ps):
        return all(p is not None and p < alpha for p in ps)

    if below(p_adjusted, seed_p):
        return "better" if bootstrap["diff"] > 0 else "worse"
    if below(tost_adjusted, seed_tost):
        return "no detectable difference"
    return "inconclusive"
