"""Nuclei from a DNA stain (Hoechst, DAPI): bright compact objects split at the maxima of
their distance to the outline in 3-D, the pieces of a fragmented nucleus kept as one
nucleus, each nucleus assigned to the cell it lies in, and a stain-free apoptosis call
from its shape and brightness.

A nucleus is segmented in 3-D, not in the lateral projection as the cells are: the
nucleus of a donor cell resting on an MSC lies above that MSC's nucleus, and in the
projection the two overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    VoxelSize,
    as_float32,
    background_level_noise,
    ellipsoid_footprint,
    gaussian,
    spacing,
    touches_border,
)
from hcsmito.stages.segmentation._common import (
    Instances,
    check_image,
    fg_threshold,
    majority_label,
)
from hcsmito.stages.threshold import AutoThreshold, ThresholdLike, as_threshold

__all__ = [
    "NUCLEUS_STATES",
    "above_haze",
    "nuclear_threshold",
    "NucleiInstances",
    "assign_nuclei",
    "call_nuclear_state",
    "group_fragments",
    "nuclear_background",
    "nuclei_seeds",
    "segment_nuclei",
    "split_at_donors",
    "typical_size",
]

#: The nuclear states of the stain-free call: a normal nucleus, a condensed one
#: (pyknosis: small and bright) and a fragmented one (karyorrhexis: several pieces).
NUCLEUS_STATES = ("normal", "condensed", "fragmented")


@dataclass(frozen=True)
class NucleiInstances(Instances):
    """Nuclei of one field.

    Attributes
    ----------
    n_parts : (n,) int ndarray (host)
        Connected pieces of each nucleus: more than one for a fragmented nucleus, whose
        pieces lay within ``fragment_merge_um`` of each other (or in one cell:
        :func:`group_fragments`).
    cut : (n,) bool ndarray (host)
        The nucleus touches a face of the stack, the top and bottom planes included: its
        size is not its own.
    flags : tuple of str
        QC codes (:data:`hcsmito.qc.QC_FLAGS`): ``nuclei_merged`` when one nucleus holds
        more than 10 typical nuclear volumes (the split failed: the cells it seeds are not
        trusted).
    """

    n_parts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cut: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    flags: tuple[str, ...] = ()


def segment_nuclei(
    dna: Any,
    *,
    voxel_size: VoxelSize,
    nucleus_diameter_um: float = 8.0,
    smooth_um: float = 0.4,
    threshold: ThresholdLike = "auto",
    seed_dynamics: float = 0.25,
    fragment_fraction: float = 0.12,
    fragment_merge_um: float = 1.5,
    min_volume_fraction: float = 0.01,
) -> NucleiInstances:
    """Nucleus instances from a DNA stain.

    Parameters
    ----------
    dna : (M, N) or (P, M, N) ndarray
        Nuclear channel of one field (any numeric dtype), NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    nucleus_diameter_um : float, µm
        Diameter of a typical (donor-cell) nucleus (default 8 µm). Sets the split depth,
        the size below which a piece counts as a fragment and the smallest nucleus kept.
        A flat MSC nucleus (~15 µm across, ~5 µm high) is split no more than a round
        one: its distance map is a plateau at half its height.
    smooth_um : float, µm
        Gaussian sigma before thresholding (default 0.4 µm).
    threshold : AutoThreshold, HistogramThreshold, ManualThreshold, mapping or str
        As in :func:`hcsmito.stages.segmentation.segment_msc` (default ``auto``:
        ``background + max(k * noise, fraction * (foreground - background))``).
    seed_dynamics : float
        Two touching nuclei are split when each one's distance maximum rises at least
        this fraction of the nuclear radius above the neck between them (an h-maximum;
        default 0.25).
    fragment_fraction : float
        A piece smaller than this fraction of the typical nuclear volume is a fragment
        (default 0.12: a ball of half the diameter); fragments within
        ``fragment_merge_um`` of each other are one (fragmented) nucleus.
    fragment_merge_um : float, µm
        Gap bridged between the pieces of one fragmented nucleus (default 1.5 µm).
    min_volume_fraction : float
        Nuclei smaller than this fraction of the typical volume are dropped (default
        0.01: debris and noise).

    Returns
    -------
    NucleiInstances
    """
    check_image(dna, "nuclei")
    b = Backend.of(dna)
    xp = b.xp
    sp = spacing(voxel_size, dna.ndim)
    if not nucleus_diameter_um > 0:
        raise ValueError(f"nucleus_diameter_um must be > 0 µm, got {nucleus_diameter_um}")
    img = as_float32(b, dna)
    empty = NucleiInstances(xp.zeros(img.shape, xp.int32), np.zeros(0, bool))
    if img.size == 0:
        return empty
    smooth = gaussian(b, img, [smooth_um / s for s in sp])
    thr = nuclear_threshold(b, smooth, threshold, sp, smooth_um / sp[-1])
    mask = b.to_host(smooth > thr)  # device->host: the nuclear mask (the watershed's)
    if not mask.any():
        return NucleiInstances(empty.labels, empty.touches_border, thr)
    labels, n_parts = _split_and_group(
        mask, sp, nucleus_diameter_um, seed_dynamics, fragment_fraction, fragment_merge_um,
        min_volume_fraction,
    )  # fmt: skip
    labels = b.asarray(labels)
    typical_voxels = _typical_volume(nucleus_diameter_um, dna.ndim) / float(np.prod(sp))
    return NucleiInstances(
        labels,
        touches_border(b, labels)[1:],
        thr,
        n_parts=n_parts,
        cut=touches_border(b, labels, lateral_only=False)[1:],
        flags=_flags(labels, b, typical_voxels),
    )


#: Haze test of :func:`above_haze`: a dim voxel farther than this from every bright core
#: (µm; z distances count a third) is not the blurred rim of a nucleus.
HAZE_FAR_UM = 2.0
#: ... and the field has haze when more than this share of its dim voxels are that far.
HAZE_SHARE = 0.4
#: Where a haze is found, the nuclear outline lies this share of the way from the haze to
#: the nuclear core: the middle of a blurred step (a perinuclear haze brighter than the
#: rest of the cytoplasm stays outside, as on the BPAE field).
HAZE_FRACTION = 0.5
#: Histogram bins of the per-object Otsu split.
_BINS = 64


def nuclear_threshold(
    b: Backend, smooth: Any, threshold: ThresholdLike, sp: tuple[float, ...], smooth_px: float
) -> float:
    """Threshold of a smoothed DNA stain: :func:`fg_threshold`, raised above a cytoplasmic
    haze (:func:`above_haze`) where the threshold is ``auto``.

    Where the haze covers more of the field than the background does (cells spread over
    most of a 2-D field), the histogram's mode is the haze, and the noise sigma taken
    below it spans the background too: the ``auto`` threshold then lies far above the
    haze, into the nuclei. The darker population below the mode, when it stands more than
    ``k`` of its own sigmas below it, is the background, and the haze test starts from
    there.
    """
    opt = as_threshold(threshold)
    thr = fg_threshold(b, smooth, opt)
    if not isinstance(opt, AutoThreshold):
        return thr
    start = thr
    level, sigma = background_level_noise(b, smooth)
    noise = _pixel_noise(b, smooth, smooth_px)
    if 0 < noise < sigma / 3:  # the sigma below the mode is not noise: two populations
        darker = smooth < level - opt.k * noise
        if int(darker.sum()) > 0.01 * smooth.size:
            low, low_sigma = background_level_noise(b, smooth, darker)
            start = min(thr, low + opt.k * max(low_sigma, noise))
    raised = above_haze(b, smooth, start, sp, fraction=HAZE_FRACTION)
    return raised if raised > start else thr


def above_haze(
    b: Backend,
    smooth: Any,
    thr: float,
    sp: tuple[float, ...],
    *,
    fraction: float = 0.3,
    far_um: float = HAZE_FAR_UM,
    share: float = HAZE_SHARE,
) -> float:
    """The nuclear threshold raised above a DNA stain's cytoplasmic haze, if the field has it.

    DAPI and Hoechst also stain the cytoplasm faintly (RNA, mitochondrial DNA, free dye;
    in widefield images the out-of-focus glow of the nuclei adds to it), often at a
    quarter of the nuclear level and over a far larger area. A threshold from the field's
    foreground (:func:`fg_threshold`) then falls below the haze and whole cells, or groups
    of nuclei with the glow between them, come out as "nuclei" (e.g. 4 nuclei on a 2-D
    BPAE field with one). The test: each object at ``thr`` is split in two by Otsu's
    method on its own intensities (its bright core and the rest); the blurred rim of a
    nucleus lies next to its core, haze does not. When more than ``share`` of the dim
    voxels lie farther than ``far_um`` from every core (z distances counted a third: the
    axial blur is wider), the threshold becomes ``haze + fraction * (core - haze)`` with
    ``haze`` and ``core`` the medians of those far voxels and of the cores. Otherwise
    ``thr`` is returned unchanged.

    The test runs on a grid of about 0.5 µm laterally (the image subsampled): it is a
    statistic of the field, not an outline.
    """
    xp = b.xp
    step = max(1, int(0.5 / max(sp[-1], 1e-6)))
    sub = smooth[(..., slice(None, None, step), slice(None, None, step))]
    sub_sp = (*sp[:-2], sp[-2] * step, sp[-1] * step)
    mask = sub > thr
    labels, n = b.ndi.label(mask)
    n = int(n)
    if n == 0:
        return thr
    # per-object histograms between thr and the object's maximum: one bincount
    lab_in = labels[mask]
    v = sub[mask]
    top = _object_maxima(b, sub, labels, lab_in, v, n)
    top = xp.concatenate([xp.asarray([thr + 1.0], xp.float32), top])
    width = xp.maximum(top[lab_in] - xp.float32(thr), xp.float32(1e-6))
    bins = xp.clip(((v - xp.float32(thr)) / width * _BINS).astype(xp.int64), 0, _BINS - 1)
    hist = b.to_host(xp.bincount(lab_in.astype(xp.int64) * _BINS + bins,
                                 minlength=(n + 1) * _BINS)).reshape(n + 1, _BINS)  # fmt: skip
    cut = _otsu_rows(hist.astype(np.float64))  # bin index of each object's split
    top_h = b.to_host(top).astype(np.float64)
    level = thr + (cut + 1) / _BINS * (top_h - thr)  # device->host above: (n+1) x 64 counts
    core = mask & (sub > b.asarray(level.astype(np.float32))[labels])
    if not bool(core.any()):
        return thr
    dim = mask & ~core
    scale = tuple(s / 3 if (len(sub_sp) == 3 and k == 0) else s for k, s in enumerate(sub_sp))
    dist = b.ndi.distance_transform_edt(~core, sampling=scale)
    far = dim & (dist > far_um)
    n_dim, n_far = int(dim.sum()), int(far.sum())
    if n_dim == 0 or n_far <= share * n_dim:
        return thr
    # the haze around the nuclei: a perinuclear haze brighter than the rest of the
    # cytoplasm (as on the BPAE field) sets where their outline lies
    near = far & (dist <= 2 * far_um)
    haze = float(b.to_host(xp.median(sub[near if bool(near.any()) else far])))  # device->host
    nuclear = float(b.to_host(xp.median(sub[core])))
    return max(thr, haze + fraction * (nuclear - haze))


def _object_maxima(b: Backend, image: Any, labels: Any, lab_in: Any, v: Any, n: int) -> Any:
    """float32 maximum of ``image`` over each object ``1..n`` of ``labels`` (every one
    present; ``lab_in``, ``v``: the labels and values of the objects' voxels).
    ``ndimage.maximum`` on the GPU; on the CPU one unbuffered pass over the voxels (the
    same maxima; scipy's sorts by label, ~10x slower on a field)."""
    xp = b.xp
    if b.is_gpu:
        return xp.asarray(b.ndi.maximum(image, labels, xp.arange(1, n + 1)), dtype=xp.float32)
    top = np.full(n, -np.inf, np.float32)
    np.maximum.at(top, lab_in - 1, v)
    return top


def _pixel_noise(b: Backend, smooth: Any, smooth_px: float) -> float:
    """Noise sigma of a smoothed image from the differences of lateral neighbours: their
    median absolute value is set by the flat regions (background, haze) whatever their
    levels, unlike a histogram's width. For white noise smoothed by a Gaussian of
    ``smooth_px``, neighbours correlate by ``exp(-1 / (4 smooth_px²))``."""
    xp = b.xp
    left = smooth[..., ::3, 0:-1:3]  # every 3rd row and pixel, and its right neighbour
    d = smooth[..., ::3, 1::3][..., : left.shape[-1]] - left
    mad = float(b.to_host(xp.median(xp.abs(d))))  # device->host: one value
    rho = math.exp(-1.0 / (4.0 * max(smooth_px, 1e-3) ** 2))
    return 1.4826 * mad / math.sqrt(max(2.0 * (1.0 - rho), 1e-12))


def _otsu_rows(hist: np.ndarray) -> np.ndarray:
    """Otsu's split of each row of a histogram: the last bin of the lower class (a bin
    index per row; rows with fewer than two filled bins split after their first)."""
    nb = hist.shape[1]
    centers = np.arange(nb, dtype=np.float64) + 0.5
    w0 = np.cumsum(hist, axis=1)
    m0 = np.cumsum(hist * centers, axis=1)
    total, mass = w0[:, -1:], m0[:, -1:]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (mass - m0) / w1) ** 2
    between = np.nan_to_num(between[:, :-1], nan=-1.0, posinf=-1.0, neginf=-1.0)
    return between.argmax(axis=1)


def _typical_volume(diameter: float, ndim: int) -> float:
    """Volume (µm³; area in µm² for 2-D) of a ball (disc) of ``diameter``."""
    return math.pi / 6 * diameter**3 if ndim == 3 else math.pi / 4 * diameter**2


def _split_and_group(
    mask: np.ndarray,
    sp: tuple[float, ...],
    diameter: float,
    dynamics: float,
    fragment_fraction: float,
    merge_um: float,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Host labels of the nuclei in ``mask`` and the pieces each is made of."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    full = np.ones((3,) * mask.ndim, bool)
    # holes of each plane (a nucleolus, a dim core): a 3-D fill would close the gap
    # between a donor's nucleus and the MSC nucleus under it
    lateral = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    st = (
        lateral
        if mask.ndim == 2
        else np.stack([np.zeros_like(lateral), lateral, np.zeros_like(lateral)])
    )
    mask = ndi.binary_fill_holes(mask, structure=st)
    dist = ndi.distance_transform_edt(mask, sampling=sp).astype(np.float32)
    radius = 0.5 * diameter
    tops, dome = _dome_tops(dist, mask, dynamics * radius, full)
    # the top of one nucleus' distance map can come out as pixels a few apart (a plateau
    # on a pixel grid): tops within 1 µm are one seed, and so are tops of one dome
    near = ellipsoid_footprint([max(0.5 / s, 1.0) for s in sp])
    seeds, _ = ndi.label(ndi.binary_dilation(tops, structure=near) & mask, structure=full)
    seeds = _join_on_domes(seeds, tops, dome)
    lab = watershed(-dist, markers=seeds, mask=mask).astype(np.int32)
    rest, n_rest = ndi.label(mask & (lab == 0), structure=full)
    if n_rest:
        lab = np.where(rest > 0, rest + lab.max(), lab).astype(np.int32)

    # fragments: small pieces within merge_um of each other are one nucleus
    dim = mask.ndim
    typical = _typical_volume(diameter, dim)
    unit = float(np.prod(sp))
    sizes = np.bincount(lab.ravel())
    small = sizes * unit < fragment_fraction * typical
    small[0] = False
    pieces = small[lab]
    n_big = int((~small[1:] & (sizes[1:] > 0)).sum())
    big_lut = np.zeros(sizes.size, np.int32)
    big_ids = np.flatnonzero(~small & (sizes > 0))
    big_ids = big_ids[big_ids > 0]
    big_lut[big_ids] = np.arange(1, n_big + 1, dtype=np.int32)
    out = big_lut[lab]
    n_parts = [1] * n_big
    if pieces.any():
        fp = ellipsoid_footprint([merge_um / 2 / s for s in sp])
        grown = ndi.binary_dilation(pieces, structure=fp)
        groups, n_groups = ndi.label(grown, structure=full)
        group_of = np.where(pieces, groups, 0)
        out = np.where(pieces, group_of + n_big, out).astype(np.int32)
        # pieces per group: the distinct small labels each group holds
        pairs = np.unique(np.stack([group_of[pieces], lab[pieces]]), axis=1)
        n_parts += np.bincount(pairs[0], minlength=n_groups + 1)[1:].tolist()
    n_parts = np.asarray(n_parts, np.int64)
    # drop debris, renumber 1..n
    sizes = np.bincount(out.ravel(), minlength=n_parts.size + 1)
    keep = sizes * unit >= min_fraction * typical
    keep[0] = False
    lut = np.cumsum(keep).astype(np.int32) * keep
    return lut[out], n_parts[keep[1:]]


def _h_maxima_by_component(dist: np.ndarray, mask: np.ndarray, h: float, full) -> np.ndarray:
    """``h_maxima(dist, h) & mask``, computed in the box of each component of ``mask``
    (:func:`_dome_tops`)."""
    return _dome_tops(dist, mask, h, full)[0]


def _dome_tops(dist: np.ndarray, mask: np.ndarray, h: float, full) -> tuple[np.ndarray, np.ndarray]:
    """The tops of the h-maxima of ``dist`` in ``mask`` (scikit-image's ``h_maxima``: the
    voxels ``h`` above the map reconstructed from ``dist - h``), and the dome each lies on
    (int labels at the tops, 0 elsewhere): the regional-maximum plateau of the
    reconstruction holding it. Two tops of one dome are one maximum: their saddle lies
    less than ``h`` below them (on a long nucleus two tied tops of its distance map,
    a few voxels apart), and scikit-image's tops keep them apart.

    Computed in the box of each component of ``mask``: the distance map is 0 between
    components, so no reconstruction crosses from one to another, and each box gives what
    the whole volume gives without sorting the background (over the whole volume this
    was half of the stage's time). A component whose map never rises ``h`` above 0 has no
    h-maximum in the whole volume either, and is skipped.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import reconstruction

    tops = np.zeros(mask.shape, bool)
    dome = np.zeros(mask.shape, np.int32)
    comp, _ = ndi.label(mask, structure=full)
    n_domes = 0
    for i, box in enumerate(ndi.find_objects(comp), start=1):
        if box is None:
            continue
        own = comp[box] == i
        d = np.where(own, dist[box], 0).astype(np.float64)
        if d.max() < h:
            continue
        pad = np.pad(d, 1)  # the zero border the whole volume has around the component
        inner = tuple(slice(1, -1) for _ in range(d.ndim))
        # as skimage.morphology.h_maxima (0.26) computes it, the reconstruction kept
        shifted = pad - h - 2 * np.finfo(pad.dtype).resolution * np.abs(pad)
        rec = reconstruction(shifted, pad, method="dilation", footprint=full)
        top = ((pad - rec) >= h)[inner] & own
        tops[box] |= top
        if not top.any():
            continue
        # plateaus of the reconstruction: neighbours there are never higher, so two
        # adjacent voxels of one are equal
        flat = rec >= ndi.maximum_filter(rec, footprint=full, mode="nearest")
        plateaus, n = ndi.label(flat, structure=full)
        at = plateaus[inner][top]
        dome[box][top] = at + n_domes
        n_domes += n
    return tops, dome


def _join_on_domes(seeds: np.ndarray, tops: np.ndarray, dome: np.ndarray) -> np.ndarray:
    """``seeds`` (labels) renumbered so that the seeds holding tops of one dome are one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(seeds.max(initial=0))
    if n < 2:
        return seeds
    pairs = np.unique(np.stack([seeds[tops], dome[tops]]), axis=1)
    pairs = pairs[:, (pairs[0] > 0) & (pairs[1] > 0)]
    m = int(dome.max(initial=0))
    graph = coo_matrix((np.ones(pairs.shape[1]), (pairs[0], n + pairs[1])),
                       shape=(n + m + 1, n + m + 1))  # fmt: skip
    _, comp = connected_components(graph, directed=False)
    first = np.full(comp.max() + 1, 0, np.int64)
    order = np.arange(n, 0, -1)  # each group takes its lowest seed's number
    first[comp[order]] = order
    lut = np.zeros(n + 1, np.int32)
    lut[1:] = first[comp[1 : n + 1]]
    if (lut[1:] == np.arange(1, n + 1)).all():
        return seeds
    _, dense = np.unique(lut, return_inverse=True)
    return dense.reshape(lut.shape).astype(np.int32)[seeds]


def _flags(labels: Any, b: Backend, typical_voxels: float) -> tuple[str, ...]:
    """``nuclei_merged`` when one nucleus holds more than 10 typical nuclear volumes."""
    if labels.size == 0 or not int(labels.max()):
        return ()
    sizes = b.to_host(b.xp.bincount(labels.reshape(-1)))[1:]  # device->host: n sizes
    return ("nuclei_merged",) if sizes.max() > 10 * typical_voxels else ()


# --------------------------------------------------------------------------- cells


def assign_nuclei(
    nuclei: Any,
    *,
    msc_labels: Any = None,
    jurkat_labels: Any = None,
    min_share: float = 0.5,
    spacing_um: tuple[float, ...] | None = None,
) -> pd.DataFrame:
    """The cell each nucleus lies in.

    A nucleus belongs to the donor cell (``jurkat``) holding at least ``min_share`` of its
    voxels, else to the MSC holding that share of its voxels outside donor bodies, else
    to none: donor cells first, because in a 2-D field the projection of a donor resting
    on an MSC lies inside that MSC too; and a donor lying over part of an MSC nucleus (a
    projection takes those pixels from the MSC) does not make the MSC lose its nucleus.
    A nucleus in no cell (a piece of a fragmented MSC nucleus in the dim rim between a
    donor and its MSC, which neither mask holds) belongs to the MSC holding ``min_share``
    of its surroundings within :data:`SURROUND_UM` (``spacing_um``: the voxel size, µm;
    without it, that step is skipped).

    Returns
    -------
    DataFrame
        One row per nucleus: ``nucleus_id, cell_kind`` (``"jurkat"``, ``"msc"`` or
        ``""``), ``cell_id`` (label in that kind's image, 0 for none), ``share``.
    """
    b = Backend.of(nuclei)
    n = int(nuclei.max()) if nuclei.size else 0
    kind = np.full(n, "", dtype=object)
    cell = np.zeros(n, np.int32)
    share = np.zeros(n, np.float64)
    donor = None if jurkat_labels is None else b.asarray(jurkat_labels) > 0
    for name, labels in (("msc", msc_labels), ("jurkat", jurkat_labels)):
        if labels is None or n == 0:
            continue
        objects = nuclei if name == "jurkat" or donor is None else nuclei * ~donor
        best, frac = majority_label(b, objects, b.asarray(labels), n)
        take = (frac >= min_share) & ((kind == "") | (name == "jurkat"))
        kind[take], cell[take], share[take] = name, best[take], frac[take]
    if msc_labels is not None and (kind == "").any():
        _assign_by_surroundings(b, nuclei, b.asarray(msc_labels), kind, cell, share,
                                min_share, spacing_um)  # fmt: skip
    return pd.DataFrame(
        {"nucleus_id": np.arange(1, n + 1, dtype=np.int32), "cell_kind": kind,
         "cell_id": cell, "share": share}
    )  # fmt: skip


def split_at_donors(
    nuclei: NucleiInstances,
    jurkat_labels: Any,
    *,
    min_share: float = 0.5,
    min_piece: float = 0.35,
) -> NucleiInstances:
    """Nuclei cut along the outline of a donor body that holds part of them and no
    nucleus of its own.

    In a projection a donor's nucleus beside an MSC nucleus merges with it into one blob
    whose distance map has no second maximum (a round nucleus against the end of a long
    one): the donor is left without a nucleus, the MSC's has grown by the donor's. Where a
    donor body holds at least ``min_piece`` x the field's typical donor nucleus of a
    nucleus, but less than ``min_share`` of it, and no nucleus of its own (none with
    ``min_share`` inside it), and the part outside is as large, the part inside becomes a
    nucleus of its own. The typical donor nucleus is that of the nuclei the bodies hold
    (:func:`typical_size`); a field with none is left as it is.
    """
    b = Backend.of(nuclei.labels)
    xp = b.xp
    n = nuclei.n
    if n == 0 or jurkat_labels is None:
        return nuclei
    donor = b.asarray(jurkat_labels)
    if not int(donor.max()):
        return nuclei
    best, frac = majority_label(b, nuclei.labels, donor, n)
    sizes = b.to_host(xp.bincount(nuclei.labels.reshape(-1), minlength=n + 1))[1:]
    held = frac >= min_share
    if not held.any():
        return nuclei
    typical = typical_size(sizes[held & (nuclei.n_parts <= 1)])
    inside = sizes * frac
    owned = np.isin(best, best[held])
    cut = (~held & (best > 0) & ~owned & (inside >= min_piece * typical)
           & (sizes - inside >= min_piece * typical))  # fmt: skip
    if not cut.any():
        return nuclei
    ids = np.flatnonzero(cut)
    new_id = np.zeros(n + 1, np.int32)
    new_id[ids + 1] = n + 1 + np.arange(ids.size, dtype=np.int32)
    own_donor = np.zeros(n + 1, np.int32)
    own_donor[ids + 1] = best[ids]
    lab = nuclei.labels
    piece = (b.asarray(own_donor)[lab] == donor) & (donor > 0)
    labels = xp.where(piece, b.asarray(new_id)[lab], lab).astype(xp.int32)
    n_parts = np.concatenate([nuclei.n_parts, np.ones(ids.size, np.int64)])
    return NucleiInstances(
        labels,
        touches_border(b, labels)[1:],
        nuclei.threshold,
        n_parts=n_parts,
        cut=touches_border(b, labels, lateral_only=False)[1:],
        flags=nuclei.flags,
    )


#: The surroundings of a nucleus in no cell that :func:`assign_nuclei` looks at, µm.
SURROUND_UM = 1.5


def _assign_by_surroundings(b, nuclei, msc, kind, cell, share, min_share, spacing_um) -> None:
    """:func:`assign_nuclei`'s last step, in place: the unassigned nuclei whose
    surroundings (a shell ``SURROUND_UM`` thick) lie mostly in one MSC. Each in its own
    box: a few nuclei, not a dilation of the whole field."""
    if spacing_um is None:
        return
    from scipy import ndimage as ndi

    fp = ellipsoid_footprint([SURROUND_UM / s for s in spacing_um])
    reach = [k // 2 for k in fp.shape]
    host = b.to_host(nuclei)  # device->host: the nuclei
    boxes = ndi.find_objects(host)
    for i in np.flatnonzero(kind == ""):
        if i >= len(boxes) or boxes[i] is None:
            continue
        box = tuple(slice(max(sl.start - r, 0), min(sl.stop + r, n))
                    for sl, r, n in zip(boxes[i], reach, host.shape, strict=True))  # fmt: skip
        here = host[box]
        shell = ndi.binary_dilation(here == i + 1, structure=fp) & (here == 0)
        under = b.to_host(msc[box])[shell]  # device->host: one box
        if not under.size:
            continue
        counts = np.bincount(under.astype(np.int64).ravel())
        best = int(np.argmax(counts[1:])) + 1 if counts.size > 1 else 0
        if best and counts[best] / under.size >= min_share:
            kind[i], cell[i], share[i] = "msc", best, 0.0


def nuclei_seeds(nuclei: Any, assignment: pd.DataFrame, kind: str) -> Any:
    """Lateral seed labels (the nuclei of ``kind`` projected over z, one label each, in
    nucleus order) for :func:`segment_msc` / :func:`segment_jurkat`'s ``seeds``."""
    b = Backend.of(nuclei)
    n = len(assignment)
    take = np.zeros(n + 1, bool)
    take[1:] = assignment["cell_kind"].to_numpy() == kind
    lut = (np.cumsum(take) * take).astype(np.int32)
    own = b.asarray(lut)[nuclei]
    return own.max(axis=0) if own.ndim == 3 else own


def group_fragments(
    nuclei: NucleiInstances,
    cells: pd.DataFrame,
    *,
    fragment_fraction: float = 0.35,
    spacing_um: tuple[float, ...] | None = None,
) -> tuple[NucleiInstances, pd.DataFrame]:
    """The small pieces that share a cell made one (fragmented) nucleus.

    The pieces of a fragmented MSC nucleus lie several µm apart, too far to be bridged by
    distance alone; what they share is their cell. Within each cell of ``cells``
    (:func:`assign_nuclei`), the nuclei smaller than ``fragment_fraction`` x the typical
    one-piece nucleus of that kind in the field (:func:`typical_size`; of all kinds
    where the field has none of that kind) become one nucleus when there are two or more
    of them; one that touches a whole nucleus of its cell (a piece the split cut off at a
    neck) rejoins it as one piece; a whole nucleus stays itself, except that two whole
    MSC nuclei of one MSC that touch are one nucleus the split cut in two. With
    ``spacing_um`` (the voxel size, µm), the small MSC pieces whose centres lie within a
    typical MSC nucleus's diameter are one nucleus whatever cell holds them. The typical
    MSC nucleus is that of the MSC nuclei larger than the field's typical donor nucleus
    (a fragmented one's pieces are smaller); a lone piece over an MSC below
    :data:`MSC_SPECK` of it (haze, debris) is left in no cell: it seeds no MSC.

    Returns
    -------
    NucleiInstances, DataFrame
        Renumbered nuclei (``n_parts`` summed over the pieces) and their cells.
    """
    from scipy import ndimage as ndi
    from scipy.sparse.csgraph import connected_components

    b = Backend.of(nuclei.labels)
    n = nuclei.n
    if n < 2:
        return nuclei, cells
    sizes = b.to_host(b.xp.bincount(nuclei.labels.reshape(-1), minlength=n + 1))[1:]
    kind = cells["cell_kind"].to_numpy(object)
    cell = cells["cell_id"].to_numpy(np.int64)
    whole = nuclei.n_parts <= 1
    ref = np.full(n, typical_size(sizes[whole] if whole.any() else sizes))
    donors = (kind == "jurkat") & whole
    for k in set(kind):
        own = (kind == k) & whole
        if k == "msc" and donors.any():
            # a field holds a few MSCs, whose nuclei are 3-5x a donor's: the pieces of a
            # fragmented one, each smaller than a donor's nucleus, would set the size
            big = own & (sizes >= typical_size(sizes[donors]))
            own = big if big.any() else own
        if own.any():
            ref[kind == k] = typical_size(sizes[own])
    small = (sizes < fragment_fraction * ref) & (kind != "")
    target = np.arange(1, n + 1)
    # a small piece touching a whole nucleus of its cell is a piece the split cut off (a
    # neck in a textured nucleus): it rejoins it, one piece as before the split
    joined = np.zeros(n, bool)
    touching = _touching(b.to_host(nuclei.labels))  # device->host: the nuclei
    for s_id, w_id in touching:
        si, wi = s_id - 1, w_id - 1
        if small[si] and not small[wi] and kind[si] == kind[wi] and cell[si] == cell[wi]:
            target[si], joined[si] = w_id, True
    # two whole nuclei of one MSC that touch are one nucleus the split cut in two (an MSC
    # nucleus bent around a donor cell that displaces it: two distance maxima); the
    # nuclei of two MSCs lie apart, each under its own dome
    for a_id, c_id in touching:
        ai, ci = a_id - 1, c_id - 1
        if (a_id < c_id and kind[ai] == kind[ci] == "msc" and cell[ai] == cell[ci]
                and whole[ai] and whole[ci] and not small[ai] and not small[ci]):  # fmt: skip
            old, new = max(target[ai], target[ci]), min(target[ai], target[ci])
            target[target == old] = new
            joined[ci if c_id == old else ai] = True
    rest = small & ~joined
    for k, c in {(k, c) for k, c in zip(kind[rest], cell[rest], strict=True)}:
        group = np.flatnonzero(rest & (kind == k) & (cell == c))
        if group.size >= 2:
            target[group] = group[0] + 1
    # the pieces of one MSC nucleus can fall into two of the cytoplasm's MSCs (crowded
    # cells it has not split where they meet): MSC pieces closer than a typical MSC
    # nucleus's diameter are one nucleus
    pieces = np.flatnonzero(rest & (kind == "msc"))
    if pieces.size >= 2 and spacing_um is not None:
        host = b.to_host(nuclei.labels)  # device->host: the nuclei
        centre = np.array(ndi.center_of_mass(host > 0, host, pieces + 1)) * np.array(spacing_um)
        reach = 2.0 * (ref[pieces[0]] * float(np.prod(spacing_um)) / _unit_volume(host.ndim)) ** (
            1.0 / host.ndim
        )
        near = np.linalg.norm(centre[:, None] - centre[None], axis=-1) <= reach
        _, comp = connected_components(near, directed=False)
        for g in np.unique(comp):
            members = pieces[comp == g]
            if members.size >= 2:
                first = target[members].min()
                target[np.isin(target, target[members])] = first
    # a lone speck over an MSC (below MSC_SPECK x its typical nucleus, grouped with no
    # other piece) is a grain of haze or debris, not an MSC's nucleus: it seeds no cell
    lone = np.bincount(target, minlength=n + 1)[target] == 1
    speck = (kind == "msc") & (sizes < MSC_SPECK * ref) & lone & ~joined
    if speck.any():
        cells = cells.copy()
        cells.loc[speck, "cell_kind"], cells.loc[speck, "cell_id"] = "", 0
    if (target == np.arange(1, n + 1)).all():
        return nuclei, cells
    new_ids, inverse = np.unique(target, return_inverse=True)
    lut = np.zeros(n + 1, np.int32)
    lut[1:] = inverse + 1
    m = new_ids.size
    parts = np.where(joined, 0, nuclei.n_parts)
    n_parts = np.bincount(inverse, weights=parts, minlength=m).astype(np.int64)
    cut = np.bincount(inverse, weights=nuclei.cut, minlength=m) > 0
    labels = b.asarray(lut)[nuclei.labels]
    first = cells.iloc[new_ids - 1].reset_index(drop=True)
    first["nucleus_id"] = np.arange(1, m + 1, dtype=np.int32)
    border = np.bincount(inverse, weights=nuclei.touches_border, minlength=m) > 0
    out = NucleiInstances(labels, border, nuclei.threshold, n_parts=n_parts, cut=cut,
                          flags=nuclei.flags)  # fmt: skip
    return out, first


#: :func:`group_fragments`: a lone piece over an MSC below this share of the field's
#: typical MSC nucleus (d ~2 µm of a 15 µm one in 2-D; ~3 µm in 3-D) seeds no MSC.
MSC_SPECK = 0.02


def _unit_volume(ndim: int) -> float:
    """Volume of a ball (area of a disc) of radius 1."""
    return 4.0 / 3.0 * math.pi if ndim == 3 else math.pi


def typical_size(sizes: Any) -> float:
    """The size of a field's typical nucleus: the median of the upper half of ``sizes``
    (about the 75th percentile), which stays a healthy nucleus' size while up to half of
    them are small (condensed nuclei, fragments: a field under chemotherapy), where the
    median would not; and, among the few MSC nuclei of a field, the pieces of one
    fragmented nucleus do not pull it down to their own size."""
    sizes = np.asarray(sizes, float)
    sizes = sizes[np.isfinite(sizes)]
    if not sizes.size:
        return float("nan")
    return float(np.median(sizes[sizes >= np.median(sizes)]))


def _touching(labels: np.ndarray) -> list[tuple[int, int]]:
    """The pairs of distinct labels that share a face (each pair both ways)."""
    pairs = []
    for ax in range(labels.ndim):
        a = np.take(labels, np.arange(labels.shape[ax] - 1), axis=ax).ravel()
        c = np.take(labels, np.arange(1, labels.shape[ax]), axis=ax).ravel()
        sel = (a != c) & (a > 0) & (c > 0)
        pairs.append(np.stack([a[sel], c[sel]], axis=1))
    both = np.concatenate(pairs) if pairs else np.zeros((0, 2), labels.dtype)
    both = np.unique(np.concatenate([both, both[:, ::-1]]), axis=0)
    return [(int(x), int(y)) for x, y in both]


#: :func:`call_nuclear_state`: a donor's one-piece nucleus below this x its cell's
#: diameter, and :data:`CONDENSED_BRIGHTNESS` x as bright as the field's donor nuclei of
#: normal size (at least this x their cell), is condensed.
CONDENSED_BRIGHT_CELL_RATIO = 0.62
#: ... its mean brightness over the median of theirs, both above the field's background
#: level (the camera offset and the background light taken off: ``background`` of
#: :func:`call_nuclear_state`).
CONDENSED_BRIGHTNESS = 1.3


def nuclear_background(dna: Any) -> float:
    """The background level of a raw nuclear channel, in its own units: the camera offset
    and the background light, which every nucleus's raw mean holds too.

    The mode of the channel's histogram (:func:`hcsmito.stages._util.background_level_noise`,
    on at most a million voxels taken at a stride): the nuclei cover a small share of a
    field, so the most common value is the background. Where a cytoplasmic stain (DAPI's
    haze) covers most of a 2-D field, the mode is the haze's level instead, nearer the
    nuclei's, and ratios taken above it come out larger.

    Parameters
    ----------
    dna : (M, N) or (P, M, N) ndarray
        The nuclear channel as acquired (any numeric dtype), NumPy or CuPy.
    """
    check_image(dna, "nuclei")
    return float(background_level_noise(Backend.of(dna), dna)[0])


def _bright_and_small(table: pd.DataFrame, own: pd.Series, background: float) -> pd.Series:
    """Donor nuclei below :data:`CONDENSED_BRIGHT_CELL_RATIO` x their cell's diameter and
    :data:`CONDENSED_BRIGHTNESS` x as bright as the field's donor nuclei of normal size,
    the means taken above ``background`` (False where the field has none, or where their
    median is not above it)."""
    normal = (own >= CONDENSED_BRIGHT_CELL_RATIO) & (table["n_parts"] <= 1)
    if not normal.any():
        return pd.Series(False, index=table.index)
    above = table["intensity_mean"] - background
    ref = float(above[normal].median())
    if not ref > 0:
        return pd.Series(False, index=table.index)
    return (own < CONDENSED_BRIGHT_CELL_RATIO) & (above >= CONDENSED_BRIGHTNESS * ref)


def call_nuclear_state(
    table: pd.DataFrame,
    *,
    ndim: int = 3,
    condensed_diameter: float = 0.7,
    condensed_cell_ratio: float = 0.54,
    background: float = 0.0,
) -> pd.DataFrame:
    """The stain-free state of each nucleus, from its pieces and its size.

    ``fragmented``: two or more pieces (``n_parts``). ``condensed``: one piece, not cut by
    the stack, whose equivalent diameter is below ``condensed_diameter`` x that of the
    typical one-piece nucleus of the same cell kind in the field (:func:`typical_size`
    of the volumes, areas in 2-D; of all kinds where the field has none of that kind): chromatin
    packed into a small ball. A diameter, not a volume, so that one cut serves 2-D and
    3-D fields: on generated fields condensed nuclei measure 0.57-0.68 of the typical
    diameter in 2-D and 3-D, normal ones 0.77 and up (donor cells' sizes vary).

    Where the table has ``diameter_to_cell`` (a donor's nucleus: its equivalent diameter
    over its cell's), that decides instead, below ``condensed_cell_ratio``: it does not
    depend on the rest of the field, whose typical nucleus is a condensed one where most
    donors are apoptotic (chemotherapy without protection). On generated fields donors'
    nuclei measure 0.60-0.76 of their cell, condensed ones 0.40-0.48, fragmented ones
    (their pieces joined by the blur) 0.32-0.42. A condensed nucleus is also bright
    (hyperchromatic: its chromatin packed), and the brighter a nucleus the lower the
    field's threshold lies on its blurred edge, so the brightest condensed ones measure
    larger than they are (0.55-0.57 of their cell on 2-D generated fields): a donor's
    nucleus below :data:`CONDENSED_BRIGHT_CELL_RATIO` x its cell and
    :data:`CONDENSED_BRIGHTNESS` x as bright (mean, above ``background``) as the field's
    donor nuclei of normal size is condensed too (on 2-D generated fields under
    chemotherapy condensed nuclei measure 0.84-2.0 x those, median 1.34; normal ones
    0.49-1.6, and at most 1.12 among those below 0.62 of their cell). The ratio is taken
    above the background because the raw means hold the camera offset: over an offset of
    1000 counts a condensed nucleus 1.66 x as bright above it measures 1.10 x raw. A
    fragmented nucleus whose pieces the blur joins is small too, and called condensed.
    ``apoptotic``: either.

    The table needs ``n_parts, cell_kind, volume_um3, intensity_mean`` and ``cut``;
    ``volume_ratio``, ``intensity_ratio`` (the raw mean over the median of the raw means of
    the kind's one-piece nuclei), ``state`` and ``apoptotic`` are added. ``background``:
    the nuclear channel's background level in the units of ``intensity_mean`` (camera
    offset and background light: :func:`nuclear_background` of the raw channel); 0 where
    the means are of a background-subtracted channel.
    """
    out = table.copy()
    whole = out["n_parts"] <= 1
    ref_v = pd.Series(np.nan, index=out.index)
    ref_i = pd.Series(np.nan, index=out.index)
    all_v = typical_size(out.loc[whole, "volume_um3"])
    all_i = out.loc[whole, "intensity_mean"].median()
    for _kind, rows in out.groupby("cell_kind").groups.items():
        ref = out.loc[rows][whole.loc[rows]]
        enough = len(ref) >= 1  # a field holds a few MSCs, whose nuclei are 3-5x a donor's
        ref_v[rows] = typical_size(ref["volume_um3"]) if enough else all_v
        ref_i[rows] = ref["intensity_mean"].median() if enough else all_i
    out["volume_ratio"] = out["volume_um3"] / ref_v
    out["intensity_ratio"] = out["intensity_mean"] / ref_i
    diameter = out["volume_ratio"] ** (1.0 / ndim)
    small = diameter < condensed_diameter
    if "diameter_to_cell" in out:  # a donor's nucleus: against its own cell
        own = out["diameter_to_cell"].astype(float)
        bright = _bright_and_small(out, own, background)
        small = small.where(own.isna(), (own < condensed_cell_ratio) | bright)
    condensed = small & ~out["cut"].astype(bool)
    state = np.where(~whole, "fragmented", np.where(condensed.fillna(False), "condensed", "normal"))
    out["state"] = pd.Series(state, index=out.index, dtype="string")
    out["apoptotic"] = out["state"] != "normal"
    return out
