"""Detection of red foci (transferred mitochondria) inside MSCs.

1. **Search region.** Inside the MSC labels (or the whole field when there are none),
   at least ``edge_margin_um`` inside their outline, minus the columns of the Jurkat
   bodies dilated laterally by an optical halo in µm (their blurred light would
   otherwise be read as foci, and what lies under a Jurkat cannot be told from it).
2. **Spot enhancement.** A difference of Gaussians tuned to the expected focus size: the
   inner sigma matches a blurred focus (``sqrt(r² / ndim + psf²)`` per axis, so it is
   anisotropic through the voxel size and the PSF), the outer one is ``dog_ratio`` times
   larger and removes the local background (cytoplasm autofluorescence, haze).
3. **Threshold** at ``k`` robust noise sigmas of the enhanced image (median + k · MAD),
   computed in the search region: the same ``k`` holds across brightness and noise.
4. **Instances.** Local maxima of the enhanced image at least ``min_separation_um``
   apart seed the foci; each thresholded voxel goes to its nearest seed within its
   connected component (a watershed that runs the same way on both backends).
   Foci smaller than ``min_volume_um3`` or whose peak lies outside the search region are
   dropped: a focus whose brightest voxel in the region has a brighter neighbour outside
   it (the enhanced image, the region aside) is the blurred edge of an object outside,
   such as a mitochondrion in a nanotube just over the cell's top; each is assigned the
   MSC label under its peak (0 = none).
4b. **Lone voxels** (``min_volume_um3`` None, the default). A focus of two voxels or more
   over the threshold is kept; one of a single voxel only when (i) it is the maximum of
   its 3 x 3 [x 3] box (else it is the shoulder of a brighter neighbour's focus that the
   watershed split off: the seeds' footprint spans no plane at 0.6 µm steps), (ii) its
   peak reaches ``k1`` noise sigmas, and (iii) stays under ``k / rho``.

   The enhanced noise is correlated: the enhancement is a filter matched to a focus, so a
   noise peak has the shape of a focus, and the lag-one correlation ``rho`` of the
   enhanced noise along each axis (from the enhancement's own kernel at this sampling) is
   also how far a focus centred on a voxel falls at its neighbour. The old fixed minimum
   of 2 voxels therefore asked a focus to reach ``k / rho`` of the best-sampled axis before
   a neighbour joined it: 8.7 sigmas at 0.6 x 0.3 x 0.3 µm (rho 0.69 in z), but 16 at
   0.9 x 0.45 x 0.45 µm (rho 0.37), where a dim focus at 8-9 sigmas stayed one voxel and
   was dropped: the detection limit moved with the voxel size. A lone voxel is a weaker
   detection than a pair; (ii) asks it to be as unlikely under Gaussian noise as two
   neighbouring voxels over ``k``: ``P(Z > k1) = sum over the 2·ndim face neighbours of
   P(Z1 > k, Z2 > k; rho)``, which gives ``k1`` = 6.6 sigmas at 0.6 x 0.3 x 0.3 µm, 6.7
   at 1 x 0.3 x 0.3 µm, 7.4 at 0.9 x 0.45 x 0.45 µm for ``k`` = 6 (never under ``k``:
   at fine sampling a pair is nearly as likely as one voxel). (iii) A voxel brighter than
   ``k / rho`` standing alone is narrower than the optics make a focus (a focus that
   bright raises a neighbour over ``k``): a hot pixel, whose enhanced image is the bare
   kernel; at fine sampling the window (ii)-(iii) is narrow (6.6-8.7 sigmas at
   0.6 x 0.3 x 0.3 µm) and closes as the sampling gets finer. Limits: height is all that
   tells a dim lone focus from noise (the same shape), so lone foci between ``k`` and
   ``k1`` are still lost; Gaussian tails are optimistic where the noise is Poisson on a
   bright structure (``k`` itself carries that margin).
5. **Extent.** Each focus keeps the voxels of its region where the enhanced image is at
   least ``extent_fraction`` (default one half) of its own peak: a half-maximum outline,
   which does not grow with the focus' brightness the way a noise-based threshold does
   (on the generator, the median projected area of a focus is 1.4x its true area at
   ×0.5, ×1 and ×2 brightness; the threshold region alone gave 3.7x, 4.2x and 4.5x).
   Which foci are found does not depend on it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    SpotResponse,
    VoxelSize,
    background_level_noise,
    bbox,
    ellipsoid_footprint,
    enhance_spots,
    gaussian,
    label_sizes,
    local_maxima,
    relabel_sequential,
    remove_small_labels,
    robust_sigma,
    spacing,
    voronoi_labels,
)

__all__ = ["Foci", "detect_foci", "enhance_spots"]


@dataclass(frozen=True)
class Foci:
    """Foci of one field.

    Attributes
    ----------
    labels : (M, N[, P]) int32 ndarray
        0 = background, foci numbered 1..n; same backend as the input.
    parent : (n,) int32 ndarray (host)
        MSC label under each focus' peak; 0 outside MSCs or without MSC labels.
    peak : (n, ndim) int64 ndarray (host)
        Index of each focus' brightest voxel in the enhanced image.
    threshold : float
        Threshold applied to the enhanced image.
    noise : float
        Robust noise sigma of the enhanced image in the search region.
    spots : SpotResponse or None
        The enhanced image with its source and options, for a later stage that reads the
        same response (``enhance_spots(..., reuse=spots)``); None when it was not computed.
    """

    labels: Any
    parent: np.ndarray
    peak: np.ndarray
    threshold: float = float("nan")
    noise: float = float("nan")
    spots: SpotResponse | None = None

    @property
    def n(self) -> int:
        """Number of foci."""
        return int(self.parent.size)


def detect_foci(
    mito: Any,
    *,
    voxel_size: VoxelSize,
    msc_labels: Any = None,
    jurkat_labels: Any = None,
    foci_diameter_um: float = 0.6,
    psf_sigma_um: tuple[float, float] | None = None,
    dog_ratio: float = 3.0,
    threshold_k: float = 6.0,
    halo_um: float = 2.0,
    edge_margin_um: float = 1.0,
    min_separation_um: float = 1.0,
    min_volume_um3: float | None = None,
    require_parent: bool = True,
    extent_fraction: float = 0.5,
    msc_signal: Any = None,
    msc_top_fraction: float = 0.5,
) -> Foci:
    """Foci of the mitochondria channel, each with its parent MSC.

    Parameters
    ----------
    mito : (M, N) or (P, M, N) ndarray
        Mitochondria channel of one field (any numeric dtype), NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    msc_labels : int ndarray of ``mito``'s shape, optional
        MSC instances; the search is restricted to them (``require_parent``) and each
        focus gets the label under its peak. None: the whole field, parents 0 (plates
        without an MSC channel: plain mitochondria morphometry).
    jurkat_labels : int ndarray of ``mito``'s shape, optional
        Jurkat bodies, excluded together with a halo of ``halo_um``.
    foci_diameter_um : float, µm
        Typical focus diameter (default 0.6 µm): sets the enhancement scale.
    psf_sigma_um : (sigma_z, sigma_xy), µm, optional
        Gaussian PSF widths of the channel (default (0.5, 0.15)).
    dog_ratio : float
        Outer / inner sigma of the difference of Gaussians (default 3).
    threshold_k : float
        Threshold in robust noise sigmas of the enhanced image (default 6).
    halo_um : float, µm
        Lateral margin around the Jurkat bodies' footprint that is excluded, over the
        whole column (default 2 µm: the blurred light of a body and the roots of its
        nanotubes).
    edge_margin_um : float, µm
        With ``msc_labels``: foci whose peak is closer than this to the outline of the
        MSCs' footprint are not counted (default 1 µm): the mask edge is blurred by the
        optics and a mitochondrion in a nanotube at the cell's entrance is not inside yet.
    min_separation_um : float, µm
        Minimum distance between two foci peaks (default 1 µm).
    min_volume_um3 : float, µm³ (µm² in 2-D), optional
        Smaller foci are dropped. Default: foci of 2 voxels or more are kept, and foci of
        a single voxel that pass the lone-voxel rule (module docstring, 4b).
    require_parent : bool
        With ``msc_labels``, drop foci whose peak is outside every MSC (default True).
    extent_fraction : float
        A focus is the part of its thresholded region where the enhanced image reaches
        this fraction of the focus' peak (default 0.5: the half-maximum outline, the same
        for dim and bright foci); 0 keeps the whole thresholded region.
    msc_signal : ndarray of ``mito``'s shape, optional
        3-D, with ``msc_labels``: the GFP image the MSCs were segmented from. The search
        region keeps, in each (y, x) column, the planes from the lowest to the highest
        where the GFP (smoothed 1 µm in the plane) reaches ``msc_top_fraction`` of the
        column's own peak above background: a blurred surface lies at the half maximum
        whatever the brightness, while the MSC mask, cut at one field-wide level, reaches
        a plane or more into the axial blur above bright columns, where a mitochondrion in
        a nanotube passing over the cell was counted as a focus inside it.
    msc_top_fraction : float
        See ``msc_signal`` (default 0.5; 0: the MSC mask as it is).

    Returns
    -------
    Foci
    """
    if mito.ndim not in (2, 3):
        raise ValueError(
            f"mito must be one channel, 2-D (Y, X) or 3-D (Z, Y, X); got shape {mito.shape}: "
            "select the channel first (e.g. image[c])"
        )
    for name, lab in (("msc_labels", msc_labels), ("jurkat_labels", jurkat_labels)):
        if lab is not None and tuple(lab.shape) != tuple(mito.shape):
            raise ValueError(
                f"{name} has shape {tuple(lab.shape)}, mito {tuple(mito.shape)}: "
                "pass the labels of the same field"
            )
    if not 0.0 <= msc_top_fraction < 1.0:
        raise ValueError(
            f"msc_top_fraction={msc_top_fraction} must be in [0, 1): 0.5 is each column's "
            "half maximum, 0 the MSC mask as it is"
        )
    if msc_signal is not None and tuple(msc_signal.shape) != tuple(mito.shape):
        raise ValueError(
            f"msc_signal has shape {tuple(msc_signal.shape)}, mito {tuple(mito.shape)}: "
            "pass the GFP channel of the same field"
        )
    if not 0.0 <= extent_fraction < 1.0:
        raise ValueError(
            f"extent_fraction={extent_fraction} must be in [0, 1): 0.5 is the half-maximum "
            "outline, 0 the whole thresholded region"
        )
    b = Backend.of(mito)
    xp = b.xp
    sp = spacing(voxel_size, mito.ndim)
    empty = Foci(
        xp.zeros(mito.shape, xp.int32), np.zeros(0, np.int32), np.zeros((0, mito.ndim), np.int64)
    )
    if mito.size == 0:
        return empty

    region = xp.ones(mito.shape, dtype=bool)
    msc = None
    if msc_labels is not None:
        msc = b.asarray(msc_labels)
        if require_parent:
            region = msc > 0
            if edge_margin_um > 0:
                # lateral margin inside the cells' outline (projection): what lies at the
                # very edge is as likely in a nanotube or the blur of the mask
                foot = region.any(axis=0) if region.ndim == 3 else region
                inner = b.ndi.distance_transform_edt(foot, sampling=sp[-2:]) > edge_margin_um
                region &= inner[None] if region.ndim == 3 else inner
            if msc_signal is not None and region.ndim == 3 and msc_top_fraction > 0:
                _within_cell_height(b, msc_signal, region, sp, msc_top_fraction)
    if jurkat_labels is not None:
        # Jurkat columns and a lateral halo: light of a body blurs up and down as well,
        # so the whole column around a Jurkat is excluded (2-D distance: cheap).
        jur = b.asarray(jurkat_labels) > 0
        jur2d = jur.any(axis=0) if jur.ndim == 3 else jur
        if bool(jur2d.any()):
            far = b.ndi.distance_transform_edt(~jur2d, sampling=sp[-2:]) > halo_um
            region &= far[None] if region.ndim == 3 else far
    if not bool(region.any()):
        return empty

    spots = enhance_spots(
        mito,
        voxel_size=sp,
        foci_diameter_um=foci_diameter_um,
        psf_sigma_um=psf_sigma_um,
        dog_ratio=dog_ratio,
        keep=True,
    )
    resp = spots.response
    vals = resp[region]
    med = float(b.to_host(xp.median(vals)))  # device->host: one value
    noise = robust_sigma(b, vals)
    if not noise > 0:
        return Foci(empty.labels, empty.parent, empty.peak, float("nan"), noise, spots)
    thr = med + threshold_k * noise
    fg = (resp > thr) & region
    if not bool(fg.any()):
        return Foci(empty.labels, empty.parent, empty.peak, thr, noise, spots)
    fp = ellipsoid_footprint([0.5 * min_separation_um / s for s in sp])
    if min_volume_um3 is None:
        k1, k_hi = lone_voxel_bars(
            sp, threshold_k, foci_diameter_um,
            None if psf_sigma_um is None else tuple(psf_sigma_um), dog_ratio,
        )  # fmt: skip
        min_voxels, lone = 1.0, (med + k1 * noise, med + k_hi * noise)
    else:
        min_voxels, lone = min_volume_um3 / float(np.prod(sp)), None
    labels, parent, peak = _instances(
        b, resp, fg, region, msc, thr, fp, sp,
        min_voxels=min_voxels, lone=lone, require_parent=require_parent,
        extent_fraction=extent_fraction,
    )  # fmt: skip
    return Foci(labels, parent, peak, thr, noise, spots)


def _instances(
    b: Backend,
    resp: Any,
    fg: Any,
    region: Any,
    msc: Any,
    thr: float,
    fp: np.ndarray,
    sp: tuple[float, ...],
    *,
    min_voxels: float,
    lone: tuple[float, float] | None,
    require_parent: bool,
    extent_fraction: float,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The foci of the thresholded voxels ``fg`` (non-empty): labels (int32, the field's
    shape), parent MSC and peak index of each. Foci under ``min_voxels`` are dropped; with
    ``lone`` = (low, high) bars of the enhanced image, a focus of one voxel is kept only
    when its peak is in [low, high) and the maximum of its 3 x 3 [x 3] box.

    Everything after the threshold runs on the box of ``fg`` (the maxima filter on it grown
    by the footprint's half-width): every focus lies in it, a maximum filter of the grown
    box is the whole field's at the box's voxels (mode ``nearest`` only acts at the field's
    own edges, where the box is clipped too), connected components and their numbering
    (raster order) are the same on a box, and the nearest-seed transform runs on the box
    of the mask in both. On a 3 x 40 x 1024² field the foci lie in 11 of the 40 planes.
    """
    xp = b.xp
    nd = fg.ndim
    box = bbox(b, fg)
    half = [s // 2 for s in fp.shape]
    grown = tuple(
        slice(max(s.start - h, 0), min(s.stop + h, n))
        for s, h, n in zip(box, half, fg.shape, strict=True)
    )
    inner = tuple(
        slice(s.start - g.start, s.stop - g.start) for s, g in zip(box, grown, strict=True)
    )
    fg_g = xp.zeros(tuple(g.stop - g.start for g in grown), dtype=bool)
    fg_g[inner] = fg[box]
    seeds = local_maxima(b, resp[grown], threshold=thr, footprint=fp, mask=fg_g)[inner]
    del fg_g
    resp_b = resp[box]
    labels = voronoi_labels(b, seeds, fg[box], sp)
    del seeds
    labels = remove_small_labels(b, labels, min_voxels)
    n = int(labels.max()) if labels.size else 0
    full = xp.zeros(fg.shape, xp.int32)
    if n == 0:
        return full, np.zeros(0, np.int32), np.zeros((0, nd), np.int64)

    peak_b = _label_argmax(b, labels, resp_b, n)
    peak = peak_b + np.array([s.start for s in box], np.int64)
    idx = tuple(b.asarray(peak[:, i]) for i in range(nd))
    parent = (
        b.to_host(msc[idx]).astype(np.int32) if msc is not None else np.zeros(n, np.int32)
    )  # device->host: n values
    inside = b.to_host(region[idx])  # device->host: n values
    # a focus' peak in the region is the light of an object outside it when a voxel next
    # to it, out of the region, is brighter: the blurred tail of a mitochondrion in a
    # nanotube passing just over a cell, or at its entrance, not a focus inside it
    inside &= _is_peak(b, resp, peak, region)
    keep = inside & ((parent > 0) | (msc is None) | (not require_parent))
    if lone is not None:
        single = b.to_host(label_sizes(b, labels)[1:] == 1)  # device->host: n flags
        if single.any():
            height = b.to_host(resp[idx])[single]  # device->host: n values
            keep[single] &= (height >= lone[0]) & (height < lone[1])
            keep[single] &= _is_peak(b, resp, peak[single])
    if extent_fraction > 0:
        # half-maximum (by default) outline of each focus: its peak voxel always stays
        cut = xp.zeros(n + 1, dtype=xp.float32)
        cut[1:] = resp[idx] * np.float32(extent_fraction)
        labels = xp.where(resp_b >= cut[labels], labels, 0).astype(xp.int32)
    if not keep.all():
        lut = np.zeros(n + 1, np.int32)
        lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = b.asarray(lut)[labels]
        parent, peak = parent[keep], peak[keep]
    full[box] = relabel_sequential(b, labels)
    return full, parent, peak


def _within_cell_height(
    b: Backend, signal: Any, region: Any, sp: tuple[float, ...], fraction: float
) -> None:
    """Keep in ``region`` (3-D, in place) the planes of each column from the lowest to the
    highest where ``signal`` smoothed 1 µm in the plane, less its background level,
    reaches ``fraction`` of the column's peak: one interval per column (a dimmer layer in
    a cell leaves no hole). Plane by plane: 2-D temporaries only."""
    xp = b.xp
    sm = gaussian(b, b.asarray(signal), [0.0, 1.0 / sp[1], 1.0 / sp[2]])
    level = float(background_level_noise(b, sm)[0])
    nz = sm.shape[0]
    cut = sm.max(axis=0)
    cut -= level
    cut *= fraction
    cut += level
    first = xp.full(cut.shape, nz, xp.int32)
    last = xp.full(cut.shape, -1, xp.int32)
    for z in range(nz):
        reach = sm[z] >= cut
        first = xp.where(reach & (first == nz), xp.int32(z), first)
        last = xp.where(reach, xp.int32(z), last)
    del sm
    for z in range(nz):
        region[z] &= (first <= z) & (z <= last)


def _is_peak(b: Backend, resp: Any, peak: np.ndarray, region: Any = None) -> np.ndarray:
    """Whether each ``peak`` voxel is at least as bright as each of its neighbours (the
    3 x 3 [x 3] box, the field's edge excluded) in the enhanced image (host bool, one per
    peak). With ``region``, only the neighbours out of it count: those in the search
    region are another focus' voxels or below the threshold."""
    xp = b.xp
    n, nd = peak.shape
    ok = np.ones(n, bool)
    if n == 0:
        return ok
    shape = np.asarray(resp.shape)
    at = b.asarray(peak)
    here = resp[tuple(at[:, i] for i in range(nd))]
    ok_d = xp.ones(n, bool)
    for off in np.ndindex(*(3,) * nd):
        d = np.asarray(off) - 1
        if not d.any():
            continue
        nb = np.clip(peak + d, 0, shape - 1)
        nb_d = b.asarray(nb)
        at_nb = tuple(nb_d[:, i] for i in range(nd))
        brighter_ok = here >= resp[at_nb]
        ok_d &= brighter_ok if region is None else region[at_nb] | brighter_ok
    return b.to_host(ok_d).astype(bool)  # device->host: n values


def _label_argmax(b: Backend, labels: Any, values: Any, n: int) -> np.ndarray:
    """Index (n, ndim) of each label's largest value, without a per-label loop."""
    xp = b.xp
    flat_lab = labels.reshape(-1)
    sel = xp.nonzero(flat_lab)[0]
    lab = flat_lab[sel].astype(xp.int64)
    val = values.reshape(-1)[sel]
    # one sort key per voxel: the label plus its value scaled into [0, 0.5) (float64 keeps
    # ~1e-10 resolution for a million labels); the last entry of each label run in key
    # order is the label's maximum
    val = val.astype(xp.float64)
    lo, hi = val.min(), val.max()
    key = lab + 0.5 * (val - lo) / xp.maximum(hi - lo, 1e-30)
    order = xp.argsort(key)
    lab_sorted = lab[order]
    last = xp.nonzero(xp.diff(lab_sorted, append=n + 1))[0]
    best = sel[order[last]]
    coords = xp.stack(xp.unravel_index(best, labels.shape), axis=1)
    return b.to_host(coords).astype(np.int64)  # device->host: n × ndim indices


@functools.lru_cache(maxsize=32)
def lone_voxel_bars(
    voxel_size: tuple[float, ...],
    threshold_k: float,
    foci_diameter_um: float = 0.6,
    psf_sigma_um: tuple[float, float] | None = None,
    dog_ratio: float = 3.0,
) -> tuple[float, float]:
    """The bars (k1, k / rho) in noise sigmas between which a focus of a single voxel over
    ``threshold_k`` is kept (module docstring, 4b), for the enhancement with these options.

    ``rho`` is the lag-one correlation of white noise through the enhancement along each
    axis, from its impulse response (computed once per sampling, on the host: a small box,
    no image data); ``k1`` solves ``P(Z > k1) = sum over axes of 2 P(Z1 > k, Z2 > k; rho)``
    for Gaussian noise, never under ``k``; ``k / rho`` of the best-correlated axis is inf
    where no axis is positively correlated.
    """
    rho = _noise_correlation(voxel_size, foci_diameter_um, psf_sigma_um, dog_ratio)
    k = float(threshold_k)
    pair = sum(2.0 * _pair_tail(k, r) for r in rho)
    k1 = max(k, float(-special.ndtri(pair))) if pair > 0 else math.inf
    best = max(rho)
    return k1, (k / best if best > 0 else math.inf)


def _noise_correlation(
    sp: tuple[float, ...],
    foci_diameter_um: float,
    psf_sigma_um: tuple[float, float] | None,
    dog_ratio: float,
) -> tuple[float, ...]:
    """Lag-one correlation per axis (>= 0) of white noise after :func:`enhance_spots`: the
    autocorrelation of its impulse response. The box holds the outer Gaussian (3 sigmas)
    for PSF sigmas up to 1 µm when none is given."""
    reach = 0.5 * foci_diameter_um + (1.0 if psf_sigma_um is None else max(psf_sigma_um))
    half = [int(3.0 * dog_ratio * (reach + 0.5 * s) / s) + 1 for s in sp]
    impulse = np.zeros([2 * h + 1 for h in half], np.float32)
    impulse[tuple(half)] = 1.0
    ker = enhance_spots(
        impulse, voxel_size=sp, foci_diameter_um=foci_diameter_um,
        psf_sigma_um=psf_sigma_um, dog_ratio=dog_ratio,
    ).astype(np.float64)  # fmt: skip
    power = float((ker * ker).sum())
    rho = []
    for axis in range(ker.ndim):
        lo = [slice(None)] * ker.ndim
        hi = [slice(None)] * ker.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        rho.append(max(0.0, float((ker[tuple(lo)] * ker[tuple(hi)]).sum()) / power))
    return tuple(rho)


def _pair_tail(k: float, rho: float) -> float:
    """P(Z1 > k, Z2 > k) for standard normals of correlation ``rho`` (in [0, 1)):
    the integral over x > k of phi(x) P(Z2 > k | Z1 = x), on a fine grid."""
    rho = min(rho, 0.999)
    x = k + np.linspace(0.0, 12.0, 4801)
    f = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    f *= special.ndtr((rho * x - k) / math.sqrt(1.0 - rho * rho))
    return float(0.5 * (f[:-1] + f[1:]).sum() * (x[1] - x[0]))
