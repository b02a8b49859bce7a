"""Global thresholds per field or per plate: Otsu, Li, triangle, Yen, manual.

As in cuCIM, the histogram is computed where the image lives (GPU or CPU) and the search
over its bins runs on the host: a 256- or 1024-bin search is faster there than launching
kernels. The histogram follows scikit-image's for float images (``nbins`` equal bins from
the image minimum to its maximum, thresholds returned as bin centres), so the results
match ``skimage.filters.threshold_*``; Li is iterated on the histogram (exact for integer
images as in scikit-image, within one bin width for float images).

:func:`plate_threshold` pools the histograms of a sample of fields (one shared range) and
returns one threshold, so that every field of a plate is cut at the same intensity.

A segmentation's threshold is one option, a tagged union on ``method``
(:data:`Threshold`), shared by the stages and the configuration:

- :class:`AutoThreshold` (``auto``, with ``k`` and ``fraction``): adapted to each field's
  own background, noise and foreground; each segmentation says how it combines them;
- :class:`HistogramThreshold` (``otsu``, ``li``, ``triangle``, ``yen``): a global search on
  the field's histogram;
- :class:`ManualThreshold` (``manual``, with ``value``): a fixed intensity, e.g. a
  plate-level threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from hcsmito.backend import Backend

__all__ = [
    "THRESHOLD_METHODS",
    "AutoThreshold",
    "HistogramMethod",
    "HistogramThreshold",
    "ManualThreshold",
    "Threshold",
    "ThresholdLike",
    "as_threshold",
    "histogram",
    "plate_threshold",
    "threshold",
    "threshold_from_histogram",
]

#: The histogram search methods.
HistogramMethod = Literal["otsu", "li", "triangle", "yen"]
#: The methods of :func:`threshold` and :func:`plate_threshold`.
THRESHOLD_METHODS: tuple[str, ...] = ("otsu", "li", "triangle", "yen", "manual")


def _finite(b: Backend, image: Any, mask: Any = None) -> Any:
    xp = b.xp
    vals = image[mask] if mask is not None else image.reshape(-1)
    if vals.dtype.kind == "f":
        vals = vals[xp.isfinite(vals)]
    return vals


def histogram(
    image: Any,
    *,
    nbins: int = 256,
    value_range: tuple[float, float] | None = None,
    mask: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of an image computed on its device, returned on the host.

    Parameters
    ----------
    image : ndarray
        Any shape and numeric dtype, NumPy or CuPy. NaN and inf are ignored.
    nbins : int
        Number of equal bins (ignored for an integer image without ``value_range``: one
        bin per integer value, as in scikit-image).
    value_range : (float, float), optional
        Range of the bins; the image's min and max by default.
    mask : bool ndarray, optional
        Only these voxels are counted.

    Returns
    -------
    counts : (nbins,) ndarray of int64
    centers : (nbins,) ndarray of float64
        Bin centres. Both are empty when no voxel is counted.
    """
    b = Backend.of(image)
    xp = b.xp
    vals = _finite(b, image, mask)
    if vals.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    if value_range is None:
        lo, hi = (float(v) for v in b.to_host(xp.stack([vals.min(), vals.max()])))  # device->host
    else:
        lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        return np.array([int(vals.size)], np.int64), np.array([lo], np.float64)
    if value_range is None and vals.dtype.kind in "iub" and hi - lo < 65536:
        # One bin per integer value, as scikit-image bins integer images.
        n = int(hi - lo) + 1
        counts = xp.bincount((vals.astype(xp.int64) - int(lo)).reshape(-1), minlength=n)
        counts = b.to_host(counts).astype(np.int64)  # device->host: small
        return counts, np.arange(n, dtype=np.float64) + lo
    counts, _ = xp.histogram(vals, bins=int(nbins), range=(lo, hi))
    counts = b.to_host(counts).astype(np.int64)  # device->host: small
    edges = np.linspace(lo, hi, int(nbins) + 1)
    return counts, 0.5 * (edges[:-1] + edges[1:])


def _trim(counts: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(counts)
    return counts[nz[0] : nz[-1] + 1], centers[nz[0] : nz[-1] + 1]


def _otsu(counts: np.ndarray, centers: np.ndarray) -> float:
    c = counts.astype(np.float64)
    w1 = np.cumsum(c)
    w2 = np.cumsum(c[::-1])[::-1]
    m1 = np.cumsum(c * centers) / w1
    m2 = (np.cumsum((c * centers)[::-1]) / w2[::-1])[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centers[int(np.argmax(between))])


def _yen(counts: np.ndarray, centers: np.ndarray) -> float:
    p = counts.astype(np.float64) / counts.sum()
    p1 = np.cumsum(p)
    p1_sq = np.cumsum(p**2)
    p2_sq = np.cumsum(p[::-1] ** 2)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = np.log((p1[:-1] * (1.0 - p1[:-1])) ** 2 / (p1_sq[:-1] * p2_sq[1:]))
    crit = np.where(np.isfinite(crit), crit, -np.inf)
    return float(centers[int(np.argmax(crit))])


def _triangle(counts: np.ndarray, centers: np.ndarray) -> float:
    c = counts.astype(np.float64)
    n = c.size
    peak = int(np.argmax(c))
    nz = np.flatnonzero(c)
    low, high = int(nz[0]), int(nz[-1])
    flip = peak - low < high - peak
    if flip:  # the long tail is on the right: mirror it to the left
        c = c[::-1]
        low = n - high - 1
        peak = n - peak - 1
    width = peak - low
    if width == 0:
        return float(centers[peak if not flip else n - peak - 1])
    x = np.arange(width)
    y = c[x + low]
    norm = np.hypot(c[peak], width)
    dist = (c[peak] / norm) * x - (width / norm) * y
    level = int(np.argmax(dist)) + low
    if flip:
        level = n - level - 1
    return float(centers[level])


def _li(counts: np.ndarray, centers: np.ndarray) -> float:
    c = counts.astype(np.float64)
    lo = centers[0]
    v = centers - lo
    tol = 0.5 * (centers[1] - centers[0]) if centers.size > 1 else 0.5
    t_next = float(np.sum(c * v) / c.sum())
    t_curr = -2.0 * tol
    for _ in range(1000):
        if abs(t_next - t_curr) <= tol:
            break
        t_curr = t_next
        fore = v > t_curr
        if not fore.any() or fore.all():
            break
        mean_fore = np.sum(c[fore] * v[fore]) / c[fore].sum()
        mean_back = np.sum(c[~fore] * v[~fore]) / c[~fore].sum()
        if mean_back == 0:
            break
        t_next = float((mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore)))
    return float(t_next + lo)


_METHODS = {"otsu": _otsu, "li": _li, "triangle": _triangle, "yen": _yen}


def threshold_from_histogram(
    counts: np.ndarray, centers: np.ndarray, *, method: HistogramMethod = "otsu"
) -> float:
    """Threshold of a (host) histogram by ``method``; NaN for an empty histogram.

    Empty bins at both ends are trimmed first (as scikit-image does).
    """
    if method not in _METHODS:
        raise ValueError(
            f"unknown threshold method {method!r}: use one of {', '.join(THRESHOLD_METHODS)}"
        )
    counts = np.asarray(counts)
    centers = np.asarray(centers, dtype=np.float64)
    if counts.size == 0 or counts.sum() == 0:
        return float("nan")
    counts, centers = _trim(counts, centers)
    if counts.size == 1:
        return float(centers[0])
    return _METHODS[method](counts, centers)


def threshold(
    image: Any,
    *,
    method: HistogramMethod | Literal["manual"] = "otsu",
    nbins: int = 256,
    value: float | None = None,
    mask: Any = None,
) -> float:
    """Global threshold of one field.

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        One channel, NumPy or CuPy, any numeric dtype.
    method : {"otsu", "li", "triangle", "yen", "manual"}
        Search method; ``manual`` returns ``value``.
    nbins : int
        Histogram bins (scikit-image's default 256).
    value : float, optional
        The threshold for ``method="manual"`` (intensity units of ``image``).
    mask : bool ndarray, optional
        Only these voxels enter the histogram.

    Returns
    -------
    float
        Objects are ``image > threshold``. A constant image returns its value; an empty one NaN.
    """
    if method == "manual":
        if value is None:
            raise ValueError("method='manual' needs value=<threshold in image intensity units>")
        return float(value)
    counts, centers = histogram(image, nbins=nbins, mask=mask)
    return threshold_from_histogram(counts, centers, method=method)


def plate_threshold(
    samples: Iterable[Any],
    *,
    method: HistogramMethod | Literal["manual"] = "otsu",
    nbins: int = 1024,
    value: float | None = None,
) -> float:
    """One threshold for a plate from a sample of its fields (pooled histogram).

    Parameters
    ----------
    samples : iterable of ndarray
        Fields (or the same channel of several fields), NumPy or CuPy; each is read twice
        (range, then histogram), so pass arrays, not a one-shot generator of large arrays.
    method, value
        As in :func:`threshold`.
    nbins : int
        Bins of the pooled histogram over the common range of all samples.

    Returns
    -------
    float
        NaN when the samples hold no finite value.
    """
    if method == "manual":
        return threshold(np.zeros(1, np.float32), method="manual", value=value)
    samples = list(samples)
    if not samples:
        raise ValueError("plate_threshold needs at least one sample field")
    lo, hi = np.inf, -np.inf
    for s in samples:
        b = Backend.of(s)
        vals = _finite(b, s)
        if vals.size:
            mn, mx = b.to_host(b.xp.stack([vals.min(), vals.max()]))  # device->host: 2 values
            lo, hi = min(lo, float(mn)), max(hi, float(mx))
    if not np.isfinite(lo):
        return float("nan")
    if not hi > lo:
        return float(lo)
    total = np.zeros(int(nbins), np.int64)
    centers = None
    for s in samples:
        counts, centers = histogram(s, nbins=nbins, value_range=(lo, hi))
        if counts.size == nbins:
            total += counts
    return threshold_from_histogram(total, centers, method=method)


# --------------------------------------------------------------------------- the option

#: Unknown keys are errors, values are frozen and finite (as every config section).
_OPTION = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AutoThreshold(BaseModel):
    """Adaptive threshold: from the field's own background level and noise sigma (``k``
    sigmas above background at least) and from its foreground (``fraction`` of the way
    from background to it). :func:`hcsmito.stages.segmentation.segment_msc` and
    :func:`~hcsmito.stages.segmentation.segment_jurkat` each say how they combine them."""

    model_config = _OPTION

    method: Literal["auto"] = Field("auto", description="background + k noise sigmas")
    k: float = Field(5.0, gt=0, description="noise sigmas above background")
    fraction: float = Field(
        0.3, ge=0, le=1, description="share of the way from background to the foreground"
    )


class HistogramThreshold(BaseModel):
    """A global search on the histogram of the smoothed image (:func:`threshold`)."""

    model_config = _OPTION

    method: HistogramMethod = Field("otsu", description="otsu | li | triangle | yen")

    def of(self, image: Any) -> float:
        """The threshold of ``image`` (NumPy or CuPy)."""
        return threshold(image, method=self.method)


class ManualThreshold(BaseModel):
    """A fixed threshold in the intensity units of the channel (e.g. a plate threshold)."""

    model_config = _OPTION

    method: Literal["manual"] = Field("manual", description="a fixed intensity (value)")
    value: float = Field(description="threshold, in intensity units of the channel")

    def of(self, image: Any) -> float:
        """``value`` (the image is not looked at)."""
        return float(self.value)


#: A segmentation's threshold: adaptive, a histogram method or a manual value.
Threshold = Annotated[
    AutoThreshold | HistogramThreshold | ManualThreshold, Field(discriminator="method")
]

#: What a stage takes as its threshold: an option, or a mapping or method name read as one.
ThresholdLike = AutoThreshold | HistogramThreshold | ManualThreshold | Mapping[str, Any] | str

_THRESHOLD = TypeAdapter(Threshold)


def as_threshold(spec: ThresholdLike) -> AutoThreshold | HistogramThreshold | ManualThreshold:
    """The threshold option ``spec``: an option, a mapping (``{"method": "manual", "value":
    120}``) or a method name (``"auto"``, ``"otsu"``...: the method with its defaults)."""
    if isinstance(spec, AutoThreshold | HistogramThreshold | ManualThreshold):
        return spec
    if isinstance(spec, str):
        spec = {"method": spec}
    return _THRESHOLD.validate_python(dict(spec))
