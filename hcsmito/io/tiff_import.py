"""Turn a folder of TIFF / OME-TIFF stacks plus a CSV into an OME-NGFF HCS plate.

Everything is checked before the plate is written: the CSV, that every file exists, that all
stacks share one shape and one voxel size, that every field has every channel. Pixels are
then read and written one field at a time.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from hcsmito.io.errors import PlateError
from hcsmito.io.names import well_path
from hcsmito.io.vendor_import import VendorInfo, expand_scenes, is_vendor_file, read_vendor_info
from hcsmito.io.writer import create_plate, write_image

__all__ = ["import_tiffs", "read_tiff_info"]

log = logging.getLogger(__name__)

# micrometres per unit, for units as OME-XML and ImageJ write them
_UNIT_UM = {
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "pm": 1e-6,
    "inch": 25_400.0,
}
_REL_TOL = 1e-4  # voxel sizes closer than this (relative) are the same


@dataclass
class TiffInfo:
    """What :func:`read_tiff_info` finds in one file, without reading its pixels."""

    path: Path
    axes: str  # tifffile's series axes, e.g. "ZCYX"
    shape: tuple[int, ...]
    dtype: np.dtype
    voxel_size: dict[str, float]  # µm, only the axes found in the metadata
    channel_names: list[str]

    def size(self, ax: str) -> int:
        return self.shape[self.axes.index(ax)] if ax in self.axes else 1


def _unit_um(unit: str | None) -> float | None:
    """Micrometres per ``unit`` (None: unknown unit); a missing unit is OME's default, µm."""
    if unit is None:
        return 1.0
    u = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    return _UNIT_UM.get(u) or _UNIT_UM.get(u.lower())


def _ome_voxel(xml: str) -> tuple[dict[str, float], list[str]]:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels")), None)
    if pixels is None:
        return {}, []
    out = {}
    for ax in "ZYX":
        size = pixels.get(f"PhysicalSize{ax}")
        if size is None:
            continue
        factor = _unit_um(pixels.get(f"PhysicalSize{ax}Unit"))
        if factor is not None:
            out[ax.lower()] = float(size) * factor
    names = [ch.get("Name") or "" for ch in pixels if ch.tag.endswith("}Channel")]
    return out, names


def _imagej_voxel(tif: tifffile.TiffFile) -> dict[str, float]:
    meta = tif.imagej_metadata or {}
    factor = _unit_um(meta.get("unit")) if "unit" in meta else None
    if factor is None:
        return {}
    out = {}
    tags = tif.pages[0].tags
    for ax, tag in (("x", "XResolution"), ("y", "YResolution")):
        if tag in tags:
            num, den = tags[tag].value
            if num > 0 and den > 0:
                out[ax] = den / num * factor
    if "spacing" in meta:
        out["z"] = float(meta["spacing"]) * factor
    return out


def _imagej_channel_names(meta: Mapping, axes: str, shape: tuple[int, ...]) -> list[str]:
    """Channel names of an ImageJ (hyper)stack: its ``Labels`` (the slice labels; Fiji's
    channel names). One label per channel, or one per plane in ImageJ's order (channel
    fastest): the first plane's label of each channel. [] when there are none."""
    labels = meta.get("Labels")
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list | tuple) or not labels:
        return []
    labels = [str(lab).strip() for lab in labels]
    if any(_PLANE_LABEL.match(lab) for lab in labels):  # Bio-Formats' "c:1/3; z:2/5 - name"
        return []
    n_c = shape[axes.index("C")] if "C" in axes else 1
    if len(labels) < n_c or len(labels) % n_c:
        return []
    names = labels[:n_c]
    if n_c == 1 and len(set(labels)) != 1:  # per-plane labels of a single-channel stack
        return []
    return names if all(names) else []


# Fiji's "Info" (Image > Show Info, kept in an ImageJ TIFF's metadata) holds the metadata
# of the file the image was opened from: Bio-Formats' original metadata ("key = value" lines),
# or the description ImageJ's own reader found (an OME-TIFF's OME-XML)
_PLANE_LABEL = re.compile(r"[czt]:\d+/\d+")  # Bio-Formats' slice labels: positions, not names
_OME_XML = re.compile(r"<(?:[\w.-]+:)?OME[\s>].*?</(?:[\w.-]+:)?OME>", re.S)
_CZI_AXIS = re.compile(r"Scaling\|Distance\|Id(?: #(\d+))? = ([XYZ])\s*$", re.M)
_CZI_SCALE = re.compile(r"Scaling\|Distance\|Value(?: #(\d+))? = (\S+)\s*$", re.M)
_CZI_CHANNEL = re.compile(r"Information\|Image\|Channel\|Name(?: #(\d+))? = (.*?)\s*$", re.M)
_INFO_TOL = 1e-3  # a calibration and its Info closer than this agree (printed decimals)


def _numbered(pattern: re.Pattern, text: str) -> dict[int, str]:
    """``{k: value}`` of Bio-Formats' ``key #k = value`` lines; a number given two different
    values (several images' metadata) is dropped."""
    found: dict[int, set[str]] = {}
    for k, value in pattern.findall(text):
        found.setdefault(int(k or 1), set()).add(value.strip())
    return {k: v.pop() for k, v in found.items() if len(v) == 1}


def _info_metadata(info: str) -> tuple[dict[str, float], list[str]]:
    """Voxel size (µm) and channel names found in an ImageJ ``Info`` text, from

    - an OME-XML document in it (``PhysicalSize*`` with units, ``Channel/@Name``): what
      ImageJ's TIFF reader keeps of an OME-TIFF's description;
    - Bio-Formats' original metadata of a Zeiss CZI: ``Scaling|Distance|Id #k`` (X, Y, Z) with
      ``Scaling|Distance|Value #k`` (metres), ``Information|Image|Channel|Name #k``.

    Other vendors' keys are not read (({}, []) when nothing is recognised).
    """
    voxel: dict[str, float] = {}
    names: list[str] = []
    xml = _OME_XML.search(info)
    if xml is not None:
        try:
            voxel, names = _ome_voxel(xml.group(0))
        except ET.ParseError:
            pass
    axes, scales = _numbered(_CZI_AXIS, info), _numbered(_CZI_SCALE, info)
    for k, ax in axes.items():
        try:
            metres = float(scales.get(k, "nan"))
        except ValueError:
            continue
        if math.isfinite(metres) and metres > 0:
            voxel.setdefault(ax.lower(), float(f"{metres * 1e6:.9g}"))  # no float noise
    czi_names = _numbered(_CZI_CHANNEL, info)
    if not names and czi_names and sorted(czi_names) == list(range(1, len(czi_names) + 1)):
        names = [czi_names[k] for k in sorted(czi_names)]
    return voxel, names


def _with_info(
    path: Path, info, voxel: dict[str, float], names: list[str], n_c: int
) -> tuple[dict[str, float], list[str]]:
    """An ImageJ file's calibration and channel names, completed from its ``Info``: an axis
    without calibration, or channels without names, take the Info's. Where both say and
    disagree, the calibration and Labels are kept (Fiji's scaling, binning and renaming
    change them, not the Info) and one warning line says so, with the flag to override."""
    if not isinstance(info, str) or not info.strip():
        return voxel, names
    info_voxel, info_names = _info_metadata(info)
    if len(info_names) != n_c or not all(info_names):
        info_names = []
    out = {**info_voxel, **voxel}
    both = [ax for ax in "zyx" if ax in voxel and ax in info_voxel]
    differ = [ax for ax in both if not math.isclose(voxel[ax], info_voxel[ax], rel_tol=_INFO_TOL)]
    if differ:
        log.warning(
            "%s: its ImageJ calibration gives voxel size %s µm, the microscope's metadata in "
            "its Info %s µm: the calibration is used (--voxel-size Z,Y,X overrides both)",
            path.name,
            {ax: voxel[ax] for ax in differ},
            {ax: info_voxel[ax] for ax in differ},
        )
    if names and info_names and names != info_names:
        log.warning(
            "%s: its channel names %s (ImageJ Labels) differ from the microscope's %s in its "
            "Info: the Labels are used (--channel-labels overrides both)",
            path.name,
            ",".join(names),
            ",".join(info_names),
        )
    return out, names or info_names


def read_tiff_info(
    path: str | Path, *, axes: str | None = None, n_channels: int | None = None
) -> TiffInfo:
    """Shape, axes, dtype, voxel size (µm) and channel names of a TIFF, pixels unread.

    Voxel sizes come from OME-XML (``PhysicalSizeX/Y/Z`` with their units) or, for ImageJ
    files, from the resolution tags and the ``spacing`` / ``unit`` entries. Plain TIFF
    resolution tags are not trusted (most writers fill them with a screen resolution).
    Channel names come from OME-XML or from an ImageJ stack's ``Labels`` (Bio-Formats' slice
    labels, ``c:1/3; z:1/5 - name``, are positions, not names). An ImageJ file's ``Info``
    (the microscope's metadata Fiji keeps: see :func:`_info_metadata`) gives the axes the
    calibration lacks and the names the Labels lack; where they disagree, the calibration
    and Labels are used and a warning says so.

    ``axes`` (e.g. ``"CZYX"``) names the axes of a file that does not say them (a plain
    TIFF); a file that stores its planes as one flat sequence is split into its ``C`` and
    ``Z`` with ``n_channels``.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            found, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            voxel: dict[str, float] = {}
            names: list[str] = []
            if tif.is_ome and tif.ome_metadata:
                voxel, names = _ome_voxel(tif.ome_metadata)
            elif tif.is_imagej:
                meta = tif.imagej_metadata or {}
                n_c = shape[found.index("C")] if "C" in found else 1
                voxel = _imagej_voxel(tif)
                names = _imagej_channel_names(meta, found, shape)
                voxel, names = _with_info(path, meta.get("Info"), voxel, names, n_c)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise PlateError(f"{path}: cannot read it as a TIFF ({exc})") from exc
    if axes is not None:
        found, shape = _given_axes(path, axes, found, shape, n_channels)
    # leading "I"/"Q" (an unspecified image sequence) of a plain stack is its z axis
    found = found.replace("I", "Z").replace("Q", "Z")
    return TiffInfo(path, found, shape, dtype, voxel, names)


def _given_axes(
    path: Path, axes: str, found: str, shape: tuple[int, ...], n_channels: int | None
) -> tuple[str, tuple[int, ...]]:
    """The file's axes and shape as ``axes`` names them (``--axes CZYX``)."""
    axes = axes.strip().upper()
    if not (len(set(axes)) == len(axes) and set(axes) <= set("TCZYX") and axes.endswith("YX")):
        raise PlateError(
            f"axes {axes!r}: name each axis once, from T, C, Z, Y, X, ending in YX (e.g. CZYX)"
        )
    if len(axes) == len(shape):
        return axes, shape
    planes = int(np.prod(shape[:-2]))
    lead = axes[:-2]
    if lead in ("CZ", "ZC") and len(shape) == 3:
        if not n_channels or planes % n_channels:
            raise PlateError(
                f"{path}: holds {planes} planes in one sequence (axes {found!r}): to read them "
                f"as {axes}, name the channels (--channel-labels) so their number is known"
            )
        n_c, n_z = n_channels, planes // n_channels
        return axes, ((n_c, n_z) if lead == "CZ" else (n_z, n_c)) + tuple(shape[-2:])
    raise PlateError(
        f"{path}: axes {axes!r} do not fit its shape {shape} (axes {found!r}): give as many "
        "axes as the stack has dimensions"
    )


def _czyx(info: TiffInfo, data: np.ndarray) -> np.ndarray:
    """Reorder a stack to (C, Z, Y, X) or (C, Y, X), dropping length-1 T."""
    axes = info.axes
    if "T" in axes:
        data = np.take(data, 0, axis=axes.index("T"))
        axes = axes.replace("T", "")
    want = [ax for ax in "CZYX" if ax in axes]
    data = np.transpose(data, [axes.index(ax) for ax in want])
    if "C" not in want:
        data = data[np.newaxis]
    return data


def _check_layout(info: TiffInfo, multichannel: bool) -> None:
    extra = set(info.axes) - set("TCZYX")
    if extra or info.size("T") != 1 or len(set(info.axes)) != len(info.axes):
        raise PlateError(
            f"{info.path}: axes {info.axes!r} {info.shape} cannot be imported: hcsmito takes "
            "(C,)(Z,)Y,X stacks (one time point, no RGB samples). Save it as grey-scale "
            "ImageJ hyperstack or OME-TIFF."
        )
    if not multichannel and info.size("C") != 1:
        raise PlateError(
            f"{info.path}: holds {info.size('C')} channels, but the CSV's 'channel' column "
            "says one file per channel. Drop the 'channel' column for multi-channel files."
        )


def _read_csv(csv_path: Path) -> tuple[pd.DataFrame, bool]:
    try:
        table = pd.read_csv(csv_path, dtype=str, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PlateError(f"{csv_path}: cannot read the CSV ({exc})") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = {"file", "well", "field"} - set(table.columns)
    if missing:
        raise PlateError(
            f"{csv_path}: missing column(s) {sorted(missing)}; the CSV needs "
            "'file, well, field, channel' (one file per channel) or 'file, well, field'."
        )
    table = table.dropna(how="all")
    multichannel = "channel" not in table.columns
    cols = ["file", "well", "field"] + ([] if multichannel else ["channel"])
    for col in cols:
        if table[col].isna().any():
            row = int(table.index[table[col].isna()][0]) + 2
            raise PlateError(f"{csv_path}: line {row} has no '{col}'")
        table[col] = table[col].str.strip()
    cols += ["scene"] if "scene" in table.columns else []  # a vendor file's scene
    return table[cols].reset_index(drop=True), multichannel


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=_REL_TOL) for k in a)


def import_tiffs(
    csv_path: str | Path,
    out: str | Path,
    *,
    base_dir: str | Path | None = None,
    voxel_size: Mapping[str, float] | Sequence[float] | None = None,
    channel_labels: Sequence[str] | None = None,
    axes: str | None = None,
    version: str = "0.5",
    overwrite: bool = False,
) -> Path:
    """Build an OME-NGFF HCS plate from TIFF / OME-TIFF stacks listed in a CSV.

    Parameters
    ----------
    csv_path : str or Path
        A CSV with columns ``file, well, field, channel`` (one grey-scale ``(Z, Y, X)`` or
        ``(Y, X)`` stack per channel; ``channel`` is the channel's label) or
        ``file, well, field`` (one multi-channel stack per field, e.g. an ImageJ hyperstack
        ``ZCYX`` or an OME-TIFF ``CZYX``). ``well`` is ``B03``, ``B3`` or ``B/3``; ``field``
        an integer: the fields of a well are numbered 0, 1... in the order of these values.
        A ``file`` may be a vendor file (CZI, LIF, ND2: read through bioio, the extra
        ``hcsmito[formats]``; voxel size and channel names from its metadata). Each of its
        scenes is a field (``field``, ``field + 1``, ...) unless a ``scene`` column names
        one (by name or index).
    out : str or Path
        The plate to write (``PLATE.zarr``).
    base_dir : str or Path, optional
        Folder that relative ``file`` paths start from (default: the CSV's folder).
    voxel_size : mapping or sequence, optional
        ``{"z": dz, "y": dy, "x": dx}`` or ``(dz, dy, dx)`` in µm (``(dy, dx)`` for 2-D).
        Overrides the files' metadata; axes left out keep the metadata's values.
    channel_labels : sequence of str, optional
        Channel labels in channel order. With a ``channel`` column, they also fix the order
        (and must be exactly the column's values); otherwise they name the file's channels.
        Default: the ``channel`` values in order of appearance, else the files' channel
        names (OME-XML, or an ImageJ hyperstack's ``Labels``), else ``c0``, ``c1``... (with
        a warning: no role finds such channels).
    axes : str, optional
        The axes of files that do not name them (a plain TIFF), e.g. ``"CZYX"``; a file of
        one flat sequence of planes is split by the number of ``channel_labels``. Without a
        ``channel`` column a file without ``C`` is one channel; fields may differ in depth.
    version : {"0.5", "0.4"}
        NGFF version of the plate.
    overwrite : bool
        Replace an existing plate at ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    PlateError
        Naming the file (or CSV line) at fault: a missing file, an unreadable TIFF, a shape
        or voxel size that disagrees with the first stack, a voxel size found nowhere
        (pass ``voxel_size``), a field without every channel, duplicate rows.
    FileExistsError
        If ``out`` exists and ``overwrite`` is False.
    """
    csv_path = Path(csv_path)
    out = Path(out)
    base = Path(base_dir) if base_dir is not None else csv_path.parent
    table, multichannel = _read_csv(csv_path)
    if table.empty:
        raise PlateError(f"{csv_path}: the CSV lists no files")
    table = expand_scenes(table, base, csv_path)  # a vendor file's scenes are fields
    _number_fields(table, csv_path, multichannel)
    seen = None if multichannel else _channel_order(table, csv_path, channel_labels)
    override = _voxel_override(voxel_size)
    n_channels = (len(channel_labels) if channel_labels else None) if multichannel else 1
    infos, ref, ref_vs = _file_infos(
        table, base, csv_path, multichannel, override, axes=axes, n_channels=n_channels
    )
    labels = _labels(ref, seen, channel_labels)
    wells, counts, field_index = _field_index(table)
    create_plate(out, wells=wells, fields_per_well=counts, version=version, overwrite=overwrite)
    table["info"] = infos
    order = None if seen is None else {c: i for i, c in enumerate(seen)}
    for (wp, fn), grp in table.groupby(["well_path", "field_n"], sort=False):
        write_image(out, wp, field_index[(wp, fn)], _field_data(grp, order),
                    axes="czyx" if "Z" in ref.axes else "cyx", voxel_size=ref_vs,
                    channel_labels=labels)  # fmt: skip
    return out


def _number_fields(table: pd.DataFrame, csv_path: Path, multichannel: bool) -> None:
    """Well paths and integer fields; one file per well, field (and channel)."""
    table["well_path"] = [well_path(w) for w in table["well"]]
    try:
        table["field_n"] = [int(f) for f in table["field"]]
    except ValueError as exc:
        raise PlateError(f"{csv_path}: 'field' must be an integer ({exc})") from None
    key = ["well_path", "field_n"] + ([] if multichannel else ["channel"])
    dup = table[table.duplicated(key, keep=False)]
    if not dup.empty:
        raise PlateError(
            f"{csv_path}: lines {[int(i) + 2 for i in dup.index]} give the same well, field"
            + ("" if multichannel else " and channel")
        )


def _channel_order(table: pd.DataFrame, csv_path: Path, channel_labels) -> list[str]:
    """One file per channel: the channel order (given, numeric, or as listed), every
    field holding every channel."""
    seen = list(dict.fromkeys(table["channel"]))
    if channel_labels is not None:
        if sorted(channel_labels) != sorted(seen):
            raise PlateError(
                f"{csv_path}: channel_labels {list(channel_labels)} must be exactly the "
                f"CSV's channels {seen}"
            )
        seen = list(channel_labels)
    elif all(c.isdigit() for c in seen):
        seen = sorted(seen, key=int)
    for (wp, fn), grp in table.groupby(["well_path", "field_n"]):
        lacking = [c for c in seen if c not in set(grp["channel"])]
        if lacking:
            raise PlateError(f"{csv_path}: well {wp} field {fn} has no file for {lacking}")
    return seen


def _voxel_override(voxel_size) -> dict[str, float]:
    """The voxel size given for the import, by axis (µm)."""
    override: dict[str, float] = {}
    if voxel_size is not None:
        if isinstance(voxel_size, Mapping):
            override = {k: float(v) for k, v in voxel_size.items()}
        else:
            vals = [float(v) for v in voxel_size]
            override = dict(zip("zyx"[3 - len(vals) :], vals, strict=True))
        for k, v in override.items():
            if k not in ("z", "y", "x") or not (math.isfinite(v) and v > 0):
                raise PlateError(f"voxel_size {voxel_size!r}: give positive µm for z, y, x")

    return override


def _file_infos(
    table, base: Path, csv_path: Path, multichannel: bool, override, *, axes, n_channels
):
    """Every file's metadata, checked against the first one's before anything is
    written: ``(infos, first, its voxel size)``."""
    infos: list[TiffInfo] = []
    ref: TiffInfo | None = None
    ref_vs: dict[str, float] = {}
    for i, name, scene in zip(table.index, table["file"], table["scene"], strict=True):
        f = Path(name) if Path(name).is_absolute() else base / name
        if not f.is_file():
            raise PlateError(f"{csv_path}: line {i + 2}: file {f} does not exist")
        if is_vendor_file(f):
            info = read_vendor_info(f, scene)
        else:
            info = read_tiff_info(f, axes=axes, n_channels=n_channels)
        _check_layout(info, multichannel)
        spatial = "ZYX" if "Z" in info.axes else "YX"
        vs = {**info.voxel_size, **override}
        vs = {k: v for k, v in vs.items() if k.upper() in spatial}
        lacking = [ax.lower() for ax in spatial if ax.lower() not in vs]
        if lacking:
            raise PlateError(
                f"{f}: no voxel size for {lacking} in its metadata (OME-XML or ImageJ): pass "
                "voxel_size (µm) for the import"
            )
        if ref is None:
            ref, ref_vs = info, vs
        else:
            # fields may differ in depth (z); channels, planes and 2-D / 3-D may not
            shape = {ax: info.size(ax) for ax in "CYX"}
            ref_shape = {ax: ref.size(ax) for ax in "CYX"}
            if shape != ref_shape or ("Z" in info.axes) != ("Z" in ref.axes):
                raise PlateError(
                    f"{f}: stack of shape {info.shape} (axes {info.axes}) disagrees with "
                    f"{ref.path.name}'s {ref.shape} (axes {ref.axes}): every stack of a plate "
                    "must have the same channels and plane size (fields may differ in depth)"
                )
            if info.dtype != ref.dtype:
                raise PlateError(
                    f"{f}: pixel type {info.dtype} disagrees with {ref.path.name}'s {ref.dtype}"
                )
            if not _same(vs, ref_vs):
                raise PlateError(
                    f"{f}: voxel size {vs} µm disagrees with {ref.path.name}'s {ref_vs} µm: "
                    "correct the metadata or pass voxel_size to override all files"
                )
        infos.append(info)
    assert ref is not None
    if not multichannel:  # the channels of one field: one depth
        table = table.assign(_depth=[info.size("Z") for info in infos])
        for (wp, fn), grp in table.groupby(["well_path", "field_n"], sort=False):
            if grp["_depth"].nunique() > 1:
                depths = dict(zip(grp["channel"], grp["_depth"], strict=True))
                raise PlateError(
                    f"{csv_path}: well {wp} field {fn}: its channels' stacks differ in depth "
                    f"({depths} planes): every channel of a field needs the same z planes"
                )
    return infos, ref, ref_vs


def _labels(ref: TiffInfo, seen: list[str] | None, channel_labels) -> list[str]:
    """The channel labels: given, else the files' names, else c0, c1, ..."""
    multichannel = seen is None
    if multichannel:
        n_c = ref.size("C")
        if channel_labels is not None:
            labels = [str(c) for c in channel_labels]
            if len(labels) != n_c:
                raise PlateError(f"{len(labels)} channel_labels for {n_c}-channel files")
        elif len(ref.channel_names) == n_c and all(ref.channel_names):
            labels = list(ref.channel_names)
        else:
            labels = [f"c{i}" for i in range(n_c)]
            log.warning(
                "%s: no channel names in the file (OME-XML, ImageJ Labels or Info): the channels "
                "are named %s, which no channel role finds; pass --channel-labels (e.g. "
                "GFP,MitoTracker,Phalloidin) or map the roles by index in the config",
                ref.path.name,
                ",".join(labels),
            )
    else:
        labels = list(seen) if not all(c.isdigit() for c in seen) else [f"c{c}" for c in seen]
        if channel_labels is not None:
            labels = list(channel_labels)
    return labels


def _field_index(table: pd.DataFrame):
    """Per well, the sorted CSV field values numbered 0, 1, ...: ``(wells, fields per
    well, {(well, value): index})``."""
    wells = list(dict.fromkeys(table["well_path"]))
    field_index: dict[tuple[str, int], int] = {}
    counts: dict[str, int] = {}
    for wp in wells:
        values = sorted(set(table.loc[table["well_path"] == wp, "field_n"]))
        counts[wp] = len(values)
        for j, v in enumerate(values):
            field_index[(wp, v)] = j

    return wells, counts, field_index


def _field_data(grp: pd.DataFrame, order: dict[str, int] | None) -> np.ndarray:
    """One field's (C, [Z,] Y, X) stack from its file(s)."""
    if order is None:
        info = grp["info"].iloc[0]
        return _czyx(info, _read(info))
    planes = [None] * len(order)
    for _, row in grp.iterrows():
        info = row["info"]
        planes[order[row["channel"]]] = _czyx(info, _read(info))[0]
    return np.stack(planes)


def _read(info: TiffInfo) -> np.ndarray:
    """A file's pixels in the shape its info gives (``axes`` may split a flat sequence)."""
    if isinstance(info, VendorInfo):
        return info.read()
    return tifffile.imread(info.path, series=0).reshape(info.shape)
