"""Per-cell markers (annexin V, propidium iodide...): each cell's mean and integrated
intensity on the raw marker channel, and a positive call.

A marker stains some cells (apoptotic, dead) and leaves the others at the level of the
medium around them, so a cell is measured by its *contrast*, its mean intensity above the
channel's background level (the mode of the channel's histogram: the medium covers most of
a field). A cell is positive when its contrast exceeds

- ``threshold`` (intensity units above background), where one is set by hand or
  calibrated on control wells; else
- ``reference + k * sigma``: ``sigma`` is the channel's background noise per voxel and
  ``reference`` the median contrast of the field's cells (at least 0): unspecific
  staining that raises every cell raises the reference, and the call stays on the cells
  that stand out. It assumes that fewer than half of a field's cells are positive;
  a plate where more are needs a threshold calibrated on its controls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import background_level_noise, bincount

__all__ = ["MarkerLevels", "call_positive", "marker_levels", "measure_cells"]


@dataclass(frozen=True)
class MarkerLevels:
    """The background level and noise sigma of a marker channel (its intensity units)."""

    level: float
    sigma: float


def marker_levels(image: Any) -> MarkerLevels:
    """Background level and noise of a raw marker channel (NumPy or CuPy)."""
    b = Backend.of(image)
    level, sigma = background_level_noise(b, image.astype(b.xp.float32))
    return MarkerLevels(float(level), float(sigma))


def measure_cells(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per label 1..n of ``labels``: mean and integrated intensity of ``image`` (host)."""
    b = Backend.of(labels)
    xp = b.xp
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(0), np.zeros(0)
    lab = labels.reshape(-1)
    total = bincount(b, lab, n + 1).astype(xp.float64)
    sums = xp.bincount(lab, weights=b.asarray(image).reshape(-1).astype(xp.float64),
                       minlength=n + 1)  # fmt: skip
    means = sums / xp.maximum(total, 1)
    return b.to_host(means)[1:], b.to_host(sums)[1:]  # device->host: 2 values per cell


def call_positive(
    contrast: np.ndarray,
    levels: MarkerLevels,
    *,
    k: float = 2.0,
    threshold: float | None = None,
) -> tuple[np.ndarray, float]:
    """The positive call of each cell from its contrast (mean above background), and
    the threshold used (module docstring)."""
    contrast = np.asarray(contrast, float)
    if threshold is None:
        finite = contrast[np.isfinite(contrast)]
        reference = max(float(np.median(finite)), 0.0) if finite.size else 0.0
        threshold = reference + k * levels.sigma
    return contrast > threshold, float(threshold)
