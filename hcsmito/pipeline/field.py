"""The fused per-field chain: :func:`process_field` and its phases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.backend import Backend
from hcsmito.config import Config, FieldConfig
from hcsmito.measure.morphometry import regionprops_table
from hcsmito.pipeline.prepare import Prepared, prepare
from hcsmito.pipeline.tables import (
    apoptosis_columns,
    cells_table,
    declared_tables,
    fields_row,
    foci_table,
    jurkat_table,
    nuclei_table,
    tnt_table,
    with_qc,
)
from hcsmito.qc import check_flags, field_qc
from hcsmito.schema import empty_table


@dataclass
class FieldResult:
    """What :func:`process_field` returns (all on the host).

    Attributes
    ----------
    labels : dict of str to ndarray
        ``msc``, ``jurkat``, ``foci`` label images (int32, the field's spatial shape; also
        ``tnt`` with an actin channel, ``nuclei`` with a nuclei channel).
    tables : dict of str to DataFrame
        ``foci``, ``cells``, ``jurkat`` (one row per object) and ``fields`` (one row).
    processed : dict of str to ndarray
        Deconvolved channels by role (float32), where deconvolution ran.
    timings : dict of str to float
        Seconds per stage.
    peak_bytes : dict of str to int
        Peak host memory per stage above its start, bytes, when :mod:`tracemalloc` traces
        (else empty).
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
    peak_bytes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    qc_flags: tuple[str, ...] = ()
    qc: dict[str, float] = field(default_factory=dict)


def process_field(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float],
    config: FieldConfig | Config,
    backend: Backend | str = "auto",
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
    config : FieldConfig
        The sections the chain reads (a whole :class:`~hcsmito.config.Config` is narrowed
        to them: :meth:`FieldConfig.of <hcsmito.config.FieldConfig.of>`).
    backend : Backend or {"auto", "cpu", "gpu"}
        Where to compute (default ``auto``); the caller's choice, not the config's.
    where : str
        Plate / well / field, for messages.

    Returns
    -------
    FieldResult
    """
    config = FieldConfig.of(config)
    prep = prepare(channels, voxel_size, config, backend, where)
    obj = _segment_cells(prep, config)
    _detect_foci(prep, obj, config)
    _detect_tnts(prep, obj, config)
    obj.foci = replace(obj.foci, spots=None)  # read by the TNT stage's cargo rule only
    _measure_adhesion(prep, obj, config)
    qc, qc_flags = _field_qc(prep, obj, config)
    with prep.timer("morphometry"):
        tables = _tables(prep, obj, qc_flags, config, where)
    with prep.timer("to_host"):
        labels = _labels_to_host(prep, obj)
    prep.b.free_memory()
    return FieldResult(
        labels=labels,
        tables=declared_tables(tables),
        processed=prep.processed,
        timings=prep.timer.t,
        peak_bytes=prep.timer.peak,
        notes=prep.notes,
        qc_flags=qc_flags,
        qc=qc.metrics,
    )


@dataclass
class _Objects:
    """The objects of one field, on the device, as the phases find them. Their label
    images are held from their stage to the end of the field, in the smallest dtype that
    holds their labels (:func:`_held`); the field returns them as int32."""

    msc: Any = None  # MSC labels, None without an msc channel
    msc_instances: Any = None
    touches: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    jurkat: Any = None  # JurkatInstances
    foci: Any = None
    tnts: Any = None  # None without an actin channel
    adhesion: pd.DataFrame | None = None  # None without MSCs
    nuclei: Any = None  # NucleiInstances, None without a nuclei channel
    nuclei_cells: pd.DataFrame | None = None  # the cell of each nucleus


def _segment_cells(prep: Prepared, config: FieldConfig) -> _Objects:
    """The MSCs (from msc) and the donor cells (from mito, outside the MSCs)."""
    from hcsmito.stages.segmentation import JurkatInstances, segment_jurkat, segment_msc

    obj = _Objects()
    det, vox, xp = prep.det, prep.vox, prep.b.xp
    if "msc" in det:
        with prep.timer("segment_msc"):
            obj.msc_instances = _held(prep, segment_msc(det["msc"], voxel_size=vox,
                                                        **config.msc.stage_kwargs()))  # fmt: skip
            obj.msc = obj.msc_instances.labels
            obj.touches = np.asarray(obj.msc_instances.touches_border, bool)
    else:
        prep.notes.append("no msc channel: foci measured over the whole field (cell_id 0)")
    if config.jurkat.enabled:
        with prep.timer("segment_jurkat"):
            obj.jurkat = _held(prep, segment_jurkat(
                det["mito"], voxel_size=vox, msc_labels=obj.msc, **config.jurkat.stage_kwargs()
            ))  # fmt: skip
    else:
        obj.jurkat = JurkatInstances(xp.zeros(prep.shapes["mito"], xp.uint16), np.zeros(0, bool))
        prep.notes.append("jurkat.enabled is false: no donor detection (n_jurkat is 0)")
    if "nuclei" in det:
        _seed_by_nuclei(prep, obj, config)
    return obj


def _seed_by_nuclei(prep: Prepared, obj: _Objects, config: FieldConfig) -> None:
    """The nuclei, and the cells again from them: one MSC per MSC nucleus, one donor per
    nucleus inside a donor body (``nuclei.seed_cells``). The cells found without seeds
    tell which nucleus is whose; the masks stay, only the splits between cells change."""
    from hcsmito.stages.segmentation import (
        assign_nuclei,
        group_fragments,
        nuclei_seeds,
        segment_jurkat,
        segment_msc,
        segment_nuclei,
        split_at_donors,
    )

    det, vox, opt = prep.det, prep.vox, config.nuclei
    with prep.timer("segment_nuclei"):
        obj.nuclei = _held(prep, segment_nuclei(det["nuclei"], voxel_size=vox,
                                                **opt.stage_kwargs()))  # fmt: skip

    def assign():
        return assign_nuclei(obj.nuclei.labels, msc_labels=obj.msc,
                             jurkat_labels=obj.jurkat.labels, min_share=opt.min_share,
                             spacing_um=prep.spacing)  # fmt: skip

    with prep.timer("segment_nuclei"):
        share = opt.cell_fragment_fraction
        obj.nuclei = split_at_donors(obj.nuclei, obj.jurkat.labels, min_share=opt.min_share)
        obj.nuclei, cells = group_fragments(
            obj.nuclei, assign(), fragment_fraction=share, spacing_um=prep.spacing
        )
        obj.nuclei = _held(prep, obj.nuclei)
    if opt.seed_cells and obj.msc is not None and (cells["cell_kind"] == "msc").any():
        with prep.timer("segment_msc"):
            seeds = nuclei_seeds(obj.nuclei.labels, cells, "msc")
            obj.msc_instances = _held(prep, segment_msc(det["msc"], voxel_size=vox, seeds=seeds,
                                                        **config.msc.stage_kwargs()))  # fmt: skip
            obj.msc = obj.msc_instances.labels
            obj.touches = np.asarray(obj.msc_instances.touches_border, bool)
    if opt.seed_cells and config.jurkat.enabled and (cells["cell_kind"] == "jurkat").any():
        with prep.timer("segment_jurkat"):
            seeds = nuclei_seeds(obj.nuclei.labels, cells, "jurkat")
            obj.jurkat = _held(prep, segment_jurkat(det["mito"], voxel_size=vox,
                                                    msc_labels=obj.msc, seeds=seeds,
                                                    **config.jurkat.stage_kwargs()))  # fmt: skip
    with prep.timer("segment_nuclei"):
        obj.nuclei_cells = assign() if opt.seed_cells else cells


def _detect_foci(prep: Prepared, obj: _Objects, config: FieldConfig) -> None:
    from hcsmito.stages.foci import detect_foci

    kw = config.foci.stage_kwargs()
    if obj.msc is None:
        kw["require_parent"] = False
    with prep.timer("foci"):
        obj.foci = _held(prep, detect_foci(prep.det["mito"], voxel_size=prep.vox,
                                           msc_labels=obj.msc, jurkat_labels=obj.jurkat.labels,
                                           msc_signal=prep.det.get("msc"), **kw))  # fmt: skip


def _detect_tnts(prep: Prepared, obj: _Objects, config: FieldConfig) -> None:
    from hcsmito.stages.glass import GLASS_CUES
    from hcsmito.stages.tnt import detect_tnts

    det, xp = prep.det, prep.b.xp
    if "actin" not in det:
        prep.notes.append("no actin channel: no TNT detection (n_tnt, n_tnt_with_mito are null)")
        return
    with prep.timer("tnt"):
        # the foci stage's spot response, handed over: the stage holds the only reference
        # and frees it once its cargo rule has read it (4 B per field voxel less while the
        # tubes are found)
        spots = [obj.foci.spots]
        obj.foci = replace(obj.foci, spots=None)
        obj.tnts = detect_tnts(
            det["actin"],
            voxel_size=prep.vox,
            msc_labels=obj.msc if obj.msc is not None else xp.zeros(det["actin"].shape, xp.uint16),
            jurkat_labels=obj.jurkat.labels,
            foci_labels=obj.foci.labels,
            mito=det["mito"],
            msc_signal=det.get("msc"),  # free space against MSCs cut back to their GFP
            # the glass from the raw channels: deconvolution and background
            # subtraction leave the rising edges where they are, but need not
            glass_channels={r: prep.raw.get(r) for r in GLASS_CUES},
            mito_spots=spots.pop,  # the foci stage's spot response, not computed again
            **config.tnt.stage_kwargs(),
        )
        obj.tnts = _held(prep, obj.tnts)


def _measure_adhesion(prep: Prepared, obj: _Objects, config: FieldConfig) -> None:
    from hcsmito.stages.adhesion import measure_adhesion

    if obj.msc is None:
        return
    with prep.timer("adhesion"):
        obj.adhesion = measure_adhesion(obj.jurkat.labels, obj.msc, voxel_size=prep.vox,
                                        **config.adhesion.stage_kwargs())  # fmt: skip


def _field_qc(prep: Prepared, obj: _Objects, config: FieldConfig):
    """The image checks and every stage's flags: ``(FieldQC, codes)``."""
    with prep.timer("qc"):
        qc = field_qc(
            prep.raw, voxel_size=prep.vox, msc_labels=obj.msc, jurkat_labels=obj.jurkat.labels,
            markers=config.markers.names(), **config.qc.stage_kwargs(),
        )  # fmt: skip
        stages = {"attenuation": prep.attenuation, "segment_msc": obj.msc_instances,
                  "segment_jurkat": obj.jurkat, "segment_nuclei": obj.nuclei, "foci": obj.foci,
                  "tnt": obj.tnts}  # fmt: skip
        return qc, _collect_flags(qc.flags, stages)


def _tables(prep: Prepared, obj: _Objects, qc_flags, config: FieldConfig, where: str):
    """The per-object tables and the field's row (morphometry on the device)."""
    spacing, ndim, msc, foci = prep.spacing, prep.ndim, obj.msc, obj.foci
    intensity = [prep.raw["mito"]] + ([prep.decon["mito"]] if "mito" in prep.decon else [])
    ft = regionprops_table(foci.labels, intensity, spacing=spacing,
                           parents={"parent": msc} if msc is not None else None,
                           where=where)  # fmt: skip
    foci_df = foci_table(ft, ndim, decon="mito" in prep.processed)
    jt = regionprops_table(obj.jurkat.labels, spacing=spacing, where=where)
    jurkat_df = jurkat_table(jt, obj.adhesion, ndim)
    tnt_df = tnt_table(obj.tnts)
    if msc is not None:
        ct = regionprops_table(msc, spacing=spacing, where=where)
        cells_df = cells_table(ct, ft, msc, obj.touches, jurkat_df, config.readouts)
        inside = (foci.labels > 0) & (msc > 0)
    else:
        cells_df = empty_table("cells")
        inside = foci.labels > 0
    proj = inside.any(axis=0) if ndim == 3 else inside
    area_px = int(proj.sum())  # device→host: one number
    fields_df = fields_row(foci_df, cells_df, jurkat_df,
                            tnt_df if obj.tnts is not None else None, msc is not None,
                            area_px, spacing)  # fmt: skip
    fields_df = with_qc(fields_df, qc_flags, obj.tnts)
    tables = {"foci": foci_df, "cells": cells_df, "jurkat": jurkat_df, "tnt": tnt_df,
              "fields": fields_df}  # fmt: skip
    if obj.nuclei is not None:
        _nuclei_tables(prep, obj, tables, config, where)
    for marker in (m for m in config.markers.names() if m in prep.raw):
        _marker_columns(prep, obj, tables, marker, config)
    return tables


def _marker_columns(prep: Prepared, obj: _Objects, tables: dict, marker: str,
                    config: FieldConfig) -> None:  # fmt: skip
    """Each MSC's and donor's mean and integrated marker intensity (raw channel), the
    contrast its call reads and the call (:mod:`hcsmito.stages.markers`); the field's
    counts of positive cells."""
    from hcsmito.stages.markers import call_positive, measure_marker

    opt = config.markers
    levels, donor, msc = measure_marker(prep.raw[marker], obj.jurkat.labels, obj.msc,
                                        spacing=prep.spacing, margin_um=opt.margin_um,
                                        window_um=opt.window_um)  # fmt: skip
    _, thr = call_positive(np.concatenate([donor.contrast, msc.contrast]), levels, k=opt.k,
                           threshold=opt.threshold.get(marker))  # fmt: skip
    counts = {}
    for name, cell in (("jurkat", donor), ("cells", msc)):
        df = tables[name]
        ids = df["jurkat_id" if name == "jurkat" else "cell_id"].to_numpy(np.int64) - 1
        positive = cell.contrast[ids] > thr
        tables[name] = df.assign(**{f"{marker}_mean": cell.mean[ids],
                                    f"{marker}_sum": cell.sum[ids],
                                    f"{marker}_contrast": cell.contrast[ids],
                                    f"{marker}_positive": positive})  # fmt: skip
        counts[name] = int(positive.sum())
    tables["fields"] = tables["fields"].assign(**{
        f"n_jurkat_{marker}_positive": pd.array([counts["jurkat"]], dtype="Int64"),
        f"n_msc_{marker}_positive": pd.array([counts["cells"]], dtype="Int64"),
        f"{marker}_threshold": [thr],
        f"{marker}_background": [levels.level],
    })  # fmt: skip


def _nuclei_tables(prep: Prepared, obj: _Objects, tables: dict, config: FieldConfig, where: str):
    """The nuclei table; each cell's nucleus and apoptotic call; the field's counts."""
    from hcsmito.stages.segmentation.nuclei import nuclear_background

    opt = config.nuclei
    nt = regionprops_table(obj.nuclei.labels, [prep.raw["nuclei"]], spacing=prep.spacing,
                           where=where)  # fmt: skip
    b = prep.b

    def voxels(labels):  # device->host: one count per label
        return b.to_host(b.xp.bincount(labels.reshape(-1).astype(b.xp.int64)))

    nuc = nuclei_table(nt, obj.nuclei_cells, obj.nuclei.n_parts, obj.nuclei.cut, prep.ndim,
                       nucleus_voxels=voxels(obj.nuclei.labels),
                       donor_voxels=voxels(obj.jurkat.labels),
                       condensed_diameter=opt.condensed_diameter,
                       condensed_cell_ratio=opt.condensed_cell_ratio,
                       # the means are of the raw channel: its offset and background in them
                       background=nuclear_background(prep.raw["nuclei"]))  # fmt: skip
    tables["nuclei"] = nuc
    for name, kind, key in (("jurkat", "jurkat", "jurkat_id"), ("cells", "msc", "cell_id")):
        df = tables[name]
        tables[name] = df.assign(**apoptosis_columns(nuc, kind, df[key].to_numpy()))
    jur = tables["jurkat"]
    n_apo = int(jur["apoptotic"].fillna(False).sum())
    with_nucleus = int(jur["apoptotic"].notna().sum())
    tables["fields"] = tables["fields"].assign(
        n_nuclei=pd.array([len(nuc)], dtype="Int64"),
        n_jurkat_with_nucleus=pd.array([with_nucleus], dtype="Int64"),
        n_jurkat_apoptotic=pd.array([n_apo], dtype="Int64"),
        pct_jurkat_apoptotic=[100.0 * n_apo / with_nucleus if with_nucleus else np.nan],
    )


def _held(prep: Prepared, result: Any) -> Any:
    """A stage's result with its ``labels`` in uint16 when its largest label fits (half the
    bytes of int32 while the field holds them; every later stage reads labels of any
    integer dtype), else as they are."""
    xp = prep.b.xp
    labels = result.labels
    if labels.dtype == xp.uint16 or labels.dtype.kind not in "iu":
        return result
    top = int(labels.max()) if labels.size else 0  # device→host: one number
    if top > np.iinfo(np.uint16).max or (labels.size and int(labels.min()) < 0):
        return result
    return replace(result, labels=labels.astype(xp.uint16))


def _labels_to_host(prep: Prepared, obj: _Objects) -> dict[str, np.ndarray]:
    """The label images for output, int32 (device→host: label images). Each held image is
    let go as its int32 copy is made: the field holds one image twice at most, not every
    held image beside every copy (the field's peak at 40 B/voxel was here)."""
    b = prep.b

    def host(labels) -> np.ndarray:
        return b.to_host(labels).astype(np.int32, copy=False)

    labels: dict[str, np.ndarray] = {}
    if obj.msc is None:
        labels["msc"] = np.zeros(prep.shapes["mito"], np.int32)
    else:
        held, obj.msc = obj.msc, None
        obj.msc_instances = replace(obj.msc_instances, labels=None)
        labels["msc"] = host(held)
        del held
    for name, attr in (("jurkat", "jurkat"), ("foci", "foci"), ("tnt", "tnts"),
                       ("nuclei", "nuclei")):  # fmt: skip
        result = getattr(obj, attr)
        if result is None:
            continue
        held = result.labels
        setattr(obj, attr, replace(result, labels=None))
        labels[name] = host(held)
        del held, result
    return labels


def _collect_flags(image_flags: tuple[str, ...], stages: Mapping[str, Any]) -> tuple[str, ...]:
    """The field's QC codes: the image-level ones and every stage result's ``flags``,
    each checked against :data:`hcsmito.qc.QC_FLAGS` (an unknown code names its stage)."""
    codes = list(image_flags)
    for name, result in stages.items():
        codes += check_flags(getattr(result, "flags", ()) or (), source=f"stage {name}")
    return check_flags(codes)
