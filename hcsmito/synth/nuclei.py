"""Nuclei and cell fate of a synthetic field: which cells are apoptotic, their nuclei
(normal, condensed or fragmented), and the Hoechst and annexin V they show.

Drawn only with a nuclear or annexin V channel (:attr:`SynthParams.draws_fate`), from
streams of their own (children 8 and 9 of the field's seed): the scene and the three
other channels draw exactly what they draw without them. The fate of every cell is drawn
first, in a fixed number of draws, so it is the same with the Hoechst channel, the
annexin V channel or both.

The nuclei are built on the flat scene (before the glass tilts it) and rendered like the
Jurkat spheroids: a voxel belongs to a nucleus when its centre lies in the nucleus's
ellipsoid (or in one of its fragments) and in its cell's truth label, so a nucleus never
leaves its cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from hcsmito.synth.params import Condition, SynthParams
from hcsmito.synth.render import Glass, bbox, splat
from hcsmito.synth.scene import NUCLEUS_BASE_UM, Scene, msc_nucleus_axes

__all__ = ["Fate", "Nucleus", "annexin_object", "draw_fate", "hoechst_object", "nuclei_label"]

NORMAL, CONDENSED, FRAGMENTED = "normal", "condensed", "fragmented"


@dataclass
class Nucleus:
    """The nucleus of one cell, in the flat scene (µm)."""

    cell_kind: str  # "msc" or "jurkat"
    cell_id: int  # label value in labels[cell_kind]
    center: tuple[float, float, float]  # z, y, x
    radii: tuple[float, float, float]  # semi-axes along z, u, v
    theta: float  # direction of u in the (y, x) plane, rad from +y towards +x
    state: str  # normal, condensed or fragmented
    hoechst: float  # concentration
    fragments: list[tuple[tuple[float, float, float], float]] = field(default_factory=list)

    @property
    def apoptotic(self) -> bool:
        return self.state != NORMAL


@dataclass
class Fate:
    """Which cells of a field are apoptotic, and every cell's nucleus (MSCs first, in id
    order, then Jurkat cells: nucleus id = position + 1)."""

    msc_apoptotic: np.ndarray  # (n_msc,) bool
    jurkat_apoptotic: np.ndarray  # (n_jurkat,) bool
    jurkat_contact: np.ndarray  # (n_jurkat,) bool: adhered, or a nanotube to an MSC
    annexin: np.ndarray  # (n_msc + n_jurkat,) ring concentration, 0 for live cells
    nuclei: list[Nucleus]


# -- drawing ------------------------------------------------------------------------------


def draw_fate(p: SynthParams, condition: Condition, scene: Scene, seed: int) -> Fate:
    """Draw the fate and the nucleus of every cell of a flat ``scene``.

    A Jurkat cell in contact with an MSC (adhered on it, or joined to it by a nanotube) is
    apoptotic with :meth:`Condition.jurkat_apoptosis` ``(True)``, one without with
    ``(False)``; an MSC with ``condition.apoptosis_msc``; all times ``p.apoptosis_rate``.
    """
    streams = np.random.SeedSequence(seed).spawn(11)
    r_state, r_geom = np.random.default_rng(streams[8]), np.random.default_rng(streams[9])
    n_msc, n_jur = scene.n_msc, len(scene.jurkats)
    linked = {
        (t.from_id if t.from_kind == "jurkat" else t.to_id)
        for t in scene.tnts
        if {t.from_kind, t.to_kind} == {"jurkat", "msc"}
    }
    contact = np.array(
        [j.adhered or k in linked for k, j in enumerate(scene.jurkats, start=1)], dtype=bool
    )
    rate = p.apoptosis_rate
    p_msc = min(1.0, condition.apoptosis_msc * rate)
    p_jur = np.array([min(1.0, condition.jurkat_apoptosis(bool(c)) * rate) for c in contact])
    # a fixed number of draws, whatever the outcome: the fate does not depend on the channels
    msc_apo = r_state.random(n_msc) < p_msc
    jur_apo = r_state.random(n_jur) < p_jur
    fragmented = r_state.random(n_msc + n_jur) < p.apoptotic_fragmented_share
    ring = p.annexin_intensity * r_state.uniform(0.7, 1.3, n_msc + n_jur)
    apoptotic = np.r_[msc_apo, jur_apo]
    states = np.where(apoptotic, np.where(fragmented, FRAGMENTED, CONDENSED), NORMAL)

    nuclei = [
        _msc_nucleus(r_geom, p, scene, i, str(states[i - 1])) for i in range(1, n_msc + 1)
    ] + [
        _jurkat_nucleus(r_geom, p, scene, k, str(states[n_msc + k - 1]))
        for k in range(1, n_jur + 1)
    ]
    return Fate(msc_apo, jur_apo, contact, np.where(apoptotic, ring, 0.0), nuclei)


def _level(rng: np.random.Generator, p: SynthParams, state: str) -> float:
    level = p.nucleus_hoechst * float(np.clip(1 + p.nucleus_hoechst_cv * rng.normal(), 0.3, 2))
    return level * (rng.uniform(*p.apoptotic_hoechst) if state != NORMAL else 1.0)


def _msc_nucleus(rng, p: SynthParams, scene: Scene, cell: int, state: str) -> Nucleus:
    """A flat ellipsoid under the nuclear bulge of MSC ``cell``: the bulge's footprint
    shrunk to 0.9, from 0.3 µm above the glass to 0.6 µm below the bulge's top."""
    shape = scene.msc_shapes[cell - 1]
    cy, cx, r_cell, theta, _ = shape
    rz, ru, rv = msc_nucleus_axes(p, shape)
    rn = 0.5 * p.msc_nucleus_diameter_um if p.msc_nucleus_diameter_um > 0 else 0.3 * r_cell
    level = _level(rng, p, state)
    if state == CONDENSED:
        s = rng.uniform(*p.condensed_scale)
        ru, rv = s * ru, s * rv
        rz = min(rz, ru, rv)  # it rounds up, no higher than it was
    center = (p.glass_z_um + NUCLEUS_BASE_UM + rz, cy, cx)
    nuc = Nucleus("msc", cell, center, (rz, ru, rv), theta, state, level)
    if state == FRAGMENTED:  # fragments as much larger than a Jurkat's as the nucleus is
        jurkat_nucleus = p.jurkat_diameter_um * 0.5 * sum(p.jurkat_nucleus_fraction)
        _fragment(rng, p, nuc, scale=max(2 * rn / jurkat_nucleus, 1.0))
    return nuc


def _jurkat_nucleus(rng, p: SynthParams, scene: Scene, k: int, state: str) -> Nucleus:
    """A spheroid shaped like Jurkat cell ``k`` (1-based), scaled and moved inside it."""
    j = scene.jurkats[k - 1]
    f = rng.uniform(*p.jurkat_nucleus_fraction)
    direction = rng.standard_normal(3)
    direction /= max(float(np.linalg.norm(direction)), 1e-9)
    # |offset| + scale <= 1 in the cell's unit ball: the nucleus stays inside the cell
    m = rng.uniform(0, max(min(p.jurkat_nucleus_offset, 0.98 - f), 0.0))
    cell_r = np.array([j.radius_z, j.radius_xy, j.radius_xy])
    center = tuple(float(c) for c in np.asarray(j.center) + m * direction * cell_r)
    level = _level(rng, p, state)
    if state == CONDENSED:
        f *= rng.uniform(*p.condensed_scale)
    nuc = Nucleus("jurkat", k, center, tuple(float(v) for v in f * cell_r), 0.0, state, level)
    if state == FRAGMENTED:
        _fragment(rng, p, nuc)
    return nuc


def _fragment(rng: np.random.Generator, p: SynthParams, nuc: Nucleus, scale: float = 1.0) -> None:
    """Break ``nuc`` into balls (diameters ``p.fragment_diameter_um`` times ``scale``)
    inside its ellipsoid, apart by more than a voxel diagonal (separate pieces of its
    label); with fewer than two that fit, it is condensed."""
    gap = 1.05 * math.sqrt(sum(v * v for v in p.voxel_size))
    n = int(rng.integers(p.fragment_count[0], p.fragment_count[1] + 1))
    rz, ru, rv = nuc.radii
    c, s = math.cos(nuc.theta), math.sin(nuc.theta)
    out: list[tuple[tuple[float, float, float], float]] = []
    for _ in range(n):
        r = 0.5 * scale * rng.uniform(*p.fragment_diameter_um)
        r = min(r, 0.9 * min(nuc.radii))
        for _try in range(60):
            g = rng.standard_normal(3)
            g *= rng.uniform() ** (1 / 3) / max(float(np.linalg.norm(g)), 1e-9)
            dz, du, dv = g * np.maximum(np.array([rz, ru, rv]) - r, 0.0)
            pos = (
                nuc.center[0] + dz,
                nuc.center[1] + du * c - dv * s,
                nuc.center[2] + du * s + dv * c,
            )
            if all(math.dist(pos, q) >= r + rq + gap for q, rq in out):
                out.append((pos, r))
                break
    if len(out) >= 2:
        nuc.fragments = out
    else:
        nuc.state = CONDENSED


# -- rendering ----------------------------------------------------------------------------


def _ellipsoid(p: SynthParams, plane: Glass, center, radii, theta: float, nz: int):
    """Slices of the box around an ellipsoid of the flat scene placed on the tilted glass,
    and the mask of the voxels whose centre it holds."""
    rz, ru, rv = radii
    lat = max(ru, rv)
    box = (rz + (abs(plane.sy) + abs(plane.sx)) * lat, lat, lat)
    sl, (gz, gy, gx) = bbox(p, plane.point(center), box, nz)
    if not plane.flat:  # height above the sheared centre plane
        gz = gz - (plane.sy * gy + plane.sx * gx)
    c, s = math.cos(theta), math.sin(theta)
    u = gy * c + gx * s
    v = -gy * s + gx * c
    return sl, (gz / rz) ** 2 + (u / ru) ** 2 + (v / rv) ** 2 <= 1


def nuclei_label(
    p: SynthParams, plane: Glass, fate: Fate, msc: np.ndarray, jurkat: np.ndarray
) -> np.ndarray:
    """The (Z, Y, X) int32 truth label of the nuclei, ids in the order of ``fate.nuclei``
    (1-based), each cut to its cell's label (an unfragmented nucleus to its largest
    piece)."""
    nz = msc.shape[0]
    out = np.zeros(msc.shape, dtype=np.int32)
    for nid, nuc in enumerate(fate.nuclei, start=1):
        cells = msc if nuc.cell_kind == "msc" else jurkat
        parts = (
            [(q, (r, r, r), 0.0) for q, r in nuc.fragments]
            if nuc.fragments
            else [(nuc.center, nuc.radii, nuc.theta)]
        )
        for center, radii, theta in parts:
            sl, mask = _ellipsoid(p, plane, center, radii, theta, nz)
            mask &= cells[sl] == nuc.cell_id
            if not nuc.fragments:  # a cell cut in two pieces leaves the nucleus one
                pieces, n = ndi.label(mask, structure=np.ones((3, 3, 3)))
                if n > 1:
                    mask = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
            out[sl][mask] = nid
    return out


def hoechst_object(
    p: SynthParams,
    fate: Fate,
    nuclei: np.ndarray,
    seed: int,
    cells: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Hoechst concentration (Z, Y, X) float32: each nucleus's level over its label, the
    chromatin of normal nuclei textured (``p.nucleus_texture``: relative amplitude of a
    smooth 3-D random field drawn in µm, correlation about 1 µm; child 11 of ``seed``),
    condensed chromatin even; the cytoplasm of the cells (``cells``: MSC and Jurkat truth
    labels) at ``p.nuclear_haze`` times a normal nucleus's level."""
    levels = np.r_[0.0, [n.hoechst for n in fate.nuclei]].astype(np.float32)
    out = levels[nuclei]
    if p.nuclear_haze > 0 and cells is not None:
        cytoplasm = ((cells[0] > 0) | (cells[1] > 0)) & (nuclei == 0)
        out[cytoplasm] = np.float32(p.nuclear_haze * p.nucleus_hoechst)
    textured = np.r_[False, [n.state == NORMAL for n in fate.nuclei]][nuclei]
    if p.nucleus_texture > 0 and textured.any():
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(12)[11])
        idx = np.nonzero(textured)
        out[idx] *= np.clip(1 + p.nucleus_texture * _noise_3d(rng, p, nuclei.shape, idx), 0.2, None)
    return out


def _noise_3d(rng: np.random.Generator, p: SynthParams, shape, idx) -> np.ndarray:
    """Unit-variance smooth noise at voxels ``idx`` of a stack ``shape``: white noise on a
    grid of 0.4 µm steps, smoothed (sigma 2 steps), read at the voxel centres. The same
    seed gives the same physical pattern whatever the voxel size."""
    step, pad = 0.4, 6
    size = [int(n * v / step) + 2 * pad + 1 for n, v in zip(shape, p.voxel_size, strict=True)]
    coarse = ndi.gaussian_filter(rng.standard_normal(size).astype(np.float32), 2.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    coords = [i * v / step + pad for i, v in zip(idx, p.voxel_size, strict=True)]
    return ndi.map_coordinates(coarse, coords, order=1, mode="nearest").astype(np.float32)


def _sphere_points(n: int) -> np.ndarray:
    """``n`` nearly even points on the unit sphere (Fibonacci lattice), (n, 3) z, y, x."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


def annexin_object(
    p: SynthParams,
    plane: Glass,
    fate: Fate,
    scene: Scene,
    cells: tuple[np.ndarray, np.ndarray],
    column: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Annexin V concentration (Z, Y, X) float32 of a field.

    Unbound annexin V fills the medium (above the glass, outside the cells) at
    ``p.annexin_background``. An apoptotic Jurkat cell carries its ring concentration in a
    shell ``p.annexin_ring_um`` thick under its surface (points on two layers of the
    shell, splatted); an apoptotic MSC in the top ``annexin_ring_um`` of its cytoplasm and
    over its whole height within ``annexin_ring_um`` of its outline.

    Parameters
    ----------
    cells : (msc, jurkat) truth labels (Z, Y, X).
    column : (zc, glass, top)
        Plane centres (Z, 1, 1), the glass and the MSC top (µm, broadcastable to the
        field), as the field renders the MSC cytoplasm.
    """
    msc, jurkat = cells
    zc, glass, top = column
    dz = p.voxel_size[0]
    shape = msc.shape
    medium = (zc >= glass) & (msc == 0) & (jurkat == 0)
    out = medium.astype(np.float32) * np.float32(p.annexin_background)
    n_msc = scene.n_msc
    ring = p.annexin_ring_um
    dying = [i for i in range(1, n_msc + 1) if fate.msc_apoptotic[i - 1]]
    if dying:
        lo = np.maximum(top - ring, glass)
        shell = np.clip(np.minimum(zc + dz / 2, top) - np.maximum(zc - dz / 2, lo), 0, None) / dz
        full = np.clip(np.minimum(zc + dz / 2, top) - np.maximum(zc - dz / 2, glass), 0, None) / dz
        rim = (scene.edge_dist < ring)[None]
        conc = np.zeros(n_msc + 1, dtype=np.float32)
        conc[dying] = fate.annexin[np.asarray(dying) - 1]
        level = conc[scene.footprint][None]
        out += (np.where(rim, full, shell) * level * (msc > 0)).astype(np.float32)
    pts, mass = [], []
    for k, j in enumerate(scene.jurkats, start=1):
        conc = fate.annexin[n_msc + k - 1]
        if not fate.jurkat_apoptotic[k - 1] or conc == 0:
            continue
        r_in = max(1 - ring / j.radius_xy, 0.0)
        area = 4 * math.pi * j.radius_xy**2
        n = max(int(area / 0.04), 200)  # a point per 0.2 x 0.2 µm of surface and layer
        unit = _sphere_points(n)
        volume = 4 / 3 * math.pi * j.radius_xy**2 * j.radius_z * (1 - r_in**3)
        for depth in (0.25, 0.75):  # two layers through the shell
            rho = 1 - depth * (1 - r_in)
            off = unit * rho * np.array([j.radius_z, j.radius_xy, j.radius_xy])
            pts.append(np.asarray(j.center) + plane.offsets(off))
            mass.append(np.full(n, conc * volume / (2 * n)))
    if pts:
        out += splat(shape, p.voxel_size, np.concatenate(pts), np.concatenate(mass))
    return out
