"""Depth attenuation along a stack: how much the signal falls from the first plane to the
last, measured inside thick objects, and its correction.

Light from deep in a sample is scattered and aberrated on its way to the objective, and a
stack's later planes are bleached by the earlier ones: the same structure reads dimmer
the farther its plane. A real 3-D DAPI stack (IDR idr0062A) loses 3x over 80 µm; over a
15 µm co-culture stack 0.6-0.8 is common. The detection stages threshold each channel
once for the whole stack, so uncorrected, the cells' deep planes fall below the threshold:
MSCs lose their tops and split, TNTs high above the glass vanish, foci deep in an MSC are
missed (on the generator's fields falling to 0.5, MSC counts are exact on a third of them).

**Measure.** Inside a thick, evenly stained object (an MSC's GFP cytoplasm, a nucleus'
DNA) two neighbouring planes differ by the attenuation between them only: the blur of
the object's top and bottom surfaces does not reach voxels ``interior_um`` deep in it.
Per pair of planes, the median log-ratio of the voxels that are foreground in a run of
planes spanning ``interior_um`` around the pair is one estimate of the log-attenuation
per plane; their mean weighted by voxel count, over the stack, gives the last plane's
signal over the first's (exponential in between), with its standard error from the
spread of the pairs. A field without thick objects (2-D, a few planes, empty) is not
measured.

**Correct.** Where the measured change is larger than ``min_change`` and twice its
standard error, every detection channel is divided, plane by plane and above its
background level, by the fitted profile normalised to its brighter end. One profile for
all channels: depth attenuation is shared by the dyes (bleaching less so; the thick
channel measured is the one to trust). A large change that is not significant, or a fall
below ``flag_below``, flags the field ``z_attenuation``: its deep planes are not trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hcsmito.backend import Backend

__all__ = ["Attenuation", "correct_attenuation", "measure_attenuation", "attenuation_profile"]

#: A plane pair is measured when at least this many voxels lie inside thick objects.
MIN_VOXELS = 100
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
        Standard error of ``log(ratio)`` (NaN with fewer than two plane pairs).
    pairs : int
        Plane pairs measured.
    source : str
        The channel role it was measured on ("" when none was).
    corrected : bool
        Whether the detection channels were corrected.
    flags : tuple of str
        ``("z_attenuation",)`` when the deep planes are not trusted.
    """

    ratio: float = float("nan")
    log_se: float = float("nan")
    pairs: int = 0
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
            f"plane's in the last (± {self.log_se:.2f} in log; {self.pairs} plane pairs "
            f"inside thick objects of the {self.source} channel)"
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
    interior_um: float = 3.0,
) -> tuple[float, float, int]:
    """``(ratio, log_se, pairs)``: the last plane's signal over the first's, measured
    inside the thick objects of a 3-D ``image`` (see the module docstring); NaN and 0
    pairs where it cannot be measured (2-D, too few planes or thick objects)."""
    nan = (float("nan"), float("nan"), 0)
    if image.ndim != 3:
        return nan
    dz = float(voxel_size["z"] if isinstance(voxel_size, Mapping) else voxel_size[0])
    run = max(4, math.ceil(interior_um / dz) + 1)  # planes of foreground around a pair
    nz = image.shape[0]
    if nz < run + 1:
        return nan
    b = Backend.of(image)
    xp = b.xp
    # every s-th row and column of large planes: the medians need thousands of voxels,
    # not millions
    s = max(1, int(math.sqrt(image.shape[1] * image.shape[2] / _PLANE)))
    image = image[:, ::s, ::s]
    bg, thr = _levels(b, image)
    if not math.isfinite(thr) or thr <= bg:
        return nan
    fg = image > thr  # bool, one byte per voxel
    mid = run // 2 - 1  # the pair (z + mid, z + mid + 1) sits in the middle of the run
    logs, counts = [], []
    inner = fg[:run].all(axis=0)
    for z in range(nz - run + 1):
        if z:
            inner = fg[z : z + run].all(axis=0)
        n = int(inner.sum())
        if n < MIN_VOXELS:
            continue
        lo = image[z + mid][inner].astype(xp.float64) - bg
        hi = image[z + mid + 1][inner].astype(xp.float64) - bg
        logs.append(float(b.to_host(xp.median(xp.log(hi) - xp.log(lo)))))
        counts.append(n)
    if not logs:
        return nan
    d, w = np.asarray(logs), np.asarray(counts, np.float64)
    k = float(np.sum(w * d) / w.sum())
    if d.size > 1:
        se = math.sqrt(float(np.sum(w * (d - k) ** 2) / w.sum()) / (d.size - 1))
    else:
        se = float("nan")
    return math.exp(k * (nz - 1)), se * (nz - 1), int(d.size)


def correct_attenuation(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float] | Sequence[float],
    sources: Sequence[str] = ("msc", "nuclei", "mito"),
    interior_um: float = 3.0,
    min_change: float = 0.1,
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
    interior_um : float, µm
        Depth inside an object beyond which the blur of its surfaces does not reach
        (default 3 µm: twice the axial FWHM of a confocal at NA 1.4).
    min_change : float
        Smallest fall (or rise) over the stack that is corrected (default 0.1): below
        it, the channels are returned as they are.
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
        ratio, log_se, pairs = measure_attenuation(
            channels[role], voxel_size=voxel_size, interior_um=interior_um
        )
        if pairs >= 2:
            att = Attenuation(ratio, log_se, pairs, role)
            break
    if att.pairs < 2:
        return out, att
    change = abs(math.log(att.ratio))
    if change < -math.log(1 - min_change):
        return out, att
    if not change > 2 * att.log_se:
        return out, Attenuation(att.ratio, att.log_se, att.pairs, att.source, False,
                                ("z_attenuation",))  # fmt: skip
    flags = ("z_attenuation",) if change > -math.log(flag_below) else ()
    for role, image in channels.items():
        if image is not None and image.ndim == 3:
            out[role] = _divide(image, attenuation_profile(att.ratio, image.shape[0]))
    return out, Attenuation(att.ratio, att.log_se, att.pairs, att.source, True, flags)


def _divide(image: Any, profile: np.ndarray) -> Any:
    """``bg + (image - bg) / profile`` per plane, ``bg`` the channel's background level;
    in the image's integer dtype where every value fits it (rounded), else float32."""
    b = Backend.of(image)
    xp = b.xp
    bg = np.float32(_levels(b, image)[0])
    integer = xp.issubdtype(image.dtype, xp.integer)
    info = np.iinfo(image.dtype) if integer else None
    out = xp.empty(image.shape, image.dtype if integer else xp.float32)
    for z, p in enumerate(profile):
        plane = (image[z].astype(xp.float32) - bg) / np.float32(p) + bg
        if integer and not (info.min <= float(plane.min()) and float(plane.max()) <= info.max):
            return _divide_float(image, profile, bg)
        out[z] = xp.rint(plane) if integer else plane
    return out


def _divide_float(image: Any, profile: np.ndarray, bg: np.float32) -> Any:
    xp = Backend.of(image).xp
    out = xp.empty(image.shape, xp.float32)
    for z, p in enumerate(profile):
        out[z] = (image[z].astype(xp.float32) - bg) / np.float32(p) + bg
    return out
