"""The transform grid of Richardson-Lucy (:mod:`hcsmito.stages.deconvolution`): padding,
fast lengths, the choice between real FFTs and the DCT, and the DCT transfer function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.fft

from hcsmito.backend import Backend, get_backend

Pad = Literal["auto"] | int | Sequence[int]
Transform = Literal["auto", "fft", "dct"]


def resolve_backend(backend: Backend | str | None, *arrays: Any) -> Backend:
    if backend is None:
        return Backend.of(*arrays)
    if isinstance(backend, Backend):
        return backend
    return get_backend(backend)


def next_fast_len(n: int) -> int:
    """Fast FFT length >= n: 5-smooth (scipy's rule for real transforms), on both backends,
    so that the CPU and the GPU pad to the same grid and give the same result (cuFFT is
    fast on these sizes too)."""
    return int(scipy.fft.next_fast_len(n, real=True))


def pad_widths(pad: Pad, psf_shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(pad, str):
        if pad != "auto":
            raise ValueError(f"pad={pad!r}: use 'auto' (PSF half-width), an int or one per axis")
        return tuple(s // 2 for s in psf_shape)
    if np.ndim(pad) == 0:
        widths = (int(pad),) * len(psf_shape)
    else:
        widths = tuple(int(p) for p in pad)
    if len(widths) != len(psf_shape) or min(widths) < 0:
        raise ValueError(f"pad={pad!r} must be 'auto', a non-negative int or one per axis")
    return widths


def is_mirror_symmetric(psf: Any, xp: Any, rtol: float = 1e-5) -> bool:
    """Odd size on every axis and ``psf == flip(psf, axis)`` for each axis (within
    ``rtol`` of its maximum)."""
    if any(k % 2 == 0 for k in psf.shape):
        return False
    top = float(psf.max())  # device->host (scalar)
    worst = max(float(xp.abs(psf - xp.flip(psf, axis=a)).max()) for a in range(psf.ndim))
    return worst <= rtol * top  # device->host (scalars above)


def choose_transform(
    transform: str, psf: Any, pad: Pad, pad_mode: str, xp: Any
) -> Literal["fft", "dct"]:
    if transform not in ("auto", "fft", "dct"):
        raise ValueError(f"transform={transform!r}: use 'auto', 'fft' or 'dct'")
    if transform == "fft":
        return "fft"
    symmetric = is_mirror_symmetric(psf, xp)
    if transform == "dct":
        if not symmetric:
            raise ValueError(
                f"transform='dct' needs a PSF that is mirror-symmetric on every axis with an "
                f"odd size (this one, {tuple(psf.shape)}, is not): use transform='fft'"
            )
        if not (isinstance(pad, str) and pad == "auto") or pad_mode != "reflect":
            raise ValueError(
                "transform='dct' implies mirror borders: leave pad='auto', pad_mode='reflect'"
            )
        return "dct"
    usable = isinstance(pad, str) and pad == "auto" and pad_mode == "reflect"
    return "dct" if usable and symmetric else "fft"


def dct_transfer(psf: Any, grid: tuple[int, ...], xp: Any) -> Any:
    """Eigenvalues of the mirror-boundary convolution with a symmetric, normalised PSF in
    the type-II DCT basis of ``grid``: ``H[k] = Σ_j psf[j] Π_a cos(π k_a j_a / n_a)``, the
    offsets ``j_a`` counted from the PSF centre. One small matrix product per axis."""
    h = psf.astype(xp.float64)
    for axis, (n, k) in enumerate(zip(grid, psf.shape, strict=True)):
        offsets = xp.arange(k, dtype=xp.float64) - k // 2
        cosines = xp.cos(np.pi * xp.arange(n, dtype=xp.float64)[:, None] * offsets[None, :] / n)
        h = xp.moveaxis(xp.tensordot(h, cosines, axes=([axis], [1])), -1, axis)
    return h.astype(xp.float32)


def transform_grid(
    shape: tuple[int, ...], psf_shape: tuple[int, ...], pad: Pad, transform: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The transform grid and the image's offset in it. ``'dct'``: the image enlarged only
    to a fast length; ``'fft'``: plus the margin against wrap-around, then a fast length."""
    widths = pad_widths(pad, psf_shape)
    lo, grid = [], []
    for n, w, k in zip(shape, widths, psf_shape, strict=True):
        if transform == "dct":
            size = next_fast_len(n)
            lo.append((size - n) // 2)
        elif w == 0:
            if k > n:
                raise ValueError(
                    f"pad=0 needs the PSF {psf_shape} to fit in the image {shape}: "
                    "use pad='auto' or a smaller PSF"
                )
            size = n
            lo.append(0)
        else:
            size = next_fast_len(max(n + 2 * w, k))
            lo.append(w + (size - n - 2 * w) // 2)
        grid.append(size)
    return tuple(grid), tuple(lo)
