"""One field of a plate, opened lazily: :class:`FieldRef` (where it is) and
:class:`FieldImage` (its metadata and lazy pixels, read channel by channel and checked for
NaN / Inf by :func:`check_finite`). :mod:`hcsmito.io.plate` opens them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as _dc_field
from typing import Any

import dask.array as da
import numpy as np

from hcsmito.io._chunks import ChunkReader
from hcsmito.io.errors import PlateError
from hcsmito.io.roles import resolve_channel_roles

__all__ = ["NONFINITE", "FieldImage", "FieldRef", "check_finite"]

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
        peak_bytes: int | None = None,
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
        peak_bytes : int, optional
            The field's expected peak instead (what the runner passes:
            :func:`hcsmito.cluster.field_peak_bytes` of the field's shape and dtype, or
            ``resources.memory_per_field``; the same figure bounds how many fields run at
            once).

        Returns
        -------
        int
            The bytes needed, when within the budget.

        Raises
        ------
        PlateError
            Naming the field, its shape, the memory needed and the budget.
        """
        if peak_bytes is None:
            need, what = self.nbytes(channels, bytes_per_voxel=bytes_per_voxel), "for its channels"
        else:
            need, what = int(peak_bytes), "at its expected peak"
        if need > budget_bytes:
            shape = {ax: n for ax, n in zip(self.axes, self.data.shape, strict=True)}
            raise PlateError(
                f"{self.describe()}: the field ({shape}, {self.data.dtype}) needs "
                f"{_gib(need)} of memory {what}, more than the budget of "
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
