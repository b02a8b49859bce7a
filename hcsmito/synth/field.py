"""Render a synthetic co-culture scene into a noisy 16-bit confocal field with its truth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.synth.cells import build_scene
from hcsmito.synth.nuclei import annexin_object, draw_fate, hoechst_object, nuclei_label
from hcsmito.synth.params import CHANNELS, FATE_CHANNELS, SynthParams, resolve_condition
from hcsmito.synth.render import (
    BALL,
    Glass,
    attenuation_profile,
    bbox,
    bleed,
    gaussian_blur,
    glass_plane,
    poisson,
    segment_voxels,
    splat,
    vignetting_profile,
)
from hcsmito.synth.truth import foci_table, jurkat_table, msc_table, nuclei_table, tnt_table

__all__ = ["CHANNEL_COLORS", "CHANNEL_LABELS", "SynthField", "channel_colors", "generate_field"]

#: The three channels every field has; :attr:`SynthParams.channel_labels` adds
#: ``"Hoechst"`` and ``"Annexin V"`` when drawn.
CHANNEL_LABELS = CHANNELS
CHANNEL_COLORS = ("00FF00", "FF0000", "FF00FF")
_COLORS = dict(zip((*CHANNELS, *FATE_CHANNELS), (*CHANNEL_COLORS, "0000FF", "00FFFF"), strict=True))
GFP, MITO, ACTIN = 0, 1, 2


def channel_colors(labels: tuple[str, ...] | list[str]) -> list[str]:
    """The display colour (hex RGB) of each channel label of a synthetic field."""
    return [_COLORS[label] for label in labels]


@dataclass
class SynthField:
    """A generated field and its ground truth.

    Attributes
    ----------
    image : (C, Z, Y, X) or (C, Y, X) uint16 ndarray
        Camera counts of the GFP, MitoTracker Red and phalloidin channels, then of the
        Hoechst and annexin V channels when drawn (``params.nuclear_channel``,
        ``params.annexin_channel``).
    channel_labels : tuple of str
        ``params.channel_labels``.
    voxel_size : dict
        ``{"z": dz, "y": dy, "x": dx}`` µm (no ``"z"`` for 2-D fields).
    labels : dict of str to int32 ndarray
        Truth label images ``msc``, ``jurkat``, ``foci``, ``tnt`` (and ``nuclei`` with a
        nuclear or annexin V channel), each shaped like one channel of ``image`` (2-D
        fields: the maximum over z of the 3-D truth). Ids are the ``*_id`` columns of the
        tables.
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

        With a nuclear or annexin V channel (``params.draws_fate``) also:

        - ``nuclei``: ``nucleus_id`` (MSC nuclei first, then Jurkat nuclei, each in its
          cell's id order: one per cell), ``cell_kind`` (``"msc"`` or ``"jurkat"``),
          ``cell_id``, ``z_um, y_um, x_um`` (centre of the nucleus's ellipsoid; of a
          fragmented one, of its fragments weighted by volume), ``volume_um3`` (of the
          label, cut like it), ``n_parts`` (pieces: 1 unless fragmented), ``state``
          (``"normal"``, ``"condensed"``, ``"fragmented"``), ``apoptotic``;
        - the ``msc`` table gains ``apoptotic``, the ``jurkat`` table ``apoptotic`` and
          ``msc_contact`` (adhered, or joined to an MSC by a nanotube: what the condition's
          protection from apoptosis applies to).
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
    ``glass_slope_x`` (its rise, µm per µm of y and x). With nuclei (``params.draws_fate``)
    also ``n_nuclei, n_msc_apoptotic, n_jurkat_apoptotic, pct_jurkat_apoptotic``."""


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
    plane = glass_plane(p, seed)
    flat = build_scene(p, effect, seed)
    scene = plane.scene(flat)
    fate = draw_fate(p, effect, flat, seed) if p.draws_fate else None
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
        sl, (gz, gy, gx) = bbox(p, j.center, (rz_box, j.radius_xy, j.radius_xy), nz)
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
        red_pts.append(np.asarray(f.center) + plane.offsets(BALL * r))
        red_mass.append(
            np.full(len(BALL), p.foci_intensity * math.pi / 6 * f.diameter**3 / len(BALL))
        )
        radii = [max(r, 0.5 * v) for v in voxel]
        box = [radii[0] + (abs(plane.sy) * radii[1] + abs(plane.sx) * radii[2]), *radii[1:]]
        sl, (gz, gy, gx) = bbox(p, f.center, box, nz)
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
        vox = segment_voxels(p, a, b, 0.5 * t.diameter, nz)
        tnt[vox] = k
        if t.mito is not None:
            red_pts.append(np.asarray(t.mito) + BALL * 0.5 * t.mito_diameter)
            red_mass.append(
                np.full(len(BALL), p.foci_intensity * math.pi / 6 * t.mito_diameter**3 / len(BALL))
            )
    tnt[(msc > 0) | (jurkat > 0)] = 0

    for pts2, _cell in scene.fibres:
        n = len(pts2)
        zf = np.full((n, 1), p.glass_z_um + p.fibre_height_um)
        actin_pts.append(plane.points(np.hstack([zf, pts2])))
        actin_mass.append(np.full(n, p.fibre_actin * math.pi * (0.5 * p.fibre_width_um) ** 2 * 0.1))

    def cat(parts, width):
        return np.concatenate(parts) if parts else np.zeros((0,) * width)

    red += splat(shape3, voxel, cat(red_pts, 2).reshape(-1, 3), cat(red_mass, 1))
    actin += splat(shape3, voxel, cat(actin_pts, 2).reshape(-1, 3), cat(actin_mass, 1))
    objects = [green, red, actin]
    labels = {"msc": msc, "jurkat": jurkat, "foci": foci, "tnt": tnt}
    if fate is not None:
        nuclei = labels["nuclei"] = nuclei_label(p, plane, fate, msc, jurkat)
        if p.nuclear_channel:
            objects.append(hoechst_object(p, fate, nuclei, seed, (msc, jurkat)))
        if p.annexin_channel:
            column = (zc, glass, top)
            objects.append(annexin_object(p, plane, fate, scene, (msc, jurkat), column))

    # optics and camera
    sigmas = p.psf_sigma_um()
    gains = p.channel_gains()
    expected = np.empty((len(objects), *shape3), dtype=np.float32)
    for c, obj in enumerate(objects):
        sz, sxy = sigmas[c]
        blurred = gaussian_blur(obj, (sz, sxy, sxy), voxel)
        expected[c] = np.float32(p.brightness * gains[c]) * blurred
    bleed(expected[: len(p.crosstalk)], p.crosstalk)
    expected += np.float32(p.background)
    if p.z_attenuation != 1:
        expected *= attenuation_profile(p, nz)
    if p.ndim == 2:
        expected = expected.max(axis=1)
        labels = {k: v.max(axis=0) for k, v in labels.items()}
    if p.vignetting != 1:
        expected *= vignetting_profile(p)
    np.maximum(expected, 0, out=expected)
    # the extra channels draw their noise from a stream of their own: the first three
    # channels get the same counts with them or without
    photons = _camera(rng, expected[:3], p)
    if len(objects) > 3:
        extra_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(11)[10])
        photons = np.concatenate([photons, _camera(extra_rng, expected[3:], p)])
    photons *= np.float32(p.gain)
    photons += np.float32(p.offset)
    np.rint(photons, out=photons)
    image = np.clip(photons, 0, 65535, out=photons).astype(np.uint16)

    tables = {
        "msc": msc_table(scene, msc, p),
        "jurkat": jurkat_table(scene, jurkat, p, plane),
        "foci": foci_table(scene, foci, p),
        "tnt": tnt_table(scene),
    }
    if fate is not None:
        tables["msc"]["apoptotic"] = fate.msc_apoptotic
        tables["jurkat"]["apoptotic"] = fate.jurkat_apoptotic
        tables["jurkat"]["msc_contact"] = fate.jurkat_contact
        tables["nuclei"] = nuclei_table(fate, nuclei, p, plane)
    vs = {"z": voxel[0], "y": voxel[1], "x": voxel[2]}
    if p.ndim == 2:
        del vs["z"]
    out = SynthField(
        image=image,
        channel_labels=p.channel_labels,
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


def _camera(rng: np.random.Generator, expected: np.ndarray, p: SynthParams) -> np.ndarray:
    """Photo-electrons of expected photons ``expected`` (C, ...): Poisson shot noise (when
    ``p.shot_noise``) and Gaussian read noise, drawn from ``rng`` in that order."""
    photons = poisson(rng, expected, p.background) if p.shot_noise else expected.copy()
    if p.read_noise > 0:
        photons += np.float32(p.read_noise) * rng.standard_normal(photons.shape, dtype=np.float32)
    return photons


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


def _summary(f: SynthField, plane: Glass) -> dict[str, Any]:
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
    } | (_fate_summary(t) if "nuclei" in t else {})


def _fate_summary(t: dict[str, pd.DataFrame]) -> dict[str, Any]:
    n_jur, apo = len(t["jurkat"]), int(t["jurkat"]["apoptotic"].sum())
    return {
        "n_nuclei": len(t["nuclei"]),
        "n_msc_apoptotic": int(t["msc"]["apoptotic"].sum()),
        "n_jurkat_apoptotic": apo,
        "pct_jurkat_apoptotic": 100.0 * apo / n_jur if n_jur else math.nan,
    }
