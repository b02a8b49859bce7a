"""Render a synthetic co-culture scene into a noisy 16-bit confocal field with its truth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from hcsmito.synth.cells import Scene, Tnt, build_scene
from hcsmito.synth.params import SynthParams, resolve_condition

__all__ = ["CHANNEL_COLORS", "CHANNEL_LABELS", "SynthField", "generate_field"]

CHANNEL_LABELS = ("GFP", "MitoTracker Red", "Phalloidin")
CHANNEL_COLORS = ("00FF00", "FF0000", "FF00FF")
GFP, MITO, ACTIN = 0, 1, 2


@dataclass
class SynthField:
    """A generated field and its ground truth.

    Attributes
    ----------
    image : (C, Z, Y, X) or (C, Y, X) uint16 ndarray
        Camera counts of the GFP, MitoTracker Red and phalloidin channels.
    channel_labels : tuple of str
    voxel_size : dict
        ``{"z": dz, "y": dy, "x": dx}`` µm (no ``"z"`` for 2-D fields).
    labels : dict of str to int32 ndarray
        Truth label images ``msc``, ``jurkat``, ``foci``, ``tnt``, each shaped like one
        channel of ``image`` (2-D fields: the maximum over z of the 3-D truth). Ids are the
        ``*_id`` columns of the tables.
    tables : dict of str to pandas.DataFrame
        Positions in µm (``index * voxel size``), always 3-D (also for 2-D fields):

        - ``msc``: ``cell_id, volume_um3, area_um2`` (projected), ``z_um, y_um, x_um``
          (centroid of the label), ``touches_border, n_foci, n_adhered_jurkat,
          red_positive``;
        - ``jurkat``: ``jurkat_id, z_um, y_um, x_um`` (centre of the spheroid),
          ``diameter_um, height_um, bottom_z_um, volume_um3`` (of the label, cut like it),
          ``adhered, msc_id`` (the MSC it rests on, 0 on the glass), ``cut`` (part of
          the cell lies outside the stack: ``allow_cut``);
        - ``foci``: ``focus_id, cell_id`` (parent MSC), ``z_um, y_um, x_um`` (centre),
          ``diameter_um, volume_um3`` (of the ball), ``n_voxels`` (of the label);
        - ``tnt``: ``tnt_id, from_id, from_kind, to_id, to_kind`` (kind ``"msc"`` or
          ``"jurkat"``, id = label value in ``labels[kind]``), ``length_um`` (of the free
          part between the two cells), ``height_um`` (axis above the glass at the
          midpoint of the free part),
          ``diameter_um, carries_mito, mito_z_um, mito_y_um, mito_x_um,
          mito_diameter_um`` (NaN without), ``z0_um ... x1_um`` and ``endpoints``
          (``[[z0, y0, x0], [z1, y1, x1]]``: where the tube leaves and enters the cells).
    condition : str
    seed : int
    params : SynthParams
    expected : (C, Z, Y, X) or (C, Y, X) float32 ndarray or None
        Noise-free expected photons (background included), when asked for.
    """

    image: np.ndarray
    channel_labels: tuple[str, ...]
    voxel_size: dict[str, float]
    labels: dict[str, np.ndarray]
    tables: dict[str, pd.DataFrame]
    condition: str
    seed: int
    params: SynthParams
    expected: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    """Truth counts named like the pipeline's ``fields`` table (``n_msc, n_foci``...), and
    the glass plane: ``glass_z_um`` (at the field centre), ``glass_slope_y``,
    ``glass_slope_x`` (its rise, µm per µm of y and x)."""


# -- rendering helpers --------------------------------------------------------------------


def _unit_ball(step: float = 0.25) -> np.ndarray:
    """Points of a symmetric lattice inside the unit ball (centre of mass at 0)."""
    g = np.arange(-1 + step / 2, 1, step)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return pts[(pts**2).sum(1) <= 1]


_BALL = _unit_ball()


def _splat(shape, voxel, pts: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Deposit masses (concentration x µm³) at points (N, 3) µm, trilinearly, as concentration.

    Mass is conserved for points inside the volume and the centre of mass is kept.
    """
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    if len(pts):
        f = pts / np.asarray(voxel)
        i0 = np.floor(f).astype(np.int64)
        w1 = f - i0
        dims = np.asarray(shape)
        flat_all, w_all = [], []
        for corner in np.ndindex(2, 2, 2):
            c = np.asarray(corner)
            idx = i0 + c
            w = np.prod(np.where(c, w1, 1 - w1), axis=1) * mass
            ok = np.all((idx >= 0) & (idx < dims), axis=1)
            flat_all.append(np.ravel_multi_index(idx[ok].T, shape))
            w_all.append(w[ok])
        flat = np.concatenate(flat_all)
        out += np.bincount(flat, np.concatenate(w_all), minlength=out.size)
    out /= float(np.prod(voxel))
    return out.reshape(shape).astype(np.float32)


def _bbox(p: SynthParams, center, radii, nz):
    """Index slices and coordinate grids (µm) of the box around an ellipsoid."""
    voxel = p.voxel_size
    dims = (nz, *p.shape[-2:])
    sl, grids = [], []
    for ax in range(3):
        lo = max(int(math.floor((center[ax] - radii[ax]) / voxel[ax])) - 1, 0)
        hi = min(int(math.ceil((center[ax] + radii[ax]) / voxel[ax])) + 2, dims[ax])
        sl.append(slice(lo, hi))
        g = np.arange(lo, hi, dtype=np.float64) * voxel[ax] - center[ax]
        shape = [1, 1, 1]
        shape[ax] = -1
        grids.append(g.reshape(shape))
    return tuple(sl), grids


def _segment_voxels(p: SynthParams, a, b, radius: float, nz: int) -> tuple[np.ndarray, ...]:
    """Voxels within ``radius`` of segment a-b, and the voxel nearest each point of it."""
    voxel = np.asarray(p.voxel_size)
    dims = np.asarray((nz, *p.shape[-2:]))
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    t = np.linspace(0, 1, max(2, int(length / (0.25 * voxel.min())) + 2))
    axis_pts = a + t[:, None] * (b - a)
    near = np.clip(np.rint(axis_pts / voxel).astype(np.int64), 0, dims - 1)
    idx = {tuple(v) for v in near}
    if radius > 0.5 * voxel.min():
        lo = np.maximum(np.floor((np.minimum(a, b) - radius) / voxel).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(a, b) + radius) / voxel).astype(int) + 1, dims)
        grid = np.stack(
            np.meshgrid(*[np.arange(lo[k], hi[k]) for k in range(3)], indexing="ij"), -1
        ).reshape(-1, 3)
        pos = grid * voxel
        u = b - a
        s = np.clip(((pos - a) @ u) / max(float(u @ u), 1e-12), 0, 1)
        d = np.linalg.norm(pos - (a + s[:, None] * u), axis=1)
        idx.update(map(tuple, grid[d <= radius]))
    arr = np.asarray(sorted(idx), dtype=np.int64).reshape(-1, 3)
    return tuple(arr.T)


def _poisson_constant(rng: np.random.Generator, lam: float, n: int) -> np.ndarray:
    """``n`` exact Poisson(``lam``) draws: inversion of the tabulated CDF through a guide table.

    About twice as fast as ``Generator.poisson`` for many draws of one mean (the voxels that
    only see background).
    """
    if lam <= 0 or n == 0:
        return np.zeros(n, dtype=np.float32)
    kmax = int(lam + 15 * math.sqrt(lam) + 30)
    k = np.arange(kmax + 1, dtype=np.float64)
    lgam = np.asarray([math.lgamma(i + 1.0) for i in range(kmax + 1)])
    cdf = np.cumsum(np.exp(k * math.log(lam) - lam - lgam))
    cdf[-1] = 1.0  # the tail beyond kmax has probability < 1e-40
    m = 4096
    guide = np.searchsorted(cdf, np.arange(m) / m, side="right")  # first k: cdf[k] > j/m
    u = rng.random(n)
    draw = guide[(u * m).astype(np.int64)]
    todo = np.flatnonzero(cdf[draw] <= u)
    while todo.size:  # on to the smallest k with cdf[k] > u
        draw[todo] += 1
        todo = todo[cdf[draw[todo]] <= u[todo]]
    return draw.astype(np.float32)


def _poisson(rng: np.random.Generator, lam: np.ndarray, base: float) -> np.ndarray:
    """Poisson draws of means ``lam`` (float32). Voxels whose mean is exactly ``base`` (no
    light from any object reaches them) are drawn by :func:`_poisson_constant`."""
    flat = lam.ravel()
    const = flat == np.float32(base)
    out = np.empty(flat.shape, dtype=np.float32)
    out[~const] = rng.poisson(flat[~const])
    out[const] = _poisson_constant(rng, float(np.float32(base)), int(np.count_nonzero(const)))
    return out.reshape(lam.shape)


def _gaussian_blur(obj: np.ndarray, sigma_um, voxel) -> np.ndarray:
    sigma = [s / v for s, v in zip(sigma_um, voxel, strict=True)]
    return ndi.gaussian_filter(obj, sigma, mode="constant", truncate=4.0)


# -- acquisition geometry and artefacts ---------------------------------------------------


@dataclass(frozen=True)
class _Glass:
    """The glass plane ``z = glass_z_um + sy (y - yc) + sx (x - xc)`` (µm) of one field.

    The scene is drawn on flat glass; a tilted field is that scene sheared along z so that
    every cell stands on the plane (an affine map: segments stay segments, spheroids stay
    ellipsoids, contacts are kept).
    """

    sy: float = 0.0
    sx: float = 0.0
    yc: float = 0.0
    xc: float = 0.0

    @property
    def flat(self) -> bool:
        """No tilt: the scene is rendered as drawn."""
        return self.sy == 0 and self.sx == 0

    @property
    def slope(self) -> float:
        """Steepest rise of the plane, µm per µm."""
        return math.hypot(self.sy, self.sx)

    def at(self, y, x):
        """Rise of the glass (µm) above its height at the field centre."""
        return self.sy * (y - self.yc) + self.sx * (x - self.xc)

    def point(self, zyx) -> tuple[float, ...]:
        """A point (z, y, x) of the flat scene, on the tilted glass."""
        z, y, x = map(float, zyx)
        return (z + float(self.at(y, x)), y, x)

    def points(self, pts: np.ndarray) -> np.ndarray:
        """Points (N, 3) of the flat scene, on the tilted glass."""
        if self.flat:
            return pts
        out = np.array(pts, dtype=np.float64)
        out[:, 0] += self.at(out[:, 1], out[:, 2])
        return out

    def offsets(self, d: np.ndarray) -> np.ndarray:
        """Displacements (N, 3) from a point of the flat scene, sheared like the scene."""
        if self.flat:
            return d
        out = np.array(d, dtype=np.float64)
        out[:, 0] += self.sy * out[:, 1] + self.sx * out[:, 2]
        return out

    def scene(self, scene: Scene) -> Scene:
        """A copy of ``scene`` with every position on the tilted glass."""
        if self.flat:
            return scene

        def tube(t: Tnt) -> Tnt:
            mito = None if t.mito is None else self.point(t.mito)
            return replace(t, start=self.point(t.start), end=self.point(t.end), mito=mito)

        return replace(
            scene,
            jurkats=[replace(j, center=self.point(j.center)) for j in scene.jurkats],
            foci=[replace(f, center=self.point(f.center)) for f in scene.foci],
            tnts=[tube(t) for t in scene.tnts],
        )


def _glass_plane(p: SynthParams, seed: int) -> _Glass:
    """The glass plane of a field: ``glass_tilt_um`` over the field width, in the direction
    ``glass_tilt_deg`` or, when None, one drawn from the seed."""
    ny, nx = p.shape[-2:]
    yc, xc = 0.5 * (ny - 1) * p.voxel_size[1], 0.5 * (nx - 1) * p.voxel_size[2]
    if p.glass_tilt_um == 0:
        return _Glass(yc=yc, xc=xc)
    deg = p.glass_tilt_deg
    if deg is None:
        deg = np.random.default_rng(np.random.SeedSequence(seed).spawn(8)[6]).uniform(0, 360)
    slope = p.glass_tilt_um / (nx * p.voxel_size[2])
    theta = math.radians(deg)
    return _Glass(slope * math.sin(theta), slope * math.cos(theta), yc, xc)


def vignetting_profile(p: SynthParams) -> np.ndarray:
    """The (Y, X) float32 fall-off of the expected photons: 1 at the field centre,
    ``p.vignetting`` at the corners, the cos⁴ law ``(1 + (r/f)²)⁻²`` in between.

    The distance ``r`` (µm) is from the field centre to each pixel centre; ``f`` solves
    ``(1 + (r_corner/f)²)⁻² = vignetting``.
    """
    ny, nx = p.shape[-2:]
    dy, dx = p.voxel_size[1:]
    y = (np.arange(ny) - 0.5 * (ny - 1)) * dy
    x = (np.arange(nx) - 0.5 * (nx - 1)) * dx
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    if p.vignetting == 1:
        return np.ones((ny, nx), dtype=np.float32)
    f2 = float(r2.max()) / (p.vignetting**-0.5 - 1)
    return ((1 + r2 / f2) ** -2).astype(np.float32)


def _bleed(signal: np.ndarray, crosstalk) -> None:
    """Add to each channel of ``signal`` (C, ...) the light of the other dyes it detects."""
    pairs = [(i, j, f) for i, row in enumerate(crosstalk) for j, f in enumerate(row) if f]
    if not pairs:
        return
    own = signal.copy()
    for i, j, f in pairs:
        signal[i] += np.float32(f) * own[j]


# -- truth tables -------------------------------------------------------------------------


def _msc_table(scene: Scene, msc: np.ndarray, p: SynthParams) -> pd.DataFrame:
    dz, dy, dx = p.voxel_size
    n = scene.n_msc
    inside = msc > 0
    count2d = inside.sum(0)
    zsum2d = np.tensordot(np.arange(msc.shape[0]), inside, axes=1)
    fp = scene.footprint.ravel()
    iy, ix = np.indices(scene.footprint.shape)
    nvox = np.bincount(fp, count2d.ravel(), minlength=n + 1)
    zs = np.bincount(fp, zsum2d.ravel(), minlength=n + 1)
    ys = np.bincount(fp, (count2d * iy).ravel(), minlength=n + 1)
    xs = np.bincount(fp, (count2d * ix).ravel(), minlength=n + 1)
    area = np.bincount(fp, minlength=n + 1) * dy * dx
    with np.errstate(invalid="ignore", divide="ignore"):
        zc, yc, xc = zs / nvox * dz, ys / nvox * dy, xs / nvox * dx
    border = np.zeros(n + 1, dtype=bool)
    edges = np.concatenate(
        [scene.footprint[0], scene.footprint[-1], scene.footprint[:, 0], scene.footprint[:, -1]]
    )
    border[np.unique(edges)] = True
    ids = np.arange(1, n + 1)
    return pd.DataFrame(
        {
            "cell_id": ids.astype(np.int32),
            "volume_um3": nvox[1:] * dz * dy * dx,
            "area_um2": area[1:],
            "z_um": zc[1:],
            "y_um": yc[1:],
            "x_um": xc[1:],
            "touches_border": border[1:],
            "n_foci": np.bincount([f.cell_id for f in scene.foci], minlength=n + 1)[1:],
            "n_adhered_jurkat": np.bincount(
                [j.msc_id for j in scene.jurkats if j.adhered], minlength=n + 1
            )[1:],
        }
    ).assign(red_positive=lambda t: t["n_foci"] > 0)


def _tnt_table(scene: Scene) -> pd.DataFrame:
    rows = []
    for k, t in enumerate(scene.tnts, start=1):
        m = t.mito if t.mito is not None else (math.nan,) * 3
        rows.append(
            {
                "tnt_id": k,
                "from_id": t.from_id,
                "from_kind": t.from_kind,
                "to_id": t.to_id,
                "to_kind": t.to_kind,
                "length_um": t.length,
                "height_um": t.height,
                "diameter_um": t.diameter,
                "carries_mito": t.mito is not None,
                "mito_z_um": m[0],
                "mito_y_um": m[1],
                "mito_x_um": m[2],
                "mito_diameter_um": t.mito_diameter if t.mito is not None else math.nan,
                "z0_um": t.start[0],
                "y0_um": t.start[1],
                "x0_um": t.start[2],
                "z1_um": t.end[0],
                "y1_um": t.end[1],
                "x1_um": t.end[2],
                "endpoints": [list(t.start), list(t.end)],
            }
        )
    cols = [
        "tnt_id", "from_id", "from_kind", "to_id", "to_kind", "length_um", "height_um",
        "diameter_um", "carries_mito", "mito_z_um", "mito_y_um", "mito_x_um",
        "mito_diameter_um", "z0_um", "y0_um", "x0_um", "z1_um", "y1_um", "x1_um", "endpoints",
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=cols)
    return table.astype({"tnt_id": np.int32, "from_id": np.int32, "to_id": np.int32})


# -- the field ----------------------------------------------------------------------------


def generate_field(
    params: SynthParams | None = None,
    condition: str = "DMSO",
    seed: int = 0,
    *,
    return_expected: bool = False,
) -> SynthField:
    """Generate one confocal field of an MSC / Jurkat co-culture with its ground truth.

    Parameters
    ----------
    params : SynthParams, optional
        Physical parameters (default ``SynthParams()``).
    condition : str
        A key of :data:`CONDITIONS` (sets foci per MSC, adhesion share and TNT rate), or
        several joined by ``+`` (e.g. ``"ara-C + anti-ICAM-1"``), their effects multiplied.
    seed : int
        Seed of every random draw: the same seed gives identical bytes. The MSC layout
        depends on the seed only, not on the condition.
    return_expected : bool
        Keep the noise-free expected photon image in ``SynthField.expected``.

    Returns
    -------
    SynthField
    """
    p = params if params is not None else SynthParams()
    effect = resolve_condition(condition)
    nz = p.scene_shape[0]
    dz = p.voxel_size[0]
    _check_stack(p)
    plane = _glass_plane(p, seed)
    scene = plane.scene(build_scene(p, effect, seed))
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(8)[7])
    shape3 = (nz, *p.shape[-2:])
    voxel = p.voxel_size
    zc = (np.arange(nz, dtype=np.float32) * dz)[:, None, None]
    glass = np.float32(p.glass_z_um)
    if not plane.flat:
        yy, xx = (np.arange(n) * v for n, v in zip(p.shape[-2:], voxel[1:], strict=True))
        glass = (p.glass_z_um + plane.at(yy[:, None], xx[None, :]))[None].astype(np.float32)
    top = glass + scene.height[None]

    # truth labels
    msc = np.where((zc >= glass) & (zc < top), scene.footprint[None], 0).astype(np.int32)
    occ = np.clip(np.minimum(zc + dz / 2, top) - np.maximum(zc - dz / 2, glass), 0, None) / dz
    occ = occ.astype(np.float32)

    jurkat = np.zeros(shape3, dtype=np.int32)
    red = occ * np.float32(p.msc_red)
    actin = occ * np.where(scene.edge_dist < p.msc_cortex_um, p.msc_cortex_actin, 0).astype(
        np.float32
    )
    actin += occ * np.float32(p.msc_actin)
    green = occ * scene.gfp[None]
    red_pts, red_mass, actin_pts, actin_mass = [], [], [], []

    for k, j in enumerate(scene.jurkats, start=1):
        rz_box = j.radius_z + (abs(plane.sy) + abs(plane.sx)) * j.radius_xy
        sl, (gz, gy, gx) = _bbox(p, j.center, (rz_box, j.radius_xy, j.radius_xy), nz)
        if not plane.flat:  # height above the sheared centre plane
            gz = gz - (plane.sy * gy + plane.sx * gx)
        rho = np.sqrt((gz / j.radius_z) ** 2 + (gy / j.radius_xy) ** 2 + (gx / j.radius_xy) ** 2)
        body = rho <= 1
        jurkat[sl][body] = k
        red[sl] += (body * p.jurkat_red).astype(np.float32)
        shell = body & (rho > 1 - p.msc_cortex_um / j.radius_xy)
        actin[sl] += (shell * p.jurkat_actin).astype(np.float32)
        # mitochondria: points in the cytoplasmic shell around the nucleus
        n = p.jurkat_mito_count
        lo, hi = p.jurkat_mito_shell
        direction = rng.standard_normal((n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        rr = (rng.uniform(lo**3, hi**3, n)) ** (1 / 3)
        offsets = direction * rr[:, None] * [j.radius_z, j.radius_xy, j.radius_xy]
        pts = np.asarray(j.center) + plane.offsets(offsets)
        dmito = rng.uniform(0.3, 0.8, n)
        red_pts.append(pts)
        red_mass.append(p.jurkat_mito_intensity * math.pi / 6 * dmito**3)

    if not plane.flat:
        msc[jurkat > 0] = 0  # the sheared surfaces meet: no voxel in both

    foci = np.zeros(shape3, dtype=np.int32)
    for k, f in enumerate(scene.foci, start=1):
        r = 0.5 * f.diameter
        red_pts.append(np.asarray(f.center) + plane.offsets(_BALL * r))
        red_mass.append(
            np.full(len(_BALL), p.foci_intensity * math.pi / 6 * f.diameter**3 / len(_BALL))
        )
        radii = [max(r, 0.5 * v) for v in voxel]
        box = [radii[0] + (abs(plane.sy) * radii[1] + abs(plane.sx) * radii[2]), *radii[1:]]
        sl, (gz, gy, gx) = _bbox(p, f.center, box, nz)
        if not plane.flat:
            gz = gz - (plane.sy * gy + plane.sx * gx)
        ball = (gz / radii[0]) ** 2 + (gy / radii[1]) ** 2 + (gx / radii[2]) ** 2 <= 1
        foci[sl][ball] = k
        nearest = tuple(
            min(max(round(c / v), 0), s - 1)
            for c, v, s in zip(f.center, voxel, shape3, strict=True)
        )
        foci[nearest] = k

    tnt = np.zeros(shape3, dtype=np.int32)
    ring = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float)
    for k, t in enumerate(scene.tnts, start=1):
        a, b = np.asarray(t.start), np.asarray(t.end)
        u = (b - a) / t.length
        s = np.arange(-0.3, t.length + 0.3, 0.05)
        axis_pts = a + s[:, None] * u
        # cross-section points (centre + 4 at r/sqrt 2) keep the centre of mass on the axis
        w = np.cross(u, [1.0, 0, 0])
        w /= max(np.linalg.norm(w), 1e-9)
        v = np.cross(u, w)
        off = ring * (0.5 * t.diameter / math.sqrt(2))
        pts = (axis_pts[:, None, :] + off[None, :, :1] * w + off[None, :, 1:] * v).reshape(-1, 3)
        actin_pts.append(pts)
        per = p.tnt_actin * math.pi * (0.5 * t.diameter) ** 2 * 0.05 / len(ring)
        actin_mass.append(np.full(len(pts), per))
        vox = _segment_voxels(p, a, b, 0.5 * t.diameter, nz)
        tnt[vox] = k
        if t.mito is not None:
            red_pts.append(np.asarray(t.mito) + _BALL * 0.5 * t.mito_diameter)
            red_mass.append(
                np.full(
                    len(_BALL), p.foci_intensity * math.pi / 6 * t.mito_diameter**3 / len(_BALL)
                )
            )
    tnt[(msc > 0) | (jurkat > 0)] = 0

    for pts2, _cell in scene.fibres:
        n = len(pts2)
        zf = np.full((n, 1), p.glass_z_um + p.fibre_height_um)
        actin_pts.append(plane.points(np.hstack([zf, pts2])))
        actin_mass.append(np.full(n, p.fibre_actin * math.pi * (0.5 * p.fibre_width_um) ** 2 * 0.1))

    def cat(parts, width):
        return np.concatenate(parts) if parts else np.zeros((0,) * width)

    red += _splat(shape3, voxel, cat(red_pts, 2).reshape(-1, 3), cat(red_mass, 1))
    actin += _splat(shape3, voxel, cat(actin_pts, 2).reshape(-1, 3), cat(actin_mass, 1))

    # optics and camera
    sigmas = p.psf_sigma_um()
    expected = np.empty((3, *shape3), dtype=np.float32)
    for c, obj in enumerate((green, red, actin)):
        sz, sxy = sigmas[c]
        blurred = _gaussian_blur(obj, (sz, sxy, sxy), voxel)
        expected[c] = np.float32(p.brightness * p.channel_gain[c]) * blurred
    _bleed(expected, p.crosstalk)
    expected += np.float32(p.background)
    labels = {"msc": msc, "jurkat": jurkat, "foci": foci, "tnt": tnt}
    if p.ndim == 2:
        expected = expected.max(axis=1)
        labels = {k: v.max(axis=0) for k, v in labels.items()}
    if p.vignetting != 1:
        expected *= vignetting_profile(p)
    np.maximum(expected, 0, out=expected)
    photons = _poisson(rng, expected, p.background) if p.shot_noise else expected.copy()
    if p.read_noise > 0:
        photons += np.float32(p.read_noise) * rng.standard_normal(photons.shape, dtype=np.float32)
    photons *= np.float32(p.gain)
    photons += np.float32(p.offset)
    np.rint(photons, out=photons)
    image = np.clip(photons, 0, 65535, out=photons).astype(np.uint16)

    tables = {
        "msc": _msc_table(scene, msc, p),
        "jurkat": _jurkat_table(scene, jurkat, p, plane),
        "foci": _foci_table(scene, foci, p),
        "tnt": _tnt_table(scene),
    }
    vs = {"z": voxel[0], "y": voxel[1], "x": voxel[2]}
    if p.ndim == 2:
        del vs["z"]
    out = SynthField(
        image=image,
        channel_labels=CHANNEL_LABELS,
        voxel_size=vs,
        labels=labels,
        tables=tables,
        condition=condition,
        seed=seed,
        params=p,
        expected=expected if return_expected else None,
    )
    out.summary = _summary(out, plane)
    return out


def _check_stack(p: SynthParams) -> None:
    """Raise when a 3-D stack is too short for the MSCs on the glass (with ``allow_cut``:
    when not even the thinnest part of an MSC is in it)."""
    if p.ndim == 2:
        return
    nz, dz = p.shape[0], p.voxel_size[0]
    glass = p.glass_z_um + p.glass_rise_max_um()
    if p.allow_cut:
        need_um, what = glass + p.msc_edge_height_um, "even the edges of MSCs"
    else:
        need_um, what = glass + p.msc_nucleus_height_um + 0.5, "MSCs"
    if (nz - 1) * dz < need_um:
        need = math.ceil(need_um / dz) + 1
        tall = p.msc_edge_height_um if p.allow_cut else p.msc_nucleus_height_um
        raise ValueError(
            f"shape {p.shape} at dz={dz} µm is too short for {what} ({tall} µm tall) on glass "
            f"at {p.glass_z_um} µm: use at least {need} planes"
            + ("" if p.allow_cut else ", or allow_cut=True to let the stack cut the cells")
        )


def _jurkat_table(scene: Scene, jurkat: np.ndarray, p: SynthParams, plane: _Glass) -> pd.DataFrame:
    dz, dy, dx = p.voxel_size
    n = len(scene.jurkats)
    nvox = np.bincount(jurkat.ravel(), minlength=n + 1)[1:]
    # highest and lowest point of each (sheared) spheroid against the planes of the stack
    reach = [math.hypot(j.radius_z, plane.slope * j.radius_xy) for j in scene.jurkats]
    z_last = (p.scene_shape[0] - 1) * dz
    cut = [
        j.center[0] + h > z_last or j.center[0] - h < 0
        for j, h in zip(scene.jurkats, reach, strict=True)
    ]
    rows = {
        "jurkat_id": np.arange(1, n + 1, dtype=np.int32),
        "z_um": [j.center[0] for j in scene.jurkats],
        "y_um": [j.center[1] for j in scene.jurkats],
        "x_um": [j.center[2] for j in scene.jurkats],
        "diameter_um": [2 * j.radius_xy for j in scene.jurkats],
        "height_um": [2 * j.radius_z for j in scene.jurkats],
        "bottom_z_um": [j.center[0] - j.radius_z for j in scene.jurkats],
        "volume_um3": nvox * dz * dy * dx,
        "adhered": np.array([j.adhered for j in scene.jurkats], dtype=bool),
        "msc_id": np.array([j.msc_id for j in scene.jurkats], dtype=np.int32),
        "cut": np.array(cut, dtype=bool),
    }
    return pd.DataFrame(rows)


def _foci_table(scene: Scene, foci: np.ndarray, p: SynthParams) -> pd.DataFrame:
    n = len(scene.foci)
    nvox = np.bincount(foci.ravel(), minlength=n + 1)[1:]
    return pd.DataFrame(
        {
            "focus_id": np.arange(1, n + 1, dtype=np.int32),
            "cell_id": np.array([f.cell_id for f in scene.foci], dtype=np.int32),
            "z_um": [f.center[0] for f in scene.foci],
            "y_um": [f.center[1] for f in scene.foci],
            "x_um": [f.center[2] for f in scene.foci],
            "diameter_um": [f.diameter for f in scene.foci],
            "volume_um3": [math.pi / 6 * f.diameter**3 for f in scene.foci],
            "n_voxels": nvox.astype(np.int64),
        }
    )


def _summary(f: SynthField, plane: _Glass) -> dict[str, Any]:
    """Per-field truth counts, named like the columns of the pipeline's ``fields`` table,
    and the glass plane."""
    t = f.tables
    foci = f.labels["foci"]
    proj = foci.max(axis=0) if foci.ndim == 3 else foci
    dy, dx = f.params.voxel_size[1:]
    return {
        "condition": f.condition,
        "seed": f.seed,
        "n_msc": len(t["msc"]),
        "n_msc_red_positive": int(t["msc"]["red_positive"].sum()),
        "pct_msc_red_positive": 100.0 * float(t["msc"]["red_positive"].mean())
        if len(t["msc"])
        else math.nan,
        "n_foci": len(t["foci"]),
        "foci_volume_um3": float(t["foci"]["volume_um3"].sum()),
        "foci_area_um2": float(np.count_nonzero(proj) * dy * dx),
        "n_jurkat": len(t["jurkat"]),
        "n_jurkat_adhered": int(t["jurkat"]["adhered"].sum()),
        "n_tnt": len(t["tnt"]),
        "n_tnt_with_mito": int(t["tnt"]["carries_mito"].sum()),
        "glass_z_um": float(f.params.glass_z_um),
        "glass_slope_y": float(plane.sy),
        "glass_slope_x": float(plane.sx),
    }
