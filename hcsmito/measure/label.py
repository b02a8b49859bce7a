"""Connected-component labelling of a mask, on the backend of the mask.

CPU: ``cc3d.connected_components`` (the optional package connected-components-3d) where
it is installed, else :func:`scipy.ndimage.label` (int32 output, no copy): on 3-D foci
masks cc3d is the fastest of the three, scipy and :func:`skimage.measure.label` close to
each other (``benchmarks/bench_label.py``; numbers in ``benchmarks/RESULTS.md``). GPU:
:func:`cupyx.scipy.ndimage.label`. Labels are 1..n; their order depends on the
implementation (compare label images up to renumbering).
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
    if not b.is_gpu:
        cc3d = _cc3d()
        if cc3d is not None and ndim in (2, 3):
            cc_conn = {2: {1: 4, 2: 8}, 3: {1: 6, 2: 18, 3: 26}}[ndim][int(connectivity)]
            out = cc3d.connected_components(mask, connectivity=cc_conn, out_dtype=np.uint32)
            return out.view(np.int32)
    structure = b.ndi.generate_binary_structure(ndim, int(connectivity))
    out = b.xp.empty(mask.shape, dtype=np.int32)
    b.ndi.label(mask, structure=structure, output=out)
    return out


def _cc3d():
    """The optional connected-components-3d module, or None."""
    try:
        import cc3d
    except ImportError:
        return None
    return cc3d
