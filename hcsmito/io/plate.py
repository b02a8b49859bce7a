"""Read OME-NGFF HCS plates (0.5 on zarr v3, 0.4 on zarr v2) as lazy Dask arrays.

:func:`open_plate` opens a plate read-only and validates *all* of its metadata up front
(plate, every well, every field image and every resolution level), so that an invalid plate
is refused with one clear :class:`PlateError` before any computation starts. Pixels are read
lazily, chunk by chunk, when the Dask array of a field is computed; a chunk that cannot be
decoded raises a :class:`PlateError` naming the plate, well, field and chunk key.

Conventions (DESIGN.md): wells are ``ROW/COLUMN``; fields come from each well's ``images``
list; image axes are ``(t,)c,(z,)y,x`` from ``multiscales[0].axes`` (a missing ``z`` is a 2-D
field, a missing ``c`` a single-channel one); the voxel size is the level-0 ``scale``
(times the multiscale-level ``scale``, if any), converted to micrometres.

Two liberties for real plates: a 0.4 plate without ``version`` is read as 0.4, and a 0.4 well
group without ``well`` metadata (as written by some converters) has its fields found by
listing its alphanumeric child groups, in natural order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as _dc_field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from hcsmito.io._chunks import lazy_array
from hcsmito.io.errors import PlateError
from hcsmito.io.names import canonical_well, parse_well
from hcsmito.io.ngff import SPACE_UNITS_UM, ImageMeta, PlateMeta, WellMeta, parse
from hcsmito.io.roles import DEFAULT_ROLE_PATTERNS, resolve_channel_roles
from hcsmito.io.store import Store, detect_version

__all__ = [
    "DEFAULT_ROLE_PATTERNS",
    "FieldImage",
    "FieldRef",
    "Plate",
    "PlateError",
    "open_image",
    "open_plate",
    "resolve_channel_roles",
]

_AXES_RULE = re.compile(r"^t?c?z?yx$")
_METADATA_THREADS = 8


@dataclass(frozen=True)
class FieldRef:
    """One field of view of a plate.

    Attributes
    ----------
    well : str
        The well in ``B/3`` form (as in every output table).
    well_path : str
        The well's path in the store (``B/03``).
    field : int
        The field's index in the well's ``images`` list.
    path : str
        The image group's path in the store (``B/03/0``).
    """

    well: str
    well_path: str
    field: int
    path: str


@dataclass
class FieldImage:
    """A field (or single image) opened lazily.

    Attributes
    ----------
    data : dask.array.Array
        Level-0 pixels, axes as stored (``axes``), read on ``compute()``.
    axes : str
        Axis names in order, a match of ``(t)(c)(z)yx``: ``"czyx"``, ``"tczyx"``, ``"cyx"``...
    channel_labels : list of str
        From ``omero.channels[].label``; ``"c0"``, ``"c1"``... where absent.
    voxel_size : dict
        Micrometres per voxel along ``"z"`` (3-D fields only), ``"y"`` and ``"x"``.
    path : str
        The store and the image group's path inside it, for messages.
    plate, well : str or None
        Plate name and well (``B/3``) for a plate field; None for :func:`open_image`.
    field : int or None
        Field index in the well; None for :func:`open_image`.
    channel_colors : list of str or None
        ``omero`` colours (hex ``RRGGBB``), None where absent.
    """

    data: da.Array
    axes: str
    channel_labels: list[str]
    voxel_size: dict[str, float]
    path: str
    plate: str | None = None
    well: str | None = None
    field: int | None = None
    channel_colors: list[str | None] = _dc_field(default_factory=list)

    @property
    def is_3d(self) -> bool:
        """True when the field has a ``z`` axis."""
        return "z" in self.axes

    def describe(self) -> str:
        """``"plate P, well B/3, field 0"`` (or ``"image PATH"``), for messages."""
        if self.well is not None:
            return f"plate {self.plate}, well {self.well}, field {self.field}"
        return f"image {self.path}"

    def resolve_roles(
        self,
        roles: Mapping[str, str | int | None] | None = None,
        *,
        required: Sequence[str] = ("mito",),
    ) -> dict[str, int | None]:
        """:func:`resolve_channel_roles` on this field's labels, errors naming the field."""
        return resolve_channel_roles(
            self.channel_labels, roles, required=required, where=self.describe()
        )

    def channel(self, index: int, *, t: int = 0) -> da.Array:
        """The lazy ``(Z, Y, X)`` or ``(Y, X)`` array of one channel (at time point ``t``).

        Parameters
        ----------
        index : int
            Channel index, e.g. from :func:`resolve_channel_roles`.
        t : int, optional
            Time point, for fields with a ``t`` axis.
        """
        n_channels = self.data.shape[self.axes.index("c")] if "c" in self.axes else 1
        if not 0 <= index < n_channels:
            raise IndexError(f"{self.path}: channel {index} out of range 0..{n_channels - 1}")
        key: list[Any] = []
        for ax in self.axes:
            if ax == "t":
                key.append(t)
            elif ax == "c":
                key.append(index)
            else:
                key.append(slice(None))
        return self.data[tuple(key)]


# --------------------------------------------------------------------------- metadata


@dataclass
class _ImageInfo:
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


def _read_image(store: Store, node: str, version: str) -> _ImageInfo:
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
        if i == 0:
            shape, dtype, level0 = tuple(arr.shape), arr.dtype, apath

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
    return _ImageInfo(node, axes, labels, colors, voxel, level0, shape, dtype)


def _field_image(store: Store, info: _ImageInfo, **ctx) -> FieldImage:
    """The :class:`FieldImage` of a validated image: metadata, and pixels read lazily."""
    if ctx.get("well") is not None:
        context = f"plate {ctx['plate']}, well {ctx['well']}, field {ctx['field']}"
    else:
        context = f"image {store.where(info.node)}"
    arr = zarr.open_array(store=store.store, path=info.level0, mode="r")
    token = str(store.path.resolve() / info.level0)  # unique per array on this machine
    data = lazy_array(arr, info.axes, store.where(info.level0), context, token)
    return FieldImage(
        data=data,
        axes=info.axes,
        channel_labels=list(info.channel_labels),
        voxel_size=dict(info.voxel_size),
        path=store.where(info.node),
        channel_colors=list(info.channel_colors),
        **ctx,
    )


# --------------------------------------------------------------------------- plates


def _natural_key(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


class Plate:
    """An OME-NGFF HCS plate opened read-only; create with :func:`open_plate`.

    Attributes
    ----------
    name : str
        ``plate.name`` from the metadata, else the store's name without ``.zarr``.
    path : Path
        The store.
    version : str
        ``"0.4"`` or ``"0.5"``.
    wells : list of str
        Well paths as stored (``"B/03"``), in the plate's order.
    fields : list of FieldRef
        Every field of every well.
    """

    def __init__(self, path: Path):
        self._store = store = Store(path)
        self.path = path
        root = store.group("", what="the plate root")
        self.version = detect_version(store, root, "plate")
        attrs = store.ome_attrs(root, "", self.version)
        if "plate" not in attrs:
            raise PlateError(
                f"{store.name}: not an OME-NGFF HCS plate: the root group has no 'plate' "
                "metadata (use open_image for a single image)."
            )
        meta: PlateMeta = parse(PlateMeta, attrs["plate"], node=store.name, what="plate")
        self.meta = meta
        self.name = meta.name or (path.name[:-5] if path.name.endswith(".zarr") else path.name)
        self.wells = [w.path for w in meta.wells]
        self._by_key: dict[tuple[str, str], str] = {}
        for wp in self.wells:
            row, col = wp.split("/")
            self._by_key[(row, str(int(col)) if col.isdigit() else col)] = wp

        self.fields: list[FieldRef] = []
        for wp in self.wells:
            for i, image_path in enumerate(self._well_images(wp)):
                node = f"{wp}/{image_path}"
                self.fields.append(FieldRef(canonical_well(*wp.split("/")), wp, i, node))
        # metadata reads are latency-bound: overlap them; map() raises the first bad field
        with ThreadPoolExecutor(max_workers=_METADATA_THREADS) as pool:
            infos = pool.map(lambda ref: _read_image(store, ref.path, self.version), self.fields)
            self._images: dict[str, _ImageInfo] = {
                ref.path: info for ref, info in zip(self.fields, infos, strict=True)
            }

    def _well_images(self, wp: str) -> list[str]:
        store = self._store
        grp = store.group(wp, what=f"well {wp}")
        attrs = store.ome_attrs(grp, wp, self.version)
        if "well" in attrs:
            well: WellMeta = parse(WellMeta, attrs["well"], node=store.where(wp), what="well")
            return [im.path for im in well.images]
        if self.version == "0.4":  # some 0.4 writers leave out the well metadata
            names = [n for n, _ in grp.groups() if re.fullmatch(r"[A-Za-z0-9]+", n)]
            if names:
                return sorted(names, key=_natural_key)
        raise PlateError(
            f"{store.where(wp)}: the well group has no 'well' metadata listing its fields "
            "('images'). Add it (see the NGFF HCS spec)."
        )

    def __repr__(self) -> str:
        return (
            f"Plate({self.name!r}, version={self.version!r}, wells={len(self.wells)}, "
            f"fields={len(self.fields)})"
        )

    def well_path(self, well: str) -> str:
        """The stored path of ``well`` given as ``"B/3"``, ``"B03"``, ``"B/03"`` or ``"B3"``."""
        if well in self.wells:
            return well
        try:
            row, col = parse_well(well)
            wp = self._by_key.get((row, str(col)))
        except PlateError:
            wp = None
            if well.count("/") == 1:
                row, c = well.split("/")
                wp = self._by_key.get((row, c))
        if wp is None:
            raise PlateError(f"plate {self.name}: no well {well!r}; the plate has {self.wells}.")
        return wp

    def field_ref(self, well: str, field: int) -> FieldRef:
        """The :class:`FieldRef` of field index ``field`` of ``well``."""
        wp = self.well_path(well)
        refs = [f for f in self.fields if f.well_path == wp]
        if isinstance(field, bool) or not isinstance(field, int | np.integer):
            raise PlateError(f"plate {self.name}: field must be an int index, got {field!r}")
        if not 0 <= field < len(refs):
            raise PlateError(
                f"plate {self.name}: well {refs[0].well} has fields 0..{len(refs) - 1}, "
                f"not {field}."
            )
        return refs[field]

    def read_field(self, well: str, field: int) -> FieldImage:
        """Open one field lazily.

        Parameters
        ----------
        well : str
            ``"B/3"``, ``"B03"``, ``"B/03"`` or ``"B3"``.
        field : int
            Index in the well's ``images`` list.

        Returns
        -------
        FieldImage
            Level-0 pixels as a Dask array, axes, channel labels, voxel size in µm.
        """
        ref = self.field_ref(well, field)
        info = self._images[ref.path]
        return _field_image(self._store, info, plate=self.name, well=ref.well, field=ref.field)


def open_plate(path: str | Path) -> Plate:
    """Open an OME-NGFF HCS plate read-only and validate all of its metadata.

    Parameters
    ----------
    path : str or Path
        The plate store (a directory, ``PLATE.zarr``), NGFF 0.5 (zarr v3) or 0.4 (zarr v2).

    Returns
    -------
    Plate
        ``.name``, ``.path``, ``.version``, ``.wells``, ``.fields``, ``.read_field()``.

    Raises
    ------
    PlateError
        Naming the node (path inside the store) and the rule it breaks, for any invalid
        plate, well or image metadata, a name against the NGFF alphanumeric rule (checked
        before any path is opened), or a listed well, field or level absent on disk.
    """
    return Plate(Path(path))


def open_image(path: str | Path) -> FieldImage:
    """Open a single OME-NGFF image (not a plate) read-only, lazily.

    Parameters
    ----------
    path : str or Path
        The image group's store, NGFF 0.5 (zarr v3) or 0.4 (zarr v2).

    Raises
    ------
    PlateError
        For invalid or missing metadata, or missing resolution levels.
    """
    store = Store(Path(path))
    root = store.group("", what="the image root")
    version = detect_version(store, root, "multiscales")
    info = _read_image(store, "", version)
    return _field_image(store, info)
