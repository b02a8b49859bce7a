"""The tube pieces of a field: hysteresis on the tubeness in free space (steps 1-2 of
:mod:`hcsmito.stages.tnt`), with the tubeness computed only where it is read."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import as_float32, bincount, gaussian, robust_sigma
from hcsmito.stages.tnt.hessian import central_gradient, tube_scales, tubeness, tubeness_at

__all__ = ["TubePieces", "tube_pieces"]

#: Fewest voxels in the threshold's sample (a field under twice this is sampled whole).
_MIN_SAMPLE = 1 << 19


@dataclass(frozen=True)
class TubePieces:
    """Connected pieces of tube in free space (see :func:`tube_pieces`).

    Attributes
    ----------
    comp : int32 ndarray
        Piece ids (``1..n``, not all used), 0 elsewhere.
    n : int
        Largest id.
    threshold_low, threshold_high : float
        The hysteresis pair in tubeness units.
    n_computed : int
        Voxels whose tubeness was computed.
    radius : float32 ndarray
        Tube radius (µm) of the best-responding scale: a volume, or the values at the
        sorted flat indices ``computed`` (read them with :meth:`radius_at`).
    computed : int ndarray or None
    """

    comp: Any
    n: int
    threshold_low: float
    threshold_high: float
    n_computed: int
    radius: Any
    computed: Any = None

    def radius_at(self, idx: tuple[Any, ...]) -> Any:
        """The radius at the voxels ``idx`` (index arrays; computed voxels only)."""
        if self.computed is None:
            return self.radius[idx]
        b = Backend.of(self.comp)
        lin = b.xp.ravel_multi_index(idx, self.comp.shape)
        return self.radius[b.xp.searchsorted(self.computed, lin)]


def tube_pieces(
    actin: Any,
    free: Any,
    *,
    voxel_size: tuple[float, ...],
    tube_radius_um: tuple[float, ...],
    psf_sigma_um: tuple[float, float] | None,
    threshold_k: float,
    threshold_low_k: float,
    sample_stride: int | None = 32,
    candidate_k: float = 2.0,
    thresholds: tuple[float, float] | None = None,
) -> TubePieces | None:
    """Pieces of ``(tubeness > low) & free`` that hold a voxel above ``high``.

    The thresholds are ``median + k · MAD-sigma`` of the positive tubeness of the field
    (``threshold_low_k``, ``threshold_k``). With ``sample_stride`` None the tubeness is
    computed over the whole image and the median over all its positive voxels (the
    reference). Otherwise:

    1. **Threshold from a sample.** The median and noise come from every
       ``sample_stride``-th voxel in flat order (a stride prime to the row length, so
       that successive rows sample other columns: a lattice spread over the whole
       field), but from at least ``_MIN_SAMPLE`` voxels (a smaller stride; the whole
       field under twice that). The sample's threshold is within a few tenths of a
       percent of the whole field's on 40 × 512² (benchmarks/RESULTS.md).
    2. **Tubeness where a tube can be.** Free voxels where the negative trace of the first
       scale's Hessian (scale-normalised: the sum of a bright line's cross-section
       curvatures, zero on any flat background, so vignetting does not move it) exceeds
       its median by ``candidate_k`` of its robust sigmas. The pieces of tubes hold
       voxels far above that; what it misses are specks of a few voxels with a core.
    3. **Closed pieces.** The pieces with a core are grown until none touches a voxel
       whose tubeness was not computed: each time, the free voxels within a few voxels of
       where one does are computed too (the three smoothed images are kept meanwhile,
       4 B per voxel each). The pieces found are then exactly the whole image's (the
       tubeness where computed is :func:`tubeness`'s, bit for bit, see
       :func:`tubeness_at`); what can differ is the threshold (the sample) and a core
       outside every candidate.

    ``thresholds`` = (low, high) skips the estimate (tests compare the pieces with the
    reference's at the reference's thresholds). Returns None when no threshold can be set
    (fewer than 16 positive responses, no noise).
    """
    b = Backend.of(actin)
    xp = b.xp
    nd = actin.ndim
    shape = tuple(int(n) for n in actin.shape)
    size = int(np.prod(shape))
    kw = {"voxel_size": voxel_size, "tube_radius_um": tube_radius_um,
          "psf_sigma_um": psf_sigma_um}  # fmt: skip
    if sample_stride is None:
        resp, radius = tubeness(actin, **kw)
        if thresholds is None:
            thresholds = _thresholds(b, resp[resp > 0], threshold_k, threshold_low_k)
        if thresholds is None:
            return None
        comp, n_comp = _hysteresis(b, resp > thresholds[0], resp > thresholds[1], free)
        return TubePieces(comp, n_comp, *map(float, thresholds), size, radius)
    scales = tube_scales(nd, voxel_size, tube_radius_um, psf_sigma_um)
    stride = max(1, min(sample_stride, size // _MIN_SAMPLE))
    while math.gcd(stride, shape[-1]) != 1:  # successive rows sample other columns
        stride += 1
    img = as_float32(b, actin)
    # the Gaussian of every scale, kept while the pieces grow (4 B/voxel each); the
    # candidates from the first before the others are made (fewer volumes at once)
    smooth = [gaussian(b, img, scales[0][1])]
    cand = _candidates(b, smooth[0], scales[0][1], free, candidate_k, stride)
    smooth += [gaussian(b, img, sig_px) for _, sig_px in scales[1:]]
    del img
    flat = cand.reshape(-1)
    sample = xp.arange(stride // 2, size, stride)
    flat[sample] = True
    done = xp.flatnonzero(flat)  # computed voxels, flat; their response and radius
    del cand, flat
    resp, radius = tubeness_at(actin, done, smooth=smooth, **kw)
    if thresholds is None:
        s_vals = resp[xp.searchsorted(done, sample)]
        thresholds = _thresholds(b, s_vals[s_vals > 0], threshold_k, threshold_low_k)
        del s_vals
    del sample
    if thresholds is None:
        return None
    thr_lo, thr_hi = thresholds
    computed = xp.zeros(shape, bool)
    computed.reshape(-1)[done] = True
    while True:
        comp, n_comp = _hysteresis(
            b, _scatter(b, shape, done[resp > thr_lo]), _scatter(b, shape, done[resp > thr_hi]),
            free,
        )  # fmt: skip
        new = _frontier(b, comp > 0, computed, free)
        if new is None:
            break
        r_new, rad_new = tubeness_at(actin, new, smooth=smooth, **kw)
        computed.reshape(-1)[new] = True
        done = xp.concatenate([done, new])
        resp = xp.concatenate([resp, r_new])
        radius = xp.concatenate([radius, rad_new])
    del smooth, computed
    order = xp.argsort(done)
    return TubePieces(comp, n_comp, float(thr_lo), float(thr_hi), int(done.size),
                      radius[order], done[order])  # fmt: skip


def _scatter(b: Backend, shape: tuple[int, ...], idx: Any) -> Any:
    """A bool volume, True at the flat indices ``idx``."""
    out = b.xp.zeros(shape, bool)
    out.reshape(-1)[idx] = True
    return out


def _hysteresis(b: Backend, low: Any, high: Any, free: Any) -> tuple[Any, int]:
    """Pieces (26-connected) of ``low & free`` with a voxel of ``high``; ids, largest id."""
    xp = b.xp
    low &= free
    comp, n_comp = b.ndi.label(low, structure=xp.ones((3,) * low.ndim, dtype=bool))
    high &= low
    core = bincount(b, comp[high].reshape(-1), n_comp + 1) > 0
    core[0] = False
    del low, high
    comp[~core[comp]] = 0  # pieces without a core voxel go
    return comp, int(n_comp)


def _thresholds(
    b: Backend, pos: Any, threshold_k: float, threshold_low_k: float
) -> tuple[float, float] | None:
    """(low, high) = median + k · robust sigma of the positive responses ``pos``."""
    if int(pos.size) < 16:
        return None
    med = float(b.to_host(b.xp.median(pos)))  # device->host: one value
    noise = robust_sigma(b, pos)
    if not noise > 0:
        return None
    return med + threshold_low_k * noise, med + threshold_k * noise


def _candidates(
    b: Backend, s: Any, sig_px: tuple[float, ...], free: Any, k: float, stride: int
) -> Any:
    """Free voxels where the scale-normalised negative trace of the
    Hessian of the smoothed ``s`` (the entries :func:`tubeness` computes, so the stack's
    edges behave alike) exceeds its median by ``k`` robust sigmas (both from every
    ``stride``-th voxel)."""
    xp = b.xp
    lap = xp.zeros(s.shape, xp.float32)
    for ax, sg in enumerate(sig_px):
        d = central_gradient(b, central_gradient(b, s, ax), ax)
        d *= np.float32(-(float(sg) ** 2))
        lap += d
        del d
    sample = lap.reshape(-1)[stride // 2 :: stride]
    med = float(b.to_host(xp.median(sample)))  # device->host: one value
    sig = robust_sigma(b, sample)
    cand = lap > med + k * sig
    del lap
    cand &= free
    return cand


def _frontier(b: Backend, mask: Any, computed: Any, free: Any, grow: int = 4) -> Any:
    """Flat indices (sorted) of the free voxels not computed within ``grow`` voxels of one
    next to ``mask`` (None when no voxel of ``mask`` touches a free one not computed)."""
    xp = b.xp
    touch = _dilate(mask, 1)
    touch &= ~computed
    touch &= free
    if not bool(touch.any()):
        return None
    reach = _dilate(touch, grow)
    reach &= ~computed
    reach &= free
    return xp.flatnonzero(reach.reshape(-1))


def _dilate(mask: Any, r: int) -> Any:
    """``mask`` grown by ``r`` voxels along every axis at once (a cube: shifted ORs, one
    axis after the other)."""
    out = mask.copy()
    for ax in range(mask.ndim):
        n = mask.shape[ax]
        src = out.copy()
        for d in range(1, min(r, n - 1) + 1):
            lo = (slice(None),) * ax + (slice(0, n - d),)
            hi = (slice(None),) * ax + (slice(d, n),)
            out[hi] |= src[lo]
            out[lo] |= src[hi]
    return out
