"""The scene of a synthetic co-culture field and the grid helpers its builders share.

Everything works in micrometres on the 2-D (Y, X) pixel grid of the field: MSCs are a
footprint label image plus a height map (the cells are flat), Jurkat cells are spheroids,
foci are balls, nanotubes and stress fibres are segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from hcsmito.synth.params import SynthParams

__all__ = ["Focus", "Jurkat", "Scene", "Tnt", "msc_nucleus_axes", "msc_nucleus_rho2"]

#: An MSC's nucleus lies this far above the glass (µm).
NUCLEUS_BASE_UM = 0.3


@dataclass
class Jurkat:
    """A donor cell: a spheroid standing on the glass or on an MSC."""

    center: tuple[float, float, float]  # z, y, x µm
    radius_xy: float
    radius_z: float
    adhered: bool
    msc_id: int  # MSC it rests on, 0 on glass


@dataclass
class Focus:
    """A transferred mitochondrial fragment inside an MSC."""

    center: tuple[float, float, float]
    diameter: float
    cell_id: int


@dataclass
class Tnt:
    """A nanotube: the free segment between two cells, at ``height`` above the glass."""

    start: tuple[float, float, float]  # exit point from the first cell, µm
    end: tuple[float, float, float]  # entry point into the second cell, µm
    from_kind: str
    from_id: int
    to_kind: str
    to_id: int
    diameter: float
    height: float  # axis height above the glass at the midpoint of the free part, µm
    mito: tuple[float, float, float] | None = None
    mito_diameter: float = 0.0

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.subtract(self.end, self.start)))


@dataclass
class Scene:
    """The scene a field is rendered from (2-D maps on the field's (Y, X) grid)."""

    params: SynthParams
    footprint: np.ndarray  # (Y, X) int32 MSC ids
    height: np.ndarray  # (Y, X) float32 top of the MSC above the glass, µm (0 outside)
    edge_dist: np.ndarray  # (Y, X) float32 distance to the cell's own outline, µm
    nucleus: np.ndarray  # (Y, X) bool
    gfp: np.ndarray  # (Y, X) float32 GFP concentration of the MSC cytoplasm
    jurkats: list[Jurkat] = field(default_factory=list)
    foci: list[Focus] = field(default_factory=list)
    tnts: list[Tnt] = field(default_factory=list)
    fibres: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (N, 2) y, x µm
    # per MSC (id - 1): the disc it was drawn from, (cy, cx, r, theta, aspect), µm / rad
    msc_shapes: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    # (Y, X) float32: top of each MSC's (normal) nucleus above the glass over its
    # footprint, µm (0 elsewhere): a donor resting on the cell keeps clear of it
    nucleus_top: np.ndarray | None = None

    @property
    def n_msc(self) -> int:
        return int(self.footprint.max(initial=0))


# -- helpers ------------------------------------------------------------------------------


def grid(p: SynthParams) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (µm) of the field's (Y, X) grid, as open 2-D arrays."""
    ny, nx = p.shape[-2:]
    dy, dx = p.voxel_size[1:]
    return (np.arange(ny, dtype=np.float32) * dy)[:, None], (np.arange(nx, dtype=np.float32) * dx)[
        None, :
    ]


def extent(p: SynthParams) -> tuple[float, float]:
    ny, nx = p.shape[-2:]
    return ny * p.voxel_size[1], nx * p.voxel_size[2]


def smooth_noise(rng: np.random.Generator, p: SynthParams, scale_um: float) -> np.ndarray:
    """Unit-variance smooth random field with correlation length ``scale_um`` (Y, X).

    Drawn on a grid fixed in micrometres, then interpolated to the pixels: the same seed
    gives the same physical pattern whatever the voxel size.
    """
    ly, lx = extent(p)
    step = scale_um / 3.0
    pad = 8
    ny, nx = int(ly / step) + 2 * pad, int(lx / step) + 2 * pad
    white = rng.standard_normal((ny, nx)).astype(np.float32)
    coarse = ndi.gaussian_filter(white, 3.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    yy, xx = grid(p)
    cy = np.broadcast_to(yy / step + pad, (p.shape[-2], p.shape[-1]))
    cx = np.broadcast_to(xx / step + pad, (p.shape[-2], p.shape[-1]))
    return ndi.map_coordinates(coarse, [cy, cx], order=1, mode="nearest").astype(np.float32)


def pixel(p: SynthParams, y: float, x: float) -> tuple[int, int]:
    ny, nx = p.shape[-2:]
    iy = min(max(round(y / p.voxel_size[1]), 0), ny - 1)
    ix = min(max(round(x / p.voxel_size[2]), 0), nx - 1)
    return iy, ix


def z_room(p: SynthParams) -> tuple[float, float]:
    """The room of a Jurkat cell: ``(z_top, need)``, a cell of height ``h`` with its bottom
    at ``z`` (µm, flat scene) fits when ``z + min(h, need) <= z_top``.

    A whole cell keeps 0.3 µm below the top plane and leaves room for the tilted glass to
    lift it (``need`` infinite); a cell the stack may cut (``allow_cut``) needs only its
    lowest 0.5 µm in the stack, so that its label and its truth row exist.
    """
    top = (p.scene_shape[0] - 1) * p.voxel_size[0] - p.glass_rise_max_um()
    if p.allow_cut and p.ndim == 3:
        return top, 0.5
    return top - 0.3, math.inf


def msc_nucleus_axes(p: SynthParams, shape) -> tuple[float, float, float]:
    """Semi-axes ``(rz, ru, rv)`` (µm; u along the disc's direction ``theta``) of the
    normal nucleus of the MSC drawn from disc ``shape`` ``(cy, cx, r, theta, aspect)``: the
    footprint of its nuclear bulge shrunk to 0.9, from :data:`NUCLEUS_BASE_UM` above the
    glass to 0.6 µm below the bulge's top (without a bulge, a nucleus under the plateau)."""
    _, _, r_cell, _, aspect = shape
    a = min(aspect, 1.4)  # as the bulge of cells._msc_height
    rn = 0.5 * p.msc_nucleus_diameter_um
    tall = p.msc_nucleus_height_um
    if rn <= 0:
        rn, tall = 0.3 * r_cell, p.msc_height_um
    return 0.5 * max(tall - 0.9, 0.6), 0.9 * rn * a, 0.9 * rn / a


def msc_nucleus_rho2(p: SynthParams, shape, yy: np.ndarray, xx: np.ndarray, scale: float = 1.0):
    """Squared elliptic radius of points ``(yy, xx)`` (µm) in the footprint of the normal
    nucleus of the MSC of disc ``shape``, its axes times ``scale`` (< 1 inside)."""
    cy, cx, _, theta, _ = shape
    _, ru, rv = msc_nucleus_axes(p, shape)
    c, s = math.cos(theta), math.sin(theta)
    u = (yy - cy) * c + (xx - cx) * s
    v = -(yy - cy) * s + (xx - cx) * c
    return (u / (scale * ru)) ** 2 + (v / (scale * rv)) ** 2


def pick(rng: np.random.Generator, mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return None if idx.size == 0 else int(idx[rng.integers(idx.size)])


def pick_um(rng: np.random.Generator, p: SynthParams, mask: np.ndarray):
    """A random point (y, x) µm in a pixel of ``mask``, jittered inside the pixel."""
    i = pick(rng, mask)
    if i is None:
        return None
    iy, ix = divmod(i, mask.shape[1])
    dy, dx = p.voxel_size[1:]
    return (iy + rng.uniform(-0.45, 0.45)) * dy, (ix + rng.uniform(-0.45, 0.45)) * dx
