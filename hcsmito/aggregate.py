"""From per-field tables to per-well and per-condition readouts with statistics.

The readouts of the assay (:data:`READOUTS`) are built bottom-up:

- **field**: the row of ``fields.parquet`` (ratios such as % MSC Red+ are
  ``numerator / denominator`` of that field, NaN when the denominator is 0);
- **well**: ratios pooled over the well's fields (``sum(numerator) / sum(denominator)``,
  so that a field with few cells weighs less), per-field quantities averaged over fields;
- **experiment**: the mean of the well values of one ``(condition, day, replicate)``.

The *replicate unit* (``unit="field" | "well" | "experiment"``) chooses which of these
levels are the independent samples of the mean ± SEM and of the tests. Fields whose
``status`` is not ``"ok"`` are left out everywhere and counted (``n_fields_failed``);
``ok`` fields carrying a QC flag listed in ``exclude_flags`` (:data:`hcsmito.qc.QC_FLAGS`)
are left out of every well value and statistic too, and counted (``n_fields_excluded``).
Wells the plate map does not list are kept in the well table (for the plate heatmaps) but
left out of the statistics.

Tests per readout and day (:func:`hcsmito.stats.compare_conditions`): Welch's t-test of
each condition against the control, one-way ANOVA over all conditions, Tukey HSD or
Dunnett against the control; with several days, a linear trend over day per condition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import schema
from hcsmito import stats as hs
from hcsmito.io.rundir import RunDir
from hcsmito.platemap import normalize_well, read_plate_map
from hcsmito.qc import QC_FLAGS, split_flags

__all__ = [
    "READOUTS",
    "Readout",
    "aggregate_tables",
    "apply_red_positive",
    "calibrate_red_positive",
    "read_aggregates",
    "write_aggregates",
]

log = logging.getLogger(__name__)

UNITS = ("field", "well", "experiment")


@dataclass(frozen=True)
class Readout:
    """One readout: a per-field ratio ``scale * num / den`` or a per-field quantity ``num``."""

    name: str
    label: str
    num: str
    den: str | None = None
    scale: float = 1.0

    @property
    def is_ratio(self) -> bool:
        return self.den is not None


#: The readouts of the assay, in report order.
READOUTS: dict[str, Readout] = {
    r.name: r
    for r in (
        Readout("pct_msc_red_positive", "MSC Red+ (%)", "n_msc_red_positive", "n_msc", 100.0),
        Readout("foci_area_um2", "Red foci area per field (µm²)", "foci_area_um2"),
        Readout("foci_volume_um3", "Red foci volume per field (µm³)", "foci_volume_um3"),
        Readout("foci_per_msc", "Red foci per MSC", "n_foci", "n_msc"),
        Readout(
            "pct_jurkat_adhered",
            "Jurkat adhered to MSCs (%)",
            "n_jurkat_adhered",
            "n_jurkat",
            100.0,
        ),  # fmt: skip
        Readout("n_tnt", "TNTs per field", "n_tnt"),
        Readout("n_tnt_with_mito", "TNTs carrying mitochondria per field", "n_tnt_with_mito"),
    )
}

_COUNTS = ("n_msc", "n_msc_red_positive", "n_foci", "n_jurkat", "n_jurkat_adhered")
_KEY = ["plate", "well", "field"]


# --------------------------------------------------------------------------- red+ rule


def _cells_with_volume(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The per-MSC table (``cells``, or ``msc`` of synthetic truth) with ``n_foci`` and
    ``foci_volume_um3``, computed from ``foci`` where the cell table lacks them."""
    cells = tables.get("cells", tables.get("msc"))
    if cells is None:
        raise ValueError("no 'cells' table: the red+ rule needs OUT/tables/cells.parquet")
    cells = cells.copy()
    missing = [c for c in ("n_foci", "foci_volume_um3") if c not in cells]
    if missing:
        foci = tables.get("foci")
        if foci is None:
            raise ValueError(f"the cell table lacks {missing} and there is no 'foci' table")
        inside = foci[foci["cell_id"] > 0]
        agg = inside.groupby([*_KEY, "cell_id"], observed=True).agg(
            n_foci=("cell_id", "size"), foci_volume_um3=("volume_um3", "sum")
        )
        cells = cells.drop(columns=[c for c in agg.columns if c in cells]).merge(
            agg.reset_index(), on=[*_KEY, "cell_id"], how="left"
        )
        cells["n_foci"] = cells["n_foci"].fillna(0).astype("int64")
        cells["foci_volume_um3"] = cells["foci_volume_um3"].fillna(0.0)
    return cells


def calibrate_red_positive(
    cells: pd.DataFrame,
    plate_map: pd.DataFrame,
    *,
    controls: Sequence[str],
    max_share: float = 0.05,
    by: str = "n_foci",
) -> dict[str, Any]:
    """The smallest red+ threshold under which at most ``max_share`` of control MSCs are red+.

    Parameters
    ----------
    cells : DataFrame
        Per-MSC table with ``well`` and the column ``by``.
    plate_map : DataFrame
        From :func:`hcsmito.platemap.read_plate_map`.
    controls : sequence of str
        Negative-control conditions (e.g. MSCs cultured without donor cells).
    max_share : float
        Largest share of control MSCs that may be called red+ (0..1).
    by : {"n_foci", "foci_volume_um3"}
        The quantity thresholded.

    Returns
    -------
    dict
        ``{"min_foci": k}`` (an integer >= 1) or ``{"min_volume_um3": v}`` (> 0), with
        ``share`` (the share of control MSCs at or above it), ``n_cells`` and ``controls``.
    """
    if by not in ("n_foci", "foci_volume_um3"):
        raise ValueError(f"by={by!r}: use 'n_foci' or 'foci_volume_um3'")
    if not 0.0 <= max_share < 1.0:
        raise ValueError(f"max_share={max_share}: give a share in [0, 1), e.g. 0.05")
    known = set(plate_map["condition"])
    unknown = [c for c in controls if c not in known]
    if not controls or unknown:
        raise ValueError(
            f"calibration controls {list(controls)}: {unknown or 'none given'} not in the plate "
            f"map (conditions: {sorted(known)})"
        )
    wells = {
        normalize_well(w) for w in plate_map.loc[plate_map["condition"].isin(controls), "well"]
    }
    v = np.sort(cells.loc[cells["well"].isin(wells), by].to_numpy(np.float64))
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError(f"no MSCs in the control wells {sorted(wells)}: cannot calibrate red+")
    floor = 1.0 if by == "n_foci" else np.nextafter(0.0, 1.0)
    # candidate thresholds: the floor and every observed value above it, plus "above all"
    cand = np.unique(np.concatenate([[floor], v[v >= floor]]))
    if by == "n_foci":
        cand = np.unique(np.ceil(cand))
        cand = np.append(cand, cand[-1] + 1.0)
    else:
        cand = np.append(cand, np.nextafter(v[-1], np.inf))
    n_at_or_above = v.size - np.searchsorted(v, cand, side="left")
    allowed = np.floor(max_share * v.size + 1e-9)  # in cells: no rounding surprises
    t = cand[np.argmax(n_at_or_above <= allowed)]
    key = "min_foci" if by == "n_foci" else "min_volume_um3"
    out = {key: int(t) if by == "n_foci" else float(t)}
    out.update(share=float(np.mean(v >= t)), n_cells=int(v.size), controls=list(controls))
    return out


def apply_red_positive(
    tables: Mapping[str, pd.DataFrame],
    *,
    min_foci: int | None = None,
    min_volume_um3: float | None = None,
) -> dict[str, pd.DataFrame]:
    """Recompute ``red_positive`` per MSC (``n_foci >= min_foci`` or ``foci_volume_um3 >=
    min_volume_um3``) and ``n_msc_red_positive`` / ``pct_msc_red_positive`` per field.

    Returns a new dict of tables (``cells`` and ``fields`` replaced).
    """
    if min_foci is None and min_volume_um3 is None:
        raise ValueError("give min_foci or min_volume_um3 (both are None)")
    cells = _cells_with_volume(tables)
    red = np.zeros(len(cells), bool)
    if min_foci is not None:
        red |= cells["n_foci"].to_numpy() >= min_foci
    if min_volume_um3 is not None:
        red |= cells["foci_volume_um3"].to_numpy(np.float64) >= min_volume_um3
    cells["red_positive"] = red
    counts = cells.groupby(_KEY, observed=True)["red_positive"].sum().rename("_red")
    fields = tables["fields"].drop(columns=["_red"], errors="ignore")
    fields = fields.merge(counts.reset_index(), on=_KEY, how="left")
    fields["n_msc_red_positive"] = fields["_red"].fillna(0).astype("int64")
    fields = fields.drop(columns="_red")
    n = fields["n_msc"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fields["pct_msc_red_positive"] = np.where(
            n > 0, 100.0 * fields["n_msc_red_positive"] / n, np.nan
        )
    return {**tables, "cells": cells, "fields": fields}


# --------------------------------------------------------------------------- aggregation


def _field_values(fields: pd.DataFrame, readouts: Sequence[Readout]) -> pd.DataFrame:
    out = fields[_KEY].copy()
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
        Names from :data:`READOUTS` (default all).
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
    exclude, names, rdefs = _check_options(exclude_flags, unit, readouts)
    fields, ok_mask, excluded_mask, flagged = _field_states(tables, exclude)
    used_mask = ok_mask & ~excluded_mask
    plate_map = _normalized_map(plate_map)
    failed = fields.loc[~ok_mask, _KEY + [c for c in ("status", "error") if c in fields]]
    notes: list[str] = []
    fields, rule = _red_positive_rule(tables, fields, used_mask, plate_map, red_positive,
                                      calibrate, max_share, calibrate_by)  # fmt: skip
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


def _check_options(exclude_flags, unit: str, readouts):
    """The options checked: ``(exclude codes, readout names, readout definitions)``."""
    exclude = list(dict.fromkeys(exclude_flags or ()))
    unknown = [c for c in exclude if c not in QC_FLAGS]
    if unknown:
        raise ValueError(
            f"exclude_flags: unknown QC flags {unknown}: use codes from {', '.join(QC_FLAGS)}"
        )
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: use one of {UNITS}")
    names = list(READOUTS) if readouts is None else list(readouts)
    bad = [n for n in names if n not in READOUTS]
    if bad:
        raise ValueError(f"unknown readouts {bad}: use names from {list(READOUTS)}")
    rdefs = [READOUTS[n] for n in names]
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
    flagged = fields.loc[ok_mask & np.array([bool(c) for c in codes], bool), _KEY].assign(
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
        cells = _cells_with_volume(ok_t)
        ok_keys = fields.loc[used_mask, _KEY]
        cells = cells.merge(ok_keys, on=_KEY, how="inner")
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
    wells["n_fields_ok"] = wells["n_fields"] - wells["n_fields_failed"]
    wells["n_fields_excluded"] = wells.pop("n_fields_excluded").astype("int64")
    tot = ok.groupby(["plate", "well"], observed=True)[[c for c in _COUNTS if c in ok]].sum()
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
    for c in _COUNTS:
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
            table["label"] = READOUTS[name].label
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


# --------------------------------------------------------------------------- files


def read_tables(out_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """The per-object / per-field tables of a run that exist in ``OUT/tables`` (default:
    every per-field table of :mod:`hcsmito.schema`)."""
    rd = RunDir(out_dir)
    if not rd.has_table("fields"):
        raise FileNotFoundError(
            f"{rd.table('fields')} is absent: run 'hcsmito run' into {out_dir} first"
        )
    return rd.read_tables(schema.field_tables() if names is None else names)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` as a dict (empty when absent)."""
    return RunDir(out_dir).read_manifest()


def _setting(config: Any, section: str, key: str, default: Any) -> Any:
    """``config.<section>.<key>`` from a Config model or a plain mapping, else default."""
    if config is None:
        return default
    sec = config.get(section) if isinstance(config, Mapping) else getattr(config, section, None)
    if sec is None:
        return default
    val = sec.get(key, default) if isinstance(sec, Mapping) else getattr(sec, key, default)
    return default if val is None and default is not None else val


def write_aggregates(
    out_dir: str | Path,
    *,
    plate_map: str | Path | pd.DataFrame | None = None,
    config: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Aggregate a run folder and write ``OUT/tables/{wells,conditions,replicates,trends}
    .parquet`` and ``OUT/tables/aggregate.json`` (the summary).

    Parameters
    ----------
    out_dir : path
        The run folder (``OUT/tables/fields.parquet`` must exist).
    plate_map : path or DataFrame, optional
        Default: ``manifest["plate_map"]``, else the config's ``plate_map``, else
        ``OUT/platemap.csv``; without one, per-well results only.
    config : Config or mapping, optional
        Default: ``manifest["config"]``. Read: ``plate_map`` and, when present, the
        ``statistics`` section (``unit``, ``control``, ``posthoc``, ``calibrate``,
        ``max_share``, ``calibrate_by``, ``readouts``, ``exclude_flags``).
    **options
        Keyword arguments of :func:`aggregate_tables`, overriding the config.

    Returns
    -------
    dict
        What :func:`aggregate_tables` returns.
    """
    out_dir = Path(out_dir)
    tables = read_tables(out_dir)
    manifest = read_manifest(out_dir)
    if config is None:
        config = manifest.get("config") or {}
    if plate_map is None:
        plate_map = _find_plate_map(out_dir, manifest, config)
    if plate_map is not None and not isinstance(plate_map, pd.DataFrame):
        # not checked against the wells with data: a run over some wells is legitimate;
        # aggregate_tables notes mapped wells without fields and unmapped wells
        plate_map = read_plate_map(plate_map)
    kw: dict[str, Any] = {}
    for key in ("unit", "control", "posthoc", "calibrate", "max_share", "calibrate_by",
                "readouts", "exclude_flags"):  # fmt: skip
        val = _setting(config, "statistics", key, None)
        if val is not None:
            kw[key] = val
    kw.update(options)
    res = aggregate_tables(tables, plate_map, **kw)
    rd = RunDir(out_dir)
    for name in schema.aggregate_tables():
        rd.write_table(name, _string_columns(res[name]))
    summary = dict(res["summary"])
    summary["plate_map"] = None if plate_map is None else plate_map.attrs.get("source")
    res["summary"] = summary
    rd.write_json(rd.summary_path, summary)
    return res


def _find_plate_map(out_dir: Path, manifest: Mapping[str, Any], config: Any) -> Path | None:
    """The plate map of a run: ``manifest["plate_map"]``, else the config's ``plate_map``
    (each as given, then relative to ``OUT``), else ``OUT/platemap.csv``."""
    cfg_pm = (
        config.get("plate_map")
        if isinstance(config, Mapping)
        else getattr(config, "plate_map", None)
    )
    named = [Path(p) for p in (manifest.get("plate_map"), cfg_pm) if p]
    for p in named:
        for cand in (p, out_dir / p) if not p.is_absolute() else (p,):
            if cand.is_file():
                return cand
    local = RunDir(out_dir).platemap_path
    if local.is_file():
        return local
    if named:
        raise FileNotFoundError(
            f"plate map {named[0]} named by the run in {out_dir} is not found: pass it again "
            "(hcsmito report OUT --plate-map FILE) or copy it to OUT/platemap.csv"
        )
    return None


def _string_columns(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    return df


def read_aggregates(out_dir: str | Path) -> dict[str, Any]:
    """The aggregate tables and summary written by :func:`write_aggregates`."""
    rd = RunDir(out_dir)
    res: dict[str, Any] = {
        name: rd.read_table(name) if rd.has_table(name) else pd.DataFrame()
        for name in schema.aggregate_tables()
    }
    p = rd.summary_path
    res["summary"] = json.loads(p.read_text()) if p.is_file() else {}
    return res
