"""The coverslip (glass) plane of a field, from the lowest rising edge of several channels.

TNTs are told from basal stress fibres by their height above the glass, so the glass must
not follow what sits above it (actin-rich Jurkat cells resting on the MSCs, whose cortex
dominates any whole-field actin profile). Every cell rests on the glass, directly or on
another cell; the glass is therefore the *first* rise of signal seen from below, not the
half-maximum of the brightest layer.

1. **Tiles.** The field is cut into lateral tiles (``tile_um``); per channel and tile the
   mean z-profile and its noise (from the differences of neighbouring pixels) are taken on
   the device; only these small profiles come to the host.
2. **First rise per tile.** The plane-to-plane increase of the profile is the derivative
   of the blurred step where cells start: its *first* local maximum that stands
   ``rise_k`` noise sigmas above zero is the tile's edge (whatever brighter layers lie
   above), located by the half-rise crossing between the levels ~1.2 µm below and above
   it (exact for a blurred step whatever the z step). A tile whose profile already starts
   half-way up (the rise lies below the stack) gives no estimate; each tile weighs by the
   height of its rise (tiles full of cell bottom over the flank of a cell or a tube).
3. **Cues.** ``msc`` (GFP: the bottom edge of the MSCs, the best cue: cytoplasm starts on
   the glass), ``actin`` (phalloidin: stress fibres, MSC cortex, and the cortex of Jurkat
   cells on the glass) and ``mito`` (MitoTracker: the bottom of Jurkat bodies, MSC
   autofluorescence); any subset, so Jurkat-only wells, fields without actin or without
   GFP all have a glass.
4. **Plane.** The most trusted cue with rises in at least ``min_tiles`` tiles (GFP, else
   actin, else MitoTracker) carries the plane ``z = a + b (y - yc) + c (x - xc)``: a start
   lowered to the tiles' low quantile (whatever sits above the glass reads high), then
   rounds of least squares on the tiles within a band above it; a tilt only where the
   tiles span the field and the tilted plane fits clearly better than the flat one, so
   that a tilted plate is followed and tiles fooled by cells above are outvoted. The other
   cues check it (their own heights at the centre, ``Glass.cues``).
5. **Verdict.** The estimate is *implausible* when no cue sees a rise, when cues disagree
   by more than ``disagree_um``, when the tiles scatter around the plane by more than
   ``scatter_um``, when the plane leaves the stack or tilts more than ``max_slope``, when
   most of the cells' signal lies below it, or when in most tiles of the carrying cue or
   a more trusted one (at least ``min_tiles``) the cells already start below the first
   plane: the stack starts above the glass, and the few rises left are of what starts
   above it (a Jurkat cell on an MSC, a tube, a focus).

Limits: a thin layer (a stress fibre alone) rises ~1 PSF sigma below its centre, so the
actin cue reads low (~0.1 µm at 0.6 µm steps, ~0.4 µm at 1 µm steps with a wide axial
PSF); the flanks of rounded Jurkat cells read high, so a Jurkat-only field (actin cue)
reads ~0.2 µm high; MitoTracker alone reads up to ~0.5 µm high (its lowest tiles are
the bottoms of rounded Jurkat bodies or mitochondria inside the MSCs, not membrane on the
glass); a stack that starts above the glass has no glass to find (implausible). 2-D
fields have no glass (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hcsmito.backend import Backend
from hcsmito.stages._util import VoxelSize, spacing

__all__ = ["GLASS_CUES", "Glass", "estimate_glass", "resolve_glass"]

#: Cue name per channel role, in the order of trust (GFP bottom edge first).
GLASS_CUES = {"msc": "gfp_edge", "actin": "actin_rise", "mito": "mito_rise"}

#: Code put on a TNT result whose glass could not be trusted (see ``hcsmito.qc``).
GLASS_FLAG = "glass_implausible"


@dataclass(frozen=True)
class Glass:
    """The glass plane of one field.

    Attributes
    ----------
    z_um : float
        Height of the glass (µm, ``index * dz``) at the field centre; NaN when unknown.
    source : str
        The cue that carried the plane (``gfp_edge``, ``actin_rise``, ``mito_rise``),
        ``given`` (set by the user), ``plate`` (the plate's reference) or ``none``.
    plausible : bool
        Whether the estimate can be trusted (see ``reason`` when not).
    slope : (float, float)
        ``dz/dy, dz/dx`` of the plane (µm per µm; 0 for a flat plane).
    centre_um : (float, float)
        ``(y, x)`` of the field centre, µm.
    cues : dict of str -> float
        Each cue's own height at the centre (µm), for the cues that saw a rise.
    reason : str
        Why the estimate is implausible ("" when plausible).
    """

    z_um: float
    source: str
    plausible: bool = True
    slope: tuple[float, float] = (0.0, 0.0)
    centre_um: tuple[float, float] = (0.0, 0.0)
    cues: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def at(self, y_um: Any, x_um: Any) -> Any:
        """Glass height (µm) at lateral positions ``y_um, x_um`` (host arrays or floats)."""
        return (
            self.z_um
            + self.slope[0] * (np.asarray(y_um, float) - self.centre_um[0])
            + self.slope[1] * (np.asarray(x_um, float) - self.centre_um[1])
        )

    @property
    def flags(self) -> tuple[str, ...]:
        """``("glass_implausible",)`` when the glass cannot be trusted, else ``()``."""
        return () if self.plausible else (GLASS_FLAG,)


def _nan_glass(source: str, centre: tuple[float, float], reason: str) -> Glass:
    return Glass(float("nan"), source, False, (0.0, 0.0), centre, {}, reason)


# -- device: tile profiles ----------------------------------------------------------------


def _tile_profiles(b: Backend, image: Any, tiles: tuple[int, int]):
    """Per tile mean z-profile, its noise per plane (host, ``(nz, ty, tx)`` each), and the
    tile sizes in pixels."""
    xp = b.xp
    nz, ny, nx = image.shape
    ty, tx = tiles
    sy, sx = ny // ty, nx // tx
    # in the input's dtype (no float copy of the volume): float32 sums
    a = image[:, : ty * sy, : tx * sx].reshape(nz, ty, sy, tx, sx)
    prof = a.mean(axis=(2, 4), dtype=xp.float32)
    # noise from pairs of neighbouring pixels (every 4th row of a tile is plenty):
    # d ~ N(0, 2 s^2), E|d| = 2 s / sqrt(pi)
    h = sx // 2
    rows = a[:, :, ::4]
    d = rows[..., 1 : 2 * h : 2].astype(xp.float32) - rows[..., 0 : 2 * h : 2]
    noise = xp.abs(d, out=d).mean(axis=(2, 4)) * np.float32(math.sqrt(math.pi) / 2)
    del d
    # device->host: a few numbers per plane and tile
    return b.to_host(prof).astype(np.float64), b.to_host(noise).astype(np.float64), (sy, sx)


# -- host: first rise of a profile --------------------------------------------------------


def _first_rise(p: np.ndarray, sd: float, k: float, bg: float, w: int) -> tuple[float, float]:
    """Plane position (fractional index) of the first significant rising edge of ``p`` and
    its height (intensity); NaN when none, -inf when the rise lies below the stack (with the
    height of plane 0 over the profile's lowest level).

    The profile is extended by one virtual plane at the background level ``bg`` below the
    stack (the glass may lie within the first plane); a rise below the stack needs plane 0
    half-way up from ``bg`` and from the profile's own lowest level (a tile whose
    background lies above ``bg``, as under vignetting, gives NaN there). The edge is the
    first local maximum of the plane-to-plane increase that exceeds ``k`` times ``sd`` (the
    noise of one increase); it is located by the half-rise crossing between the lowest
    level within ``w`` planes below it and the highest within ``w`` planes above it (linear
    interpolation: exact for a blurred step whatever the sampling).
    """
    q = np.r_[min(bg, p[0]), p]
    d = np.diff(q)
    n = d.size
    if n < 2 or not sd > 0:
        return float("nan"), 0.0
    thr = k * sd
    for i in range(n):
        if d[i] < thr:
            continue
        left = d[i - 1] if i > 0 else -np.inf
        right = d[i + 1] if i + 1 < n else -np.inf
        if d[i] < left or d[i] < right:
            continue
        lo_i = max(i + 1 - w, 0)
        base = float(q[lo_i : i + 1].min())
        top = float(q[i + 1 : i + 1 + w].max())
        if top - base < thr:
            continue  # a lone bright plane, not a layer
        if i == 0 and p[0] - bg > 0.5 * (top - bg):
            # plane 0 already half-way up: the rise is below the stack, unless the tile's
            # own floor (its lowest plane: over the cells of a stack that starts above the
            # glass) is there too: a background above the field's (vignetting), no edge
            floor = float(p.min())
            if p[0] - floor > 0.5 * (top - floor):
                return -math.inf, float(p[0] - floor)  # the height the cells stand at
            return float("nan"), 0.0
        level = 0.5 * (base + top)
        j = i
        while j > lo_i and q[j] >= level:
            j -= 1
        while j < i + w and q[j + 1] < level:
            j += 1
        t = (level - q[j]) / max(q[j + 1] - q[j], 1e-12)
        return j + float(np.clip(t, 0.0, 1.0)) - 1.0, top - base
    return float("nan"), 0.0


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    o = np.argsort(v)
    cw = np.cumsum(w[o])
    return float(v[o][min(np.searchsorted(cw, q * cw[-1]), len(v) - 1)])


def _lower_plane(
    y,
    x,
    z,
    w,
    *,
    fit_tilt: bool,
    band_um: float,
    q: float = 0.25,
    iters: int = 8,
    cap_um: float = 0.5,
    tilt_gain: float = 0.6,
):
    """``(a, b, c)`` of the plane ``z = a + b y + c x`` under the tile estimates, and the
    inlier mask.

    Cells and tubes only ever lie *above* the glass, so tiles fooled by them read high. A
    start plane lowered to the tiles' low quantile ``q`` is refined in rounds that keep the
    tiles from well below the plane (noise) to ``band_um`` above it and refit them by
    weighted least squares (b = c = 0 when ``fit_tilt`` is False). With ``fit_tilt`` two
    starts are tried, flat and a robust plane through all tiles (Tukey biweight at a
    generous scale, so that the band follows a strongly tilted glass); the tilted one wins
    when its cost (weighted squared residuals, each capped at ``cap_um``²) is below
    ``tilt_gain`` times the flat one's.
    """
    starts = [np.array([_wquantile(z, w, 0.5), 0.0, 0.0])]
    if fit_tilt:
        coef = starts[0].copy()
        for _ in range(iters):
            r = z - (coef[0] + coef[1] * y + coef[2] * x)
            s = max(1.4826 * _wquantile(np.abs(r), w, 0.5), 0.5)
            u = r / (4.685 * s)
            ww = w * np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
            a = np.stack([np.ones_like(y), y, x], 1) * np.sqrt(ww)[:, None]
            new, *_ = np.linalg.lstsq(a, z * np.sqrt(ww), rcond=None)
            done = np.allclose(new, coef, atol=1e-3)
            coef = new
            if done:
                break
        starts.append(coef)
    best = None
    for start in starts:
        coef = start.copy()
        coef[0] += _wquantile(z - (coef[0] + coef[1] * y + coef[2] * x), w, q)
        inl = np.ones(z.shape, bool)
        for _ in range(iters):
            r = z - (coef[0] + coef[1] * y + coef[2] * x)
            s = max(1.4826 * _wquantile(np.abs(r[inl]), w[inl], 0.5), 0.2) if inl.any() else 0.2
            new_inl = (r > -max(3 * s, 1.0)) & (r < band_um)
            if not new_inl.any():
                break
            inl = new_inl
            ww = w[inl]
            if fit_tilt and inl.sum() >= 6:
                a = np.stack([np.ones(inl.sum()), y[inl], x[inl]], 1) * np.sqrt(ww)[:, None]
                new, *_ = np.linalg.lstsq(a, z[inl] * np.sqrt(ww), rcond=None)
            else:
                new = np.array([float(np.sum(ww * z[inl]) / ww.sum()), 0.0, 0.0])
            done = np.allclose(new, coef, atol=1e-3)
            coef = new
            if done:
                break
        # cost: weighted squared residuals, each capped at cap_um² (a tile fooled by what
        # lies above pays the cap whatever the plane)
        r = z - (coef[0] + coef[1] * y + coef[2] * x)
        cost = float(np.sum(w * np.minimum(r * r, cap_um * cap_um)))
        if best is None or cost < tilt_gain * best[0]:
            best = (cost, coef, inl)
    return best[1], best[2]


# -- the estimate -------------------------------------------------------------------------


def estimate_glass(
    images: Mapping[str, Any],
    *,
    voxel_size: VoxelSize,
    tile_um: float = 8.0,
    rise_k: float = 6.0,
    disagree_um: float = 2.0,
    scatter_um: float = 1.0,
    max_slope: float = 0.1,
    band_um: float = 0.5,
    min_tilt_um: float = 0.5,
    min_tiles: int = 4,
) -> Glass:
    """Glass plane of one field from the lowest rising edge of its channels.

    Parameters
    ----------
    images : mapping of role -> (P, M, N) ndarray
        Raw channels by role; ``msc`` (GFP), ``actin``, ``mito`` are used when present
        (None values are skipped). NumPy or CuPy, any numeric dtype, one shape.
    voxel_size : mapping {"z", "y", "x"} -> µm, or sequence
    tile_um : float, µm
        Lateral tile size (default 8 µm; at least 2 x 2 tiles per field).
    rise_k : float
        A rising edge counts when the plane-to-plane increase of a tile's mean profile
        exceeds this many noise sigmas (default 6).
    disagree_um : float, µm
        Largest spread of the cues' heights at the centre for a plausible estimate
        (default 2 µm).
    scatter_um : float, µm
        Largest robust scatter of tile estimates around the plane (default 1 µm).
    max_slope : float
        Largest plausible tilt, µm per µm (default 0.1).
    band_um : float, µm
        Tiles further than this above the plane are taken as fooled by what lies above
        the glass and left out of the fit (default 0.5 µm).
    min_tilt_um : float, µm
        A fitted tilt that raises the plane less than this across the tiles that carry it
        is taken for noise: the plane is flat (default 0.5 µm).
    min_tiles : int
        Tiles a cue needs to carry the plane (default 4); the first of ``msc``, ``actin``,
        ``mito`` that has them does, the others check it (``cues``).

    Returns
    -------
    Glass
        ``source`` is the name of the cue that carried the plane, ``cues`` every cue's
        height at the centre; ``z_um`` NaN and ``plausible`` False when no cue saw a rise
        or for 2-D input.
    """
    imgs = {r: a for r, a in images.items() if a is not None and r in GLASS_CUES}
    if not imgs:
        return _nan_glass("none", (0.0, 0.0), "no channel to find the glass in")
    shape = tuple(next(iter(imgs.values())).shape)
    if len(shape) != 3:
        return _nan_glass("none", (0.0, 0.0), "2-D field: no glass")
    dz, dy, dx = spacing(voxel_size, 3)
    nz, ny, nx = shape
    centre = (0.5 * (ny - 1) * dy, 0.5 * (nx - 1) * dx)
    ty = max(2, int(round(ny * dy / tile_um))) if ny >= 4 else 1
    tx = max(2, int(round(nx * dx / tile_um))) if nx >= 4 else 1
    w = max(2, math.ceil(1.2 / dz))  # planes in ~1.2 µm: the reach of a blurred edge
    pts = []  # (cue, y, x, z, weight)
    below = {}  # cue -> tiles whose rise lies below the stack
    risen = {}  # cue -> tiles with a rise inside the stack
    weight = {}  # cue -> summed heights of (below-stack tiles, rising tiles)
    mass_below = {}
    for role, img in imgs.items():
        if tuple(img.shape) != shape:
            raise ValueError(
                f"glass: channel {role} has shape {tuple(img.shape)}, expected {shape}: pass "
                "the channels of one field"
            )
        b = Backend.of(img)
        prof, noise, (sy, sx) = _tile_profiles(b, img, (ty, tx))
        npix = sy * sx
        sd = np.median(noise, axis=0) * math.sqrt(2.0 / npix)  # one difference of means
        bg = float(np.quantile(prof, 0.02))
        cue = GLASS_CUES[role]
        nb = nr = 0
        wb = wr = 0.0
        for iy in range(ty):
            for ix in range(tx):
                p = prof[:, iy, ix]
                pos, amp = _first_rise(p, float(sd[iy, ix]), rise_k, bg, w)
                if not np.isfinite(pos):
                    nb += pos == -math.inf
                    wb += amp if pos == -math.inf else 0.0
                    continue
                nr += 1
                wr += amp
                pts.append(
                    (cue, (iy + 0.5) * sy * dy, (ix + 0.5) * sx * dx, pos * dz, amp, iy * tx + ix)
                )
        below[cue] = nb
        risen[cue] = nr
        weight[cue] = (wb, wr)
        mass_below[cue] = (prof, bg, (sy, sx))
    if not pts:
        reason = "no rising edge in any channel"
        if any(below.values()):
            reason = "the cells start below the first plane (stack above the glass?)"
        return _nan_glass("none", centre, reason)
    # MitoTracker reads Jurkat bodies (rounded: their bottom rises slowly) and foci in the
    # MSCs: the last resort, when neither GFP nor actin saw the glass
    if any(p[0] != "mito_rise" for p in pts):
        pts = [p for p in pts if p[0] != "mito_rise"]
    cue_of = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts]) - centre[0]
    x = np.array([p[2] for p in pts]) - centre[1]
    z = np.array([p[3] for p in pts])
    # a tile weighs by the height of its rise, relative to its cue's largest: tiles full of
    # cell bottom (an MSC, the middle of a Jurkat cell) over those that only hold the
    # flank of a cell or a tube
    w = np.array([p[4] for p in pts])
    for cue in set(cue_of):
        w[cue_of == cue] /= w[cue_of == cue].max()
    # the plane from the most trusted cue that saw the glass in enough tiles (GFP: the
    # bottom of the MSCs, a thick layer that starts on the glass; actin: also the flanks of
    # rounded Jurkat cells, read high, and thin basal fibres, read low); the others check it
    counts = {c: int((cue_of == c).sum()) for c in GLASS_CUES.values()}
    primary = next((c for c, n in counts.items() if n >= min_tiles), max(counts, key=counts.get))
    use = cue_of == primary
    # a tilt only where the tiles span the field in both directions
    span_y, span_x = np.ptp(y[use]), np.ptp(x[use])
    # (not from MitoTracker: its strong tiles are rounded Jurkat bodies, biased up)
    fit_tilt = int(use.sum()) >= 6 and span_y >= 0.2 * ny * dy and span_x >= 0.2 * nx * dx
    fit_tilt &= primary != "mito_rise"
    fit = {"fit_tilt": fit_tilt, "band_um": band_um}
    coef, inl_p = _lower_plane(y[use], x[use], z[use], w[use], **fit)
    if fit_tilt and math.hypot(coef[1], coef[2]) * math.hypot(span_y, span_x) < min_tilt_um:
        # a tilt that lifts the plane less than min_tilt_um across the tiles that show it
        # is noise (or a pattern of thin and thick cell parts): the flat plane
        coef, inl_p = _lower_plane(y[use], x[use], z[use], w[use], **{**fit, "fit_tilt": False})
    inl = np.zeros(z.shape, bool)
    inl[np.flatnonzero(use)[inl_p]] = True
    z0, sy_, sx_ = (float(c) for c in coef)
    resid = z - (z0 + sy_ * y + sx_ * x)
    # each cue's height at the centre: weighted median of its tiles, tilt removed
    cues: dict[str, float] = {}
    for cue in dict.fromkeys(cue_of):
        m = cue_of == cue
        o = np.argsort(resid[m])
        cw = np.cumsum(w[m][o])
        cues[str(cue)] = z0 + float(resid[m][o][np.searchsorted(cw, 0.5 * cw[-1])])
    source = str(primary)
    reasons = []
    n_used = int(inl.sum())
    if n_used < 2 and ty * tx > 1:
        reasons.append(f"only {n_used} tile(s) show a rise")
    if len(cues) > 1 and max(cues.values()) - min(cues.values()) > disagree_um:
        reasons.append("cues disagree: " + ", ".join(f"{k} {v:.2f} µm" for k, v in cues.items()))
    if n_used >= 3:
        mad = 1.4826 * float(np.median(np.abs(resid[inl])))
        if mad > scatter_um:
            reasons.append(f"tile estimates scatter by {mad:.2f} µm")
    if max(abs(sy_), abs(sx_)) > max_slope:
        reasons.append(f"tilt {max(abs(sy_), abs(sx_)):.3f} µm/µm")
    corners = [
        z0 + sy_ * (cy - centre[0]) + sx_ * (cx - centre[1])
        for cy in (0.0, (ny - 1) * dy)
        for cx in (0.0, (nx - 1) * dx)
    ]
    if min(corners) < -dz or max(corners) > (nz - 1) * dz:
        reasons.append("the plane leaves the stack")
    # a stack that starts above the glass: in most tiles of a cue the cells are already
    # half-way up at the first plane; the few rises it still finds are of what starts
    # above (a cell on a cell, a tube, a focus), not the glass. A stack that holds the
    # glass has no such tile (a tilted glass leaving the stack at a corner has a few,
    # and its plane leaves the stack). The cue that carried the plane and those trusted
    # more say so (MitoTracker's weak rise over a vignetted background reads as started
    # in many tiles: it speaks only when it carries the plane), in tiles and in weight
    # (the height the cells stand at in plane 0 against the heights of the rises: empty
    # tiles over a vignetted, fading background stand barely above their floor)
    order = list(GLASS_CUES.values())
    for cue, nb in below.items():
        if order.index(cue) > order.index(primary):
            continue
        if nb >= min_tiles and nb > risen[cue] and weight[cue][0] > weight[cue][1]:
            reasons.append(
                f"{cue}: the cells start below the first plane in {nb} tiles, a rise in "
                f"{risen[cue]} (stack above the glass?)"
            )
    # most of the cells' signal below the glass: the estimate sits on top of the cells
    g = Glass(z0, source, True, (sy_, sx_), centre, cues)
    for cue, (prof, bg, (sy, sx)) in mass_below.items():
        if cue not in cues:
            continue
        tty, ttx = prof.shape[1:]
        gy = (np.arange(tty) + 0.5) * sy * dy
        gx = (np.arange(ttx) + 0.5) * sx * dx
        zg = g.at(gy[:, None], gx[None, :])  # (ty, tx)
        zz = np.arange(nz)[:, None, None] * dz
        sig = np.clip(prof - bg, 0, None)
        tot = float(sig.sum())
        if tot > 0 and float(sig[zz < zg[None] - dz].sum()) > 0.5 * tot:
            reasons.append(f"most of the {cue} signal lies below the plane")
    if reasons:
        return Glass(z0, source, False, (sy_, sx_), centre, cues, "; ".join(reasons))
    return g


def resolve_glass(
    estimate: Glass, *, reference_um: float | None = None, tolerance_um: float = 1.5
) -> Glass:
    """The glass a field uses, given its own estimate and the plate's reference.

    A field whose estimate is implausible, or lies more than ``tolerance_um`` from the
    plate's reference height, takes the reference (flat, ``source="plate"``) and is marked
    implausible (its ``flags`` say ``glass_implausible``); otherwise its own estimate.
    """
    if reference_um is None or not math.isfinite(reference_um):
        return estimate
    ok = estimate.plausible and abs(estimate.z_um - reference_um) <= tolerance_um
    if ok:
        return estimate
    why = estimate.reason or (
        f"{estimate.z_um:.2f} µm is {abs(estimate.z_um - reference_um):.2f} µm from the "
        f"plate's {reference_um:.2f} µm"
    )
    return Glass(
        float(reference_um), "plate", False, (0.0, 0.0), estimate.centre_um, estimate.cues,
        f"plate reference used: {why}",
    )  # fmt: skip
