"""Jurkat (donor) cell instances from the mitochondria channel: bright round bodies above
the MSCs' own red, split at distance-transform seeds; bodies cut to a cap by the top of
the stack added; haze, giants and concentrated foci dropped; the MSC under each body."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    VoxelSize,
    background_level_noise,
    bbox,
    ellipsoid_footprint,
    fill_holes,
    gaussian,
    local_maxima,
    relabel_sequential,
    remove_small_labels,
    spacing,
    touches_border,
)
from hcsmito.stages.segmentation._common import (
    Instances,
    box,
    check_image,
    flatten_background,
    majority_label,
    watershed_2d,
)
from hcsmito.stages.threshold import AutoThreshold, ThresholdLike, as_threshold
from hcsmito.stages.threshold import threshold as global_threshold


@dataclass(frozen=True)
class JurkatInstances(Instances):
    """Jurkat instances with their position relative to the MSCs.

    Attributes
    ----------
    msc_id : (n,) int32 ndarray (host)
        The MSC under each Jurkat cell (the MSC label covering most of its footprint), 0
        when it lies on the glass or no MSC labels were given.
    msc_overlap : (n,) float32 ndarray (host)
        Fraction of the Jurkat footprint (lateral projection) lying over that MSC.
    on_msc : (n,) bool ndarray (host)
        ``msc_overlap >= overlap_min``: the Jurkat rests on an MSC rather than on glass.
    flags : tuple of str
        QC codes (:data:`hcsmito.qc.QC_FLAGS`): ``donor_covers_field`` when candidates as
        bright as donor bodies but larger than ``max_area_factor`` cells, covering at least
        5 % of the field, were rejected (e.g. the mitochondria of a whole cell in a
        single-channel field): the field's donor count cannot be trusted.
    """

    msc_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    msc_overlap: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    on_msc: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    flags: tuple[str, ...] = ()


def jurkat_threshold_image(mito: Any, *, voxel_size: VoxelSize, smooth_um: float = 1.5) -> Any:
    """The smoothed mito image (float32) that :func:`segment_jurkat` thresholds, its lateral
    background trend taken out where it spreads the background
    (:func:`hcsmito.stages.segmentation._common.flatten_background`)."""
    check_image(mito, "mito")
    b = Backend.of(mito)
    sp = spacing(voxel_size, mito.ndim)
    # a lateral background trend (vignetting) taken out where it spreads the background
    return flatten_background(b, gaussian(b, mito, [smooth_um / s for s in sp]))


def _fill_holes_lateral(b: Backend, mask: Any) -> Any:
    """Fill holes of each z plane (or of the 2-D mask).

    In 3-D on the mask's box grown by one pixel laterally: each plane is filled on its own,
    a plane's background outside the box reaches the field's edge in a straight line, and
    a piece of the box's background that touches the box's side reaches it through there:
    the same holes as over the whole field."""
    if mask.ndim == 2:
        return fill_holes(b, mask)
    st = np.zeros((3, 3, 3), bool)
    st[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    box = bbox(b, mask, margin=(0, 1, 1))
    if box is None:
        return mask.copy()
    out = mask.copy()
    out[box] = fill_holes(b, mask[box], st)
    return out


def _opening(b: Backend, mask: Any, fp: np.ndarray) -> Any:
    """``binary_opening(mask, structure=fp)`` (2-D, border 0) by two distance transforms
    when ``fp`` is a disc: every offset within its largest squared length ``D`` and none
    beyond. A pixel survives the erosion when no background pixel, the outside of the
    image included, lies within ``D`` of it (squared), and is in the opening when an eroded
    pixel lies within ``D``: the same pixels as the filter (integer squared distances,
    whose square roots order as they do), at the cost of two transforms instead of a
    filter over the disc's rim per pixel. Other footprints: the filter."""
    xp = b.xp
    if mask.ndim != 2 or fp.ndim != 2 or any(n % 2 == 0 for n in fp.shape):
        return b.ndi.binary_opening(mask, structure=fp)
    hy, hx = fp.shape[0] // 2, fp.shape[1] // 2
    dy, dx = np.ogrid[-hy : hy + 1, -hx : hx + 1]
    d2 = dy * dy + dx * dx
    top = int(d2[fp].max()) if fp.any() else -1
    fits = (hy + 1) ** 2 > top and (hx + 1) ** 2 > top  # no disc offset off the grid
    if top < 0 or not fits or not np.array_equal(fp, d2 <= top):
        return b.ndi.binary_opening(mask, structure=fp)
    limit = math.sqrt(top)
    padded = xp.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    eroded = b.ndi.distance_transform_edt(padded)[1:-1, 1:-1] > limit
    if not bool(eroded.any()):
        return eroded
    return b.ndi.distance_transform_edt(~eroded) <= limit


def _extend_labels(b: Backend, lab2d: Any, mask: Any) -> tuple[Any, Any]:
    """The 2-D labels through z within ``mask``, renumbered 1..n in order (a label with no
    voxel in the mask is dropped), int32; and their maximum projection.

    ``relabel_sequential(where(mask, lab2d, 0))`` and its ``max(axis=0)``, computed in the
    labelled columns only (every voxel of a column gets the column's label)."""
    xp = b.xp
    nz = mask.shape[0]
    flat2d = lab2d.reshape(-1)
    cols = xp.flatnonzero(flat2d)
    lab_c = flat2d[cols]
    m = mask.reshape(nz, -1)[:, cols]
    colany = m.any(axis=0)
    n = int(lab2d.max()) if lab2d.size else 0
    present = xp.zeros(n + 1, dtype=bool)
    present[lab_c[colany]] = True
    present[0] = False
    lut = xp.cumsum(present).astype(xp.int32) * present
    new_c = lut[lab_c]
    labels = xp.zeros(mask.shape, xp.int32)
    labels.reshape(nz, -1)[:, cols] = xp.where(m, new_c[None], 0)
    proj = xp.zeros(flat2d.size, xp.int32)
    proj[cols] = xp.where(colany, new_c, 0)
    return labels, proj.reshape(lab2d.shape)


def _light_at_labels(b: Backend, img: Any, lab2d: Any, sigma_px: list[float], outside: Any) -> Any:
    """``gaussian(img, sigma_px)`` (0 where ``outside`` is False), its maximum over z in
    3-D, at the pixels of ``lab2d``'s labels (0 elsewhere): what ``_drop_concentrated``
    reads.

    Computed on each label's box grown by the kernel's radius (all planes): the Gaussian
    there is the whole field's at the label's pixels. The whole field when the boxes
    would hold more pixels than it."""
    from scipy import ndimage as sp_ndi

    xp = b.xp
    lead = (slice(None),) * (img.ndim - 2)

    def light(region):
        g = gaussian(b, img[lead + region], sigma_px)
        if outside is not None:
            g = xp.where(outside[lead + region], g, 0)
        return g.max(axis=0) if img.ndim == 3 else g

    rad = [int(3.0 * float(s) + 0.5) + 1 for s in sigma_px[-2:]]
    objs = sp_ndi.find_objects(b.to_host(lab2d))  # device->host: one Y×X image
    grown = [
        None if sl is None
        else tuple(slice(max(s.start - r, 0), min(s.stop + r, n))
                   for s, r, n in zip(sl, rad, lab2d.shape, strict=True))
        for sl in objs
    ]  # fmt: skip
    if sum(int(np.prod([s.stop - s.start for s in g])) for g in grown if g) >= lab2d.size:
        return light((slice(None), slice(None)))
    out = xp.zeros(lab2d.shape, xp.float32)
    for i, (sl, g) in enumerate(zip(objs, grown, strict=True), start=1):
        if sl is None:
            continue
        inner = tuple(
            slice(s.start - gs.start, s.stop - gs.start) for s, gs in zip(sl, g, strict=True)
        )
        own = lab2d[sl] == i
        view = out[sl]
        view[own] = light(g)[inner][own]
    return out


def segment_jurkat(
    mito: Any,
    *,
    voxel_size: VoxelSize,
    msc_labels: Any = None,
    jurkat_diameter_um: float = 10.0,
    smooth_um: float = 1.5,
    threshold: ThresholdLike = "auto",
    min_diameter_fraction: float = 0.5,
    min_spread: float = 0.6,
    min_separation_um: float | None = None,
    overlap_min: float = 0.5,
    min_contrast: float = 1.0,
    max_area_factor: float = 6.0,
    seeds: Any = None,
) -> JurkatInstances:
    """Jurkat (donor) cell instances from the mitochondria channel.

    A Jurkat cell is a round body ~10 µm across packed with mitochondria: smoothing at
    ~1.5 µm fills the mitochondrial texture, a threshold relative to the bright bodies
    (above background *and* the dimmer MSC autofluorescence) gives the bodies, a lateral
    opening at a quarter of the diameter removes foci, nanotubes and debris, and touching
    bodies are split at distance-transform seeds. A large bright focus (a cluster of
    transferred mitochondria inside an MSC) can be smoothed into a body-sized blob: it is
    told apart by where its light is (``min_spread``): a body's mitochondria fill its
    footprint, a focus' light sits at one point of it.

    Parameters
    ----------
    mito : (M, N) or (P, M, N) ndarray
        Mitochondria channel of one field, NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    msc_labels : (M, N) or (P, M, N) int ndarray, optional
        MSC instances of the same field: each Jurkat gets the MSC it rests on. In 3-D the
        bodies are also sought outside the MSCs only (threshold and mask): red light inside
        an MSC (its own haze or dye, bleed-through, transferred foci) is never a body.
    jurkat_diameter_um : float, µm
        Expected diameter (default 10 µm): sets the opening (0.25 x), the minimum
        footprint diameter and the seed separation.
    smooth_um : float, µm
        Gaussian sigma before thresholding (default 1.5 µm).
    threshold : AutoThreshold, HistogramThreshold, ManualThreshold, mapping or str
        :data:`hcsmito.stages.threshold.Threshold` (a mapping or a method name is read as
        one). ``auto`` (default: ``k=5``, ``fraction=0.3``): Otsu on the *log* of the
        smoothed signal above ``background + k * noise``, which separates the bright
        bodies from dimmer stained structures (MSC autofluorescence, haze) whatever the
        brightness, kept at least ``fraction`` of the way from background to the 99.9th
        percentile. The others as in :func:`segment_msc`, in intensity units of ``mito``.
    min_diameter_fraction : float
        Instances whose footprint is smaller than a disc of this fraction of the expected
        diameter are dropped (default 0.5).
    min_spread : float
        Instances whose light is concentrated are dropped: the radius of gyration of the
        signal above the threshold (the image smoothed at ``smooth_um / 3``, projected
        over z) must be at least this fraction of the radius of gyration of the footprint
        (default 0.6). Bodies measure 0.74-0.9 on generated fields (also with half of
        their mitochondria removed: 0.62 and up), blurred single foci 0.42-0.49; the
        ratio falls as a focus gets brighter. 0 turns the test off.
    min_separation_um : float, µm, optional
        Minimum distance between two seeds (default ``0.6 * jurkat_diameter_um``).
    overlap_min : float
        Footprint fraction over an MSC above which a Jurkat is "on" that MSC (default 0.5).
    min_contrast : float
        With ``msc_labels``: a body's own red light must be at least this multiple of the
        MSCs' red (default 1; 0 turns the test off). A donor body is a cell packed with
        mitochondria; MitoTracker haze of the MSCs themselves, blurred above the cell in
        3-D or lying under nothing in a field without donors, is not, and on fields
        without Jurkat cells the threshold falls into it. In 3-D, a candidate's mean
        smoothed signal above background is compared with that of the MSC voxels in its
        own footprint columns (the cell a haze tail comes from is brighter than the tail:
        haze candidates measure ~0.5, bodies >= 1.2 even with MSC haze at 6x the
        generator's default) or, on the glass, with the median over all MSC voxels. In
        2-D, where a body's projection holds the haze of the MSC under it, that median is
        subtracted first.
    max_area_factor : float
        Candidates whose footprint exceeds this multiple of the expected body area
        (``pi (jurkat_diameter_um / 2)^2``), or a quarter of the field, are not one donor
        cell (default 6: room for cells 2.4x the expected diameter). In a single-channel
        field of one cell full of mitochondria, that cell is such a candidate.
    seeds : (M, N) int ndarray, optional
        One seed label per cell in the lateral plane (e.g. the donor cells' nuclei
        projected over z): bodies are split among these instead of at distance maxima;
        a body that no seed reaches stays one cell.

    Returns
    -------
    JurkatInstances
    """
    check_image(mito, "mito")
    b = Backend.of(mito)
    xp = b.xp
    sp = spacing(voxel_size, mito.ndim)
    lateral = sp[-2:]
    if not jurkat_diameter_um > 0:
        raise ValueError(f"jurkat_diameter_um must be > 0 µm, got {jurkat_diameter_um}")
    if msc_labels is not None and tuple(msc_labels.shape) != tuple(mito.shape):
        raise ValueError(
            f"msc_labels has shape {tuple(msc_labels.shape)}, mito {tuple(mito.shape)}: "
            "pass the MSC labels of the same field"
        )
    img = b.asarray(mito)  # each Gaussian makes its own float32 copy (the same values)
    empty = JurkatInstances(xp.zeros(img.shape, xp.int32), np.zeros(0, bool))
    if img.size == 0:
        return empty
    smooth = jurkat_threshold_image(img, voxel_size=sp, smooth_um=smooth_um)
    # 3-D with MSC labels: mito light inside an MSC is the MSC's own (haze, dye taken up,
    # bleed-through) or transferred foci, never a donor body (cells do not overlap), so
    # the threshold and the bodies are taken outside the MSCs
    outside = None
    if msc_labels is not None and img.ndim == 3:
        outside = b.asarray(msc_labels) == 0
    threshold = as_threshold(threshold)

    @functools.cache
    def level_noise() -> tuple[float, float]:  # read by the threshold and the haze test
        return background_level_noise(b, smooth)

    if isinstance(threshold, AutoThreshold):
        thr = _bright_threshold(
            b, smooth, k=threshold.k, fraction=threshold.fraction, where=outside,
            level_noise=level_noise(),
        )  # fmt: skip
    else:
        thr = threshold.of(smooth)
    mask = smooth > thr
    if outside is not None:
        mask &= outside
    mask = _fill_holes_lateral(b, mask)
    if outside is not None:
        mask &= outside
    mask2d = mask.any(axis=0) if img.ndim == 3 else mask
    # Lateral opening removes what is narrower than half a body (foci, TNTs).
    fp = ellipsoid_footprint([0.25 * jurkat_diameter_um / s for s in lateral])
    mask2d = _opening(b, mask2d, fp)
    mask2d = fill_holes(b, mask2d)
    if not bool(mask2d.any()):
        return JurkatInstances(empty.labels, empty.touches_border, thr)
    dist = b.ndi.distance_transform_edt(mask2d, sampling=lateral).astype(xp.float32)
    dist = gaussian(b, dist, [0.05 * jurkat_diameter_um / s for s in lateral])
    sep = 0.6 * jurkat_diameter_um if min_separation_um is None else min_separation_um
    r_min = 0.5 * min_diameter_fraction * jurkat_diameter_um
    if seeds is None:
        seeds = local_maxima(b, dist, threshold=0.5 * r_min, size=box(sep, lateral), mask=mask2d)
    else:
        seeds = xp.where(mask2d, b.asarray(seeds), 0).astype(xp.int32)
    lab2d = watershed_2d(b, dist, seeds, mask2d)
    lab2d = remove_small_labels(b, lab2d, math.pi * r_min**2 / float(np.prod(lateral)))
    if min_spread > 0:
        light = _light_at_labels(b, img, lab2d, [smooth_um / 3 / s for s in sp], outside)
        lab2d = _drop_concentrated(b, lab2d, light, thr, lateral, min_spread)
        del light
    if img.ndim == 3:
        labels, lab2d = _extend_labels(b, lab2d, mask)
        with_caps = _add_cut_caps(b, labels, smooth, thr, outside, lateral, jurkat_diameter_um)
        if with_caps is not labels:
            labels, lab2d = with_caps, with_caps.max(axis=0)
    else:
        labels = lab2d
    labels, lab2d, giant_px = _drop_haze_and_giants(
        b,
        labels,
        lab2d,
        smooth,
        msc_labels,
        min_contrast=min_contrast,
        level_noise=level_noise,
        max_area_px=max_area_factor
        * math.pi
        * (0.5 * jurkat_diameter_um) ** 2
        / float(np.prod(lateral)),
    )
    flags = ("donor_covers_field",) if giant_px >= _COVER_SHARE * lab2d.size else ()
    border = touches_border(b, labels)[1:]
    n = int(border.size)
    msc_id, overlap = _msc_under(b, lab2d, msc_labels, n)
    return JurkatInstances(
        labels,
        border,
        thr,
        msc_id=msc_id,
        msc_overlap=overlap,
        on_msc=overlap >= overlap_min,
        flags=flags,
    )


def _add_cut_caps(
    b: Backend,
    labels: Any,
    smooth: Any,
    thr: float,
    outside: Any,
    lateral: tuple[float, ...],
    diameter: float,
) -> Any:
    """``labels`` with the donor cells that the top of the stack cuts to a cap added.

    A stack that holds only the MSC layer cuts the cells resting on the MSCs to a thin cap
    in its top planes: too thin to survive the lateral opening and too close to the MSC
    mask to be sought outside it, but full of mitochondria that would otherwise pass for
    foci in the MSC below. Regions of the top plane as bright as a body (``smooth >
    thr``) outside the MSCs, at least 0.3 body diameters across and not already a body,
    become bodies: the voxels above the threshold outside the MSCs in their columns,
    connected to the top plane. The contrast test that follows
    (:func:`_drop_haze_and_giants`) drops MSC haze that reaches the top.
    """
    xp = b.xp
    top = smooth[-1] > thr  # the top plane first: most stacks end above every cell
    if outside is not None:
        top &= outside[-1]
    if not bool(top.any()):
        return labels
    free = smooth > thr
    if outside is not None:
        free &= outside
    top &= labels.max(axis=0) == 0
    top = b.ndi.binary_opening(
        top, structure=ellipsoid_footprint([0.15 * diameter / s for s in lateral])
    )
    caps2d, n = b.ndi.label(top)
    if n == 0:
        return labels
    caps2d = remove_small_labels(
        b, caps2d, math.pi * (0.15 * diameter) ** 2 / float(np.prod(lateral))
    )
    if not bool((caps2d > 0).any()):
        return labels
    vol = free & (caps2d > 0)[None]
    comp, n_comp = b.ndi.label(vol, structure=xp.ones((3, 3, 3), dtype=bool))
    at_top = xp.zeros(n_comp + 1, dtype=bool)
    at_top[comp[-1]] = True
    at_top[0] = False
    cap = at_top[comp]
    first = int(labels.max()) if labels.size else 0
    caps = relabel_sequential(b, xp.where(cap, caps2d[None], 0).astype(xp.int32))
    return xp.where(caps > 0, caps + first, labels).astype(xp.int32)


#: Share of the field's footprint that candidates bright as donor bodies but larger than
#: ``max_area_factor`` cells must cover for the field to be flagged ``donor_covers_field``.
_COVER_SHARE = 0.05
#: Largest share of the field's footprint that one donor body may cover.
_FIELD_SHARE = 0.25


def _drop_haze_and_giants(
    b: Backend,
    labels: Any,
    lab2d: Any,
    smooth: Any,
    msc_labels: Any,
    *,
    min_contrast: float,
    max_area_px: float,
    level_noise: Any = None,
) -> tuple[Any, Any, int]:
    """Body candidates that are brighter than the MSCs' own red and not larger than a few
    cells, renumbered; and the footprint pixels of the candidates rejected for their size
    alone (see :func:`segment_jurkat`, ``min_contrast`` and ``max_area_factor``)."""
    xp = b.xp
    n = int(lab2d.max()) if lab2d.size else 0
    if n == 0:
        return labels, lab2d, 0
    area = xp.bincount(lab2d.reshape(-1), minlength=n + 1)[1:].astype(xp.float64)
    # one cell filling a quarter of the field is no donor cell in a co-culture field
    small = area <= min(max_area_px, _FIELD_SHARE * lab2d.size)
    bright = xp.ones(n, dtype=bool)
    msc = None if msc_labels is None else b.asarray(msc_labels) > 0
    if min_contrast > 0 and msc is not None and bool(msc.any()):
        level = xp.float32((level_noise or (lambda: background_level_noise(b, smooth)))()[0])
        haze = float(b.to_host(xp.median(smooth[msc] - level)))  # device->host: one value
        # sums over each candidate's own voxels only, in the labelled columns (every voxel
        # of a candidate lies in its footprint's columns; the same voxels in the same order,
        # so the same sums), without a float64 copy of the whole signal
        cols = xp.flatnonzero(lab2d.reshape(-1))
        nz = labels.size // lab2d.size
        lab = labels.reshape(nz, -1)[:, cols].reshape(-1)
        sig = (smooth.reshape(nz, -1)[:, cols] - level).reshape(-1)
        at = xp.flatnonzero(lab)
        own = xp.bincount(lab[at], weights=sig[at], minlength=n + 1)[1:]
        own = own / xp.maximum(xp.bincount(lab[at], minlength=n + 1)[1:], 1)
        if labels.ndim == 3:
            # the MSC voxels in each candidate's footprint columns
            under = xp.where(
                msc.reshape(nz, -1)[:, cols], lab2d.reshape(-1)[cols][None], 0
            ).reshape(-1)
            at = xp.flatnonzero(under)
            w = xp.bincount(under[at], weights=sig[at], minlength=n + 1)[1:]
            cnt = xp.bincount(under[at], minlength=n + 1)[1:]
            ref = xp.where(cnt > 0, w / xp.maximum(cnt, 1), haze)
        else:
            own = own - haze  # the projection holds the haze of the MSC under the body
            ref = xp.full(n, haze)
        bright = own >= min_contrast * xp.maximum(ref, 0)
    keep = b.to_host(small & bright)  # device->host: n flags
    if keep.all():
        return labels, lab2d, 0
    # bright as bodies but larger than a few cells: what the field cannot be trusted on
    giant = int(b.to_host(area[bright & ~small].sum()))  # device->host: one value
    lut = np.zeros(n + 1, np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    lut_d = b.asarray(lut)
    return lut_d[labels], lut_d[lab2d], giant


def _drop_concentrated(
    b: Backend, lab2d: Any, light: Any, thr: float, lateral: tuple[float, ...], min_spread: float
) -> Any:
    """Labels of ``lab2d`` whose light spreads over their footprint, renumbered.

    Per label, from sums over its pixels (bincount: no per-label loop): the footprint's
    radius of gyration and that of the weights ``max(light - thr, 0)``; a label is kept
    when their ratio is at least ``min_spread``.
    """
    xp = b.xp
    n = int(lab2d.max()) if lab2d.size else 0
    if n == 0:
        return lab2d
    flat = lab2d.reshape(-1)
    sel = xp.nonzero(flat)[0]
    lab = flat[sel]
    y, x = (
        c.astype(xp.float64) * s
        for c, s in zip(xp.unravel_index(sel, lab2d.shape), lateral, strict=True)
    )
    w = xp.maximum(light.reshape(-1)[sel].astype(xp.float64) - thr, 0)

    def rg(weights):
        def total(v):
            return xp.bincount(lab, weights=v, minlength=n + 1)[1:]

        m = total(weights)
        safe = xp.maximum(m, 1e-300)
        cy, cx = total(weights * y) / safe, total(weights * x) / safe
        second = total(weights * (y * y + x * x)) / safe - cy * cy - cx * cx
        return xp.sqrt(xp.maximum(second, 0)), m

    r_foot, _ = rg(xp.ones_like(y))
    r_light, mass = rg(w)
    keep = (mass > 0) & (r_light >= min_spread * r_foot)
    keep = b.to_host(keep)  # device->host: n flags
    if keep.all():
        return lab2d
    lut = np.zeros(n + 1, np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return b.asarray(lut)[lab2d]


def _bright_threshold(
    b: Backend,
    smooth: Any,
    *,
    k: float,
    fraction: float,
    where: Any = None,
    level_noise: tuple[float, float] | None = None,
) -> float:
    """Threshold separating bright bodies from background *and* dim stained structures.

    The signal (voxels above ``level + k sigma``, within ``where`` if given) holds the
    dim MSC autofluorescence and the bright Jurkat bodies; Otsu on the log of the signal
    separates the two populations (their ratio, not their difference, is what stays
    constant across brightness). The result is kept above ``level + fraction * (p99.9 -
    level)``.
    """
    xp = b.xp
    level, sigma = background_level_noise(b, smooth) if level_noise is None else level_noise
    floor = level + k * sigma
    keep = smooth > floor
    if where is not None:
        keep &= where
    above = smooth[keep]
    if int(above.size) < 16:
        return floor
    logs = xp.log(above - level)
    t_log = global_threshold(logs, method="otsu")
    top = float(b.to_host(xp.percentile(above, 99.9)))  # device->host: one value
    return max(floor, level + math.exp(t_log), level + fraction * (top - level))


def _msc_under(b: Backend, jurkat2d: Any, msc_labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per Jurkat: the MSC label covering most of its footprint and that fraction."""
    if n == 0 or msc_labels is None:
        return np.zeros(n, np.int32), np.zeros(n, np.float32)
    msc = b.asarray(msc_labels)
    ids, frac = majority_label(b, jurkat2d, msc.max(axis=0) if msc.ndim == 3 else msc, n)
    return ids, frac.astype(np.float32)
