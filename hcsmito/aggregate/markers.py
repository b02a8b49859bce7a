"""Per-cell marker calls (annexin V, PI, any marker the config adds) calibrated on control
wells: the threshold under which at most a given share of the control wells' cells are
positive, applied to every cell, and the fields' counts of positive cells recomputed.

A cell's contrast is the one its field's call read (``<marker>_contrast``: above what
lies under it in a projection, :mod:`hcsmito.stages.markers`); a run written before that
column has its mean above the field's background level (``<marker>_background``), which
is the same where no cell lies over another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hcsmito import schema
from hcsmito.aggregate.readouts import KEY
from hcsmito.aggregate.red_positive import control_wells

__all__ = ["apply_marker_thresholds", "calibrate_markers"]

#: The cell tables and their id column (the donor cells, the MSCs).
_CELLS = {"jurkat": "jurkat", "cells": "msc"}


def _contrast(tables: Mapping[str, pd.DataFrame], fields: pd.DataFrame, marker: str):
    """Per cell table: the cells with their contrast (module docstring) as ``_contrast``."""
    level = fields[[*KEY, f"{marker}_background"]]
    out = {}
    for name in _CELLS:
        cells = tables.get(name)
        if cells is None or f"{marker}_mean" not in cells:
            continue
        c = cells.merge(level, on=KEY, how="left")
        if f"{marker}_contrast" in c:
            c["_contrast"] = c[f"{marker}_contrast"]
        else:  # a run before the column
            c["_contrast"] = c[f"{marker}_mean"] - c[f"{marker}_background"]
        out[name] = c
    return out


def calibrate_markers(
    tables: Mapping[str, pd.DataFrame],
    fields: pd.DataFrame,
    plate_map: pd.DataFrame,
    *,
    controls: Sequence[str],
    max_share: float = 0.1,
) -> dict[str, dict]:
    """Per marker the plate has: the smallest contrast threshold under which at most
    ``max_share`` of the control wells' cells (donors and MSCs) are positive.

    Returns ``{marker: {"threshold": t, "share": s, "n_cells": n, "controls": [...]}}``.
    """
    wells = control_wells(plate_map, controls, max_share, what="marker ", example=0.1)
    out = {}
    for m in schema.markers_in(fields.columns):
        parts = _contrast(tables, fields, m)
        v = np.concatenate([c.loc[c["well"].isin(wells), "_contrast"].to_numpy(float)
                            for c in parts.values()] or [np.zeros(0)])  # fmt: skip
        v = np.sort(v[np.isfinite(v)])
        if v.size == 0:
            raise ValueError(f"no cells in the control wells {sorted(wells)}: cannot calibrate {m}")
        allowed = int(np.floor(max_share * v.size + 1e-9))
        t = float(v[v.size - allowed - 1])  # positive: contrast > t
        out[m] = {"threshold": t, "share": float(np.mean(v > t)), "n_cells": int(v.size),
                  "controls": list(controls)}  # fmt: skip
    return out


def apply_marker_thresholds(
    tables: Mapping[str, pd.DataFrame], fields: pd.DataFrame, thresholds: Mapping[str, float]
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Each cell's ``<marker>_positive`` from a threshold on its contrast, and the fields'
    ``n_{jurkat,msc}_<marker>_positive`` and ``<marker>_threshold`` recomputed."""
    tables = dict(tables)
    fields = fields.copy()
    for m, t in thresholds.items():
        for name, c in _contrast(tables, fields, m).items():
            c[f"{m}_positive"] = c["_contrast"].to_numpy(float) > t
            tables[name] = c.drop(columns=["_contrast", f"{m}_background"])
            counts = c.groupby(KEY, observed=True)[f"{m}_positive"].sum().rename("_n")
            col = f"n_{_CELLS[name]}_{m}_positive"
            merged = fields[KEY].merge(counts.reset_index(), on=KEY, how="left")
            n = pd.array(merged["_n"].fillna(0).astype("int64"), dtype="Int64")
            if "status" in fields:  # a failed field's count stays <NA>
                n[(fields["status"] != "ok").to_numpy()] = pd.NA
            fields[col] = n
        fields[f"{m}_threshold"] = float(t)
    return tables, fields
