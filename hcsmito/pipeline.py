"""The fused per-field chain: deconvolve → background → segment → foci → morphometry.

:func:`process_field` is pure computation on the arrays of one field (no I/O): the runner
loads the channels, calls it, and writes what it returns. It moves the channels to the
backend once, keeps every intermediate there, and copies back only the label images and
the tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import schema
from hcsmito.backend import Backend, get_backend
from hcsmito.config import Config, RichardsonLucy
from hcsmito.measure.morphometry import aggregate_by_parent, regionprops_table
from hcsmito.qc import check_flags, field_qc, join_flags
from hcsmito.schema import empty_table

__all__ = [
    "FieldResult",
    "plate_thresholds",
    "process_field",
    "threshold_sample",
    "with_thresholds",
]

#: Voxels of one sampled field that enter a plate-level threshold histogram (a regular
#: subsample of larger fields: the histogram of 4 M voxels is the field's to ~0.1 %).
THRESHOLD_SAMPLE_VOXELS = 1 << 22


def _dtypes(name: str) -> dict[str, str]:
    """The declared columns of table ``name`` (:mod:`hcsmito.schema`)."""
    return schema.TABLES[name].dtypes


@dataclass
class FieldResult:
    """What :func:`process_field` returns (all on the host).

    Attributes
    ----------
    labels : dict of str to ndarray
        ``msc``, ``jurkat``, ``foci`` label images (int32, the field's spatial shape).
    tables : dict of str to DataFrame
        ``foci``, ``cells``, ``jurkat`` (one row per object) and ``fields`` (one row).
    processed : dict of str to ndarray
        Deconvolved channels by role (float32), where deconvolution ran.
    timings : dict of str to float
        Seconds per stage.
    notes : list of str
        What the field lacked or how it was handled (e.g. no msc channel).
    qc_flags : tuple of str
        The field's QC codes (:data:`hcsmito.qc.QC_FLAGS`), also in ``fields.qc_flags``.
    qc : dict of str to float
        The measurements behind the image-level flags (:func:`hcsmito.qc.field_qc`).
    """

    labels: dict[str, np.ndarray]
    tables: dict[str, pd.DataFrame]
    processed: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    qc_flags: tuple[str, ...] = ()
    qc: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self, b: Backend):
        self.b = b
        self.t: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.b.synchronize()
            self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0


def _psf_for(cfg: Config, role: str, voxel: tuple[float, ...]) -> np.ndarray:
    from hcsmito.stages import psf as psfmod

    dec = cfg.deconvolution
    assert isinstance(dec, RichardsonLucy)
    if dec.psf.kind == "file":
        return _load_psf_file(dec.psf.path, dec.psf.voxel_size_um, voxel)
    wavelength = cfg.optics.emission_um.get(role, 0.6)
    sz, sxy = psfmod.gaussian_sigmas(
        na=cfg.optics.na,
        wavelength_um=wavelength,
        refractive_index=cfg.optics.refractive_index,
        confocal=cfg.optics.confocal,
    )
    sig = ((sz,) if len(voxel) == 3 else ()) + (sxy, sxy)
    shape = tuple(2 * max(1, math.ceil(3.0 * s / v)) + 1 for s, v in zip(sig, voxel, strict=True))
    make = psfmod.psf_born_wolf if dec.psf.kind == "born_wolf" else psfmod.psf_gaussian
    return make(
        shape,
        voxel_size=voxel,
        na=cfg.optics.na,
        wavelength_um=wavelength,
        refractive_index=cfg.optics.refractive_index,
        confocal=cfg.optics.confocal,
    )


def _load_psf_file(path, file_voxel: tuple[float, ...], voxel: tuple[float, ...]) -> np.ndarray:
    """A measured PSF from .npy or .tif, resampled to the field's voxel size, sum 1."""
    import scipy.ndimage as ndi

    if str(path).lower().endswith((".tif", ".tiff")):
        import tifffile

        psf = tifffile.imread(path)
    else:
        psf = np.load(path)
    psf = np.asarray(psf, np.float32)
    fv = tuple(file_voxel)[-psf.ndim :]
    if psf.ndim != len(voxel):
        raise ValueError(
            f"PSF file {path} is {psf.ndim}-D but the field is {len(voxel)}-D: "
            "give a PSF with the field's axes"
        )
    zoom = [f / v for f, v in zip(fv, voxel, strict=True)]
    if not np.allclose(zoom, 1.0):
        psf = ndi.zoom(psf, zoom, order=1)
    psf = np.clip(psf, 0, None)
    return (psf / psf.sum()).astype(np.float32)


def _col(t: Mapping[str, np.ndarray], name: str, n: int, fill: float = np.nan) -> np.ndarray:
    return np.asarray(t[name]) if name in t else np.full(n, fill)


@dataclass
class _Prepared:
    b: Backend
    timer: _Timer
    notes: list[str]
    ndim: int
    spacing: tuple[float, ...]
    vox: dict[str, float]
    shapes: dict[str, tuple[int, ...]]
    raw: dict[str, Any]
    det: dict[str, Any]
    decon: dict[str, Any]
    processed: dict[str, np.ndarray]


def _prepare(channels, voxel_size, config: Config, backend, where: str) -> _Prepared:
    """Checks, then the detection images: float32 copies of the channels, deconvolved and
    background-subtracted as the config says (the stages segment these)."""
    from hcsmito.stages.background import subtract_background
    from hcsmito.stages.deconvolution import richardson_lucy, richardson_lucy_tiled

    if "mito" not in channels or channels["mito"] is None:
        raise ValueError(f"{where}: no 'mito' channel: set channels.mito in the config")
    shapes = {r: tuple(a.shape) for r, a in channels.items() if a is not None}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{where}: channels differ in shape {shapes}")
    ndim = len(next(iter(shapes.values())))
    if ndim not in (2, 3):
        raise ValueError(f"{where}: channels must be 2-D (Y, X) or 3-D (Z, Y, X), got {shapes}")
    axes = "zyx"[3 - ndim :]
    try:
        spacing = tuple(float(voxel_size[a]) for a in axes)
    except KeyError as exc:
        raise ValueError(f"{where}: voxel_size lacks axis {exc}; has {dict(voxel_size)}") from None
    vox = dict(zip(axes, spacing, strict=True))
    b = (
        backend
        if isinstance(backend, Backend)
        else get_backend(backend or config.resources.backend)
    )
    xp = b.xp
    timer = _Timer(b)
    notes: list[str] = []

    with timer("load"):
        raw = {r: b.asarray(a) for r, a in channels.items() if a is not None}  # host→device
    det = {r: a.astype(xp.float32) for r, a in raw.items()}
    processed: dict[str, np.ndarray] = {}
    decon: dict[str, Any] = {}  # deconvolved channels on the device (before background)

    dec = config.deconvolution
    if isinstance(dec, RichardsonLucy):
        with timer("deconvolve"):
            for role in dec.channels:
                if role not in det:
                    continue
                psf = _psf_for(config, role, spacing)
                kw = dict(iterations=dec.iterations, tv=dec.tv, transform=dec.transform, backend=b)
                if dec.max_voxels is not None and det[role].size > dec.max_voxels:
                    if dec.acceleration is not None and not any("tiles" in n for n in notes):
                        notes.append("deconvolution in tiles: acceleration is not applied")
                    det[role] = richardson_lucy_tiled(
                        det[role], psf, max_voxels=dec.max_voxels, **kw
                    )
                else:
                    det[role] = richardson_lucy(det[role], psf, acceleration=dec.acceleration, **kw)
                decon[role] = det[role]
                processed[role] = b.to_host(det[role])  # device→host: output image
    if config.background.method != "none":
        with timer("background"):
            for role in (r.name for r in schema.ROLES if r.background):
                if role in det:
                    det[role] = subtract_background(
                        det[role], voxel_size=vox, **config.background.stage_kwargs()
                    )

    return _Prepared(b, timer, notes, ndim, spacing, vox, shapes, raw, det, decon, processed)


def threshold_sample(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float],
    config: Config,
    roles: Sequence[str],
    backend: Backend | str | None = None,
    where: str = "",
) -> dict[str, np.ndarray]:
    """One field's share of a plate-level threshold: per mask role (``msc``, ``jurkat``),
    the image that role's segmentation thresholds (prepared as :func:`process_field`
    prepares it, smoothed as the stage smooths it), as at most
    :data:`THRESHOLD_SAMPLE_VOXELS` host values (a regular subsample)."""
    from hcsmito.stages.segmentation import jurkat_threshold_image, msc_threshold_image

    if "msc" in roles and channels.get("msc") is None:
        raise ValueError(
            f"{where}: plate_threshold.roles lists msc but the field has no msc "
            "channel: set channels.msc or remove msc from plate_threshold.roles"
        )
    prep = _prepare(channels, voxel_size, config, backend, where)
    det, b = prep.det, prep.b
    out: dict[str, np.ndarray] = {}
    for role in roles:
        if role == "msc":
            sm = msc_threshold_image(
                det["msc"],
                voxel_size=voxel_size,
                smooth_um=config.msc.smooth_um,
                smooth_z_um=config.msc.smooth_z_um,
            )
        else:
            sm = jurkat_threshold_image(
                det["mito"], voxel_size=voxel_size, smooth_um=config.jurkat.smooth_um
            )
        flat = sm.reshape(-1)
        step = max(1, -(-flat.size // THRESHOLD_SAMPLE_VOXELS))
        out[role] = b.to_host(flat[::step])  # device->host: <= 4 M values
    return out


def plate_thresholds(
    samples: Mapping[str, Sequence[np.ndarray]], *, method: str
) -> dict[str, float]:
    """The fixed threshold of each mask role from its fields' samples
    (:func:`threshold_sample`): the pooled histogram thresholded by ``method``
    (:func:`hcsmito.stages.threshold.plate_threshold`)."""
    from hcsmito.stages.threshold import plate_threshold

    return {role: plate_threshold(arrays, method=method) for role, arrays in samples.items()}


def with_thresholds(config: Config, values: Mapping[str, float]) -> Config:
    """``config`` with each mask role's segmentation cut at its fixed value
    (``threshold_method: manual``)."""
    update: dict[str, Any] = {}
    for role, value in values.items():
        section = config.msc if role == "msc" else config.jurkat
        update[role] = section.model_copy(
            update={"threshold_method": "manual", "threshold_value": value}
        )
    return config.model_copy(update=update)


def process_field(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float],
    config: Config,
    backend: Backend | str | None = None,
    where: str = "",
) -> FieldResult:
    """Run the whole chain on one field.

    Parameters
    ----------
    channels : mapping of role to (Y, X) or (Z, Y, X) ndarray
        The field's channels by role (``mito`` required; ``msc`` and ``actin`` optional),
        raw intensities of any numeric dtype, all of one shape.
    voxel_size : mapping {"z", "y", "x"} -> µm
        Voxel size (no ``z`` for 2-D fields).
    config : Config
        The run configuration.
    backend : Backend or {"auto", "cpu", "gpu"}, optional
        Where to compute (default: ``config.resources.backend``).
    where : str
        Plate / well / field, for messages.

    Returns
    -------
    FieldResult
    """
    prep = _prepare(channels, voxel_size, config, backend, where)
    obj = _segment_cells(prep, config)
    _detect_foci(prep, obj, config)
    _detect_tnts(prep, obj, config)
    _measure_adhesion(prep, obj, config)
    qc, qc_flags = _field_qc(prep, obj, config)
    with prep.timer("morphometry"):
        tables = _tables(prep, obj, qc_flags, config, where)
    with prep.timer("to_host"):
        labels = _labels_to_host(prep, obj)
    prep.b.free_memory()
    return FieldResult(
        labels=labels,
        tables=_declared_tables(tables),
        processed=prep.processed,
        timings=prep.timer.t,
        notes=prep.notes,
        qc_flags=qc_flags,
        qc=qc.metrics,
    )


@dataclass
class _Objects:
    """The objects of one field, on the device, as the phases find them."""

    msc: Any = None  # MSC labels, None without an msc channel
    msc_instances: Any = None
    touches: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    jurkat: Any = None  # JurkatInstances
    foci: Any = None
    tnts: Any = None  # None without an actin channel
    adhesion: pd.DataFrame | None = None  # None without MSCs


def _segment_cells(prep: _Prepared, config: Config) -> _Objects:
    """The MSCs (from msc) and the donor cells (from mito, outside the MSCs)."""
    from hcsmito.stages.segmentation import JurkatInstances, segment_jurkat, segment_msc

    obj = _Objects()
    det, vox, xp = prep.det, prep.vox, prep.b.xp
    if "msc" in det:
        with prep.timer("segment_msc"):
            obj.msc_instances = segment_msc(det["msc"], voxel_size=vox, **config.msc.stage_kwargs())
            obj.msc = obj.msc_instances.labels
            obj.touches = np.asarray(obj.msc_instances.touches_border, bool)
    else:
        prep.notes.append("no msc channel: foci measured over the whole field (cell_id 0)")
    if config.jurkat.enabled:
        with prep.timer("segment_jurkat"):
            obj.jurkat = segment_jurkat(
                det["mito"], voxel_size=vox, msc_labels=obj.msc, **config.jurkat.stage_kwargs()
            )
    else:
        obj.jurkat = JurkatInstances(xp.zeros(prep.shapes["mito"], xp.int32), np.zeros(0, bool))
        prep.notes.append("jurkat.enabled is false: no donor detection (n_jurkat is 0)")
    return obj


def _detect_foci(prep: _Prepared, obj: _Objects, config: Config) -> None:
    from hcsmito.stages.foci import detect_foci

    kw = config.foci.stage_kwargs()
    if obj.msc is None:
        kw["require_parent"] = False
    with prep.timer("foci"):
        obj.foci = detect_foci(prep.det["mito"], voxel_size=prep.vox, msc_labels=obj.msc,
                               jurkat_labels=obj.jurkat.labels, **kw)  # fmt: skip


def _detect_tnts(prep: _Prepared, obj: _Objects, config: Config) -> None:
    from hcsmito.stages.glass import GLASS_CUES
    from hcsmito.stages.tnt import detect_tnts

    det, xp = prep.det, prep.b.xp
    if "actin" not in det:
        prep.notes.append("no actin channel: no TNT detection (n_tnt, n_tnt_with_mito are null)")
        return
    with prep.timer("tnt"):
        obj.tnts = detect_tnts(
            det["actin"],
            voxel_size=prep.vox,
            msc_labels=obj.msc if obj.msc is not None else xp.zeros(det["actin"].shape, xp.int32),
            jurkat_labels=obj.jurkat.labels,
            foci_labels=obj.foci.labels,
            mito=det["mito"],
            # the glass from the raw channels: deconvolution and background
            # subtraction leave the rising edges where they are, but need not
            glass_channels={r: prep.raw.get(r) for r in GLASS_CUES},
            **config.tnt.stage_kwargs(),
        )


def _measure_adhesion(prep: _Prepared, obj: _Objects, config: Config) -> None:
    from hcsmito.stages.adhesion import measure_adhesion

    if obj.msc is None:
        return
    with prep.timer("adhesion"):
        obj.adhesion = measure_adhesion(obj.jurkat.labels, obj.msc, voxel_size=prep.vox,
                                        **config.adhesion.stage_kwargs())  # fmt: skip


def _field_qc(prep: _Prepared, obj: _Objects, config: Config):
    """The image checks and every stage's flags: ``(FieldQC, codes)``."""
    with prep.timer("qc"):
        qc = field_qc(
            prep.raw, voxel_size=prep.vox, msc_labels=obj.msc, jurkat_labels=obj.jurkat.labels,
            **config.qc.stage_kwargs(),
        )  # fmt: skip
        stages = {"segment_msc": obj.msc_instances, "segment_jurkat": obj.jurkat,
                  "foci": obj.foci, "tnt": obj.tnts}  # fmt: skip
        return qc, _collect_flags(qc.flags, stages)


def _tables(prep: _Prepared, obj: _Objects, qc_flags, config: Config, where: str):
    """The per-object tables and the field's row (morphometry on the device)."""
    spacing, ndim, msc, foci = prep.spacing, prep.ndim, obj.msc, obj.foci
    intensity = [prep.raw["mito"]] + ([prep.decon["mito"]] if "mito" in prep.decon else [])
    ft = regionprops_table(foci.labels, intensity, spacing=spacing,
                           parents={"parent": msc} if msc is not None else None,
                           where=where)  # fmt: skip
    foci_df = _foci_table(ft, ndim, decon="mito" in prep.processed)
    jt = regionprops_table(obj.jurkat.labels, spacing=spacing, where=where)
    jurkat_df = _jurkat_table(jt, obj.adhesion, ndim)
    tnt_df = _tnt_table(obj.tnts)
    if msc is not None:
        ct = regionprops_table(msc, spacing=spacing, where=where)
        cells_df = _cells_table(ct, ft, msc, obj.touches, jurkat_df, config)
        inside = (foci.labels > 0) & (msc > 0)
    else:
        cells_df = empty_table("cells")
        inside = foci.labels > 0
    proj = inside.any(axis=0) if ndim == 3 else inside
    area_px = int(proj.sum())  # device→host: one number
    fields_df = _fields_row(foci_df, cells_df, jurkat_df,
                            tnt_df if obj.tnts is not None else None, msc is not None,
                            area_px, spacing)  # fmt: skip
    fields_df = _with_qc(fields_df, qc_flags, obj.tnts)
    return {"foci": foci_df, "cells": cells_df, "jurkat": jurkat_df, "tnt": tnt_df,
            "fields": fields_df}  # fmt: skip


def _labels_to_host(prep: _Prepared, obj: _Objects) -> dict[str, np.ndarray]:
    b = prep.b
    labels = {
        "msc": b.to_host(obj.msc) if obj.msc is not None
        else np.zeros(prep.shapes["mito"], np.int32),
        "jurkat": b.to_host(obj.jurkat.labels),  # device→host: label images for output
        "foci": b.to_host(obj.foci.labels),
    }  # fmt: skip
    if obj.tnts is not None:
        labels["tnt"] = b.to_host(obj.tnts.labels)  # device→host: label image for output
    return labels


def _declared_tables(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every per-field table of :mod:`hcsmito.schema`, in its order: a declared table no
    stage fills is empty with its declared columns."""
    return {n: tables[n] if n in tables else empty_table(n) for n in schema.field_tables()}


def _collect_flags(image_flags: tuple[str, ...], stages: Mapping[str, Any]) -> tuple[str, ...]:
    """The field's QC codes: the image-level ones and every stage result's ``flags``,
    each checked against :data:`hcsmito.qc.QC_FLAGS` (an unknown code names its stage)."""
    codes = list(image_flags)
    for name, result in stages.items():
        codes += check_flags(getattr(result, "flags", ()) or (), source=f"stage {name}")
    return check_flags(codes)


def _with_qc(fields_df: pd.DataFrame, qc_flags: tuple[str, ...], tnts) -> pd.DataFrame:
    """The fields row with ``qc_flags``, ``glass_z_um`` and ``glass_source`` filled."""
    out = fields_df.copy()
    out["qc_flags"] = pd.array([join_flags(qc_flags)], dtype="string")
    glass = float(getattr(tnts, "glass_z_um", np.nan)) if tnts is not None else np.nan
    out["glass_z_um"] = glass
    source = ""
    if tnts is not None:  # the TNT stage says where its glass came from; default: actin
        source = getattr(tnts, "glass_source", "actin" if np.isfinite(glass) else "")
    out["glass_source"] = pd.array([source or ""], dtype="string")
    return out.astype(_dtypes("fields"))


def _centroids(t: Mapping[str, np.ndarray], ndim: int, n: int) -> dict[str, np.ndarray]:
    if ndim == 3:
        return {"z_um": t["centroid-0"], "y_um": t["centroid-1"], "x_um": t["centroid-2"]}
    return {"z_um": np.zeros(n), "y_um": t["centroid-0"], "x_um": t["centroid-1"]}


def _foci_table(t: Mapping[str, np.ndarray], ndim: int, *, decon: bool) -> pd.DataFrame:
    n = len(t["label"])
    if n == 0:
        df = empty_table("foci")
        if decon:
            df["intensity_mean_decon"] = pd.Series(dtype="float64")
        return df
    sfx = "-0"  # intensity is always passed as a list: channel 0 raw, 1 deconvolved
    cols = {
        "focus_id": np.asarray(t["label"], np.int32),
        "cell_id": np.asarray(t["parent"], np.int32) if "parent" in t else np.zeros(n, np.int32),
        **_centroids(t, ndim, n),
        "volume_um3": t["area"] if ndim == 3 else np.full(n, np.nan),
        "area_um2": t["area_projected"] if ndim == 3 else t["area"],
        "n_voxels": np.asarray(t["n_voxels"], np.int64),
        "intensity_sum": t["intensity_sum" + sfx],
        "intensity_mean": t["intensity_mean" + sfx],
        "intensity_max": t["intensity_max" + sfx],
        "equivalent_diameter_um": t["equivalent_diameter_area"],
        "axis_major_length_um": t["axis_major_length"],
        "axis_minor_length_um": t["axis_minor_length"],
        "parent_overlap": _col(t, "parent_overlap", n, 0.0),
    }
    if decon:
        cols["intensity_mean_decon"] = t["intensity_mean-1"]
        cols["intensity_sum_decon"] = t["intensity_sum-1"]
    return pd.DataFrame(cols).astype(_dtypes("foci"))


def _jurkat_table(t: Mapping[str, np.ndarray], adhesion, ndim: int) -> pd.DataFrame:
    n = len(t["label"])
    if n == 0:
        return empty_table("jurkat")
    ids = np.asarray(t["label"], np.int32)
    adhered = np.zeros(n, bool)
    msc_id = np.zeros(n, np.int32)
    contact = np.zeros(n)
    if adhesion is not None and len(adhesion):
        a = adhesion.set_index("jurkat_id").reindex(ids)
        adhered = a["adhered"].fillna(False).to_numpy(bool)
        msc_id = a["msc_id"].fillna(0).to_numpy(np.int32)
        contact = a["contact_area_um2"].fillna(0.0).to_numpy(float)
    df = pd.DataFrame(
        {
            "jurkat_id": ids,
            **_centroids(t, ndim, n),
            "volume_um3": t["area"] if ndim == 3 else np.full(n, np.nan),
            "adhered": adhered,
            "msc_id": np.where(adhered, msc_id, 0),
            "contact_area_um2": contact,
        }
    )
    return df.astype(_dtypes("jurkat"))


def _tnt_table(tnts) -> pd.DataFrame:
    if tnts is None or not len(tnts.table):
        return empty_table("tnt")
    df = tnts.table.copy()
    first = list(_dtypes("tnt"))
    df = df[first + [c for c in df.columns if c not in first]]
    return df.astype({k: v for k, v in _dtypes("tnt").items()})


def _cells_table(ct, ft, msc, touches, jurkat_df, cfg: Config) -> pd.DataFrame:
    n = len(ct["label"])
    if n == 0:
        return empty_table("cells")
    ids = np.asarray(ct["label"], np.int64)
    n_foci = np.zeros(n, np.int64)
    vol = np.zeros(n)
    area = np.zeros(n)
    isum = np.zeros(n)
    if len(ft["label"]) and "parent" in ft:
        agg = aggregate_by_parent(ft, parent="parent")
        pos = np.searchsorted(ids, agg["label"])
        n_foci[pos] = agg["n_objects"]
        vol[pos] = agg["area"]
        area[pos] = agg["area_projected"] if "area_projected" in agg else agg["area"]
        key = "intensity_sum" if "intensity_sum" in agg else "intensity_sum-0"
        isum[pos] = agg[key]
    rules = cfg.readouts
    red = np.zeros(n, bool)
    if rules.red_positive_min_foci is not None:
        red |= n_foci >= rules.red_positive_min_foci
    if rules.red_positive_min_volume_um3 is not None:
        red |= vol >= rules.red_positive_min_volume_um3
    adhered = jurkat_df.loc[jurkat_df["adhered"], "msc_id"].to_numpy(np.int64)
    n_adh = np.zeros(n, np.int64)
    if adhered.size:
        pos = np.searchsorted(ids, adhered)
        ok = (pos < n) & (ids[np.minimum(pos, n - 1)] == adhered)
        np.add.at(n_adh, pos[ok], 1)
    ndim = msc.ndim
    df = pd.DataFrame(
        {
            "cell_id": ids.astype(np.int32),
            "volume_um3": ct["area"] if ndim == 3 else np.full(n, np.nan),
            "y_um": ct[f"centroid-{ndim - 2}"],
            "x_um": ct[f"centroid-{ndim - 1}"],
            "touches_border": touches[:n] if touches.size >= n else np.zeros(n, bool),
            "n_foci": n_foci,
            "foci_volume_um3": vol if ndim == 3 else np.full(n, np.nan),
            "foci_area_um2": area,
            "foci_intensity_sum": isum,
            "red_positive": red,
            "n_adhered_jurkat": n_adh,
        }
    )
    return df.astype(_dtypes("cells"))


def _fields_row(foci_df, cells_df, jurkat_df, tnt_df, has_msc, area_px, spacing) -> pd.DataFrame:
    inside = foci_df[foci_df["cell_id"] > 0] if has_msc else foci_df
    n_msc = len(cells_df)
    n_red = int(cells_df["red_positive"].sum()) if n_msc else 0
    row = {
        "n_msc": n_msc if has_msc else 0,
        "n_msc_red_positive": n_red,
        "pct_msc_red_positive": 100.0 * n_red / n_msc if n_msc else np.nan,
        "n_foci": len(inside),
        "foci_volume_um3": float(inside["volume_um3"].sum()) if len(spacing) == 3 else np.nan,
        "foci_area_um2": area_px * spacing[-1] * spacing[-2],
        "n_jurkat": len(jurkat_df),
        "n_jurkat_adhered": int(jurkat_df["adhered"].sum()),
        "n_tnt": pd.NA if tnt_df is None else len(tnt_df),
        "n_tnt_with_mito": pd.NA if tnt_df is None else int(tnt_df["carries_mito"].sum()),
        "status": "ok",
        "qc_flags": "",
        "glass_z_um": np.nan,
        "glass_source": "",
    }
    return pd.DataFrame([row]).astype(_dtypes("fields"))
