"""Nanotubes of a synthetic field: straight or sloped segments between two cells (or a
cell and the glass) that pass over no other cell, with the occupancy tests they need."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from hcsmito.synth.params import SynthParams
from hcsmito.synth.scene import Scene, Tnt, grid, pick_um

# -- occupancy along a line (for nanotubes) -----------------------------------------------


def _occupancy(scene: Scene, pts: np.ndarray) -> np.ndarray:
    """Object code of points (N, 3) µm: MSC id > 0, -(Jurkat index + 1) < 0, 0 free."""
    p = scene.params
    iy = np.clip(np.rint(pts[:, 1] / p.voxel_size[1]).astype(int), 0, p.shape[-2] - 1)
    ix = np.clip(np.rint(pts[:, 2] / p.voxel_size[2]).astype(int), 0, p.shape[-1] - 1)
    z = pts[:, 0] - p.glass_z_um
    code = np.where((z >= 0) & (z < scene.height[iy, ix]), scene.footprint[iy, ix], 0)
    for k, j in enumerate(scene.jurkats):
        d = (
            ((pts[:, 0] - j.center[0]) / j.radius_z) ** 2
            + ((pts[:, 1] - j.center[1]) / j.radius_xy) ** 2
            + ((pts[:, 2] - j.center[2]) / j.radius_xy) ** 2
        )
        code = np.where(d <= 1, -(k + 1), code)
    return code


def _runs(code: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, start, stop) of the runs of equal values."""
    cuts = np.flatnonzero(np.diff(code)) + 1
    starts = np.r_[0, cuts]
    stops = np.r_[cuts, code.size]
    return [(int(code[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def _endpoint(rng, p: SynthParams, scene: Scene, kind: str, ident: int, th: float):
    """A point (z, y, x) µm inside a cell at height ``th`` above the glass."""
    if kind == "jurkat":
        j = scene.jurkats[ident]
        return (p.glass_z_um + th, j.center[1], j.center[2])
    ok = (scene.footprint == ident) & (scene.height > th + 0.3) & (scene.edge_dist < 12.0)
    yx = pick_um(rng, p, ok)
    return None if yx is None else (p.glass_z_um + th, *yx)


def _passes_other_cell(p, scene, free, iy, ix, msc_dist, nearest_id, end_a, end_b) -> bool:
    """Whether the free part of a tube comes within ``p.tnt_clearance_um`` of a cell other
    than its two ends (the first and last micrometre of the tube are not checked)."""
    gap = p.tnt_clearance_um
    along = np.linalg.norm(free - free[0], axis=1)
    mid = (along > 1.0) & (along < along[-1] - 1.0)
    ends_msc = {ident for kind, ident in (end_a, end_b) if kind == "msc"}
    ends_jur = {ident for kind, ident in (end_a, end_b) if kind == "jurkat"}
    near = mid & (msc_dist[iy, ix] < gap) & ~np.isin(nearest_id[iy, ix], list(ends_msc))
    if near.any():
        return True
    for k, j in enumerate(scene.jurkats):
        if k in ends_jur:
            continue
        d = np.hypot(free[mid, 1] - j.center[1], free[mid, 2] - j.center[2])
        if d.size and d.min() < j.radius_xy + gap:
            return True
    return False


def _tube_line(scene: Scene, pa, pb, step: float):
    """Points every ``step`` µm from ``pa`` towards ``pb`` (N, 3) and the runs of the
    objects they cross (:func:`_runs` of :func:`_occupancy`)."""
    span = math.dist(pa, pb)
    t = np.arange(0.0, span, step) / span
    pts = np.asarray(pa) + t[:, None] * (np.asarray(pb) - np.asarray(pa))
    return pts, _runs(_occupancy(scene, pts))


def _sloped(pa, pb, free_run, step: float, rise: float):
    """End points of the line through ``pa``, ``pb`` (same height) turned in z about the
    middle of its free part (``free_run``, of points every ``step`` µm from ``pa``) so that
    the free part rises by ``rise`` µm from its first to its last point."""
    _, s0, s1 = free_run
    span = math.dist(pa, pb)
    t0, t1 = s0 * step / span, (s1 - 1) * step / span  # fractions of the line
    tm = 0.5 * (t0 + t1)
    k = rise / max(t1 - t0, 1e-9)
    return (pa[0] - k * tm, *pa[1:]), (pb[0] + k * (1 - tm), *pb[1:])


def place_tnts(rng, p: SynthParams, scene: Scene, n: int) -> list[Tnt]:
    glass = [k for k, j in enumerate(scene.jurkats) if not j.adhered]
    mscs = list(range(1, scene.n_msc + 1))
    pairs = []
    if glass and mscs:
        pairs.append((("jurkat", "msc"), 0.5))
    if len(mscs) >= 2:
        pairs.append((("msc", "msc"), 0.3))
    if len(glass) >= 2:
        pairs.append((("jurkat", "jurkat"), 0.2))
    if not pairs:
        return []
    weights = np.array([w for _, w in pairs])
    weights /= weights.sum()
    step = 0.05
    lo, hi = p.tnt_length_um
    out: list[Tnt] = []
    occupied = np.zeros(p.shape[-2:], dtype=bool)  # xy pixels near accepted tubes
    yy, xx = grid(p)
    # distance to, and id of, the nearest MSC: a tube passes no third cell closely
    if scene.n_msc:
        msc_dist, nearest = ndi.distance_transform_edt(
            scene.footprint == 0, sampling=p.voxel_size[1:], return_indices=True
        )
        nearest_id = scene.footprint[nearest[0], nearest[1]]
    else:
        msc_dist = np.full(p.shape[-2:], np.inf)
        nearest_id = np.zeros(p.shape[-2:], dtype=scene.footprint.dtype)
    # the tube's axis stays inside the stack, above the glass by more than its radius
    z_max = (p.scene_shape[0] - 1) * p.voxel_size[0] - p.glass_rise_max_um()
    h_min = 0.5 * p.tnt_diameter_um[1] + 0.2
    for _ in range(n):
        for _attempt in range(p.tnt_attempts):
            (ka, kb) = pairs[int(rng.choice(len(pairs), p=weights))][0]
            pool_a = glass if ka == "jurkat" else mscs
            pool_b = glass if kb == "jurkat" else mscs
            a = pool_a[rng.integers(len(pool_a))]
            b = pool_b[rng.integers(len(pool_b))]
            if ka == kb and a == b:
                continue
            th = rng.uniform(*p.tnt_height_um)
            rise = 0.0
            if p.tnt_slope_um > 0:
                rise = rng.uniform(-p.tnt_slope_um, p.tnt_slope_um)
                if th - 0.5 * abs(rise) < h_min:
                    continue
            if p.glass_z_um + th + 0.5 * abs(rise) > z_max:
                continue
            pa = _endpoint(rng, p, scene, ka, a, th)
            pb = _endpoint(rng, p, scene, kb, b, th)
            if pa is None or pb is None:
                continue
            span = math.dist(pa, pb)
            if span < lo or span > hi + 2 * p.jurkat_diameter_um:
                continue
            want_a = -(a + 1) if ka == "jurkat" else a
            want_b = -(b + 1) if kb == "jurkat" else b
            pts, runs = _tube_line(scene, pa, pb, step)
            if [v for v, _, _ in runs] != [want_a, 0, want_b]:
                continue
            if rise:
                # a sloping tube: the line, cut to 1 µm inside each cell, turns about the
                # middle of its free part so that this rises by `rise`; then cut again
                _, s0, s1 = runs[1]
                m = round(1.0 / step)
                i0, i1 = max(s0 - m, 0), min(s1 - 1 + m, len(pts) - 1)
                free_run = (0, s0 - i0, s1 - i0)
                pa, pb = _sloped(tuple(pts[i0]), tuple(pts[i1]), free_run, step, rise)
                pts, runs = _tube_line(scene, pa, pb, step)
                if [v for v, _, _ in runs] != [want_a, 0, want_b]:
                    continue
            _, s0, s1 = runs[1]
            free = pts[s0:s1]
            if rise and not (
                free[:, 0].min() >= p.glass_z_um + h_min and free[:, 0].max() <= z_max
            ):
                continue
            length = math.dist(free[0], free[-1])
            if not lo <= length <= hi:
                continue
            # the free part runs over the glass, not along a cell's thin edge
            iy = np.clip(np.rint(free[:, 1] / p.voxel_size[1]).astype(int), 0, p.shape[-2] - 1)
            ix = np.clip(np.rint(free[:, 2] / p.voxel_size[2]).astype(int), 0, p.shape[-1] - 1)
            over = (scene.footprint[iy, ix] > 0) * step
            if over.sum() > 2.5 or occupied[iy, ix].any():
                continue
            if _passes_other_cell(p, scene, free, iy, ix, msc_dist, nearest_id, (ka, a), (kb, b)):
                continue
            d = rng.uniform(*p.tnt_diameter_um)
            if rise:  # the height of the free part's midpoint
                th = 0.5 * (float(free[0][0]) + float(free[-1][0])) - p.glass_z_um
            tnt = Tnt(
                tuple(map(float, free[0])),
                tuple(map(float, free[-1])),
                ka,
                a + 1 if ka == "jurkat" else a,
                kb,
                b + 1 if kb == "jurkat" else b,
                d,
                th,
            )
            if rng.uniform() < p.tnt_mito_share and length >= 2.0:
                f = rng.uniform(0.3, 0.7)
                tnt.mito = tuple(
                    map(float, np.asarray(tnt.start) + f * np.subtract(tnt.end, tnt.start))
                )
                tnt.mito_diameter = rng.uniform(*p.tnt_mito_diameter_um)
            out.append(tnt)
            # keep later tubes 2 µm away in xy
            for qy, qx in free[::20, 1:]:
                occupied |= (yy - qy) ** 2 + (xx - qx) ** 2 < 4.0
            break
    return out
