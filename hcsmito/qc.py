"""Per-field QC flags: what in a field's numbers cannot be trusted, as short codes.

:data:`QC_FLAGS` is the one declaration of the codes and their meanings; the fields
table (column ``qc_flags``), the ledger, ``hcsmito status``, the run summary, the
statistics' ``exclude_flags`` and the report all read it. A field carries its codes
joined by ``","`` in declaration order (:func:`join_flags`), ``""`` when none; a flagged
field is still ``ok``: its numbers are written, and the statistics leave it out only when
asked (``statistics.exclude_flags`` / ``hcsmito report --exclude-flags``).

Codes come from three places:

- the reader: ``missing_chunks`` and ``nonfinite_voxels``, where the ``input:`` section of
  the config lets such a field through instead of failing it (the runner adds them);
- the stages: a stage result may carry ``flags: tuple[str, ...]`` (e.g. the TNT stage's
  ``glass_implausible``, the Jurkat segmentation's ``donor_covers_field``); the pipeline
  collects ``getattr(result, "flags", ())`` from every stage result;
- :func:`field_qc`: image-level checks on the raw channels and the cell labels
  (``saturated``, ``empty_channel``, ``out_of_focus``, ``vignetting``, ``msc_cover``,
  ``stack_cuts_cells``), pure functions on NumPy or CuPy arrays that look at a lateral
  binning, strided sample or projection of the field (cheap: it runs on every field).

The thresholds are the options of the ``qc:`` section of the config
(:class:`hcsmito.config.QualityControl`); their defaults and the reasons for them are
in ``conf/default.yaml`` and the README.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hcsmito.backend import Backend

__all__ = [
    "QC_FLAGS",
    "FieldQC",
    "check_flags",
    "cut_cells",
    "field_qc",
    "flag_counts",
    "format_flag_counts",
    "join_flags",
    "msc_cover_fraction",
    "falloff_ratio",
    "share_at_maximum",
    "sharpness",
    "signal_to_noise",
    "split_flags",
]

#: The QC codes, in the order a field lists them, with what each means (one line).
QC_FLAGS: dict[str, str] = {
    "missing_chunks": (
        "chunks of the field were missing from the store and read as the fill value "
        "(input.missing_chunks: fill): the counts cover only what was stored"
    ),
    "nonfinite_voxels": (
        "NaN / Inf voxels were set to their channel's smallest finite value "
        "(input.nonfinite: flag): objects there are not measured"
    ),
    "glass_implausible": (
        "the glass-plane estimate is not trusted: the plate or fallback value was used for "
        "heights above the glass"
    ),
    "donor_covers_field": (
        "candidates as bright as donor bodies but larger than jurkat.max_area_factor cells "
        "or a quarter of the field, covering at least 5 % of it, were rejected (e.g. a "
        "single-channel cell full of mitochondria): the donor count is not trusted"
    ),
    "nuclei_merged": (
        "a nucleus holds more than 10 typical nuclear volumes (nuclei.nucleus_diameter_um): "
        "touching nuclei were not split, and the cells they seed are not trusted"
    ),
    "z_attenuation": (
        "the signal falls along the stack (depth attenuation, bleaching) to less than "
        "attenuation.flag_below of its brighter end, or falls far but too unevenly to "
        "correct: the deep planes' objects are not trusted"
    ),
    "saturated": (
        "a channel has more than qc.saturated_share of its voxels at its maximum value "
        "(clipped at the top of the dtype or of the detector range): intensities are capped"
    ),
    "empty_channel": (
        "a channel holds no signal above its noise (flat): its cells or foci cannot be "
        "found (expected in single-population controls)"
    ),
    "out_of_focus": (
        "the stack does not hold the cells in focus: no channel has lateral structure "
        "finer than qc.focus_length_um, or every channel is sharpest in the first or last "
        "plane"
    ),
    "msc_cover": (
        "MSCs cover at least qc.msc_cover of the field's footprint: no glass reference, "
        "splitting touching MSCs is unreliable"
    ),
    "vignetting": (
        "strong illumination fall-off: a smooth fit of the background level over the "
        "field puts the corners below qc.vignetting_ratio of the centre"
    ),
    "stack_cuts_cells": (
        "a cell's cross-section in the top plane is at least qc.stack_cut_fraction of its "
        "footprint: the stack is too shallow, volumes and heights are cut"
    ),
}

_ORDER = {code: i for i, code in enumerate(QC_FLAGS)}
#: Voxels of one channel the image checks look at: fields above this are binned (lateral
#: block means: sharpness, signal, fall-off) or strided (saturation) down to it.
_SAMPLE_VOXELS = 1 << 23
#: Planes a stack needs before "sharpest in the first or last plane" means anything.
_MIN_PLANES_EDGE = 5
#: A plane's gradient energy counts as structure when it is this many standard errors
#: above zero (the estimator is noise-free in expectation, not in its spread).
_STRUCTURE_SE = 5.0
#: Finest lateral structure measurable: this many (binned) pixels.
_MIN_LENGTH_PX = 3.0


# --------------------------------------------------------------------------- codes


def check_flags(codes: Iterable[str], *, source: str = "") -> tuple[str, ...]:
    """The codes, de-duplicated and in declaration order; an unknown code is an error.

    Raises
    ------
    ValueError
        For a code that :data:`QC_FLAGS` does not declare (a programming error of the
        stage named by ``source``).
    """
    codes = list(codes)
    unknown = [c for c in codes if c not in QC_FLAGS]
    if unknown:
        where = f" from {source}" if source else ""
        raise ValueError(
            f"unknown QC flag(s) {unknown}{where}: declare every code in "
            f"hcsmito.qc.QC_FLAGS (known: {', '.join(QC_FLAGS)})"
        )
    return tuple(sorted(set(codes), key=_ORDER.__getitem__))


def join_flags(codes: Iterable[str]) -> str:
    """The ``qc_flags`` text of a field: codes joined by ``","``, ``""`` for none."""
    return ",".join(check_flags(codes))


def split_flags(text: Any) -> tuple[str, ...]:
    """The codes of a ``qc_flags`` value (``""``, None and ``<NA>`` give none)."""
    if not isinstance(text, str):
        import pandas as pd

        if text is None or pd.isna(text):
            return ()
    return tuple(c for c in (s.strip() for s in str(text).split(",")) if c)


def flag_counts(flags: Iterable[Any]) -> dict[str, int]:
    """Fields per code (declaration order, codes with none left out) from ``qc_flags``
    values or tuples of codes."""
    counts = dict.fromkeys(QC_FLAGS, 0)
    for f in flags:
        for c in split_flags(f) if not isinstance(f, tuple | list) else f:
            counts[c] = counts.get(c, 0) + 1
    return {c: n for c, n in counts.items() if n}


def format_flag_counts(flags: Sequence[Any]) -> str:
    """``"3 fields flagged: saturated 2, vignetting 1"`` (``""`` when no field is flagged)."""
    flags = list(flags)
    n = sum(1 for f in flags if (split_flags(f) if not isinstance(f, tuple | list) else f))
    if not n:
        return ""
    per = ", ".join(f"{c} {k}" for c, k in flag_counts(flags).items())
    return f"{n} field{'' if n == 1 else 's'} flagged: {per}"


# --------------------------------------------------------------------------- samples


def _float_sample(b: Backend, a: Any, voxels: int = _SAMPLE_VOXELS) -> tuple[Any, int]:
    """``a`` as float32, binned laterally by block means to at most ``voxels``; the bin."""
    xp = b.xp
    k = max(1, math.ceil(math.sqrt(a.size / voxels)))
    if k == 1:
        return a.astype(xp.float32), 1
    ny, nx = (a.shape[-2] // k) * k, (a.shape[-1] // k) * k
    a = a[..., :ny, :nx]
    lead = a.shape[:-2]
    dt = np.dtype(a.dtype)
    if dt.kind in "iu" and dt.itemsize <= 2 and k * k * (1 << (8 * dt.itemsize)) <= 1 << 24:
        # integers of 16 bits or less: each block's sum is an integer below 2^24, which
        # float32 holds exactly whatever the order of the additions, so the sums can be
        # taken in int32 (one strided add per row and column of the block, not a buffered
        # float reduction over two axes), then divided as ``mean`` divides them
        acc = a[..., 0::k, :].astype(xp.int32)
        for j in range(1, k):
            acc += a[..., j::k, :]
        sums = acc[..., 0::k].copy()
        for j in range(1, k):
            sums += acc[..., j::k]
        del acc
        out = sums.astype(xp.float32)
        return xp.true_divide(out, xp.intp(k * k), out=out, casting="unsafe"), k
    # binned in float32 from the raw dtype: no full-size float copy of a large field
    return a.reshape(*lead, ny // k, k, nx // k, k).mean(axis=(-3, -1), dtype=xp.float32), k


class _Sample:
    """One channel's binned float32 sample (:func:`_float_sample`) and its 2-voxel block
    means, made once for the image checks that read them (:func:`field_qc`)."""

    def __init__(self, image: Any):
        self.b = Backend.of(image)
        self.a, self.k = _float_sample(self.b, image)
        self._blocks = None

    @property
    def blocks(self) -> Any:
        if self._blocks is None:
            self._blocks = _block_mean(self.b, self.a)
        return self._blocks


def _block_mean(b: Backend, a: Any, k: int = 2) -> Any:
    """Means over blocks of ``k`` voxels per axis (axes shorter than ``k`` kept)."""
    ks = [k if n >= k else 1 for n in a.shape]
    a = a[tuple(slice(0, (n // kk) * kk) for n, kk in zip(a.shape, ks, strict=True))]
    shape: list[int] = []
    for n, kk in zip(a.shape, ks, strict=True):
        shape += [n // kk, kk]
    return a.reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2)))


# --------------------------------------------------------------------------- measures


def share_at_maximum(image: Any) -> float:
    """Share of a channel's voxels at its maximum value (0 for a constant channel).

    A channel clipped by the detector or the dtype piles its brightest voxels up at one
    value; an unclipped one reaches its maximum in a voxel or a few. Fields above 8 M
    voxels are strided laterally (the share of a pile-up survives a regular subsample).

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        Raw intensities, NumPy or CuPy, any numeric dtype.
    """
    s = max(1, math.ceil(math.sqrt(image.size / _SAMPLE_VOXELS)))
    a = image[..., ::s, ::s]
    if a.size == 0:
        return 0.0
    top = a.max()
    share = float((a == top).sum()) / a.size  # device→host: one number
    return 0.0 if share >= 1.0 else share


def signal_to_noise(image: Any) -> float:
    """How far the brightest structure of a channel stands above its noise.

    The channel (binned to at most 8 M voxels) is averaged in blocks of 2 voxels per
    axis; the 10th-highest block mean (a few hot pixels do not count) minus the 1st
    percentile (the floor: not the median, which cells filling most of a shallow stack
    would raise to their own level), divided by the noise sigma of the block means
    (:func:`hcsmito.stages.background.noise_sigma`, the MAD of a high-pass residual). Pure
    noise gives ~6-8 (Gaussian or low-count Poisson, up to 60x512x512 voxels); cells,
    foci or fibres give tens to hundreds.

    Returns
    -------
    float
        ``inf`` for a noise-free channel with structure, 0 for a constant one.
    """
    return _signal_to_noise(_Sample(image))


def _signal_to_noise(sample: _Sample) -> float:
    from hcsmito.stages.background import noise_sigma

    xp = sample.b.xp
    means = sample.blocks
    blocks = means.reshape(-1)
    if blocks.size == 0:
        return 0.0
    kth = max(0, int(blocks.size) - 10)
    top = float(xp.partition(blocks, kth)[kth])  # device→host: one number
    # the floor: a low quantile, not the median (cells may fill most of the field)
    low = float(xp.percentile(blocks, 1.0))  # device→host: one number
    # lateral noise, plane by plane: coarse z steps make every cell edge sharp along z,
    # and a high-pass across planes would count a stack full of cells as noise
    planes = means.reshape(-1, *means.shape[-2:])
    sigma = float(np.median([noise_sigma(plane) for plane in planes]))
    if sigma <= 0:
        return math.inf if top > low else 0.0
    return (top - low) / sigma


def _structure(b: Backend, a: Any) -> tuple[Any, Any, Any]:
    """Per leading index of ``a`` (..., Y, X): gradient energy, its standard error and the
    structure variance, noise-free in expectation (see :func:`sharpness`)."""
    xp = b.xp
    dx = a[..., :, 1:] - a[..., :, :-1]
    dy = a[..., 1:, :] - a[..., :-1, :]
    px = dx[..., :-1, :] * dx[..., 1:, :]
    py = dy[..., :, :-1] * dy[..., :, 1:]
    n = px[0].size + py[0].size
    g = (px.sum(axis=(-2, -1)) + py.sum(axis=(-2, -1))) / n
    g2 = ((px * px).sum(axis=(-2, -1)) + (py * py).sum(axis=(-2, -1))) / n
    se = xp.sqrt(xp.maximum(g2 - g * g, 0) / n)
    c = a - a.mean(axis=(-2, -1), keepdims=True)
    cov = (
        (c[..., :, 1:] * c[..., :, :-1]).mean(axis=(-2, -1))
        + (c[..., 1:, :] * c[..., :-1, :]).mean(axis=(-2, -1))
    ) / 2
    return g, se, cov


def sharpness(
    image: Any, voxel_size: Mapping[str, float], *, tile_um: float = 8.0
) -> tuple[float, int]:
    """The finest lateral structure of a channel (µm) and the plane where it is sharpest.

    Two noise-free estimates (pixel noise is independent from pixel to pixel, whatever its
    level, shot noise included, so it drops out in expectation): the gradient energy
    ``G``, the mean product of the x-differences of two neighbouring rows (and of the
    y-differences of two neighbouring columns), and the structure variance ``C``, the
    mean product of two neighbouring pixels' deviations from their mean. ``L = sqrt(C /
    G)`` is the length over which the structure changes: ``sqrt(2) s`` for white noise
    blurred by a Gaussian of sigma ``s``, ~0.2-0.5 µm for in-focus mitochondria or
    fibres, growing with defocus.

    The sharpest plane is the one of largest ``G`` (the stack is binned laterally to at
    most 8 M voxels first). On it, ``L`` is measured in tiles of ``tile_um`` (at least 16
    pixels), so that large objects (nuclei, whole cells) do not lengthen it, and the 25th
    percentile over the tiles whose ``G`` is at least 5 standard errors above 0 is
    returned: the length of the field's best-focused structure (the whole plane is one
    tile when it holds fewer than 4).

    Parameters
    ----------
    image : (M, N[, P]) ndarray
        One channel, NumPy or CuPy.
    voxel_size : mapping {"y", "x"[, "z"]} -> µm
    tile_um : float
        Tile side, µm.

    Returns
    -------
    length_um : float
        ``inf`` when no plane has measurable structure.
    plane : int
        The sharpest plane (0 for a 2-D field; -1 when none).
    """
    return _sharpness(_Sample(image), voxel_size, tile_um=tile_um)


def _sharpness(
    sample: _Sample, voxel_size: Mapping[str, float], *, tile_um: float = 8.0
) -> tuple[float, int]:
    b, a, k = sample.b, sample.a, sample.k
    if a.ndim == 2:
        a = a[None]
    _, ny, nx = a.shape
    if ny < 3 or nx < 3:
        return math.inf, -1
    g, se, _ = _structure(b, a)
    g, se = b.to_host(g).astype(np.float64), b.to_host(se).astype(np.float64)  # device→host
    has = (g > 0) & (g > _STRUCTURE_SE * se)
    if not has.any():
        return math.inf, -1
    p = int(np.argmax(np.where(has, g, -np.inf)))
    px_um = k * math.sqrt(float(voxel_size["y"]) * float(voxel_size["x"]))
    t = max(16, math.ceil(tile_um / px_um))
    plane = a[p]
    if (ny // t) * (nx // t) >= 4:
        sy, sx = (ny // t) * t, (nx // t) * t
        tiles = plane[:sy, :sx].reshape(sy // t, t, sx // t, t).transpose(0, 2, 1, 3)
        plane = tiles.reshape(-1, t, t)
    else:
        plane = plane[None]
    g, se, cov = (b.to_host(v).astype(np.float64) for v in _structure(b, plane))  # device→host
    ok = (g > 0) & (g > _STRUCTURE_SE * se) & (cov > 0)
    if not ok.any():
        return math.inf, p
    return float(np.percentile(np.sqrt(cov[ok] / g[ok]), 25.0)) * px_um, p


def falloff_ratio(image: Any, *, tiles: int = 8) -> tuple[float, float]:
    """Corner / centre ratio of a channel's background level, from a smooth fit.

    The background map is, per lateral position, the 25th percentile over z of 2-voxel
    block means (above and below the cells a column holds medium); in a 2-D field, the
    2x2 block means themselves. The map is cut into ``tiles`` x ``tiles`` tiles, each
    summarised by its 10th percentile (its background, when at least a tenth of it is
    not cell). ``log(level) = a + s · rho²`` (``rho`` = distance from the centre, 1 at the
    corners) is fitted by least squares, five times dropping the tiles more than 2.5
    robust sigmas above the fit (tiles that cells fill: cells are brighter than the
    background, never darker); ``exp(s)`` is the corner / centre ratio. The level is the
    raw one, a camera offset included: with an offset large against the background light
    a fall-off reads weaker than it is (missed, never invented).

    Returns
    -------
    ratio, spread : float
        The ratio (NaN with fewer than 16 tiles left) and the robust sigma of the kept
        tiles' log residuals: small (~0.01) when the tiles are background, large when
        cells filled them (then the ratio measures the cells, not the light).
    """
    return _falloff_ratio(_Sample(image), tiles=tiles)


def _falloff_ratio(sample: _Sample, *, tiles: int = 8) -> tuple[float, float]:
    b = sample.b
    xp = b.xp
    blocks = sample.blocks
    bg = xp.percentile(blocks, 25.0, axis=0) if blocks.ndim == 3 else blocks
    ny, nx = (bg.shape[0] // tiles) * tiles, (bg.shape[1] // tiles) * tiles
    if ny < 4 * tiles or nx < 4 * tiles:
        return math.nan, math.inf
    t = bg[:ny, :nx].reshape(tiles, ny // tiles, tiles, nx // tiles).transpose(0, 2, 1, 3)
    level = b.to_host(xp.percentile(t.reshape(tiles, tiles, -1), 10.0, axis=-1))  # device→host
    c = (np.arange(tiles) + 0.5) / tiles * 2 - 1
    rho2 = ((c[:, None] ** 2 + c[None, :] ** 2) / 2).ravel()
    level = level.astype(np.float64).ravel()
    ok = level > 0
    if ok.sum() < 16:
        return math.nan, math.inf
    y, r = np.log(level[ok]), rho2[ok]
    keep = np.ones(y.size, bool)
    slope, spread = math.nan, math.inf
    for _ in range(5):
        if keep.sum() < 16:
            return math.nan, math.inf
        slope, icpt = np.polyfit(r[keep], y[keep], 1)
        res = y - (icpt + slope * r)
        spread = float(1.4826 * np.median(np.abs(res[keep] - np.median(res[keep]))))
        new = res < 2.5 * max(spread, 1e-6)
        if np.array_equal(new, keep):
            break
        keep = new
    return float(math.exp(slope)), spread


def msc_cover_fraction(msc_labels: Any) -> float:
    """Share of the field's footprint (lateral projection) inside MSC labels."""
    lab = msc_labels.max(axis=0) if msc_labels.ndim == 3 else msc_labels
    return float((lab > 0).mean())  # device→host: one number


def cut_cells(labels: Any, *, min_fraction: float = 0.25, min_pixels: int = 20) -> np.ndarray:
    """Labels of a 3-D label image whose top-plane cross-section is at least
    ``min_fraction`` of their footprint (the maximum projection's area).

    A cell whose cap only grazes the top plane (a sphere's cap one 0.6 µm plane deep has
    ~0.2 of its footprint) is not cut; one whose body goes on above the stack is. Cells
    with a footprint under ``min_pixels`` pixels are ignored. 2-D label images: none.
    """
    b = Backend.of(labels)
    xp = b.xp
    if labels.ndim != 3 or labels.shape[0] < 2:
        return np.zeros(0, np.int64)
    n = int(labels.max())  # device→host: one number
    if n == 0:
        return np.zeros(0, np.int64)
    foot = xp.bincount(labels.max(axis=0).reshape(-1), minlength=n + 1)
    top = xp.bincount(labels[-1].reshape(-1), minlength=n + 1)
    foot, top = b.to_host(foot)[1:], b.to_host(top)[1:]  # device→host: n counts each
    cut = (foot >= min_pixels) & (top >= min_fraction * np.maximum(foot, 1))
    return np.flatnonzero(cut) + 1


# --------------------------------------------------------------------------- the field


@dataclass(frozen=True)
class FieldQC:
    """What :func:`field_qc` found.

    Attributes
    ----------
    flags : tuple of str
        Codes of :data:`QC_FLAGS`, in declaration order.
    metrics : dict of str to float
        The measured values behind them (``saturated_share.mito``, ``snr.msc``,
        ``length_um.actin``, ``sharpest_plane.msc``, ``vignetting_ratio``,
        ``msc_cover``, ``cut_cells``...), for the ledger and the manifest.
    """

    flags: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)


def field_qc(
    channels: Mapping[str, Any],
    *,
    voxel_size: Mapping[str, float],
    msc_labels: Any = None,
    jurkat_labels: Any = None,
    saturated_share: float = 1e-3,
    empty_snr: float = 10.0,
    focus_length_um: float = 1.5,
    vignetting_ratio: float = 0.6,
    msc_cover: float = 0.9,
    stack_cut_fraction: float = 0.25,
    markers: Iterable[str] = (),
) -> FieldQC:
    """The image-level QC flags of one field.

    Parameters
    ----------
    channels : mapping of role to (Y, X) or (Z, Y, X) ndarray
        The raw channels (NumPy or CuPy, their own dtype: saturation is judged on them).
    voxel_size : mapping {"z", "y", "x"} -> µm
    msc_labels, jurkat_labels : int ndarray, optional
        Cell labels of the field (``msc_cover`` and ``stack_cuts_cells``).
    saturated_share, empty_snr, focus_length_um, vignetting_ratio, msc_cover,
    stack_cut_fraction
        Thresholds (the ``qc:`` section of the config; see :data:`QC_FLAGS` for each).
    markers : iterable of str
        Roles of per-cell markers (annexin V, PI, a config's own): a marker channel with no
        signal above its noise is an answer (no positive cell: a control well), not an
        empty channel. Its signal-to-noise is still recorded.

    Returns
    -------
    FieldQC
    """
    flags: list[str] = []
    m: dict[str, float] = {}
    live: list[str] = []
    samples: dict[str, _Sample] = {}  # each channel binned once for every check
    for role, a in channels.items():
        if a is None:
            continue
        share = share_at_maximum(a)
        m[f"saturated_share.{role}"] = share
        if share > saturated_share:
            flags.append("saturated")
        samples[role] = _Sample(a)
        snr = _signal_to_noise(samples[role])
        m[f"snr.{role}"] = snr
        if snr >= empty_snr:
            live.append(role)
        elif role not in markers:
            flags.append("empty_channel")

    # focus: over the channels with signal
    lengths, planes = {}, {}
    for role in live:
        length, p = _sharpness(samples[role], voxel_size)
        m[f"length_um.{role}"] = length
        if p >= 0:
            planes[role] = p
            m[f"sharpest_plane.{role}"] = float(p)
        if np.isfinite(length):
            lengths[role] = length
    if live:
        a0 = channels[live[0]]
        k = max(1, math.ceil(math.sqrt(a0.size / _SAMPLE_VOXELS)))
        px_um = k * math.sqrt(float(voxel_size["y"]) * float(voxel_size["x"]))
        limit = max(focus_length_um, _MIN_LENGTH_PX * px_um)
        nz = a0.shape[0] if a0.ndim == 3 else 1
        blurred = not lengths or min(lengths.values()) > limit
        at_edge = (
            nz >= _MIN_PLANES_EDGE
            and bool(planes)
            and all(p in (0, nz - 1) for p in planes.values())
        )
        if blurred or at_edge:
            flags.append("out_of_focus")

    # fall-off: from the channel whose background is cleanest (cells fill no tile)
    best = (math.nan, math.inf)
    for role in live:
        ratio, spread = _falloff_ratio(samples[role])
        if np.isfinite(ratio) and spread < best[1]:
            best = (ratio, spread)
    m["vignetting_ratio"] = best[0]
    if np.isfinite(best[0]) and best[0] < vignetting_ratio:
        flags.append("vignetting")

    if msc_labels is not None:
        cover = msc_cover_fraction(msc_labels)
        m["msc_cover"] = cover
        if cover >= msc_cover:
            flags.append("msc_cover")
    n_cut = 0
    for lab in (msc_labels, jurkat_labels):
        if lab is not None:
            n_cut += len(cut_cells(lab, min_fraction=stack_cut_fraction))
    m["cut_cells"] = float(n_cut)
    if n_cut:
        flags.append("stack_cuts_cells")
    return FieldQC(check_flags(flags, source="hcsmito.qc.field_qc"), m)
