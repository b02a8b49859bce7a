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

A field is a :class:`~hcsmito.io.field.FieldImage` (:mod:`hcsmito.io.field`); each image
group is validated and opened by :mod:`hcsmito.io.image`.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hcsmito.io._chunks import MISSING_CHUNKS
from hcsmito.io.errors import PlateError
from hcsmito.io.field import NONFINITE, FieldImage, FieldRef, check_finite
from hcsmito.io.image import ImageInfo, field_image, open_image, read_image
from hcsmito.io.names import canonical_well, parse_well
from hcsmito.io.ngff import PlateMeta, WellMeta, parse
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

_METADATA_THREADS = 8
# a field with several time points: one field holding them all (its channels are read with an
# explicit t), one field per time point, or refused when the plate is opened
TIME_POINTS = ("stack", "fields", "refuse")


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
            infos = pool.map(lambda ref: read_image(store, ref.path, self.version), self.fields)
            self._images: dict[str, ImageInfo] = {
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
        return field_image(
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
