"""Microscope vendor files (Zeiss CZI, Leica LIF, Nikon ND2) for ``hcsmito import``.

They are read through `bioio <https://github.com/bioio-devs/bioio>`_ and its reader
plugins, the optional extra ``hcsmito[formats]``. A file's voxel size and channel names
come from its own metadata; each of its scenes (positions) is one field. Without bioio
(or the file's plugin) a vendor file is refused in one line that names what to install.

:mod:`hcsmito.io.tiff_import` does the rest of the import: it calls :func:`expand_scenes`
on the CSV, :func:`read_vendor_info` for each vendor file's metadata and
:meth:`VendorInfo.read` for its pixels.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.io.errors import PlateError

__all__ = ["VENDOR_PLUGINS", "VendorInfo", "expand_scenes", "is_vendor_file", "read_vendor_info"]

# file suffix -> (bioio plugin module, its PyPI package)
VENDOR_PLUGINS: dict[str, tuple[str, str]] = {
    ".czi": ("bioio_czi", "bioio-czi"),
    ".lif": ("bioio_lif", "bioio-lif"),
    ".nd2": ("bioio_nd2", "bioio-nd2"),
}
_EXTRA = "pip install 'hcsmito[formats]'"


def is_vendor_file(path: str | Path) -> bool:
    """Whether ``path`` is a vendor file read through bioio (by its suffix)."""
    return Path(path).suffix.lower() in VENDOR_PLUGINS


@dataclass
class VendorInfo:
    """One scene of a vendor file: what :class:`~hcsmito.io.tiff_import.TiffInfo` says of a
    TIFF (axes, shape, dtype, voxel size in µm, channel names), pixels unread."""

    path: Path
    axes: str  # "CZYX" or "CYX" (a single plane)
    shape: tuple[int, ...]
    dtype: np.dtype
    voxel_size: dict[str, float]
    channel_names: list[str]
    scene: int = 0
    scene_name: str = ""

    def size(self, ax: str) -> int:
        return self.shape[self.axes.index(ax)] if ax in self.axes else 1

    def read(self) -> np.ndarray:
        """The scene's pixels, in ``axes`` order."""
        image = _open(self.path)
        image.set_scene(self.scene)
        data = np.asarray(image.get_image_data("CZYX", T=0))
        return data if "Z" in self.axes else data[:, 0]


def _reader(path: Path) -> Any:
    """The bioio reader class for ``path``'s format; one line naming the package if not
    installed."""
    module, package = VENDOR_PLUGINS[path.suffix.lower()]
    try:
        importlib.import_module("bioio")
    except ImportError:
        raise PlateError(
            f"{path}: {path.suffix.lower()} files are read through bioio, which is not "
            f"installed: {_EXTRA}"
        ) from None
    try:
        return importlib.import_module(module).Reader
    except ImportError:
        raise PlateError(
            f"{path}: {path.suffix.lower()} files need the bioio plugin {package}, which is "
            f"not installed: {_EXTRA} (or pip install {package})"
        ) from None


def _open(path: Path) -> Any:
    reader = _reader(path)
    from bioio import BioImage

    try:
        return BioImage(path, reader=reader)
    except Exception as exc:  # every reader has its own errors
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise PlateError(f"{path}: cannot read it as {path.suffix.lower()} ({msg})") from exc


def _scene_index(path: Path, scenes: tuple[str, ...], value: str) -> int:
    """A ``scene`` value of the CSV: the scene's name, else its index (0, 1, ...)."""
    if value in scenes:
        return scenes.index(value)
    if value.isdigit() and int(value) < len(scenes):
        return int(value)
    raise PlateError(f"{path}: has no scene {value!r}; its scenes are {list(scenes)}")


def expand_scenes(table: pd.DataFrame, base: Path, csv_path: Path) -> pd.DataFrame:
    """The CSV's rows, one per field: a vendor file's row with an empty (or no) ``scene``
    gives one row per scene of the file, fields ``field, field + 1, ...``; a ``scene`` (a
    name or an index) picks one. Adds the column ``scene`` (the scene's index; -1 for
    TIFF files). Rows keep their CSV index, so errors can name the CSV line."""
    scenes = table["scene"] if "scene" in table.columns else pd.Series(None, index=table.index)
    rows = []
    for i, row in table.iterrows():
        name = row["file"]
        value = scenes[i]
        value = "" if not isinstance(value, str) else value.strip()
        f = Path(name) if Path(name).is_absolute() else base / name
        if not is_vendor_file(f):
            if value not in ("", "0"):
                raise PlateError(
                    f"{csv_path}: line {i + 2}: a scene is given for {name}, which is not a "
                    f"vendor file ({', '.join(VENDOR_PLUGINS)}): TIFF files have one"
                )
            rows.append((i, {**row, "scene": -1}))
            continue
        if not f.is_file():
            raise PlateError(f"{csv_path}: line {i + 2}: file {f} does not exist")
        names = tuple(str(s) for s in _open(f).scenes)
        if value:
            rows.append((i, {**row, "scene": _scene_index(f, names, value)}))
            continue
        try:
            first = int(row["field"])
        except ValueError:
            raise PlateError(f"{csv_path}: 'field' must be an integer ({row['field']!r})") from None
        for k in range(len(names)):
            rows.append((i, {**row, "field": str(first + k), "scene": k}))
    return pd.DataFrame([r for _, r in rows], index=[i for i, _ in rows])


def read_vendor_info(path: str | Path, scene: int = 0) -> VendorInfo:
    """Shape, dtype, voxel size (µm) and channel names of one scene of a vendor file.

    A file with several time points or RGB samples is refused (hcsmito takes one time
    point of grey-scale channels); a single plane is a 2-D field.
    """
    path = Path(path)
    image = _open(path)
    try:
        image.set_scene(scene)
        dims = image.dims
        sizes = {ax: int(getattr(dims, ax, 1) or 1) for ax in "TCZYXS"}
        pps = image.physical_pixel_sizes
        names = [str(c) for c in (image.channel_names or [])]
        dtype = np.dtype(image.dtype)
        scene_name = str(image.current_scene)
    except PlateError:
        raise
    except Exception as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise PlateError(f"{path}: cannot read scene {scene}'s metadata ({msg})") from exc
    if sizes["T"] != 1 or sizes["S"] != 1:
        raise PlateError(
            f"{path}: scene {scene_name!r} holds {sizes['T']} time points and {sizes['S']} "
            "samples per pixel: hcsmito takes one time point of grey-scale channels"
        )
    voxel = {}
    for ax in "zyx":
        v = getattr(pps, ax.upper(), None)
        if v is not None and math.isfinite(float(v)) and float(v) > 0:
            voxel[ax] = float(f"{float(v):.9g}")  # no float noise (LIF: length / (n - 1))
    has_z = sizes["Z"] > 1
    axes = "CZYX" if has_z else "CYX"
    shape = tuple(sizes[ax] for ax in axes)
    if len(names) != sizes["C"]:
        names = []
    return VendorInfo(path, axes, shape, dtype, voxel, names, scene, scene_name)
