"""MSC instances from the GFP channel: an adaptive threshold, then touching cells split in
the lateral projection (by the cell height map, the distance to the outline, or the
intensity) and the 2-D instances extended through z."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    VoxelSize,
    background_level_noise,
    bbox,
    ellipsoid_footprint,
    gaussian,
    local_maxima,
    remove_small_labels,
    spacing,
    touches_border,
)
from hcsmito.stages.segmentation._common import (
    Instances,
    box,
    check_image,
    extend_through_z,
    fg_threshold,
    flatten_background,
    watershed_2d,
)
from hcsmito.stages.threshold import ThresholdLike, as_threshold


def msc_threshold_image(
    gfp: Any, *, voxel_size: VoxelSize, smooth_um: float = 1.0, smooth_z_um: float | None = 0.0
) -> Any:
    """The smoothed GFP image (float32) that :func:`segment_msc` thresholds, with its
    options of the same names: what a plate-level threshold is computed on. Its lateral
    background trend is taken out where it spreads the background
    (:func:`hcsmito.stages.segmentation._common.flatten_background`)."""
    check_image(gfp, "gfp")
    b = Backend.of(gfp)
    sp = spacing(voxel_size, gfp.ndim)
    sz = smooth_um if smooth_z_um is None else smooth_z_um
    sigmas = [
        s_um / s for s_um, s in zip((sz, smooth_um, smooth_um)[3 - gfp.ndim :], sp, strict=True)
    ]
    # a lateral background trend (vignetting) taken out where it spreads the background
    return flatten_background(b, gaussian(b, gfp, sigmas))  # gaussian makes the float32 copy


def segment_msc(
    gfp: Any,
    *,
    voxel_size: VoxelSize,
    msc_diameter_um: float = 50.0,
    smooth_um: float = 1.0,
    smooth_z_um: float | None = 0.0,
    threshold: ThresholdLike = "auto",
    split: Literal["auto", "height", "shape", "intensity"] = "auto",
    seed_dynamics: float = 0.3,
    seed_smooth_um: float | None = None,
    min_separation_um: float | None = None,
    min_area_um2: float | None = None,
    seeds: Any = None,
) -> Instances:
    """MSC instances from the GFP channel.

    Parameters
    ----------
    gfp : (M, N) or (P, M, N) ndarray
        GFP channel of one field (any numeric dtype), NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
        Voxel size of ``gfp``.
    msc_diameter_um : float, µm
        Expected diameter of a spread MSC (default 50 µm). Sets the seed smoothing
        (0.1 x), the minimum seed separation (0.4 x) and the minimum size.
    smooth_um : float, µm
        Gaussian sigma before thresholding (default 1 µm).
    smooth_z_um : float, µm, optional
        Sigma along z (default 0: the mask is as tight in z as the optics allow, so a
        mitochondrion in a nanotube passing over a cell is not inside it; None: as
        ``smooth_um``).
    threshold : AutoThreshold, HistogramThreshold, ManualThreshold, mapping or str
        :data:`hcsmito.stages.threshold.Threshold` (a mapping or a method name is read as
        one). ``auto`` (default: ``k=5``, ``fraction=0.3``) adapts to the field:
        ``background + max(k * noise, fraction * (foreground - background))``; ``otsu``,
        ``li``, ``triangle``, ``yen`` are global histogram methods on the smoothed image;
        ``manual`` cuts at ``value``, in intensity units of ``gfp``.
    split : {"auto", "height", "shape", "intensity"}
        How touching cells are told apart. ``height`` (3-D): from the cell height map,
        the thickness of each (y, x) column ``sum_z(signal) / max_z(signal) * dz``,
        which does not depend on brightness or GFP texture: a spread MSC is thickest over
        its nucleus and thin at its edges, so touching cells meet in a valley; each
        thickness maximum that rises at least ``seed_dynamics`` × the typical plateau
        height above the saddle to any higher one (an h-maximum) seeds a watershed of the
        height map. ``shape``: maxima of the distance to the mask outline at least
        ``min_separation_um`` apart (necks between round bodies). ``intensity``: maxima
        of the smoothed intensity at least ``min_separation_um`` apart. ``auto``: height
        for 3-D images, shape for 2-D.
    seed_dynamics : float
        ``height``: the depth of valley, as a fraction of the 75th percentile of the
        heights in the mask, that separates two cells (default 0.3). Axial blur raises
        the thin contact zones and the plateau alike but leaves the nucleus standing out:
        on generated fields cells are counted exactly with axial PSFs up to 2.5x the
        default width (a threshold at 0.8 x the plateau, used before, merged them from
        2x on); 0.2 splits some cells 1.5x the default size in two, 0.1 more.
    seed_smooth_um : float, µm, optional
        ``intensity``: Gaussian sigma of the projection whose maxima seed the cells
        (default ``0.06 * msc_diameter_um``).
    min_separation_um : float, µm, optional
        ``shape`` and ``intensity``: minimum distance between two seeds (default
        ``0.3 * msc_diameter_um``).
    min_area_um2 : float, µm², optional
        Instances whose footprint (lateral projection) is smaller are dropped (default:
        a disc of ``0.15 * msc_diameter_um`` diameter, 44 µm² at 50 µm).
    seeds : (M, N) int ndarray, optional
        One seed label per cell in the lateral plane (e.g. the MSC nuclei projected over
        z): the watershed of the ``split`` relief starts from these instead of the
        relief's own maxima, so that each seed is one cell; parts of the mask that no
        seed reaches remain cells of their own, as without seeds.

    Returns
    -------
    Instances
        ``labels`` (same shape and backend as ``gfp``), ``touches_border`` per label.
    """
    check_image(gfp, "gfp")
    b = Backend.of(gfp)
    xp = b.xp
    sp = spacing(voxel_size, gfp.ndim)
    if not msc_diameter_um > 0:
        raise ValueError(f"msc_diameter_um must be > 0 µm, got {msc_diameter_um}")
    img = b.asarray(gfp)  # the Gaussians make their own float32 copies
    empty = Instances(xp.zeros(img.shape, xp.int32), np.zeros(0, bool))
    if img.size == 0:
        return empty
    smooth = msc_threshold_image(img, voxel_size=sp, smooth_um=smooth_um, smooth_z_um=smooth_z_um)
    thr = fg_threshold(b, smooth, as_threshold(threshold))
    # no hole filling: a gap in an MSC's footprint (a Jurkat cell on the glass) is real
    mask = smooth > thr
    if not bool(mask.any()):
        return Instances(empty.labels, empty.touches_border, thr)

    mask2d = mask.any(axis=0) if img.ndim == 3 else mask
    level = float(background_level_noise(b, smooth)[0])
    if split == "auto":
        split = "height" if img.ndim == 3 else "shape"
    if split not in ("height", "shape", "intensity"):
        raise ValueError(f"unknown split {split!r}: use 'auto', 'height', 'shape' or 'intensity'")
    if split == "height" and img.ndim == 3:
        if not seed_dynamics > 0:
            raise ValueError(f"seed_dynamics must be > 0, got {seed_dynamics}")
        # the threshold image is the lateral smoothing when it is not smoothed along z
        sxy = smooth if smooth_z_um == 0 else None
        lab2d = _split_by_height(
            b, img, mask2d, level, sp, smooth_um, seed_dynamics, seeds, sxy=sxy
        )
    elif split == "shape":
        lab2d = _split_by_shape(b, mask2d, sp[-2:], msc_diameter_um, min_separation_um, seeds)
    else:
        lab2d = _split_by_intensity(
            b, smooth, mask2d, level, sp, msc_diameter_um, seed_smooth_um, min_separation_um,
            seeds,
        )  # fmt: skip
    if min_area_um2 is None:
        min_area_um2 = math.pi * (0.075 * msc_diameter_um) ** 2
    lab2d = remove_small_labels(b, lab2d, min_area_um2 / float(sp[-1] * sp[-2]))
    labels = extend_through_z(b, lab2d, mask)
    return Instances(labels, touches_border(b, labels)[1:], thr)


def _split_by_height(
    b: Backend,
    img: Any,
    mask2d: Any,
    level: float,
    sp: tuple[float, ...],
    smooth_um: float,
    seed_dynamics: float,
    seeds: Any = None,
    sxy: Any = None,
) -> Any:
    """2-D instances from the height map of a 3-D field (see :func:`segment_msc`); ``sxy``
    is ``img`` smoothed in the plane at ``smooth_um`` when the caller has it."""
    xp = b.xp
    lateral = sp[-2:]
    # lateral smoothing only: smoothing along z would widen every cell by the kernel
    if sxy is None:
        sxy = gaussian(b, img, [0.0] + [smooth_um / s for s in lateral])
    signal = xp.maximum(sxy - level, 0)
    top = signal.max(axis=0)
    height = xp.where(mask2d, signal.sum(axis=0) / xp.maximum(top, 1e-6) * sp[0], 0)
    height = gaussian(b, height, [smooth_um / s for s in lateral]).astype(xp.float32)
    vals = height[mask2d]
    plateau = float(b.to_host(xp.percentile(vals, 75.0)))  # device->host: one value
    if seeds is not None:
        return watershed_2d(b, height, _in_mask(b, seeds, mask2d, lateral), mask2d)
    return watershed_2d(b, height, None, mask2d, h=seed_dynamics * plateau)


def _split_by_shape(
    b: Backend,
    mask2d: Any,
    lateral: tuple[float, ...],
    diameter_um: float,
    min_separation_um: float | None,
    seeds: Any = None,
) -> Any:
    """2-D instances seeded at maxima of the (smoothed) distance to the mask outline."""
    xp = b.xp
    dist = b.ndi.distance_transform_edt(mask2d, sampling=lateral).astype(xp.float32)
    dist = gaussian(b, dist, [0.02 * diameter_um / s for s in lateral])
    if seeds is not None:
        markers = _in_mask(b, seeds, mask2d, lateral)
        # from the seeds (nuclei) the cells grow by distance to their seed within the
        # mask: where crowded cells touch with no neck, the outline's distance map says
        # nothing of where one ends, and its ridges let one seed flood its neighbours
        to_seed = b.ndi.distance_transform_edt(markers == 0, sampling=lateral)
        relief = (to_seed - dist).astype(xp.float32)
        return watershed_2d(b, -relief, markers, mask2d)
    sep = 0.3 * diameter_um if min_separation_um is None else min_separation_um
    seeds = local_maxima(b, dist, threshold=0.0, size=box(sep, lateral), mask=mask2d)
    return watershed_2d(b, dist, seeds, mask2d)


def _split_by_intensity(
    b: Backend,
    smooth: Any,
    mask2d: Any,
    level: float,
    sp: tuple[float, ...],
    msc_diameter_um: float,
    seed_smooth_um: float | None,
    min_separation_um: float | None,
    seeds: Any = None,
) -> Any:
    """2-D instances seeded at maxima of the smoothed (summed) intensity."""
    xp = b.xp
    lateral = sp[-2:]
    signal = xp.maximum(smooth - level, 0)
    proj = signal.sum(axis=0) * sp[0] if smooth.ndim == 3 else signal
    proj = xp.where(mask2d, proj, 0)
    seed_sigma = 0.06 * msc_diameter_um if seed_smooth_um is None else seed_smooth_um
    relief = gaussian(b, proj, [seed_sigma / s for s in lateral])
    if seeds is not None:
        return watershed_2d(b, relief, _in_mask(b, seeds, mask2d, lateral), mask2d)
    sep = 0.3 * msc_diameter_um if min_separation_um is None else min_separation_um
    seeds = local_maxima(b, relief, threshold=0.0, size=box(sep, lateral), mask=mask2d)
    return watershed_2d(b, relief, seeds, mask2d)


#: A seed that lies wholly outside the cell mask is moved onto the mask within this
#: distance, µm (:func:`_in_mask`).
SEED_REACH_UM = 2.0


def _in_mask(b: Backend, seeds: Any, mask2d: Any, lateral: tuple[float, ...]) -> Any:
    """The given seed labels inside the mask (int32, on the mask's device).

    A seed with no pixel in the mask (the pieces of an apoptotic MSC's nucleus in the
    dim rim beside a donor, which the cytoplasm's mask leaves out in a projection) is
    grown by :data:`SEED_REACH_UM` and keeps the mask pixels it reaches that no other
    seed holds; farther away it is dropped, as before.
    """
    xp = b.xp
    seeds = b.asarray(seeds).astype(xp.int32)
    inside = xp.where(mask2d, seeds, 0)
    n = int(seeds.max()) if seeds.size else 0
    if n == 0:
        return inside
    present = xp.zeros(n + 1, bool)
    present[inside.reshape(-1)] = True
    lost = xp.zeros(n + 1, bool)
    lost[seeds.reshape(-1)] = True
    lost &= ~present
    lost[0] = False
    if not bool(lost.any()):
        return inside
    outside = xp.where(lost[seeds], seeds, 0)
    fp = ellipsoid_footprint([SEED_REACH_UM / s for s in lateral])
    box = bbox(b, outside > 0, [k // 2 for k in fp.shape])  # the lost seeds' reach only
    grown = xp.zeros_like(outside)
    grown[box] = b.ndi.grey_dilation(outside[box], footprint=b.asarray(fp))
    return xp.where(mask2d & (inside == 0) & (grown > 0), grown, inside).astype(xp.int32)
