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

import math
import os
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

from hcsmito.io._chunks import MISSING_CHUNKS, ChunkReader, check_codecs, lazy_array
from hcsmito.io.errors import PlateError
from hcsmito.io.names import canonical_well, parse_well
from hcsmito.io.ngff import SPACE_UNITS_UM, ImageMeta, PlateMeta, WellMeta, parse
from hcsmito.io.roles import DEFAULT_ROLE_PATTERNS, resolve_channel_roles
from hcsmito.io.store import Store, detect_version

__all__ = [
    "DEFAULT_ROLE_PATTERNS",
    "MISSING_CHUNKS",
    "NONFINITE",
    "TIME_POINTS",
    "FieldImage",
    "FieldRef",
    "Plate",
    "PlateError",
    "open_image",
    "open_plate",
    "check_finite",
    "resolve_channel_roles",
]

_AXES_RULE = re.compile(r"^t?c?z?yx$")
_METADATA_THREADS = 8
# a field with several time points: one field holding them all (its channels are read with an
# explicit t), one field per time point, or refused when the plate is opened
TIME_POINTS = ("stack", "fields", "refuse")
NONFINITE = ("error", "replace")  # NaN / Inf voxels of a float channel: refused, or replaced


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
    t : int
        The time point, for plates opened with ``time_points="fields"`` (each time point of
        a field is then its own :class:`FieldRef`); 0 otherwise.
    """

    well: str
    well_path: str
    field: int
    path: str
    t: int = 0


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
    t : int or None
        The time point of the stored image this field is, for a plate opened with
        ``time_points="fields"`` (``data`` then holds that time point alone, as a ``t`` axis
        of length 1); None otherwise.
    nonfinite : dict of str to int
        Per channel label, the NaN / Inf voxels :meth:`read_channel` replaced
        (``nonfinite="replace"``), for a QC flag; empty when none.
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
    t: int | None = None
    nonfinite: dict[str, int] = _dc_field(default_factory=dict)
    _reader: ChunkReader | None = _dc_field(default=None, repr=False)

    @property
    def is_3d(self) -> bool:
        """True when the field has a ``z`` axis."""
        return "z" in self.axes

    @property
    def missing_chunks(self) -> list[str]:
        """Keys of the chunks read as the fill value so far (``missing_chunks="fill"``)."""
        return list(self._reader.missing) if self._reader is not None else []

    def describe(self) -> str:
        """``"plate P, well B/3, field 0"`` (or ``"image PATH"``), for messages."""
        if self.well is not None:
            at = f", time point {self.t}" if self.t is not None else ""
            return f"plate {self.plate}, well {self.well}, field {self.field}{at}"
        return f"image {self.path}"

    def nbytes(
        self, channels: Sequence[int] | None = None, *, bytes_per_voxel: float | None = None
    ) -> int:
        """Bytes of one time point of ``channels`` (default all) at ``bytes_per_voxel``
        (default the stored dtype's size)."""
        n_c = self.data.shape[self.axes.index("c")] if "c" in self.axes else 1
        k = n_c if channels is None else len(list(channels))
        per = self.data.dtype.itemsize if bytes_per_voxel is None else bytes_per_voxel
        voxels = math.prod(
            n for n, ax in zip(self.data.shape, self.axes, strict=True) if ax in "zyx"
        )
        return int(math.ceil(voxels * k * per))

    def check_memory(
        self,
        budget_bytes: int,
        *,
        channels: Sequence[int] | None = None,
        bytes_per_voxel: float | None = None,
    ) -> int:
        """Refuse a field whose ``channels`` need more than ``budget_bytes`` in memory.

        Parameters
        ----------
        budget_bytes : int
            The memory a field may take (e.g. the worker's memory limit).
        channels : sequence of int, optional
            The channels read (default all).
        bytes_per_voxel : float, optional
            Working bytes per voxel and channel (default the stored dtype's size; the
            pipeline holds several float32 copies, so the runner should pass more).

        Returns
        -------
        int
            The bytes needed, when within the budget.

        Raises
        ------
        PlateError
            Naming the field, its shape, the memory needed and the budget.
        """
        need = self.nbytes(channels, bytes_per_voxel=bytes_per_voxel)
        if need > budget_bytes:
            shape = {ax: n for ax, n in zip(self.axes, self.data.shape, strict=True)}
            raise PlateError(
                f"{self.describe()}: the field ({shape}, {self.data.dtype}) needs "
                f"{_gib(need)} of memory for its channels, more than the budget of "
                f"{_gib(budget_bytes)}. Run it on a machine with more memory, raise the memory "
                "limit, or crop / bin the field before processing."
            )
        return need

    def read_channel(
        self, index: int, *, t: int | None = None, nonfinite: str = "error"
    ) -> np.ndarray:
        """One channel read now (in this thread) as a NumPy array, checked for NaN / Inf.

        Parameters
        ----------
        index : int
            Channel index.
        t : int, optional
            Time point, as in :meth:`channel`.
        nonfinite : {"error", "replace"}
            See :func:`check_finite`; replaced counts go to :attr:`nonfinite`.

        Raises
        ------
        PlateError
            For a chunk that is missing (unless read with ``missing_chunks="fill"``), corrupt
            or crafted, for NaN / Inf voxels with ``nonfinite="error"``, or for a field of
            several time points read without ``t``.
        """
        values = np.asarray(self.channel(index, t=t).compute(scheduler="synchronous"))
        label = self.channel_labels[index]
        values, count = check_finite(
            values, where=self.describe(), channel=label, nonfinite=nonfinite
        )
        if count:
            self.nonfinite[label] = self.nonfinite.get(label, 0) + count
        return values

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

    def channel(self, index: int, *, t: int | None = None) -> da.Array:
        """The lazy ``(Z, Y, X)`` or ``(Y, X)`` array of one channel (at time point ``t``).

        Parameters
        ----------
        index : int
            Channel index, e.g. from :func:`resolve_channel_roles`.
        t : int, optional
            Time point, for fields with a ``t`` axis: required where it is longer than 1 (a
            field read without it would drop its other time points without a word).

        Raises
        ------
        PlateError
            For a field of several time points read without ``t``.
        """
        n_channels = self.data.shape[self.axes.index("c")] if "c" in self.axes else 1
        if not 0 <= index < n_channels:
            raise IndexError(f"{self.path}: channel {index} out of range 0..{n_channels - 1}")
        n_t = self.data.shape[0] if self.axes.startswith("t") else 1
        if t is None and n_t > 1:
            raise PlateError(
                f"{self.describe()}: the field has {n_t} time points and hcsmito analyses one "
                "per field: reading one would drop the others. Open the plate with "
                "time_points='fields' (each time point its own field), or give t explicitly."
            )
        t = 0 if t is None else t
        key: list[Any] = []
        for ax in self.axes:
            if ax == "t":
                key.append(t)
            elif ax == "c":
                key.append(index)
            else:
                key.append(slice(None))
        return self.data[tuple(key)]


def check_finite(
    values: np.ndarray, *, where: str, channel: str, nonfinite: str = "error"
) -> tuple[np.ndarray, int]:
    """Refuse, or replace, the NaN / Inf voxels of a float channel.

    Every stage assumes finite pixels: one NaN spreads through deconvolution and background
    fits and silently empties a field. So non-finite voxels are refused by default; with
    ``nonfinite="replace"`` they are set to the channel's smallest finite value (its
    background, rather than 0, which would dig dark pits into a float image) and counted,
    so the field can carry a QC flag. Integer channels cannot hold them and are returned
    as they are.

    Parameters
    ----------
    values : ndarray
        One channel of one field.
    where : str
        The field, for the message (``"plate P, well B/3, field 0"``).
    channel : str
        The channel's label.
    nonfinite : {"error", "replace"}

    Returns
    -------
    values : ndarray
        ``values``, or a copy with the non-finite voxels replaced.
    count : int
        Non-finite voxels found (0 when none).

    Raises
    ------
    PlateError
        With ``nonfinite="error"``, naming the field, the channel and the counts.
    """
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite={nonfinite!r}: use one of {NONFINITE}")
    if values.dtype.kind not in "fc":
        return values, 0
    bad = ~np.isfinite(values)
    count = int(np.count_nonzero(bad))
    if not count:
        return values, 0
    if nonfinite == "error":
        n_nan = int(np.count_nonzero(np.isnan(values)))
        raise PlateError(
            f"{where}: channel {channel!r} has {count} non-finite voxels ({n_nan} NaN, "
            f"{count - n_nan} Inf) of {values.size}: hcsmito needs finite pixels. Re-export "
            "the field without NaN / Inf, or read it with nonfinite='replace' (they are then "
            "set to the channel's smallest finite value and the field is flagged)."
        )
    finite = values[~bad]
    fill = finite.min() if finite.size else 0
    out = values.copy()
    out[bad] = fill
    return out, count


def _gib(n: float) -> str:
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


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
    return _ImageInfo(node, axes, labels, colors, voxel, level0, shape, dtype)


def _field_image(
    store: Store, info: _ImageInfo, *, missing_chunks: str = "error", t: int | None = None, **ctx
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
        Every field of every well (with ``time_points="fields"``, every time point of
        every field).
    time_points : {"stack", "fields", "refuse"}
        What :func:`open_plate` does with a field of several time points.
    """

    def __init__(self, path: Path, *, time_points: str = "stack"):
        if time_points not in TIME_POINTS:
            raise ValueError(f"time_points={time_points!r}: use one of {TIME_POINTS}")
        self.time_points = time_points
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
        self.fields = self._time_points(self.fields)

    def _time_points(self, refs: list[FieldRef]) -> list[FieldRef]:
        """Refuse fields of several time points, or make each time point a field of its own."""
        out: list[FieldRef] = []
        for ref in refs:
            info = self._images[ref.path]
            n_t = info.shape[0] if info.axes.startswith("t") else 1
            if n_t > 1 and self.time_points == "refuse":
                raise PlateError(
                    f"{self._store.where(ref.path)}: well {ref.well}, field {ref.field} has "
                    f"{n_t} time points; hcsmito analyses one time point per field and would "
                    "drop the others. Split the time points into fields (or plates), or open "
                    "the plate with time_points='fields' to analyse each as its own field."
                )
            if n_t > 1:
                out.extend(
                    FieldRef(ref.well, ref.well_path, ref.field, ref.path, t) for t in range(n_t)
                )
            else:
                out.append(ref)
        return out

    def _well_images(self, wp: str) -> list[str]:
        store = self._store
        grp = store.group(wp, what=f"well {wp}")
        attrs = store.ome_attrs(grp, wp, self.version)
        if "well" in attrs:
            well: WellMeta = parse(WellMeta, attrs["well"], node=store.where(wp), what="well")
            return [im.path for im in well.images]
        if self.version == "0.4":  # some 0.4 writers leave out the well metadata
            for entry in sorted(os.listdir(store.path / wp)):  # zarr reads what it lists
                if re.fullmatch(r"[A-Za-z0-9]+", entry) and (store.path / wp / entry).is_dir():
                    store.check_metadata_files(f"{wp}/{entry}")
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

    def field_ref(self, well: str, field: int, t: int = 0) -> FieldRef:
        """The :class:`FieldRef` of field index ``field`` (time point ``t``) of ``well``."""
        wp = self.well_path(well)
        refs = [f for f in self.fields if f.well_path == wp]
        if isinstance(field, bool) or not isinstance(field, int | np.integer):
            raise PlateError(f"plate {self.name}: field must be an int index, got {field!r}")
        n = max(r.field for r in refs) + 1
        if not 0 <= field < n:
            raise PlateError(
                f"plate {self.name}: well {refs[0].well} has fields 0..{n - 1}, not {field}."
            )
        times = [r for r in refs if r.field == field]
        match = [r for r in times if r.t == t]
        if not match:
            raise PlateError(
                f"plate {self.name}: well {refs[0].well}, field {field} has time points "
                f"0..{len(times) - 1}, not {t!r}."
            )
        return match[0]

    def read_field(
        self, well: str, field: int, *, t: int = 0, missing_chunks: str = "error"
    ) -> FieldImage:
        """Open one field lazily.

        Parameters
        ----------
        well : str
            ``"B/3"``, ``"B03"``, ``"B/03"`` or ``"B3"``.
        field : int
            Index in the well's ``images`` list.
        t : int, optional
            Time point, for a plate opened with ``time_points="fields"`` (``FieldRef.t``).
        missing_chunks : {"error", "fill"}
            A chunk absent from the store fails the read (default, naming the chunk), or is
            read as the fill value and listed in ``FieldImage.missing_chunks`` so the field
            can be flagged. Some writers leave out chunks equal to the fill value (zarr's
            ``write_empty_chunks=False``); such plates need ``"fill"``.

        Returns
        -------
        FieldImage
            Level-0 pixels as a Dask array, axes, channel labels, voxel size in µm.
        """
        ref = self.field_ref(well, field, t)
        info = self._images[ref.path]
        n_t = info.shape[0] if info.axes.startswith("t") else 1
        return _field_image(
            self._store,
            info,
            missing_chunks=missing_chunks,
            t=ref.t if n_t > 1 and self.time_points == "fields" else None,
            plate=self.name,
            well=ref.well,
            field=ref.field,
        )


def open_plate(path: str | Path, *, time_points: str = "stack") -> Plate:
    """Open an OME-NGFF HCS plate read-only and validate all of its metadata.

    Parameters
    ----------
    path : str or Path
        The plate store (a directory, ``PLATE.zarr``), NGFF 0.5 (zarr v3) or 0.4 (zarr v2).
    time_points : {"stack", "fields", "refuse"}
        A field whose ``t`` axis is longer than 1 is one field holding every time point,
        whose channels must then be read with an explicit ``t`` (``"stack"``, default:
        :meth:`FieldImage.channel` without ``t`` raises rather than read ``t = 0`` alone);
        or each of its time points becomes a :class:`FieldRef` of its own (``"fields"``:
        ``FieldRef.t``, read with ``read_field(..., t=)``); or the plate is refused before
        anything is read (``"refuse"``). Fields with one time point are the same in every mode.

    Returns
    -------
    Plate
        ``.name``, ``.path``, ``.version``, ``.wells``, ``.fields``, ``.read_field()``.

    Raises
    ------
    PlateError
        Naming the node (path inside the store) and the rule it breaks, for any invalid
        plate, well or image metadata, a name against the NGFF alphanumeric rule (checked
        before any path is opened), a listed well, field or level absent on disk, an axis
        of length 0, a codec chain whose chunks cannot be checked before decoding, or
        (``time_points="refuse"``) a field of several time points.
    """
    return Plate(Path(path), time_points=time_points)


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
    info = _read_image(store, "", version)
    return _field_image(store, info, missing_chunks=missing_chunks)
