"""The tube pieces of a field: hysteresis on the tubeness in free space (steps 1-2 of
:mod:`hcsmito.stages.tnt`), with the tubeness computed only where it is read."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import bincount, gaussian, robust_sigma
from hcsmito.stages.tnt.hessian import central_gradient, tube_scales, tubeness, tubeness_at

__all__ = ["TubePieces", "tube_pieces"]

#: Fewest voxels in the threshold's sample (a field under twice this is sampled whole).
_MIN_SAMPLE = 1 << 19


@dataclass(frozen=True)
class TubePieces:
    """Connected pieces of tube in free space (see :func:`tube_pieces`).

    Attributes
    ----------
    comp : int ndarray
        Piece ids, 0 elsewhere: ``1..n`` in the order of each piece's first voxel (flat
        order), uint16 (int32 beyond 65535 pieces); the whole-field reference
        (``sample_stride`` None) keeps ``ndimage.label``'s int32 ids, not all used.
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
    # the Gaussian of every scale, kept while the pieces grow (4 B/voxel each, each made
    # in its own volume from the channel: the same numbers as from a float32 copy); the
    # candidates from the first before the others are made (fewer volumes at once)
    smooth = [gaussian(b, actin, scales[0][1])]
    sample = xp.arange(stride // 2, size, stride)
    cand = _candidates(b, smooth[0], scales[0][1], free, candidate_k, sample)
    smooth += [gaussian(b, actin, sig_px) for _, sig_px in scales[1:]]
    flat = cand.reshape(-1)
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
        # the pieces over the voxels computed only (sparse: the low voxels are few)
        at, ids = _sparse_hysteresis(b, shape, done[resp > thr_lo], done[resp > thr_hi], free)
        new = _sparse_frontier(b, shape, at, computed, free)
        if new is None:
            break
        r_new, rad_new = tubeness_at(actin, new, smooth=smooth, **kw)
        computed.reshape(-1)[new] = True
        done = xp.concatenate([done, new])
        resp = xp.concatenate([resp, r_new])
        radius = xp.concatenate([radius, rad_new])
    del smooth, computed, resp
    n_comp = int(b.to_host(ids.max())) if int(ids.size) else 0  # device->host: one value
    comp = xp.zeros(shape, xp.uint16 if n_comp <= np.iinfo(np.uint16).max else xp.int32)
    comp.reshape(-1)[at] = ids
    order = xp.argsort(done)
    return TubePieces(comp, n_comp, float(thr_lo), float(thr_hi), int(done.size),
                      radius[order], done[order])  # fmt: skip


#: Voxels per slab of the candidates' Laplacian (rows of y, as :func:`tubeness`'s slabs).
_SLAB_VOXELS = 1 << 20


def _offsets(nd: int, half: bool) -> list[tuple[int, ...]]:
    """The 26- (8-) neighbour steps; with ``half`` the later one of each opposite pair."""
    steps = [tuple(v - 1 for v in d) for d in np.ndindex(*(3,) * nd)]
    steps = [d for d in steps if any(d)]
    return steps[len(steps) // 2 :] if half else steps


def _moved(xp: Any, shape: tuple[int, ...], idx: Any, step: tuple[int, ...]) -> tuple[Any, Any]:
    """Flat indices ``idx`` moved by ``step`` (voxels per axis), and which of them stay
    inside the array."""
    strides = [int(np.prod(shape[a + 1 :])) for a in range(len(shape))]
    ok = xp.ones(idx.shape, bool)
    off = 0
    for d, n, st in zip(step, shape, strides, strict=True):
        if d == 0:
            continue
        c = (idx // st) % n
        ok &= (c >= -d) if d < 0 else (c <= n - 1 - d)
        off += d * st
    return idx + off, ok


def _sparse_hysteresis(
    b: Backend, shape: tuple[int, ...], low: Any, high: Any, free: Any
) -> tuple[Any, Any]:
    """:func:`_hysteresis` over the voxels ``low`` (flat indices) alone, without a volume:
    the sorted flat indices of the free voxels of ``low`` in a 26-connected piece that
    holds one of ``high`` (``high`` within ``low``), and their piece ids, 1..n in the
    order of each piece's first voxel in flat order (as ``ndimage.label`` numbers them,
    the pieces without a core left out)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lo_h = np.sort(b.to_host(low))  # device->host: the low voxels (the graph is scipy's)
    lo_h = lo_h[b.to_host(free.reshape(-1)[b.asarray(lo_h)])]  # device->host: one bool each
    n = int(lo_h.size)
    if n == 0:
        return b.asarray(lo_h), b.xp.zeros(0, b.xp.int32)
    rows, cols = [], []
    for step in _offsets(len(shape), half=True):
        nb, ok = _moved(np, shape, lo_h, step)
        pos = np.searchsorted(lo_h, nb)
        pos[pos >= n] = 0
        hit = ok & (lo_h[pos] == nb)
        rows.append(np.flatnonzero(hit))
        cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(n, n))
    n_lab, lab = connected_components(graph, directed=False)
    # lo_h is sorted: a piece's first voxel is its first entry
    _, first = np.unique(lab, return_index=True)
    rank = np.empty(n_lab, np.int64)
    rank[np.argsort(first)] = np.arange(n_lab)
    lab = rank[lab]
    core = np.zeros(n_lab, bool)
    core[lab[_members(lo_h, np.sort(b.to_host(high)))]] = True  # device->host: high voxels
    keep = core[lab]
    new_id = np.cumsum(core, dtype=np.int64)  # the kept pieces 1..m in the same order
    return b.asarray(lo_h[keep]), b.asarray(new_id[lab[keep]].astype(np.int32))


def _members(sorted_a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions in ``sorted_a`` of those ``values`` that it holds."""
    if sorted_a.size == 0:
        return np.zeros(0, np.int64)
    pos = np.searchsorted(sorted_a, values)
    pos[pos >= sorted_a.size] = 0
    return pos[sorted_a[pos] == values]


def _sparse_frontier(
    b: Backend, shape: tuple[int, ...], at: Any, computed: Any, free: Any, grow: int = 4
) -> Any:
    """Flat indices (sorted) of the free voxels not computed within ``grow`` voxels (a
    cube, clipped at the edges) of one that is next to a voxel of ``at`` (flat indices),
    free and not computed; None when there is none next to ``at``. The voxels are marked
    in a scratch volume (the neighbours of the few voxels of ``at``, not the whole field's
    shifted copies)."""
    xp = b.xp
    nd = len(shape)
    mark = xp.zeros(int(np.prod(shape)), bool)
    comp_f, free_f = computed.reshape(-1), free.reshape(-1)
    for step in _offsets(nd, half=False):
        nb, ok = _moved(xp, shape, at, step)
        mark[nb[ok]] = True
    mark &= free_f
    mark &= ~comp_f
    reach = xp.flatnonzero(mark)
    if int(reach.size) == 0:
        return None
    for ax in range(nd):  # the cube, one axis after the other
        for d in range(-grow, grow + 1):
            if d:
                nb, ok = _moved(xp, shape, reach, tuple(d if a == ax else 0 for a in range(nd)))
                mark[nb[ok]] = True
        reach = xp.flatnonzero(mark)
    mark &= free_f
    mark &= ~comp_f
    return xp.flatnonzero(mark)


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
    b: Backend, s: Any, sig_px: tuple[float, ...], free: Any, k: float, sample: Any
) -> Any:
    """Free voxels where the scale-normalised negative trace of the Hessian of the
    smoothed ``s`` (the entries :func:`tubeness` computes, so the stack's edges behave
    alike) exceeds its median by ``k`` robust sigmas (both from the voxels ``sample``,
    flat indices). The trace in slabs of rows, each with the 2 rows on either side that
    two central differences read (the same numbers as over the whole image)."""
    xp = b.xp
    rows = s.shape[-2] if s.ndim > 1 else 1
    lap = xp.empty(s.shape, xp.float32)
    plane = max(int(np.prod(s.shape)) // max(rows, 1), 1)
    step = max(1, _SLAB_VOXELS // plane)
    for y0 in range(0, rows, step):
        y1 = min(y0 + step, rows)
        a0, a1 = max(y0 - 2, 0), min(y1 + 2, rows)
        part = s[..., a0:a1, :] if s.ndim > 1 else s
        acc = None
        for ax, sg in enumerate(sig_px):
            d = central_gradient(b, central_gradient(b, part, ax), ax)
            d *= np.float32(-(float(sg) ** 2))
            if acc is None:
                acc = d
            else:
                acc += d
        if s.ndim > 1:
            lap[..., y0:y1, :] = acc[..., y0 - a0 : y1 - a0, :]
        else:
            lap[...] = acc
        del acc
    vals = lap.reshape(-1)[sample]
    med = float(b.to_host(xp.median(vals)))  # device->host: one value
    sig = robust_sigma(b, vals)
    del vals
    cand = lap > med + k * sig
    del lap
    cand &= free
    return cand
