"""Geometry of a synthetic co-culture field: MSCs, Jurkat cells, foci, nanotubes, fibres.

Everything here works in micrometres on the 2-D (Y, X) pixel grid of the field: MSCs are
a footprint label image plus a height map (the cells are flat), Jurkat cells are
spheroids, foci are balls, nanotubes and stress fibres are segments. The renderer
(:mod:`hcsmito.synth.field`) turns this scene into voxels. Random numbers come from
generators handed in by the caller, one per part of the scene, so that the MSC layout of
a seed does not depend on the condition. The scene and the grid helpers are in
:mod:`hcsmito.synth.scene`, the nanotubes in :mod:`hcsmito.synth.nanotubes`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from hcsmito.synth.nanotubes import place_tnts
from hcsmito.synth.params import Condition, SynthParams
from hcsmito.synth.scene import (
    NUCLEUS_BASE_UM,
    Focus,
    Jurkat,
    Scene,
    Tnt,
    extent,
    grid,
    msc_nucleus_axes,
    msc_nucleus_rho2,
    pick_um,
    pixel,
    smooth_noise,
    z_room,
)

__all__ = ["Focus", "Jurkat", "Scene", "Tnt", "build_scene"]


def _free_glass(p: SynthParams, lab: np.ndarray) -> np.ndarray:
    """Distance (µm) from each pixel to the nearest MSC (infinite in a field without one)."""
    if not lab.any():
        return np.full(lab.shape, np.inf)
    return ndi.distance_transform_edt(lab == 0, sampling=p.voxel_size[1:])


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
    ly, lx = extent(p)
    min_dist = (0.62 - 0.12 * p.msc_crowding) * p.msc_diameter_um
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
    """Seeded, noise-perturbed anisotropic discs, tessellated where they meet; each cell
    holds the footprint of its own nuclear bulge (a neighbour does not cut a nucleus)."""
    yy, xx = grid(p)
    seeds = _msc_seeds(rng, p)
    best = np.full(p.shape[-2:], np.inf, dtype=np.float32)
    lab = np.zeros(p.shape[-2:], dtype=np.int32)
    shapes = []
    for i, (cy, cx) in enumerate(seeds, start=1):
        r = 0.5 * p.msc_diameter_um * float(np.clip(1 + p.msc_diameter_cv * rng.normal(), 0.6, 1.4))
        if p.msc_crowding:  # wider discs: neighbours meet along long borders
            r *= 1 + 0.5 * p.msc_crowding
        theta = rng.uniform(0, math.pi)
        aspect = rng.uniform(1.0, 1.6)
        noise = 0.7 * smooth_noise(rng, p, 14.0) + 0.45 * smooth_noise(rng, p, 5.0)
        u = (yy - cy) * math.cos(theta) + (xx - cx) * math.sin(theta)
        v = -(yy - cy) * math.sin(theta) + (xx - cx) * math.cos(theta)
        d = np.sqrt((u / aspect) ** 2 + (v * aspect) ** 2)
        score = d / (r * np.maximum(1 + p.msc_irregularity * noise, 0.3))
        shape = (cy, cx, r, theta, aspect)
        score[msc_nucleus_rho2(p, shape, yy, xx, scale=1 / 0.9) < 1] = 0.0
        better = score < best
        best[better] = score[better]
        lab[better] = i
        shapes.append(shape)
    lab[best >= 1] = 0
    return lab, shapes


def _nuclear_zone(p: SynthParams, lab: np.ndarray, shapes) -> np.ndarray:
    """(Y, X) bool: the footprints of the MSCs' nuclear bulges (``shapes[i - 1]`` the disc
    of label ``i``), each within its cell."""
    yy, xx = grid(p)
    zone = np.zeros(lab.shape, dtype=bool)
    for i, shape in enumerate(shapes, start=1):
        zone |= (msc_nucleus_rho2(p, shape, yy, xx, scale=1 / 0.9) < 1) & (lab == i)
    return zone


def _msc_height(p: SynthParams, lab: np.ndarray, shapes, nuc_ids: np.ndarray):
    """Dome-profiled cytoplasm height, the nuclei (GFP's nuclear region) and the top of
    each cell's normal nucleus (µm above the glass, 0 outside it), for footprint ``lab``."""
    yy, xx = grid(p)
    edge = _outline_distance(lab, p)

    def dome(dist):
        u = np.minimum(dist / p.msc_dome_um, 1.0)
        return np.sqrt(np.maximum(1 - (1 - u) ** 2, 0))

    rise = dome(edge)
    if p.msc_crowding:  # thinning only towards the glass, not between touching cells
        glass_side = dome(_outline_distance((lab > 0).astype(lab.dtype), p))
        rise = (1 - p.msc_crowding) * rise + p.msc_crowding * glass_side
    height = (p.msc_edge_height_um + (p.msc_height_um - p.msc_edge_height_um) * rise) * (lab > 0)
    nucleus = np.zeros(lab.shape, dtype=bool)
    nucleus_top = np.zeros(lab.shape, dtype=np.float32)
    for new_id, old in enumerate(nuc_ids, start=1):  # as synth.nuclei draws it
        rz = msc_nucleus_axes(p, shapes[old - 1])[0]
        rho2 = msc_nucleus_rho2(p, shapes[old - 1], yy, xx)
        inside = (rho2 < 1) & (lab == new_id)
        nucleus_top[inside] = (NUCLEUS_BASE_UM + rz * (1 + np.sqrt(np.maximum(1 - rho2, 0))))[
            inside
        ]
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
    return height.astype(np.float32), edge, nucleus, nucleus_top


# -- Jurkat cells -------------------------------------------------------------------------


def _jurkat_fits(jurkats: list[Jurkat], y: float, x: float, r: float, gap: float) -> bool:
    return all(
        math.hypot(y - j.center[1], x - j.center[2]) >= r + j.radius_xy + gap for j in jurkats
    )


def _place_glass_jurkats(
    rng,
    p: SynthParams,
    lab: np.ndarray,
    radii: list[float],
    placed=(),
    *,
    carve: bool = True,
    keep: np.ndarray | None = None,
):
    """Jurkat cells on the glass: on free glass where there is room, else MSCs make way
    (``carve``), but not their nuclei (``keep``: pixels no cell may clear), or the cell is
    left out."""
    ly, lx = extent(p)
    yy, xx = grid(p)
    free = _free_glass(p, lab)
    kept_clear = (
        ndi.distance_transform_edt(~keep, sampling=p.voxel_size[1:])
        if carve and keep is not None and keep.any()
        else None
    )
    pixel_diag = math.hypot(*p.voxel_size[1:])
    z_top, reserve = z_room(p)
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
            if need == 0 and kept_clear is not None:  # MSCs make way, their nuclei do not
                ok = ok & (kept_clear >= r + p.jurkat_glass_clearance_um + pixel_diag)
            for _ in range(60):
                cand = pick_um(rng, p, ok)
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
    ly, lx = extent(p)
    yy, xx = grid(p)
    z_top, reserve = z_room(p)
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
            cand = pick_um(rng, p, ok)
            if cand is None:
                break
            if _jurkat_fits(scene.jurkats + out, *cand, r, p.jurkat_gap_um):
                under, lower = _resting_surface(p, scene, cand, r, c)
                if not _cuts_nucleus(scene, under, lower):
                    pos = cand
                    break
        if pos is None:
            missed.append(r)
            continue
        y, x = pos
        iy, ix = pixel(p, y, x)
        base = float(scene.height[iy, ix])
        msc_id = int(scene.footprint[iy, ix])
        # the cell below yields to the spheroid's lower surface
        scene.height[under] = np.minimum(scene.height[under], lower[under])
        scene.height[iy, ix] = base
        out.append(Jurkat((p.glass_z_um + base + c, y, x), r, c, True, msc_id))
    return out, missed


#: Cytoplasm (µm) an MSC keeps over its nucleus under a donor cell resting on it.
NUCLEUS_COVER_UM = 0.3


def _resting_surface(p: SynthParams, scene: Scene, yx: tuple[float, float], r: float, c: float):
    """Where a donor cell of radii ``r, c`` resting at ``yx`` (µm) on the MSCs lies over
    them (``under``) and the height of its lower surface there (µm above the glass)."""
    yy, xx = grid(p)
    y, x = yx
    base = float(scene.height[pixel(p, y, x)])
    rho2 = ((yy - y) ** 2 + (xx - x) ** 2) / r**2
    return rho2 < 1, base + c * (1 - np.sqrt(np.maximum(1 - rho2, 0)))


def _cuts_nucleus(scene: Scene, under: np.ndarray, lower: np.ndarray) -> bool:
    """Whether the MSCs, yielding to a donor's lower surface, would leave less than
    :data:`NUCLEUS_COVER_UM` over a nucleus (or less than they had): a nucleus does not
    yield, the donor rests on the cytoplasm around and over it."""
    top = scene.nucleus_top
    if top is None:
        return False
    over = under & (top > 0)
    return bool((lower[over] < np.minimum(scene.height[over], top[over] + NUCLEUS_COVER_UM)).any())


# -- foci ---------------------------------------------------------------------------------


def _place_foci(rng, p: SynthParams, scene: Scene, rate: float, areas: np.ndarray) -> list[Focus]:
    yy, xx = grid(p)
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
            yx = pick_um(rng, p, ok)
            if yx is None:
                break
            y, x = yx
            if any(
                math.hypot(y - f.center[1], x - f.center[2]) < p.foci_min_distance_um for f in out
            ) or any(math.hypot(y - m[1], x - m[2]) < p.foci_min_distance_um for m in blocked):
                continue
            # lowest height over the focus footprint bounds its depth
            iy, ix = pixel(p, y, x)
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
            yx = pick_um(rng, p, ok)
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
    glass = _place_glass_jurkats(r_jur, p, lab, radii[n_adh:], keep=_nuclear_zone(p, lab, shapes))

    nominal_px = math.pi * (0.5 * p.msc_diameter_um) ** 2 / (p.voxel_size[1] * p.voxel_size[2])
    lab, kept = _relabel_largest(lab, 0.06 * nominal_px)
    height, edge, nucleus, nucleus_top = _msc_height(p, lab, shapes, kept)

    # GFP: per-cell level, smooth texture, nucleus
    levels = np.r_[
        0.0, p.msc_gfp * np.clip(1 + p.msc_gfp_cv * r_tex.normal(size=len(kept)), 0.3, 2)
    ]
    texture = np.clip(1 + p.msc_texture * smooth_noise(r_tex, p, 3.0), 0.2, None)
    gfp = (levels[lab] * texture * np.where(nucleus, p.msc_nucleus_gfp, 1.0)).astype(np.float32)

    scene = Scene(p, lab, height, edge, nucleus, gfp, jurkats=glass, nucleus_top=nucleus_top)
    scene.msc_shapes = [shapes[old - 1] for old in kept]
    adhered, missed = _place_adhered_jurkats(r_jur, p, scene, radii[:n_adh])
    # cells with no room on an MSC settle on free glass (the MSCs no longer move)
    late = _place_glass_jurkats(r_jur, p, lab, missed, glass + adhered, carve=False)
    scene.jurkats = glass + adhered + late
    # order Jurkat cells by position so ids do not depend on how they were placed
    scene.jurkats.sort(key=lambda j: (j.center[1], j.center[2]))

    n_tnt = int(r_tnt.poisson(condition.tnt_rate * p.tnt_rate))
    scene.tnts = place_tnts(r_tnt, p, scene, n_tnt)

    areas = np.bincount(lab.ravel(), minlength=scene.n_msc + 1) * p.voxel_size[1] * p.voxel_size[2]
    scene.foci = _place_foci(r_foci, p, scene, condition.foci_per_msc * p.foci_rate, areas)
    scene.fibres = _fibres(r_fib, p, scene)
    return scene
