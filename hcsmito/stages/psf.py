"""Point spread functions: theoretical (Gaussian, Born & Wolf) and empirical (from beads).

Every PSF returned here is ``float32``, has an odd shape, is centred on the middle voxel
(``shape // 2``) and sums to 1, in the axis order of the image (``(Z, Y, X)`` or ``(Y, X)``).
Lengths are in micrometres; ``voxel_size`` is ``(dz, dy, dx)`` (or ``(dy, dx)`` in 2-D).

Theoretical PSFs are small and computed on the host with NumPy; the empirical one runs on
the backend of the bead image (``Backend.of(image)``) and returns an array of that backend.

References
----------
.. [1] B. Zhang, J. Zerubia, J.-C. Olivo-Marin, "Gaussian approximations of fluorescence
   microscope point-spread function models", Applied Optics 46(10), 1819-1829 (2007).
.. [2] M. Born, E. Wolf, *Principles of Optics*, 7th ed., section 8.8 (the scalar
   three-dimensional light distribution near focus).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage, special

from hcsmito.backend import Backend

__all__ = [
    "find_beads",
    "gaussian_sigmas",
    "psf_born_wolf",
    "psf_from_beads",
    "psf_fwhm",
    "psf_gaussian",
]

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _check_geometry(
    shape: Sequence[int], voxel_size: Sequence[float]
) -> tuple[tuple[int, ...], np.ndarray]:
    shape = tuple(int(s) for s in shape)
    voxel = np.asarray(voxel_size, dtype=np.float64).ravel()
    if len(shape) not in (2, 3):
        raise ValueError(f"PSF shape {shape} must have 2 (Y, X) or 3 (Z, Y, X) axes")
    if any(s < 1 or s % 2 == 0 for s in shape):
        raise ValueError(
            f"PSF shape {shape} must be odd on every axis so that the PSF has a centre voxel: "
            f"use e.g. {tuple(s + 1 - s % 2 for s in shape)}"
        )
    if voxel.size != len(shape) or not np.all(voxel > 0):
        raise ValueError(
            f"voxel_size {tuple(voxel_size)} must give one positive size (µm) per axis of "
            f"shape {shape}: (dz, dy, dx) or (dy, dx)"
        )
    return shape, voxel


def _check_optics(na: float, wavelength_um: float, refractive_index: float) -> None:
    if not 0 < na < refractive_index:
        raise ValueError(
            f"numerical aperture {na} must be positive and below the immersion refractive "
            f"index {refractive_index} (e.g. na=1.4 with oil, refractive_index=1.518)"
        )
    if not 0.1 < wavelength_um < 2.0:
        raise ValueError(
            f"wavelength_um={wavelength_um} looks wrong: give the wavelength in micrometres "
            "(e.g. 0.52 for GFP emission, not 520)"
        )


def _normalise(psf: np.ndarray) -> np.ndarray:
    psf = np.clip(psf, 0, None)
    return (psf / psf.sum(dtype=np.float64)).astype(np.float32)


def _axes_um(shape: tuple[int, ...], voxel: np.ndarray, oversample: int = 1) -> list[np.ndarray]:
    """Coordinates (µm) of the voxel centres, the middle voxel at 0; ``oversample`` odd
    sub-samples per voxel, so a block mean of ``oversample`` samples is the voxel value."""
    out = []
    for n, d in zip(shape, voxel, strict=True):
        fine = np.arange(n * oversample) - (n * oversample - 1) / 2
        out.append(fine * d / oversample)
    return out


def _block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return a
    shp = []
    for n in a.shape:
        shp += [n // factor, factor]
    return a.reshape(shp).mean(axis=tuple(range(1, 2 * a.ndim, 2)))


def gaussian_sigmas(
    *,
    na: float,
    wavelength_um: float,
    refractive_index: float,
    confocal: bool = True,
    excitation_um: float | None = None,
) -> tuple[float, float]:
    """Standard deviations ``(sigma_z, sigma_xy)`` in µm of the Gaussian PSF approximation.

    Paraxial formulas of Zhang et al. 2007 [1]_: widefield ``sigma_xy = 0.21 λ / NA``,
    ``sigma_z = 0.66 λ n / NA²``; for a confocal with a small pinhole, ``λ`` is replaced by
    ``λ_ex λ_em / sqrt(λ_ex² + λ_em²)`` (``λ / √2`` when excitation ≈ emission).
    """
    _check_optics(na, wavelength_um, refractive_index)
    lam = float(wavelength_um)
    if confocal:
        lam_ex = lam if excitation_um is None else float(excitation_um)
        lam = lam_ex * lam / np.hypot(lam_ex, lam)
    return 0.66 * lam * refractive_index / na**2, 0.21 * lam / na


def psf_gaussian(
    shape: Sequence[int],
    *,
    voxel_size: Sequence[float],
    na: float,
    wavelength_um: float,
    refractive_index: float,
    confocal: bool = True,
    excitation_um: float | None = None,
) -> np.ndarray:
    """Gaussian approximation of a widefield or confocal PSF.

    Parameters
    ----------
    shape : (3,) or (2,) tuple of odd int
        PSF shape ``(Z, Y, X)`` or ``(Y, X)`` (2-D: the in-focus plane).
    voxel_size : sequence of float
        ``(dz, dy, dx)`` or ``(dy, dx)`` in µm.
    na : float
        Numerical aperture of the objective.
    wavelength_um : float
        Emission wavelength in µm.
    refractive_index : float
        Refractive index of the immersion medium.
    confocal : bool
        Confocal (small pinhole) instead of widefield widths.
    excitation_um : float, optional
        Excitation wavelength (µm) for the confocal; default: equal to the emission.

    Returns
    -------
    psf : ndarray of float32, shape ``shape``
        Centred, sums to 1. The widths are given by :func:`gaussian_sigmas` (Zhang et al.
        2007, paraxial): sampled at voxel centres.
    """
    shape, voxel = _check_geometry(shape, voxel_size)
    sigma_z, sigma_xy = gaussian_sigmas(
        na=na,
        wavelength_um=wavelength_um,
        refractive_index=refractive_index,
        confocal=confocal,
        excitation_um=excitation_um,
    )
    sigmas = ([sigma_z] if len(shape) == 3 else []) + [sigma_xy, sigma_xy]
    profiles = [
        np.exp(-0.5 * (c / s) ** 2) for c, s in zip(_axes_um(shape, voxel), sigmas, strict=True)
    ]
    psf = profiles[0]
    for p in profiles[1:]:
        psf = np.multiply.outer(psf, p)
    return _normalise(psf)


def _born_wolf_widefield(
    z_um: np.ndarray, r_um: np.ndarray, *, na: float, wavelength_um: float, n: float, n_rho: int
) -> np.ndarray:
    """Widefield intensity ``|2 ∫_0^1 J0(v ρ) exp(-i u ρ²/2) ρ dρ|²`` on the grid z × r.

    Optical coordinates ``v = k NA r`` and ``u = k NA² z / n`` with ``k = 2π/λ`` (paraxial
    scalar theory); Gauss-Legendre quadrature over the pupil radius ρ, vectorised as one
    matrix product ``(Z, ρ) @ (ρ, R)``.
    """
    k = 2.0 * np.pi / wavelength_um
    nodes, weights = np.polynomial.legendre.leggauss(n_rho)
    rho = 0.5 * (nodes + 1.0)
    w = 0.5 * weights
    u = k * na**2 * z_um / n
    v = k * na * r_um
    defocus = np.exp(-0.5j * np.outer(u, rho**2)) * (rho * w)  # (Z, ρ)
    bessel = special.j0(np.outer(rho, v))  # (ρ, R)
    amplitude = 2.0 * (defocus @ bessel)
    return amplitude.real**2 + amplitude.imag**2


def psf_born_wolf(
    shape: Sequence[int],
    *,
    voxel_size: Sequence[float],
    na: float,
    wavelength_um: float,
    refractive_index: float,
    confocal: bool = True,
    excitation_um: float | None = None,
    oversample: int = 1,
    n_rho: int | None = None,
) -> np.ndarray:
    """Scalar Born & Wolf PSF (paraxial) by numerical integration over the pupil.

    Parameters
    ----------
    shape : (3,) or (2,) tuple of odd int
        PSF shape ``(Z, Y, X)`` or ``(Y, X)`` (2-D: the in-focus plane).
    voxel_size : sequence of float
        ``(dz, dy, dx)`` or ``(dy, dx)`` in µm.
    na, wavelength_um, refractive_index : float
        Numerical aperture, emission wavelength (µm), immersion refractive index.
    confocal : bool
        Confocal with a small pinhole: the product of the excitation and emission widefield
        PSFs (the square of the widefield PSF when ``excitation_um`` is None).
    excitation_um : float, optional
        Excitation wavelength (µm) for the confocal; default: equal to the emission.
    oversample : int, odd
        Sub-samples per voxel and axis, averaged (voxel integration); 1 samples the centres.
    n_rho : int, optional
        Quadrature nodes over the pupil; default from the largest phase and Bessel argument.

    Returns
    -------
    psf : ndarray of float32, shape ``shape``
        Centred, sums to 1. In focus, the widefield lateral FWHM is ≈ 0.51 λ/NA (Airy) and
        the axial one ≈ 1.77 n λ / NA² (paraxial ``sinc²(u/4)``).
    """
    shape, voxel = _check_geometry(shape, voxel_size)
    _check_optics(na, wavelength_um, refractive_index)
    if oversample < 1 or oversample % 2 == 0:
        raise ValueError(f"oversample={oversample} must be a positive odd integer (1, 3, 5...)")
    coords = _axes_um(shape, voxel, oversample)
    z = coords[0] if len(shape) == 3 else np.zeros(1)
    y, x = coords[-2], coords[-1]
    r_xy = np.hypot(y[:, None], x[None, :])
    # radial samples 4x finer than the finest xy step, then linear interpolation to r_xy
    dr = min(voxel[-2:]) / oversample / 4.0
    r = np.arange(0.0, r_xy.max() + 2 * dr, dr)
    lams = [wavelength_um]
    if confocal and excitation_um is not None:
        lams.append(float(excitation_um))
    k_max = 2 * np.pi / min(lams)
    if n_rho is None:  # ~8 nodes per oscillation of the defocus phase and of J0
        cycles = (k_max * na**2 * np.abs(z).max() / refractive_index / 2 + k_max * na * r[-1]) / (
            2 * np.pi
        )
        n_rho = int(np.clip(8 * cycles + 32, 64, 1024))
    idx = np.minimum((r_xy / dr).astype(np.int64), r.size - 2)
    frac = r_xy / dr - idx
    psf = None
    for lam in lams:
        radial = _born_wolf_widefield(
            z, r, na=na, wavelength_um=lam, n=refractive_index, n_rho=n_rho
        )  # (Z, R)
        part = radial[:, idx] * (1 - frac) + radial[:, idx + 1] * frac  # (Z, Y, X)
        psf = part if psf is None else psf * part
    if confocal and excitation_um is None:
        psf = psf**2
    if len(shape) == 2:
        psf = psf[0]
    return _normalise(_block_mean(psf, oversample))


def psf_fwhm(psf: Any, voxel_size: Sequence[float]) -> tuple[float, ...]:
    """Full width at half maximum (µm) along each axis through the brightest voxel.

    Each profile is taken through the maximum; the half-maximum crossings are located by
    linear interpolation between voxels on both sides. An axis where the profile does not
    fall below half the maximum inside the array gives ``inf``.

    Parameters
    ----------
    psf : (M, N[, P]) ndarray
    voxel_size : sequence of float
        Size (µm) per axis.
    """
    p = np.asarray(Backend.of(psf).to_host(psf), dtype=np.float64)  # device->host (small)
    peak = np.unravel_index(int(np.argmax(p)), p.shape)
    half = p[peak] / 2.0
    out = []
    for axis, d in enumerate(voxel_size):
        index = list(peak)
        index[axis] = slice(None)
        prof = p[tuple(index)]
        c = peak[axis]
        right = np.nonzero(prof[c:] < half)[0]
        left = np.nonzero(prof[: c + 1][::-1] < half)[0]
        if right.size == 0 or left.size == 0:
            out.append(float("inf"))
            continue
        i1 = c + right[0]  # first voxel below half on the right
        x1 = i1 - 1 + (prof[i1 - 1] - half) / (prof[i1 - 1] - prof[i1])
        i0 = c - left[0]
        x0 = i0 + 1 - (prof[i0 + 1] - half) / (prof[i0 + 1] - prof[i0])
        out.append(float((x1 - x0) * d))
    return tuple(out)


def _robust_background(a: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation of ``a`` (host array)."""
    med = float(np.median(a))
    sigma = 1.4826 * float(np.median(np.abs(a - med)))
    return med, sigma


def find_beads(
    image: Any,
    *,
    voxel_size: Sequence[float],
    shape: Sequence[int],
    threshold_sigma: float = 10.0,
    threshold_rel: float = 0.2,
    smooth_sigma_px: float = 1.0,
) -> np.ndarray:
    """Sub-pixel positions (voxels) of isolated beads whose ``shape`` window fits the image.

    A bead is a local maximum of the lightly smoothed image (Gaussian, ``smooth_sigma_px``)
    within the ``shape`` window, brighter than ``background + max(threshold_sigma · noise,
    threshold_rel · (brightest - background))`` (background and noise: median and MAD of
    the image). It is kept when its ``shape`` window lies inside the image, it is the only
    maximum above half its own height inside that window (no neighbour bleeding into the
    average), and its peak is below the image's saturation value. The sub-pixel position
    is the centroid of the voxels above half the bead's height near its peak (the bead
    core), which is robust to the noise of single voxels.

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        Bead image, any real dtype, NumPy or CuPy.
    voxel_size : sequence of float
        ``(dz, dy, dx)`` or ``(dy, dx)`` in µm (used for the checks only).
    shape : tuple of odd int
        Window of the PSF to be extracted around each bead.
    threshold_sigma, threshold_rel : float
        Detection threshold in robust noise units and relative to the brightest bead.
    smooth_sigma_px : float
        Gaussian smoothing (voxels) before looking for maxima.

    Returns
    -------
    positions : (B, ndim) ndarray of float64 (host)
        Bead centres in voxel coordinates, brightest first.
    """
    b = Backend.of(image)
    xp, ndi = b.xp, b.ndi
    if image.ndim not in (2, 3):
        raise ValueError(f"bead image has shape {image.shape}: expected (Z, Y, X) or (Y, X)")
    shape, _ = _check_geometry(shape, voxel_size)
    if len(shape) != image.ndim:
        raise ValueError(f"PSF window {shape} and bead image {image.shape} differ in ndim")
    sat = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else np.inf
    img = xp.asarray(image, dtype=xp.float32)
    smooth = ndi.gaussian_filter(img, smooth_sigma_px)
    host_smooth = b.to_host(smooth)  # device->host: the bead list is built on the host
    bg, noise = _robust_background(host_smooth)
    top = float(host_smooth.max())
    thr = bg + max(threshold_sigma * noise, threshold_rel * (top - bg))
    is_max = smooth == ndi.maximum_filter(smooth, size=shape, mode="constant", cval=-np.inf)
    peaks = np.argwhere(b.to_host(is_max & (smooth > thr)))  # device->host (few points)
    peaks = peaks[np.argsort(-host_smooth[tuple(peaks.T)])]
    half = np.array(shape) // 2
    host_img = b.to_host(img)  # device->host
    beads = []
    taken: list[np.ndarray] = []
    for p in peaks:
        if any(np.all(np.abs(p - q) <= half) for q in taken):  # plateau duplicate
            continue
        taken.append(p)
        if np.any(p < half) or np.any(p + half >= np.array(image.shape)):
            continue
        window = tuple(slice(c - h, c + h + 1) for c, h in zip(p, half, strict=True))
        if host_img[tuple(p)] >= sat or host_img[window].max() >= sat:
            continue
        win = host_smooth[window]
        level = bg + 0.5 * (host_smooth[tuple(p)] - bg)
        local_max = win == _maximum3(win)
        if np.count_nonzero(local_max & (win > level)) > 1:
            continue  # another bright object shares the window
        beads.append(_half_max_centroid(host_smooth, p, bg, np.maximum(half // 3, 1)))
    return np.array(beads, dtype=np.float64).reshape(-1, image.ndim)


def _maximum3(a: np.ndarray) -> np.ndarray:
    return ndimage.maximum_filter(a, size=3, mode="nearest")


def _half_max_centroid(a: np.ndarray, p: np.ndarray, bg: float, half: np.ndarray) -> np.ndarray:
    """Centroid of the voxels above half the peak height within ``half`` of ``p``.

    Iterated twice, re-centring the box on the previous estimate: the centroid of the bead
    core, insensitive to the noise of single voxels and to faint asymmetric tails."""
    centre = p.astype(np.float64)
    for _ in range(2):
        c = np.rint(centre).astype(int)
        lo = np.maximum(c - half, 0)
        hi = np.minimum(c + half + 1, a.shape)
        box = a[tuple(slice(i, j) for i, j in zip(lo, hi, strict=True))] - bg
        w = np.where(box >= 0.5 * box.max(), box, 0.0)
        grids = np.indices(box.shape, dtype=np.float64)
        centre = lo + (grids * w).reshape(a.ndim, -1).sum(1) / w.sum()
    return centre


def psf_from_beads(
    image: Any,
    *,
    voxel_size: Sequence[float],
    shape: Sequence[int] | None = None,
    extent_um: Sequence[float] | None = None,
    threshold_sigma: float = 10.0,
    threshold_rel: float = 0.2,
    min_beads: int = 1,
) -> Any:
    """Empirical PSF: the registered average of the isolated beads of ``image``.

    Steps: beads are found by :func:`find_beads`; a window of ``shape`` around each is
    cut out, its background (median of the window's border voxels) subtracted, shifted by
    its sub-pixel offset with a Fourier shift so that the bead sits on the centre voxel,
    and summed (a brightness-weighted mean, the best SNR for shot noise). The sum's border
    median is subtracted again, negative voxels are set to 0 and the result normalised.

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        Image of sub-resolution beads, any real dtype, NumPy or CuPy.
    voxel_size : sequence of float
        ``(dz, dy, dx)`` or ``(dy, dx)`` in µm.
    shape : tuple of odd int, optional
        PSF shape. Default from ``extent_um``.
    extent_um : sequence of float, optional
        Full extent (µm) per axis when ``shape`` is not given; default 4 µm in z and
        1 µm in y and x (two to three FWHM of a high-NA confocal PSF on each side).
    threshold_sigma, threshold_rel : float
        Bead detection thresholds (see :func:`find_beads`).
    min_beads : int
        Fewer usable beads than this raises ``ValueError``.

    Returns
    -------
    psf : ndarray of float32, shape ``shape``
        Centred, non-negative, sums to 1; on the backend of ``image``.
    """
    b = Backend.of(image)
    xp = b.xp
    voxel = np.asarray(voxel_size, dtype=np.float64).ravel()
    if shape is None:
        if extent_um is None:
            extent_um = (4.0, 1.0, 1.0)[-image.ndim :]
        shape = tuple(int(round(e / d / 2)) * 2 + 1 for e, d in zip(extent_um, voxel, strict=True))
    shape, voxel = _check_geometry(shape, voxel)
    beads = find_beads(
        image,
        voxel_size=voxel,
        shape=shape,
        threshold_sigma=threshold_sigma,
        threshold_rel=threshold_rel,
    )
    if len(beads) < max(min_beads, 1):
        raise ValueError(
            f"found {len(beads)} isolated beads with a {shape} window inside the image "
            f"(need {max(min_beads, 1)}): lower threshold_sigma/threshold_rel, use a smaller "
            "shape, or image more beads"
        )
    img = xp.asarray(image, dtype=xp.float32)
    half = np.array(shape) // 2
    border = xp.ones(shape, dtype=bool)
    border[tuple(slice(1, -1) for _ in shape)] = False
    total = xp.zeros(shape, dtype=xp.float32)
    for pos in beads:
        c = np.rint(pos).astype(int)
        win = img[tuple(slice(i - h, i + h + 1) for i, h in zip(c, half, strict=True))]
        win = win - xp.median(win[border])
        shift = c - pos  # move the bead centre onto the centre voxel
        spectrum = b.fft.fftn(win)
        shifted = b.ndi.fourier_shift(spectrum, tuple(float(s) for s in shift))
        total += b.fft.ifftn(shifted).real.astype(xp.float32)
    total -= xp.median(total[border])
    xp.maximum(total, 0, out=total)
    s = total.sum(dtype=xp.float64)
    return (total / s).astype(xp.float32)
