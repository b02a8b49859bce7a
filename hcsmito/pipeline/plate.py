"""Plate-level thresholds of the cell masks, computed on a sample of fields prepared as
:func:`hcsmito.pipeline.process_field` prepares them (the runner's ``plate_threshold``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.config import Config, FieldConfig
from hcsmito.pipeline.prepare import prepare
from hcsmito.stages.threshold import ManualThreshold

#: Voxels of one sampled field that enter a plate-level threshold histogram (a regular
#: subsample of larger fields: the histogram of 4 M voxels is the field's to ~0.1 %).
THRESHOLD_SAMPLE_VOXELS = 1 << 22


def threshold_sample(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float],
    config: FieldConfig | Config,
    roles: Sequence[str],
    backend: Backend | str = "auto",
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
    config = FieldConfig.of(config)
    prep = prepare(channels, voxel_size, config, backend, where)
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
    (``threshold: {method: manual, value: ...}``)."""
    update: dict[str, Any] = {}
    for role, value in values.items():
        section = config.msc if role == "msc" else config.jurkat
        update[role] = section.model_copy(update={"threshold": ManualThreshold(value=value)})
    return config.model_copy(update=update)
