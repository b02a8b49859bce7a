"""Statistics against scipy.stats and statsmodels on known data, and their error rates."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats as st

from hcsmito import stats as hs


def _samples(seed, sizes=(5, 7, 4, 6), shifts=(0.0, 1.0, -0.5, 2.0), scales=(1, 2, 0.5, 1.5)):
    rng = np.random.default_rng(seed)
    return [rng.normal(m, s, n) for n, m, s in zip(sizes, shifts, scales, strict=True)]


@pytest.mark.parametrize("seed", range(5))
def test_welch_equals_scipy(seed):
    a, b, *_ = _samples(seed)
    ours = hs.welch_ttest(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert_allclose(ours.t, ref.statistic, rtol=1e-12)
    assert_allclose(ours.p, ref.pvalue, rtol=1e-10)
    assert_allclose(ours.df, ref.df, rtol=1e-12)
    assert_allclose(ours.diff, a.mean() - b.mean())


def test_welch_degenerate():
    assert np.isnan(hs.welch_ttest([1.0], [1.0, 2.0]).p)  # one value: no variance
    assert np.isnan(hs.welch_ttest([2.0, 2.0], [1.0, 1.0]).p)  # zero variance
    r = hs.welch_ttest([1.0, 2.0, np.nan, 3.0], [4.0, 5.0, 7.0])  # NaNs dropped
    assert_allclose(r.p, st.ttest_ind([1, 2, 3], [4, 5, 7], equal_var=False).pvalue)


@pytest.mark.parametrize("seed", range(5))
def test_anova_equals_scipy(seed):
    gs = _samples(seed)
    ours = hs.one_way_anova(gs)
    ref = st.f_oneway(*gs)
    assert_allclose(ours.f, ref.statistic, rtol=1e-12)
    assert_allclose(ours.p, ref.pvalue, rtol=1e-10)
    assert (ours.df_between, ours.df_within) == (3, sum(g.size for g in gs) - 4)


@pytest.mark.parametrize("seed", range(3))
def test_tukey_equals_scipy_and_statsmodels(seed):
    pytest.importorskip("statsmodels")
    from statsmodels.stats.multicomp import pairwise_tukeyhsd

    gs = _samples(seed)
    names = ["A", "B", "C", "D"]
    ours = hs.tukey_hsd(dict(zip(names, gs, strict=True)))
    ref = st.tukey_hsd(*gs)
    for _, r in ours.iterrows():
        i, j = names.index(r["group1"]), names.index(r["group2"])
        assert_allclose(r["p"], ref.pvalue[i, j], rtol=1e-6, atol=1e-12)
        assert_allclose(r["diff"], -ref.statistic[i, j], rtol=1e-12)  # scipy: mean_i - mean_j
    endog = np.concatenate(gs)
    labels = np.repeat(names, [g.size for g in gs])
    sm = pairwise_tukeyhsd(endog, labels, alpha=0.05)
    assert_allclose(ours["p"], sm.pvalues, rtol=1e-3, atol=1e-3)  # statsmodels interpolates
    assert_allclose(ours["diff"], sm.meandiffs, rtol=1e-12)
    assert_allclose(ours["ci_low"], sm.confint[:, 0], rtol=1e-6)
    assert_allclose(ours["ci_high"], sm.confint[:, 1], rtol=1e-6)
    assert list(ours["reject"]) == list(sm.reject)


def test_dunnett_against_scipy_and_tukey():
    gs = _samples(1, sizes=(8, 8, 8, 8))
    d = hs.dunnett({"ctrl": gs[0], "x": gs[1], "y": gs[2], "z": gs[3]}, "ctrl")
    ref = st.dunnett(gs[1], gs[2], gs[3], control=gs[0], rng=np.random.default_rng(0))
    assert_allclose(d["p"], ref.pvalue)
    assert_allclose(d["t"], ref.statistic)
    # fewer comparisons than Tukey's all-pairs: never less powerful for the control pairs
    tk = hs.tukey_hsd({"ctrl": gs[0], "x": gs[1], "y": gs[2], "z": gs[3]})
    tk = tk[tk["group1"] == "ctrl"].set_index("group2")["p"]
    assert (d.set_index("group")["p"] <= tk + 1e-3).all()


@pytest.mark.parametrize("seed", range(4))
def test_linear_trend_equals_linregress(seed):
    rng = np.random.default_rng(seed)
    x = np.repeat([1.0, 2.0, 3.0], 4)
    y = 2.0 + 0.7 * x * seed + rng.normal(0, 1, x.size)
    ours = hs.linear_trend(x, y)
    ref = st.linregress(x, y)
    assert_allclose(
        [ours.slope, ours.intercept, ours.r, ours.p, ours.stderr],
        [ref.slope, ref.intercept, ref.rvalue, ref.pvalue, ref.stderr],
        rtol=1e-9,
        atol=1e-12,
    )
    assert np.isnan(hs.linear_trend([1, 1, 1], [1, 2, 3]).slope)


def test_holm_against_definition():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    # by hand: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1 -> 0.04, 0.09, 0.08->0.09, 0.2
    assert_allclose(hs.holm(p), [0.04, 0.09, np.nan, 0.09, 0.2])


def test_stars_and_mean_sem():
    assert [hs.stars(p) for p in (0.0005, 0.001, 0.005, 0.02, 0.05, 0.5, np.nan)] == [
        "***", "**", "**", "*", "ns", "ns", ""
    ]  # fmt: skip
    m, s, n = hs.mean_sem([1.0, 2.0, 4.0, np.nan])
    assert (m, n) == (7 / 3, 3)
    assert_allclose(s, st.sem([1.0, 2.0, 4.0]))
    assert np.isnan(hs.mean_sem([3.0])[1])


def test_compare_conditions_table():
    gs = _samples(2, sizes=(6, 6, 6, 6), shifts=(0, 3, 0, -3), scales=(1, 1, 1, 1))
    df = pd.DataFrame(
        {"condition": np.repeat(["DMSO", "up", "same", "down"], 6), "value": np.concatenate(gs)}
    )
    table, anova = hs.compare_conditions(df, control="DMSO")
    t = table.set_index("condition")
    assert_allclose(t.loc["up", "p_welch"], st.ttest_ind(gs[1], gs[0], equal_var=False).pvalue)
    assert_allclose(anova.p, st.f_oneway(*gs).pvalue)
    assert_allclose(t.loc["down", "ratio"], gs[3].mean() / gs[0].mean())
    assert t.loc["up", "stars"] == hs.stars(t.loc["up", "p_welch"]) != "ns"
    assert t.loc["down", "diff"] < 0 and t.loc["down", "stars"] != "ns"
    assert np.isnan(t.loc["DMSO", "p_welch"]) and t.loc["DMSO", "ratio"] == 1.0
    tk = st.tukey_hsd(*gs).pvalue
    assert_allclose(t.loc[["up", "same", "down"], "p_posthoc"], tk[0, 1:], rtol=1e-6)


def test_false_positive_rate_under_null():
    """Same distribution in every condition: each test rejects at its nominal 5 %."""
    rng = np.random.default_rng(123)
    n_sim, k, n = 2000, 4, 4
    data = rng.normal(10.0, 2.0, (n_sim, k, n))
    p_welch = np.array([hs.welch_ttest(d[1], d[0]).p for d in data])
    p_anova = np.array([hs.one_way_anova(list(d)).p for d in data])
    # binomial 99.9 % band around 0.05 for 2000 draws: about 0.034 .. 0.067
    lo, hi = st.binom.ppf([0.0005, 0.9995], n_sim, 0.05) / n_sim
    assert lo <= np.mean(p_welch < 0.05) <= hi
    assert lo <= np.mean(p_anova < 0.05) <= hi
    # family-wise: Holm over k-1 Welch tests stays at or below 5 %
    fam = [
        np.nanmin(hs.holm([hs.welch_ttest(d[i], d[0]).p for i in range(1, k)])) < 0.05
        for d in data[:500]
    ]
    assert np.mean(fam) <= st.binom.ppf(0.9995, 500, 0.05) / 500


def test_compare_conditions_dunnett_and_errors():
    gs = _samples(4, sizes=(6, 6, 6), shifts=(0, 2, 0), scales=(1, 1, 1))
    df = pd.DataFrame({"condition": np.repeat(["DMSO", "up", "same"], 6),
                       "value": np.concatenate(gs)})  # fmt: skip
    table, _ = hs.compare_conditions(df, control="DMSO", posthoc="dunnett")
    ref = st.dunnett(gs[1], gs[2], control=gs[0], rng=np.random.default_rng(0))
    assert_allclose(table.set_index("condition").loc[["up", "same"], "p_posthoc"], ref.pvalue)
    table, _ = hs.compare_conditions(df, control=None)
    assert table["p_welch"].isna().all() and table["p_posthoc"].isna().all()
    with pytest.raises(ValueError, match="posthoc"):
        hs.compare_conditions(df, posthoc="scheffe")
