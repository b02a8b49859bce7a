"""The per-label moments that every morphometry column is derived from.

:class:`Moments` is what both the CPU scan (:mod:`hcsmito.measure._scan`) and the fused GPU
kernels (:mod:`hcsmito.measure._kernels`) fill and what
:mod:`hcsmito.measure.morphometry` turns into columns. :func:`moments_reference` is their
plain per-voxel ``xp`` twin (``bincount`` / ``ufunc.at``), which the tests compare both to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hcsmito.backend import Backend

__all__ = [
    "Moments",
    "empty_moments",
    "moments_reference",
    "moments_to_host",
    "pairs",
    "parent_mode",
    "parent_overlaps",
]


@dataclass
class Moments:
    """Per-label sums from which every column is derived (NumPy, or CuPy on the GPU path).

    ``s1[:, a]`` = Σ coord_a, ``s2[:, k]`` = Σ coord_a·coord_b for the pairs ``a <= b`` in
    ``pairs(ndim)`` order; coordinates are voxel indices, sums exact integers.
    """

    labels: np.ndarray  # (L,) label values, ascending
    n: np.ndarray  # (L,) int64 voxel counts
    s1: np.ndarray  # (L, ndim) int64
    s2: np.ndarray  # (L, npairs) int64
    cmin: np.ndarray  # (L, ndim) int64
    cmax: np.ndarray  # (L, ndim) int64
    sw: np.ndarray  # (L, C) float64 Σw
    sww: np.ndarray  # (L, C) float64 Σw²
    wmin: np.ndarray  # (L, C) float64
    wmax: np.ndarray  # (L, C) float64
    swc: np.ndarray  # (L, C, ndim) float64 Σw·coord_a
    projected: np.ndarray | None  # (L,) int64 pixels of the z-projection (3-D only)
    parents: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # name -> (parent label value (0 = none), voxels of the object inside that parent)


def moments_to_host(m: Moments) -> Moments:
    """The same moments as NumPy arrays (device->host where they live on a GPU)."""

    def h(a):  # device->host: per-label sums
        return None if a is None else (a.get() if hasattr(a, "get") else np.asarray(a))

    return Moments(
        *(h(getattr(m, f)) for f in Moments.__dataclass_fields__ if f != "parents"),
        parents=m.parents,
    )


def pairs(ndim: int) -> list[tuple[int, int]]:
    """The axis pairs ``a <= b`` of the second moments, in the order of ``Moments.s2``."""
    return [(a, b) for a in range(ndim) for b in range(a, ndim)]


def parent_mode(d, p, w, n_labels):
    """Per object, the non-zero parent with the largest overlap (ties: smallest id).

    ``d`` dense object index, ``p`` parent value (non-zero), ``w`` overlap weight; NumPy.
    Returns (parent value per object, 0 where none; overlap in voxels).
    """
    best = np.zeros(n_labels, dtype=np.int64)
    overlap = np.zeros(n_labels, dtype=np.int64)
    if d.size == 0:
        return best, overlap
    order = np.lexsort((p, d))
    d, p, w = d[order], p[order], w[order]
    new = np.ones(d.size, dtype=bool)
    new[1:] = (d[1:] != d[:-1]) | (p[1:] != p[:-1])
    starts = np.flatnonzero(new)
    gd, gp = d[starts], p[starts]
    gw = np.add.reduceat(w, starts)
    # largest overlap first, then smallest parent id: the first row of each object wins
    order = np.lexsort((gp, -gw, gd))
    gd, gp, gw = gd[order], gp[order], gw[order]
    first = np.ones(gd.size, dtype=bool)
    first[1:] = gd[1:] != gd[:-1]
    best[gd[first]] = gp[first]
    overlap[gd[first]] = gw[first]
    return best, overlap


def empty_moments(dtype, ndim, C, parent_names, xp=np) -> Moments:
    """Moments of an image without labels: zero rows, every field of the right width."""
    z = xp.zeros
    return Moments(
        labels=z(0, dtype),
        n=z(0, np.int64),
        s1=z((0, ndim), np.int64),
        s2=z((0, len(pairs(ndim))), np.int64),
        cmin=z((0, ndim), np.int64),
        cmax=z((0, ndim), np.int64),
        sw=z((0, C)),
        sww=z((0, C)),
        wmin=z((0, C)),
        wmax=z((0, C)),
        swc=z((0, C, ndim)),
        projected=z(0, np.int64) if ndim == 3 else None,
        parents={k: (np.zeros(0, np.int64), np.zeros(0, np.int64)) for k in parent_names},
    )


def parent_overlaps(b: Backend, labels, parent, uniq, n_labels: int):
    """(parent id, overlap in voxels) per object, from the voxels in both images (any xp).

    ``uniq`` are the object label values (ascending, on ``b``'s device).
    """
    xp = b.xp
    flat = labels.reshape(-1)
    pflat = parent.reshape(-1)
    both = (flat != 0) & (pflat != 0)
    lv = flat[both]
    pv = pflat[both].astype(xp.int64)
    if lv.size == 0:
        return parent_mode(*(np.zeros(0, np.int64),) * 3, n_labels)
    span = int(pv.max()) + 1  # device->host: one scalar
    d = xp.searchsorted(uniq, lv).astype(xp.int64)
    key, cnt = xp.unique(d * span + pv, return_counts=True)
    h = b.to_host  # device->host: (object, parent) pairs, few
    key = h(key)
    return parent_mode(key // span, key % span, h(cnt).astype(np.int64), n_labels)


# --------------------------------------------------------------------------------------------
# the plain per-voxel twin (any xp): the reference for the CPU runs and the GPU kernel
# --------------------------------------------------------------------------------------------


def moments_reference(labels, channels, parents, b: Backend) -> Moments:
    """Per-voxel ``bincount`` / ``ufunc.at`` version on ``b.xp`` (NumPy or CuPy)."""
    xp = b.xp
    ndim = labels.ndim
    flat = labels.reshape(-1)
    idx = xp.flatnonzero(flat)
    lv = flat[idx]
    uniq, d = xp.unique(lv, return_inverse=True)
    d = d.reshape(-1)
    L = int(uniq.size)
    C = len(channels)
    if L == 0:
        return empty_moments(np.dtype(labels.dtype), ndim, C, list(parents))
    coords = xp.unravel_index(idx, labels.shape)
    n = xp.bincount(d, minlength=L)

    # dtypes every backend scatters natively: uint64 sums, int32 / float32 min and max
    def isum(v):  # exact integer sums (coordinates are non-negative)
        out = xp.zeros(L, dtype=xp.uint64)
        xp.add.at(out, d, v.astype(xp.uint64))
        return out

    s1 = xp.stack([isum(c) for c in coords], axis=1)
    s2 = xp.stack([isum(coords[a] * coords[b]) for a, b in pairs(ndim)], axis=1)
    cmin = xp.full((L, ndim), np.iinfo(np.int32).max, dtype=xp.int32)
    cmax = xp.full((L, ndim), -1, dtype=xp.int32)
    for a in range(ndim):
        xp.minimum.at(cmin[:, a], d, coords[a].astype(xp.int32))
        xp.maximum.at(cmax[:, a], d, coords[a].astype(xp.int32))
    sw = xp.zeros((L, C))
    sww = xp.zeros((L, C))
    wmin = xp.full((L, C), np.inf, dtype=xp.float32)
    wmax = xp.full((L, C), -np.inf, dtype=xp.float32)
    swc = xp.zeros((L, C, ndim))
    for c, ch in enumerate(channels):
        v = ch.reshape(-1)[idx]
        w = v.astype(xp.float64)
        sw[:, c] = xp.bincount(d, weights=w, minlength=L)
        sww[:, c] = xp.bincount(d, weights=w * w, minlength=L)
        mn = xp.full(L, np.inf, dtype=xp.float32)
        mx = xp.full(L, -np.inf, dtype=xp.float32)
        xp.minimum.at(mn, d, v.astype(xp.float32))
        xp.maximum.at(mx, d, v.astype(xp.float32))
        wmin[:, c] = mn
        wmax[:, c] = mx
        for a in range(ndim):
            swc[:, c, a] = xp.bincount(d, weights=w * coords[a], minlength=L)
    projected = None
    if ndim == 3:
        plane = labels.shape[1] * labels.shape[2]
        key = xp.unique(d.astype(xp.int64) * plane + idx % plane)
        projected = xp.bincount(key // plane, minlength=L)
    par = {k: parent_overlaps(b, labels, p, uniq, L) for k, p in parents.items()}
    h = b.to_host  # device->host: per-label sums, small
    return Moments(
        h(uniq),
        h(n).astype(np.int64),
        h(s1).astype(np.int64),
        h(s2).astype(np.int64),
        h(cmin).astype(np.int64),
        h(cmax).astype(np.int64),
        h(sw),
        h(sww),
        h(wmin).astype(np.float64),
        h(wmax).astype(np.float64),
        h(swc),
        None if projected is None else h(projected).astype(np.int64),
        par,
    )
