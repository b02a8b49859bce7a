"""Adhesion of Jurkat donor cells onto MSCs.

A Jurkat cell is *adhered* when its lower surface rests on an MSC's upper surface. In 3-D
this is read from the labels directly, with shifted masks along z (no per-cell loop):

- the **lower surface** of a Jurkat is each of its voxels whose neighbour below is not
  the same cell (one voxel per (y, x) column of a convex cell);
- an MSC voxel at most ``contact_distance_um`` below that voxel (the same column, or the
  voxel itself when the two segmentations overlap) makes the column a **contact**;
- the **contact area** is the number of contact columns times ``dy * dx`` (the lateral
  area of contact), counted per (Jurkat, MSC) pair with one ``bincount``;
- a column counts only where the Jurkat's lower surface is at least ``min_lift_um`` above
  the MSC's base (the glass): the cell rests on the MSC, not on the glass beside it;
- a Jurkat is adhered to the MSC with the largest contact area when that area is at least
  ``min_contact_area_um2`` and at least ``overlap_min`` of its footprint (projection over
  z) lies over that MSC: a cell on the glass whose round side overhangs the thin edge of
  an MSC touches it there, but rests on the glass.

A Jurkat on the glass beside an MSC touches it only laterally: nothing of the MSC lies
under its lower surface, so it is not adhered.

2-D fields have no z: the fallback is lateral overlap. The contact area is the area of
the Jurkat's footprint lying over an MSC, and the Jurkat is adhered when that is at least
``overlap_min`` of its footprint (and ``min_contact_area_um2``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.backend import Backend
from hcsmito.stages._util import VoxelSize, bincount, spacing

__all__ = ["ADHESION_COLUMNS", "measure_adhesion"]

ADHESION_COLUMNS = ["jurkat_id", "adhered", "msc_id", "contact_area_um2"]


def measure_adhesion(
    jurkat_labels: Any,
    msc_labels: Any,
    *,
    voxel_size: VoxelSize,
    contact_distance_um: float = 1.0,
    min_contact_area_um2: float = 2.0,
    min_lift_um: float = 3.0,
    overlap_min: float = 0.5,
) -> pd.DataFrame:
    """Per Jurkat cell: is it adhered on an MSC, which one, over what area.

    Parameters
    ----------
    jurkat_labels : (M, N) or (P, M, N) int ndarray
        Jurkat instances (0 = background), NumPy or CuPy.
    msc_labels : int ndarray of the same shape, or None
        MSC instances. None: no Jurkat is adhered.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    contact_distance_um : float, µm
        Largest gap between a Jurkat's lower surface and the MSC below it (default 1 µm;
        rounded down to whole planes, at least the plane directly below).
    min_contact_area_um2 : float, µm²
        Smallest contact area that makes a Jurkat adhered (default 2 µm²).
    min_lift_um : float, µm
        3-D only: a contact column counts only where the Jurkat's lower surface lies at least
        this far above the lowest MSC voxel of the column (the glass), i.e. the cell rests on
        an MSC layer rather than on the glass (default 3 µm; 0 disables). It guards against
        MSC labels that extend under or around a Jurkat standing on the glass (blur, filled
        holes), which the contact rule alone would read as adhesion.
    overlap_min : float
        Share of the Jurkat footprint (its projection over z in 3-D) that must lie over the
        MSC it touches (default 0.5).

    Returns
    -------
    pandas.DataFrame
        One row per Jurkat label ``1..n`` present: ``jurkat_id`` (int32), ``adhered``
        (bool), ``msc_id`` (int32, the MSC it rests on, 0 = none), ``contact_area_um2`` (float, the
        largest contact area with one MSC, also reported below ``min_contact_area_um2``).
    """
    if jurkat_labels.ndim not in (2, 3):
        raise ValueError(
            f"jurkat_labels must be 2-D (Y, X) or 3-D (Z, Y, X), got shape {jurkat_labels.shape}"
        )
    if msc_labels is not None and tuple(msc_labels.shape) != tuple(jurkat_labels.shape):
        raise ValueError(
            f"msc_labels has shape {tuple(msc_labels.shape)}, jurkat_labels "
            f"{tuple(jurkat_labels.shape)}: pass the labels of the same field"
        )
    if not contact_distance_um >= 0:
        raise ValueError(f"contact_distance_um must be >= 0 µm, got {contact_distance_um}")
    b = Backend.of(jurkat_labels, msc_labels)
    xp = b.xp
    nd = jurkat_labels.ndim
    sp = spacing(voxel_size, nd)
    # labels of any integer dtype, read a plane at a time (3-D): no volume-sized copies
    jur = b.asarray(jurkat_labels)
    n_j = int(jur.max()) if jur.size else 0
    if n_j == 0:
        return _table(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
    counts = sum(bincount(b, _as_index(b, p).reshape(-1), n_j + 1)
                 for p in (jur if nd == 3 else jur[None]))  # fmt: skip
    present = b.to_host(counts > 0)  # device->host
    present[0] = False
    ids = np.flatnonzero(present).astype(np.int32)
    if msc_labels is None:
        return _table(ids, np.zeros(ids.size, np.int32), np.zeros(ids.size))
    msc = b.asarray(msc_labels)
    n_m = int(msc.max()) if msc.size else 0
    if n_m == 0:
        return _table(ids, np.zeros(ids.size, np.int32), np.zeros(ids.size))

    pixel_area = sp[-2] * sp[-1]
    if nd == 3:
        j_sel, m_sel = _contacts(b, jur, msc, sp, contact_distance_um, min_lift_um)
    else:
        contact = (jur > 0) & (msc > 0)
        j_sel, m_sel = jur[contact], msc[contact]
    j_sel, m_sel = j_sel.astype(xp.int64), m_sel.astype(xp.int64)  # pair index: 64 bits
    pair = bincount(b, j_sel * (n_m + 1) + m_sel, (n_j + 1) * (n_m + 1))
    table = b.to_host(pair.reshape(n_j + 1, n_m + 1)).astype(np.float64)  # device->host
    over = table[ids, 1:]
    best = over.argmax(axis=1) if over.shape[0] else np.zeros(0, np.int64)
    area = over[np.arange(ids.size), best] * pixel_area
    adhered = area >= min_contact_area_um2
    if nd == 2:
        foot = b.to_host(counts)[ids]  # device->host
        adhered &= area >= overlap_min * foot * pixel_area
    else:
        # the cell rests on the MSC it touches: most of its footprint lies over that MSC (a
        # cell on the glass whose round side overhangs an MSC's thin edge touches it there)
        adhered &= _footprint_share(b, jur, msc, ids, best + 1, n_j, n_m) >= overlap_min
    msc_id = np.where(area > 0, best + 1, 0).astype(np.int32)
    return _table(ids, msc_id, area, adhered)


def _contacts(
    b: Backend,
    jur: Any,
    msc: Any,
    sp: tuple[float, ...],
    contact_distance_um: float,
    min_lift_um: float,
) -> tuple[Any, Any]:
    """3-D: the Jurkat and MSC label of every contact voxel, plane by plane (z order).

    A contact voxel is a Jurkat's bottom voxel (the voxel below is not the same Jurkat)
    with an MSC voxel at or below it within the contact distance (the first such MSC,
    upwards from the voxel's own plane) and, with ``min_lift_um``, at least that far above
    the lowest MSC voxel of its column.
    """
    xp = b.xp
    depth = jur.shape[0]
    planes = max(int(math.floor(contact_distance_um / sp[0] + 1e-9)), 1)
    base = None  # the lowest MSC voxel of each column (depth where none)
    if min_lift_um > 0:
        base = xp.full(jur.shape[1:], depth, dtype=xp.int32)
        for z in range(depth):
            base = xp.minimum(base, xp.where(msc[z] > 0, xp.int32(z), xp.int32(depth)))
    j_sel, m_sel = [], []
    for z in range(depth):
        j = jur[z]
        bottom = j > 0
        if z > 0:
            bottom &= jur[z - 1] != j
        under = msc[z]
        for k in range(1, min(planes, z) + 1):
            under = xp.where(under > 0, under, msc[z - k])
        contact = bottom & (under > 0)
        if base is not None:
            lift = (xp.int32(z) - base).astype(xp.float32) * np.float32(sp[0])
            contact &= lift >= min_lift_um
        j_sel.append(j[contact])
        m_sel.append(under[contact])
    return xp.concatenate(j_sel), xp.concatenate(m_sel)


def _footprint_share(
    b: Backend, jur: Any, msc: Any, ids: np.ndarray, msc_ids: np.ndarray, n_j: int, n_m: int
) -> np.ndarray:
    """Per Jurkat ``ids[i]``: the share of its lateral footprint (projection over z) that
    lies over the footprint of MSC ``msc_ids[i]``."""
    xp = b.xp
    j2 = jur.max(axis=0).reshape(-1).astype(xp.int64)
    m2 = msc.max(axis=0).reshape(-1).astype(xp.int64)
    pair = bincount(b, j2 * (n_m + 1) + m2, (n_j + 1) * (n_m + 1)).reshape(n_j + 1, n_m + 1)
    table = b.to_host(pair).astype(np.float64)  # device->host: n_j × n_m counts
    foot = table[ids].sum(axis=1)
    return table[ids, msc_ids] / np.maximum(foot, 1)


def _as_index(b: Backend, labels: Any) -> Any:
    """Labels as int32 (the shifted copies of the contact search stay 4 bytes a voxel),
    int64 when a label value does not fit."""
    xp = b.xp
    lab = b.asarray(labels)
    if lab.dtype == xp.int32:
        return lab
    if lab.size and (lab.dtype.kind == "u" or lab.dtype.itemsize > 4):
        top = int(lab.max())  # device->host: one value
        if top > np.iinfo(np.int32).max:
            return lab.astype(xp.int64)
    return lab.astype(xp.int32)


def _table(
    ids: np.ndarray, msc_id: np.ndarray, area: np.ndarray, adhered: np.ndarray | None = None
) -> pd.DataFrame:
    if adhered is None:
        adhered = np.zeros(ids.size, bool)
    return pd.DataFrame(
        {
            "jurkat_id": ids.astype(np.int32),
            "adhered": adhered.astype(bool),
            "msc_id": np.where(adhered, msc_id, 0).astype(np.int32),
            "contact_area_um2": np.asarray(area, dtype=np.float64),
        }
    )
