"""Plate-level references computed before the fields run, from fields sampled over the
whole plate: the fixed thresholds of the cell masks (``plate_threshold``) and the glass
reference (``tnt.glass_reference_um``). Each returns the config the fields then run with
and what the manifest records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from hcsmito import schema
from hcsmito.config import Config

__all__ = [
    "check_roles",
    "plate_glass",
    "plate_thresholds",
    "read_channels",
    "reader_flags",
    "select_fields",
]

log = logging.getLogger(__name__)


def read_channels(plate, well_path: str, field: int, config: Config):
    """One field's channels by role, read now: ``(image, roles, {role: ndarray})``.

    NaN / Inf voxels and missing chunks fail the field with a message naming them, unless
    ``config.input`` lets them through: then ``image.missing_chunks`` and
    ``image.nonfinite`` list what was filled or replaced (:func:`reader_flags`)."""
    opts = config.input
    missing = "fill" if opts.missing_chunks == "fill" else "error"
    nonfinite = "replace" if opts.nonfinite == "flag" else "error"
    img = plate.read_field(well_path, field, missing_chunks=missing)
    required = [r.name for r in schema.ROLES if r.required]
    roles = img.resolve_roles(config.channel_roles(), required=required)
    # read in this task, not as new tasks of the cluster it runs on; crafted chunks always
    # fail this field with a message naming them
    channels = {
        r: img.read_channel(i, nonfinite=nonfinite) for r, i in roles.items() if i is not None
    }
    return img, roles, channels


def check_roles(plate, refs, config: Config) -> None:
    """Refuse, before any field runs, channel roles that no selected field can resolve: a
    channel the config names that the plate lacks (a role's, or a marker's of
    ``markers.channels``), two channels matching one role's pattern (e.g. "Hoechst" and
    "DAPI" for ``nuclei``). Fields are grouped by their channel labels (metadata only);
    where some groups resolve, the others fail field by field, named, and the rest of the
    plate runs."""
    from hcsmito.io.errors import PlateError

    required = [r.name for r in schema.ROLES if r.required]
    first: dict[tuple[str, ...], PlateError | None] = {}
    for ref in refs:
        img = plate.read_field(ref.well_path, ref.field)
        key = tuple(img.channel_labels)
        if key in first:
            continue
        try:
            img.resolve_roles(config.channel_roles(), required=required)
            first[key] = None
        except PlateError as err:
            first[key] = err
    errors = list(first.values())
    if errors and all(e is not None for e in errors):
        raise errors[0]


def reader_flags(img) -> tuple[list[str], dict[str, float]]:
    """The QC codes and measures of what the reader let through (``config.input``):
    ``missing_chunks`` (chunks read as the fill value) and ``nonfinite_voxels`` (NaN / Inf
    voxels replaced)."""
    flags: list[str] = []
    qc: dict[str, float] = {}
    if img.missing_chunks:
        flags.append("missing_chunks")
        qc["missing_chunks"] = float(len(img.missing_chunks))
    if img.nonfinite:
        flags.append("nonfinite_voxels")
        qc["nonfinite_voxels"] = float(sum(img.nonfinite.values()))
    return flags, qc


def select_fields(plate, wells: Iterable[str] | None):
    from hcsmito.io.names import normalize_well

    refs = plate.fields
    if not wells:
        return refs
    wanted = {}
    for w in wells:
        wanted[normalize_well(w)] = w
    missing = [w for k, w in wanted.items() if k not in {r.well for r in refs}]
    if missing:
        raise ValueError(
            f"plate {plate.name}: wells {missing} are not in the plate "
            f"(wells: {sorted({r.well for r in refs})})"
        )
    return [r for r in refs if r.well in wanted]


def plate_thresholds(
    plate, config: Config, backend: str | None = None
) -> tuple[Config, dict[str, dict]]:
    """Plate-level thresholds of the cell masks (``config.plate_threshold``).

    For each role listed (``msc``, ``jurkat``), ``sample_fields`` fields spread evenly over
    the whole plate (whatever wells a run selects, so that a partial run cuts as the full
    one does) are read, prepared as :func:`hcsmito.pipeline.process_field` prepares them
    (deconvolution, background), smoothed as the stage smooths them, and their pooled
    histogram thresholded (:func:`hcsmito.stages.threshold.plate_threshold`). A field
    that cannot be read is left out of the sample with a warning.

    Returns
    -------
    config : Config
        ``config`` with ``threshold: {method: manual, value: ...}`` for those roles.
    info : dict
        Per role: ``value``, ``method`` and the ``fields`` sampled (for the manifest).
    """
    from hcsmito.backend import get_backend
    from hcsmito.pipeline import plate_thresholds as fixed_thresholds
    from hcsmito.pipeline import threshold_sample, with_thresholds

    pt = config.plate_threshold
    if not pt.roles:
        return config, {}
    b = get_backend(backend or config.resources.backend)
    refs = select_fields(plate, None)
    picks = sorted(
        {int(i) for i in np.linspace(0, len(refs) - 1, min(pt.sample_fields, len(refs))).round()}
    )
    samples: dict[str, list[np.ndarray]] = {r: [] for r in pt.roles}
    used: list[str] = []
    last_error = ""
    for i in picks:
        ref = refs[i]
        where = f"plate {plate.name}, well {ref.well}, field {ref.field}"
        try:
            img, _, channels = read_channels(plate, ref.well_path, ref.field, config)
            sample = threshold_sample(channels, voxel_size=img.voxel_size, config=config,
                                      roles=pt.roles, backend=b, where=where)  # fmt: skip
        except Exception as exc:  # a bad field is left out; the run reports it itself
            log.warning("%s: left out of the plate threshold sample: %s", where, exc)
            last_error = str(exc)
            continue
        for role, values in sample.items():
            samples[role].append(values)
        used.append(f"{ref.well}/{ref.field}")
    if not used:
        raise ValueError(
            f"plate {plate.name}: no field of the plate-threshold sample could be used; the "
            f"last error: {last_error.rstrip('.')}. Fix that, or set plate_threshold.roles: []"
        )
    values = fixed_thresholds(samples, method=pt.method)
    info = {r: {"value": v, "method": pt.method, "fields": used} for r, v in values.items()}
    for role, value in values.items():
        log.info("plate %s: %s threshold %.6g (%s over %d fields)", plate.name, role, value,
                 pt.method, len(used))  # fmt: skip
    return with_thresholds(config, values), info


def plate_glass(plate, config: Config, backend: str | None = None) -> tuple[Config, dict]:
    """The plate's glass reference: the median of the per-field glass estimates
    (:func:`hcsmito.stages.glass.estimate_glass` on the raw channels) over
    ``plate_threshold.sample_fields`` fields spread over the plate, set as
    ``tnt.glass_reference_um``: a field whose own estimate is implausible, or further than
    ``tnt.glass_tolerance_um`` from it, uses it (source ``plate``) and is flagged.

    Skipped (config unchanged) when the glass is given (``tnt.glass_z_um``), the reference
    set by hand, or no sampled field has an actin channel. Cheap: tile means of the raw
    channels, no deconvolution or segmentation.

    Returns
    -------
    config : Config
        ``config`` with ``tnt.glass_reference_um`` set (when a reference was found).
    info : dict
        ``z_um`` (None when none), ``fields`` and ``values`` (µm) of the plausible
        estimates, and ``left_out`` (field: reason), for the manifest.
    """
    from hcsmito.backend import get_backend
    from hcsmito.stages.glass import GLASS_CUES, estimate_glass

    tnt = config.tnt
    if tnt.glass_z_um is not None or tnt.glass_reference_um is not None:
        return config, {}
    b = get_backend(backend or config.resources.backend)
    refs = select_fields(plate, None)
    n = min(config.plate_threshold.sample_fields, len(refs))
    picks = sorted({int(i) for i in np.linspace(0, len(refs) - 1, n).round()}) if n else []
    fields: list[str] = []
    values: list[float] = []
    left_out: dict[str, str] = {}
    for i in picks:
        ref = refs[i]
        key = f"{ref.well}/{ref.field}"
        try:
            img, roles, channels = read_channels(plate, ref.well_path, ref.field, config)
            if "actin" not in channels:
                left_out[key] = "no actin channel"
                continue
            g = estimate_glass(
                {r: b.asarray(channels[r]) for r in GLASS_CUES if r in channels},
                voxel_size=img.voxel_size,
            )
        except Exception as exc:  # a bad field is left out; the run reports it itself
            left_out[key] = str(exc)
            continue
        if g.plausible:
            fields.append(key)
            values.append(round(g.z_um, 3))
        else:
            left_out[key] = g.reason or "no glass"
    info: dict[str, Any] = {
        "z_um": float(np.median(values)) if values else None,
        "tolerance_um": tnt.glass_tolerance_um,
        "fields": fields,
        "values": values,
        "left_out": left_out,
    }
    if not values:
        return config, info
    log.info("plate %s: glass %.2f µm (median of %d fields)", plate.name, info["z_um"], len(values))
    update = {"tnt": tnt.model_copy(update={"glass_reference_um": info["z_um"]})}
    return config.model_copy(update=update), info
