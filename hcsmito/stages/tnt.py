"""Tunneling nanotubes (TNTs): thin F-actin tubes stretched between two cells above the glass.

1. **Tubeness.** The phalloidin channel is smoothed at a few scales matched to a blurred
   tube (``sqrt(psf² + r² / 4)`` per axis for tube radii ``r``: the imaged cross-section
   of a solid tube) and the Hessian is taken in units of each axis' smoothing sigma, so
   that a tube looks round whatever the voxel size and PSF anisotropy. Its eigenvalues
   (closed form, no per-voxel solver) give a Sato-like line response: large where the two
   cross-section curvatures are strongly negative and the axial one is near zero; sheets
   (cell cortices) and background score low. The response is the maximum over scales.
2. **Threshold** relative to the robust noise of the response (median + k · MAD over the
   voxels with a positive response, most of which are background): a hysteresis pair
   (``threshold_k`` for the core, ``threshold_low_k`` for its extent).
   ``thickness_um`` is twice the tube radius of the best-responding scale: a coarse
   figure, as tubes are thinner than the PSF and the pixel (it does not track the true
   diameter; see benchmarks/bench_tnt_accuracy.py).
3. **Free space.** Voxels inside any cell (MSC or Jurkat labels) are removed: a TNT is
   the free part of the tube between two cells. Connected components of what is left are
   skeletonised (host: scikit-image's 3-D skeleton; cuCIM has none).
4. **Rules.** Skeleton voxels within ``contact_um`` of a cell are contacts; cut there, the
   rest falls into free pieces (a short contact run joining two pieces, at most
   ``max_pass_um``, is a tube passing close over a thin MSC edge and joins them; a free
   skeleton end whose tube mask reaches a cell is an end on that cell, since skeletons
   retract from thick ends). A piece with ends on two *different* cells is a bridge; it is
   a TNT when it is at least ``min_length_um`` long (cell surface to cell surface), runs at
   least ``min_height_um`` above the glass (median over the path of the height above the
   glass under each voxel: a sloping tube or a tilted plate is measured where it runs;
   stress fibres lie at the glass) and gets at least ``min_clearance_um`` away from every
   cell somewhere (a tube hugging a cell outline is cortex, not a free-floating TNT). A
   tube across a gap that the segmented cells (a little larger than the true ones) narrow
   to under 2 ``contact_um`` is contacts all the way: a contact run with no free piece,
   next to two cells and straight from one to the other, is a bridge too, when it gets
   0.75 ``contact_um`` clear and is at least twice ``min_length_um`` long. Its
   ends are reported where the tube meets each cell: the contact gap beyond the path's
   end, along the path; a tube that lands on an MSC at a shallow angle (over its thin
   edge) is first followed straight on through its contact run (1.5-12 µm) to where it
   enters the cell.
5. **Cargo.** A TNT carries a mitochondrion when a focus label (``foci_labels``) lies
   within ``mito_tolerance_um`` of its path, or when the spot response of the ``mito``
   channel on the path (away from Jurkat bodies, whose own mitochondria glow) exceeds
   ``mito_threshold_k`` robust noise sigmas of that response in free space.

The glass plane is estimated per field from the lowest rising edge of the GFP, actin and
MitoTracker channels, tile by tile, robust to cells above the glass and to a tilt
(:mod:`hcsmito.stages.glass`), unless ``glass_z_um`` is given; a plate-level reference
replaces an implausible field estimate, and the result is flagged ``glass_implausible``.

2-D fields have no z: the height rule is not applied and ``height_um`` is NaN; the rest
(tubeness, free space, two-cell bridge, length, clearance, cargo) runs in the plane.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    VoxelSize,
    as_float32,
    gaussian,
    robust_sigma,
    spacing,
)
from hcsmito.stages.adhesion import bincount
from hcsmito.stages.foci import enhance_spots
from hcsmito.stages.glass import Glass, estimate_glass, resolve_glass

__all__ = ["TNT_COLUMNS", "TNTs", "detect_tnts", "match_tnts", "tubeness"]

#: Voxels per slab of the Hessian stage of :func:`tubeness` (CPU: cache-sized; GPU: large
#: enough that kernel launches do not dominate, ~1 GiB of temporaries).
_SLAB_VOXELS = 1 << 20
_SLAB_VOXELS_GPU = 1 << 24

TNT_COLUMNS = [
    "tnt_id",
    "length_um",
    "from_id",
    "from_kind",
    "to_id",
    "to_kind",
    "thickness_um",
    "height_um",
    "carries_mito",
    "z0_um",
    "y0_um",
    "x0_um",
    "z1_um",
    "y1_um",
    "x1_um",
]


@dataclass(frozen=True)
class TNTs:
    """Nanotubes of one field.

    Attributes
    ----------
    labels : (M, N[, P]) int32 ndarray
        0 = background, TNT ``i`` = the free (outside-cell) voxels of its tube; same shape
        and backend as the actin channel.
    table : pandas.DataFrame
        One row per TNT: ``tnt_id, length_um, from_id, from_kind ('msc'|'jurkat'), to_id,
        to_kind, thickness_um, height_um, carries_mito, z0_um, y0_um, x0_um, z1_um, y1_um,
        x1_um`` (endpoints where the tube leaves each cell, µm as ``index * voxel size``;
        ``z*_um`` and ``height_um`` NaN in 2-D; ``carries_mito`` is a nullable boolean, NA
        when neither foci labels nor the mito channel were given). ``from`` is the cell of
        the lower combined id (MSCs before Jurkats).
    glass_z_um : float
        Glass height used for heights, at the field centre (µm; NaN in 2-D or unknown).
    threshold : float
        Tubeness threshold (core of the hysteresis pair).
    glass : Glass or None
        The glass plane (tilt, source, plausibility: :mod:`hcsmito.stages.glass`).
    flags : tuple of str
        QC codes (``glass_implausible`` when the glass could not be trusted).
    """

    labels: Any
    table: pd.DataFrame
    glass_z_um: float = float("nan")
    threshold: float = float("nan")
    glass: Glass | None = None
    flags: tuple[str, ...] = ()

    @property
    def glass_source(self) -> str:
        """Where the glass came from (``gfp_edge``, ``actin_rise``, ``mito_rise``,
        ``given``, ``plate``; ``none`` when there is none)."""
        return "none" if self.glass is None else self.glass.source

    @property
    def n(self) -> int:
        """Number of TNTs."""
        return len(self.table)


def _empty_table() -> pd.DataFrame:
    t = pd.DataFrame({c: [] for c in TNT_COLUMNS})
    return t.astype(
        {
            "tnt_id": np.int32,
            "from_id": np.int32,
            "to_id": np.int32,
            "from_kind": object,
            "to_kind": object,
            "carries_mito": "boolean",
        }
    )


# -- tubeness -----------------------------------------------------------------------------


def _sym_eigvals3(b: Backend, h: dict[tuple[int, int], Any]) -> tuple[Any, Any, Any]:
    """Eigenvalues (ascending) of symmetric 3×3 matrices given by their 6 entries.

    Closed form (trigonometric solution of the characteristic cubic), elementwise, so it
    runs as array arithmetic on either backend. Temporaries are updated in place (the same
    operations in the same order as the plain expressions in the comments).
    """
    xp = b.xp
    a11, a22, a33 = h[0, 0], h[1, 1], h[2, 2]
    a12, a13, a23 = h[0, 1], h[0, 2], h[1, 2]
    q = a11 + a22  # q = (a11 + a22 + a33) / 3
    q += a33
    q /= 3
    p1 = a12 * a12  # p1 = a12² + a13² + a23²
    p1 += a13 * a13
    p1 += a23 * a23
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p = b11 * b11  # p = sqrt((b11² + b22² + b33² + 2 p1) / 6)
    p += b22 * b22
    p += b33 * b33
    p1 *= 2
    p += p1
    p /= 6
    xp.sqrt(p, out=p)
    # det = b11 (b22 b33 - a23²) - a12 (a12 b33 - a23 a13) + a13 (a12 a23 - b22 a13)
    det = b22 * b33
    det -= a23 * a23
    det *= b11
    t = a12 * b33
    t -= a23 * a13
    t *= a12
    det -= t
    xp.multiply(a12, a23, out=t)
    t -= b22 * a13
    t *= a13
    det += t
    # r = clip(det / (2 safe³), -1, 1) with safe = p, or 1 where p is 0 (p >= 0; a NaN p
    # comes with a NaN det, so the NaN safe that p + 0 gives there changes nothing)
    safe = (p + (p == 0)) ** 3
    safe *= 2
    det /= safe
    r = xp.clip(det, -1, 1, out=det)
    phi = xp.arccos(r, out=r)  # phi = arccos(r) / 3
    phi /= 3
    p *= 2  # e_hi = q + 2 p cos(phi)
    e_hi = xp.cos(phi)
    e_hi *= p
    e_hi += q
    phi += np.float32(2 * math.pi / 3)  # e_lo = q + 2 p cos(phi + 2π/3)
    e_lo = xp.cos(phi, out=phi)
    e_lo *= p
    e_lo += q
    e_mid = q  # e_mid = 3 q - e_hi - e_lo
    e_mid *= 3
    e_mid -= e_hi
    e_mid -= e_lo
    return e_lo, e_mid, e_hi


def _gradient(b: Backend, a: Any, axis: int) -> Any:
    """``xp.gradient(a, axis=axis)`` (unit spacing, one-sided edges) without temporaries."""
    xp = b.xp
    n = a.shape[axis]
    if n < 2:
        return xp.zeros_like(a)

    def at(sl: slice) -> tuple[slice, ...]:
        return (slice(None),) * axis + (sl,)

    out = xp.empty_like(a)
    xp.subtract(a[at(slice(1, 2))], a[at(slice(0, 1))], out=out[at(slice(0, 1))])
    xp.subtract(a[at(slice(n - 1, n))], a[at(slice(n - 2, n - 1))], out=out[at(slice(n - 1, n))])
    if n > 2:
        inner = out[at(slice(1, n - 1))]
        xp.subtract(a[at(slice(2, n))], a[at(slice(0, n - 2))], out=inner)
        inner /= 2
    return out


def _hessian(b: Backend, smooth: Any, scale_px: tuple[float, ...]) -> dict[tuple[int, int], Any]:
    """Second derivatives of ``smooth`` in units of each axis' scale (central differences)."""
    nd = smooth.ndim
    grads = [_gradient(b, smooth, i) for i in range(nd)]
    out = {}
    for i in range(nd):
        for j in range(i, nd):
            d = _gradient(b, grads[i], j)
            d *= np.float32(scale_px[i] * scale_px[j])
            out[i, j] = d
    return out


def tubeness(
    image: Any,
    *,
    voxel_size: VoxelSize,
    tube_radius_um: tuple[float, ...] = (0.1, 0.2, 0.35),
    psf_sigma_um: tuple[float, float] | None = None,
    alpha: float = 0.5,
) -> tuple[Any, Any]:
    """Multi-scale bright-line response (Sato-like) of a 2-D or 3-D image.

    Parameters
    ----------
    image : (M, N) or (P, M, N) ndarray
        One channel (any numeric dtype), NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    tube_radius_um : tuple of float, µm
        Tube radii to match (default 0.1, 0.2, 0.35 µm): one scale each.
    psf_sigma_um : (sigma_z, sigma_xy), µm, optional
        Gaussian PSF widths of the channel (default (0.5, 0.15), as the foci stage).
    alpha : float
        Tolerance on the axial curvature relative to the cross-section one (Sato's
        ``alpha_1``, default 0.5): smaller rejects blobs harder.

    Returns
    -------
    response : ndarray, float32, same shape and backend
        Maximum over scales of the normalised line response (intensity units).
    radius : ndarray, float32
        Tube radius (µm) of the scale that gave the maximum.
    """
    b = Backend.of(image)
    xp = b.xp
    sp = spacing(voxel_size, image.ndim)
    psf_z, psf_xy = (0.5, 0.15) if psf_sigma_um is None else psf_sigma_um
    psf = (psf_z, psf_xy, psf_xy)[3 - image.ndim :]
    img = as_float32(b, image)
    best = xp.zeros(img.shape, xp.float32)
    best_r = xp.zeros(img.shape, xp.float32)
    # the Hessian and its eigenvalues (~15 float32 temporaries per voxel) are computed in
    # slabs of rows (y), each with the 2 rows on either side that two central differences
    # read: the same numbers as on the whole image, in a bounded working set
    rows = img.shape[-2]
    plane = max(int(np.prod(img.shape)) // max(rows, 1), 1)
    step = max(1, (_SLAB_VOXELS_GPU if b.is_gpu else _SLAB_VOXELS) // plane)
    for r in tube_radius_um:
        sig_um = [math.sqrt(ps * ps + r * r / 4) for ps in psf]
        sig_px = tuple(s_um / s for s_um, s in zip(sig_um, sp, strict=True))
        smooth = gaussian(b, img, sig_px)
        for y0 in range(0, rows, step):
            y1 = min(y0 + step, rows)
            a0, a1 = max(y0 - 2, 0), min(y1 + 2, rows)
            resp = _line_response(b, smooth[..., a0:a1, :], sig_px, alpha)
            resp = resp[..., y0 - a0 : y1 - a0, :]
            out, out_r = best[..., y0:y1, :], best_r[..., y0:y1, :]
            # resp and best are finite or NaN and never -0: fmax is where(resp > best, ...)
            out_r[...] = xp.where(resp > out, np.float32(r), out_r)
            xp.fmax(out, resp, out=out)
        del smooth
    return best, best_r


def _line_response(b: Backend, smooth: Any, sig_px: tuple[float, ...], alpha: float) -> Any:
    """Normalised bright-line response of one scale from the smoothed image."""
    xp = b.xp
    h = _hessian(b, smooth, sig_px)
    if smooth.ndim == 3:
        e_lo, e_mid, e_hi = _sym_eigvals3(b, h)
    else:
        tr = h[0, 0] + h[1, 1]
        disc = xp.sqrt(((h[0, 0] - h[1, 1]) / 2) ** 2 + h[0, 1] ** 2)
        e_lo, e_hi = tr / 2 - disc, tr / 2 + disc
        e_mid = e_lo
    del h
    # cross-section curvature: e_mid (3-D) / e_lo (2-D), negative on a bright tube;
    # axial curvature e_hi near zero
    lam = -e_mid
    tube = lam > 0
    width = xp.where(e_hi <= 0, np.float32(alpha), np.float32(4 * alpha))
    # resp = lam exp(-((e_hi / lam) / width)² / 2) where lam > 0, else 0
    ratio = e_hi / xp.where(tube, lam, 1)
    ratio /= width
    xp.square(ratio, out=ratio)
    ratio *= -0.5
    resp = xp.exp(ratio, out=ratio)
    resp *= lam
    return xp.where(tube, resp, 0)


# -- cropped distance transforms ----------------------------------------------------------
#
# The exact feature transform (scipy's and cuCIM's ``distance_transform_edt``) of a crop that
# holds *every* feature voxel is the full one, shifted, on the crop: lines outside the
# features' bounding box carry no candidate features, and the arithmetic only uses
# coordinate differences. The stages below crop to such boxes and take distances only
# where they are read.


def _bbox(b: Backend, mask: Any, margin: tuple[int, ...] | None = None) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask``, grown by ``margin`` voxels and clipped to the
    array; None when ``mask`` is empty."""
    xp = b.xp
    nd = mask.ndim
    out = []
    for ax in range(nd):
        other = tuple(i for i in range(nd) if i != ax)
        hit = np.flatnonzero(b.to_host(xp.any(mask, axis=other)))  # device->host: one row
        if hit.size == 0:
            return None
        m = 0 if margin is None else margin[ax]
        out.append(slice(max(int(hit[0]) - m, 0), min(int(hit[-1]) + m + 1, mask.shape[ax])))
    return tuple(out)


def _feature_distance(b: Backend, ft: tuple[Any, ...], at: tuple[Any, ...], sp) -> Any:
    """µm from the voxels ``at`` to their features ``ft`` (index arrays of a feature
    transform), float64, with the arithmetic of scipy's ``distance_transform_edt``."""
    xp = b.xp
    acc = None
    for f, c, s in zip(ft, at, sp, strict=True):
        t = (f - c).astype(xp.float64) * s
        t *= t
        acc = t if acc is None else acc + t
    return xp.sqrt(acc)


def _feature_transform(b: Backend, background: Any, sp) -> Any:
    """Index arrays (ndim, ...) of the nearest ``False`` voxel of ``background``."""
    return b.ndi.distance_transform_edt(
        background, sampling=sp, return_distances=False, return_indices=True
    )


def _far_from(b: Backend, features: Any, min_um: float, sp) -> Any:
    """Voxels farther than ``min_um`` from every voxel of ``features`` (bool, same shape):
    ``distance_transform_edt(~features) > min_um``, computed on the features' box."""
    xp = b.xp
    out = xp.ones(features.shape, dtype=bool)
    # beyond this margin every voxel is farther than min_um (by at least one voxel)
    box = _bbox(b, features, tuple(int(math.floor(min_um / s)) + 1 for s in sp))
    if box is None:
        return out
    sub = features[box]
    ft = _feature_transform(b, ~sub, sp)
    at = xp.ogrid[tuple(slice(0, n) for n in sub.shape)]
    out[box] = _feature_distance(b, tuple(ft), tuple(at), sp) > min_um
    return out


# -- skeleton graph -----------------------------------------------------------------------


def _skeleton_graph(coords: np.ndarray, shape: tuple[int, ...], sp: tuple[float, ...]):
    """Sparse graph (µm edge weights) joining 26- (8-) connected skeleton voxels (host)."""
    from scipy import sparse

    n = len(coords)
    index = np.full(shape, -1, dtype=np.int64)
    index[tuple(coords.T)] = np.arange(n)
    rows, cols, w = [], [], []
    nd = len(shape)
    for off in np.ndindex(*(3,) * nd):
        d = np.asarray(off) - 1
        if not any(d) or tuple(d) < (0,) * nd:
            continue  # each undirected edge once
        nb = coords + d
        ok = np.all((nb >= 0) & (nb < np.asarray(shape)), axis=1)
        j = np.full(n, -1, dtype=np.int64)
        j[ok] = index[tuple(nb[ok].T)]
        hit = j >= 0
        rows.append(np.flatnonzero(hit))
        cols.append(j[hit])
        w.append(np.full(int(hit.sum()), math.sqrt(float(np.sum((d * np.asarray(sp)) ** 2)))))
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    ww = np.concatenate(w) if w else np.zeros(0)
    g = sparse.coo_matrix((ww, (r, c)), shape=(n, n)).tocsr()
    return g + g.T


def _path_length(pts: np.ndarray, window: int = 5) -> float:
    """Length (µm) of a voxel path (N, ndim) µm, smoothed by a moving average of ``window``
    points (ends kept) so that the staircase of a digital line does not add length."""
    if len(pts) < 2:
        return 0.0
    w = min(window, len(pts))
    if w >= 3:
        kernel = np.ones(w) / w
        pad = np.pad(pts, ((w // 2, w // 2), (0, 0)), mode="edge")
        smooth = np.stack([np.convolve(pad[:, k], kernel, "valid") for k in range(pts.shape[1])], 1)
        smooth[0], smooth[-1] = pts[0], pts[-1]
        pts = smooth
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


def _surface_point(pts: np.ndarray, gap_um: float, back_um: float = 2.0) -> np.ndarray:
    """Where a tube whose path (N, ndim) µm starts at ``pts[0]`` meets its cell: ``gap_um``
    before that end, along the direction of the last ``back_um`` of the path."""
    if len(pts) < 2 or not gap_um > 0:
        return pts[0]
    along = np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(pts, axis=0), axis=1)])
    k = int(min(np.searchsorted(along, back_um), len(pts) - 1))
    u = pts[0] - pts[k]
    n = float(np.linalg.norm(u))
    return pts[0] if n == 0 else pts[0] + u * (gap_um / n)


def _inside_stack(p: np.ndarray, gl: Glass | None, depth_um: float) -> np.ndarray:
    """An end point (z, y, x µm) extrapolated along a steep path, put back between the
    glass under it and the top of the stack: a tube meets no cell below the glass."""
    z = float(p[0])
    if gl is not None and np.isfinite(gl.z_um):
        z = max(z, float(gl.at(np.asarray([p[1]]), np.asarray([p[2]]))[0]))
    return np.r_[min(max(z, 0.0), depth_um), p[1:]]


def _path(pred: np.ndarray, start: int, end: int) -> list[int]:
    out = [end]
    while out[-1] != start:
        nxt = int(pred[out[-1]])
        if nxt < 0:
            return []
        out.append(nxt)
    return out[::-1]


# -- detection ----------------------------------------------------------------------------


def detect_tnts(
    actin: Any,
    *,
    voxel_size: VoxelSize,
    msc_labels: Any,
    jurkat_labels: Any,
    foci_labels: Any = None,
    mito: Any = None,
    tube_radius_um: tuple[float, ...] = (0.1, 0.2, 0.35),
    psf_sigma_um: tuple[float, float] | None = None,
    threshold_k: float = 7.0,
    threshold_low_k: float = 2.5,
    contact_um: float = 1.0,
    min_length_um: float = 2.0,
    min_height_um: float = 0.5,
    min_clearance_um: float = 1.0,
    max_pass_um: float = 3.0,
    max_steepness: float = 2.0,
    glass_z_um: float | Glass | None = None,
    glass_channels: Mapping[str, Any] | None = None,
    glass_reference_um: float | None = None,
    glass_tolerance_um: float = 1.5,
    mito_tolerance_um: float = 0.6,
    mito_threshold_k: float = 6.0,
    mito_diameter_um: float = 0.6,
    jurkat_halo_um: float = 1.0,
    msc_signal: Any = None,
    tighten_cells: bool = True,
) -> TNTs:
    """Tunneling nanotubes of one field, with the cells they bridge and their cargo.

    Parameters
    ----------
    actin : (M, N) or (P, M, N) ndarray
        Phalloidin (F-actin) channel of one field, NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    msc_labels, jurkat_labels : int ndarray of ``actin``'s shape
        Cell instances (0 = background); ids are reported as ``from_id`` / ``to_id``.
    foci_labels : int ndarray of ``actin``'s shape, optional
        Mitochondria foci; one within ``mito_tolerance_um`` of the path marks cargo.
    mito : ndarray of ``actin``'s shape, optional
        Mitochondria channel: a spot on the path marks cargo (see ``mito_threshold_k``).
        Without ``foci_labels`` and ``mito``, ``carries_mito`` is NA.
    tube_radius_um : tuple of float, µm
        Tube radii the enhancement is tuned to (default 0.1, 0.2, 0.35 µm).
    psf_sigma_um : (sigma_z, sigma_xy), µm, optional
        Gaussian PSF of the actin channel (default (0.5, 0.15)).
    threshold_k, threshold_low_k : float
        Hysteresis thresholds on the tubeness, in robust noise sigmas (defaults 7 and 2.5).
    contact_um : float, µm
        Largest gap between a path end and the cell it attaches to (default 1 µm).
    min_length_um : float, µm
        Shortest TNT, cell surface to cell surface (default 2 µm: segmented cells, a little
        larger than the true ones, shorten the free part by 1-2 µm).
    min_height_um : float, µm
        Lowest median height of the path above the glass (default 0.5 µm): excludes the
        basal stress fibres. Not applied in 2-D.
    min_clearance_um : float, µm
        The path must get this far from every cell somewhere (default 1 µm): excludes
        cortex running along a cell outline.
    max_pass_um : float, µm
        A tube may pass within ``contact_um`` of a third cell (over a thin MSC edge) for at
        most this skeleton length without being cut there (default 3 µm).
    max_steepness : float
        Largest rise of a TNT per unit of lateral run, end to end (default 2: 63°).
        Nanotubes run level or slope gently above the substrate; a bridge standing nearly
        upright between an MSC and a cell resting on it is that cell's cortex. Not
        applied in 2-D.
    glass_z_um : float (µm) or Glass, optional
        Height of the glass (``index * dz``; source ``given``), or a plane already found;
        default: estimated with :func:`hcsmito.stages.glass.estimate_glass` from
        ``glass_channels``. The height rule uses the plane's height under each path voxel
        (a tilted plate).
    glass_channels : mapping of role -> ndarray, optional
        Raw channels by role (``msc`` GFP, ``actin``, ``mito``) for the glass estimate
        (default: ``actin``, and ``mito`` when given).
    glass_reference_um : float, µm, optional
        The plate's glass height: a field whose own estimate is implausible or further than
        ``glass_tolerance_um`` from it uses it instead (source ``plate``, flagged
        ``glass_implausible``).
    glass_tolerance_um : float, µm
        Largest distance of a field's glass from the plate's reference (default 1.5 µm).
    mito_tolerance_um : float, µm
        Distance from the path within which a focus counts as cargo (default 0.6 µm).
    mito_threshold_k : float
        ``mito`` spot response threshold in robust noise sigmas (default 6).
    mito_diameter_um : float, µm
        Spot size for the ``mito`` response (default 0.6 µm).
    msc_signal : ndarray of ``actin``'s shape, optional
        The GFP image the MSCs were segmented from (see ``tighten_cells``).
    tighten_cells : bool
        Measure free space against cell masks cut back to their own signal (default
        True): MSC labels where ``msc_signal``, Jurkat labels where ``mito`` stays bright
        (:func:`hcsmito.stages.cell_surface.tighten_labels`). Segmented masks reach past
        the true cells and close the gap a short tube crosses. Without the signal, a
        cell's mask is used as it is.
    jurkat_halo_um : float, µm
        Path voxels this close to a Jurkat body are not searched for cargo (default 1 µm).

    Returns
    -------
    TNTs
        ``labels`` and ``table`` (see :class:`TNTs`), the glass and its QC ``flags``; 2-D
        fields get ``height_um`` NaN and no height rule. Without a usable glass (none found,
        no reference) the height rule is not applied and the result is flagged.
    """
    if actin.ndim not in (2, 3):
        raise ValueError(
            f"actin must be one channel, 2-D (Y, X) or 3-D (Z, Y, X); got shape {actin.shape}: "
            "select the channel first (e.g. image[c])"
        )
    for name, arr in (
        ("msc_labels", msc_labels),
        ("jurkat_labels", jurkat_labels),
        ("foci_labels", foci_labels),
        ("mito", mito),
    ):
        if arr is not None and tuple(arr.shape) != tuple(actin.shape):
            raise ValueError(
                f"{name} has shape {tuple(arr.shape)}, actin {tuple(actin.shape)}: "
                "pass the arrays of the same field"
            )
    if not (min_length_um >= 0 and contact_um >= 0 and min_clearance_um >= 0):
        raise ValueError("min_length_um, contact_um and min_clearance_um must be >= 0 µm")
    b = Backend.of(actin)
    xp = b.xp
    nd = actin.ndim
    sp = spacing(voxel_size, nd)
    empty_labels = xp.zeros(actin.shape, xp.int32)
    if actin.size == 0:
        return TNTs(empty_labels, _empty_table())

    msc = (
        b.asarray(msc_labels).astype(xp.int32, copy=False)
        if msc_labels is not None
        else empty_labels
    )
    jur = (
        b.asarray(jurkat_labels).astype(xp.int32, copy=False)
        if jurkat_labels is not None
        else empty_labels
    )
    if tighten_cells:
        msc, jur = _tight_cells(msc, jur, msc_signal, mito, sp)
    n_msc = int(msc.max()) if msc.size else 0
    cells = xp.where(jur > 0, jur + n_msc, msc).astype(xp.int32)
    gl = None
    if nd == 3:
        gl = _field_glass(
            actin, mito, sp, glass_z_um, glass_channels, glass_reference_um, glass_tolerance_um
        )
    glass = float("nan") if gl is None else gl.z_um

    def result(labels: Any, table: pd.DataFrame, thr: float = float("nan")) -> TNTs:
        return TNTs(labels, table, glass, thr, gl, () if gl is None else gl.flags)

    if not bool((cells > 0).any()):  # no cells, no TNTs: the glass does not matter
        return TNTs(empty_labels, _empty_table(), glass, glass=gl)

    resp, radius = tubeness(
        actin, voxel_size=sp, tube_radius_um=tube_radius_um, psf_sigma_um=psf_sigma_um
    )
    pos = resp[resp > 0]
    if int(pos.size) < 16:
        return result(empty_labels, _empty_table())
    med = float(b.to_host(xp.median(pos)))  # device->host: one value
    noise = robust_sigma(b, pos)
    if not noise > 0:
        return result(empty_labels, _empty_table())
    thr_hi = med + threshold_k * noise
    thr_lo = med + threshold_low_k * noise

    free = cells == 0
    low = (resp > thr_lo) & free
    ones = xp.ones((3,) * nd, dtype=bool)
    comp, n_comp = b.ndi.label(low, structure=ones)
    if n_comp == 0:
        return result(empty_labels, _empty_table(), thr_hi)
    core = bincount(b, comp[(resp > thr_hi) & low].reshape(-1), n_comp + 1) > 0
    core[0] = False
    comp = xp.where(core[comp], comp, 0).astype(xp.int32)
    mask = comp > 0
    if not bool(mask.any()):
        return result(empty_labels, _empty_table(), thr_hi)

    # nearest cell (feature transform of the free space); distances only where read
    ft = tuple(_feature_transform(b, free, sp))

    from skimage.morphology import skeletonize

    mask_h = b.to_host(mask)  # device->host: one bool volume (cuCIM has no 3-D skeleton)
    skel = skeletonize(mask_h)
    coords = np.argwhere(skel)
    if len(coords) == 0:
        return result(empty_labels, _empty_table(), thr_hi)
    cidx = tuple(b.asarray(coords[:, i]) for i in range(nd))
    s_ft = tuple(f[cidx] for f in ft)
    s_dist = b.to_host(_feature_distance(b, s_ft, cidx, sp))  # device->host
    s_cell = b.to_host(cells[s_ft])  # device->host
    s_rad = b.to_host(radius[cidx]).astype(np.float64)  # device->host
    # which cells each tube component reaches within contact_um (a skeleton retracts from
    # a thick end, the mask does not)
    n_cells = int(cells.max())
    m_idx = xp.nonzero(mask)
    m_ft = tuple(f[m_idx] for f in ft)
    del ft
    reach = _feature_distance(b, m_ft, m_idx, sp) <= contact_um
    pair = comp[m_idx][reach].astype(xp.int64) * (n_cells + 1) + cells[m_ft][reach]
    touch = bincount(b, pair, (n_comp + 1) * (n_cells + 1)) > 0
    touch = b.to_host(touch.reshape(n_comp + 1, n_cells + 1))  # device->host: small table
    s_comp = b.to_host(comp[cidx])  # device->host
    s_reach = touch[s_comp, s_cell]

    graph = _skeleton_graph(coords, tuple(actin.shape), sp)
    paths = _bridges(
        graph,
        s_dist,
        s_cell,
        s_reach,
        coords * np.asarray(sp),
        (s_cell > 0) & (s_cell <= n_msc),
        contact_um=contact_um,
        max_pass_um=max_pass_um,
        step_um=min(sp),
    )
    # cargo where it is read: on the paths of the bridges
    cargo = None
    if paths:
        on_path = np.unique(np.concatenate([path for path, *_ in paths]))
        hit = _cargo_response(
            b, foci_labels, mito, jur, free,
            tuple(b.asarray(coords[on_path, i]) for i in range(nd)), sp, nd,
            mito_tolerance_um=mito_tolerance_um,
            mito_threshold_k=mito_threshold_k,
            mito_diameter_um=mito_diameter_um,
            jurkat_halo_um=jurkat_halo_um,
            psf_sigma_um=psf_sigma_um,
        )  # fmt: skip
        if hit is not None:
            cargo = np.zeros(len(coords), bool)
            cargo[on_path] = hit
    rows = []
    kept = []
    path_img = np.zeros(actin.shape, np.int32)
    spa = np.asarray(sp)
    for path, _, narrow in paths:
        length = _path_length(coords[path] * spa) + s_dist[path[0]] + s_dist[path[-1]]
        # a bridge over a narrow gap never gets contact_um clear: three quarters will do (a
        # cortex or a junction between two cells runs at a voxel or two from them), and it
        # must be twice min_length_um long (shorter, it is where two cells nearly touch: a
        # Jurkat's cortex on its MSC)
        clear, shortest = min_clearance_um, min_length_um
        if narrow:
            clear, shortest = min(min_clearance_um, 0.75 * contact_um), 2 * min_length_um
        if length < shortest or s_dist[path].max() < clear:
            continue
        height = float("nan")
        if nd == 3 and gl is not None and np.isfinite(gl.z_um):
            # height above the glass under each path voxel (a tilted plate), median
            pz = coords[path] * spa
            height = float(np.median(pz[:, 0] - gl.at(pz[:, 1], pz[:, 2])))
            if height < min_height_um:
                continue
        ends = [int(path[0]), int(path[-1])]
        pts = coords[path] * spa
        # the tube meets each cell its contact gap beyond the path's end, along the path
        p_end = [_surface_point(pts, s_dist[path[0]]), _surface_point(pts[::-1], s_dist[path[-1]])]
        if s_cell[ends[0]] > s_cell[ends[1]]:
            ends = ends[::-1]
            p_end = p_end[::-1]
        if nd == 3:
            p_end = [_inside_stack(p, gl, actin.shape[0] * sp[0]) for p in p_end]
            rise = abs(float(p_end[1][0] - p_end[0][0]))
            if rise > max_steepness * float(np.linalg.norm(p_end[1][1:] - p_end[0][1:])):
                continue  # upright: the cortex under a cell resting on another
        p0, p1 = p_end
        if nd == 2:
            p0, p1 = np.r_[np.nan, p0], np.r_[np.nan, p1]
        ca, cb = int(s_cell[ends[0]]), int(s_cell[ends[1]])
        kind_a, id_a = ("jurkat", ca - n_msc) if ca > n_msc else ("msc", ca)
        kind_b, id_b = ("jurkat", cb - n_msc) if cb > n_msc else ("msc", cb)
        rows.append(
            {
                "tnt_id": len(rows) + 1,
                "length_um": float(length),
                "from_id": id_a,
                "from_kind": kind_a,
                "to_id": id_b,
                "to_kind": kind_b,
                "thickness_um": float(2 * np.mean(s_rad[path])),
                "height_um": height,
                "carries_mito": None if cargo is None else bool(cargo[path].any()),
                "z0_um": float(p0[0]),
                "y0_um": float(p0[1]),
                "x0_um": float(p0[2]),
                "z1_um": float(p1[0]),
                "y1_um": float(p1[1]),
                "x1_um": float(p1[2]),
            }
        )
        path_img[tuple(coords[path].T)] = len(rows)
        kept.append(path)
    if not rows:
        return result(empty_labels, _empty_table(), thr_hi)
    # each tube voxel goes to the TNT whose path is nearest, within its own component: only
    # the components of the TNTs get labels; on their box, which holds every path voxel (the
    # feature transform there is exact)
    on_path = np.concatenate(kept)
    has_tnt = xp.zeros(n_comp + 1, dtype=bool)
    has_tnt[comp[tuple(b.asarray(coords[on_path, i]) for i in range(nd))]] = True
    tubes = has_tnt[comp]
    box = _bbox(b, tubes)
    paths_d = b.asarray(path_img[box])
    comp_b = comp[box]
    near_idx = tuple(_feature_transform(b, paths_d == 0, sp))
    same = comp_b[near_idx] == comp_b
    labels = xp.zeros(actin.shape, xp.int32)
    labels[box] = xp.where(tubes[box] & same, paths_d[near_idx], 0)
    table = pd.DataFrame(rows, columns=TNT_COLUMNS).astype(
        {"tnt_id": np.int32, "from_id": np.int32, "to_id": np.int32, "carries_mito": "boolean"}
    )
    return result(labels, table, thr_hi)


def _tight_cells(msc: Any, jur: Any, msc_signal: Any, mito: Any, sp: tuple[float, ...]):
    """MSC and Jurkat labels cut back to their own signal (see ``tighten_cells``).

    MSCs: GFP fills the cytoplasm to the membrane, so the label keeps the voxels where
    the GFP smoothed at 0.4 µm (in the plane: the masks are as tight in z as the optics
    allow already) stays above 0.3 of the way to the cell's mean, the fraction that
    segmentation uses on its 1 µm smoothed image. Jurkat cells: MitoTracker smoothed at
    0.5 µm above half the cell's mean, holes filled, the largest piece, and 1 µm of the
    label given back above and below (the cortex is cell too). Tried on the variation
    grid (benchmarks/bench_variations.py): 0.2-0.6 µm and fractions 0.2-0.5 behave alike.
    """
    from hcsmito.stages.cell_surface import tighten_labels

    if msc_signal is not None and bool((msc > 0).any()):
        msc = tighten_labels(msc, msc_signal, voxel_size=sp, sigma_um=(0.0, 0.4, 0.4),
                             fraction=0.3)  # fmt: skip
    if mito is not None and bool((jur > 0).any()):
        jur = tighten_labels(jur, mito, voxel_size=sp, sigma_um=(0.5, 0.5, 0.5),
                             fraction=0.5, fill_holes=True, main_body=True,
                             keep_z_um=1.0)  # fmt: skip
    return msc, jur


def _field_glass(
    actin: Any,
    mito: Any,
    sp: tuple[float, ...],
    given: float | Glass | None,
    channels: Mapping[str, Any] | None,
    reference_um: float | None,
    tolerance_um: float,
) -> Glass:
    """The glass plane of a 3-D field: given, estimated, or the plate's reference."""
    if isinstance(given, Glass):
        est = given
    elif given is not None:
        return Glass(float(given), "given", True, (0.0, 0.0), (0.0, 0.0))
    else:
        chans = dict(channels) if channels is not None else {"actin": actin, "mito": mito}
        est = estimate_glass(chans, voxel_size=sp)
    return resolve_glass(est, reference_um=reference_um, tolerance_um=tolerance_um)


def _bridges(
    graph: Any,
    s_dist: np.ndarray,
    s_cell: np.ndarray,
    s_reach: np.ndarray,
    coords: np.ndarray | None = None,
    shallow: np.ndarray | None = None,
    *,
    contact_um: float,
    max_pass_um: float,
    step_um: float,
    min_straight: float = 0.9,
) -> list[tuple[np.ndarray, float, bool]]:
    """Skeleton paths that leave one cell and reach another through free space (host).

    Skeleton voxels within ``contact_um`` of a cell are *contacts*; the others, cut at the
    contacts, fall into free pieces. A run of contacts joining exactly two pieces and no
    longer than ``max_pass_um`` is a tube passing close over a cell (a thin MSC edge): the
    two pieces are joined through it. Any other contact run is an *end* where a tube meets
    a cell. A group of pieces with ends on two different cells is a bridge: the shortest
    path through it between one end of each (the pair farthest apart when it touches more).
    Cortex hugging a cell outline is all contacts and never forms a piece; two tubes
    meeting on a cell are cut apart there. A free skeleton end whose tube (mask component)
    reaches its nearest cell within ``contact_um`` (``s_reach``) is an end on that cell too:
    skeletons retract from thick tube ends.

    Returns
    -------
    list of (path, length_um, narrow)
        Skeleton indices from one end to the other, the length from cell surface to cell
        surface (geodesic plus the two contact gaps), and whether the bridge crosses a
        narrow gap within ``contact_um`` of the cells all the way (a contact run next to
        two cells, no free piece, its chord at least ``min_straight`` of its length; needs
        ``coords``).
    """
    from scipy.sparse.csgraph import connected_components, dijkstra

    near = s_dist <= contact_um
    free_idx = np.flatnonzero(~near)
    near_idx = np.flatnonzero(near)
    if free_idx.size == 0:
        return []
    n_piece, piece = connected_components(graph[free_idx][:, free_idx], directed=False)
    if near_idx.size:
        _, run = connected_components(graph[near_idx][:, near_idx], directed=False)
    else:
        run = np.zeros(0, np.int32)
    piece_of = np.full(len(s_dist), -1)
    piece_of[free_idx] = piece
    run_of = np.full(len(s_dist), -1)
    run_of[near_idx] = run
    # (run, piece) adjacency
    adj = graph[near_idx].tocoo()
    ok = piece_of[adj.col] >= 0
    # (near node, run, piece) for every contact next to a free voxel
    attach = np.stack([near_idx[adj.row[ok]], run[adj.row[ok]], piece_of[adj.col[ok]]], axis=1)
    # free skeleton ends whose tube reaches a cell: one-node end runs of their own
    degree = np.diff(graph.tocsr().indptr)
    loose = free_idx[(degree[free_idx] <= 1) & s_reach[free_idx]]
    extra = np.stack([loose, run.size + np.arange(loose.size), piece_of[loose]], axis=1)
    attach = np.unique(np.concatenate([attach, extra.astype(attach.dtype)]), axis=0)
    rp = np.unique(attach[:, 1:], axis=0)
    # union pieces through short pass-over runs
    parent = np.arange(n_piece)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    run_size = np.bincount(run, minlength=int(attach[:, 1].max(initial=0)) + 1)
    passing = set()
    for r in np.unique(rp[:, 0]) if len(rp) else []:
        pieces = rp[rp[:, 0] == r, 1]
        if pieces.size == 2 and run_size[r] * step_um <= max_pass_um:
            passing.add(int(r))
            parent[find(int(pieces[0]))] = find(int(pieces[1]))
    group = np.array([find(i) for i in range(n_piece)])
    out = []
    for g in np.unique(group):
        pieces = np.flatnonzero(group == g)
        at = attach[np.isin(attach[:, 2], pieces) & ~np.isin(attach[:, 1], list(passing))]
        cells = s_cell[at[:, 0]]
        if np.unique(cells).size < 2:
            continue
        # one end per cell: its attachment (contact next to free space) closest to it
        ends = []
        for c in np.unique(cells):
            cand = at[cells == c, 0]
            ends.append(int(cand[np.argmin(s_dist[cand])]))
        inner = np.r_[
            free_idx[np.isin(piece, pieces)], near_idx[np.isin(run, list(passing))]
        ].astype(np.int64)
        nodes = np.unique(np.r_[inner, ends])
        sub = graph[nodes][:, nodes]
        loc = np.searchsorted(nodes, ends)
        dmat, pred = dijkstra(sub, indices=loc, return_predecessors=True)
        best = None
        for i in range(len(ends)):
            for j in range(i + 1, len(ends)):
                d = dmat[i, loc[j]]
                if np.isfinite(d) and (best is None or d > best[0]):
                    best = (float(d), i, j)
        if best is None:
            continue
        d, i, j = best
        path = _path(pred[i], int(loc[i]), int(loc[j]))
        if not path:
            continue
        path = nodes[np.asarray(path, dtype=np.int64)]
        if coords is not None and shallow is not None:
            # a tube landing at a shallow angle on a flat cell (over a thin MSC edge) runs
            # within contact_um of it until it enters: follow it there
            head = _into_contact(graph, near_idx, run, run_of, path[::-1], coords, shallow)
            tail = _into_contact(graph, near_idx, run, run_of, path, coords, shallow)
            path = np.r_[head[::-1], path, tail].astype(np.int64)
        out.append((path, d + float(s_dist[path[0]] + s_dist[path[-1]]), False))
    if coords is None or not len(run):
        return out
    # a tube across a gap narrower than twice contact_um (segmented cells, a little larger
    # than the true ones, close it up) is contacts all the way: a contact run with no free
    # piece whose voxels lie next to two cells, straight from one to the other, is a bridge
    # (cortex follows a curved outline; a junction of two cells lies inside their masks)
    attached = np.isin(np.arange(int(run.max()) + 1), rp[:, 0] if len(rp) else [])
    rc = np.unique(np.stack([run, s_cell[near_idx]], axis=1), axis=0)
    n_cells_run = np.bincount(rc[:, 0], minlength=attached.size)
    for r in np.flatnonzero((n_cells_run >= 2) & ~attached):
        members = near_idx[run == r]
        sub = graph[members][:, members]
        # its ends: the skeleton ends of the run (and the closest voxel to each cell), the
        # pair on two different cells farthest apart
        mc = s_cell[members]
        closest = [
            np.flatnonzero(mc == c)[np.argmin(s_dist[members[mc == c]])] for c in np.unique(mc)
        ]
        tips = np.flatnonzero(np.diff(sub.tocsr().indptr) <= 1)
        loc = np.unique(np.r_[tips, closest]).astype(np.int64)
        dmat, pred = dijkstra(sub, indices=loc, return_predecessors=True)
        dd = dmat[:, loc]
        ok = np.triu(mc[loc][:, None] != mc[loc][None, :], 1) & np.isfinite(dd)
        if not ok.any():
            continue
        i, j = divmod(int(np.argmax(np.where(ok, dd, -1.0))), len(loc))
        d = float(dd[i, j])
        path = _path(pred[i], int(loc[i]), int(loc[j]))
        if len(path) < 2:
            continue
        path = members[np.asarray(path, dtype=np.int64)]
        chord = float(np.linalg.norm(coords[path[-1]] - coords[path[0]]))
        if chord < min_straight * _path_length(coords[path]):
            continue
        out.append((path, d + float(s_dist[path[0]] + s_dist[path[-1]]), True))
    return out


def _into_contact(
    graph: Any,
    near_idx: np.ndarray,
    run: np.ndarray,
    run_of: np.ndarray,
    path: np.ndarray,
    coords: np.ndarray,
    shallow: np.ndarray,
    *,
    max_um: float = 12.0,
    min_um: float = 1.5,
    back_um: float = 2.0,
    min_cos: float = 0.8,
) -> np.ndarray:
    """Skeleton nodes that continue ``path`` beyond its last node through that node's
    contact run to where the tube enters the cell (host; ``coords`` in µm): the node of
    the run farthest from the end, when the end's cell is one a tube can land on at a
    shallow angle (``shallow``: an MSC), ``min_um`` to ``max_um`` away and straight on
    (cosine >= ``min_cos`` with the path's last ``back_um``: not cortex along an outline).
    """
    from scipy.sparse.csgraph import dijkstra

    none = np.zeros(0, np.int64)
    end = int(path[-1])
    r = run_of[end]
    if r < 0 or not shallow[end]:
        return none
    members = near_idx[run == r]
    if members.size < 2:
        return none
    k = int(np.searchsorted(members, end))
    dist, pred = dijkstra(graph[members][:, members], indices=k, return_predecessors=True)
    pts = coords[path[::-1]].astype(float)
    along = np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(pts, axis=0), axis=1)])
    u = pts[0] - pts[int(min(np.searchsorted(along, back_um), len(pts) - 1))]
    v = coords[members] - pts[0]
    cos = (v @ u) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(u), 1e-12)
    ok = np.isfinite(dist) & (dist <= max_um) & (cos >= min_cos) & ~np.isin(members, path)
    if not ok.any():
        return none
    far = int(np.argmax(np.where(ok, dist, -1.0)))
    if dist[far] < min_um:
        return none  # an ordinary end: the contact gap is measured from the path's end
    nodes = _path(pred, k, far)
    return members[np.asarray(nodes[1:], dtype=np.int64)] if len(nodes) > 1 else none


def _cargo_response(
    b: Backend,
    foci_labels: Any,
    mito: Any,
    jur: Any,
    free: Any,
    cidx: tuple[Any, ...],
    sp: tuple[float, ...],
    nd: int,
    *,
    mito_tolerance_um: float,
    mito_threshold_k: float,
    mito_diameter_um: float,
    jurkat_halo_um: float,
    psf_sigma_um: tuple[float, float] | None,
) -> np.ndarray | None:
    """Per voxel ``cidx`` of the paths (host bool): cargo within tolerance; None without
    foci or mito."""
    xp = b.xp
    if foci_labels is None and mito is None:
        return None
    hit = xp.zeros(cidx[0].shape, dtype=bool)
    # box of the path voxels
    lo = [int(b.to_host(c.min())) for c in cidx]  # device->host: one value per axis
    hi = [int(b.to_host(c.max())) + 1 for c in cidx]  # device->host: one value per axis
    if foci_labels is not None:
        foci = b.asarray(foci_labels) > 0
        box = _bbox(b, foci)
        if box is not None:
            # distance to the nearest focus on the path, on the box of the foci and the path
            box = tuple(
                slice(min(s.start, a), max(s.stop, z)) for s, a, z in zip(box, lo, hi, strict=True)
            )
            ft = _feature_transform(b, ~foci[box], sp)
            at = tuple(c - s.start for c, s in zip(cidx, box, strict=True))
            d = _feature_distance(b, tuple(f[at] for f in ft), at, sp)
            hit |= d <= mito_tolerance_um
    if mito is not None:
        spots = enhance_spots(
            mito, voxel_size=sp, foci_diameter_um=mito_diameter_um, psf_sigma_um=psf_sigma_um
        )
        region = free
        if bool((jur > 0).any()):
            region = region & _far_from(b, jur > 0, jurkat_halo_um, sp)
        vals = spots[region]
        if int(vals.size) >= 16:
            med = float(b.to_host(xp.median(vals)))  # device->host: one value
            sig = robust_sigma(b, vals)
            if sig > 0:
                # largest response within the tolerance of each path voxel: the filter on
                # the path's box grown by its radius (clipped: same edge mode)
                rad = [max(int(round(mito_tolerance_um / s)), 0) for s in sp]
                box = tuple(
                    slice(max(a - r, 0), min(z + r, n))
                    for a, z, r, n in zip(lo, hi, rad, free.shape, strict=True)
                )
                local = b.ndi.maximum_filter(
                    xp.where(region[box], spots[box], -xp.inf), size=tuple(2 * r + 1 for r in rad)
                )
                at = tuple(c - s.start for c, s in zip(cidx, box, strict=True))
                hit |= local[at] > med + mito_threshold_k * sig
    return b.to_host(hit)  # device->host: one bool per skeleton voxel


# -- evaluation ---------------------------------------------------------------------------


def match_tnts(
    found: pd.DataFrame, truth: pd.DataFrame, *, tolerance_um: float = 3.0
) -> list[tuple[int, int]]:
    """Pairs (row in ``found``, row in ``truth``) whose endpoint pairs agree.

    Two TNTs match when, with their ends paired the better way round, both ends lie within
    ``tolerance_um`` of each other (3-D distance; lateral only when a ``z*_um`` is NaN).
    Pairs are taken greedily from the closest; each row is used once.

    Parameters
    ----------
    found, truth : pandas.DataFrame
        Tables with ``z0_um, y0_um, x0_um, z1_um, y1_um, x1_um``.
    tolerance_um : float, µm
        Largest endpoint distance (default 3 µm).
    """
    cols0, cols1 = ["z0_um", "y0_um", "x0_um"], ["z1_um", "y1_um", "x1_um"]
    if len(found) == 0 or len(truth) == 0:
        return []
    f0, f1 = found[cols0].to_numpy(float), found[cols1].to_numpy(float)
    t0, t1 = truth[cols0].to_numpy(float), truth[cols1].to_numpy(float)

    def dist(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        d = a[:, None, :] - c[None, :, :]
        d = np.where(np.isnan(d), 0.0, d)
        return np.sqrt((d**2).sum(-1))

    cost = np.minimum(
        np.maximum(dist(f0, t0), dist(f1, t1)), np.maximum(dist(f0, t1), dist(f1, t0))
    )
    pairs = []
    used_f, used_t = set(), set()
    for flat in np.argsort(cost, axis=None):
        i, j = divmod(int(flat), cost.shape[1])
        if cost[i, j] > tolerance_um:
            break
        if i in used_f or j in used_t:
            continue
        used_f.add(i)
        used_t.add(j)
        pairs.append((i, j))
    return pairs
