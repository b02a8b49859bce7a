"""The ground-truth tables of a synthetic field, from its scene and rendered labels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hcsmito.synth.params import SynthParams
from hcsmito.synth.render import Glass
from hcsmito.synth.scene import Scene

# -- truth tables -------------------------------------------------------------------------


def msc_table(scene: Scene, msc: np.ndarray, p: SynthParams) -> pd.DataFrame:
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


def tnt_table(scene: Scene) -> pd.DataFrame:
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


def jurkat_table(scene: Scene, jurkat: np.ndarray, p: SynthParams, plane: Glass) -> pd.DataFrame:
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


def foci_table(scene: Scene, foci: np.ndarray, p: SynthParams) -> pd.DataFrame:
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


def nuclei_table(fate, nuclei: np.ndarray, p: SynthParams, plane: Glass) -> pd.DataFrame:
    """One row per nucleus of ``fate`` (:class:`~hcsmito.synth.nuclei.Fate`), its volume
    from the 3-D truth label ``nuclei``, its centre on the tilted glass."""
    dz, dy, dx = p.voxel_size
    n = len(fate.nuclei)
    nvox = np.bincount(nuclei.ravel(), minlength=n + 1)[1:]
    centres = []
    for nuc in fate.nuclei:
        if nuc.fragments:
            w = np.array([r**3 for _, r in nuc.fragments])
            c = (np.array([q for q, _ in nuc.fragments]) * w[:, None]).sum(0) / w.sum()
        else:
            c = nuc.center
        centres.append(plane.point(c))
    zyx = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    return pd.DataFrame(
        {
            "nucleus_id": np.arange(1, n + 1, dtype=np.int32),
            "cell_kind": [nuc.cell_kind for nuc in fate.nuclei],
            "cell_id": np.array([nuc.cell_id for nuc in fate.nuclei], dtype=np.int32),
            "z_um": zyx[:, 0],
            "y_um": zyx[:, 1],
            "x_um": zyx[:, 2],
            "volume_um3": nvox * dz * dy * dx,
            "n_parts": np.array([max(len(nuc.fragments), 1) for nuc in fate.nuclei]),
            "state": [nuc.state for nuc in fate.nuclei],
            "apoptotic": np.array([nuc.apoptotic for nuc in fate.nuclei], dtype=bool),
        }
    )
