"""What both segmentations share: the instance result, the input check, the lateral
watershed and the extension of 2-D instances through z."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import background_level_noise
from hcsmito.stages.threshold import AutoThreshold, HistogramThreshold, ManualThreshold


@dataclass(frozen=True)
class Instances:
    """Instance labels of one field.

    Attributes
    ----------
    labels : (M, N[, P]) int32 ndarray
        0 = background, cells numbered 1..n; same backend as the input.
    touches_border : (n,) bool ndarray (host)
        Entry ``i`` is True when label ``i + 1`` touches the lateral field border (cut cell).
    threshold : float
        Intensity threshold used on the smoothed image.
    """

    labels: Any
    touches_border: np.ndarray
    threshold: float = float("nan")

    @property
    def n(self) -> int:
        """Number of instances."""
        return int(self.touches_border.size)


#: :func:`flatten_background`: lateral tiles per side, the percentile of a tile's voxels
#: that is its background, and how much narrower the background's histogram must get.
TREND_TILES = 8
TREND_PERCENTILE = 5.0
TREND_MIN_GAIN = 2.0


def flatten_background(b: Backend, smooth: Any) -> Any:
    """A smoothed threshold image with its lateral background trend taken out, where the
    trend is what spreads its background (else ``smooth`` unchanged).

    Smoothed at a micrometre, a field's noise is a few tenths of an intensity unit, and a
    background that varies across the field (vignetting: the corners at 0.6-0.8 of the
    centre, uneven illumination) spreads the background's histogram ten times wider
    than that. :func:`hcsmito.stages._util.background_level_noise` then reads the spread
    as noise, and a threshold at ``k`` of those sigmas stands so far above the
    background that dim cells shrink to their cores or vanish (on generated fields with
    vignetting and half the brightness: donor bodies at 0.54 of their volume, one of six
    missed, where the field without vignetting keeps 1.3 and all six).

    The background of each of :data:`TREND_TILES` x :data:`TREND_TILES` lateral tiles is
    the :data:`TREND_PERCENTILE` percentile of its voxels (over every plane: a stack has
    background above its cells; a lattice of at most 16 x 16 columns per tile); a
    quadratic surface in y and x is fitted to those levels, tiles far above the fit
    (covered by cells in every plane) left out in turn, and fitted again to the levels
    of the image less the first surface (a low percentile of a tile reads the low side of
    a steep trend across it: 1.6 noise sigmas left on a 40 % fall, 0.3 after).
    Where subtracting the surface (less its median) narrows the background's histogram
    by :data:`TREND_MIN_GAIN` or more, the flattened image is returned (written over
    ``smooth``); a flat field's sigma hardly changes, and it is returned as it is.

    Stacks only: a 2-D field has no plane above its cells, and the low percentile of a
    tile there is the haze of the cells over it (a small 2-D field with one MSC and ten
    donors read a "trend" of 12 units from the MSC's haze, and the gate let it through),
    so 2-D fields are returned as they are, vignetted or not.
    """
    ny, nx = smooth.shape[-2:]
    t = TREND_TILES
    if smooth.ndim != 3 or ny < 4 * t or nx < 4 * t:
        return smooth
    ty, tx = ny // t, nx // t
    # a lattice of at most 16 x 16 columns per tile
    ys = (np.arange(t)[:, None] * ty + np.arange(0, ty, max(1, ty // 16))[None, :]).ravel()
    xs = (np.arange(t)[:, None] * tx + np.arange(0, tx, max(1, tx // 16))[None, :]).ravel()
    sub = b.to_host(smooth[..., b.asarray(ys), :][..., b.asarray(xs)]).astype(np.float64)
    gy = ((np.arange(ny) + 0.5) / (ty * t) * 2 - 1)[:, None]  # tile centres at -1..1
    gx = ((np.arange(nx) + 0.5) / (tx * t) * 2 - 1)[None, :]
    c = (np.arange(t) + 0.5) / t * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1).reshape(-1, 6)
    coef = np.zeros(6)
    for _round in range(2):
        # a tile's low percentile reads the low side of the trend across the tile: a
        # second fit on the image less the first one removes that bias
        here = sub - _quadratic(coef, gy[ys], gx[:, xs])
        here = here.reshape(*here.shape[:-2], t, ys.size // t, t, xs.size // t)
        nd = here.ndim
        tiles = here.transpose(nd - 4, nd - 2, *range(nd - 4), nd - 3, nd - 1).reshape(t, t, -1)
        y = np.percentile(tiles, TREND_PERCENTILE, axis=-1).reshape(-1)
        keep = np.ones(y.size, bool)
        step = np.zeros(6)
        for _ in range(5):
            if keep.sum() < 16:
                return smooth
            step = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
            res = y - design @ step
            spread = 1.4826 * float(np.median(np.abs(res[keep] - np.median(res[keep]))))
            new = res < 3.0 * max(spread, 1e-6)  # cells only make a tile brighter
            if np.array_equal(new, keep):
                break
            keep = new
        coef = coef + step
    trend = _quadratic(coef, gy, gx)
    trend -= np.median(trend)
    delta = b.asarray(trend.astype(np.float32))
    # the gain on a lattice sample first: the whole image is changed only when it pays
    lat = (..., slice(None, None, 4), slice(None, None, 4))
    probe = smooth[lat]
    _, before = background_level_noise(b, probe)
    _, after = background_level_noise(b, probe - delta[lat[1:]])
    if not (after > 0 and before >= TREND_MIN_GAIN * after):
        return smooth
    smooth -= delta
    return smooth


def _quadratic(coef: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """``coef`` (1, x, y, x², xy, y²) at the grid ``gy`` (column), ``gx`` (row); no constant."""
    a = coef
    return a[1] * gx + a[2] * gy + a[3] * gx * gx + a[4] * gx * gy + a[5] * gy * gy


def check_image(image: Any, name: str) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be one channel, 2-D (Y, X) or 3-D (Z, Y, X); got shape "
            f"{image.shape}: select the channel first (e.g. image[c])"
        )


def watershed_2d(
    b: Backend,
    relief: Any,
    seeds: Any,
    mask: Any,
    *,
    compactness: float = 0.0,
    h: float | None = None,
) -> Any:
    """Seeded watershed of ``-relief`` in ``mask`` (2-D), on the host (cuCIM has none).

    ``seeds=None``: the seeds are the h-maxima of ``relief`` in the mask (maxima at least
    ``h`` above the saddle to any higher maximum), one label per connected plateau.
    Components of the mask that hold no seed become labels of their own.
    """
    from scipy import ndimage as sp_ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    r = b.to_host(relief)  # device->host: one Y×X image
    m = b.to_host(mask)  # device->host: one Y×X image
    if seeds is None:
        tops = h_maxima(np.where(m, r, 0).astype(np.float64), float(h)).astype(bool) & m
        s, _ = sp_ndi.label(tops, structure=np.ones((3, 3), bool))
    else:
        s = b.to_host(seeds)  # device->host: one Y×X image
    lab = watershed(-r, markers=s, mask=m, compactness=compactness).astype(np.int32)
    rest, n_rest = sp_ndi.label(m & (lab == 0))
    if n_rest:
        lab = np.where(rest > 0, rest + lab.max(), lab).astype(np.int32)
    return b.asarray(lab)


def box(radius_um: float, sp: tuple[float, ...]) -> tuple[int, ...]:
    """Box neighbourhood for a minimum separation: half-width 0.8 x the radius.

    A box filter is separable (fast for the large separations of whole cells); its
    half-width sits between the disc's inscribed (0.71 r) and circumscribed (r) squares.
    """
    return tuple(2 * max(1, int(round(0.8 * radius_um / s))) + 1 for s in sp)


def extend_through_z(b: Backend, lab2d: Any, mask: Any) -> Any:
    if mask.ndim == 2:
        return b.xp.where(mask, lab2d, 0).astype(b.xp.int32)
    return b.xp.where(mask, lab2d[None], 0).astype(b.xp.int32)


def fg_threshold(
    b: Backend, smooth: Any, threshold: AutoThreshold | HistogramThreshold | ManualThreshold
) -> float:
    """Threshold of a smoothed image.

    ``auto``: ``level + max(k * sigma, fraction * (fg - level))`` with the background
    level and noise sigma from the histogram mode, and ``fg`` the median of the voxels
    clearly above background (``level + k sigma``). The noise term keeps empty fields
    empty; the foreground term puts the boundary of a blurred object near its true edge
    whatever the brightness.
    """
    if not isinstance(threshold, AutoThreshold):
        return threshold.of(smooth)
    k, fraction = threshold.k, threshold.fraction
    level, sigma = background_level_noise(b, smooth)
    floor = level + k * sigma
    above = smooth[smooth > floor]
    if int(above.size) == 0:
        return floor
    fg = float(b.to_host(b.xp.median(above)))  # device->host: one value
    return level + max(k * sigma, fraction * (fg - level))


def majority_label(b: Backend, objects: Any, labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per object ``1..n`` of ``objects``: the label of ``labels`` covering most of its
    voxels (0 where none does) and the share of the object it covers (host arrays).

    One ``bincount`` over the (object, label) pairs of the objects' voxels: no per-object
    loop (DESIGN.md: no per-label scans on the GPU).
    """
    xp = b.xp
    m = int(labels.max()) if labels.size else 0
    if n == 0 or m == 0:
        return np.zeros(n, np.int32), np.zeros(n)
    sel = objects.reshape(-1) > 0
    obj = objects.reshape(-1)[sel].astype(xp.int64)
    lab = labels.reshape(-1)[sel].astype(xp.int64)
    pair = xp.bincount(obj * (m + 1) + lab, minlength=(n + 1) * (m + 1))
    table = b.to_host(pair.reshape(n + 1, m + 1))[1:]  # device->host: n × m counts
    best = table[:, 1:].argmax(axis=1)
    frac = table[np.arange(n), best + 1] / np.maximum(table.sum(axis=1), 1)
    return np.where(frac > 0, best + 1, 0).astype(np.int32), frac
