"""Tubeness: a Sato-like line response from the closed-form Hessian eigenvalues, at the
scales of a blurred tube (step 1 of :mod:`hcsmito.stages.tnt`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import VoxelSize, as_float32, gaussian, spacing

__all__ = ["central_gradient", "tube_scales", "tubeness", "tubeness_at"]

#: Voxels per slab of the Hessian stage of :func:`tubeness` (CPU: cache-sized; GPU: large
#: enough that kernel launches do not dominate, ~1 GiB of temporaries).
_SLAB_VOXELS = 1 << 20
_SLAB_VOXELS_GPU = 1 << 24
#: Voxels per chunk of :func:`tubeness_at` on the CPU (~15 float32 temporaries and a few
#: int64 index arrays each: ~100 B per voxel, 25 MiB a chunk).
_AT_VOXELS = 1 << 18


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


def central_gradient(b: Backend, a: Any, axis: int) -> Any:
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
    grads = [central_gradient(b, smooth, i) for i in range(nd)]
    out = {}
    for i in range(nd):
        for j in range(i, nd):
            d = central_gradient(b, grads[i], j)
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
    img = as_float32(b, image)
    best = xp.zeros(img.shape, xp.float32)
    best_r = xp.zeros(img.shape, xp.float32)
    # the Hessian and its eigenvalues (~15 float32 temporaries per voxel) are computed in
    # slabs of rows (y), each with the 2 rows on either side that two central differences
    # read: the same numbers as on the whole image, in a bounded working set
    rows = img.shape[-2]
    plane = max(int(np.prod(img.shape)) // max(rows, 1), 1)
    step = max(1, (_SLAB_VOXELS_GPU if b.is_gpu else _SLAB_VOXELS) // plane)
    for r, sig_px in tube_scales(image.ndim, voxel_size, tube_radius_um, psf_sigma_um):
        smooth = gaussian(b, img, sig_px)
        for y0 in range(0, rows, step):
            y1 = min(y0 + step, rows)
            a0, a1 = max(y0 - 2, 0), min(y1 + 2, rows)
            resp = _line_response(
                b, smooth[..., a0:a1, :], sig_px, alpha, rows=slice(y0 - a0, y1 - a0)
            )
            out, out_r = best[..., y0:y1, :], best_r[..., y0:y1, :]
            # resp and best are finite and never -0: fmax is where(resp > best, ...); the
            # radius is where(resp > best, r, radius) without a branch per voxel (exact:
            # x * 1 + 0 and 0 + r * 1 round to nothing)
            gt = resp > out
            xp.multiply(out_r, ~gt, out=out_r)
            out_r += gt * np.float32(r)
            xp.fmax(out, resp, out=out)
        del smooth
    return best, best_r


def tube_scales(
    nd: int,
    voxel_size: VoxelSize,
    tube_radius_um: tuple[float, ...],
    psf_sigma_um: tuple[float, float] | None,
) -> list[tuple[float, tuple[float, ...]]]:
    """(tube radius µm, Gaussian sigma per axis in pixels) of each scale of
    :func:`tubeness`: the imaged cross-section of a solid tube, ``sqrt(psf² + r² / 4)``."""
    sp = spacing(voxel_size, nd)
    psf_z, psf_xy = (0.5, 0.15) if psf_sigma_um is None else psf_sigma_um
    psf = (psf_z, psf_xy, psf_xy)[3 - nd :]
    out = []
    for r in tube_radius_um:
        sig_um = [math.sqrt(ps * ps + r * r / 4) for ps in psf]
        out.append((r, tuple(s_um / s for s_um, s in zip(sig_um, sp, strict=True))))
    return out


def tubeness_at(
    image: Any,
    at: Any,
    *,
    voxel_size: VoxelSize,
    tube_radius_um: tuple[float, ...] = (0.1, 0.2, 0.35),
    psf_sigma_um: tuple[float, float] | None = None,
    alpha: float = 0.5,
    smooth: Any = None,
) -> tuple[Any, Any]:
    """:func:`tubeness` at some voxels only: the same numbers, read at ``at``.

    The Gaussian of each scale is computed on the box of ``at`` grown by the kernel's
    radius and the 2 voxels the differences read (clipped to the image; a separable
    Gaussian is the whole image's wherever its kernel stays within the box or meets the
    image's own edge), and the Hessian at each voxel from the smoothed values around it,
    with the operations of :func:`numpy.gradient` taken twice (central differences,
    one-sided at the image's edges) in the same order: bit-identical to the whole image's
    response and radius there, at a cost that grows with the number of voxels.

    Parameters
    ----------
    image : (M, N) or (P, M, N) ndarray
    at : (K,) int ndarray
        Flat (C-order) indices into ``image``.
    smooth : sequence of (ndarray or None), optional
        The whole image's Gaussian of each scale, where the caller has it (that scale's
        box is not smoothed again).

    Returns
    -------
    response, radius : (K,) float32 ndarrays
    """
    b = Backend.of(image)
    xp = b.xp
    nd = image.ndim
    shape = tuple(int(n) for n in image.shape)
    at = b.asarray(at)
    best = xp.zeros(at.shape, xp.float32)
    best_r = xp.zeros(at.shape, xp.float32)
    if int(at.size) == 0:
        return best, best_r
    if smooth is None or any(sm is None for sm in smooth):  # a box to smooth: its corners
        coords = xp.unravel_index(at, shape)
        lo = [int(b.to_host(c.min())) for c in coords]  # device->host: one value per axis
        hi = [int(b.to_host(c.max())) + 1 for c in coords]  # device->host: one value per axis
        del coords
    step = _SLAB_VOXELS_GPU if b.is_gpu else _AT_VOXELS
    for k, (r, sig_px) in enumerate(tube_scales(nd, voxel_size, tube_radius_um, psf_sigma_um)):
        if smooth is not None and smooth[k] is not None:
            s, origin = smooth[k], (0,) * nd
        else:
            # scipy's and cupyx's kernel radius: int(truncate * sigma + 0.5), truncate 3
            m = [int(3.0 * float(sg) + 0.5) + 2 for sg in sig_px]
            box = tuple(slice(max(a - g, 0), min(z + g, n))
                        for a, z, g, n in zip(lo, hi, m, shape, strict=True))  # fmt: skip
            s = gaussian(b, image[box], sig_px)  # one float32 copy of the box, in gaussian
            origin = tuple(sl.start for sl in box)
        # in chunks of voxels: the Hessian and its eigenvalues take ~15 temporaries each
        for c0 in range(0, int(at.size), step):
            part = slice(c0, c0 + step)
            cs = xp.unravel_index(at[part], shape)  # a chunk's coordinates at a time
            # voxels 2 or more from every edge: the differences are central, the offsets
            # into s the same for all (gathered directly); the others clamp per voxel
            inner = _interior(b, cs, shape)
            resp = xp.empty(cs[0].shape, xp.float32)
            sel = xp.flatnonzero(inner)
            if int(sel.size):
                c_in = tuple(c[sel] for c in cs)
                h = _hessian_inner(b, s, origin, c_in, sig_px)
                resp[sel] = _response(b, h, nd, alpha)
            sel = xp.flatnonzero(~inner)
            if int(sel.size):
                c_ed = tuple(c[sel] for c in cs)
                h = _hessian_at(b, s, origin, shape, c_ed, sig_px)
                resp[sel] = _response(b, h, nd, alpha)
            del h
            out, out_r = best[part], best_r[part]
            gt = resp > out  # as in tubeness: resp and best are finite and never -0
            xp.multiply(out_r, ~gt, out=out_r)
            out_r += gt * np.float32(r)
            xp.fmax(out, resp, out=out)
        del s
    return best, best_r


def _interior(b: Backend, coords: tuple[Any, ...], shape: tuple[int, ...]) -> Any:
    """Whether each voxel is at least 2 from every edge of an image of ``shape``."""
    xp = b.xp
    ok = xp.ones(coords[0].shape, bool)
    for c, n in zip(coords, shape, strict=True):
        ok &= (c >= 2) & (c <= n - 3)
    return ok


def _hessian_inner(
    b: Backend,
    s: Any,
    origin: tuple[int, ...],
    coords: tuple[Any, ...],
    scale_px: tuple[float, ...],
) -> dict[tuple[int, int], Any]:
    """:func:`_hessian_at` for voxels at least 2 from every edge of the image: central
    differences of central differences, ``((a[+1] - a[-1]) * 0.5`` twice), the same float32
    operations as :func:`central_gradient`'s inside."""
    xp = b.xp
    nd = s.ndim
    flat = s.reshape(-1)
    strides = [int(np.prod(s.shape[a + 1 :])) for a in range(nd)]
    reach = 2 * max(strides)  # the largest offset read: base - reach >= 0 inside
    base = sum((c - o) * st for c, o, st in zip(coords, origin, strides, strict=True))
    base -= reach
    half = np.float32(0.5)

    centre = None

    def at(off: int) -> Any:
        return xp.take(flat[reach + off :], base)

    def at_centre() -> Any:  # read by every diagonal entry twice: gathered once
        nonlocal centre
        if centre is None:
            centre = at(0)
        return centre

    def sub(a: Any, off: int) -> Any:
        """a -= s at the voxels moved by ``off`` (the same subtraction)."""
        a -= at_centre() if off == 0 else at(off)
        return a

    out = {}
    for i in range(nd):
        for j in range(i, nd):
            si, sj = strides[i], strides[j]
            # g_i at v + e_j and v - e_j, then their central difference along j
            up = at(sj + si)
            sub(up, sj - si)
            up *= half
            dn = at_centre().copy() if si == sj else at(-sj + si)
            sub(dn, -sj - si)
            dn *= half
            up -= dn
            up *= half
            up *= np.float32(scale_px[i] * scale_px[j])
            out[i, j] = up
    return out


def _hessian_at(
    b: Backend,
    s: Any,
    origin: tuple[int, ...],
    shape: tuple[int, ...],
    coords: tuple[Any, ...],
    scale_px: tuple[float, ...],
) -> dict[tuple[int, int], Any]:
    """:func:`_hessian` of the whole smoothed image, read at the voxels ``coords``.

    ``s`` is the smoothed image or a box of it starting at ``origin`` (holding every voxel
    within 2 of ``coords``) of an image of ``shape``. Each entry is ``central_gradient`` of
    ``central_gradient`` at the voxel: ``(a[i + 1] - a[i - 1]) / 2`` inside, ``a[1] - a[0]`` and
    ``a[n - 1] - a[n - 2]`` at the edges (``x * 0.5`` is ``x / 2`` exactly), then times
    the scales: the same float32 operations on the same values.
    """
    xp = b.xp
    nd = len(shape)
    flat = s.reshape(-1)
    strides = [int(np.prod(s.shape[a + 1 :])) for a in range(nd)]
    # the voxels' offsets into s
    base = sum((c - o) * st for c, o, st in zip(coords, origin, strides, strict=True))
    half, one = np.float32(0.5), np.float32(1)

    def step(c: Any, n: int) -> tuple[Any, Any, Any]:
        """Index below, above and the factor of the central difference at index c."""
        up = xp.minimum(c + 1, n - 1)
        dn = xp.maximum(c - 1, 0)
        f = xp.where((c > 0) & (c < n - 1), half, one)
        return dn, up, f

    def grad(i: int, off: Any, ci: Any) -> Any:
        """d/d axis i of s at the voxels moved by ``off`` (flat), whose index along i is
        ``ci``."""
        dn, up, f = step(ci, shape[i])
        g = xp.take(flat, off + (up - ci) * strides[i])
        g -= xp.take(flat, off + (dn - ci) * strides[i])
        g *= f
        return g

    out = {}
    for i in range(nd):
        for j in range(i, nd):
            if shape[i] < 2 or shape[j] < 2:  # central_gradient is 0 along a single voxel
                out[i, j] = xp.zeros(coords[0].shape, xp.float32)
                continue
            cj = coords[j]
            dn, up, f = step(cj, shape[j])
            if i == j:
                d = grad(i, base + (up - cj) * strides[j], up)
                d -= grad(i, base + (dn - cj) * strides[j], dn)
            else:
                d = grad(i, base + (up - cj) * strides[j], coords[i])
                d -= grad(i, base + (dn - cj) * strides[j], coords[i])
            d *= f
            d *= np.float32(scale_px[i] * scale_px[j])
            out[i, j] = d
    return out


def _line_response(
    b: Backend, smooth: Any, sig_px: tuple[float, ...], alpha: float, rows: slice
) -> Any:
    """Normalised bright-line response of one scale from the smoothed image, on its
    ``rows`` (y; the rows around them feed the central differences only)."""
    h = _hessian(b, smooth, sig_px)
    h = {k: v[..., rows, :] for k, v in h.items()}
    return _response(b, h, smooth.ndim, alpha)


def _response(b: Backend, h: dict[tuple[int, int], Any], nd: int, alpha: float) -> Any:
    """The line response from the Hessian entries ``h`` (arrays of any one shape)."""
    xp = b.xp
    if nd == 3:
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
    # resp = lam exp(-((e_hi / lam) / width)² / 2) where lam > 0, else 0, with width alpha
    # where e_hi <= 0, else 4 alpha. Selections by arithmetic instead of where (a branch
    # per voxel; exact: the factors are 0 or 1 and the sums add 0): width is
    # alpha [e_hi <= 0] + 4 alpha [not e_hi <= 0], the divisor lam where a tube else 1,
    # and the response is multiplied by tube (then + 0: no -0)
    flat = e_hi <= 0
    width = flat * np.float32(alpha)
    width += ~flat * np.float32(4 * alpha)
    den = lam * tube
    den += ~tube
    ratio = xp.divide(e_hi, den, out=den)
    ratio /= width
    xp.square(ratio, out=ratio)
    ratio *= -0.5
    resp = xp.exp(ratio, out=ratio)
    resp *= lam
    resp *= tube
    resp += np.float32(0)
    return resp


# -- cropped distance transforms ----------------------------------------------------------
#
# The exact feature transform (scipy's and cuCIM's ``distance_transform_edt``) of a crop that
# holds *every* feature voxel is the full one, shifted, on the crop: lines outside the
# features' bounding box carry no candidate features, and the arithmetic only uses
# coordinate differences. The stages below crop to such boxes and take distances only
# where they are read.
