"""Per-cell markers (annexin V, propidium iodide, any channel the config names as one):
each cell's mean and integrated intensity on the raw marker channel, and a positive call.

A marker stains some cells (apoptotic, dead) and leaves the others at the level of the
medium around them, so a cell is measured by its *contrast*, its mean intensity above the
channel's background level (the mode of the channel's histogram: the medium covers most of
a field). A cell is positive when its contrast exceeds

- ``threshold`` (intensity units above background), where one is set by hand or
  calibrated on control wells; else
- ``reference + k * sigma``: ``sigma`` is the channel's background noise per voxel and
  ``reference`` the lower quartile of the field's cells' contrasts (at least 0):
  unspecific staining that raises every cell raises the reference, and the call stays on
  the cells that stand out. It assumes that fewer than three quarters of a field's cells
  are positive (a chemotherapy field can have more than half); a plate where more are
  needs a threshold calibrated on its controls.

**Cells over cells (2-D fields).** A 2-D field is a projection: where a donor cell lies
on an MSC, the donor's pixels carry the MSC's stain too (an apoptotic MSC's annexin V
under a live donor made it positive), and the MSC's pixels under the donor carry the
donor's. Where the donor and MSC label images overlap, :func:`measure_marker` therefore

- measures each MSC's contrast on its own pixels, those farther than ``margin_um`` from
  any donor (a donor's stained rim blurs past its outline);
- subtracts from each donor's contrast what lies under it: per MSC it overlaps, the
  share of the donor's pixels over that MSC times the MSC's level near the donor (its
  own pixels within ``window_um`` past the margin whose nearest donor is this one), or
  the MSC's own contrast where that is higher (a window on a merged or spilled-over MSC
  outline reads pixels that are not the cell's).

Where the label images do not overlap (3-D fields: a donor's voxels are its own) the
contrast is the mean above the background level, as the calibration of
:mod:`hcsmito.aggregate.markers` recomputes it from ``<marker>_contrast``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import background_level_noise, bbox, bincount

__all__ = [
    "CellMarker",
    "MarkerLevels",
    "call_positive",
    "marker_levels",
    "measure_cells",
    "measure_marker",
]


@dataclass(frozen=True)
class MarkerLevels:
    """The background level and noise sigma of a marker channel (its intensity units)."""

    level: float
    sigma: float


@dataclass(frozen=True)
class CellMarker:
    """Per label 1..n of one kind of cell (host arrays): ``mean`` and ``sum`` of the raw
    channel over the label, and ``contrast``, what the call reads (module docstring)."""

    mean: np.ndarray
    sum: np.ndarray
    contrast: np.ndarray


def marker_levels(image: Any) -> MarkerLevels:
    """Background level and noise of a raw marker channel (NumPy or CuPy)."""
    b = Backend.of(image)
    level, sigma = background_level_noise(b, image.astype(b.xp.float32))
    return MarkerLevels(float(level), float(sigma))


def measure_cells(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per label 1..n of ``labels``: mean and integrated intensity of ``image`` (host)."""
    b = Backend.of(labels)
    xp = b.xp
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(0), np.zeros(0)
    lab = labels.reshape(-1)
    total = bincount(b, lab, n + 1).astype(xp.float64)
    sums = xp.bincount(lab, weights=b.asarray(image).reshape(-1).astype(xp.float64),
                       minlength=n + 1)  # fmt: skip
    means = sums / xp.maximum(total, 1)
    return b.to_host(means)[1:], b.to_host(sums)[1:]  # device->host: 2 values per cell


def measure_marker(
    image: Any,
    donors: Any,
    mscs: Any | None,
    *,
    spacing: Sequence[float],
    margin_um: float = 1.0,
    window_um: float = 3.0,
) -> tuple[MarkerLevels, CellMarker, CellMarker]:
    """The channel's levels and each donor's and MSC's measures (module docstring).

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        The raw marker channel (NumPy or CuPy).
    donors, mscs : (M, N[, P]) int ndarray
        Donor-cell and MSC labels 1..n (``mscs`` None: no MSC channel).
    spacing : sequence of float
        Voxel size per axis, µm.
    margin_um, window_um : float
        Where donor and MSC labels overlap: the margin around donors left out of an MSC's
        own pixels, and the band past it where the MSC's level near a donor is read.

    Returns
    -------
    levels, donor, msc : MarkerLevels, CellMarker, CellMarker
    """
    levels = marker_levels(image)
    d_mean, d_sum = measure_cells(image, donors)
    m_mean, m_sum = measure_cells(image, mscs) if mscs is not None else (np.zeros(0),) * 2
    d_con, m_con = d_mean - levels.level, m_mean - levels.level
    if len(d_mean) and len(m_mean):
        over = _over(image, donors, mscs, spacing, margin_um, window_um)
        if over is not None:
            own, share, window = over
            cell = np.where(np.isfinite(own), own, m_mean)  # each MSC's own mean
            near = np.where(np.isfinite(window), window, cell[None, :])
            under = (share * (np.maximum(near, cell[None, :]) - levels.level)).sum(axis=1)
            m_con, d_con = cell - levels.level, d_con - under
    return (levels, CellMarker(d_mean, d_sum, d_con), CellMarker(m_mean, m_sum, m_con))


def _over(image, donors, mscs, spacing, margin_um: float, window_um: float):
    """Where donor and MSC labels overlap: ``(own, share, window)``, else None.

    ``own`` (n_msc,): each MSC's mean over its pixels farther than ``margin_um`` from any
    donor (NaN where it has none); ``share`` (n_donor, n_msc): the share of each donor's
    pixels over each MSC; ``window`` (n_donor, n_msc): the mean of the MSC's own pixels
    within ``window_um`` past the margin whose nearest donor is this one (NaN: none).
    """
    b = Backend.of(donors)
    xp = b.xp
    overlap = (donors > 0) & (mscs > 0)
    if not bool(overlap.any()):  # device->host: one flag
        return None
    nd, nm = int(donors.max()), int(mscs.max())
    reach = margin_um + window_um
    box = bbox(b, donors > 0, [math.ceil(reach / s) + 1 for s in spacing])
    d, m = donors[box], mscs[box]
    img = b.asarray(image)[box].astype(xp.float32)
    dist, idx = b.ndi.distance_transform_edt(d == 0, sampling=tuple(spacing), return_indices=True)
    own = (m > 0) & (dist > margin_um)
    m_out = (mscs > 0).copy()
    m_out[box] = False  # MSC pixels outside the box are farther than the reach: their own
    inner, outer = m[own].astype(xp.int64), mscs[m_out].astype(xp.int64)
    o_cnt = bincount(b, inner, nm + 1) + bincount(b, outer, nm + 1)
    o_sum = _wsum(b, inner, img[own], nm + 1) + _wsum(b, outer, b.asarray(image)[m_out], nm + 1)
    key = d[overlap[box]].astype(xp.int64) * (nm + 1) + m[overlap[box]]
    pairs = bincount(b, key, (nd + 1) * (nm + 1)).reshape(nd + 1, nm + 1)
    win = own & (dist <= reach)
    nearest = d[tuple(i[win] for i in idx)].astype(xp.int64)
    wkey = nearest * (nm + 1) + m[win]
    w_cnt = bincount(b, wkey, (nd + 1) * (nm + 1)).reshape(nd + 1, nm + 1)
    w_sum = _wsum(b, wkey, img[win], (nd + 1) * (nm + 1)).reshape(nd + 1, nm + 1)
    area = bincount(b, donors.reshape(-1).astype(xp.int64), nd + 1)
    # device->host: a few values per cell pair
    o_cnt, o_sum, pairs, w_cnt, w_sum, area = (
        b.to_host(a) for a in (o_cnt, o_sum, pairs, w_cnt, w_sum, area)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        own_mean = np.where(o_cnt > 0, o_sum / np.maximum(o_cnt, 1), np.nan)[1:]
        share = pairs[1:, 1:] / np.maximum(area[1:, None], 1)
        window = np.where(w_cnt > 0, w_sum / np.maximum(w_cnt, 1), np.nan)[1:, 1:]
    return own_mean, share, window


def _wsum(b: Backend, keys: Any, weights: Any, n: int) -> Any:
    """``bincount(keys, weights)`` of length ``n``, also for empty ``keys``."""
    if int(keys.size) == 0:
        return b.xp.zeros(n, dtype=b.xp.float64)
    return b.xp.bincount(keys, weights=weights.astype(b.xp.float64), minlength=n)


def call_positive(
    contrast: np.ndarray,
    levels: MarkerLevels,
    *,
    k: float = 2.0,
    threshold: float | None = None,
) -> tuple[np.ndarray, float]:
    """The positive call of each cell from its contrast (mean above background), and
    the threshold used (module docstring)."""
    contrast = np.asarray(contrast, float)
    if threshold is None:
        finite = contrast[np.isfinite(contrast)]
        reference = max(float(np.percentile(finite, 25)), 0.0) if finite.size else 0.0
        threshold = reference + k * levels.sigma
    return contrast > threshold, float(threshold)
