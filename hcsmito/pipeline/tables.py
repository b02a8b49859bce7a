"""The output tables of one field from its stage results: foci, jurkat, tnt and cells rows
with the contract's column names and dtypes (:mod:`hcsmito.schema`), and the field's row."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from hcsmito import schema
from hcsmito.config import Readouts
from hcsmito.measure.morphometry import aggregate_by_parent
from hcsmito.qc import join_flags
from hcsmito.schema import empty_table


def dtypes(name: str) -> dict[str, str]:
    """The declared columns of table ``name`` (:mod:`hcsmito.schema`)."""
    return schema.TABLES[name].dtypes


def col(t: Mapping[str, np.ndarray], name: str, n: int, fill: float = np.nan) -> np.ndarray:
    return np.asarray(t[name]) if name in t else np.full(n, fill)


def declared_tables(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every per-field table of :mod:`hcsmito.schema`, in its order: a declared table no
    stage fills is empty with its declared columns."""
    return {n: tables[n] if n in tables else empty_table(n) for n in schema.field_tables()}


def with_qc(fields_df: pd.DataFrame, qc_flags: tuple[str, ...], tnts) -> pd.DataFrame:
    """The fields row with ``qc_flags``, ``glass_z_um`` and ``glass_source`` filled."""
    out = fields_df.copy()
    out["qc_flags"] = pd.array([join_flags(qc_flags)], dtype="string")
    glass = float(getattr(tnts, "glass_z_um", np.nan)) if tnts is not None else np.nan
    out["glass_z_um"] = glass
    source = ""
    if tnts is not None:  # the TNT stage says where its glass came from; default: actin
        source = getattr(tnts, "glass_source", "actin" if np.isfinite(glass) else "")
    out["glass_source"] = pd.array([source or ""], dtype="string")
    return out.astype(dtypes("fields"))


def centroids(t: Mapping[str, np.ndarray], ndim: int, n: int) -> dict[str, np.ndarray]:
    if ndim == 3:
        return {"z_um": t["centroid-0"], "y_um": t["centroid-1"], "x_um": t["centroid-2"]}
    return {"z_um": np.zeros(n), "y_um": t["centroid-0"], "x_um": t["centroid-1"]}


def foci_table(t: Mapping[str, np.ndarray], ndim: int, *, decon: bool) -> pd.DataFrame:
    n = len(t["label"])
    if n == 0:
        df = empty_table("foci")
        if decon:
            df["intensity_mean_decon"] = pd.Series(dtype="float64")
        return df
    sfx = "-0"  # intensity is always passed as a list: channel 0 raw, 1 deconvolved
    cols = {
        "focus_id": np.asarray(t["label"], np.int32),
        "cell_id": np.asarray(t["parent"], np.int32) if "parent" in t else np.zeros(n, np.int32),
        **centroids(t, ndim, n),
        "volume_um3": t["area"] if ndim == 3 else np.full(n, np.nan),
        "area_um2": t["area_projected"] if ndim == 3 else t["area"],
        "n_voxels": np.asarray(t["n_voxels"], np.int64),
        "intensity_sum": t["intensity_sum" + sfx],
        "intensity_mean": t["intensity_mean" + sfx],
        "intensity_max": t["intensity_max" + sfx],
        "equivalent_diameter_um": t["equivalent_diameter_area"],
        "axis_major_length_um": t["axis_major_length"],
        "axis_minor_length_um": t["axis_minor_length"],
        "parent_overlap": col(t, "parent_overlap", n, 0.0),
    }
    if decon:
        cols["intensity_mean_decon"] = t["intensity_mean-1"]
        cols["intensity_sum_decon"] = t["intensity_sum-1"]
    return pd.DataFrame(cols).astype(dtypes("foci"))


def jurkat_table(t: Mapping[str, np.ndarray], adhesion, ndim: int) -> pd.DataFrame:
    n = len(t["label"])
    if n == 0:
        return empty_table("jurkat")
    ids = np.asarray(t["label"], np.int32)
    adhered = np.zeros(n, bool)
    msc_id = np.zeros(n, np.int32)
    contact = np.zeros(n)
    if adhesion is not None and len(adhesion):
        a = adhesion.set_index("jurkat_id").reindex(ids)
        adhered = a["adhered"].fillna(False).to_numpy(bool)
        msc_id = a["msc_id"].fillna(0).to_numpy(np.int32)
        contact = a["contact_area_um2"].fillna(0.0).to_numpy(float)
    df = pd.DataFrame(
        {
            "jurkat_id": ids,
            **centroids(t, ndim, n),
            "volume_um3": t["area"] if ndim == 3 else np.full(n, np.nan),
            "adhered": adhered,
            "msc_id": np.where(adhered, msc_id, 0),
            "contact_area_um2": contact,
        }
    )
    return df.astype(dtypes("jurkat"))


def nuclei_table(
    t: Mapping[str, np.ndarray],
    assignment: pd.DataFrame,
    n_parts: np.ndarray,
    cut: np.ndarray,
    ndim: int,
    *,
    nucleus_voxels: np.ndarray,
    donor_voxels: np.ndarray,
    condensed_diameter: float,
    condensed_cell_ratio: float,
    background: float = 0.0,
) -> pd.DataFrame:
    """One row per nucleus: the cell it lies in, its size and raw brightness, its pieces
    and the stain-free state (:func:`hcsmito.stages.segmentation.call_nuclear_state`).
    ``nucleus_voxels`` and ``donor_voxels``: voxels per label (index = label) of the
    nuclei and the donor cells, for a donor nucleus' diameter relative to its cell's.
    ``background``: the raw nuclear channel's background level
    (:func:`hcsmito.stages.segmentation.nuclei.nuclear_background`), above which the
    state call compares brightness."""
    from hcsmito.stages.segmentation import call_nuclear_state

    n = len(t["label"])
    if n == 0:
        return empty_table("nuclei")
    ids = np.asarray(t["label"], np.int32)
    a = assignment.set_index("nucleus_id").reindex(ids)
    df = pd.DataFrame(
        {
            "nucleus_id": ids,
            "cell_kind": a["cell_kind"].fillna("").to_numpy(object),
            "cell_id": a["cell_id"].fillna(0).to_numpy(np.int32),
            **centroids(t, ndim, n),
            # 2-D: the area, as for the other objects' sizes
            "volume_um3": t["area"] if ndim == 3 else np.full(n, np.nan),
            "equivalent_diameter_um": t["equivalent_diameter_area"],
            "intensity_mean": t["intensity_mean-0"],
            "intensity_sum": t["intensity_sum-0"],
            "n_parts": np.asarray(n_parts, np.int64)[ids - 1],
        }
    )
    cut = np.asarray(cut, bool)[ids - 1]
    donor = (df["cell_kind"] == "jurkat").to_numpy() & (df["cell_id"].to_numpy() > 0)
    cell = np.asarray(donor_voxels, float)
    own = np.where(donor, cell[np.minimum(df["cell_id"].to_numpy(), cell.size - 1)], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (np.asarray(nucleus_voxels, float)[ids] / own) ** (1.0 / ndim)
    df["diameter_to_cell"] = np.where(donor & (own > 0), ratio, np.nan)
    size = df["volume_um3"] if ndim == 3 else pd.Series(np.asarray(t["area"]), index=df.index)
    called = call_nuclear_state(df.assign(volume_um3=size, cut=cut), ndim=ndim,
                                condensed_diameter=condensed_diameter,
                                condensed_cell_ratio=condensed_cell_ratio,
                                background=background)  # fmt: skip
    for c in ("volume_ratio", "intensity_ratio", "state", "apoptotic"):
        df[c] = called[c]
    return df[list(dtypes("nuclei"))].astype(dtypes("nuclei"))


def apoptosis_columns(nuclei_df: pd.DataFrame, kind: str, ids: np.ndarray) -> dict:
    """Per cell of ``kind`` (``ids``): ``nucleus_id`` (its largest nucleus, 0 none) and
    ``apoptotic`` (any of its nuclei called apoptotic; <NA> without a nucleus)."""
    own = nuclei_df[nuclei_df["cell_kind"] == kind]
    first = own.sort_values("volume_um3", ascending=False).drop_duplicates("cell_id")
    nid = first.set_index("cell_id")["nucleus_id"].reindex(ids)
    apo = own.groupby("cell_id")["apoptotic"].any().reindex(ids)
    return {
        "nucleus_id": nid.fillna(0).to_numpy(np.int32),
        "apoptotic": pd.array(apo.to_numpy(), dtype="boolean"),
    }


def tnt_table(tnts) -> pd.DataFrame:
    if tnts is None or not len(tnts.table):
        return empty_table("tnt")
    df = tnts.table.copy()
    first = list(dtypes("tnt"))
    df = df[first + [c for c in df.columns if c not in first]]
    return df.astype({k: v for k, v in dtypes("tnt").items()})


def cells_table(ct, ft, msc, touches, jurkat_df, rules: Readouts) -> pd.DataFrame:
    n = len(ct["label"])
    if n == 0:
        return empty_table("cells")
    ids = np.asarray(ct["label"], np.int64)
    n_foci = np.zeros(n, np.int64)
    vol = np.zeros(n)
    area = np.zeros(n)
    isum = np.zeros(n)
    if len(ft["label"]) and "parent" in ft:
        agg = aggregate_by_parent(ft, parent="parent")
        pos = np.searchsorted(ids, agg["label"])
        n_foci[pos] = agg["n_objects"]
        vol[pos] = agg["area"]
        area[pos] = agg["area_projected"] if "area_projected" in agg else agg["area"]
        key = "intensity_sum" if "intensity_sum" in agg else "intensity_sum-0"
        isum[pos] = agg[key]
    red = np.zeros(n, bool)
    if rules.red_positive_min_foci is not None:
        red |= n_foci >= rules.red_positive_min_foci
    if rules.red_positive_min_volume_um3 is not None:
        red |= vol >= rules.red_positive_min_volume_um3
    adhered = jurkat_df.loc[jurkat_df["adhered"], "msc_id"].to_numpy(np.int64)
    n_adh = np.zeros(n, np.int64)
    if adhered.size:
        pos = np.searchsorted(ids, adhered)
        ok = (pos < n) & (ids[np.minimum(pos, n - 1)] == adhered)
        np.add.at(n_adh, pos[ok], 1)
    ndim = msc.ndim
    df = pd.DataFrame(
        {
            "cell_id": ids.astype(np.int32),
            "volume_um3": ct["area"] if ndim == 3 else np.full(n, np.nan),
            "y_um": ct[f"centroid-{ndim - 2}"],
            "x_um": ct[f"centroid-{ndim - 1}"],
            "touches_border": touches[:n] if touches.size >= n else np.zeros(n, bool),
            "n_foci": n_foci,
            "foci_volume_um3": vol if ndim == 3 else np.full(n, np.nan),
            "foci_area_um2": area,
            "foci_intensity_sum": isum,
            "red_positive": red,
            "n_adhered_jurkat": n_adh,
        }
    )
    return df.astype(dtypes("cells"))


def fields_row(foci_df, cells_df, jurkat_df, tnt_df, has_msc, area_px, spacing) -> pd.DataFrame:
    inside = foci_df[foci_df["cell_id"] > 0] if has_msc else foci_df
    n_msc = len(cells_df)
    n_red = int(cells_df["red_positive"].sum()) if n_msc else 0
    row = {
        "n_msc": n_msc if has_msc else 0,
        "n_msc_red_positive": n_red,
        "pct_msc_red_positive": 100.0 * n_red / n_msc if n_msc else np.nan,
        "n_foci": len(inside),
        "foci_volume_um3": float(inside["volume_um3"].sum()) if len(spacing) == 3 else np.nan,
        "foci_area_um2": area_px * spacing[-1] * spacing[-2],
        "n_jurkat": len(jurkat_df),
        "n_jurkat_adhered": int(jurkat_df["adhered"].sum()),
        "n_tnt": pd.NA if tnt_df is None else len(tnt_df),
        "n_tnt_with_mito": pd.NA if tnt_df is None else int(tnt_df["carries_mito"].sum()),
        "status": "ok",
        "qc_flags": "",
        "glass_z_um": np.nan,
        "glass_source": "",
    }
    return pd.DataFrame([row]).astype(dtypes("fields"))
