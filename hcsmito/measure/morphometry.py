"""Per-object morphometry in one pass: labels (+ channels, + parents) -> columnar table.

The table mirrors :func:`skimage.measure.regionprops_table` (same property names, same
definitions, physical units from ``spacing``) and adds what an HCS readout needs:
``n_voxels``, ``intensity_sum``, ``area_projected`` (area of the z-projection) and the id of
the parent object (e.g. the MSC that holds a mitochondrial focus).

How it is fast
--------------
Nothing loops over labels. Both backends first reduce the label image to per-label
*moments* (:class:`~hcsmito.measure._moments.Moments`: voxel counts, exact integer sums of
coordinates and their products, intensity sums, extrema, parent overlaps), then share the
code here that turns moments into columns.

- CPU (:mod:`hcsmito.measure._scan`): the foreground is found block by block through a
  row-group summary, cut into x-runs whose moments have closed forms, and folded into
  per-label sums with ``bincount``; large images are scanned by one thread per row range.
- GPU (:mod:`hcsmito.measure._kernels`): a fused CuPy kernel walks x-segments of rows,
  pre-aggregates runs in registers and flushes them with atomics into one accumulator row
  per label; a second kernel counts the projected area column by column. The table is
  finished on the device (axis lengths in one fused kernel) and copied back once per dtype.

Coordinate moments are summed as exact integers, so the inertia tensor carries no
cancellation error (its numerators are exact int64 for objects below 2**31 / max(shape)
voxels, float64 beyond). :func:`~hcsmito.measure._moments.moments_reference` is the plain
per-voxel ``xp`` twin of both (``bincount`` / ``ufunc.at``), which the tests compare them to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hcsmito.backend import Backend, get_backend
from hcsmito.measure._kernels import axis_lengths, eigvalsh_sym, moments_gpu
from hcsmito.measure._moments import Moments, pairs
from hcsmito.measure._scan import moments_cpu

__all__ = [
    "PROPERTIES",
    "aggregate_by_parent",
    "regionprops_table",
    "table_to_dataframe",
]

#: Properties that :func:`regionprops_table` computes (scikit-image names where one exists).
PROPERTIES = (
    "label",
    "n_voxels",
    "area",
    "area_projected",
    "centroid",
    "bbox",
    "equivalent_diameter_area",
    "axis_major_length",
    "axis_minor_length",
    "intensity_sum",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "centroid_weighted",
    "parent",
)
_INTENSITY_PROPERTIES = (
    "intensity_sum",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "centroid_weighted",
)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(labels, intensity, spacing, parents, where: str):
    """Validate and normalise the inputs; returns (channels, spacing, parents, multichannel)."""
    ctx = f" ({where})" if where else ""
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"labels must be a 2-D (Y, X) or 3-D (Z, Y, X) label image, got shape "
            f"{labels.shape}{ctx}: pass one field, one time point, without channel axis"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"labels must have an integer dtype, got {labels.dtype}{ctx}: non-integer images "
            "are ambiguous; label a mask with hcsmito.measure.label or cast with .astype(int)"
        )
    if spacing is None:
        spacing = (1.0,) * labels.ndim
    spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(spacing) != labels.ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"spacing must give {labels.ndim} positive voxel sizes (one per axis of labels, "
            f"e.g. (dz, dy, dx) in µm), got {spacing}{ctx}"
        )

    channels: list[Any] = []
    multichannel = False
    if intensity is not None:
        if isinstance(intensity, Sequence) and not hasattr(intensity, "shape"):
            channels = list(intensity)
            multichannel = True
        elif intensity.shape == labels.shape:
            channels = [intensity]
        elif intensity.ndim == labels.ndim + 1 and intensity.shape[1:] == labels.shape:
            channels = [intensity[c] for c in range(intensity.shape[0])]
            multichannel = True
        else:
            raise ValueError(
                f"intensity has shape {intensity.shape} but labels {labels.shape}{ctx}: give "
                "one channel of the labels' shape, a (C, *labels.shape) stack (channel first, "
                "as in hcsmito images) or a list of channels"
            )
        for c, ch in enumerate(channels):
            if ch.shape != labels.shape:
                raise ValueError(
                    f"intensity channel {c} has shape {ch.shape}, labels {labels.shape}{ctx}"
                )
            if ch.dtype.kind not in "biuf":
                raise TypeError(f"intensity channel {c} has non-numeric dtype {ch.dtype}{ctx}")

    if parents is None:
        parents = {}
    elif not isinstance(parents, Mapping):
        parents = {"parent": parents}
    for name, p in parents.items():
        if p.shape != labels.shape or p.dtype.kind not in "iu":
            raise ValueError(
                f"parent label image {name!r} must be an integer array of the labels' shape "
                f"{labels.shape}, got {p.dtype} {p.shape}{ctx}"
            )
    return channels, spacing, dict(parents), multichannel


# --------------------------------------------------------------------------------------------
# moments -> columns (shared by every backend)
# --------------------------------------------------------------------------------------------


def _exact_limit(shape) -> int:
    """Objects with fewer voxels than this have exact int64 inertia numerators."""
    return (1 << 31) // max(shape)


def _inertia_eigvals(m: Moments, spacing, shape, xp) -> Any:
    """Eigenvalues (descending) of scikit-image's inertia tensor, per label: (L, ndim)."""
    ndim = m.s1.shape[1]
    L = m.n.size
    n = m.n.astype(xp.float64)
    # n·Σab - Σa·Σb is exact in int64 for objects with n·max(coord) < 2**31, which are all
    # but the giant ones; those take float64 (relative error ~1e-16 of n²·coord²)
    exact = m.n < _exact_limit(shape)
    s1f = m.s1.astype(xp.float64)
    cov = xp.empty((L, ndim, ndim))
    for k, (a, b) in enumerate(pairs(ndim)):
        num_int = (m.n * m.s2[:, k] - m.s1[:, a] * m.s1[:, b]).astype(xp.float64)
        num_flt = n * m.s2[:, k].astype(xp.float64) - s1f[:, a] * s1f[:, b]
        num = xp.where(exact, num_int, num_flt)
        cov[:, a, b] = num / (n * n) * (spacing[a] * spacing[b])
        cov[:, b, a] = cov[:, a, b]
    T = -cov
    diag = xp.diagonal(cov, axis1=1, axis2=2)
    r = xp.arange(ndim)
    T[:, r, r] = diag.sum(axis=1, keepdims=True) - diag
    if xp is np:
        ev = np.linalg.eigvalsh(T)[:, ::-1] if L else np.zeros((0, ndim))
    else:  # one fused kernel: cuSOLVER's batched eigvalsh is slow and needs KBs per matrix
        ev = eigvalsh_sym(T)
    return xp.maximum(ev, 0)


def _columns(m: Moments, spacing, multichannel: bool, properties, shape, xp) -> dict[str, Any]:
    """Columns from moments, on the moments' device (NumPy or CuPy arrays).

    Whole (L, k) blocks are computed at once and split into column views, so the GPU sees a
    few dozen launches, not one per column and channel.
    """
    ndim = len(shape)
    C = m.sw.shape[1]
    voxel = float(np.prod(spacing))
    n = m.n.astype(xp.float64)
    sp = xp.asarray(spacing, dtype=xp.float64)
    out: dict[str, Any] = {}
    cache: dict[str, Any] = {}

    def once(key, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    def chan(name, values):  # values (L, C)
        for c in range(C):
            out[f"{name}-{c}" if multichannel else name] = values[:, c]

    def axes():
        if xp is np:
            ev = _inertia_eigvals(m, spacing, shape, xp)
            if ndim == 2:
                return 4 * np.sqrt(ev[:, 0]), 4 * np.sqrt(ev[:, -1])
            return (
                np.sqrt(np.maximum(0, 10 * (ev[:, 0] + ev[:, 1] - ev[:, 2]))),
                np.sqrt(np.maximum(0, 10 * (-ev[:, 0] + ev[:, 1] + ev[:, 2]))),
            )
        # one fused kernel
        return axis_lengths(m.n, m.s1, m.s2, spacing, _exact_limit(shape))

    with np.errstate(invalid="ignore", divide="ignore"):
        mean = once("mean", lambda: m.sw / n[:, None]) if C else None
        for prop in properties:
            if prop == "label":
                out["label"] = m.labels
            elif prop == "n_voxels":
                out["n_voxels"] = m.n
            elif prop == "area":
                out["area"] = n * voxel
            elif prop == "area_projected":
                px = m.n if ndim == 2 else m.projected
                out["area_projected"] = px.astype(xp.float64) * (spacing[-1] * spacing[-2])
            elif prop == "centroid":
                cen = m.s1 / n[:, None] * sp
                for a in range(ndim):
                    out[f"centroid-{a}"] = cen[:, a]
            elif prop == "bbox":
                stop = m.cmax + 1
                for a in range(ndim):
                    out[f"bbox-{a}"] = m.cmin[:, a]
                for a in range(ndim):
                    out[f"bbox-{ndim + a}"] = stop[:, a]
            elif prop == "equivalent_diameter_area":
                out[prop] = (2 * ndim * n * voxel / np.pi) ** (1 / ndim)
            elif prop == "axis_major_length":
                out[prop] = once("axes", axes)[0]
            elif prop == "axis_minor_length":
                out[prop] = once("axes", axes)[1]
            elif prop == "intensity_sum":
                chan(prop, m.sw)
            elif prop == "intensity_mean":
                chan(prop, mean)
            elif prop == "intensity_min":
                chan(prop, m.wmin)
            elif prop == "intensity_max":
                chan(prop, m.wmax)
            elif prop == "intensity_std":
                chan(prop, xp.sqrt(xp.maximum(0, m.sww / n[:, None] - mean * mean)))
            elif prop == "centroid_weighted":
                cw = m.swc / m.sw[:, :, None] * sp
                for a in range(ndim):
                    for c in range(C):
                        suffix = f"-{a}-{c}" if multichannel else f"-{a}"
                        out[f"centroid_weighted{suffix}"] = cw[:, c, a]
            elif prop == "parent":
                for name, (pid, overlap) in m.parents.items():
                    out[name] = pid
                    out[f"{name}_overlap"] = overlap / np.maximum(_small_to_host(n), 1)
    return out


def _small_to_host(a) -> np.ndarray:
    """NumPy view of a small per-label array from either backend."""
    return a.get() if hasattr(a, "get") else np.asarray(a)  # device->host: (L,)


def _table_to_host(table: dict[str, Any], b: Backend) -> dict[str, np.ndarray]:
    """One device->host copy per dtype (columns stacked), not one per column."""
    if not b.is_gpu:
        return {k: np.asarray(v) for k, v in table.items()}
    xp = b.xp
    dev = {k: v for k, v in table.items() if not isinstance(v, np.ndarray)}
    out = {k: v for k, v in table.items() if isinstance(v, np.ndarray)}
    by_dtype: dict[Any, list[str]] = {}
    for k, v in dev.items():
        by_dtype.setdefault(v.dtype, []).append(k)
    for keys in by_dtype.values():
        block = b.to_host(xp.stack([dev[k] for k in keys]))  # device->host: (k, L)
        out.update({k: block[i] for i, k in enumerate(keys)})
    return {k: out[k] for k in table}


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def regionprops_table(
    labels,
    intensity=None,
    *,
    spacing: Sequence[float] | None = None,
    parents=None,
    properties: Sequence[str] | None = None,
    backend: str | None = None,
    where: str = "",
) -> dict[str, np.ndarray]:
    """Measure every labelled object in one pass; a columnar table like scikit-image's.

    Parameters
    ----------
    labels : (M, N[, P]) ndarray of int
        Label image (NumPy or CuPy; any integer dtype, values need not be contiguous).
        0 is background.
    intensity : (M, N[, P]) ndarray, (C, M, N[, P]) ndarray or sequence of ndarrays, optional
        Intensity channel(s) on the same grid, channel axis *first*. One array of the
        labels' shape gives unsuffixed columns (``intensity_mean``); a stack or a list gives
        one column per channel with scikit-image's suffix (``intensity_mean-0``,
        ``centroid_weighted-<axis>-<channel>``).
    spacing : sequence of float, optional
        Voxel size per axis (µm), e.g. ``(dz, dy, dx)``. Default 1.
    parents : (M, N[, P]) ndarray of int or mapping of str to such arrays, optional
        Parent label image(s), e.g. the MSC cells. Adds a column per parent image (named
        ``parent``, or by the mapping key) holding the non-zero parent label that covers
        most voxels of the object (ties: smallest label; 0 when it lies in no parent), and
        ``<name>_overlap``, the fraction of the object's voxels inside that parent.
    properties : sequence of str, optional
        Subset of :data:`PROPERTIES`, in output order (default: all; the intensity
        properties only where ``intensity`` is given, ``parent`` only with ``parents``).
    backend : {"cpu", "gpu", "auto"}, optional
        Where to compute; the arrays are moved there. Default: where the arrays are
        (CuPy arrays -> GPU).
    where : str, optional
        Plate/well/field of the image, quoted in error messages.

    Returns
    -------
    table : dict of str to (L,) ndarray
        One row per label, ascending label value; NumPy arrays (also for CuPy input).
        ``area`` is the area (2-D, µm²) or volume (3-D, µm³), ``area_projected`` the area of
        the z-projection (µm²), ``centroid-*`` and ``centroid_weighted-*`` are in µm,
        ``bbox-*`` in voxel indices (start inclusive, stop exclusive), as in scikit-image.
        All other definitions follow ``skimage.measure.regionprops`` 0.26 with ``spacing``.

    Notes
    -----
    Cost is one read of ``labels`` plus work proportional to the foreground voxels; extra
    memory is bounded by blocks of rows (CPU) or per-label accumulators (GPU).
    """
    channels, spacing, parents, multichannel = _check_inputs(
        labels, intensity, spacing, parents, where
    )
    if properties is None:
        properties = [
            p
            for p in PROPERTIES
            if (channels or p not in _INTENSITY_PROPERTIES) and (parents or p != "parent")
        ]
    else:
        properties = list(properties)
        unknown = [p for p in properties if p not in PROPERTIES]
        if unknown:
            raise ValueError(f"unknown properties {unknown}: choose from {PROPERTIES}")
        if not channels and any(p in _INTENSITY_PROPERTIES for p in properties):
            raise ValueError("intensity properties were asked for but no intensity was given")
        if not parents and "parent" in properties:
            raise ValueError("'parent' was asked for but no parent label image was given")
    if backend is None:
        b = Backend.of(labels, *channels, *parents.values())
    else:
        b = get_backend(backend)
        if not b.is_gpu:  # device->host where the caller asked for the CPU
            labels = b.to_host(labels)
            channels = [b.to_host(c) for c in channels]
            parents = {k: b.to_host(v) for k, v in parents.items()}
    if b.is_gpu:
        arr = [b.asarray(a) for a in (labels, *channels, *parents.values())]
        lab = arr[0]
        chans = arr[1 : 1 + len(channels)]
        pars = dict(zip(parents, arr[1 + len(channels) :], strict=True))
        m = moments_gpu(lab, chans, pars, b)
    else:
        m = moments_cpu(
            np.asarray(labels),
            [np.asarray(c) for c in channels],
            {k: np.asarray(v) for k, v in parents.items()},
        )
    table = _columns(m, spacing, multichannel, properties, labels.shape, b.xp)
    return _table_to_host(table, b)


def table_to_dataframe(table: Mapping[str, np.ndarray]):
    """The columnar table as a :class:`pandas.DataFrame` (columns in table order)."""
    import pandas as pd

    return pd.DataFrame({k: np.asarray(v) for k, v in table.items()})


def aggregate_by_parent(
    table: Mapping[str, np.ndarray],
    *,
    parent: str = "parent",
    parent_labels=None,
    intensity_columns: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Per-parent sums of an object table: objects, volume, projected area, intensity.

    Parameters
    ----------
    table : mapping of str to (L,) ndarray
        Output of :func:`regionprops_table` with a parent column.
    parent : str
        Name of the parent column (objects with parent 0 are not counted).
    parent_labels : (M, N[, P]) ndarray of int, optional
        The parent label image: then every parent gets a row, also those without objects.
        Without it, only parents that hold at least one object appear.
    intensity_columns : sequence of str, optional
        Columns summed per parent (default: every ``intensity_sum*`` column).

    Returns
    -------
    table : dict of str to (K,) ndarray
        ``label`` (parent id, ascending), ``n_objects``, ``area`` (sum of object areas or
        volumes), ``area_projected`` (sum of the objects' projected areas) and one
        ``<column>`` per intensity column, summed.
    """
    if parent not in table:
        raise KeyError(
            f"column {parent!r} is not in the table: measure with parents=... "
            f"(columns: {list(table)})"
        )
    pid = np.asarray(table[parent]).astype(np.int64)
    if intensity_columns is None:
        intensity_columns = [k for k in table if k.startswith("intensity_sum")]
    if parent_labels is not None:
        b = Backend.of(parent_labels)
        ids = b.to_host(b.xp.unique(parent_labels))  # device->host: parent ids, small
        ids = ids[ids != 0].astype(np.int64)
    else:
        ids = np.unique(pid[pid != 0])
    ids = np.union1d(ids, pid[pid != 0])
    pos = np.searchsorted(ids, pid)
    inside = pid != 0
    K = ids.size

    def total(col):
        return np.bincount(pos[inside], weights=np.asarray(col, float)[inside], minlength=K)

    out = {
        "label": ids,
        "n_objects": np.bincount(pos[inside], minlength=K).astype(np.int64),
    }
    for col in ("area", "area_projected", *intensity_columns):
        if col in table:
            out[col] = total(table[col])
    return out
