"""Depth attenuation along a stack: how much the signal falls from the first plane to the
last, measured inside thick objects, and its correction.

Light from deep in a sample is scattered and aberrated on its way to the objective, and a
stack's later planes are bleached by the earlier ones: the same structure reads dimmer
the farther its plane. A real 3-D DAPI stack (IDR idr0062A) loses 3x over 80 µm; over a
15 µm co-culture stack 0.6-0.8 is common. The detection stages threshold each channel
once for the whole stack, so uncorrected, the cells' deep planes fall below the threshold:
MSCs lose their tops and split, TNTs high above the glass vanish, foci deep in an MSC are
missed (on the generator's fields falling to 0.5, MSC counts are exact on a third of them).

**Measure.** Along z, an object's run of foreground is blurred alike at its bottom and its
top (the PSF is symmetric): a voxel some way in from the run's bottom and its mirror as
far in from the run's top differ by the attenuation over the distance between them, not
by the blur. The log-ratios of such pairs, against their distances (least squares
through the origin), give the log-fall per plane, and the last plane's signal over the
first's; its standard error comes from the spread over lateral blocks of the field.
Runs cut by the first or last plane, and the voxels within ``edge_um`` of a run's ends
(where the threshold crossing itself moves with the fall), are left out. On the
generator's fields this reads 1.0-1.25 with no fall (objects are not mirror-symmetric:
domes, nuclei), and 0.59-0.63 for a fall to 0.55. A field without objects several
planes deep (2-D, a few planes, empty) is not measured.

**Correct.** Where the measured change is larger than ``min_change`` (0.25: beyond what
the objects' own shapes give) and twice its standard error, every detection channel is
divided, plane by plane and above its background level, by the fitted profile
normalised to its brighter end. One profile for all channels: depth attenuation is
shared by the dyes (bleaching less so; the channel measured is the one to trust). A
large change that is not significant, or a fall below ``flag_below``, flags the field
``z_attenuation``: its deep planes are not trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend

__all__ = ["Attenuation", "correct_attenuation", "measure_attenuation", "attenuation_profile"]

#: The fall is measured when at least this many mirrored voxel pairs are found.
MIN_PAIRS = 200
#: Lateral blocks per axis whose spread gives the measure's standard error.
_BLOCKS = 8
#: Voxels of the strided sample that sets the background and foreground levels.
_SAMPLE = 1 << 20
#: Pixels per plane the measurement looks at (larger planes are strided down to this).
_PLANE = 1 << 18


@dataclass(frozen=True)
class Attenuation:
    """Depth attenuation of one field.

    Attributes
    ----------
    ratio : float
        Signal in the last plane over the first (1: none; NaN: not measured).
    log_se : float
        Standard error of ``log(ratio)`` (NaN with fewer than two blocks).
    blocks : int
        Lateral blocks of the field that gave it.
    source : str
        The channel role it was measured on ("" when none was).
    corrected : bool
        Whether the detection channels were corrected.
    flags : tuple of str
        ``("z_attenuation",)`` when the deep planes are not trusted.
    """

    ratio: float = float("nan")
    log_se: float = float("nan")
    blocks: int = 0
    source: str = ""
    corrected: bool = False
    flags: tuple[str, ...] = ()

    def note(self) -> str:
        """One line for the field's notes ("" when nothing was corrected or flagged)."""
        if not (self.corrected or self.flags):
            return ""
        what = "corrected" if self.corrected else "not corrected (uncertain)"
        return (
            f"depth attenuation {what}: the signal falls to {self.ratio:.2f} of the first "
            f"plane's in the last (± {self.log_se:.2f} in log, {self.blocks} blocks of the "
            f"{self.source} channel)"
        )


def attenuation_profile(ratio: float, nz: int) -> np.ndarray:
    """The fitted fall-off per plane, ``ratio ** (z / (nz - 1))``, normalised to 1 at its
    brighter end (float64, length ``nz``)."""
    z = np.arange(nz, dtype=np.float64) / max(nz - 1, 1)
    prof = ratio**z
    return prof / prof.max()


def _levels(b: Backend, image: Any) -> tuple[float, float]:
    """Background level and foreground threshold of ``image`` from a strided sample: the
    median of the class below an Otsu split of the whole sample (the background's
    centre), and an Otsu split of the voxels above the sample's median (the objects'
    bright interior, not their blurred rims)."""
    from skimage.filters import threshold_otsu

    step = max(1, image.size // _SAMPLE)
    sample = b.to_host(image.reshape(-1)[::step]).astype(np.float64)  # device->host: sample
    if sample.min() == sample.max():
        return float(sample[0]), float("inf")
    bg = float(np.median(sample[sample <= threshold_otsu(sample)]))
    upper = sample[sample > np.median(sample)]
    if upper.size < 2 or upper.min() == upper.max():
        return bg, float("inf")
    return bg, float(threshold_otsu(upper))


def measure_attenuation(
    image: Any,
    *,
    voxel_size: Mapping[str, float] | Sequence[float],
    edge_um: float = 0.5,
) -> tuple[float, float, int]:
    """``(ratio, log_se, blocks)``: the last plane's signal over the first's, measured on
    the objects of a 3-D ``image`` (see the module docstring), its standard error in log
    and the lateral blocks that gave it; NaN and 0 where it cannot be measured (2-D, too
    few planes or objects)."""
    nan = (float("nan"), float("nan"), 0)
    if image.ndim != 3 or image.shape[0] < 6:
        return nan
    dz = float(voxel_size["z"] if isinstance(voxel_size, Mapping) else voxel_size[0])
    b = Backend.of(image)
    xp = b.xp
    # every s-th row and column of large planes: a few hundred thousand columns suffice
    s = max(1, int(math.sqrt(image.shape[1] * image.shape[2] / _PLANE)))
    image = image[:, ::s, ::s]
    bg, thr = _levels(b, image)
    if not math.isfinite(thr) or thr <= bg:
        return nan
    nz = image.shape[0]
    fg = image > thr
    # each foreground voxel's run of foreground along z: planes to its run's bottom
    # (itself included) and to its top
    below = xp.zeros(fg.shape, xp.int16)
    above = xp.zeros(fg.shape, xp.int16)
    run = xp.zeros(fg.shape[1:], xp.int16)
    for z in range(nz):
        run = (run + 1) * fg[z]
        below[z] = run
    run[:] = 0
    for z in range(nz - 1, -1, -1):
        run = (run + 1) * fg[z]
        above[z] = run
    zz = xp.arange(nz, dtype=xp.int16)[:, None, None]
    # a voxel of a run's lower half, edge_um in from its end, and its mirror as far from
    # the run's top: the blur of the two surfaces is the same at both, the attenuation
    # over their distance is not; runs cut by the stack's ends are no mirrors
    edge = max(1, math.ceil(edge_um / dz))
    dist = above - below
    pick = fg & (below > edge) & (dist >= 2) & (zz - below >= 0) & (zz + above <= nz - 1)
    z, y, x = xp.nonzero(pick)
    if int(z.size) < MIN_PAIRS:
        return nan
    d = dist[z, y, x]
    lo = image[z, y, x].astype(xp.float64) - bg
    hi = image[z + d, y, x].astype(xp.float64) - bg
    ok = (lo > 0) & (hi > 0)
    d = b.to_host(d[ok]).astype(np.float64)  # device->host: the pairs
    delta = b.to_host(xp.log(hi[ok]) - xp.log(lo[ok]))
    if d.size < MIN_PAIRS:
        return nan
    # log-fall per plane: least squares through the origin, delta = k * distance
    k = float(np.sum(d * delta) / np.sum(d * d))
    # its standard error from the spread between lateral blocks of the field and between
    # objects (each column's footprint component), the larger: neighbouring columns share
    # their blur, and one object's shape biases all its columns alike
    from scipy import ndimage as ndi

    ny, nx = image.shape[1:]
    yh, xh = b.to_host(y[ok]), b.to_host(x[ok])  # device->host: the pairs' columns
    footprint = np.zeros((ny, nx), bool)
    footprint[yh, xh] = True
    objects = ndi.label(footprint, structure=np.ones((3, 3), bool))[0][yh, xh]
    blocks = (yh * _BLOCKS // ny) * _BLOCKS + xh * _BLOCKS // nx
    spread = [_spread(d, delta, k, g) for g in (blocks, objects)]
    n_blocks = int(np.unique(blocks).size)
    se = max((v for v in spread if math.isfinite(v)), default=float("nan"))
    return math.exp(k * (nz - 1)), se * (nz - 1), n_blocks


def _spread(d: np.ndarray, delta: np.ndarray, k: float, group: np.ndarray) -> float:
    """Standard error of ``k`` from its estimates in each ``group`` of pairs (groups of
    at least 20 pairs; NaN with fewer than two)."""
    ks, ws = [], []
    for i in np.unique(group):
        m = group == i
        if m.sum() >= 20:
            ks.append(float(np.sum(d[m] * delta[m]) / np.sum(d[m] ** 2)))
            ws.append(float(np.sum(d[m] ** 2)))
    if len(ks) < 2:
        return float("nan")
    kb, wb = np.asarray(ks), np.asarray(ws)
    return math.sqrt(float(np.sum(wb * (kb - k) ** 2) / wb.sum()) / (kb.size - 1))


def correct_attenuation(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float] | Sequence[float],
    sources: Sequence[str] = ("msc", "nuclei", "mito"),
    edge_um: float = 0.5,
    min_change: float = 0.25,
    flag_below: float = 0.35,
) -> tuple[dict[str, Any], Attenuation]:
    """Measure the depth attenuation on the first of ``sources`` that holds thick
    objects, and correct every channel of ``channels`` where it is significant.

    Parameters
    ----------
    channels : mapping of role to (Z, Y, X) ndarray
        The detection channels (NumPy or CuPy, any numeric dtype).
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    sources : sequence of str
        Roles to measure on, in order of preference.
    edge_um : float, µm
        Voxels this close to either end of their run of foreground along z are not
        measured (default 0.5 µm).
    min_change : float
        Smallest fall (or rise to its inverse) over the stack that is corrected (default
        0.25): below it, the channels are returned as they are.
    flag_below : float
        A fall to less than this (or a rise to more than its inverse) is corrected and
        flagged: the deep planes' signal is too weak to trust (default 0.35).

    Returns
    -------
    (channels, Attenuation)
        The channels, corrected where the attenuation is significant (integer channels
        keep their dtype when the corrected values fit it, else become float32), and
        what was measured.
    """
    if not 0 < min_change < 1:
        raise ValueError(f"min_change must be in (0, 1), got {min_change}")
    if not 0 < flag_below < 1:
        raise ValueError(f"flag_below must be in (0, 1), got {flag_below}")
    out = dict(channels)
    att = Attenuation()
    for role in sources:
        if role not in channels or channels[role] is None:
            continue
        ratio, log_se, blocks = measure_attenuation(
            channels[role], voxel_size=voxel_size, edge_um=edge_um
        )
        if blocks >= 2:
            att = Attenuation(ratio, log_se, blocks, role)
            break
    if att.blocks < 2:
        return out, att
    change = abs(math.log(att.ratio))
    if change < -math.log(1 - min_change):
        return out, att
    if not change > 2 * att.log_se:
        return out, Attenuation(att.ratio, att.log_se, att.blocks, att.source, False,
                                ("z_attenuation",))  # fmt: skip
    flags = ("z_attenuation",) if change > -math.log(flag_below) else ()
    for role, image in channels.items():
        if image is not None and image.ndim == 3:
            out[role] = _divide(image, attenuation_profile(att.ratio, image.shape[0]))
    return out, Attenuation(att.ratio, att.log_se, att.blocks, att.source, True, flags)


def _divide(image: Any, profile: np.ndarray) -> Any:
    """Each plane's signal above its own background level divided by the profile, put
    back on the background of the profile's brightest plane (the background light is
    attenuated too, a camera offset is not: each plane's level is measured, as the median
    of its voxels below the channel's foreground threshold); in the image's integer dtype
    where every value fits it (rounded), else float32."""
    b = Backend.of(image)
    xp = b.xp
    bg, thr = _levels(b, image)
    levels = []
    for z in range(image.shape[0]):
        plane = image[z].reshape(-1)[:: max(1, image[z].size // _PLANE)]
        dark = plane[plane <= thr] if math.isfinite(thr) else plane
        levels.append(float(xp.median(dark)) if int(dark.size) >= 1000 else bg)
    ref = np.float32(levels[int(np.argmax(profile))])
    integer = np.issubdtype(image.dtype, np.integer)
    info = np.iinfo(image.dtype) if integer else None
    out = xp.empty(image.shape, image.dtype if integer else xp.float32)
    for z, p in enumerate(profile):
        plane = (image[z].astype(xp.float32) - np.float32(levels[z])) / np.float32(p) + ref
        if integer:
            plane = xp.rint(plane)
            if not (info.min <= float(plane.min()) and float(plane.max()) <= info.max):
                return _divide(image.astype(xp.float32), profile)
        out[z] = plane
    return out
