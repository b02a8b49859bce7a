"""Per-object morphometry in one pass: labels (+ channels, + parents) -> columnar table.

The table mirrors :func:`skimage.measure.regionprops_table` (same property names, same
definitions, physical units from ``spacing``) and adds what an HCS readout needs:
``n_voxels``, ``intensity_sum``, ``area_projected`` (area of the z-projection) and the id of
the parent object (e.g. the MSC that holds a mitochondrial focus).

How it is fast
--------------
Nothing loops over labels. On the CPU the label image is walked in blocks of rows. Each
block is OR-reduced over groups of 32 rows (one read at memory speed, a 32x smaller
summary): where few summary cells are non-zero (sparse foci), only the voxels under them are
gathered; elsewhere the block is scanned voxel by voxel (``labels != 0``,
``np.flatnonzero``). The foreground voxels, batched over blocks, are cut into *x-runs*
(consecutive voxels of one row with the same label and parent). Coordinate moments of a
run have closed forms, intensity sums of a run are one ``ufunc.reduceat`` over the
gathered voxels, and the runs of a batch are folded into per-label partial sums with
``bincount``; the partial tables of the batches are merged at the end. Coordinate moments are
summed as exact integers, so the inertia tensor carries no cancellation error (its
numerators are exact int64 for objects below 2**31 / max(shape) voxels, float64 beyond).

On a GPU a fused CuPy kernel (:mod:`hcsmito.measure._kernels`) walks x-segments of rows,
pre-aggregates runs in registers and flushes them with atomics into one accumulator row per
label; a second kernel counts the projected area column by column. Both backends fill the
same :class:`_Moments` and share the code that turns moments into columns; on the GPU the
table is finished on the device (axis lengths in one fused kernel) and copied back once
per dtype.
:func:`_moments_reference` is the plain per-voxel ``xp`` twin of both (``bincount`` /
``ufunc.at``), which the tests compare them to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hcsmito.backend import Backend, get_backend

__all__ = [
    "PROPERTIES",
    "aggregate_by_parent",
    "regionprops_table",
    "table_to_dataframe",
]

#: Properties that :func:`regionprops_table` computes (scikit-image names where one exists).
PROPERTIES = (
    "label",
    "n_voxels",
    "area",
    "area_projected",
    "centroid",
    "bbox",
    "equivalent_diameter_area",
    "axis_major_length",
    "axis_minor_length",
    "intensity_sum",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "centroid_weighted",
    "parent",
)
_INTENSITY_PROPERTIES = (
    "intensity_sum",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "centroid_weighted",
)

# CPU scan of the label image, in blocks of ~_SCAN_VOXELS voxels (~4 MiB of int32 labels:
# small enough that re-reading a block that turned out dense hits the cache). A block is
# first OR-reduced over groups of _GROUP_ROWS rows (one read of the block, a 1/32 summary);
# only the columns of the summary that hold foreground are then read back, unless they
# would cover more than _GATHER_MAX of the block: then the block is scanned voxel by voxel.
_SCAN_VOXELS = 1 << 20
_GROUP_ROWS = 32
_GATHER_MAX = 1 / 64
# Foreground voxels folded per batch (at most 1/128 of the image): the foreground of
# consecutive sparse blocks is folded at once (fewer NumPy calls); bounds the per-batch
# temporaries (~300 B per voxel).
_BATCH_VOXELS = 1 << 16
# Label images this large are scanned by one thread per core (up to 8): the scan is bound
# by reading the labels, and one core does not draw the memory bandwidth (2-core box: 268
# MB of sparse labels in 14.4 ms on one thread, 9.7 ms on two).
_PARALLEL_VOXELS = 1 << 23


@dataclass
class _Moments:
    """Per-label sums from which every column is derived (NumPy, or CuPy on the GPU path).

    ``s1[:, a]`` = Σ coord_a, ``s2[:, k]`` = Σ coord_a·coord_b for the pairs ``a <= b`` in
    ``_pairs(ndim)`` order; coordinates are voxel indices, sums exact integers.
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


def _moments_to_host(m: _Moments) -> _Moments:
    """The same moments as NumPy arrays (device->host where they live on a GPU)."""

    def h(a):  # device->host: per-label sums
        return None if a is None else (a.get() if hasattr(a, "get") else np.asarray(a))

    return _Moments(
        *(h(getattr(m, f)) for f in _Moments.__dataclass_fields__ if f != "parents"),
        parents=m.parents,
    )


def _pairs(ndim: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(ndim) for b in range(a, ndim)]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(labels, intensity, spacing, parents, where: str):
    """Validate and normalise the inputs; returns (channels, spacing, parents, multichannel)."""
    ctx = f" ({where})" if where else ""
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"labels must be a 2-D (Y, X) or 3-D (Z, Y, X) label image, got shape "
            f"{labels.shape}{ctx}: pass one field, one time point, without channel axis"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"labels must have an integer dtype, got {labels.dtype}{ctx}: non-integer images "
            "are ambiguous; label a mask with hcsmito.measure.label or cast with .astype(int)"
        )
    if spacing is None:
        spacing = (1.0,) * labels.ndim
    spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(spacing) != labels.ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"spacing must give {labels.ndim} positive voxel sizes (one per axis of labels, "
            f"e.g. (dz, dy, dx) in µm), got {spacing}{ctx}"
        )

    channels: list[Any] = []
    multichannel = False
    if intensity is not None:
        if isinstance(intensity, Sequence) and not hasattr(intensity, "shape"):
            channels = list(intensity)
            multichannel = True
        elif intensity.shape == labels.shape:
            channels = [intensity]
        elif intensity.ndim == labels.ndim + 1 and intensity.shape[1:] == labels.shape:
            channels = [intensity[c] for c in range(intensity.shape[0])]
            multichannel = True
        else:
            raise ValueError(
                f"intensity has shape {intensity.shape} but labels {labels.shape}{ctx}: give "
                "one channel of the labels' shape, a (C, *labels.shape) stack (channel first, "
                "as in hcsmito images) or a list of channels"
            )
        for c, ch in enumerate(channels):
            if ch.shape != labels.shape:
                raise ValueError(
                    f"intensity channel {c} has shape {ch.shape}, labels {labels.shape}{ctx}"
                )
            if ch.dtype.kind not in "biuf":
                raise TypeError(f"intensity channel {c} has non-numeric dtype {ch.dtype}{ctx}")

    if parents is None:
        parents = {}
    elif not isinstance(parents, Mapping):
        parents = {"parent": parents}
    for name, p in parents.items():
        if p.shape != labels.shape or p.dtype.kind not in "iu":
            raise ValueError(
                f"parent label image {name!r} must be an integer array of the labels' shape "
                f"{labels.shape}, got {p.dtype} {p.shape}{ctx}"
            )
    return channels, spacing, dict(parents), multichannel


# --------------------------------------------------------------------------------------------
# CPU: x-runs of foreground voxels, folded per block, merged at the end
# --------------------------------------------------------------------------------------------


def _run_sums(x0: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σx and Σx² over the run x0, x0+1, ..., x0+n-1 (int64, exact)."""
    sx = n * x0 + n * (n - 1) // 2
    sxx = n * x0 * x0 + x0 * n * (n - 1) + (n - 1) * n * (2 * n - 1) // 6
    return sx, sxx


def _unique_inverse(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(v, return_inverse=True)`` of non-negative label values (1-D).

    Where the values span a range not much larger than their count (labels usually do), a
    presence table replaces the sort.
    """
    if v.size == 0:
        return v[:0], np.zeros(0, dtype=np.intp)
    lo = int(v.min())
    span = int(v.max()) - lo + 1
    if span > 4 * v.size + 4096:
        u, j = np.unique(v, return_inverse=True)
        return u, j.reshape(-1)
    off = v - v.dtype.type(lo)
    present = np.zeros(span, dtype=bool)
    present[off] = True
    u = np.flatnonzero(present)
    rank = np.cumsum(present, dtype=np.intp) - 1
    return (u + lo).astype(v.dtype), rank[off]


def _parent_mode(d, p, w, n_labels):
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


class _ForegroundScan:
    """Flat indices of the non-zero voxels of a (rows, X) label image, block by block.

    Each block of rows is first OR-reduced over groups of ``_GROUP_ROWS`` rows: one read,
    and a summary 32x smaller than the block whose non-zero entries are the (row group,
    column) cells that hold foreground. Where those cells are few (sparse foci), only their
    voxels are gathered; where they are many, the block is scanned directly
    (``labels != 0`` into a reused bool buffer, then ``flatnonzero``: ~4x faster than
    ``nonzero`` on the integers, and the reused buffer saves the page faults of a fresh
    array per block). After a dense block the summary is skipped until the foreground,
    scaled by the summary/foreground ratio last seen, predicts a sparse block again.
    """

    def __init__(self, lab2d: np.ndarray):
        self.lab2d = lab2d
        rows, X = lab2d.shape
        k = _GROUP_ROWS
        self.X = X
        block = min(_SCAN_VOXELS, max(_SCAN_VOXELS >> 4, rows * X // 8))
        self.rows_per_block = max(k, (block // max(X, 1)) // k * k)
        self.mask = np.empty(min(rows, self.rows_per_block) * X, dtype=bool)
        self.summary = np.empty((self.rows_per_block // k) * X, dtype=lab2d.dtype)
        self.offsets = np.arange(k, dtype=np.int64) * X
        self.try_summary = True
        self.ratio = float(k)  # summary cells x rows per foreground voxel, last measured

    def __iter__(self):
        """Yield (int64 flat indices into the whole image, label values), per block.

        Within a block, the voxels of each row are consecutive and ascending (the rows
        themselves need not be in order).
        """
        X = self.X
        for r0 in range(0, self.lab2d.shape[0], self.rows_per_block):
            blk = self.lab2d[r0 : r0 + self.rows_per_block]
            if self.try_summary and blk.shape[0] % _GROUP_ROWS == 0:
                idx, values = self._gather_sparse(blk)
            else:
                idx, values = self._direct(blk)
                predicted = self.ratio * idx.size / blk.size
                self.try_summary = predicted <= _GATHER_MAX / 2
            if idx.size:
                yield idx + r0 * X, values

    def _direct(self, blk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = blk.reshape(-1)
        m = self.mask[: flat.size]
        np.not_equal(flat, 0, out=m)
        idx = np.flatnonzero(m)
        return idx, flat[idx]  # the values while the block is in the cache

    def _gather_sparse(self, blk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Foreground of a block via the row-group summary (directly where it is dense)."""
        k, X = _GROUP_ROWS, self.X
        G = blk.shape[0] // k
        s = self.summary[: G * X]
        np.bitwise_or.reduce(blk.reshape(G, k, X), axis=1, out=s.reshape(G, X))
        m = self.mask[: s.size]
        np.not_equal(s, 0, out=m)
        cells = np.flatnonzero(m)
        gathered = cells.size * k
        if gathered > _GATHER_MAX * blk.size:
            idx, values = self._direct(blk)
            self.ratio = gathered / max(idx.size, 1)
            self.try_summary = False
            return idx, values
        if cells.size == 0:
            return cells, blk.reshape(-1)[:0]
        # cell g*X + x -> voxels (g*k + r)*X + x of the block, r = 0..k-1; in r-major
        # order, so the voxels of each row stay consecutive and ascending (all runs need)
        base = cells + (cells // X) * ((k - 1) * X)
        cand = (self.offsets[:, None] + base[None, :]).reshape(-1)
        values = blk.reshape(-1).take(cand)
        keep = values != 0
        return cand[keep], values[keep]


def _moments_cpu(labels, channels, parents, threads: int | None = None) -> _Moments:
    """Per-label sums on the CPU: the rows of the label image are cut into ``threads``
    contiguous ranges, each scanned and folded by its own thread into its own partial
    sums (NumPy releases the GIL in the scan's reductions and gathers), merged at the
    end. ``threads=None``: one per core (at most 8) for images of 8 M voxels or more."""
    X = labels.shape[-1]
    lab2d = np.ascontiguousarray(labels).reshape(-1, X)
    flat_all = lab2d.reshape(-1)
    chans = [np.ascontiguousarray(c).reshape(-1) for c in channels]
    pars = {k: np.ascontiguousarray(v).reshape(-1) for k, v in parents.items()}
    batch = min(_BATCH_VOXELS, max(1 << 12, labels.size // 128))
    if threads is None:
        threads = min(os.cpu_count() or 1, 8) if labels.size >= _PARALLEL_VOXELS else 1
    rows = lab2d.shape[0]
    step = -(-rows // max(int(threads), 1))
    step = -(-step // _GROUP_ROWS) * _GROUP_ROWS  # keep row groups whole
    starts = list(range(0, rows, step))

    def scan_fold(r0: int) -> _BlockSums:
        acc = _BlockSums(labels.shape, flat_all, chans, pars, labels.dtype.kind == "i")
        offset = r0 * X
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        n_pending = 0
        for idx, values in _ForegroundScan(lab2d[r0 : r0 + step]):
            pending.append((idx + offset, values))
            n_pending += idx.size
            if n_pending >= batch:
                acc.fold(*_concat_pairs(pending))
                pending, n_pending = [], 0
        if pending:
            acc.fold(*_concat_pairs(pending))
        return acc

    if len(starts) == 1:
        parts = [scan_fold(0)]
    else:
        with ThreadPoolExecutor(len(starts)) as pool:
            parts = list(pool.map(scan_fold, starts))
    blocks = [blk for acc in parts for blk in acc.blocks]
    par_runs = {k: [r for acc in parts for r in acc.par_runs[k]] for k in pars}
    proj_keys = [key for acc in parts for key in acc.proj_keys]
    return _merge_blocks(labels, blocks, par_runs, proj_keys, len(chans))


def _concat_pairs(pairs):
    if len(pairs) == 1:
        return pairs[0]
    return tuple(np.concatenate(a) for a in zip(*pairs, strict=True))


class _BlockSums:
    """Per-label partial sums of batches of foreground voxels (CPU), merged at the end."""

    def __init__(self, shape, flat_all, chans, pars, signed):
        self.ndim = len(shape)
        self.X = shape[-1]
        self.Y = shape[-2]
        self.plane = self.Y * self.X if self.ndim == 3 else 0
        self.flat_all = flat_all
        self.chans = chans
        self.pars = pars
        self.signed = signed
        self.blocks: list[dict[str, np.ndarray]] = []
        self.par_runs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            k: [] for k in pars
        }
        self.proj_keys: list[tuple[np.ndarray, np.ndarray]] = []

    def fold(self, gidx: np.ndarray, lv: np.ndarray) -> None:
        """Fold the foreground voxels at flat indices ``gidx`` (int64), labels ``lv``.

        The voxels of each row must be consecutive and ascending in ``gidx``, so that every
        x-run is a stretch of ``gidx``; rows may come in any order.
        """
        ndim, X, Y, plane = self.ndim, self.X, self.Y, self.plane
        C = len(self.chans)
        pairs = _pairs(ndim)
        if self.signed and lv.min() < 0:
            raise ValueError("labels must be non-negative (0 = background)")
        xv = gidx % X
        # run starts: a new label, a gap, a new row, or a new parent
        brk = np.empty(gidx.size, dtype=bool)
        brk[0] = True
        np.not_equal(lv[1:], lv[:-1], out=brk[1:])
        brk[1:] |= gidx[1:] != gidx[:-1] + 1
        brk[1:] |= xv[1:] == 0
        pv_block = {}
        for k, pflat in self.pars.items():
            pv = pflat[gidx]
            pv_block[k] = pv
            brk[1:] |= pv[1:] != pv[:-1]
        starts = np.flatnonzero(brk)
        run_n = np.diff(starts, append=gidx.size).astype(np.int64)
        x0 = xv[starts]
        row = gidx[starts] // X
        run_lab = lv[starts]

        ub, j = _unique_inverse(run_lab)
        nb = ub.size

        def fold(v):
            return np.bincount(j, weights=v, minlength=nb)

        if ndim == 3:
            zc, yc = np.divmod(row, Y)
            rowc = [zc, yc]
        else:
            rowc = [row]
        sx, sxx = _run_sums(x0, run_n)
        run_s1 = [r * run_n for r in rowc] + [sx]
        # Σ c_a c_b per run
        run_s2 = []
        for a, b in pairs:
            if b < ndim - 1:
                run_s2.append(rowc[a] * rowc[b] * run_n)
            elif a < ndim - 1:
                run_s2.append(rowc[a] * sx)
            else:
                run_s2.append(sxx)
        n = np.bincount(j, weights=run_n, minlength=nb)
        s1 = np.stack([fold(v) for v in run_s1], axis=1)
        s2 = np.stack([fold(v) for v in run_s2], axis=1)
        cmin = np.full((nb, ndim), np.iinfo(np.int64).max, dtype=np.int64)
        cmax = np.full((nb, ndim), -1, dtype=np.int64)
        lo = rowc + [x0]
        hi = rowc + [x0 + run_n - 1]
        for a in range(ndim):
            np.minimum.at(cmin[:, a], j, lo[a])
            np.maximum.at(cmax[:, a], j, hi[a])

        sw = np.empty((nb, C))
        sww = np.empty((nb, C))
        wmin = np.empty((nb, C))
        wmax = np.empty((nb, C))
        swc = np.empty((nb, C, ndim))
        for c, ch in enumerate(self.chans):
            w = ch[gidx]
            rmin = np.minimum.reduceat(w, starts)
            rmax = np.maximum.reduceat(w, starts)
            wf = w.astype(np.float64)
            rsw = np.add.reduceat(wf, starts)
            rsww = np.add.reduceat(wf * wf, starts)
            wf *= xv  # Σ w·x per run
            rswx = np.add.reduceat(wf, starts)
            sw[:, c] = fold(rsw)
            sww[:, c] = fold(rsww)
            mn = np.full(nb, np.inf)
            mx = np.full(nb, -np.inf)
            np.minimum.at(mn, j, rmin.astype(np.float64))
            np.maximum.at(mx, j, rmax.astype(np.float64))
            wmin[:, c] = mn
            wmax[:, c] = mx
            for a in range(ndim - 1):
                swc[:, c, a] = fold(rowc[a] * rsw)
            swc[:, c, ndim - 1] = fold(rswx)
        self.blocks.append(
            dict(
                lab=ub,
                n=n,
                s1=s1,
                s2=s2,
                cmin=cmin,
                cmax=cmax,
                sw=sw,
                sww=sww,
                wmin=wmin,
                wmax=wmax,
                swc=swc,
            )
        )
        for k, pv in pv_block.items():
            rp = pv[starts]
            keep = rp != 0
            self.par_runs[k].append((run_lab[keep], rp[keep].astype(np.int64), run_n[keep]))
        if ndim == 3:
            # a voxel starts a new (label, y, x) pair of the projection unless the voxel
            # above it (z - 1) has the same label; the rest are deduplicated at the end
            # (z = 0 reads a clipped index; those voxels are candidates anyway)
            cand = self.flat_all.take(gidx - plane, mode="clip") != lv
            cand |= gidx < plane
            self.proj_keys.append((lv[cand], gidx[cand] % plane))


def _merge_blocks(labels, blocks, par_runs, proj_keys, C) -> _Moments:
    ndim = labels.ndim
    npairs = len(_pairs(ndim))
    if not blocks:
        return _empty_moments(labels.dtype, ndim, C, list(par_runs))
    all_lab = np.concatenate([b["lab"] for b in blocks])
    uniq, j = _unique_inverse(all_lab)
    L = uniq.size

    def cat(k):
        return np.concatenate([b[k] for b in blocks])

    single = len(blocks) == 1  # one batch: its sums are already per label, in order

    def fold(v):
        v = v.reshape(v.shape[0], -1)
        if single:
            return v
        out = np.zeros((L, v.shape[1]))
        for i in range(v.shape[1]):
            out[:, i] = np.bincount(j, weights=v[:, i], minlength=L)
        return out

    n = np.rint(fold(cat("n"))[:, 0]).astype(np.int64)
    s1 = np.rint(fold(cat("s1"))).astype(np.int64)
    s2 = np.rint(fold(cat("s2"))).astype(np.int64).reshape(L, npairs)
    cmin, cmax = cat("cmin"), cat("cmax")
    if not single:
        cmin = np.full((L, ndim), np.iinfo(np.int64).max, dtype=np.int64)
        cmax = np.full((L, ndim), -1, dtype=np.int64)
        np.minimum.at(cmin, j, cat("cmin"))
        np.maximum.at(cmax, j, cat("cmax"))
    sw = fold(cat("sw")).reshape(L, C)
    sww = fold(cat("sww")).reshape(L, C)
    swc = fold(cat("swc")).reshape(L, C, ndim)
    wmin, wmax = cat("wmin"), cat("wmax")
    if not single:
        wmin = np.full((L, C), np.inf)
        wmax = np.full((L, C), -np.inf)
        np.minimum.at(wmin, j, cat("wmin"))
        np.maximum.at(wmax, j, cat("wmax"))

    projected = None
    if ndim == 3:
        plane = labels.shape[1] * labels.shape[2]
        lv = np.concatenate([k[0] for k in proj_keys])
        yx = np.concatenate([k[1] for k in proj_keys])
        key = np.searchsorted(uniq, lv).astype(np.int64) * plane + yx
        key.sort()  # distinct (label, y, x) pairs: sorting beats hashing here
        first = np.ones(key.size, dtype=bool)
        first[1:] = key[1:] != key[:-1]
        projected = np.bincount(key[first] // plane, minlength=L).astype(np.int64)

    parents = {}
    for k, runs in par_runs.items():
        if runs:
            rl = np.concatenate([r[0] for r in runs])
            rp = np.concatenate([r[1] for r in runs])
            rn = np.concatenate([r[2] for r in runs])
        else:
            rl = np.zeros(0, labels.dtype)
            rp = rn = np.zeros(0, np.int64)
        parents[k] = _parent_mode(np.searchsorted(uniq, rl), rp, rn, L)
    return _Moments(uniq, n, s1, s2, cmin, cmax, sw, sww, wmin, wmax, swc, projected, parents)


def _empty_moments(dtype, ndim, C, parent_names, xp=np) -> _Moments:
    z = xp.zeros
    return _Moments(
        labels=z(0, dtype),
        n=z(0, np.int64),
        s1=z((0, ndim), np.int64),
        s2=z((0, len(_pairs(ndim))), np.int64),
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
        return _parent_mode(*(np.zeros(0, np.int64),) * 3, n_labels)
    span = int(pv.max()) + 1  # device->host: one scalar
    d = xp.searchsorted(uniq, lv).astype(xp.int64)
    key, cnt = xp.unique(d * span + pv, return_counts=True)
    h = b.to_host  # device->host: (object, parent) pairs, few
    key = h(key)
    return _parent_mode(key // span, key % span, h(cnt).astype(np.int64), n_labels)


# --------------------------------------------------------------------------------------------
# the plain per-voxel twin (any xp): the reference for the CPU runs and the GPU kernel
# --------------------------------------------------------------------------------------------


def _moments_reference(labels, channels, parents, b: Backend) -> _Moments:
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
        return _empty_moments(np.dtype(labels.dtype), ndim, C, list(parents))
    coords = xp.unravel_index(idx, labels.shape)
    n = xp.bincount(d, minlength=L)

    # dtypes every backend scatters natively: uint64 sums, int32 / float32 min and max
    def isum(v):  # exact integer sums (coordinates are non-negative)
        out = xp.zeros(L, dtype=xp.uint64)
        xp.add.at(out, d, v.astype(xp.uint64))
        return out

    s1 = xp.stack([isum(c) for c in coords], axis=1)
    s2 = xp.stack([isum(coords[a] * coords[b]) for a, b in _pairs(ndim)], axis=1)
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
    return _Moments(
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


# --------------------------------------------------------------------------------------------
# moments -> columns (shared by every backend)
# --------------------------------------------------------------------------------------------


def _exact_limit(shape) -> int:
    """Objects with fewer voxels than this have exact int64 inertia numerators."""
    return (1 << 31) // max(shape)


def _inertia_eigvals(m: _Moments, spacing, shape, xp) -> Any:
    """Eigenvalues (descending) of scikit-image's inertia tensor, per label: (L, ndim)."""
    ndim = m.s1.shape[1]
    L = m.n.size
    n = m.n.astype(xp.float64)
    # n·Σab - Σa·Σb is exact in int64 for objects with n·max(coord) < 2**31, which are all
    # but the giant ones; those take float64 (relative error ~1e-16 of n²·coord²)
    exact = m.n < _exact_limit(shape)
    s1f = m.s1.astype(xp.float64)
    cov = xp.empty((L, ndim, ndim))
    for k, (a, b) in enumerate(_pairs(ndim)):
        num_int = (m.n * m.s2[:, k] - m.s1[:, a] * m.s1[:, b]).astype(xp.float64)
        num_flt = n * m.s2[:, k].astype(xp.float64) - s1f[:, a] * s1f[:, b]
        num = xp.where(exact, num_int, num_flt)
        cov[:, a, b] = num / (n * n) * (spacing[a] * spacing[b])
        cov[:, b, a] = cov[:, a, b]
    T = -cov
    diag = xp.diagonal(cov, axis1=1, axis2=2)
    r = xp.arange(ndim)
    T[:, r, r] = diag.sum(axis=1, keepdims=True) - diag
    if xp is np:
        ev = np.linalg.eigvalsh(T)[:, ::-1] if L else np.zeros((0, ndim))
    else:  # one fused kernel: cuSOLVER's batched eigvalsh is slow and needs KBs per matrix
        from hcsmito.measure._kernels import eigvalsh_sym

        ev = eigvalsh_sym(T)
    return xp.maximum(ev, 0)


def _columns(m: _Moments, spacing, multichannel: bool, properties, shape, xp) -> dict[str, Any]:
    """Columns from moments, on the moments' device (NumPy or CuPy arrays).

    Whole (L, k) blocks are computed at once and split into column views, so the GPU sees a
    few dozen launches, not one per column and channel.
    """
    ndim = len(shape)
    C = m.sw.shape[1]
    voxel = float(np.prod(spacing))
    n = m.n.astype(xp.float64)
    sp = xp.asarray(spacing, dtype=xp.float64)
    out: dict[str, Any] = {}
    cache: dict[str, Any] = {}

    def once(key, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    def chan(name, values):  # values (L, C)
        for c in range(C):
            out[f"{name}-{c}" if multichannel else name] = values[:, c]

    def axes():
        if xp is np:
            ev = _inertia_eigvals(m, spacing, shape, xp)
            if ndim == 2:
                return 4 * np.sqrt(ev[:, 0]), 4 * np.sqrt(ev[:, -1])
            return (
                np.sqrt(np.maximum(0, 10 * (ev[:, 0] + ev[:, 1] - ev[:, 2]))),
                np.sqrt(np.maximum(0, 10 * (-ev[:, 0] + ev[:, 1] + ev[:, 2]))),
            )
        from hcsmito.measure._kernels import axis_lengths  # one fused kernel

        return axis_lengths(m.n, m.s1, m.s2, spacing, _exact_limit(shape))

    with np.errstate(invalid="ignore", divide="ignore"):
        mean = once("mean", lambda: m.sw / n[:, None]) if C else None
        for prop in properties:
            if prop == "label":
                out["label"] = m.labels
            elif prop == "n_voxels":
                out["n_voxels"] = m.n
            elif prop == "area":
                out["area"] = n * voxel
            elif prop == "area_projected":
                px = m.n if ndim == 2 else m.projected
                out["area_projected"] = px.astype(xp.float64) * (spacing[-1] * spacing[-2])
            elif prop == "centroid":
                cen = m.s1 / n[:, None] * sp
                for a in range(ndim):
                    out[f"centroid-{a}"] = cen[:, a]
            elif prop == "bbox":
                stop = m.cmax + 1
                for a in range(ndim):
                    out[f"bbox-{a}"] = m.cmin[:, a]
                for a in range(ndim):
                    out[f"bbox-{ndim + a}"] = stop[:, a]
            elif prop == "equivalent_diameter_area":
                out[prop] = (2 * ndim * n * voxel / np.pi) ** (1 / ndim)
            elif prop == "axis_major_length":
                out[prop] = once("axes", axes)[0]
            elif prop == "axis_minor_length":
                out[prop] = once("axes", axes)[1]
            elif prop == "intensity_sum":
                chan(prop, m.sw)
            elif prop == "intensity_mean":
                chan(prop, mean)
            elif prop == "intensity_min":
                chan(prop, m.wmin)
            elif prop == "intensity_max":
                chan(prop, m.wmax)
            elif prop == "intensity_std":
                chan(prop, xp.sqrt(xp.maximum(0, m.sww / n[:, None] - mean * mean)))
            elif prop == "centroid_weighted":
                cw = m.swc / m.sw[:, :, None] * sp
                for a in range(ndim):
                    for c in range(C):
                        suffix = f"-{a}-{c}" if multichannel else f"-{a}"
                        out[f"centroid_weighted{suffix}"] = cw[:, c, a]
            elif prop == "parent":
                for name, (pid, overlap) in m.parents.items():
                    out[name] = pid
                    out[f"{name}_overlap"] = overlap / np.maximum(_small_to_host(n), 1)
    return out


def _small_to_host(a) -> np.ndarray:
    """NumPy view of a small per-label array from either backend."""
    return a.get() if hasattr(a, "get") else np.asarray(a)  # device->host: (L,)


def _table_to_host(table: dict[str, Any], b: Backend) -> dict[str, np.ndarray]:
    """One device->host copy per dtype (columns stacked), not one per column."""
    if not b.is_gpu:
        return {k: np.asarray(v) for k, v in table.items()}
    xp = b.xp
    dev = {k: v for k, v in table.items() if not isinstance(v, np.ndarray)}
    out = {k: v for k, v in table.items() if isinstance(v, np.ndarray)}
    by_dtype: dict[Any, list[str]] = {}
    for k, v in dev.items():
        by_dtype.setdefault(v.dtype, []).append(k)
    for keys in by_dtype.values():
        block = b.to_host(xp.stack([dev[k] for k in keys]))  # device->host: (k, L)
        out.update({k: block[i] for i, k in enumerate(keys)})
    return {k: out[k] for k in table}


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def regionprops_table(
    labels,
    intensity=None,
    *,
    spacing: Sequence[float] | None = None,
    parents=None,
    properties: Sequence[str] | None = None,
    backend: str | None = None,
    where: str = "",
) -> dict[str, np.ndarray]:
    """Measure every labelled object in one pass; a columnar table like scikit-image's.

    Parameters
    ----------
    labels : (M, N[, P]) ndarray of int
        Label image (NumPy or CuPy; any integer dtype, values need not be contiguous).
        0 is background.
    intensity : (M, N[, P]) ndarray, (C, M, N[, P]) ndarray or sequence of ndarrays, optional
        Intensity channel(s) on the same grid, channel axis *first*. One array of the
        labels' shape gives unsuffixed columns (``intensity_mean``); a stack or a list gives
        one column per channel with scikit-image's suffix (``intensity_mean-0``,
        ``centroid_weighted-<axis>-<channel>``).
    spacing : sequence of float, optional
        Voxel size per axis (µm), e.g. ``(dz, dy, dx)``. Default 1.
    parents : (M, N[, P]) ndarray of int or mapping of str to such arrays, optional
        Parent label image(s), e.g. the MSC cells. Adds a column per parent image (named
        ``parent``, or by the mapping key) holding the non-zero parent label that covers
        most voxels of the object (ties: smallest label; 0 when it lies in no parent), and
        ``<name>_overlap``, the fraction of the object's voxels inside that parent.
    properties : sequence of str, optional
        Subset of :data:`PROPERTIES`, in output order (default: all; the intensity
        properties only where ``intensity`` is given, ``parent`` only with ``parents``).
    backend : {"cpu", "gpu", "auto"}, optional
        Where to compute; the arrays are moved there. Default: where the arrays are
        (CuPy arrays -> GPU).
    where : str, optional
        Plate/well/field of the image, quoted in error messages.

    Returns
    -------
    table : dict of str to (L,) ndarray
        One row per label, ascending label value; NumPy arrays (also for CuPy input).
        ``area`` is the area (2-D, µm²) or volume (3-D, µm³), ``area_projected`` the area of
        the z-projection (µm²), ``centroid-*`` and ``centroid_weighted-*`` are in µm,
        ``bbox-*`` in voxel indices (start inclusive, stop exclusive), as in scikit-image.
        All other definitions follow ``skimage.measure.regionprops`` 0.26 with ``spacing``.

    Notes
    -----
    Cost is one read of ``labels`` plus work proportional to the foreground voxels; extra
    memory is bounded by blocks of rows (CPU) or per-label accumulators (GPU).
    """
    channels, spacing, parents, multichannel = _check_inputs(
        labels, intensity, spacing, parents, where
    )
    if properties is None:
        properties = [
            p
            for p in PROPERTIES
            if (channels or p not in _INTENSITY_PROPERTIES) and (parents or p != "parent")
        ]
    else:
        properties = list(properties)
        unknown = [p for p in properties if p not in PROPERTIES]
        if unknown:
            raise ValueError(f"unknown properties {unknown}: choose from {PROPERTIES}")
        if not channels and any(p in _INTENSITY_PROPERTIES for p in properties):
            raise ValueError("intensity properties were asked for but no intensity was given")
        if not parents and "parent" in properties:
            raise ValueError("'parent' was asked for but no parent label image was given")
    if backend is None:
        b = Backend.of(labels, *channels, *parents.values())
    else:
        b = get_backend(backend)
        if not b.is_gpu:  # device->host where the caller asked for the CPU
            labels = b.to_host(labels)
            channels = [b.to_host(c) for c in channels]
            parents = {k: b.to_host(v) for k, v in parents.items()}
    if b.is_gpu:
        from hcsmito.measure import _kernels

        arr = [b.asarray(a) for a in (labels, *channels, *parents.values())]
        lab = arr[0]
        chans = arr[1 : 1 + len(channels)]
        pars = dict(zip(parents, arr[1 + len(channels) :], strict=True))
        m = _kernels.moments_gpu(lab, chans, pars, b)
    else:
        m = _moments_cpu(
            np.asarray(labels),
            [np.asarray(c) for c in channels],
            {k: np.asarray(v) for k, v in parents.items()},
        )
    table = _columns(m, spacing, multichannel, properties, labels.shape, b.xp)
    return _table_to_host(table, b)


def table_to_dataframe(table: Mapping[str, np.ndarray]):
    """The columnar table as a :class:`pandas.DataFrame` (columns in table order)."""
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v) for k, v in table.items()})


def aggregate_by_parent(
    table: Mapping[str, np.ndarray],
    *,
    parent: str = "parent",
    parent_labels=None,
    intensity_columns: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Per-parent sums of an object table: objects, volume, projected area, intensity.

    Parameters
    ----------
    table : mapping of str to (L,) ndarray
        Output of :func:`regionprops_table` with a parent column.
    parent : str
        Name of the parent column (objects with parent 0 are not counted).
    parent_labels : (M, N[, P]) ndarray of int, optional
        The parent label image: then every parent gets a row, also those without objects.
        Without it, only parents that hold at least one object appear.
    intensity_columns : sequence of str, optional
        Columns summed per parent (default: every ``intensity_sum*`` column).

    Returns
    -------
    table : dict of str to (K,) ndarray
        ``label`` (parent id, ascending), ``n_objects``, ``area`` (sum of object areas or
        volumes), ``area_projected`` (sum of the objects' projected areas) and one
        ``<column>`` per intensity column, summed.
    """
    if parent not in table:
        raise KeyError(
            f"column {parent!r} is not in the table: measure with parents=... "
            f"(columns: {list(table)})"
        )
    pid = np.asarray(table[parent]).astype(np.int64)
    if intensity_columns is None:
        intensity_columns = [k for k in table if k.startswith("intensity_sum")]
    if parent_labels is not None:
        b = Backend.of(parent_labels)
        ids = b.to_host(b.xp.unique(parent_labels))  # device->host: parent ids, small
        ids = ids[ids != 0].astype(np.int64)
    else:
        ids = np.unique(pid[pid != 0])
    ids = np.union1d(ids, pid[pid != 0])
    pos = np.searchsorted(ids, pid)
    inside = pid != 0
    K = ids.size

    def total(col):
        return np.bincount(pos[inside], weights=np.asarray(col, float)[inside], minlength=K)

    out = {
        "label": ids,
        "n_objects": np.bincount(pos[inside], minlength=K).astype(np.int64),
    }
    for col in ("area", "area_projected", *intensity_columns):
        if col in table:
            out[col] = total(table[col])
    return out
