"""One OME-NGFF image group: its metadata validated (axes, resolution levels, channels,
voxel size in µm) without reading a pixel, and its level 0 opened as a lazy Dask array.
:func:`open_image` opens a single image; :mod:`hcsmito.io.plate` opens each field of a
plate the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from hcsmito.io._chunks import check_codecs, lazy_array
from hcsmito.io.errors import PlateError
from hcsmito.io.field import FieldImage
from hcsmito.io.ngff import SPACE_UNITS_UM, ImageMeta, parse
from hcsmito.io.store import Store, detect_version

__all__ = ["ImageInfo", "field_image", "open_image", "read_image"]

_AXES_RULE = re.compile(r"^t?c?z?yx$")


@dataclass
class ImageInfo:
    node: str  # path inside the store ("" for the root)
    axes: str
    channel_labels: list[str]
    channel_colors: list[str | None]
    voxel_size: dict[str, float]
    level0: str  # array path inside the store
    shape: tuple[int, ...]
    dtype: np.dtype


def _axes_string(ms, where: str) -> str:
    """``"tczyx"``-style string of the axes; raises unless it matches ``(t)(c)(z)yx``."""
    by_type = {"time": "t", "channel": "c"}
    axes = "".join(by_type.get(ax.type or "", ax.name.lower()) for ax in ms.axes)
    if not _AXES_RULE.match(axes) or any(
        ax.type == "space" and ax.name.lower() not in ("z", "y", "x") for ax in ms.axes
    ):
        raise PlateError(
            f"{where}: axes {[a.name for a in ms.axes]} are not in the order hcsmito reads: "
            "(t,)c,(z,)y,x, with space axes named z, y, x. Re-export the image with those axes."
        )
    return axes


def read_image(store: Store, node: str, version: str) -> ImageInfo:
    """Validate one image group and its resolution levels; nothing is read but metadata."""
    where = store.where(node)
    grp = store.group(node, what="the image group")
    attrs = store.ome_attrs(grp, node, version)
    if "multiscales" not in attrs:
        raise PlateError(
            f"{where}: not an OME-NGFF image: the group has no 'multiscales' metadata "
            f"(attributes: {sorted(attrs)})."
        )
    meta: ImageMeta = parse(ImageMeta, attrs, node=where, what="image")
    ms = meta.multiscales[0]
    axes = _axes_string(ms, where)
    ndim = len(axes)

    shape: tuple[int, ...] = ()
    dtype = np.dtype("uint8")
    level0 = ""
    for i, ds in enumerate(ms.datasets):
        apath = f"{node}/{ds.path}" if node else ds.path
        arr = store.array(apath, what=f"dataset {ds.path!r} (level {i})")
        if arr.metadata.zarr_format != (3 if version == "0.5" else 2):
            raise PlateError(
                f"{store.where(apath)}: a zarr v{arr.metadata.zarr_format} array in an NGFF "
                f"{version} store. Re-export the data."
            )
        if arr.ndim != ndim:
            raise PlateError(
                f"{store.where(apath)}: level {i} has {arr.ndim} dimensions but the axes "
                f"{list(axes)} are {ndim}: every level must have one dimension per axis."
            )
        empty = [ax for ax, n in zip(axes, arr.shape, strict=True) if n < 1]
        if empty:
            sizes = dict(zip(axes, arr.shape, strict=True))
            raise PlateError(
                f"{store.where(apath)}: level {i} has shape {sizes}: axis "
                f"{empty[0]!r} has length 0, and every axis needs at least 1. Re-export the "
                "image with its data, or remove it from the well's 'images'."
            )
        if i == 0:
            shape, dtype, level0 = tuple(arr.shape), arr.dtype, apath
            check_codecs(arr, store.where(apath))  # chunks we cannot check are refused now

    # channel labels and colours
    n_c = shape[axes.index("c")] if "c" in axes else 1
    labels = [f"c{i}" for i in range(n_c)]
    colors: list[str | None] = [None] * n_c
    if meta.omero is not None:
        chans = meta.omero.channels
        if len(chans) != n_c:
            raise PlateError(
                f"{where}: omero lists {len(chans)} channels but the image has {n_c}: fix "
                "'omero.channels' so it has one entry per channel."
            )
        for i, ch in enumerate(chans):
            labels[i] = ch.label if ch.label else labels[i]
            colors[i] = ch.color

    # voxel size: level-0 scale times the multiscale-level scale, in micrometres
    scale = np.asarray(ms.datasets[0].coordinateTransformations[0].scale, dtype=float)
    if ms.coordinateTransformations is not None:
        scale = scale * np.asarray(ms.coordinateTransformations[0].scale, dtype=float)
    voxel: dict[str, float] = {}
    for ax, name, s in zip(ms.axes, axes, scale, strict=True):
        if name in "zyx":
            voxel[name] = float(s) * SPACE_UNITS_UM[ax.unit or "micrometer"]
    return ImageInfo(node, axes, labels, colors, voxel, level0, shape, dtype)


def field_image(
    store: Store, info: ImageInfo, *, missing_chunks: str = "error", t: int | None = None, **ctx
) -> FieldImage:
    """The :class:`FieldImage` of a validated image: metadata, and pixels read lazily.

    ``t`` (a plate opened with ``time_points="fields"``): keep that time point only, as a
    ``t`` axis of length 1.
    """
    if ctx.get("well") is not None:
        at = f", time point {t}" if t is not None else ""
        context = f"plate {ctx['plate']}, well {ctx['well']}, field {ctx['field']}{at}"
    else:
        context = f"image {store.where(info.node)}"
    arr = zarr.open_array(store=store.store, path=info.level0, mode="r")
    token = str(store.path.resolve() / info.level0)  # unique per array on this machine
    data, reader = lazy_array(
        arr,
        info.axes,
        store.where(info.level0),
        context,
        token,
        root=store.path / info.level0,
        missing_chunks=missing_chunks,
    )
    if t is not None:
        data = data[t : t + 1]
    return FieldImage(
        data=data,
        axes=info.axes,
        channel_labels=list(info.channel_labels),
        voxel_size=dict(info.voxel_size),
        path=store.where(info.node),
        channel_colors=list(info.channel_colors),
        t=t,
        _reader=reader,
        **ctx,
    )


def open_image(path: str | Path, *, missing_chunks: str = "error") -> FieldImage:
    """Open a single OME-NGFF image (not a plate) read-only, lazily.

    Parameters
    ----------
    path : str or Path
        The image group's store, NGFF 0.5 (zarr v3) or 0.4 (zarr v2).
    missing_chunks : {"error", "fill"}
        As in :meth:`Plate.read_field`.

    Raises
    ------
    PlateError
        For invalid or missing metadata, or missing resolution levels.
    """
    store = Store(Path(path))
    root = store.group("", what="the image root")
    version = detect_version(store, root, "multiscales")
    info = read_image(store, "", version)
    return field_image(store, info, missing_chunks=missing_chunks)
