"""Connected-component labelling of a mask, on the backend of the mask.

:func:`scipy.ndimage.label` on the CPU (int32 output, no copy), its cupyx twin on the GPU,
with the connectivity convention of :func:`skimage.measure.label`.
Labels are 1..n, numbered in raster order as the stages' own ``ndi.label`` calls number
them. (``benchmarks/bench_label.py`` also times cc3d, faster on the CPU but not used: see
``benchmarks/RESULTS.md``.)
"""

from __future__ import annotations

import numpy as np

from hcsmito.backend import Backend

__all__ = ["label"]


def label(mask, *, connectivity: int | None = None, where: str = ""):
    """Label the connected components of a mask.

    Parameters
    ----------
    mask : (M, N[, P]) ndarray of bool
        Foreground mask (NumPy or CuPy; any non-zero value is foreground).
    connectivity : int, optional
        Maximum number of orthogonal steps between neighbours, 1..ndim, as in
        :func:`skimage.measure.label` (1: faces only; ndim: faces, edges and corners).
        Default ``ndim`` (scikit-image's default).
    where : str, optional
        Plate/well/field of the image, quoted in error messages.

    Returns
    -------
    labels : (M, N[, P]) ndarray of int32
        Label image on the backend of ``mask``; 0 is background.
    """
    ctx = f" ({where})" if where else ""
    ndim = mask.ndim
    if ndim < 1:
        raise ValueError(f"mask must have at least one axis, got a scalar{ctx}")
    if connectivity is None:
        connectivity = ndim
    if not 1 <= int(connectivity) <= ndim:
        raise ValueError(
            f"connectivity must be between 1 and mask.ndim={ndim}, got {connectivity}{ctx}"
        )
    b = Backend.of(mask)
    if mask.dtype != bool:
        mask = mask != 0
    structure = b.ndi.generate_binary_structure(ndim, int(connectivity))
    out = b.xp.empty(mask.shape, dtype=np.int32)
    b.ndi.label(mask, structure=structure, output=out)
    return out
