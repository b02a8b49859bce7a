"""From per-field tables to well, replicate and condition tables with statistics: the
phases of :func:`aggregate_tables`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import schema
from hcsmito import stats as hs
from hcsmito.aggregate.markers import apply_marker_thresholds
from hcsmito.aggregate.markers import calibrate_markers as calibrate_markers_on
from hcsmito.aggregate.readouts import (
    KEY,
    READOUTS,
    UNITS,
    Readout,
    counts_for,
    readout_label,
    readouts_for,
)
from hcsmito.aggregate.red_positive import (
    apply_red_positive,
    calibrate_red_positive,
    cells_with_volume,
)
from hcsmito.platemap import normalize_well
from hcsmito.qc import QC_FLAGS, split_flags


def _field_values(fields: pd.DataFrame, readouts: Sequence[Readout]) -> pd.DataFrame:
    out = fields[KEY].copy()
    for r in readouts:
        num = _num(fields, r.num)
        if r.is_ratio:
            den = _num(fields, r.den)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[r.name] = np.where(den > 0, r.scale * num / den, np.nan)
        else:
            out[r.name] = r.scale * num
    return out


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").astype("float64").to_numpy()


def _well_values(fields: pd.DataFrame, readouts: Sequence[Readout]) -> pd.DataFrame:
    """Pooled ratios and field means per (plate, well); SEM over fields as ``<name>_sem``."""
    fv = _field_values(fields, readouts)
    parts = {}
    for r in readouts:
        parts[r.name] = fv[r.name]
        if r.is_ratio:
            parts[f"_num_{r.name}"] = _num(fields, r.num)
            parts[f"_den_{r.name}"] = _num(fields, r.den)
    frame = pd.DataFrame(parts, index=fields.index)
    frame[["plate", "well"]] = fields[["plate", "well"]]
    g = frame.groupby(["plate", "well"], sort=False, observed=True)
    sums, means, sems = g.sum(min_count=1), g.mean(), g.sem()
    out = pd.DataFrame(index=sums.index)
    for r in readouts:
        if r.is_ratio:
            num, den = sums[f"_num_{r.name}"], sums[f"_den_{r.name}"]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[r.name] = np.where(den > 0, r.scale * num / den, np.nan)
        else:
            out[r.name] = means[r.name]
        out[f"{r.name}_sem"] = sems[r.name]
    return out.reset_index()


def _sort_wells(df: pd.DataFrame) -> pd.DataFrame:
    def key(w):
        row, col = str(w).split("/")
        return (len(row), row, int(col))

    order = sorted(
        range(len(df)), key=lambda i: (str(df["plate"].iloc[i]), key(df["well"].iloc[i]))
    )
    return df.iloc[order].reset_index(drop=True)


def aggregate_tables(
    tables: Mapping[str, pd.DataFrame],
    plate_map: pd.DataFrame | None,
    *,
    unit: str = "well",
    readouts: Sequence[str] | None = None,
    control: str | None = "DMSO",
    posthoc: str = "tukey",
    red_positive: Mapping[str, Any] | None = None,
    calibrate: Sequence[str] | None = None,
    max_share: float = 0.05,
    calibrate_by: str = "n_foci",
    calibrate_markers: Sequence[str] | None = None,
    marker_max_share: float = 0.1,
    exclude_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """Aggregate per-field tables into per-well and per-condition results with statistics.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        At least ``fields`` (one row per field, with ``plate, well, field`` and the count
        columns of DESIGN.md; ``status`` optional, default ``"ok"``). ``cells`` (or
        ``msc``) and ``foci`` are needed only to recompute or calibrate red+.
    plate_map : DataFrame or None
        From :func:`hcsmito.platemap.read_plate_map`. ``None``: every well is its own
        condition-less sample (the heatmaps still work; no statistics).
    unit : {"well", "field", "experiment"}
        The replicate unit of mean, SEM, n and tests (see the module docstring).
    readouts : sequence of str, optional
        Names from :data:`READOUTS`, or of a marker the fields table has beyond them
        (:func:`~hcsmito.aggregate.readouts.readouts_for`; default all).
    control : str, optional
        The control condition (``None``: no comparisons).
    posthoc : {"tukey", "dunnett", "none"}
        The post-hoc test against the control.
    red_positive : mapping, optional
        ``{"min_foci": k, "min_volume_um3": v}`` (either may be None) to recompute red+;
        default: keep the per-field counts as measured.
    calibrate : sequence of str, optional
        Negative-control conditions on which to calibrate the red+ threshold
        (:func:`calibrate_red_positive`); overrides ``red_positive``.
    max_share, calibrate_by
        Options of :func:`calibrate_red_positive`.
    calibrate_markers : sequence of str, optional
        Control conditions on which each marker's (annexin V, PI, ...) positive call is
        calibrated (:func:`hcsmito.aggregate.markers.calibrate_markers`: at most
        ``marker_max_share`` of their cells positive) and recomputed for every cell;
        default: the calls as the fields made them.
    exclude_flags : sequence of str
        QC codes (:data:`hcsmito.qc.QC_FLAGS`): ``ok`` fields whose ``qc_flags`` hold any
        of them are left out of the well values, the calibration and the statistics.

    Returns
    -------
    dict
        ``wells`` (one row per well: plate-map columns, field counts, readouts and their
        SEM over fields), ``replicates`` (long: one row per replicate and readout),
        ``conditions`` (long: one row per condition, day and readout: n, mean, sd, sem,
        diff, ratio vs control, Welch t / df / p / Holm p, post-hoc p, stars, ANOVA F and
        p), ``trends`` (per condition and readout over day; empty with a single day),
        ``summary`` (a JSON-able dict of settings, failed fields, flagged and excluded
        fields with their codes, and notes).
    """
    catalog = readouts_for(tables["fields"].columns) if "fields" in tables else READOUTS
    exclude, names, rdefs = _check_options(exclude_flags, unit, readouts, catalog)
    fields, ok_mask, excluded_mask, flagged = _field_states(tables, exclude)
    # the readouts of channels the plate lacks (nuclei, markers): not measured, not tested
    have = [r for r in rdefs if not r.optional or {r.num, r.den or r.num} <= set(fields)]
    names, rdefs = [r.name for r in have], have
    used_mask = ok_mask & ~excluded_mask
    plate_map = _normalized_map(plate_map)
    failed = fields.loc[~ok_mask, KEY + [c for c in ("status", "error") if c in fields]]
    notes: list[str] = []
    fields, rule = _red_positive_rule(tables, fields, used_mask, plate_map, red_positive,
                                      calibrate, max_share, calibrate_by)  # fmt: skip
    marker_rule = None
    if calibrate_markers:
        if plate_map is None:
            raise ValueError("calibrating markers needs a plate map naming the control wells")
        marker_rule = calibrate_markers_on(tables, fields[used_mask], plate_map,
                                           controls=calibrate_markers,
                                           max_share=marker_max_share)  # fmt: skip
        thresholds = {m: r["threshold"] for m, r in marker_rule.items()}
        _, fields = apply_marker_thresholds(tables, fields, thresholds)
    wells, ok, fields = _well_table(fields, used_mask, rdefs, plate_map, notes)
    replicates = _replicates(wells, ok, rdefs, names, unit)
    conditions, trends, ctrl, order = _statistics(replicates, names, plate_map, control,
                                                  posthoc, unit, notes)  # fmt: skip
    summary = {
        "unit": unit,
        "control": ctrl,
        "posthoc": posthoc,
        "readouts": names,
        "red_positive": rule,
        "marker_calibration": marker_rule,
        "n_fields": int(len(fields)),
        "n_fields_failed": int((~ok_mask).sum()),
        "failed_fields": json.loads(failed.to_json(orient="records")),
        "exclude_flags": exclude,
        "n_fields_excluded": int(excluded_mask.sum()),
        "excluded_fields": json.loads(
            flagged[
                flagged["qc_flags"].map(lambda t: bool(set(split_flags(t)) & set(exclude)))
            ].to_json(orient="records")
        ),
        "flagged_fields": json.loads(flagged.to_json(orient="records")),
        "wells_not_in_map": sorted(
            set(wells.loc[wells["condition"].isna(), "well"]) if plate_map is not None else []
        ),
        "conditions": order,
        "notes": notes,
    }
    return {"wells": wells, "replicates": replicates, "conditions": conditions,
            "trends": trends, "summary": summary}  # fmt: skip


def _check_options(exclude_flags, unit: str, readouts, catalog: Mapping[str, Readout]):
    """The options checked: ``(exclude codes, readout names, readout definitions)``;
    ``catalog``: the readouts the fields table can give."""
    exclude = list(dict.fromkeys(exclude_flags or ()))
    unknown = [c for c in exclude if c not in QC_FLAGS]
    if unknown:
        raise ValueError(
            f"exclude_flags: unknown QC flags {unknown}: use codes from {', '.join(QC_FLAGS)}"
        )
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: use one of {UNITS}")
    names = list(catalog) if readouts is None else list(readouts)
    bad = [n for n in names if n not in catalog]
    if bad:
        raise ValueError(f"unknown readouts {bad}: use names from {list(catalog)}")
    rdefs = [catalog[n] for n in names]
    return exclude, names, rdefs


def _field_states(tables: Mapping[str, pd.DataFrame], exclude: list[str]):
    """The fields table with wells normalized and ``status`` filled; the ok and excluded
    masks; the flagged ok fields with their codes."""
    if "fields" not in tables:
        raise ValueError("no 'fields' table: aggregate needs OUT/tables/fields.parquet")
    fields = tables["fields"].copy()
    for col in ("plate", "well", "field"):
        if col not in fields:
            raise ValueError(f"the fields table lacks the column {col!r}")
    fields["well"] = [normalize_well(w) for w in fields["well"]]
    if "status" not in fields:
        fields["status"] = "ok"
    fields["status"] = fields["status"].astype("string").fillna("failed")
    ok_mask = (fields["status"] == "ok").to_numpy()
    codes = [split_flags(v) for v in fields["qc_flags"]] if "qc_flags" in fields else (
        [()] * len(fields)
    )  # fmt: skip
    excluded_mask = ok_mask & np.array([bool(set(c) & set(exclude)) for c in codes], bool)
    fields["_excluded"] = excluded_mask
    flag_text = [",".join(c) for c in codes]
    flagged = fields.loc[ok_mask & np.array([bool(c) for c in codes], bool), KEY].assign(
        qc_flags=[t for t, m, c in zip(flag_text, ok_mask, codes, strict=True) if m and c]
    )
    return fields, ok_mask, excluded_mask, flagged


def _normalized_map(plate_map: pd.DataFrame | None) -> pd.DataFrame | None:
    if plate_map is not None:
        attrs = dict(plate_map.attrs)
        plate_map = plate_map.assign(well=[normalize_well(w) for w in plate_map["well"]])
        plate_map.attrs.update(attrs)
    return plate_map


def _red_positive_rule(tables, fields, used_mask, plate_map, red_positive, calibrate,
                       max_share, calibrate_by):  # fmt: skip
    """Red+ recomputed (a rule given) or calibrated on the controls: ``(fields, rule)``."""
    rule: dict[str, Any] | None = None
    if calibrate:
        if plate_map is None:
            raise ValueError("calibrating red+ needs a plate map naming the control wells")
        ok_t = {**tables, "fields": fields[used_mask]}
        cells = cells_with_volume(ok_t)
        ok_keys = fields.loc[used_mask, KEY]
        cells = cells.merge(ok_keys, on=KEY, how="inner")
        rule = calibrate_red_positive(
            cells, plate_map, controls=calibrate, max_share=max_share, by=calibrate_by
        )
        kw = {k: rule[k] for k in ("min_foci", "min_volume_um3") if k in rule}
        fields = apply_red_positive({**tables, "fields": fields}, **kw)["fields"]
    elif red_positive is not None:
        kw = {k: red_positive.get(k) for k in ("min_foci", "min_volume_um3")}
        fields = apply_red_positive({**tables, "fields": fields}, **kw)["fields"]
        rule = dict(kw)

    return fields, rule


def _well_table(fields, used_mask, rdefs, plate_map, notes: list[str]):
    """One row per well (all wells with fields, plus mapped wells without any): field
    counts, count sums, readouts and their SEM over fields, the plate-map columns.
    Returns ``(wells, ok fields, fields)``."""
    ok = fields[used_mask].drop(columns="_excluded")
    # well table: all wells seen in fields, plus mapped wells without any field
    counts = fields.groupby(["plate", "well"], sort=False, observed=True).agg(
        n_fields=("field", "size"),
        n_fields_failed=("status", lambda s: int((s != "ok").sum())),
        n_fields_excluded=("_excluded", "sum"),
    )
    fields = fields.drop(columns="_excluded")
    wells = counts.reset_index()
    wells["n_fields_failed"] = wells["n_fields_failed"].astype("int64")  # text when no field
    wells["n_fields_ok"] = wells["n_fields"] - wells["n_fields_failed"]
    wells["n_fields_excluded"] = wells.pop("n_fields_excluded").astype("int64")
    counts_cols = counts_for(fields.columns)
    tot = ok.groupby(["plate", "well"], observed=True)[[c for c in counts_cols if c in ok]].sum()
    wells = wells.merge(tot.reset_index(), on=["plate", "well"], how="left")
    wells = wells.merge(_well_values(ok, rdefs), on=["plate", "well"], how="left")
    plates = list(dict.fromkeys(fields["plate"])) or [""]
    if plate_map is not None:
        mapped_only = sorted(set(plate_map["well"]) - set(fields["well"]))
        if mapped_only:
            notes.append(f"wells in the plate map without any field: {', '.join(mapped_only)}")
            extra = pd.DataFrame({"plate": plates[0], "well": mapped_only, "n_fields": 0,
                                  "n_fields_failed": 0, "n_fields_excluded": 0,
                                  "n_fields_ok": 0})  # fmt: skip
            wells = pd.concat([wells, extra], ignore_index=True)
        wells = wells.merge(plate_map, on="well", how="left")
        unmapped = sorted(set(wells.loc[wells["condition"].isna(), "well"]))
        if unmapped:
            notes.append(f"wells not in the plate map (left out of statistics): {unmapped}")
    else:
        wells["condition"] = pd.NA
        wells["replicate"] = pd.NA
        wells["day"] = np.nan
        notes.append("no plate map: per-well results only, no statistics")
    for c in counts_cols:
        if c in wells:
            wells[c] = wells[c].fillna(0).astype("int64")
    wells = _sort_wells(wells)

    return wells, ok, fields


def _replicates(wells, ok, rdefs, names, unit: str) -> pd.DataFrame:
    """The statistical unit's values, long: one row per replicate and readout."""
    used = wells["n_fields_ok"] - wells["n_fields_excluded"]
    mapped = wells[wells["condition"].notna() & (used > 0)]
    if unit == "field" and len(mapped):
        fv = _field_values(ok, rdefs)
        reps = fv.merge(mapped[["plate", "well", "condition", "day", "replicate"]],
                        on=["plate", "well"])  # fmt: skip
        reps["sample"] = reps["well"] + " f" + reps["field"].astype(str)
    elif unit == "experiment" and len(mapped):
        reps = (
            mapped.groupby(["condition", "day", "replicate"], dropna=False, sort=False)[names]
            .mean()
            .reset_index()
        )
        reps["sample"] = "replicate " + reps["replicate"].astype(str)
    else:
        reps = mapped[["plate", "well", "condition", "day", "replicate", *names]].copy()
        reps["sample"] = reps["well"]
    id_cols = [c for c in ("sample", "plate", "well", "field", "condition", "day", "replicate")
               if c in reps]  # fmt: skip
    replicates = reps.melt(id_vars=id_cols, value_vars=names, var_name="readout")
    replicates = replicates.dropna(subset=["value"]).reset_index(drop=True)

    return replicates


def _statistics(replicates, names, plate_map, control, posthoc, unit: str, notes: list[str]):
    """Per readout and day, the conditions compared (Welch vs control, ANOVA, post-hoc);
    per condition and readout the trend over days: ``(conditions, trends, control, order)``."""
    order = _condition_order(plate_map, control)
    rows, trend_rows = [], []
    if plate_map is not None and control is not None and control not in order:
        notes.append(f"control {control!r} is not in the plate map: no comparisons")
    ctrl = control if control in order else None
    for name in names:
        sub = replicates[replicates["readout"] == name]
        for day, dsub in sub.groupby("day", dropna=False, sort=True):
            if ctrl is not None and ctrl not in set(dsub["condition"]):
                notes.append(f"{name}, day {day}: no {ctrl} values: no comparisons that day")
            table, anova = hs.compare_conditions(
                dsub, value="value", group="condition",
                control=ctrl if ctrl in set(dsub["condition"]) else None, posthoc=posthoc,
            )  # fmt: skip
            table.insert(1, "day", day)
            table.insert(2, "readout", name)
            table["label"] = readout_label(name)
            table["f_anova"], table["p_anova"] = anova.f, anova.p
            table["stars_anova"] = hs.stars(anova.p)
            rows.append(table)
        if sub["day"].nunique() > 1:
            for cond, csub in sub.groupby("condition", sort=False):
                tr = hs.linear_trend(csub["day"], csub["value"])
                trend_rows.append(
                    {"condition": cond, "readout": name, "slope_per_day": tr.slope,
                     "intercept": tr.intercept, "r": tr.r, "p": tr.p, "stderr": tr.stderr,
                     "n": tr.n, "stars": hs.stars(tr.p)}
                )  # fmt: skip
    cond_cols = list(schema.TABLES["conditions"].dtypes)
    conditions = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cond_cols)
    conditions = conditions[cond_cols]
    if len(conditions):
        rank = {c: i for i, c in enumerate(order)}
        conditions = conditions.sort_values(
            ["readout", "day", "condition"],
            key=lambda s: s.map(rank) if s.name == "condition" else
            (s.map({n: i for i, n in enumerate(names)}) if s.name == "readout" else s),
        ).reset_index(drop=True)  # fmt: skip
    conditions["unit"] = unit
    conditions["control"] = ctrl
    trends = pd.DataFrame(trend_rows) if trend_rows else schema.empty_table("trends")

    return conditions, trends, ctrl, order


def _condition_order(plate_map: pd.DataFrame | None, control: str | None) -> list[str]:
    if plate_map is None:
        return []
    order = list(dict.fromkeys(plate_map["condition"]))
    if control in order:
        order.remove(control)
        order.insert(0, control)
    return order
