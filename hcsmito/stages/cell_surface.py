"""Cell masks drawn close to the true cell surface, for rules that measure free space.

Segmentation smooths before it thresholds (1 µm for the GFP of MSCs, 1.5 µm for the
MitoTracker of Jurkat bodies) so that it counts cells right, and a threshold at a fraction
of the foreground places a blurred edge outside the true one: on generated fields the MSC
masks hold 35 % more voxels than the true cells, Jurkat masks reach 1-2 µm past the cell
where a nanotube leaves it with a mitochondrion on board, and the masks of two cells a few
µm apart meet in the gap between them. That is harmless for counting and for assigning
foci, but a nanotube is the *free* part of an actin tube between two cells: a 4-5 µm tube
over a gap the masks close up has no free part left.

:func:`tighten_labels` keeps each label's voxels where its own channel, lightly smoothed,
stays above a fraction of the way from the background to the label's mean level: the
smoothing bloat goes, the cell stays where its signal is. For a donor cell (MitoTracker
fills the cytoplasm, not the cortex) holes inside a plane are filled, the body is the
label's largest piece (a mitochondrion on a tube leaving the cell is cargo, not cell) and
the body keeps its axial extent within ``keep_z_um`` (the cortex above and below the
mitochondria is cell, and a Jurkat resting on an MSC must not open a gap between them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import background_level_noise, bbox, gaussian, spacing
from hcsmito.stages._util import fill_holes as _fill_holes

__all__ = ["tighten_labels"]


def tighten_labels(
    labels: Any,
    signal: Any,
    *,
    voxel_size: Any,
    sigma_um: tuple[float, ...],
    fraction: float,
    fill_holes: bool = False,
    main_body: bool = False,
    keep_z_um: float = 0.0,
) -> Any:
    """Labels cut back to where their own signal is.

    Parameters
    ----------
    labels : int ndarray
        Cell instances (0 = background), 2-D or 3-D, NumPy or CuPy.
    signal : ndarray of ``labels``' shape
        The channel the cells were segmented from.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    sigma_um : tuple of float, µm
        Gaussian sigma per axis (z, y, x) of the smoothing (the last ``labels.ndim``).
    fraction : float
        A voxel stays when its smoothed signal exceeds ``background + fraction * (mean of
        the label - background)``.
    fill_holes : bool
        Fill holes within each plane (a cell whose signal is textured).
    main_body : bool
        Keep only each label's largest connected piece.
    keep_z_um : float, µm
        Give back the label's voxels within this distance along z of what was kept (3-D).

    Returns
    -------
    int ndarray
        The tightened labels (same ids; a subset of ``labels``' voxels), in ``labels``'
        integer dtype (int32 for any other).
    """
    b = Backend.of(labels)
    xp = b.xp
    lab = b.asarray(labels)
    if lab.dtype.kind not in "iu":
        lab = lab.astype(xp.int32)
    n = int(lab.max()) if lab.size else 0
    if n == 0:
        return lab
    sp = spacing(voxel_size, lab.ndim)
    sig = tuple(sigma_um)[-lab.ndim :]
    fine = gaussian(b, b.asarray(signal), [s / p for s, p in zip(sig, sp, strict=True)])
    level = float(background_level_noise(b, fine)[0])
    # each label's mean over its voxels only (in the same order: the same sums)
    flat = lab.reshape(-1)
    at = xp.flatnonzero(flat)
    total = xp.bincount(flat[at], weights=fine.reshape(-1)[at], minlength=n + 1)
    count = xp.bincount(flat[at], minlength=n + 1)
    del at
    mean = total / xp.maximum(count, 1)
    cut = level + fraction * (mean - level)
    cut[0] = xp.inf
    # the morphology on the cells' box (one voxel of background around them): the same
    # result as on the whole field, for a fraction of the voxels in a sparse field
    box = bbox(b, lab > 0, (1,) * lab.ndim)
    lb = lab[box]
    k = xp.empty(lb.shape, dtype=bool)
    fb = fine[box]
    for z in range(0, lb.shape[0], 4):  # a few planes at a time: no float64 volume
        k[z : z + 4] = fb[z : z + 4] > cut[lb[z : z + 4]]
    del fine, fb
    if fill_holes:
        st = np.zeros((3,) * lab.ndim, bool)
        st[(1,) * (lab.ndim - 2)] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
        k = _fill_holes(b, k, st) & (lb > 0)
    if main_body:
        k = _largest_piece(b, k, lb, n)
    if keep_z_um > 0 and lab.ndim == 3:
        steps = int(round(keep_z_um / sp[0]))
        if steps > 0:
            st = b.asarray(np.ones((3, 1, 1), bool))
            k = b.ndi.binary_dilation(k, structure=st, iterations=steps) & (lb > 0)
    keep = xp.zeros(lab.shape, bool)
    keep[box] = k
    return xp.where(keep, lab, 0).astype(lab.dtype, copy=False)


def _largest_piece(b: Backend, keep: Any, lab: Any, n: int) -> Any:
    """``keep`` restricted to each label's largest connected piece (26-/8-connected)."""
    xp = b.xp
    piece, n_piece = b.ndi.label(keep, structure=b.asarray(np.ones((3,) * lab.ndim, bool)))
    if n_piece == 0:
        return keep
    at = piece > 0
    # (piece, label) pairs with their sizes: a piece may span two touching cells
    key = piece[at].astype(xp.int64) * (n + 1) + lab[at]
    size = b.to_host(xp.bincount(key, minlength=(n_piece + 1) * (n + 1)))  # device->host
    size = size.reshape(n_piece + 1, n + 1)
    best = size.argmax(axis=0)  # per label, its largest piece
    ok = np.zeros((n_piece + 1) * (n + 1), bool)
    labels_with = np.flatnonzero(size.max(axis=0) > 0)
    ok[best[labels_with] * (n + 1) + labels_with] = True
    out = xp.zeros(keep.shape, bool)
    out[at] = b.asarray(ok)[key]
    return out
