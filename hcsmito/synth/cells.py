"""Geometry of a synthetic co-culture field: MSCs, Jurkat cells, foci, nanotubes, fibres.

Everything here works in micrometres on the 2-D (Y, X) pixel grid of the field: MSCs are
a footprint label image plus a height map (the cells are flat), Jurkat cells are
spheroids, foci are balls, nanotubes and stress fibres are segments. The renderer
(:mod:`hcsmito.synth.field`) turns this scene into voxels. Random numbers come from
generators handed in by the caller, one per part of the scene, so that the MSC layout of
a seed does not depend on the condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from hcsmito.synth.params import Condition, SynthParams

__all__ = ["Focus", "Jurkat", "Scene", "Tnt", "build_scene"]


@dataclass
class Jurkat:
    """A donor cell: a spheroid standing on the glass or on an MSC."""

    center: tuple[float, float, float]  # z, y, x µm
    radius_xy: float
    radius_z: float
    adhered: bool
    msc_id: int  # MSC it rests on, 0 on glass


@dataclass
class Focus:
    """A transferred mitochondrial fragment inside an MSC."""

    center: tuple[float, float, float]
    diameter: float
    cell_id: int


@dataclass
class Tnt:
    """A nanotube: the free segment between two cells, at ``height`` above the glass."""

    start: tuple[float, float, float]  # exit point from the first cell, µm
    end: tuple[float, float, float]  # entry point into the second cell, µm
    from_kind: str
    from_id: int
    to_kind: str
    to_id: int
    diameter: float
    height: float  # axis height above the glass at the midpoint of the free part, µm
    mito: tuple[float, float, float] | None = None
    mito_diameter: float = 0.0

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.subtract(self.end, self.start)))


@dataclass
class Scene:
    """The scene a field is rendered from (2-D maps on the field's (Y, X) grid)."""

    params: SynthParams
    footprint: np.ndarray  # (Y, X) int32 MSC ids
    height: np.ndarray  # (Y, X) float32 top of the MSC above the glass, µm (0 outside)
    edge_dist: np.ndarray  # (Y, X) float32 distance to the cell's own outline, µm
    nucleus: np.ndarray  # (Y, X) bool
    gfp: np.ndarray  # (Y, X) float32 GFP concentration of the MSC cytoplasm
    jurkats: list[Jurkat] = field(default_factory=list)
    foci: list[Focus] = field(default_factory=list)
    tnts: list[Tnt] = field(default_factory=list)
    fibres: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (N, 2) y, x µm

    @property
    def n_msc(self) -> int:
        return int(self.footprint.max(initial=0))


# -- helpers ------------------------------------------------------------------------------


def _grid(p: SynthParams) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (µm) of the field's (Y, X) grid, as open 2-D arrays."""
    ny, nx = p.shape[-2:]
    dy, dx = p.voxel_size[1:]
    return (np.arange(ny, dtype=np.float32) * dy)[:, None], (np.arange(nx, dtype=np.float32) * dx)[
        None, :
    ]


def _extent(p: SynthParams) -> tuple[float, float]:
    ny, nx = p.shape[-2:]
    return ny * p.voxel_size[1], nx * p.voxel_size[2]


def smooth_noise(rng: np.random.Generator, p: SynthParams, scale_um: float) -> np.ndarray:
    """Unit-variance smooth random field with correlation length ``scale_um`` (Y, X).

    Drawn on a grid fixed in micrometres, then interpolated to the pixels: the same seed
    gives the same physical pattern whatever the voxel size.
    """
    ly, lx = _extent(p)
    step = scale_um / 3.0
    pad = 8
    ny, nx = int(ly / step) + 2 * pad, int(lx / step) + 2 * pad
    white = rng.standard_normal((ny, nx)).astype(np.float32)
    coarse = ndi.gaussian_filter(white, 3.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    yy, xx = _grid(p)
    cy = np.broadcast_to(yy / step + pad, (p.shape[-2], p.shape[-1]))
    cx = np.broadcast_to(xx / step + pad, (p.shape[-2], p.shape[-1]))
    return ndi.map_coordinates(coarse, [cy, cx], order=1, mode="nearest").astype(np.float32)


def _pixel(p: SynthParams, y: float, x: float) -> tuple[int, int]:
    ny, nx = p.shape[-2:]
    iy = min(max(round(y / p.voxel_size[1]), 0), ny - 1)
    ix = min(max(round(x / p.voxel_size[2]), 0), nx - 1)
    return iy, ix


def _z_room(p: SynthParams) -> tuple[float, float]:
    """The room of a Jurkat cell: ``(z_top, need)``, a cell of height ``h`` with its bottom
    at ``z`` (µm, flat scene) fits when ``z + min(h, need) <= z_top``.

    A whole cell keeps 0.3 µm below the top plane and leaves room for the tilted glass to
    lift it (``need`` infinite); a cell the stack may cut (``allow_cut``) needs only its
    lowest 0.5 µm in the stack, so that its label and its truth row exist.
    """
    top = (p.scene_shape[0] - 1) * p.voxel_size[0] - p.glass_rise_max_um()
    if p.allow_cut and p.ndim == 3:
        return top, 0.5
    return top - 0.3, math.inf


def _free_glass(p: SynthParams, lab: np.ndarray) -> np.ndarray:
    """Distance (µm) from each pixel to the nearest MSC (infinite in a field without one)."""
    if not lab.any():
        return np.full(lab.shape, np.inf)
    return ndi.distance_transform_edt(lab == 0, sampling=p.voxel_size[1:])


def _pick(rng: np.random.Generator, mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return None if idx.size == 0 else int(idx[rng.integers(idx.size)])


def _pick_um(rng: np.random.Generator, p: SynthParams, mask: np.ndarray):
    """A random point (y, x) µm in a pixel of ``mask``, jittered inside the pixel."""
    i = _pick(rng, mask)
    if i is None:
        return None
    iy, ix = divmod(i, mask.shape[1])
    dy, dx = p.voxel_size[1:]
    return (iy + rng.uniform(-0.45, 0.45)) * dy, (ix + rng.uniform(-0.45, 0.45)) * dx


def _outline_distance(lab: np.ndarray, p: SynthParams) -> np.ndarray:
    """Distance (µm) from each pixel of a label image to its label's outline (0 outside)."""
    inner = lab > 0
    for axis in (0, 1):
        for shift in (1, -1):
            rolled = np.roll(lab, shift, axis=axis)
            # the field border is not an outline: the cell goes on beyond it
            valid = np.zeros_like(inner)
            sl = [slice(None), slice(None)]
            sl[axis] = slice(1, None) if shift == 1 else slice(None, -1)
            valid[tuple(sl)] = True
            inner &= ~valid | (rolled == lab)
    dist = ndi.distance_transform_edt(inner, sampling=p.voxel_size[1:])
    return (dist + 0.5 * min(p.voxel_size[1:])).astype(np.float32) * (lab > 0)


def _relabel_largest(lab: np.ndarray, min_area_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep each label's largest 4-connected piece, drop the small ones, renumber 1..n.

    Returns the new labels and, for each new id, the old one.
    """
    out = np.zeros_like(lab)
    kept = []
    objects = ndi.find_objects(lab)
    for old, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        mine = lab[sl] == old
        pieces, n = ndi.label(mine)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            mine = pieces == (int(np.argmax(sizes)) + 1)
        if mine.sum() < min_area_px:
            continue
        kept.append(old)
        out[sl][mine] = len(kept)
    return out, np.asarray(kept, dtype=np.int32)


# -- MSCs ---------------------------------------------------------------------------------


def _msc_seeds(rng: np.random.Generator, p: SynthParams) -> list[tuple[float, float]]:
    ly, lx = _extent(p)
    min_dist = 0.62 * p.msc_diameter_um
    seeds: list[tuple[float, float]] = []
    if p.n_msc == 0:
        return []
    n = max(p.n_msc + int(rng.integers(-p.n_msc_spread, p.n_msc_spread + 1)), 1)
    for _ in range(400 * max(n, 1)):
        if len(seeds) == n:
            break
        y, x = rng.uniform(0.1 * ly, 0.9 * ly), rng.uniform(0.1 * lx, 0.9 * lx)
        if all(math.hypot(y - sy, x - sx) >= min_dist for sy, sx in seeds):
            seeds.append((y, x))
    return seeds


def _msc_footprints(rng: np.random.Generator, p: SynthParams):
    """Seeded, noise-perturbed anisotropic discs, tessellated where they meet."""
    yy, xx = _grid(p)
    seeds = _msc_seeds(rng, p)
    best = np.full(p.shape[-2:], np.inf, dtype=np.float32)
    lab = np.zeros(p.shape[-2:], dtype=np.int32)
    shapes = []
    for i, (cy, cx) in enumerate(seeds, start=1):
        r = 0.5 * p.msc_diameter_um * float(np.clip(1 + p.msc_diameter_cv * rng.normal(), 0.6, 1.4))
        theta = rng.uniform(0, math.pi)
        aspect = rng.uniform(1.0, 1.6)
        noise = 0.7 * smooth_noise(rng, p, 14.0) + 0.45 * smooth_noise(rng, p, 5.0)
        u = (yy - cy) * math.cos(theta) + (xx - cx) * math.sin(theta)
        v = -(yy - cy) * math.sin(theta) + (xx - cx) * math.cos(theta)
        d = np.sqrt((u / aspect) ** 2 + (v * aspect) ** 2)
        score = d / (r * np.maximum(1 + p.msc_irregularity * noise, 0.3))
        better = score < best
        best[better] = score[better]
        lab[better] = i
        shapes.append((cy, cx, r, theta, aspect))
    lab[best >= 1] = 0
    return lab, shapes


def _msc_height(p: SynthParams, lab: np.ndarray, shapes, nuc_ids: np.ndarray):
    """Dome-profiled cytoplasm height and the nuclei, for footprint ``lab``."""
    yy, xx = _grid(p)
    edge = _outline_distance(lab, p)
    u = np.minimum(edge / p.msc_dome_um, 1.0)
    dome = np.sqrt(np.maximum(1 - (1 - u) ** 2, 0))
    height = (p.msc_edge_height_um + (p.msc_height_um - p.msc_edge_height_um) * dome) * (lab > 0)
    nucleus = np.zeros(lab.shape, dtype=bool)
    rn = 0.5 * p.msc_nucleus_diameter_um
    if rn > 0:
        for new_id, old in enumerate(nuc_ids, start=1):
            cy, cx, _, theta, aspect = shapes[old - 1]
            a = min(aspect, 1.4)
            uu = (yy - cy) * math.cos(theta) + (xx - cx) * math.sin(theta)
            vv = -(yy - cy) * math.sin(theta) + (xx - cx) * math.cos(theta)
            rho2 = (uu / (rn * a)) ** 2 + (vv * a / rn) ** 2
            inside = (rho2 < 1) & (lab == new_id)
            nuc_h = p.msc_nucleus_height_um * np.sqrt(np.maximum(1 - rho2, 0))
            height = np.where(inside, np.maximum(height, nuc_h), height)
            nucleus |= inside & (nuc_h > height - 1e-3)
    return height.astype(np.float32), edge, nucleus


# -- Jurkat cells -------------------------------------------------------------------------


def _jurkat_fits(jurkats: list[Jurkat], y: float, x: float, r: float, gap: float) -> bool:
    return all(
        math.hypot(y - j.center[1], x - j.center[2]) >= r + j.radius_xy + gap for j in jurkats
    )


def _place_glass_jurkats(
    rng, p: SynthParams, lab: np.ndarray, radii: list[float], placed=(), *, carve: bool = True
):
    """Jurkat cells on the glass: on free glass where there is room, else MSCs make way
    (``carve``) or the cell is left out."""
    ly, lx = _extent(p)
    yy, xx = _grid(p)
    free = _free_glass(p, lab)
    z_top, reserve = _z_room(p)
    out: list[Jurkat] = []
    for r in radii:
        c = r * p.jurkat_aspect_z
        if p.glass_z_um + min(2 * c, reserve) > z_top:
            continue  # taller than the field: left out rather than cut
        margin = r + 0.5
        inside = (yy >= margin) & (yy <= ly - margin) & (xx >= margin) & (xx <= lx - margin)
        pos = None
        for need in (
            (r + p.jurkat_glass_clearance_um, 0.0) if carve else (r + p.jurkat_glass_clearance_um,)
        ):
            ok = inside & (free >= need) if need > 0 else inside
            for _ in range(60):
                cand = _pick_um(rng, p, ok)
                if cand is None:
                    break
                if _jurkat_fits([*placed, *out], *cand, r, p.jurkat_gap_um):
                    pos = cand
                    break
            if pos is not None:
                break
        if pos is None:
            continue
        y, x = pos
        # MSCs give way to a Jurkat cell on the glass (no contact: it is not adhered)
        clear = (yy - y) ** 2 + (xx - x) ** 2 < (r + p.jurkat_glass_clearance_um) ** 2
        if carve:
            lab[clear] = 0
        out.append(Jurkat((p.glass_z_um + c, y, x), r, c, False, 0))
    return out


def _place_adhered_jurkats(rng, p: SynthParams, scene: Scene, radii: list[float]):
    """Jurkat cells resting on the upper surface of an MSC, which yields under them."""
    ly, lx = _extent(p)
    yy, xx = _grid(p)
    z_top, reserve = _z_room(p)
    out: list[Jurkat] = []
    missed: list[float] = []
    for r in radii:
        c = r * p.jurkat_aspect_z
        margin = r + 0.5
        inside = (yy >= margin) & (yy <= ly - margin) & (xx >= margin) & (xx <= lx - margin)
        ok = (
            inside
            & (scene.edge_dist >= 0.45 * r)
            & (p.glass_z_um + scene.height + min(2 * c, reserve) <= z_top)
            & (scene.height > 0)
        )
        pos = None
        for _ in range(80):
            cand = _pick_um(rng, p, ok)
            if cand is None:
                break
            if _jurkat_fits(scene.jurkats + out, *cand, r, p.jurkat_gap_um):
                pos = cand
                break
        if pos is None:
            missed.append(r)
            continue
        y, x = pos
        iy, ix = _pixel(p, y, x)
        base = float(scene.height[iy, ix])
        msc_id = int(scene.footprint[iy, ix])
        # the cell below yields to the spheroid's lower surface
        rho2 = ((yy - y) ** 2 + (xx - x) ** 2) / r**2
        lower = base + c * (1 - np.sqrt(np.maximum(1 - rho2, 0)))
        under = rho2 < 1
        scene.height[under] = np.minimum(scene.height[under], lower[under])
        scene.height[iy, ix] = base
        out.append(Jurkat((p.glass_z_um + base + c, y, x), r, c, True, msc_id))
    return out, missed


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
    yx = _pick_um(rng, p, ok)
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


def _place_tnts(rng, p: SynthParams, scene: Scene, n: int) -> list[Tnt]:
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
    yy, xx = _grid(p)
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


# -- foci ---------------------------------------------------------------------------------


def _place_foci(rng, p: SynthParams, scene: Scene, rate: float, areas: np.ndarray) -> list[Focus]:
    yy, xx = _grid(p)
    dz = p.voxel_size[0]
    near_jurkat = np.zeros(p.shape[-2:], dtype=bool)
    for j in scene.jurkats:
        near_jurkat |= (yy - j.center[1]) ** 2 + (xx - j.center[2]) ** 2 < (
            j.radius_xy + p.foci_jurkat_clearance_um
        ) ** 2
    nucleus = ndi.binary_dilation(scene.nucleus, iterations=max(1, round(0.8 / p.voxel_size[1])))
    base_ok = (scene.footprint > 0) & ~near_jurkat & ~nucleus
    blocked = [t.mito for t in scene.tnts if t.mito is not None]
    nominal = math.pi * (0.5 * p.msc_diameter_um) ** 2
    out: list[Focus] = []
    for cell in range(1, scene.n_msc + 1):
        lam = rate * min(1.0, areas[cell] / nominal)
        n = int(rng.poisson(lam))
        placed = 0
        for _attempt in range(40 * n):
            if placed == n:
                break
            d = rng.uniform(*p.foci_diameter_um)
            r = 0.5 * d
            rz = max(r, 0.5 * dz)
            ok = base_ok & (scene.footprint == cell) & (scene.edge_dist >= r + 0.6)
            ok &= scene.height >= 2 * rz + 0.5
            yx = _pick_um(rng, p, ok)
            if yx is None:
                break
            y, x = yx
            if any(
                math.hypot(y - f.center[1], x - f.center[2]) < p.foci_min_distance_um for f in out
            ) or any(math.hypot(y - m[1], x - m[2]) < p.foci_min_distance_um for m in blocked):
                continue
            # lowest height over the focus footprint bounds its depth
            iy, ix = _pixel(p, y, x)
            ry = int(math.ceil((r + 0.5 * p.voxel_size[1]) / p.voxel_size[1])) + 1
            rx = int(math.ceil((r + 0.5 * p.voxel_size[2]) / p.voxel_size[2])) + 1
            patch = scene.height[max(iy - ry, 0) : iy + ry + 1, max(ix - rx, 0) : ix + rx + 1]
            top = float(patch.min())
            z_lo = p.glass_z_um + rz + 0.05
            z_hi = p.glass_z_um + top - rz - 0.05
            if z_hi <= z_lo:
                continue
            z = rng.uniform(z_lo, z_hi)
            out.append(Focus((z, y, x), d, cell))
            placed += 1
    return out


# -- stress fibres ------------------------------------------------------------------------


def _fibres(rng, p: SynthParams, scene: Scene) -> list[tuple[np.ndarray, int]]:
    out = []
    step = 0.1
    for cell in range(1, scene.n_msc + 1):
        ok = (scene.footprint == cell) & (scene.edge_dist >= 2.0)
        theta0 = rng.uniform(0, math.pi)
        for _ in range(p.fibres_per_msc):
            yx = _pick_um(rng, p, ok)
            if yx is None:
                break
            theta = theta0 + rng.normal(0, 0.15)
            half = 0.5 * rng.uniform(10.0, 40.0)
            s = np.arange(-half, half, step)
            pts = np.stack([yx[0] + s * math.sin(theta), yx[1] + s * math.cos(theta)], axis=1)
            iy = np.rint(pts[:, 0] / p.voxel_size[1]).astype(int)
            ix = np.rint(pts[:, 1] / p.voxel_size[2]).astype(int)
            inside = (iy >= 0) & (iy < p.shape[-2]) & (ix >= 0) & (ix < p.shape[-1])
            keep = np.zeros(len(pts), dtype=bool)
            keep[inside] = ok[iy[inside], ix[inside]]
            if keep.any():
                out.append((pts[keep], cell))
    return out


# -- the whole scene ----------------------------------------------------------------------


def build_scene(p: SynthParams, condition: Condition, seed: int) -> Scene:
    """Draw the geometry of one field.

    Parameters
    ----------
    p : SynthParams
        Physical parameters.
    condition : Condition
        Rates of transfer, adhesion and nanotubes.
    seed : int
        Seed; the MSC layout depends on it alone, not on the condition.

    Returns
    -------
    Scene
    """
    streams = np.random.SeedSequence(seed).spawn(6)
    r_msc, r_jur, r_tnt, r_foci, r_fib, r_tex = (np.random.default_rng(s) for s in streams)

    lab, shapes = _msc_footprints(r_msc, p)

    # Jurkat cells: sizes and how many rest on MSCs
    share = min(1.0, condition.adhesion_share * p.adhesion_rate)
    n_jurkat = 0
    if p.n_jurkat > 0:
        spread = int(r_jur.integers(-p.n_jurkat_spread, p.n_jurkat_spread + 1))
        n_jurkat = max(p.n_jurkat + spread, 1)
    n_adh = int(r_jur.binomial(n_jurkat, share)) if p.n_msc > 0 else 0
    radii = [
        0.5
        * p.jurkat_diameter_um
        * float(np.clip(1 + p.jurkat_diameter_cv * r_jur.normal(), 0.7, 1.3))
        for _ in range(n_jurkat)
    ]
    glass = _place_glass_jurkats(r_jur, p, lab, radii[n_adh:])

    nominal_px = math.pi * (0.5 * p.msc_diameter_um) ** 2 / (p.voxel_size[1] * p.voxel_size[2])
    lab, kept = _relabel_largest(lab, 0.06 * nominal_px)
    height, edge, nucleus = _msc_height(p, lab, shapes, kept)

    # GFP: per-cell level, smooth texture, nucleus
    levels = np.r_[
        0.0, p.msc_gfp * np.clip(1 + p.msc_gfp_cv * r_tex.normal(size=len(kept)), 0.3, 2)
    ]
    texture = np.clip(1 + p.msc_texture * smooth_noise(r_tex, p, 3.0), 0.2, None)
    gfp = (levels[lab] * texture * np.where(nucleus, p.msc_nucleus_gfp, 1.0)).astype(np.float32)

    scene = Scene(p, lab, height, edge, nucleus, gfp, jurkats=glass)
    adhered, missed = _place_adhered_jurkats(r_jur, p, scene, radii[:n_adh])
    # cells with no room on an MSC settle on free glass (the MSCs no longer move)
    late = _place_glass_jurkats(r_jur, p, lab, missed, glass + adhered, carve=False)
    scene.jurkats = glass + adhered + late
    # order Jurkat cells by position so ids do not depend on how they were placed
    scene.jurkats.sort(key=lambda j: (j.center[1], j.center[2]))

    n_tnt = int(r_tnt.poisson(condition.tnt_rate * p.tnt_rate))
    scene.tnts = _place_tnts(r_tnt, p, scene, n_tnt)

    areas = np.bincount(lab.ravel(), minlength=scene.n_msc + 1) * p.voxel_size[1] * p.voxel_size[2]
    scene.foci = _place_foci(r_foci, p, scene, condition.foci_per_msc * p.foci_rate, areas)
    scene.fibres = _fibres(r_fib, p, scene)
    return scene
