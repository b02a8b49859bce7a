"""Tunneling nanotubes of one field: :func:`detect_tnts` (see :mod:`hcsmito.stages.tnt`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.backend import Backend
from hcsmito.stages._util import (
    SpotResponse,
    VoxelSize,
    bincount,
    enhance_spots,
    robust_sigma,
    spacing,
)
from hcsmito.stages.cell_surface import tighten_labels
from hcsmito.stages.glass import Glass, estimate_glass, resolve_glass
from hcsmito.stages.tnt._geometry import (
    bbox,
    far_from_shifts,
    feature_distance,
    inside_stack,
    near_features,
    nearest_features,
    path_length,
    skeleton_graph,
    surface_point,
)
from hcsmito.stages.tnt.bridges import find_bridges
from hcsmito.stages.tnt.tubes import tube_pieces

__all__ = ["TNT_COLUMNS", "TNTs", "detect_tnts"]


TNT_COLUMNS = [
    "tnt_id",
    "length_um",
    "from_id",
    "from_kind",
    "to_id",
    "to_kind",
    "thickness_um",
    "height_um",
    "carries_mito",
    "z0_um",
    "y0_um",
    "x0_um",
    "z1_um",
    "y1_um",
    "x1_um",
]


@dataclass(frozen=True)
class TNTs:
    """Nanotubes of one field.

    Attributes
    ----------
    labels : (M, N[, P]) int32 ndarray
        0 = background, TNT ``i`` = the free (outside-cell) voxels of its tube; same shape
        and backend as the actin channel.
    table : pandas.DataFrame
        One row per TNT: ``tnt_id, length_um, from_id, from_kind ('msc'|'jurkat'), to_id,
        to_kind, thickness_um, height_um, carries_mito, z0_um, y0_um, x0_um, z1_um, y1_um,
        x1_um`` (endpoints where the tube leaves each cell, µm as ``index * voxel size``;
        ``z*_um`` and ``height_um`` NaN in 2-D; ``carries_mito`` is a nullable boolean, NA
        when neither foci labels nor the mito channel were given). ``from`` is the cell of
        the lower combined id (MSCs before Jurkats).
    glass_z_um : float
        Glass height used for heights, at the field centre (µm; NaN in 2-D or unknown).
    threshold : float
        Tubeness threshold (core of the hysteresis pair).
    glass : Glass or None
        The glass plane (tilt, source, plausibility: :mod:`hcsmito.stages.glass`).
    flags : tuple of str
        QC codes (``glass_implausible`` when the glass could not be trusted).
    """

    labels: Any
    table: pd.DataFrame
    glass_z_um: float = float("nan")
    threshold: float = float("nan")
    glass: Glass | None = None
    flags: tuple[str, ...] = ()

    @property
    def glass_source(self) -> str:
        """Where the glass came from (``gfp_edge``, ``actin_rise``, ``mito_rise``,
        ``given``, ``plate``; ``none`` when there is none)."""
        return "none" if self.glass is None else self.glass.source

    @property
    def n(self) -> int:
        """Number of TNTs."""
        return len(self.table)


def _empty_table() -> pd.DataFrame:
    t = pd.DataFrame({c: [] for c in TNT_COLUMNS})
    return t.astype(
        {
            "tnt_id": np.int32,
            "from_id": np.int32,
            "to_id": np.int32,
            "from_kind": object,
            "to_kind": object,
            "carries_mito": "boolean",
        }
    )


# -- tubeness -----------------------------------------------------------------------------


def detect_tnts(
    actin: Any,
    *,
    voxel_size: VoxelSize,
    msc_labels: Any,
    jurkat_labels: Any,
    foci_labels: Any = None,
    mito: Any = None,
    tube_radius_um: tuple[float, ...] = (0.1, 0.2, 0.35),
    psf_sigma_um: tuple[float, float] | None = None,
    threshold_k: float = 7.0,
    threshold_low_k: float = 2.5,
    contact_um: float = 1.0,
    min_length_um: float = 2.0,
    min_height_um: float = 0.5,
    min_clearance_um: float = 1.0,
    max_pass_um: float = 3.0,
    max_steepness: float = 2.0,
    glass_z_um: float | Glass | None = None,
    glass_channels: Mapping[str, Any] | None = None,
    glass_reference_um: float | None = None,
    glass_tolerance_um: float = 1.5,
    mito_tolerance_um: float = 0.6,
    mito_threshold_k: float = 6.0,
    mito_diameter_um: float = 0.6,
    jurkat_halo_um: float = 1.0,
    msc_signal: Any = None,
    tighten_cells: bool = True,
    mito_spots: SpotResponse | Callable[[], SpotResponse | None] | None = None,
    threshold_sample: int | None = 32,
) -> TNTs:
    """Tunneling nanotubes of one field, with the cells they bridge and their cargo.

    Parameters
    ----------
    actin : (M, N) or (P, M, N) ndarray
        Phalloidin (F-actin) channel of one field, NumPy or CuPy.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    msc_labels, jurkat_labels : int ndarray of ``actin``'s shape
        Cell instances (0 = background); ids are reported as ``from_id`` / ``to_id``.
    foci_labels : int ndarray of ``actin``'s shape, optional
        Mitochondria foci; one within ``mito_tolerance_um`` of the path marks cargo.
    mito : ndarray of ``actin``'s shape, optional
        Mitochondria channel: a spot on the path marks cargo (see ``mito_threshold_k``).
        Without ``foci_labels`` and ``mito``, ``carries_mito`` is NA.
    tube_radius_um : tuple of float, µm
        Tube radii the enhancement is tuned to (default 0.1, 0.2, 0.35 µm).
    psf_sigma_um : (sigma_z, sigma_xy), µm, optional
        Gaussian PSF of the actin channel (default (0.5, 0.15)).
    threshold_k, threshold_low_k : float
        Hysteresis thresholds on the tubeness, in robust noise sigmas (defaults 7 and 2.5).
    threshold_sample : int or None
        The thresholds' median and noise come from every ``threshold_sample``-th voxel
        (default 32), and the tubeness is computed only where a tube can be and on the
        pieces grown from there (:func:`hcsmito.stages.tnt.tubes.tube_pieces`); None:
        over the whole field (the reference, several times slower).
    contact_um : float, µm
        Largest gap between a path end and the cell it attaches to (default 1 µm).
    min_length_um : float, µm
        Shortest TNT, cell surface to cell surface (default 2 µm: segmented cells, a little
        larger than the true ones, shorten the free part by 1-2 µm).
    min_height_um : float, µm
        Lowest median height of the path above the glass (default 0.5 µm): excludes the
        basal stress fibres. Not applied in 2-D.
    min_clearance_um : float, µm
        The path must get this far from every cell somewhere (default 1 µm): excludes
        cortex running along a cell outline.
    max_pass_um : float, µm
        A tube may pass within ``contact_um`` of a third cell (over a thin MSC edge) for at
        most this skeleton length without being cut there (default 3 µm).
    max_steepness : float
        Largest rise of a TNT per unit of lateral run, end to end (default 2: 63°).
        Nanotubes run level or slope gently above the substrate; a bridge standing nearly
        upright between an MSC and a cell resting on it is that cell's cortex. Not
        applied in 2-D.
    glass_z_um : float (µm) or Glass, optional
        Height of the glass (``index * dz``; source ``given``), or a plane already found;
        default: estimated with :func:`hcsmito.stages.glass.estimate_glass` from
        ``glass_channels``. The height rule uses the plane's height under each path voxel
        (a tilted plate).
    glass_channels : mapping of role -> ndarray, optional
        Raw channels by role (``msc`` GFP, ``actin``, ``mito``) for the glass estimate
        (default: ``actin``, and ``mito`` when given).
    glass_reference_um : float, µm, optional
        The plate's glass height: a field whose own estimate is implausible or further than
        ``glass_tolerance_um`` from it uses it instead (source ``plate``, flagged
        ``glass_implausible``).
    glass_tolerance_um : float, µm
        Largest distance of a field's glass from the plate's reference (default 1.5 µm).
    mito_tolerance_um : float, µm
        Distance from the path within which a focus counts as cargo (default 0.6 µm).
    mito_threshold_k : float
        ``mito`` spot response threshold in robust noise sigmas (default 6).
    mito_diameter_um : float, µm
        Spot size for the ``mito`` response (default 0.6 µm).
    msc_signal : ndarray of ``actin``'s shape, optional
        The GFP image the MSCs were segmented from (see ``tighten_cells``).
    tighten_cells : bool
        Measure free space against cell masks cut back to their own signal (default
        True): MSC labels where ``msc_signal``, Jurkat labels where ``mito`` stays bright
        (:func:`hcsmito.stages.cell_surface.tighten_labels`). Segmented masks reach past
        the true cells and close the gap a short tube crosses. Without the signal, a
        cell's mask is used as it is.
    jurkat_halo_um : float, µm
        Path voxels this close to a Jurkat body are not searched for cargo (default 1 µm).
    mito_spots : SpotResponse, optional
        A spot response of ``mito`` computed before (the foci stage's ``Foci.spots``): the
        cargo rule reads it instead of computing its own when it was made from this
        ``mito`` with ``mito_diameter_um`` and ``psf_sigma_um`` (and a DoG ratio of 3).
        Or a callable that hands it over (called once, e.g. a list's ``pop``): the
        stage then holds the only reference, and frees the response once the cargo rule
        has read what it needs from it (the spots above its threshold, at the start).
    Returns
    -------
    TNTs
        ``labels`` and ``table`` (see :class:`TNTs`), the glass and its QC ``flags``; 2-D
        fields get ``height_um`` NaN and no height rule. Without a usable glass (none found,
        no reference) the height rule is not applied and the result is flagged.
    """
    if actin.ndim not in (2, 3):
        raise ValueError(
            f"actin must be one channel, 2-D (Y, X) or 3-D (Z, Y, X); got shape {actin.shape}: "
            "select the channel first (e.g. image[c])"
        )
    for name, arr in (
        ("msc_labels", msc_labels),
        ("jurkat_labels", jurkat_labels),
        ("foci_labels", foci_labels),
        ("mito", mito),
    ):
        if arr is not None and tuple(arr.shape) != tuple(actin.shape):
            raise ValueError(
                f"{name} has shape {tuple(arr.shape)}, actin {tuple(actin.shape)}: "
                "pass the arrays of the same field"
            )
    if not (min_length_um >= 0 and contact_um >= 0 and min_clearance_um >= 0):
        raise ValueError("min_length_um, contact_um and min_clearance_um must be >= 0 µm")
    b = Backend.of(actin)
    xp = b.xp
    nd = actin.ndim
    sp = spacing(voxel_size, nd)

    def empty_labels() -> Any:  # made when returned: no label volume held meanwhile
        return xp.zeros(actin.shape, xp.int32)

    if actin.size == 0:
        return TNTs(empty_labels(), _empty_table())

    # labels in their own integer dtype (uint16 from the pipeline: 2 B/voxel, not 4)
    msc = _int_labels(b, msc_labels) if msc_labels is not None else None
    jur = _int_labels(b, jurkat_labels) if jurkat_labels is not None else None
    if tighten_cells:
        msc, jur = _tight_cells(msc, jur, msc_signal, mito, sp)
    n_msc = int(msc.max()) if msc is not None and msc.size else 0
    n_jur = int(jur.max()) if jur is not None and jur.size else 0
    # one cell image (MSCs 1..n_msc, Jurkat cells after them), uint16 where it fits
    dt = xp.uint16 if n_msc + n_jur <= np.iinfo(np.uint16).max else xp.int32
    cells = msc.astype(dt, copy=True) if msc is not None else xp.zeros(actin.shape, dt)
    del msc  # in cells
    body = jur > 0 if jur is not None else xp.zeros(actin.shape, bool)  # the cargo's halo
    if n_jur:
        cells[body] = jur[body].astype(dt) + dt(n_msc)
    del jur
    free = cells == 0
    gl = None
    if nd == 3:
        gl = _field_glass(
            actin, mito, sp, glass_z_um, glass_channels, glass_reference_um, glass_tolerance_um
        )
    glass = float("nan") if gl is None else gl.z_um

    def result(labels: Any, table: pd.DataFrame, thr: float = float("nan")) -> TNTs:
        return TNTs(labels, table, glass, thr, gl, () if gl is None else gl.flags)

    if not bool((cells > 0).any()):  # no cells, no TNTs: the glass does not matter
        return TNTs(empty_labels(), _empty_table(), glass, glass=gl)

    # the cargo rule's mitochondria: the free voxels (away from Jurkat bodies) whose spot
    # response stands above its threshold, found now so that the response (4 B/voxel) is
    # not held while the tubes are found
    if callable(mito_spots):
        mito_spots = mito_spots()
    hot = None
    if mito is not None:
        hot = _hot_spots(b, mito, body, free, sp, mito_threshold_k=mito_threshold_k,
                         mito_diameter_um=mito_diameter_um, jurkat_halo_um=jurkat_halo_um,
                         psf_sigma_um=psf_sigma_um, mito_spots=mito_spots)  # fmt: skip
    del mito_spots, body
    pieces = tube_pieces(
        actin, free, voxel_size=sp, tube_radius_um=tube_radius_um,
        psf_sigma_um=psf_sigma_um, threshold_k=threshold_k, threshold_low_k=threshold_low_k,
        sample_stride=threshold_sample,
    )  # fmt: skip
    if pieces is None:
        return result(empty_labels(), _empty_table())
    thr_hi = pieces.threshold_high
    comp, n_comp = pieces.comp, pieces.n
    mask = comp > 0
    if not bool(mask.any()):
        return result(empty_labels(), _empty_table(), thr_hi)

    coords = _skeleton_coords(b, comp)
    if len(coords) == 0:
        return result(empty_labels(), _empty_table(), thr_hi)
    # nearest cell of every tube voxel (feature transform of the free space, on boxes
    # around the tubes); distances only where read
    m_idx = xp.nonzero(mask)
    del mask
    m_ft = nearest_features(b, free, m_idx, comp[m_idx], sp)
    # the skeleton lies in the mask: its voxels' entries, by position in the mask's order
    m_lin = xp.ravel_multi_index(m_idx, actin.shape)
    cidx = tuple(b.asarray(coords[:, i]) for i in range(nd))
    at_skel = xp.searchsorted(m_lin, xp.ravel_multi_index(cidx, actin.shape))
    s_ft = tuple(f[at_skel] for f in m_ft)
    s_dist = b.to_host(feature_distance(b, s_ft, cidx, sp))  # device->host
    s_cell = b.to_host(cells[s_ft]).astype(np.int64)  # device->host
    s_rad = b.to_host(pieces.radius_at(cidx)).astype(np.float64)  # device->host
    del pieces
    # which cells each tube component reaches within contact_um (a skeleton retracts from
    # a thick end, the mask does not)
    n_cells = int(cells.max())
    reach = feature_distance(b, m_ft, m_idx, sp) <= contact_um
    pair = comp[m_idx][reach].astype(xp.int64) * (n_cells + 1) + cells[m_ft][reach]
    touch = bincount(b, pair, (n_comp + 1) * (n_cells + 1)) > 0
    touch = b.to_host(touch.reshape(n_comp + 1, n_cells + 1))  # device->host: small table
    s_comp = b.to_host(comp[cidx])  # device->host
    s_reach = touch[s_comp, s_cell]

    graph = skeleton_graph(coords, tuple(actin.shape), sp)
    paths = find_bridges(
        graph,
        s_dist,
        s_cell,
        s_reach,
        coords * np.asarray(sp),
        (s_cell > 0) & (s_cell <= n_msc),
        contact_um=contact_um,
        max_pass_um=max_pass_um,
        step_um=min(sp),
    )
    # cargo where it is read: on the paths of the bridges
    cargo = None
    if paths:
        on_path = np.unique(np.concatenate([path for path, *_ in paths]))
        hit = _cargo_response(
            b, foci_labels, mito is not None, hot, free.shape,
            tuple(b.asarray(coords[on_path, i]) for i in range(nd)), sp,
            mito_tolerance_um=mito_tolerance_um,
        )  # fmt: skip
        if hit is not None:
            cargo = np.zeros(len(coords), bool)
            cargo[on_path] = hit
    del cells, free, hot  # read no more
    rows = []
    kept = []
    spa = np.asarray(sp)
    for path, _, narrow in paths:
        length = path_length(coords[path] * spa) + s_dist[path[0]] + s_dist[path[-1]]
        # a bridge over a narrow gap never gets contact_um clear: three quarters will do (a
        # cortex or a junction between two cells runs at a voxel or two from them), and it
        # must be twice min_length_um long (shorter, it is where two cells nearly touch: a
        # Jurkat's cortex on its MSC)
        clear, shortest = min_clearance_um, min_length_um
        if narrow:
            clear, shortest = min(min_clearance_um, 0.75 * contact_um), 2 * min_length_um
        if length < shortest or s_dist[path].max() < clear:
            continue
        height = float("nan")
        if nd == 3 and gl is not None and np.isfinite(gl.z_um):
            # height above the glass under each path voxel (a tilted plate), median
            pz = coords[path] * spa
            height = float(np.median(pz[:, 0] - gl.at(pz[:, 1], pz[:, 2])))
            if height < min_height_um:
                continue
        ends = [int(path[0]), int(path[-1])]
        pts = coords[path] * spa
        # the tube meets each cell its contact gap beyond the path's end, along the path
        p_end = [surface_point(pts, s_dist[path[0]]), surface_point(pts[::-1], s_dist[path[-1]])]
        if s_cell[ends[0]] > s_cell[ends[1]]:
            ends = ends[::-1]
            p_end = p_end[::-1]
        if nd == 3:
            p_end = [inside_stack(p, gl, actin.shape[0] * sp[0]) for p in p_end]
            rise = abs(float(p_end[1][0] - p_end[0][0]))
            if rise > max_steepness * float(np.linalg.norm(p_end[1][1:] - p_end[0][1:])):
                continue  # upright: the cortex under a cell resting on another
        p0, p1 = p_end
        if nd == 2:
            p0, p1 = np.r_[np.nan, p0], np.r_[np.nan, p1]
        ca, cb = int(s_cell[ends[0]]), int(s_cell[ends[1]])
        kind_a, id_a = ("jurkat", ca - n_msc) if ca > n_msc else ("msc", ca)
        kind_b, id_b = ("jurkat", cb - n_msc) if cb > n_msc else ("msc", cb)
        rows.append(
            {
                "tnt_id": len(rows) + 1,
                "length_um": float(length),
                "from_id": id_a,
                "from_kind": kind_a,
                "to_id": id_b,
                "to_kind": kind_b,
                "thickness_um": float(2 * np.mean(s_rad[path])),
                "height_um": height,
                "carries_mito": None if cargo is None else bool(cargo[path].any()),
                "z0_um": float(p0[0]),
                "y0_um": float(p0[1]),
                "x0_um": float(p0[2]),
                "z1_um": float(p1[0]),
                "y1_um": float(p1[1]),
                "x1_um": float(p1[2]),
            }
        )
        kept.append(path)
    if not rows:
        return result(empty_labels(), _empty_table(), thr_hi)
    # each tube voxel goes to the TNT whose path is nearest, within its own component: only
    # the components of the TNTs get labels; the paths drawn on their box, which holds
    # every path voxel, and the nearest path voxel from feature transforms on boxes around
    # each component (nearest_features: the whole box's transform, exactly)
    on_path = np.concatenate(kept)
    has_tnt = xp.zeros(n_comp + 1, dtype=bool)
    has_tnt[comp[tuple(b.asarray(coords[on_path, i]) for i in range(nd))]] = True
    tubes = has_tnt[comp]
    box = bbox(b, tubes)
    t_idx = xp.nonzero(tubes[box])
    del tubes
    t_comp = comp[box][t_idx]
    paths_d = xp.zeros(tuple(sl.stop - sl.start for sl in box), xp.uint16 if len(kept) <
                       np.iinfo(np.uint16).max else xp.int32)  # fmt: skip
    origin = np.array([sl.start for sl in box])
    for i, path in enumerate(kept):
        paths_d[tuple(b.asarray(c) for c in (coords[path] - origin).T)] = i + 1
    near = nearest_features(b, paths_d == 0, t_idx, t_comp, sp)
    same = comp[box][near] == t_comp
    labels = xp.zeros(actin.shape, xp.int32)
    labels[tuple(c + int(o) for c, o in zip(t_idx, origin, strict=True))] = xp.where(
        same, paths_d[near], 0
    )
    table = pd.DataFrame(rows, columns=TNT_COLUMNS).astype(
        {"tnt_id": np.int32, "from_id": np.int32, "to_id": np.int32, "carries_mito": "boolean"}
    )
    return result(labels, table, thr_hi)


def _skeleton_coords(b: Backend, comp: Any) -> np.ndarray:
    """Coordinates (host, C order) of the skeleton of ``comp > 0``: each piece thinned on
    its own box (one voxel of margin). Lee's thinning removes a voxel by its 26-neighbours
    alone, in raster order, so pieces that are not 26-connected (distinct pieces) thin
    apart as they do together: the same skeleton, without passes over the whole field."""
    from scipy import ndimage as sp_ndi
    from skimage.morphology import skeletonize

    comp_h = b.to_host(comp)  # device->host: the pieces (cuCIM has no 3-D skeleton)
    out = []
    for i, sl in enumerate(sp_ndi.find_objects(comp_h), 1):
        if sl is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n))
                    for s, n in zip(sl, comp_h.shape, strict=True))  # fmt: skip
        sub = comp_h[box] == i
        pts = np.argwhere(skeletonize(sub) & sub)
        out.append(pts + np.array([s.start for s in box]))
    if not out:
        return np.zeros((0, comp_h.ndim), np.int64)
    coords = np.concatenate(out)
    return coords[np.lexsort(coords.T[::-1])]  # C order, as np.argwhere of the whole


def _int_labels(b: Backend, labels: Any) -> Any:
    """Labels on the backend in their own integer dtype (int32 for any other)."""
    lab = b.asarray(labels)
    return lab if lab.dtype.kind in "iu" else lab.astype(b.xp.int32)


def _tight_cells(msc: Any, jur: Any, msc_signal: Any, mito: Any, sp: tuple[float, ...]):
    """MSC and Jurkat labels cut back to their own signal (see ``tighten_cells``).

    MSCs: GFP fills the cytoplasm to the membrane, so the label keeps the voxels where
    the GFP smoothed at 0.4 µm (in the plane: the masks are as tight in z as the optics
    allow already) stays above 0.3 of the way to the cell's mean, the fraction that
    segmentation uses on its 1 µm smoothed image. Jurkat cells: MitoTracker smoothed at
    0.5 µm above half the cell's mean, holes filled, the largest piece, and 1 µm of the
    label given back above and below (the cortex is cell too). Chosen on the variation
    grid (benchmarks/bench_variations.py, RESULTS.md): smoothing the GFP in 3-D, or cutting
    it at 0.4 of the way, cost the 1.5x-coarser-voxel row recall and precision (thin MSC
    edges near the glass went); cutting Jurkat cells at 0.3 left more of the bloat (cell
    size x1.5 recall 0.84, 0.95 at a half). The largest-piece rule drops a mitochondrion
    riding a tube near its Jurkat, which the cut alone keeps as part of the cell.
    ``tighten_labels`` returns labels without cells unchanged.
    """
    if msc_signal is not None and msc is not None:
        msc = tighten_labels(msc, msc_signal, voxel_size=sp, sigma_um=(0.0, 0.4, 0.4),
                             fraction=0.3)  # fmt: skip
    if mito is not None and jur is not None:
        jur = tighten_labels(jur, mito, voxel_size=sp, sigma_um=(0.5, 0.5, 0.5),
                             fraction=0.5, fill_holes=True, main_body=True,
                             keep_z_um=1.0)  # fmt: skip
    return msc, jur


def _field_glass(
    actin: Any,
    mito: Any,
    sp: tuple[float, ...],
    given: float | Glass | None,
    channels: Mapping[str, Any] | None,
    reference_um: float | None,
    tolerance_um: float,
) -> Glass:
    """The glass plane of a 3-D field: given, estimated, or the plate's reference."""
    if isinstance(given, Glass):
        est = given
    elif given is not None:
        return Glass(float(given), "given", True, (0.0, 0.0), (0.0, 0.0))
    else:
        chans = dict(channels) if channels is not None else {"actin": actin, "mito": mito}
        est = estimate_glass(chans, voxel_size=sp)
    return resolve_glass(est, reference_um=reference_um, tolerance_um=tolerance_um)


def _hot_spots(
    b: Backend,
    mito: Any,
    body: Any,
    free: Any,
    sp: tuple[float, ...],
    *,
    mito_threshold_k: float,
    mito_diameter_um: float,
    jurkat_halo_um: float,
    psf_sigma_um: tuple[float, float] | None,
    mito_spots: SpotResponse | None,
) -> Any:
    """Flat indices (sorted) of the free voxels beyond ``jurkat_halo_um`` of every Jurkat
    body whose ``mito`` spot response exceeds their median by ``mito_threshold_k`` robust
    sigmas; None when no threshold can be set (fewer than 16 voxels, no noise)."""
    xp = b.xp
    spots = enhance_spots(
        mito, voxel_size=sp, foci_diameter_um=mito_diameter_um, psf_sigma_um=psf_sigma_um,
        reuse=mito_spots,
    )  # fmt: skip
    region = free
    if bool(body.any()):
        region = region & far_from_shifts(b, body, jurkat_halo_um, sp)
    vals = spots[region]
    if int(vals.size) < 16:
        return None
    sig = robust_sigma(b, vals)  # before the median reorders vals in place
    med = float(b.to_host(xp.median(vals, overwrite_input=True)))  # device->host: one value
    del vals
    if not sig > 0:
        return None
    above = spots > med + mito_threshold_k * sig
    above &= region
    return xp.flatnonzero(above.reshape(-1))


def _cargo_response(
    b: Backend,
    foci_labels: Any,
    has_mito: bool,
    hot: Any,
    shape: tuple[int, ...],
    cidx: tuple[Any, ...],
    sp: tuple[float, ...],
    *,
    mito_tolerance_um: float,
) -> np.ndarray | None:
    """Per voxel ``cidx`` of the paths (host bool): cargo within tolerance (a focus of
    ``foci_labels``, or a voxel of ``hot``, see :func:`_hot_spots`); None without foci or
    mito."""
    xp = b.xp
    if foci_labels is None and not has_mito:
        return None
    hit = xp.zeros(cidx[0].shape, dtype=bool)
    # box of the path voxels
    lo = [int(b.to_host(c.min())) for c in cidx]  # device->host: one value per axis
    hi = [int(b.to_host(c.max())) + 1 for c in cidx]  # device->host: one value per axis
    if foci_labels is not None:
        foci = b.asarray(foci_labels) > 0
        if bool(foci.any()):
            # a focus within the tolerance of the path: feature transforms on boxes around
            # the path voxels (grouped by 32-voxel tiles of the plane)
            tile = cidx[-1] // 32 + (cidx[-2] // 32) * (foci.shape[-1] // 32 + 1)
            hit |= near_features(b, foci, cidx, tile, sp, mito_tolerance_um)
    if hot is not None:
        # a hot voxel within the tolerance box of each path voxel: the maximum filter of the
        # hot voxels on the path's box grown by its radius (clipped; the same edge mode as
        # the filter of the responses, whose maximum exceeds the threshold exactly where a
        # hot voxel lies in the window)
        rad = [max(int(round(mito_tolerance_um / s)), 0) for s in sp]
        box = tuple(
            slice(max(a - r, 0), min(z + r, n))
            for a, z, r, n in zip(lo, hi, rad, shape, strict=True)
        )
        h = xp.unravel_index(hot, shape)
        inside = xp.ones(hot.shape, bool)
        for c, sl in zip(h, box, strict=True):
            inside &= (c >= sl.start) & (c < sl.stop)
        marks = xp.zeros(tuple(sl.stop - sl.start for sl in box), xp.uint8)
        marks[tuple(c[inside] - sl.start for c, sl in zip(h, box, strict=True))] = 1
        local = b.ndi.maximum_filter(marks, size=tuple(2 * r + 1 for r in rad))
        at = tuple(c - s.start for c, s in zip(cidx, box, strict=True))
        hit |= local[at] > 0
    return b.to_host(hit)  # device->host: one bool per skeleton voxel


# -- evaluation ---------------------------------------------------------------------------
