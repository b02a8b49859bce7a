"""Background estimation and subtraction (top-hat / rolling ball and wide Gaussian).

Both methods take their size in µm and the field's voxel size, and run on 2-D and 3-D
images, NumPy or CuPy, in float32.

``tophat``
    The background is the grey opening of the image with a flat ellipsoid footprint of
    radius ``radius_um`` (a white top-hat; the flat-ball variant of the rolling ball): it
    lies under every object narrower than the ball and follows slower variations. An
    exact opening with a ball of, say, 10 µm at 0.1 µm/px has ~4·10⁶ footprint voxels in 3-D,
    so by default the image is first reduced by a block *minimum* of ``f`` pixels per axis
    (``f`` chosen so the reduced ball is at least ~5 px in radius; a block minimum is itself
    an erosion, so the result stays below the image), opened there, interpolated back
    (linear) and clipped to the image. Objects narrower than the ball are removed as in
    the exact opening; the background is within one block of the exact one in position,
    i.e. smoother, never above the image. ``downsample=1`` gives the exact opening.
``gaussian``
    The background is the image smoothed with a Gaussian of sigma ``sigma_um``, clipped to
    the image (fast; bright objects raise it locally).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    MAD_TO_SIGMA,
    VoxelSize,
    as_float32,
    ellipsoid_footprint,
    gaussian,
    host_sample,
    spacing,
)

__all__ = ["estimate_background", "noise_sigma", "subtract_background"]

#: Radius in reduced pixels that the automatic downsampling aims for.
_TARGET_RADIUS_PX = 5.0


def _check(image: Any) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(
            f"background needs a 2-D (Y, X) or 3-D (Z, Y, X) image, got shape {image.shape}: "
            "pass one channel at a time"
        )


def _block_min(b: Backend, img: Any, factors: tuple[int, ...]) -> Any:
    """Minimum over blocks of ``factors`` pixels (the edge is padded by replication)."""
    xp = b.xp
    pad = [(0, (-s) % f) for s, f in zip(img.shape, factors, strict=True)]
    if any(p[1] for p in pad):
        img = xp.pad(img, pad, mode="edge")
    shape = []
    for s, f in zip(img.shape, factors, strict=True):
        shape += [s // f, f]
    red = img.reshape(shape)
    return red.min(axis=tuple(range(1, 2 * img.ndim, 2)))


def _upsample_linear(b: Backend, small: Any, shape: tuple[int, ...]) -> Any:
    """Separable linear interpolation of a block-reduced image back to ``shape``.

    Block ``k`` of ``f`` pixels is centred at full-resolution coordinate ``(k + 0.5) f - 0.5``.
    """
    xp = b.xp
    out = small
    for ax, n in enumerate(shape):
        m = out.shape[ax]
        if m == n:
            continue
        f = n / m
        pos = xp.clip((xp.arange(n, dtype=xp.float32) + 0.5) / f - 0.5, 0, m - 1)
        i0 = xp.floor(pos).astype(xp.int64)
        i1 = xp.minimum(i0 + 1, m - 1)
        w = (pos - i0).astype(xp.float32)
        bshape = [1] * out.ndim
        bshape[ax] = n
        w = w.reshape(bshape)
        out = xp.take(out, i0, axis=ax) * (1 - w) + xp.take(out, i1, axis=ax) * w
    return out


def _tophat_background(
    b: Backend, img: Any, radius_um: float, sp: tuple[float, ...], downsample: int | str
) -> Any:
    radius_px = [radius_um / s for s in sp]
    if downsample == "auto":
        factors = tuple(max(1, int(r // _TARGET_RADIUS_PX)) for r in radius_px)
    else:
        f = int(downsample)
        if f < 1:
            raise ValueError(f"downsample must be 'auto' or an integer >= 1, got {downsample!r}")
        factors = tuple(min(f, max(1, n)) for n in img.shape)
    factors = tuple(min(f, n) for f, n in zip(factors, img.shape, strict=True))
    small = _block_min(b, img, factors) if any(f > 1 for f in factors) else img
    fp = ellipsoid_footprint([r / f for r, f in zip(radius_px, factors, strict=True)])
    bg = b.ndi.grey_opening(small, footprint=fp, mode="nearest")
    if small is not img:
        bg = b.xp.minimum(_upsample_linear(b, bg, img.shape), img)
    return bg


def estimate_background(
    image: Any,
    *,
    voxel_size: VoxelSize,
    method: Literal["tophat", "gaussian"] = "tophat",
    radius_um: float = 10.0,
    sigma_um: float = 10.0,
    downsample: int | Literal["auto"] = "auto",
) -> Any:
    """Smooth background under the objects of one channel.

    Parameters
    ----------
    image : (M, N) or (P, M, N) ndarray
        One channel, any numeric dtype, NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
        Voxel size of ``image``.
    method : {"tophat", "gaussian"}
        ``tophat``: grey opening with a flat ellipsoid of ``radius_um`` (rolling ball);
        ``gaussian``: Gaussian smoothing with ``sigma_um``.
    radius_um : float, µm
        Ball radius for ``tophat``; larger than the largest object to keep (default 10 µm).
    sigma_um : float, µm
        Gaussian sigma for ``gaussian`` (default 10 µm).
    downsample : "auto" or int
        ``tophat`` only: block-minimum reduction factor before the opening; ``auto`` keeps
        the reduced ball radius near 5 px; 1 is the exact opening.

    Returns
    -------
    background : ndarray, float32, same shape and backend as ``image``
        Never above the image.
    """
    _check(image)
    b = Backend.of(image)
    img = as_float32(b, image)
    if img.size == 0:
        return img.copy()
    sp = spacing(voxel_size, img.ndim)
    if method == "tophat":
        if not radius_um > 0:
            raise ValueError(f"radius_um must be > 0 µm, got {radius_um}")
        return _tophat_background(b, img, float(radius_um), sp, downsample)
    if method == "gaussian":
        if not sigma_um > 0:
            raise ValueError(f"sigma_um must be > 0 µm, got {sigma_um}")
        bg = gaussian(b, img, [sigma_um / s for s in sp], truncate=3.0)
        return b.xp.minimum(bg, img)
    raise ValueError(f"unknown background method {method!r}: use 'tophat' or 'gaussian'")


def subtract_background(
    image: Any,
    *,
    voxel_size: VoxelSize,
    method: Literal["tophat", "gaussian", "none"] = "tophat",
    radius_um: float = 10.0,
    sigma_um: float = 10.0,
    downsample: int | Literal["auto"] = "auto",
) -> Any:
    """``image - background`` (float32, >= 0); ``method="none"`` returns the image as float32.

    Parameters are those of :func:`estimate_background`.
    """
    _check(image)
    b = Backend.of(image)
    img = as_float32(b, image)
    if method == "none":
        return img.copy()
    bg = estimate_background(
        img,
        voxel_size=voxel_size,
        method=method,
        radius_um=radius_um,
        sigma_um=sigma_um,
        downsample=downsample,
    )
    return b.xp.maximum(img - bg, 0)


def noise_sigma(image: Any, *, mask: Any = None) -> float:
    """Robust standard deviation of the pixel noise of one image (its intensity units).

    The image minus a Gaussian-smoothed copy (sigma 1 px per axis) is a high-pass residual
    that holds the noise and little of any structure wider than a pixel or two; its MAD,
    scaled to a standard deviation and divided by the gain of the residual filter for
    white noise (``sqrt(sum((delta - kernel)²))``), estimates the noise sigma. Objects
    and edges are outliers the median ignores.

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        NumPy or CuPy, any numeric dtype.
    mask : bool ndarray, optional
        Only these pixels' residuals are used (e.g. the background).

    Returns
    -------
    float
        0.0 for an empty or constant image.
    """
    b = Backend.of(image)
    img = as_float32(b, image)
    if img.size == 0:
        return 0.0
    sig = [1.0 if n > 1 else 0.0 for n in img.shape]
    resid = img - gaussian(b, img, sig, truncate=4.0)
    if mask is not None:
        resid = resid[b.asarray(mask)]
    # white-noise gain of the residual filter (delta - gaussian), per axis and combined
    k1 = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    k1 /= k1.sum()
    sum_k2 = float(np.prod([np.sum(k1**2) if s > 0 else 1.0 for s in sig]))
    k0 = float(np.prod([k1[4] if s > 0 else 1.0 for s in sig]))
    gain = np.sqrt(max(1.0 - 2.0 * k0 + sum_k2, 1e-12))
    x = host_sample(b, resid)
    if x.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))) / gain)
