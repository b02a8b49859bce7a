"""The red+ rule: which MSCs count as having received mitochondria, and its calibration on
control wells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.aggregate.readouts import KEY
from hcsmito.platemap import normalize_well


def control_wells(
    plate_map: pd.DataFrame,
    controls: Sequence[str],
    max_share: float,
    *,
    what: str = "",
    example: float = 0.05,
) -> set[str]:
    """The wells of the control conditions a calibration reads (normalised names), after
    checking that each control is a condition of the plate map and ``max_share`` a share
    in [0, 1); ``what`` names the calibration in the errors (e.g. ``"marker "``)."""
    if not 0.0 <= max_share < 1.0:
        raise ValueError(f"{what}max_share={max_share}: give a share in [0, 1), e.g. {example}")
    known = set(plate_map["condition"])
    unknown = [c for c in controls if c not in known]
    if not controls or unknown:
        raise ValueError(
            f"{what}calibration controls {list(controls)}: {unknown or 'none given'} not in "
            f"the plate map (conditions: {sorted(known)})"
        )
    return {normalize_well(w) for w in plate_map.loc[plate_map["condition"].isin(controls), "well"]}


def cells_with_volume(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
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
        agg = inside.groupby([*KEY, "cell_id"], observed=True).agg(
            n_foci=("cell_id", "size"), foci_volume_um3=("volume_um3", "sum")
        )
        cells = cells.drop(columns=[c for c in agg.columns if c in cells]).merge(
            agg.reset_index(), on=[*KEY, "cell_id"], how="left"
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
    wells = control_wells(plate_map, controls, max_share, example=0.05)
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
    cells = cells_with_volume(tables)
    red = np.zeros(len(cells), bool)
    if min_foci is not None:
        red |= cells["n_foci"].to_numpy() >= min_foci
    if min_volume_um3 is not None:
        red |= cells["foci_volume_um3"].to_numpy(np.float64) >= min_volume_um3
    cells["red_positive"] = red
    counts = cells.groupby(KEY, observed=True)["red_positive"].sum().rename("_red")
    fields = tables["fields"].drop(columns=["_red"], errors="ignore")
    fields = fields.merge(counts.reset_index(), on=KEY, how="left")
    fields["n_msc_red_positive"] = fields["_red"].fillna(0).astype("int64")
    fields = fields.drop(columns="_red")
    n = fields["n_msc"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fields["pct_msc_red_positive"] = np.where(
            n > 0, 100.0 * fields["n_msc_red_positive"] / n, np.nan
        )
    return {**tables, "cells": cells, "fields": fields}
