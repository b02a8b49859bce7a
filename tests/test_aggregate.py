"""Aggregation: exact means / SEM on hand-made tables, red+ calibration, failed fields, and
recovery of the designed effects (and of no effect) on tables simulated from the synthetic
assay model (``hcsmito.synth.CONDITIONS``)."""

import json

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats as st

from hcsmito.aggregate import (
    aggregate_tables,
    apply_red_positive,
    calibrate_red_positive,
    read_aggregates,
    write_aggregates,
)
from hcsmito.synth import CONDITIONS


def _fields(rows):
    cols = ["well", "field", "n_msc", "n_msc_red_positive", "n_foci", "foci_area_um2",
            "n_jurkat", "n_jurkat_adhered", "n_tnt", "status"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    df.insert(0, "plate", "p")
    df["foci_volume_um3"] = df["foci_area_um2"] * 0.5
    df["n_tnt"] = df["n_tnt"].astype("Int64")
    df["n_tnt_with_mito"] = df["n_tnt"]
    return df


def _map(rows):
    return pd.DataFrame(rows, columns=["well", "condition", "replicate", "day"]).assign(
        drug="", inhibitor=""
    )


HAND = _fields(
    [  # well, field, n_msc, red+, n_foci, area, n_jurkat, adhered, n_tnt, status
        ("B/2", 0, 4, 2, 6, 10.0, 10, 5, 2, "ok"),
        ("B/2", 1, 6, 6, 12, 20.0, 10, 3, None, "ok"),
        ("C/2", 0, 5, 1, 1, 4.0, 8, 2, 1, "ok"),
        ("C/2", 1, 99, 99, 999, 999.0, 99, 99, 99, "failed"),
        ("B/3", 0, 4, 0, 0, 0.0, 10, 1, 0, "ok"),
        ("C/3", 0, 2, 1, 1, 2.0, 5, 0, 0, "ok"),
        ("C/3", 1, 0, 0, 0, 0.0, 5, 1, 0, "ok"),
    ]
)
HAND_MAP = _map([("B2", "DMSO", 1, 1), ("C2", "DMSO", 2, 1), ("B3", "X", 1, 1), ("C3", "X", 2, 1)])


def test_well_values_by_hand():
    res = aggregate_tables({"fields": HAND}, HAND_MAP, unit="well")
    w = res["wells"].set_index("well")
    # pooled ratios: B/2 red+ (2+6)/(4+6), foci per MSC 18/10; the failed field of C/2 is out
    assert_allclose(w.loc["B/2", "pct_msc_red_positive"], 80.0)
    assert_allclose(w.loc["B/2", "foci_per_msc"], 1.8)
    assert_allclose(w.loc["C/2", "pct_msc_red_positive"], 20.0)
    assert_allclose(w.loc["B/2", "pct_jurkat_adhered"], 40.0)
    # per-field quantities are field means; SEM over fields
    assert_allclose(w.loc["B/2", "foci_area_um2"], 15.0)
    assert_allclose(w.loc["B/2", "foci_area_um2_sem"], st.sem([10.0, 20.0]))
    assert_allclose(w.loc["B/2", "n_tnt"], 2.0)  # the null TNT count is skipped
    # a field without MSCs contributes nothing to the pooled ratio
    assert_allclose(w.loc["C/3", "pct_msc_red_positive"], 50.0)
    assert list(w["n_fields_failed"]) == [0, 0, 1, 0]  # B/2, B/3, C/2, C/3
    assert w.loc["C/2", "n_msc"] == 5 and w.loc["C/2", "n_fields_ok"] == 1
    assert res["summary"]["n_fields_failed"] == 1
    assert res["summary"]["failed_fields"][0]["well"] == "C/2"

    c = res["conditions"].set_index(["readout", "condition"])
    r = c.loc[("pct_msc_red_positive", "DMSO")]
    assert (r["n"], r["mean"]) == (2, 50.0)
    assert_allclose(r["sem"], st.sem([80.0, 20.0]))
    x = c.loc[("pct_msc_red_positive", "X")]  # B/3: 0 %, C/3: 50 %
    assert_allclose([x["mean"], x["diff"], x["ratio"]], [25.0, -25.0, 0.5])
    assert_allclose(x["p_welch"], st.ttest_ind([0.0, 50.0], [80.0, 20.0], equal_var=False).pvalue)
    adh = c.loc[("pct_jurkat_adhered", "X")]  # adhesion ratio vs control
    assert_allclose(adh["ratio"], np.mean([10.0, 10.0]) / np.mean([40.0, 25.0]))


def test_units_field_and_experiment():
    res = aggregate_tables({"fields": HAND}, HAND_MAP, unit="field", posthoc="none")
    c = res["conditions"].set_index(["readout", "condition"])
    # DMSO fields: 50 %, 100 %, 20 % (failed field out)
    r = c.loc[("pct_msc_red_positive", "DMSO")]
    assert r["n"] == 3
    assert_allclose([r["mean"], r["sem"]], [170 / 3, st.sem([50.0, 100.0, 20.0])])
    x = c.loc[("pct_msc_red_positive", "X")]  # C/3 f1 has no MSCs: NaN, not a replicate
    assert x["n"] == 2
    m = _map([("B2", "DMSO", 1, 1), ("C2", "DMSO", 1, 1), ("B3", "X", 1, 1), ("C3", "X", 2, 1)])
    res = aggregate_tables({"fields": HAND}, m, unit="experiment", posthoc="none")
    c = res["conditions"].set_index(["readout", "condition"])
    assert c.loc[("foci_area_um2", "DMSO"), "n"] == 1  # both DMSO wells in experiment 1
    assert_allclose(c.loc[("foci_area_um2", "DMSO"), "mean"], np.mean([15.0, 4.0]))
    assert c.loc[("foci_area_um2", "X"), "n"] == 2


def test_unmapped_and_empty_wells():
    m = _map([("B2", "DMSO", 1, 1), ("C2", "DMSO", 2, 1), ("B3", "X", 1, 1), ("D9", "X", 2, 1)])
    res = aggregate_tables({"fields": HAND}, m)
    w = res["wells"].set_index("well")
    assert pd.isna(w.loc["C/3", "condition"]) and w.loc["D/9", "n_fields"] == 0
    assert res["summary"]["wells_not_in_map"] == ["C/3"]
    assert "D/9" in " ".join(res["summary"]["notes"])
    reps = res["replicates"]
    assert "C/3" not in set(reps["well"]) and "D/9" not in set(reps["well"])
    with pytest.raises(ValueError, match="unit="):
        aggregate_tables({"fields": HAND}, m, unit="plate")
    with pytest.raises(ValueError, match="unknown readouts"):
        aggregate_tables({"fields": HAND}, m, readouts=["n_mitos"])


def test_calibrate_red_positive_by_hand():
    rng = np.random.default_rng(0)
    ctrl = np.r_[np.zeros(90), np.ones(6), [2, 2, 3], [5]].astype(int)  # 100 control cells
    rng.shuffle(ctrl)
    cells = pd.DataFrame({"well": np.repeat(["B/2", "C/2"], 50), "n_foci": ctrl,
                          "foci_volume_um3": ctrl * 0.25})  # fmt: skip
    other = pd.DataFrame({"well": "B/3", "n_foci": np.full(10, 9), "foci_volume_um3": 9.0})
    cells = pd.concat([cells, other], ignore_index=True)
    pm = _map([("B2", "neg", 1, 1), ("C2", "neg", 2, 1), ("B3", "X", 1, 1)])
    # >= 1 foci: 10 %, >= 2: 4 % -> k = 2 at 5 %; at 1 % -> >= 5 (1 %) ; at 0 % -> 6
    assert calibrate_red_positive(cells, pm, controls=["neg"])["min_foci"] == 2
    assert calibrate_red_positive(cells, pm, controls=["neg"], max_share=0.01)["min_foci"] == 5
    assert calibrate_red_positive(cells, pm, controls=["neg"], max_share=0.0)["min_foci"] == 6
    r = calibrate_red_positive(cells, pm, controls=["neg"], by="foci_volume_um3")
    assert_allclose(r["min_volume_um3"], 0.5) and r["share"] == 0.04 and r["n_cells"] == 100
    with pytest.raises(ValueError, match="not in the plate map"):
        calibrate_red_positive(cells, pm, controls=["DMSO"])


def test_apply_red_positive_recounts_fields():
    cells = pd.DataFrame({"plate": "p", "well": ["B/2"] * 3 + ["B/3"], "field": 0,
                          "cell_id": [1, 2, 3, 1], "n_foci": [0, 1, 3, 2],
                          "foci_volume_um3": [0.0, 2.0, 0.3, 0.1]})  # fmt: skip
    fields = _fields(
        [("B/2", 0, 3, 0, 4, 1.0, 1, 1, 0, "ok"), ("B/3", 0, 1, 0, 2, 1, 1, 1, 0, "ok"),
         ("B/4", 0, 0, 0, 0, 0.0, 1, 1, 0, "ok")]
    )  # fmt: skip
    out = apply_red_positive({"cells": cells, "fields": fields}, min_foci=2, min_volume_um3=1.0)
    assert list(out["cells"]["red_positive"]) == [False, True, True, True]
    f = out["fields"].set_index("well")
    assert list(f["n_msc_red_positive"]) == [2, 1, 0]
    assert_allclose(f.loc["B/2", "pct_msc_red_positive"], 200 / 3)
    assert np.isnan(f.loc["B/4", "pct_msc_red_positive"])


# ------------------------------------------------------------------ simulated assay tables


def simulate_tables(layout, *, seed, fields=2, n_msc=6, n_jurkat=10, null=None):
    """Per-field and per-MSC tables drawn from the synthetic assay model: Poisson foci per
    MSC at the condition's rate, binomial adhesion, Poisson TNTs (``null``: every well
    drawn from that one condition whatever its label)."""
    rng = np.random.default_rng(seed)
    frows, crows = [], []
    for well, cond in layout.items():
        c = CONDITIONS[null or cond]
        for f in range(fields):
            nf = rng.poisson(c.foci_per_msc, n_msc)
            vol = [rng.gamma(2.0, 0.1, k).sum() for k in nf]
            adh = rng.binomial(n_jurkat, c.adhesion_share)
            tnt = rng.poisson(c.tnt_rate)
            frows.append(dict(plate="sim", well=well, field=f, n_msc=n_msc,
                              n_msc_red_positive=int((nf >= 1).sum()), n_foci=int(nf.sum()),
                              foci_volume_um3=float(np.sum(vol)),
                              foci_area_um2=float(np.sum(vol)) * 1.6, n_jurkat=n_jurkat,
                              n_jurkat_adhered=adh, n_tnt=tnt,
                              n_tnt_with_mito=rng.binomial(tnt, 0.4), status="ok"))  # fmt: skip
            for i, (k, v) in enumerate(zip(nf, vol, strict=True)):
                crows.append(dict(plate="sim", well=well, field=f, cell_id=i + 1, n_foci=k,
                                  foci_volume_um3=v, red_positive=k >= 1))  # fmt: skip
    fields_df = pd.DataFrame(frows).astype({"n_tnt": "Int64", "n_tnt_with_mito": "Int64"})
    return {"fields": fields_df, "cells": pd.DataFrame(crows)}


def layout_plate(conditions, wells_per_condition, rows="BCDEFG"):
    """Condition per column, replicate wells down the rows: {'B/2': 'DMSO', ...}."""
    return {f"{rows[r]}/{col}": cond for col, cond in enumerate(conditions, start=2)
            for r in range(wells_per_condition)}  # fmt: skip


def plate_map_of(layout):
    rep = {}
    rows = []
    for w, c in layout.items():
        rep[c] = rep.get(c, 0) + 1
        rows.append((w, c, rep[c], 1))
    return _map(rows)


CONDS = ("DMSO", "cytochalasin D", "18-alpha-GA", "dynasore", "anti-ICAM-1")


def test_designed_effects_recovered():
    layout = layout_plate(CONDS, 4)
    res = aggregate_tables(simulate_tables(layout, seed=1), plate_map_of(layout))
    c = res["conditions"].set_index(["readout", "condition"])
    for readout in ("foci_per_msc", "pct_msc_red_positive", "foci_area_um2", "n_tnt"):
        cd = c.loc[(readout, "cytochalasin D")]
        assert cd["diff"] < 0 and cd["p_welch"] < 0.01 and cd["p_posthoc"] < 0.01, readout
        assert cd["stars"] in ("**", "***")
    icam = c.loc[("pct_jurkat_adhered", "anti-ICAM-1")]
    assert icam["ratio"] < 0.5 and icam["p_welch"] < 0.05 and icam["stars"] != "ns"
    assert c.loc[("foci_per_msc", "DMSO"), "p_anova"] < 1e-3
    # the generator's rates are what the plate reports (foci per MSC within 3 SEM)
    for cond in CONDS:
        r = c.loc[("foci_per_msc", cond)]
        assert abs(r["mean"] - CONDITIONS[cond].foci_per_msc) < 3 * r["sem"] + 1e-9, cond


def test_no_effect_no_significance_over_seeds():
    """Relabelled null plates: Welch vs control and ANOVA reject at about the nominal 5 %."""
    layout = layout_plate(CONDS, 3)
    pm = plate_map_of(layout)
    p_w, p_a = [], []
    for seed in range(40):
        res = aggregate_tables(
            simulate_tables(layout, seed=seed, null="DMSO", fields=1),
            pm,
            readouts=["foci_per_msc", "pct_jurkat_adhered"],
            posthoc="none",
        )
        c = res["conditions"]
        p_w += list(c["p_welch"].dropna())
        p_a += list(c.drop_duplicates(["readout"])["p_anova"])
    p_w, p_a = np.array(p_w), np.array(p_a)
    assert len(p_w) == 40 * 2 * 4 and len(p_a) == 80
    # Welch with 3 vs 3 is conservative, and the comparisons share a control: no more
    # false positives than the nominal 5 % (upper 99.9 % binomial bound), but some
    hi_w = st.binom.ppf(0.9995, p_w.size, 0.05) / p_w.size
    assert 0.005 < np.mean(p_w < 0.05) <= hi_w, np.mean(p_w < 0.05)
    lo, hi = st.binom.ppf([0.0005, 0.9995], p_a.size, 0.05) / p_a.size
    assert lo <= np.mean(p_a < 0.05) <= hi, np.mean(p_a < 0.05)


def test_calibrated_red_positive_on_simulated_plate():
    layout = layout_plate(CONDS, 3)
    tables = simulate_tables(layout, seed=3)
    pm = plate_map_of(layout)
    res = aggregate_tables(tables, pm, calibrate=["cytochalasin D"], max_share=0.1)
    rule = res["summary"]["red_positive"]
    cd_wells = set(pm.loc[pm["condition"] == "cytochalasin D", "well"])
    nf = tables["cells"].loc[tables["cells"]["well"].isin(cd_wells), "n_foci"]
    k = rule["min_foci"]
    assert np.mean(nf >= k) <= 0.1 < np.mean(nf >= k - 1) or k == 1
    w = res["wells"].set_index("well")
    cells = tables["cells"]
    for well in ("B/2", "B/3"):
        sel = cells[cells["well"] == well]
        assert_allclose(w.loc[well, "pct_msc_red_positive"], 100 * np.mean(sel["n_foci"] >= k))


def test_time_course_trend():
    layout = {f"{r}/{c}": "DMSO" for r in "BCD" for c in (2, 3, 4)}
    days = {f"{r}/{c}": c - 1 for r in "BCD" for c in (2, 3, 4)}
    tables = simulate_tables(layout, seed=5)
    f = tables["fields"]
    f["n_foci"] = f["n_foci"] * f["well"].map(days)  # transfer grows with the day
    pm = _map([(w, "DMSO", 1, days[w]) for w in layout])
    pm["replicate"] = pm.groupby("day").cumcount() + 1
    res = aggregate_tables(tables, pm)
    tr = res["trends"].set_index(["readout", "condition"]).loc[("foci_per_msc", "DMSO")]
    reps = res["replicates"]
    reps = reps[reps["readout"] == "foci_per_msc"]
    ref = st.linregress(reps["day"], reps["value"])
    assert_allclose([tr["slope_per_day"], tr["p"]], [ref.slope, ref.pvalue])
    assert tr["slope_per_day"] > 0 and tr["p"] < 0.01
    assert set(res["conditions"]["day"]) == {1.0, 2.0, 3.0}


def test_write_and_read_aggregates(tmp_path):
    layout = layout_plate(CONDS, 2)
    tables = simulate_tables(layout, seed=0)
    (tmp_path / "tables").mkdir()
    for k, v in tables.items():
        v.to_parquet(tmp_path / "tables" / f"{k}.parquet")
    pm_path = tmp_path / "map.csv"
    plate_map_of(layout).to_csv(pm_path, index=False)
    res = write_aggregates(tmp_path, plate_map=pm_path, unit="well")
    back = read_aggregates(tmp_path)
    for name in ("wells", "conditions", "replicates"):
        assert len(back[name]) == len(res[name]) > 0
    assert_allclose(back["conditions"]["mean"], res["conditions"]["mean"])
    assert back["summary"]["plate_map"] == str(pm_path)
    # the plate map can also come from the manifest's config
    manifest = {"config": {"plate_map": str(pm_path), "statistics": {"unit": "field"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    res2 = write_aggregates(tmp_path)
    assert res2["summary"]["unit"] == "field"
    assert res2["summary"]["plate_map"] == str(pm_path)
    # the runner's manifest names it at the top level, relative paths resolve against OUT
    manifest = {"plate_map": "map.csv", "config": {"plate_map": None}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert write_aggregates(tmp_path)["summary"]["plate_map"] == str(tmp_path / "map.csv")
    manifest = {"plate_map": "gone.csv"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match="gone.csv.*--plate-map"):
        write_aggregates(tmp_path)


# ------------------------------------------------------------------ generated plate truth


def _truth_plate(tmp_path, layout, seed):
    from hcsmito.synth import SynthParams, read_truth, write_synth_plate

    # the same physical field on coarse voxels: the truth tables are what is tested
    p = SynthParams(shape=(12, 128, 128), voxel_size=(0.6, 0.9, 0.9)).varied(voxel_size=2.0)
    plate = write_synth_plate(tmp_path / "t.zarr", seed=seed, wells=layout, fields=1, params=p)
    truth = read_truth(plate)
    return {"fields": truth["fields"], "cells": truth["msc"], "foci": truth["foci"]}


def test_generated_plate_truth_direction_and_significance(tmp_path):
    """On the generator's truth tables, cytochalasin D transfers less than DMSO (and the
    plate map written beside the plate is the one used)."""
    from hcsmito.platemap import read_plate_map

    layout = {f"{r}{c}": cond for c, cond in ((2, "DMSO"), (3, "cytochalasin D")) for r in "BCDE"}
    tables = _truth_plate(tmp_path, layout, seed=0)
    pm = read_plate_map(tmp_path / "t_platemap.csv", plate_wells=list(layout))
    res = aggregate_tables(tables, pm, readouts=["foci_per_msc", "foci_volume_um3", "n_tnt"])
    c = res["conditions"].set_index(["readout", "condition"])
    for readout in ("foci_per_msc", "foci_volume_um3", "n_tnt"):
        r = c.loc[(readout, "cytochalasin D")]
        assert r["diff"] < 0 and r["p_welch"] < 0.01 and r["stars"] != "ns", (readout, r)
    # the per-well value is the truth: foci inside MSCs / MSCs
    cells = tables["cells"]
    w = res["wells"].set_index("well")
    sel = cells[cells["well"] == "B/2"]
    assert_allclose(w.loc["B/2", "foci_per_msc"], sel["n_foci"].sum() / len(sel))


def test_generated_plate_relabelled_no_difference(tmp_path):
    """All wells DMSO, half of them called something else in the map: no significance."""
    layout = {f"{r}{c}": "DMSO" for c in (2, 3) for r in "BCDE"}
    tables = _truth_plate(tmp_path, layout, seed=1)
    pm = _map([(f"{r}{c}", "DMSO" if c == 2 else "relabelled", i + 1, 1)
               for c in (2, 3) for i, r in enumerate("BCDE")])  # fmt: skip
    res = aggregate_tables(tables, pm, readouts=["foci_per_msc", "pct_msc_red_positive"])
    c = res["conditions"]
    r = c[(c["condition"] == "relabelled") & (c["readout"] == "foci_per_msc")].iloc[0]
    assert r["p_welch"] > 0.05 and r["stars"] == "ns" and abs(r["ratio"] - 1) < 0.3


def test_exclude_flags_leave_flagged_fields_out_by_hand():
    """exclude_flags: ok fields carrying a listed QC code leave the well values and the
    statistics (n drops by those fields); other flags and failed fields as before."""
    fields = HAND.copy()
    fields["qc_flags"] = pd.array(
        ["saturated", "", "vignetting", pd.NA, "saturated,out_of_focus", "", ""], dtype="string"
    )
    base = aggregate_tables({"fields": fields}, HAND_MAP, unit="field", readouts=["foci_per_msc"])
    res = aggregate_tables(
        {"fields": fields}, HAND_MAP, unit="field", readouts=["foci_per_msc"],
        exclude_flags=["saturated"],
    )  # fmt: skip
    # by hand: ok fields without "saturated"
    ok = fields[(fields["status"] == "ok") & ~fields["qc_flags"].fillna("").str.contains("sat")]
    assert len(ok) == 4  # B/2 f1, C/2 f0, C/3 f0, C/3 f1
    ok = ok.assign(
        value=ok["n_foci"] / ok["n_msc"].where(ok["n_msc"] > 0),
        condition=ok["well"].map({"B/2": "DMSO", "C/2": "DMSO", "B/3": "X", "C/3": "X"}),
    ).dropna(subset=["value"])
    hand = ok.groupby("condition")["value"].agg(["mean", "sem", "size"])
    cond = res["conditions"].set_index("condition")
    for c in hand.index:
        assert cond.loc[c, "n"] == hand.loc[c, "size"]
        assert_allclose(cond.loc[c, "mean"], hand.loc[c, "mean"])
    n_before = base["conditions"].set_index("condition")["n"]
    assert n_before["DMSO"] == cond.loc["DMSO", "n"] + 1  # B/2 f0 out
    assert "X" not in cond.index or n_before["X"] == cond.loc["X", "n"] + 1  # B/3 f0 out
    w = res["wells"].set_index("well")
    assert w.loc["B/2", "n_fields_excluded"] == 1 and w.loc["C/2", "n_fields_excluded"] == 0
    assert w.loc["B/2", "n_fields_ok"] == 2  # still ok: excluded, not failed
    assert_allclose(w.loc["B/2", "foci_per_msc"], 12 / 6)  # the well pools B/2 f1 only
    assert w.loc["B/3", "n_fields_excluded"] == 1  # its only field: no well value
    assert np.isnan(w.loc["B/3", "foci_per_msc"])
    s = res["summary"]
    assert s["exclude_flags"] == ["saturated"] and s["n_fields_excluded"] == 2
    assert [(e["well"], e["field"]) for e in s["excluded_fields"]] == [("B/2", 0), ("B/3", 0)]
    assert len(s["flagged_fields"]) == 3  # the failed field's flags do not count
    # without exclusion: the wells' values equal the run without qc_flags at all
    plain = aggregate_tables({"fields": HAND}, HAND_MAP, unit="field", readouts=["foci_per_msc"])
    pd.testing.assert_frame_equal(base["conditions"], plain["conditions"])
    with pytest.raises(ValueError, match="unknown QC flags.*nope"):
        aggregate_tables({"fields": fields}, HAND_MAP, exclude_flags=["nope"])
