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
