"""Statistics across conditions: Welch's t-test, one-way ANOVA, Tukey HSD, Dunnett, trends.

The test statistics are computed here from their textbook formulas with NumPy, and only
the distributions (``t``, ``F``, studentized range) come from :mod:`scipy.stats`, so that
the tests can compare each result with scipy's and statsmodels' own implementations.
Dunnett's many-to-one test is delegated to :func:`scipy.stats.dunnett` (its p-value is a
multivariate-t integral), with a fixed seed so that reports are reproducible.

Conventions: two-sided tests; a group needs at least two values for a variance, so
statistics that need one are NaN otherwise (never an exception: a condition with one
well is still shown, just without a p-value). Stars: ``***`` p < 0.001, ``**`` p < 0.01,
``*`` p < 0.05, ``ns`` otherwise, ``""`` for NaN.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = [
    "AnovaResult",
    "TTestResult",
    "TrendResult",
    "compare_conditions",
    "dunnett",
    "holm",
    "linear_trend",
    "mean_sem",
    "one_way_anova",
    "stars",
    "tukey_hsd",
    "welch_ttest",
]


@dataclass(frozen=True)
class TTestResult:
    """Welch's two-sample t-test of ``mean(a) - mean(b)``."""

    diff: float
    t: float
    df: float
    p: float


@dataclass(frozen=True)
class AnovaResult:
    """One-way ANOVA: F statistic, degrees of freedom and p-value."""

    f: float
    df_between: int
    df_within: int
    p: float
    ms_within: float


@dataclass(frozen=True)
class TrendResult:
    """Least-squares line ``y = intercept + slope * x`` and the test of slope = 0."""

    slope: float
    intercept: float
    r: float
    p: float
    stderr: float
    n: int


def _clean(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def mean_sem(values) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof=1) and n of the finite values.

    SEM is NaN for fewer than two values; mean is NaN for none.
    """
    a = _clean(values)
    n = a.size
    mean = float(a.mean()) if n else np.nan
    sem = float(a.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    return mean, sem, n


def stars(p: float) -> str:
    """Significance stars: ``***`` p < 0.001, ``**`` < 0.01, ``*`` < 0.05, else ``ns``.

    NaN gives ``""`` (no test).
    """
    if p is None or not np.isfinite(p):
        return ""
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < 0.05:
        return "*"
    return "ns"


def welch_ttest(a, b) -> TTestResult:
    """Welch's unequal-variance t-test of two samples (two-sided).

    Parameters
    ----------
    a, b : (n,) array_like
        The samples; NaNs are dropped.

    Returns
    -------
    TTestResult
        ``diff = mean(a) - mean(b)``, ``t``, Welch-Satterthwaite ``df`` and ``p``. NaN
        where a sample has fewer than two values or both have zero variance.
    """
    a, b = _clean(a), _clean(b)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        diff = float(a.mean() - b.mean()) if na and nb else np.nan
        return TTestResult(diff, np.nan, np.nan, np.nan)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    diff = float(a.mean() - b.mean())
    se2 = va + vb
    if se2 <= 0:
        return TTestResult(diff, np.nan, np.nan, np.nan)
    t = diff / np.sqrt(se2)
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    p = 2.0 * _st.t.sf(abs(t), df)
    return TTestResult(diff, float(t), float(df), float(p))


def one_way_anova(groups: Sequence) -> AnovaResult:
    """One-way ANOVA of ``k`` groups (between / within mean squares, F test).

    Parameters
    ----------
    groups : sequence of (n_i,) array_like
        The samples; NaNs are dropped, empty groups ignored.

    Returns
    -------
    AnovaResult
        NaN F and p with fewer than two groups, no within-group degrees of freedom, or
        zero within-group variance.
    """
    gs = [g for g in (_clean(g) for g in groups) if g.size]
    k = len(gs)
    n = sum(g.size for g in gs)
    if k < 2 or n - k < 1:
        return AnovaResult(np.nan, max(k - 1, 0), max(n - k, 0), np.nan, np.nan)
    grand = np.concatenate(gs).mean()
    ssb = sum(g.size * (g.mean() - grand) ** 2 for g in gs)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in gs)
    dfb, dfw = k - 1, n - k
    msw = ssw / dfw
    if msw <= 0:
        return AnovaResult(np.nan, dfb, dfw, np.nan, float(msw))
    f = (ssb / dfb) / msw
    return AnovaResult(float(f), dfb, dfw, float(_st.f.sf(f, dfb, dfw)), float(msw))


def tukey_hsd(
    groups: Mapping[str, object] | Sequence, *, alpha: float = 0.05, control: str | None = None
) -> pd.DataFrame:
    """Tukey's honestly significant difference test, Tukey-Kramer form for unequal n.

    Parameters
    ----------
    groups : mapping of name to (n_i,) array_like, or sequence
        The samples (a sequence is named ``"0"``, ``"1"``...). NaNs dropped.
    alpha : float
        Family-wise level of the confidence intervals.
    control : str, optional
        Only the pairs that include this group (the adjustment still counts all ``k``
        groups, as Tukey's test does; this only saves computing the other pairs).

    Returns
    -------
    DataFrame
        One row per pair ``i < j`` (in the given order): ``group1, group2, diff`` (mean of
        group2 minus mean of group1, as statsmodels writes it), ``q`` (studentized range
        statistic), ``p`` (adjusted), ``ci_low, ci_high``, ``reject``.
    """
    if not isinstance(groups, Mapping):
        groups = {str(i): g for i, g in enumerate(groups)}
    names = [k for k, g in groups.items() if _clean(g).size]
    gs = [_clean(groups[k]) for k in names]
    k, n = len(gs), sum(g.size for g in gs)
    cols = ["group1", "group2", "diff", "q", "p", "ci_low", "ci_high", "reject"]
    if k < 2 or n - k < 1:
        return pd.DataFrame(columns=cols)
    dfw = n - k
    msw = sum(((g - g.mean()) ** 2).sum() for g in gs) / dfw
    qcrit = _qcrit(1 - alpha, k, dfw)
    rows = []
    for i in range(k):
        for j in range(i + 1, k):
            if control is not None and control not in (names[i], names[j]):
                continue
            diff = gs[j].mean() - gs[i].mean()
            se = np.sqrt(msw / 2.0 * (1.0 / gs[i].size + 1.0 / gs[j].size))
            if se > 0:
                q = abs(diff) / se
                p = float(_st.studentized_range.sf(q, k, dfw))
            else:
                q, p = np.nan, np.nan
            rows.append(
                (names[i], names[j], diff, q, min(p, 1.0), diff - qcrit * se, diff + qcrit * se,
                 bool(p < alpha))
            )  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


@functools.lru_cache(maxsize=256)
def _qcrit(level: float, k: int, df: int) -> float:
    return float(_st.studentized_range.ppf(level, k, df))  # slow (an integral): cached


def dunnett(groups: Mapping[str, object], control: str, *, seed: int = 0) -> pd.DataFrame:
    """Dunnett's many-to-one test of each group against ``control``.

    Delegates to :func:`scipy.stats.dunnett` (seeded: its p-values come from a
    quasi-Monte-Carlo integral).

    Returns
    -------
    DataFrame
        One row per non-control group with at least one value: ``group, diff`` (group
        minus control), ``t``, ``p``. Empty when the test cannot run (control or
        within-group degrees of freedom missing).
    """
    cols = ["group", "diff", "t", "p"]
    ctrl = _clean(groups.get(control, []))
    others = {k: _clean(v) for k, v in groups.items() if k != control and _clean(v).size}
    n = ctrl.size + sum(v.size for v in others.values())
    if ctrl.size == 0 or not others or n - (len(others) + 1) < 1:
        return pd.DataFrame(columns=cols)
    if ctrl.var() == 0 and all(v.var() == 0 for v in others.values()):
        return pd.DataFrame(columns=cols)
    with warnings.catch_warnings():
        # scipy warns about precision loss for near-identical samples; the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.dunnett(*others.values(), control=ctrl, rng=np.random.default_rng(seed))
    rows = [
        (name, v.mean() - ctrl.mean(), float(t), float(p))
        for (name, v), t, p in zip(others.items(), res.statistic, res.pvalue, strict=True)
    ]
    return pd.DataFrame(rows, columns=cols)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs kept, not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def linear_trend(x, y) -> TrendResult:
    """Least-squares slope of ``y`` over ``x`` and the two-sided t-test of slope = 0.

    Pairs with a NaN are dropped. NaN results with fewer than three points or a
    constant ``x``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    nan = TrendResult(np.nan, np.nan, np.nan, np.nan, np.nan, n)
    if n < 3:
        return nan
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    syy = ((y - ym) ** 2).sum()
    sxy = ((x - xm) * (y - ym)).sum()
    if sxx <= 0:
        return nan
    slope = sxy / sxx
    intercept = ym - slope * xm
    r = sxy / np.sqrt(sxx * syy) if syy > 0 else 0.0
    resid = max(syy - slope * sxy, 0.0)
    stderr = np.sqrt(resid / (n - 2) / sxx)
    if stderr > 0:
        p = 2.0 * _st.t.sf(abs(slope / stderr), n - 2)
    else:
        p = 0.0 if slope != 0 else 1.0
    return TrendResult(float(slope), float(intercept), float(r), float(p), float(stderr), n)


def compare_conditions(
    values: pd.DataFrame,
    *,
    value: str = "value",
    group: str = "condition",
    control: str | None = "DMSO",
    posthoc: str = "tukey",
) -> tuple[pd.DataFrame, AnovaResult]:
    """Every statistic of one readout across conditions, one row per condition.

    Parameters
    ----------
    values : DataFrame
        One row per replicate (field, well or experiment) with columns ``group`` and
        ``value``.
    value, group : str
        Column names.
    control : str, optional
        The condition the others are compared to (``None``: no comparisons).
    posthoc : {"tukey", "dunnett", "none"}
        Post-hoc test whose control comparison goes into ``p_posthoc``.

    Returns
    -------
    table : DataFrame
        ``condition, n, mean, sd, sem, diff, ratio`` (mean / control mean), ``t, df,
        p_welch, p_welch_holm`` (Holm over the conditions), ``p_posthoc``, ``stars``
        (from ``p_welch``), ``stars_posthoc``. Control rows have NaN tests.
    anova : AnovaResult
    """
    if posthoc not in ("tukey", "dunnett", "none"):
        raise ValueError(f"posthoc={posthoc!r}: use 'tukey', 'dunnett' or 'none'")
    groups = {
        str(name): _clean(g[value]) for name, g in values.groupby(group, sort=False, observed=True)
    }
    anova = one_way_anova(list(groups.values()))
    ctrl = groups.get(control) if control is not None else None
    ctrl_mean = float(ctrl.mean()) if ctrl is not None and ctrl.size else np.nan
    rows = []
    for name, g in groups.items():
        mean, sem, n = mean_sem(g)
        sd = float(g.std(ddof=1)) if n > 1 else np.nan
        row = {"condition": name, "n": n, "mean": mean, "sd": sd, "sem": sem}
        if ctrl is not None and name != control:
            tt = welch_ttest(g, ctrl)
            ratio = (
                mean / ctrl_mean if ctrl_mean not in (0.0,) and np.isfinite(ctrl_mean) else np.nan
            )
            row.update(diff=tt.diff, ratio=ratio, t=tt.t, df=tt.df, p_welch=tt.p)
        else:
            row.update(diff=np.nan, ratio=1.0 if name == control else np.nan, t=np.nan,
                       df=np.nan, p_welch=np.nan)  # fmt: skip
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_welch_holm"] = holm(table["p_welch"].to_numpy())
    table["p_posthoc"] = np.nan
    if ctrl is not None and ctrl.size and len(groups) > 1:
        if posthoc == "tukey":
            hsd = tukey_hsd(groups, control=control)
            for _, r in hsd.iterrows():
                if control in (r["group1"], r["group2"]):
                    other = r["group2"] if r["group1"] == control else r["group1"]
                    table.loc[table["condition"] == other, "p_posthoc"] = r["p"]
        elif posthoc == "dunnett":
            dn = dunnett(groups, control)
            for _, r in dn.iterrows():
                table.loc[table["condition"] == r["group"], "p_posthoc"] = r["p"]
    table["stars"] = [stars(p) for p in table["p_welch"]]
    table["stars_posthoc"] = [stars(p) for p in table["p_posthoc"]]
    return table, anova
