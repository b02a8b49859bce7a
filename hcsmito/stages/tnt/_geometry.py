"""Distances, skeleton graphs and paths in µm shared by the TNT rules (host and device)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import bbox
from hcsmito.stages.glass import Glass


def feature_distance(b: Backend, ft: tuple[Any, ...], at: tuple[Any, ...], sp) -> Any:
    """µm from the voxels ``at`` to their features ``ft`` (index arrays of a feature
    transform), float64, with the arithmetic of scipy's ``distance_transform_edt``."""
    xp = b.xp
    acc = None
    for f, c, s in zip(ft, at, sp, strict=True):
        t = (f - c).astype(xp.float64) * s
        t *= t
        acc = t if acc is None else acc + t
    return xp.sqrt(acc)


def feature_transform(b: Backend, background: Any, sp) -> Any:
    """Index arrays (ndim, ...) of the nearest ``False`` voxel of ``background``."""
    return b.ndi.distance_transform_edt(
        background, sampling=sp, return_distances=False, return_indices=True
    )


def nearest_features(
    b: Backend,
    background: Any,
    at: tuple[Any, ...],
    groups: Any,
    sp,
    *,
    margins_um: tuple[float, ...] = (1.5, 6.0, 24.0),
) -> tuple[Any, ...]:
    """The feature transform of ``background`` (nearest ``False`` voxel) read at the voxels
    ``at``, computed on boxes around them instead of the whole array.

    The voxels are boxed by ``groups`` (an int id per voxel of ``at``, e.g. the connected
    piece each belongs to), each box grown by a margin and overlapping boxes merged. A
    voxel's nearest feature in its box is its nearest in the array when it is strictly
    nearer than every voxel outside the box (the box faces that are not the array's own
    edges): the passes of the exact transform then meet, on the lines through it, the same
    candidates that can win, and the result is the whole array's. The groups of the voxels
    where that cannot be shown (a box without a feature, a feature beyond the margin) go
    again with the next of ``margins_um``, and what is left after the last takes the whole
    array's transform: the answer is always the uncropped one.

    Returns
    -------
    tuple of ndim index arrays, one entry per voxel of ``at`` (full-array coordinates).
    """
    xp = b.xp
    nd = background.ndim
    shape = np.asarray(background.shape)
    n = int(at[0].shape[0])
    out = tuple(xp.zeros(n, dtype=xp.int64) for _ in range(nd))
    if n == 0:
        return out
    pts = np.stack([b.to_host(c) for c in at], axis=1)  # device->host: the voxels' coordinates
    gid = b.to_host(groups).astype(np.int64)  # device->host: one id per voxel
    inv = np.unique(gid, return_inverse=True)[1].reshape(-1)
    k = int(inv.max()) + 1
    lo0 = np.full((k, nd), np.iinfo(np.int64).max)
    hi0 = np.full((k, nd), -1)
    np.minimum.at(lo0, inv, pts)
    np.maximum.at(hi0, inv, pts)
    todo = np.ones(n, bool)
    for margin_um in margins_um:
        groups_left = np.unique(inv[todo])
        m = np.array([int(math.ceil(margin_um / s)) for s in sp])
        lo = np.maximum(lo0[groups_left] - m, 0)
        hi = np.minimum(hi0[groups_left] + m + 1, shape)
        boxes = _merge_boxes(lo, hi, groups_left)
        box_of = np.full(k, -1)
        for i, (_, _, members) in enumerate(boxes):
            box_of[members] = i
        left = np.flatnonzero(todo)
        which = box_of[inv[left]]
        order = np.argsort(which, kind="stable")
        cuts = np.searchsorted(which[order], np.arange(len(boxes) + 1))
        for i, (blo, bhi, _) in enumerate(boxes):
            sel = left[order[cuts[i] : cuts[i + 1]]]
            ok = _box_features(b, background, pts[sel], blo, bhi, sp, out, sel)
            todo[sel[ok]] = False
        if not todo.any():
            return out
    rest = np.flatnonzero(todo)
    ft = feature_transform(b, background, sp)
    rd = tuple(b.asarray(pts[rest, i]) for i in range(nd))
    restd = b.asarray(rest)
    for i in range(nd):
        out[i][restd] = ft[i][rd]
    return out


def near_features(
    b: Backend, features: Any, at: tuple[Any, ...], groups: Any, sp, within_um: float
) -> Any:
    """Whether each voxel of ``at`` lies within ``within_um`` of a ``True`` voxel of
    ``features`` (``distance_transform_edt(~features)[at] <= within_um``, bool per voxel),
    from feature transforms on boxes around the voxels (grouped by ``groups``).

    Each box reaches ``within_um`` and a voxel beyond it along every axis, so every
    feature within that distance of a voxel is in its box, and the nearest of them in the
    box is its nearest in the array: the same distance as the whole array's transform
    where it is within ``within_um``, and a larger one where it is not.
    """
    xp = b.xp
    nd = features.ndim
    n = int(at[0].shape[0])
    out = xp.zeros(n, dtype=bool)
    if n == 0:
        return out
    pts = np.stack([b.to_host(c) for c in at], axis=1)  # device->host: the voxels' coordinates
    inv = np.unique(b.to_host(groups), return_inverse=True)[1].reshape(-1)  # device->host
    k = int(inv.max()) + 1
    lo = np.full((k, nd), np.iinfo(np.int64).max)
    hi = np.full((k, nd), -1)
    np.minimum.at(lo, inv, pts)
    np.maximum.at(hi, inv, pts)
    m = np.array([int(math.floor(within_um / s)) + 1 for s in sp])
    lo = np.maximum(lo - m, 0)
    hi = np.minimum(hi + m + 1, np.asarray(features.shape))
    boxes = _merge_boxes(lo, hi, np.arange(k))
    box_of = np.full(k, -1)
    for i, (_, _, members) in enumerate(boxes):
        box_of[members] = i
    which = box_of[inv]
    for i, (blo, bhi, _) in enumerate(boxes):
        sel = np.flatnonzero(which == i)
        box = tuple(slice(int(a), int(z)) for a, z in zip(blo, bhi, strict=True))
        sub = features[box]
        if not bool(sub.any()):
            continue  # nothing within reach
        ft = feature_transform(b, ~sub, sp)
        q = pts[sel] - blo
        qd = tuple(b.asarray(q[:, j]) for j in range(nd))
        d = feature_distance(b, tuple(ft[j][qd] for j in range(nd)), qd, sp)
        out[b.asarray(sel)] = d <= within_um
    return out


def _box_features(b: Backend, background, pts, blo, bhi, sp, out, sel) -> np.ndarray:
    """Feature transform on the box ``[blo, bhi)`` read at ``pts`` (host, full-array
    coordinates): written to ``out`` at ``sel`` where provably the whole array's; which."""
    nd = len(blo)
    box = tuple(slice(int(a), int(z)) for a, z in zip(blo, bhi, strict=True))
    sub = background[box]
    if bool(sub.all()):
        return np.zeros(len(sel), bool)  # no feature in the box
    ft = feature_transform(b, sub, sp)
    q = pts - blo
    qd = tuple(b.asarray(q[:, i]) for i in range(nd))
    f = tuple(ft[i][qd] for i in range(nd))
    del ft
    d = b.to_host(feature_distance(b, f, qd, sp))  # device->host: one per voxel
    # distance to the nearest voxel outside the box, over the faces inside the array
    room = np.full(len(sel), np.inf)
    for ax in range(nd):
        if blo[ax] > 0:
            room = np.minimum(room, (q[:, ax] + 1) * sp[ax])
        if bhi[ax] < background.shape[ax]:
            room = np.minimum(room, (bhi[ax] - blo[ax] - q[:, ax]) * sp[ax])
    ok = d < room
    good, okd = b.asarray(sel[ok]), b.asarray(ok)
    for i in range(nd):
        out[i][good] = f[i][okd] + int(blo[i])
    return ok


def _merge_boxes(lo: np.ndarray, hi: np.ndarray, owner: np.ndarray, window: int = 8):
    """Boxes ``[lo, hi)`` merged where one box over two costs no more voxels than the two
    (overlapping boxes of nearby pieces): one pass in order of the last axis, each box
    tried against the ``window`` boxes made last. ``[(lo, hi, member ids), ...]``."""
    order = np.argsort(lo[:, -1], kind="stable")
    olo: list = []
    ohi: list = []
    omem: list = []
    for i in order:
        blo, bhi = lo[i], hi[i]
        start = max(len(olo) - window, 0)
        if olo:
            a = np.minimum(np.asarray(olo[start:]), blo)
            z = np.maximum(np.asarray(ohi[start:]), bhi)
            both = np.prod(z - a, axis=1)
            apart = np.prod(np.asarray(ohi[start:]) - np.asarray(olo[start:]), axis=1)
            hit = np.flatnonzero(both <= apart + np.prod(bhi - blo))
            if hit.size:
                j = int(hit[0])
                olo[start + j], ohi[start + j] = a[j], z[j]
                omem[start + j].append(int(owner[i]))
                continue
        olo.append(blo.copy())
        ohi.append(bhi.copy())
        omem.append([int(owner[i])])
    return [(a, z, np.asarray(m)) for a, z, m in zip(olo, ohi, omem, strict=True)]


def _reach_box(b: Backend, features: Any, min_um: float, sp) -> tuple[Any, tuple[int, ...], Any]:
    """What :func:`far_from` and :func:`far_from_shifts` start from: the answer where no
    feature is near (all True), the reach in voxels per axis (``min_um`` and one voxel),
    and the features' box grown by it (None without a feature)."""
    out = b.xp.ones(features.shape, dtype=bool)
    m = tuple(int(math.floor(min_um / s)) + 1 for s in sp)
    return out, m, bbox(b, features, m)


def far_from(b: Backend, features: Any, min_um: float, sp, tile: int = 128) -> Any:
    """Voxels farther than ``min_um`` from every voxel of ``features`` (bool, same shape):
    ``distance_transform_edt(~features) > min_um``.

    Computed tile by tile (``tile`` voxels in y and x, all z): every feature within
    ``min_um`` of a tile's voxel lies in the tile grown by ``min_um`` and one voxel, so
    the nearest feature there is the nearest in the array wherever it is that close, and
    a tile whose grown box holds no feature is far from them all. The distance of each
    voxel to its feature (:func:`feature_distance`'s float64 arithmetic: per axis
    ``((f - c) * s)²``, summed in axis order) is read from a table of the per-axis terms
    by offset and compared with the largest sum whose square root is still ``<= min_um``:
    the same decision as the square root's.
    """
    nd = features.ndim
    out, m, box = _reach_box(b, features, min_um, sp)
    if box is None:
        return out
    limit = _sqrt_at_most(float(min_um))
    lead = tuple(range(nd - 2))  # the axes kept whole (z)
    starts = [range(box[ax].start, box[ax].stop, tile) for ax in (nd - 2, nd - 1)]
    for y0 in starts[0]:
        for x0 in starts[1]:
            own = tuple(box[ax] for ax in lead) + (
                slice(y0, min(y0 + tile, box[nd - 2].stop)),
                slice(x0, min(x0 + tile, box[nd - 1].stop)),
            )
            grown = tuple(
                slice(max(s.start - r, 0), min(s.stop + r, n))
                for s, r, n in zip(own, m, features.shape, strict=True)
            )
            sub = features[grown]
            if not bool(sub.any()):
                continue  # no feature within reach of the tile
            ft = feature_transform(b, ~sub, sp)
            at = tuple(
                slice(o.start - g.start, o.stop - g.start) for o, g in zip(own, grown, strict=True)
            )
            out[own] = _farther(b, ft, at, sub.shape, sp, limit)
    return out


def far_from_shifts(b: Backend, features: Any, min_um: float, sp) -> Any:
    """:func:`far_from` (``distance_transform_edt(~features) > min_um``, bool) by shifted
    ORs instead of feature transforms, for a small ``min_um`` (a few voxels).

    A voxel is near when a feature lies at an offset whose distance, with
    :func:`far_from`'s float64 arithmetic (per axis ``(d * s)²``, summed in axis order,
    against the largest sum whose square root is ``<= min_um``), is within ``min_um``. For
    each offset along the leading axes the allowed offsets along the last axis are
    ``-w..w``: the features dilated by ``w`` along the last axis (grown one step at a
    time), shifted by the leading offset, are ORed in. On the features' box grown by
    ``min_um`` and a voxel (everything outside is far): the same decisions as
    :func:`far_from`.
    """
    import itertools

    xp = b.xp
    nd = features.ndim
    out, m, box = _reach_box(b, features, min_um, sp)
    if box is None:
        return out
    f = features[box]
    limit = _sqrt_at_most(float(min_um))

    def term(ax: int, d: int) -> float:
        t = float(d) * float(sp[ax])
        return t * t

    widths: dict[tuple[int, ...], int] = {}
    for lead in itertools.product(*(range(-r, r + 1) for r in m[:-1])):
        acc = None
        for ax, d in enumerate(lead):
            acc = term(ax, d) if acc is None else acc + term(ax, d)
        w = -1
        for d in range(m[-1] + 1):
            tot = term(nd - 1, d) if acc is None else acc + term(nd - 1, d)
            if tot <= limit:
                w = d
        if w >= 0:
            widths[lead] = w
    near = xp.zeros(f.shape, dtype=bool)
    grown, at_w = f.copy(), 0
    for w in sorted(set(widths.values())):
        while at_w < w:  # one more voxel either way along the last axis
            nxt = grown.copy()
            nxt[..., 1:] |= grown[..., :-1]
            nxt[..., :-1] |= grown[..., 1:]
            grown, at_w = nxt, at_w + 1
        for lead, lw in widths.items():
            if lw != w:
                continue
            dst = tuple(
                slice(max(0, -d), n - max(0, d)) for d, n in zip(lead, f.shape, strict=False)
            )
            src = tuple(
                slice(max(0, d), n + min(0, d)) for d, n in zip(lead, f.shape, strict=False)
            )
            near[dst] |= grown[src]
    out[box] = ~near
    return out


def _farther(b: Backend, ft, at: tuple[slice, ...], shape, sp, limit: float) -> Any:
    """``feature_distance > sqrt(limit)`` on the block ``at`` of a feature transform."""
    xp = b.xp
    nd = len(shape)
    acc = None
    for ax in range(nd):
        n = shape[ax]
        # term table: entry k + n - 1 is ((k as float64) * s)², k = f - c in [-(n - 1), n - 1]
        t = xp.arange(-(n - 1), n, dtype=xp.int64).astype(xp.float64) * sp[ax]
        t *= t
        c = xp.arange(at[ax].start, at[ax].stop, dtype=xp.int32)
        c = c.reshape((-1,) + (1,) * (nd - 1 - ax))
        k = ft[ax][at] - c
        k += n - 1
        term = t[k]
        acc = term if acc is None else xp.add(acc, term, out=acc)
    return acc > limit


def _sqrt_at_most(m: float) -> float:
    """The largest float64 ``a`` with ``sqrt(a) <= m`` (``sqrt(x) > m`` iff ``x > a``)."""
    a = m * m
    while math.sqrt(np.nextafter(a, math.inf)) <= m:
        a = float(np.nextafter(a, math.inf))
    while math.sqrt(a) > m:
        a = float(np.nextafter(a, -math.inf))
    return a


# -- skeleton graph -----------------------------------------------------------------------


def skeleton_graph(coords: np.ndarray, shape: tuple[int, ...], sp: tuple[float, ...]):
    """Sparse graph (µm edge weights) joining 26- (8-) connected skeleton voxels (host)."""
    from scipy import sparse

    n = len(coords)
    index = np.full(shape, -1, dtype=np.int64 if n >= 2**31 else np.int32)
    index[tuple(coords.T)] = np.arange(n)
    rows, cols, w = [], [], []
    nd = len(shape)
    for off in np.ndindex(*(3,) * nd):
        d = np.asarray(off) - 1
        if not any(d) or tuple(d) < (0,) * nd:
            continue  # each undirected edge once
        nb = coords + d
        ok = np.all((nb >= 0) & (nb < np.asarray(shape)), axis=1)
        j = np.full(n, -1, dtype=np.int64)
        j[ok] = index[tuple(nb[ok].T)]
        hit = j >= 0
        rows.append(np.flatnonzero(hit))
        cols.append(j[hit])
        w.append(np.full(int(hit.sum()), math.sqrt(float(np.sum((d * np.asarray(sp)) ** 2)))))
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    ww = np.concatenate(w) if w else np.zeros(0)
    g = sparse.coo_matrix((ww, (r, c)), shape=(n, n)).tocsr()
    return g + g.T


def path_length(pts: np.ndarray, window: int = 5) -> float:
    """Length (µm) of a voxel path (N, ndim) µm, smoothed by a moving average of ``window``
    points (ends kept) so that the staircase of a digital line does not add length."""
    if len(pts) < 2:
        return 0.0
    w = min(window, len(pts))
    if w >= 3:
        kernel = np.ones(w) / w
        pad = np.pad(pts, ((w // 2, w // 2), (0, 0)), mode="edge")
        smooth = np.stack([np.convolve(pad[:, k], kernel, "valid") for k in range(pts.shape[1])], 1)
        smooth[0], smooth[-1] = pts[0], pts[-1]
        pts = smooth
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


def surface_point(pts: np.ndarray, gap_um: float, back_um: float = 2.0) -> np.ndarray:
    """Where a tube whose path (N, ndim) µm starts at ``pts[0]`` meets its cell: ``gap_um``
    before that end, along the direction of the last ``back_um`` of the path."""
    if len(pts) < 2 or not gap_um > 0:
        return pts[0]
    along = np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(pts, axis=0), axis=1)])
    k = int(min(np.searchsorted(along, back_um), len(pts) - 1))
    u = pts[0] - pts[k]
    n = float(np.linalg.norm(u))
    return pts[0] if n == 0 else pts[0] + u * (gap_um / n)


def inside_stack(p: np.ndarray, gl: Glass | None, depth_um: float) -> np.ndarray:
    """An end point (z, y, x µm) extrapolated along a steep path, put back between the
    glass under it and the top of the stack: a tube meets no cell below the glass."""
    z = float(p[0])
    if gl is not None and np.isfinite(gl.z_um):
        z = max(z, float(gl.at(np.asarray([p[1]]), np.asarray([p[2]]))[0]))
    return np.r_[min(max(z, 0.0), depth_um), p[1:]]


def trace_path(pred: np.ndarray, start: int, end: int) -> list[int]:
    out = [end]
    while out[-1] != start:
        nxt = int(pred[out[-1]])
        if nxt < 0:
            return []
        out.append(nxt)
    return out[::-1]


# -- detection ----------------------------------------------------------------------------
