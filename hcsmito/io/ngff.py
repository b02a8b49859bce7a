"""OME-NGFF 0.4 / 0.5 metadata: pydantic models, the spec's rules, and one clear error.

The models follow the NGFF specification (https://ngff.openmicroscopy.org/0.4/ and /0.5/)
for the parts hcsmito reads and writes: ``multiscales`` (axes, datasets, coordinate
transformations), ``omero`` channels, HCS ``plate`` and ``well`` groups, and ``labels`` /
``image-label``. Unknown keys are kept (the spec allows them). Rules that JSON types cannot
express (axis order, one scale per dataset, positive finite scales, resolution order) are
model validators, so every invalid node is refused with the same kind of message:
``"<node>: invalid <what> metadata at <location>: <rule>"``.

A few liberties, each for real data that would otherwise be refused for no benefit:

- a dataset ``path`` written as an integer (``"path": 0``) is read as the string ``"0"``;
- ``omero.channels[].window`` values written as numeric strings are read as numbers;
- ``rowIndex`` / ``columnIndex`` of a plate's wells are required but not cross-checked with
  the ``path``: hcsmito locates wells by their path (``ROW/COLUMN``), which the spec makes
  authoritative, so indices that disagree with it do not matter;
- ``um``, ``µm``, ``micron`` and ``nm`` are accepted as space units besides the spec's names,
  and a space axis without a unit is read as micrometres;
- an axis without ``type`` named ``t``, ``c``, ``z``, ``y`` or ``x`` gets the obvious type.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hcsmito.io.errors import PlateError
from hcsmito.io.names import check_name, check_well_path

__all__ = [
    "PlateError",
    "Axis",
    "Dataset",
    "Multiscale",
    "ImageMeta",
    "Omero",
    "OmeroChannel",
    "PlateMeta",
    "WellMeta",
    "ImageLabel",
    "LabelsMeta",
    "SPACE_UNITS_UM",
    "TIME_UNITS",
    "parse",
]


# Micrometres per unit, for every space unit the spec lists (plus common aliases).
SPACE_UNITS_UM: dict[str, float] = {
    "angstrom": 1e-4,
    "attometer": 1e-12,
    "centimeter": 1e4,
    "decimeter": 1e5,
    "exameter": 1e24,
    "femtometer": 1e-9,
    "foot": 304_800.0,
    "gigameter": 1e15,
    "hectometer": 1e8,
    "inch": 25_400.0,
    "kilometer": 1e9,
    "megameter": 1e12,
    "meter": 1e6,
    "micrometer": 1.0,
    "mile": 1_609_344_000.0,
    "millimeter": 1e3,
    "nanometer": 1e-3,
    "parsec": 3.0856775814913673e22,
    "petameter": 1e21,
    "picometer": 1e-6,
    "terameter": 1e18,
    "yard": 914_400.0,
    "yoctometer": 1e-18,
    "yottameter": 1e30,
    "zeptometer": 1e-15,
    "zettameter": 1e27,
    # aliases seen in the wild (not in the spec)
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
}

TIME_UNITS = frozenset(
    {
        "attosecond",
        "centisecond",
        "day",
        "decisecond",
        "exasecond",
        "femtosecond",
        "gigasecond",
        "hectosecond",
        "hour",
        "kilosecond",
        "megasecond",
        "microsecond",
        "millisecond",
        "minute",
        "nanosecond",
        "petasecond",
        "picosecond",
        "second",
        "terasecond",
        "yoctosecond",
        "yottasecond",
        "zeptosecond",
        "zettasecond",
    }
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- multiscales


class Axis(_Model):
    """One axis of ``multiscales[].axes``."""

    name: str
    type: str | None = None
    unit: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _type_from_name(cls, data: Any) -> Any:
        # 'type' is a SHOULD in the spec: infer it for the conventional names
        if isinstance(data, dict) and data.get("type") is None and "name" in data:
            inferred = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
            if data["name"] in inferred:
                data = {**data, "type": inferred[data["name"]]}
        return data

    @model_validator(mode="after")
    def _unit_fits_type(self):
        if self.unit is None:
            return self
        if self.type == "space" and self.unit not in SPACE_UNITS_UM:
            raise ValueError(
                f"space unit {self.unit!r} of axis {self.name!r} is not an NGFF unit "
                "(use e.g. 'micrometer' or 'nanometer')"
            )
        if self.type == "time" and self.unit not in TIME_UNITS:
            raise ValueError(
                f"time unit {self.unit!r} of axis {self.name!r} is not an NGFF unit "
                "(use e.g. 'second')"
            )
        return self


class Scale(_Model):
    """A ``scale`` coordinate transformation (given inline, not as a binary ``path``)."""

    type: Literal["scale"]
    scale: list[float] = Field(min_length=1)

    @field_validator("scale")
    @classmethod
    def _positive_finite(cls, v: list[float]) -> list[float]:
        for i, s in enumerate(v):
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"scale[{i}] = {s} must be a positive finite number")
        return v


class Translation(_Model):
    """A ``translation`` coordinate transformation."""

    type: Literal["translation"]
    translation: list[float] = Field(min_length=1)

    @field_validator("translation")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        if not all(math.isfinite(t) for t in v):
            raise ValueError("translation values must be finite")
        return v


Transform = Annotated[Scale | Translation, Field(discriminator="type")]


def _check_transforms(ts: list[Scale | Translation], ndim: int, where: str) -> None:
    """The spec's rule: exactly one scale first, then at most one translation."""
    if not ts or not isinstance(ts[0], Scale):
        raise ValueError(f"{where}: the first coordinate transformation must be a 'scale'")
    if len(ts) > 2 or (len(ts) == 2 and not isinstance(ts[1], Translation)):
        raise ValueError(f"{where}: only one 'scale' followed by at most one 'translation'")
    for t in ts:
        n = len(t.scale) if isinstance(t, Scale) else len(t.translation)
        if n != ndim:
            raise ValueError(f"{where}: a {t.type} of length {n} for {ndim} axes")


class Dataset(_Model):
    """One resolution level of a multiscale image."""

    path: str
    coordinateTransformations: list[Transform] = Field(min_length=1)

    @field_validator("path", mode="before")
    @classmethod
    def _int_path(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("path")
    @classmethod
    def _safe_path(cls, v: str) -> str:
        parts = v.split("/")
        if not v or v.startswith("/") or "\\" in v or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"dataset path {v!r} must be a relative path without '.' or '..'")
        return v


class Multiscale(_Model):
    """``multiscales[i]``: axes and the resolution levels, highest resolution first."""

    axes: list[Axis] = Field(min_length=2, max_length=5)
    datasets: list[Dataset] = Field(min_length=1)
    coordinateTransformations: list[Transform] | None = None
    name: str | None = None
    version: str | None = None

    @model_validator(mode="after")
    def _spec_rules(self):
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axis names {names} must be unique")
        types = [a.type for a in self.axes]
        n_space = types.count("space")
        if n_space not in (2, 3):
            raise ValueError(f"axes {names} must have 2 or 3 axes of type 'space', not {n_space}")
        if types.count("time") > 1 or types.count("channel") > 1:
            raise ValueError(f"axes {names} may have at most one 'time' and one 'channel' axis")
        rank = {"time": 0, "space": 2}
        order = [rank.get(t, 1) for t in types]  # channel / custom / untyped between
        if order != sorted(order):
            raise ValueError(
                f"axes {names} (types {types}) are out of order: time first, then channel, "
                "then space"
            )
        ndim = len(self.axes)
        for i, d in enumerate(self.datasets):
            _check_transforms(d.coordinateTransformations, ndim, f"datasets[{i}]")
        if self.coordinateTransformations is not None:
            _check_transforms(self.coordinateTransformations, ndim, "coordinateTransformations")
        scales = [d.coordinateTransformations[0].scale for d in self.datasets]
        for i in range(1, len(scales)):
            if any(b < a for a, b in zip(scales[i - 1], scales[i], strict=True)):
                raise ValueError(
                    f"datasets[{i}] scale {scales[i]} is finer than datasets[{i - 1}] "
                    f"{scales[i - 1]}: levels must go from highest resolution to lowest"
                )
        paths = [d.path for d in self.datasets]
        if len(set(paths)) != len(paths):
            raise ValueError(f"dataset paths {paths} must be unique")
        return self


class OmeroWindow(_Model):
    start: float
    end: float
    min: float | None = None
    max: float | None = None


class OmeroChannel(_Model):
    label: str | None = None
    color: str | None = None
    window: OmeroWindow | None = None
    active: bool | None = None


class Omero(_Model):
    channels: list[OmeroChannel]


class ImageMeta(_Model):
    """The NGFF attributes of an image group."""

    multiscales: list[Multiscale] = Field(min_length=1)
    omero: Omero | None = None


# --------------------------------------------------------------------------- HCS


class _Named(_Model):
    name: str


class Acquisition(_Model):
    id: int = Field(ge=0)
    name: str | None = None


class WellInPlate(_Model):
    path: str
    rowIndex: int = Field(ge=0)
    columnIndex: int = Field(ge=0)


class PlateMeta(_Model):
    """The ``plate`` attributes of an HCS plate group."""

    rows: list[_Named] = Field(min_length=1)
    columns: list[_Named] = Field(min_length=1)
    wells: list[WellInPlate] = Field(min_length=1)
    name: str | None = None
    field_count: int | None = Field(default=None, gt=0)
    acquisitions: list[Acquisition] | None = None
    version: str | None = None

    @model_validator(mode="after")
    def _spec_rules(self):
        rows = [check_name(r.name, "row name") for r in self.rows]
        cols = [check_name(c.name, "column name") for c in self.columns]
        for what, names in (("row", rows), ("column", cols)):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names {names} must be unique")
        paths = [w.path for w in self.wells]
        if len(set(paths)) != len(paths):
            raise ValueError("well paths must be unique")
        for w in self.wells:
            row, col = check_well_path(w.path)
            if row not in rows or col not in cols:
                raise ValueError(
                    f"well {w.path!r} names row {row!r} / column {col!r} absent from the "
                    f"plate's rows {rows} / columns {cols}"
                )
        return self


class WellImage(_Model):
    path: str
    acquisition: int | None = None


class WellMeta(_Model):
    """The ``well`` attributes of a well group."""

    images: list[WellImage] = Field(min_length=1)
    version: str | None = None

    @model_validator(mode="after")
    def _spec_rules(self):
        paths = [check_name(im.path, "field (image) path") for im in self.images]
        if len(set(paths)) != len(paths):
            raise ValueError(f"image paths {paths} must be unique")
        return self


# --------------------------------------------------------------------------- labels


class LabelColor(_Model):
    label_value: int = Field(alias="label-value")
    rgba: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None, min_length=4, max_length=4
    )


class ImageLabel(_Model):
    """``image-label`` attributes of a label image."""

    colors: list[LabelColor] | None = None
    properties: list[dict[str, Any]] | None = None
    source: dict[str, Any] | None = None
    version: str | None = None


class LabelsMeta(_Model):
    """The ``labels`` group listing: the names of its label images."""

    labels: list[str]


# --------------------------------------------------------------------------- helpers


def _loc(loc: tuple) -> str:
    out = ""
    for i, part in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("scale", "translation") and isinstance(nxt, str):
            continue  # the tag pydantic inserts for a discriminated union member
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue  # pydantic's internal validator names
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse(model: type[_Model], data: Any, *, node: str, what: str) -> Any:
    """Validate ``data`` against ``model``; on failure raise one :class:`PlateError`.

    Parameters
    ----------
    model : type
        One of the models of this module.
    data : object
        The JSON attributes (already unwrapped from ``"ome"`` for 0.5).
    node : str
        The store and path inside it, for the message (``"plate.zarr/B/03/0"``).
    what : str
        What the metadata describes (``"image"``, ``"plate"``...).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise PlateError(
            f"{node}: invalid {what} metadata at {_loc(first['loc'])}: {msg}{more}. "
            "Fix the metadata (see https://ngff.openmicroscopy.org) or re-export the data."
        ) from None
