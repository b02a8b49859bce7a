"""Figures of the report: bar charts, time courses and plate heatmaps (PNG and SVG).

Figures are built on :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global state, no GUI backend, safe in worker threads. Each function takes
the tables of :func:`hcsmito.aggregate.aggregate_tables` and returns a Figure;
:func:`save_figure` writes it as PNG and SVG; :func:`make_figures` draws every figure of
a run.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from hcsmito.aggregate import READOUTS, find_readout, readout_label
from hcsmito.io.names import PLATE_FORMATS  # standard plate formats, smallest first
from hcsmito.io.rundir import atomic_write_bytes
from hcsmito.report.notes import READOUT_NOTES

__all__ = [
    "FigureFile",
    "bar_chart",
    "make_figures",
    "plate_format",
    "plate_heatmap",
    "qc_heatmap",
    "save_figure",
    "time_course",
]

_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
            "#8c8c8c", "#ccb974", "#64b5cd")  # fmt: skip

DPI = 110


@dataclass(frozen=True)
class FigureFile:
    """A figure written to disk: its name, title, caption and the PNG / SVG paths."""

    name: str
    title: str
    caption: str
    section: str
    png: Path
    svg: Path


def _row_index(row: str) -> int:
    """``A`` -> 0, ``Z`` -> 25, ``AA`` -> 26."""
    idx = 0
    for ch in row:
        idx = idx * 26 + (ord(ch) - ord("A") + 1)
    return idx - 1


def _row_name(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(ord("A") + r) + name
    return name


def _split(well: str) -> tuple[int, int]:
    row, col = str(well).split("/")
    return _row_index(row), int(col) - 1


def plate_format(wells: Sequence[str], *, smallest: tuple[int, int] = (8, 12)) -> tuple[int, int]:
    """The smallest standard plate (rows, columns) holding every well (``B/3`` form),
    at least ``smallest`` (a 96-well plate: a partly imaged plate keeps its real layout)."""
    rc = [_split(w) for w in wells]
    nr = max((r for r, _ in rc), default=0) + 1
    nc = max((c for _, c in rc), default=0) + 1
    for r, c in PLATE_FORMATS:
        if r * c < smallest[0] * smallest[1]:
            continue
        if nr <= r and nc <= c:
            return r, c
    return nr, nc


def save_figure(fig: Figure, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg``; returns both paths."""
    stem = Path(stem)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    for path, kw in ((png, {"dpi": DPI, "metadata": {"Software": None}}),
                     (svg, {"metadata": {"Date": None}})):  # fmt: skip
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], **kw)
        atomic_write_bytes(path, buf.getvalue())
    return png, svg


def _star_column(cond: pd.DataFrame) -> tuple[str, str]:
    """Post-hoc stars when a post-hoc test ran, else Welch's: (column, description)."""
    if "p_posthoc" in cond and cond["p_posthoc"].notna().any():
        return "stars_posthoc", "post-hoc test vs control (family-wise)"
    return "stars", "Welch's t-test vs control"


def bar_chart(
    conditions: pd.DataFrame,
    replicates: pd.DataFrame,
    readout: str,
    *,
    order: Sequence[str] | None = None,
) -> Figure:
    """Mean ± SEM per condition (bars, one colour per day), replicate points and stars.

    Parameters
    ----------
    conditions, replicates : DataFrame
        Long tables of :func:`hcsmito.aggregate.aggregate_tables`.
    readout : str
        A name from :data:`hcsmito.aggregate.READOUTS`, or a marker's readout.
    order : sequence of str, optional
        Condition order on the x axis (default: as in ``conditions``).
    """
    c = conditions[conditions["readout"] == readout]
    r = replicates[replicates["readout"] == readout]
    order = list(order) if order is not None else list(dict.fromkeys(c["condition"]))
    days = sorted(c["day"].dropna().unique()) or [np.nan]
    width = min(0.8 / len(days), 0.6)
    per_cond = 0.55 + 0.25 * len(days)
    fig = Figure(figsize=(min(11.0, max(4.0, per_cond * len(order) + 1.5)), 3.6))
    ax = fig.add_subplot()
    col, _ = _star_column(c)
    rng = np.random.default_rng(0)
    top = 0.0
    for di, day in enumerate(days):
        dc = c[c["day"] == day] if np.isfinite(day) else c
        dr = r[r["day"] == day] if np.isfinite(day) else r
        color = _PALETTE[di % len(_PALETTE)]
        for xi, cond in enumerate(order):
            row = dc[dc["condition"] == cond]
            if row.empty:
                continue
            row = row.iloc[0]
            x = xi + (di - (len(days) - 1) / 2) * width
            mean, sem = row["mean"], row["sem"]
            label = f"day {day:g}" if np.isfinite(day) and len(days) > 1 and xi == 0 else None
            ax.bar(x, mean if np.isfinite(mean) else 0.0, width * 0.9, color=color, alpha=0.55,
                   edgecolor=color, label=label, zorder=1)  # fmt: skip
            if np.isfinite(sem):
                ax.errorbar(x, mean, yerr=sem, color="black", capsize=3, lw=1, zorder=3)
            pts = dr.loc[dr["condition"] == cond, "value"].to_numpy(float)
            jit = (rng.random(pts.size) - 0.5) * width * 0.5
            ax.scatter(x + jit, pts, s=12, color="black", alpha=0.7, zorder=4, linewidths=0)
            hi = np.nanmax([mean + (sem if np.isfinite(sem) else 0.0), *pts, 0.0])
            top = max(top, hi)
            star = row.get(col, "")
            if isinstance(star, str) and star:
                ax.text(x, hi, star, ha="center", va="bottom", fontsize=9, zorder=5)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=30, ha="right")
    ax.set_ylabel(readout_label(readout))
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.spines[["top", "right"]].set_visible(False)
    if len(days) > 1:
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def time_course(
    conditions: pd.DataFrame,
    replicates: pd.DataFrame,
    readout: str,
    *,
    trends: pd.DataFrame | None = None,
) -> Figure:
    """Mean ± SEM over day, one line per condition, replicate points, trend p in legend."""
    c = conditions[conditions["readout"] == readout].sort_values("day")
    r = replicates[replicates["readout"] == readout]
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.add_subplot()
    for i, (cond, g) in enumerate(c.groupby("condition", sort=False)):
        color = _PALETTE[i % len(_PALETTE)]
        label = str(cond)
        if trends is not None and len(trends):
            t = trends[(trends["condition"] == cond) & (trends["readout"] == readout)]
            if len(t):
                t = t.iloc[0]
                label += f" (slope {t['slope_per_day']:.3g}/day, p={t['p']:.2g} {t['stars']})"
        ax.errorbar(g["day"], g["mean"], yerr=g["sem"].fillna(0.0), color=color, marker="o",
                    capsize=3, lw=1.5, label=label)  # fmt: skip
        pts = r[r["condition"] == cond]
        ax.scatter(pts["day"], pts["value"], s=10, color=color, alpha=0.5, linewidths=0)
    ax.set_xlabel("day")
    ax.set_ylabel(readout_label(readout))
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def _plate_grid(wells: pd.DataFrame, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    grid = np.full(shape, np.nan)
    for w, v in zip(wells["well"], values, strict=True):
        r, c = _split(w)
        if r < shape[0] and c < shape[1]:
            grid[r, c] = v
    return grid


def _plate_axes(fig: Figure, shape: tuple[int, int]):
    ax = fig.add_subplot()
    nr, nc = shape
    ax.set_xticks(range(nc))
    ax.set_xticklabels([str(i + 1) for i in range(nc)], fontsize=8 if nc <= 24 else 5)
    ax.set_yticks(range(nr))
    ax.set_yticklabels([_row_name(i) for i in range(nr)], fontsize=8 if nr <= 16 else 5)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    # well borders: two line collections (minor-tick grids cost one artist per line)
    ax.hlines(np.arange(-0.5, nr + 0.5), -0.5, nc - 0.5, color="white", lw=1.5, zorder=2)
    ax.vlines(np.arange(-0.5, nc + 0.5), -0.5, nr - 0.5, color="white", lw=1.5, zorder=2)
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(nr - 0.5, -0.5)
    for s in ax.spines.values():
        s.set_visible(False)
    return ax


def _figsize(shape: tuple[int, int]) -> tuple[float, float]:
    nr, nc = shape
    cell = 0.5 if nc <= 12 else (0.3 if nc <= 24 else 0.18)
    return (max(3.5, nc * cell + 1.8), max(2.2, nr * cell + 0.9))


def plate_heatmap(
    wells: pd.DataFrame,
    column: str,
    *,
    title: str | None = None,
    shape: tuple[int, int] | None = None,
    cmap: str = "viridis",
) -> Figure:
    """One value per well on the plate layout; empty wells grey, values written in the
    wells of plates up to 96 wells.

    Parameters
    ----------
    wells : DataFrame
        One row per well with ``well`` (``B/3``) and ``column``.
    column : str
        The value to show.
    shape : (rows, columns), optional
        Plate format (default: :func:`plate_format` of the wells).
    """
    shape = shape or plate_format(list(wells["well"]))
    vals = pd.to_numeric(wells[column], errors="coerce").astype(float).to_numpy()
    grid = _plate_grid(wells, vals, shape)
    fig = Figure(figsize=_figsize(shape))
    ax = _plate_axes(fig, shape)
    ax.set_facecolor("#e6e6e6")
    masked = np.ma.masked_invalid(grid)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax == vmin:
        vmax = vmin + 1.0
    im = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal",
                   interpolation="nearest")  # fmt: skip
    if shape[1] <= 12:
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                light = (v - vmin) / (vmax - vmin) < 0.55
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=6.5,
                        color="white" if light else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    label = title or readout_label(column)
    ax.set_title(label, fontsize=9, pad=18)
    fig.tight_layout()
    return fig


def qc_heatmap(wells: pd.DataFrame, *, shape: tuple[int, int] | None = None) -> Figure:
    """QC flags per well: all fields ok, some failed, all failed, not in the plate map,
    no data; the number of failed fields written in the well."""
    shape = shape or plate_format(list(wells["well"]))
    n = wells["n_fields"].fillna(0).to_numpy(float)
    bad = wells["n_fields_failed"].fillna(0).to_numpy(float)
    unmapped = wells["condition"].isna().to_numpy() if "condition" in wells else np.zeros(len(n))
    code = np.where(n == 0, 4, np.where(bad == n, 2, np.where(bad > 0, 1, 0))).astype(float)
    code = np.where((code == 0) & unmapped, 3, code)
    grid = _plate_grid(wells, code, shape)
    names = ["all fields ok", "some failed", "all failed", "not in plate map", "no fields"]
    colors = ["#55a868", "#ccb974", "#c44e52", "#8c8c8c", "#ffffff"]
    w, h = _figsize(shape)
    fig = Figure(figsize=(w, h + 0.3))  # room for the legend below the plate
    ax = _plate_axes(fig, shape)
    ax.set_facecolor("#f4f4f4")
    ax.imshow(np.ma.masked_invalid(grid), cmap=ListedColormap(colors), vmin=-0.5, vmax=4.5,
              aspect="equal", interpolation="nearest")  # fmt: skip
    badgrid = _plate_grid(wells, bad, shape)
    if shape[1] <= 24:
        for (i, j), v in np.ndenumerate(badgrid):
            if np.isfinite(v) and v > 0:
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7)
    from matplotlib.patches import Patch

    present = sorted({int(v) for v in code})
    ax.legend([Patch(color=colors[i], ec="black", lw=0.3) for i in present],
              [names[i] for i in present], loc="upper center", bbox_to_anchor=(0.5, 0.0),
              ncol=len(present), frameon=False, fontsize=7)  # fmt: skip
    ax.set_title("QC: failed fields per well", fontsize=9, pad=18)
    fig.tight_layout()
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def make_figures(agg: Mapping[str, Any], fig_dir: str | Path) -> list[FigureFile]:
    """Draw and save every figure of a run.

    Parameters
    ----------
    agg : mapping
        What :func:`hcsmito.aggregate.aggregate_tables` (or ``read_aggregates``) returns.
    fig_dir : path
        Folder for the PNG and SVG files (created).

    Returns
    -------
    list of FigureFile
        Sections ``"bars"``, ``"time"``, ``"plate"`` (and one ``"qc"``), in report order.
    """
    # condition names and labels are the user's text: drawn literally, never as mathtext
    # (a "$" pair in a condition name would be parsed, and a stray "\\frac{" fails)
    with matplotlib.rc_context({"text.parse_math": False}):
        return _make_figures(agg, fig_dir)


def _make_figures(agg: Mapping[str, Any], fig_dir: str | Path) -> list[FigureFile]:
    fig_dir = Path(fig_dir)
    cond, reps, wells = agg["conditions"], agg["replicates"], agg["wells"]
    trends = agg.get("trends")
    summary = agg.get("summary", {}) or {}
    readouts = [r for r in summary.get("readouts", list(READOUTS)) if find_readout(r)]
    order = summary.get("conditions") or None
    out: list[FigureFile] = []

    def add(fig, name, title, caption, section):
        png, svg = save_figure(fig, fig_dir / name)
        out.append(FigureFile(name, title, caption, section, png, svg))

    unit = summary.get("unit", "well")
    control = summary.get("control")
    for name in readouts:
        c = cond[cond["readout"] == name] if len(cond) else cond
        if c.empty or not c["mean"].notna().any():
            continue
        _, stars_from = _star_column(c)
        cap = (f"Mean ± SEM over {unit}s; dots: one {unit} each. Stars: {stars_from} "
               f"({control}); ns p ≥ 0.05, * p < 0.05, ** p < 0.01, *** p < 0.001.")  # fmt: skip
        if name in READOUT_NOTES:
            cap += " " + READOUT_NOTES[name]
        add(bar_chart(cond, reps, name, order=order), f"bar_{name}", readout_label(name),
            cap, "bars")  # fmt: skip
        if c["day"].nunique() > 1:
            add(time_course(cond, reps, name, trends=trends), f"time_{name}",
                f"{readout_label(name)} over time",
                f"Mean ± SEM over {unit}s per day; legend: least-squares slope per day and "
                "its p-value.", "time")  # fmt: skip
    if len(wells):
        shape = plate_format(list(wells["well"]))
        add(qc_heatmap(wells, shape=shape), "plate_qc", "QC flags",
            "Per well: whether fields failed (number written in the well), wells without a "
            "condition in the plate map and plate-map wells without fields.", "qc")  # fmt: skip
        for name in readouts:
            if name in wells and pd.to_numeric(wells[name], errors="coerce").notna().any():
                add(plate_heatmap(wells, name, shape=shape), f"plate_{_slug(name)}",
                    readout_label(name), "Per-well value (pooled over the well's fields); "
                    "grey: no value.", "plate")  # fmt: skip
    return out
