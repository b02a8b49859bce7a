"""The per-field QC picture: max projections with the label contours, TNT paths, a scale bar,
a legend and a caption (plate, well, field, condition)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["qc_caption", "qc_overlay", "qc_picture"]

#: Contour colours of the label images (RGB in [0, 1]).
CONTOURS = (("msc", (1, 1, 1)), ("jurkat", (0, 1, 1)), ("foci", (1, 1, 0)))
#: TNT paths are drawn filled (they are a few voxels thick), in this colour.
TNT_COLOR = (1.0, 0.45, 0.0)
#: What the legend names each colour.
LEGEND = (
    ("MSC", CONTOURS[0][1]),
    ("Jurkat", CONTOURS[1][1]),
    ("foci", CONTOURS[2][1]),
    ("TNT", TNT_COLOR),
)
_NICE_UM = (0.5, 1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
_CAPTION_PX = 26
_LEGEND_PX = 26
_BACKGROUND = (0.1, 0.1, 0.1)


def _outline(lab: np.ndarray) -> np.ndarray:
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    return edge & (lab > 0)


def _projection(a: np.ndarray) -> np.ndarray:
    """Max projection scaled between the 1st and 99.8th percentile to [0, 1]."""
    a = np.asarray(a, np.float32)
    p = a.max(axis=0) if a.ndim == 3 else a
    lo, hi = np.percentile(p, (1, 99.8))
    return np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1)


def _flat(lab: np.ndarray) -> np.ndarray:
    return lab.max(axis=0) if lab.ndim == 3 else lab


def _upscale(a: np.ndarray, f: int) -> np.ndarray:
    return a if f == 1 else np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def qc_overlay(
    channels: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], *, upscale: int = 1
) -> np.ndarray:
    """Max projections (GFP green, mito magenta) with MSC (white), Jurkat (cyan) and foci
    (yellow) contours and TNT paths (orange).

    Parameters
    ----------
    channels : mapping of role to (Y, X) or (Z, Y, X) ndarray
        ``mito`` required, ``msc`` optional.
    labels : mapping of str to ndarray
        Label images of the field's shape (``msc``, ``jurkat``, ``foci``, ``tnt``).
    upscale : int
        Pixels per voxel (nearest neighbour); contours are drawn after upscaling, one
        pixel wide, so small objects stay visible.

    Returns
    -------
    (Y * upscale, X * upscale, 3) float32 ndarray
        RGB in [0, 1].
    """
    f = max(1, int(upscale))
    shape = next(iter(channels.values())).shape[-2:]
    g = _projection(channels["msc"]) if "msc" in channels else np.zeros(shape, np.float32)
    m = _projection(channels["mito"])
    rgb = _upscale(np.stack([m, g, m], axis=-1) * 0.9, f)
    if "tnt" in labels and labels["tnt"].any():
        rgb[_upscale(_flat(labels["tnt"]) > 0, f)] = TNT_COLOR
    for name, color in CONTOURS:
        if name in labels and labels[name].any():
            rgb[_outline(_upscale(_flat(labels[name]), f))] = color
    return rgb


def qc_caption(plate: str, well: str, field: int, condition: str | None = None) -> str:
    """``plate p · well B/3 · field 1 · DMSO`` (the condition left out when unknown)."""
    parts = [f"plate {plate}", f"well {well}", f"field {field}"]
    if condition:
        parts.append(str(condition))
    return " · ".join(parts)


def scale_bar_um(width_um: float) -> float:
    """The scale bar's length: the largest round length up to a fifth of the width."""
    fits = [v for v in _NICE_UM if v <= width_um / 5]
    return float(fits[-1]) if fits else float(f"{width_um / 5:.1g}")


def qc_picture(
    channels: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    voxel_size: Mapping[str, float],
    caption: str = "",
    min_px: int = 512,
) -> np.ndarray:
    """The QC picture of a field: :func:`qc_overlay` upscaled to at least ``min_px`` on
    its longer side (whole voxels), a scale bar (µm) in its lower right corner, the caption
    above it and a legend of the colours below.

    Returns
    -------
    (H, W, 3) float32 ndarray
        RGB in [0, 1].
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    ny, nx = next(iter(channels.values())).shape[-2:]
    f = max(1, math.ceil(min_px / max(ny, nx)))
    img = qc_overlay(channels, labels, upscale=f)
    h, w = img.shape[:2]
    total = h + _CAPTION_PX + _LEGEND_PX
    dpi = 100
    fig = Figure(figsize=(w / dpi, total / dpi), dpi=dpi, facecolor=_BACKGROUND)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, _LEGEND_PX / total, 1, h / total))
    ax.imshow(img, interpolation="nearest", extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()

    dx = float(voxel_size.get("x", 0) or 0)
    if dx > 0:
        bar_um = scale_bar_um(nx * dx)
        bar_px = bar_um / dx * f
        thick = max(3.0, h / 120)
        x1, y1 = w - 12.0, h - 12.0
        ax.add_patch(Rectangle((x1 - bar_px, y1 - thick), bar_px, thick, color="white", lw=0))
        label = f"{bar_um:g} µm"
        ax.text(x1 - bar_px / 2, y1 - thick - 3, label, color="white", ha="center",
                va="bottom", fontsize=9, parse_math=False)  # fmt: skip
    fig.text(0.01, 1 - (_CAPTION_PX / 2) / total, caption, color="white", ha="left",
             va="center", fontsize=10, parse_math=False)  # fmt: skip
    handles = [Patch(facecolor=c, edgecolor=c, label=n) for n, c in LEGEND]
    leg = fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                     fontsize=9, handlelength=1.2, borderaxespad=0.2,
                     bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    for t in leg.get_texts():
        t.set_color("white")
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return (rgba[..., :3].astype(np.float32) / 255.0).copy()
