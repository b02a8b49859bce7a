"""Per-label moments on the CPU: a scan of the label image's foreground, folded in x-runs.

The label image is walked in blocks of rows. Each block is OR-reduced over groups of 32 rows
(one read at memory speed, a 32x smaller summary): where few summary cells are non-zero
(sparse foci), only the voxels under them are gathered; elsewhere the block is scanned voxel
by voxel (``labels != 0``, ``np.flatnonzero``). The foreground voxels, batched over blocks,
are cut into *x-runs* (consecutive voxels of one row with the same label and parent).
Coordinate moments of a run have closed forms, intensity sums of a run are one
``ufunc.reduceat`` over the gathered voxels, and the runs of a batch are folded into
per-label partial sums with ``bincount``; the partial tables of the batches are merged at
the end. Large images are cut into row ranges scanned by one thread each.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hcsmito.measure._moments import Moments, empty_moments, pairs, parent_mode

__all__ = ["moments_cpu"]

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
# by reading the labels, and one core does not draw the memory bandwidth (measured in
# benchmarks/RESULTS.md, "Morphometry", the scan's design choices).
_PARALLEL_VOXELS = 1 << 23


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


class _ForegroundScan:
    """Flat indices of the non-zero voxels of a (rows, X) label image, block by block.

    Each block of rows is first OR-reduced over groups of ``_GROUP_ROWS`` rows: one read,
    and a summary 32x smaller than the block whose non-zero entries are the (row group,
    column) cells that hold foreground. Where those cells are few (sparse foci), only their
    voxels are gathered; where they are many, the block is scanned directly
    (``labels != 0`` into a reused bool buffer, then ``flatnonzero``: faster than
    ``nonzero`` on the integers, see ``benchmarks/RESULTS.md``, and the reused buffer saves
    the page faults of a fresh array per block). After a dense block the summary is
    skipped until the foreground, scaled by the summary/foreground ratio last seen,
    predicts a sparse block again.
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


def moments_cpu(labels, channels, parents, threads: int | None = None) -> Moments:
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


def _concat_pairs(batch):
    """(indices, values) pairs of several blocks as one pair."""
    if len(batch) == 1:
        return batch[0]
    return tuple(np.concatenate(a) for a in zip(*batch, strict=True))


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
        axis_pairs = pairs(ndim)
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
        for a, b in axis_pairs:
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


def _merge_blocks(labels, blocks, par_runs, proj_keys, C) -> Moments:
    ndim = labels.ndim
    npairs = len(pairs(ndim))
    if not blocks:
        return empty_moments(labels.dtype, ndim, C, list(par_runs))
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
        parents[k] = parent_mode(np.searchsorted(uniq, rl), rp, rn, L)
    return Moments(uniq, n, s1, s2, cmin, cmax, sw, sww, wmin, wmax, swc, projected, parents)
