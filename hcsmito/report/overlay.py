"""The per-field QC picture: max projections with the label contours."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["qc_overlay"]

#: Contour colours of the label images (RGB in [0, 1]).
CONTOURS = (("msc", (1, 1, 1)), ("jurkat", (0, 1, 1)), ("foci", (1, 1, 0)))


def _outline(lab: np.ndarray) -> np.ndarray:
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    return edge & (lab > 0)


def _projection(a: np.ndarray) -> np.ndarray:
    """Max projection scaled between the 1st and 99.8th percentile to [0, 1]."""
    a = np.asarray(a, np.float32)
    p = a.max(axis=0) if a.ndim == 3 else a
    lo, hi = np.percentile(p, (1, 99.8))
    return np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1)


def qc_overlay(channels: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Max projections (GFP green, mito magenta) with MSC (white), Jurkat (cyan) and foci
    (yellow) contours.

    Parameters
    ----------
    channels : mapping of role to (Y, X) or (Z, Y, X) ndarray
        ``mito`` required, ``msc`` optional.
    labels : mapping of str to ndarray
        Label images of the field's shape.

    Returns
    -------
    (Y, X, 3) float32 ndarray
        RGB in [0, 1].
    """
    shape = next(iter(channels.values())).shape[-2:]
    g = _projection(channels["msc"]) if "msc" in channels else np.zeros(shape, np.float32)
    m = _projection(channels["mito"])
    rgb = np.stack([m, g, m], axis=-1) * 0.9
    for name, color in CONTOURS:
        if name in labels and labels[name].any():
            lab = labels[name]
            rgb[_outline(lab.max(axis=0) if lab.ndim == 3 else lab)] = color
    return rgb
