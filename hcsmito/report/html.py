"""``OUT/report.html``: one self-contained page from the tables of a run.

Nothing is reprocessed: the page is built from ``OUT/tables/*.parquet`` and
``OUT/manifest.json`` (aggregated again when asked, which is cheap). Figures are
embedded as base64 PNG (their SVG twins are written beside, in ``OUT/figures``, and
linked); QC overlays are linked by relative path (``qc/B3_f0.png``). The page has no
script and loads nothing from the network. Every text from the data is escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd

from hcsmito.aggregate import (
    READOUTS,
    read_aggregates,
    read_manifest,
    readout_label,
    write_aggregates,
)
from hcsmito.io.rundir import RunDir, field_stem
from hcsmito.qc import QC_FLAGS, format_flag_counts, split_flags
from hcsmito.report.notes import READOUT_NOTES

__all__ = ["build_report", "render_report"]

log = logging.getLogger(__name__)

_E = html.escape

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fff; line-height: 1.4; }
header { background: #1f3b57; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 1.4em; }
header p { margin: 4px 0 0; opacity: 0.85; font-size: 0.9em; }
nav { padding: 8px 28px; background: #eef2f6; font-size: 0.9em; }
nav a { margin-right: 14px; color: #1f3b57; }
main { padding: 8px 28px 40px; max-width: 1400px; }
h2 { border-bottom: 2px solid #1f3b57; padding-bottom: 3px; margin-top: 34px; }
table { border-collapse: collapse; font-size: 0.82em; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #eef2f6; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
.kv td { text-align: left; }
.scroll { max-height: 520px; overflow: auto; display: inline-block; max-width: 100%; }
.figs { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; background: #fafafa;
         flex: 0 1 560px; min-width: 300px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.8em; max-width: 560px; color: #444; }
.warn { background: #fff4e5; border-left: 4px solid #e69500; padding: 6px 10px; }
.bad { color: #b00020; }
.ok { color: #2e7d32; }
.qc { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
      gap: 8px 10px; font-size: 0.82em; }
.qc img { width: 128px; height: auto; margin-top: 3px; }
pre { background: #f6f6f6; padding: 8px; overflow: auto; font-size: 0.8em; max-height: 400px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #1f3b57; }
</style>
</head>
<body>
<header><h1>$title</h1><p>$subtitle</p></header>
<nav><a href="#summary">Run</a><a href="#results">Results</a><a href="#figures">Figures</a>
<a href="#plate">Plate</a><a href="#tables">Tables</a><a href="#flags">QC flags</a>
<a href="#qc">QC overlays</a></nav>
<main>
<section id="summary"><h2>Run summary</h2>$summary</section>
<section id="results"><h2>Results per condition</h2>$results</section>
<section id="figures"><h2>Figures</h2>$figures</section>
<section id="plate"><h2>Plate</h2>$plate</section>
<section id="tables"><h2>Tables</h2>$tables</section>
<section id="flags"><h2>QC flags</h2>$flags</section>
<section id="qc"><h2>QC overlays</h2>$qc</section>
</main>
</body>
</html>
"""
)


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_E(str(k))}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table(df: pd.DataFrame, *, float_format: str = "{:.4g}", scroll: bool = True) -> str:
    if df is None or df.empty:
        return "<p><em>(empty)</em></p>"
    df = df.copy()
    for c in df.columns:
        if pd.api.types.is_float_dtype(df[c]):
            df[c] = [("" if pd.isna(v) else float_format.format(v)) for v in df[c]]
    text = df.to_html(index=False, escape=True, border=0, na_rep="")
    return f'<div class="scroll">{text}</div>' if scroll else text


def _duration(manifest: Mapping[str, Any]) -> str:
    try:
        t0 = _dt.datetime.fromisoformat(str(manifest["started"]))
        t1 = _dt.datetime.fromisoformat(str(manifest["finished"]))
    except (KeyError, ValueError, TypeError):
        return ""
    s = (t1 - t0).total_seconds()
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _summary_html(manifest: Mapping[str, Any], agg: Mapping[str, Any], fields: pd.DataFrame) -> str:
    summ = agg.get("summary", {}) or {}
    n_fields = int(summ.get("n_fields", len(fields)))
    n_failed = int(summ.get("n_fields_failed", 0))
    status = (
        f'<span class="ok">{n_fields - n_failed} ok</span>, '
        f'<span class="{"bad" if n_failed else "ok"}">{n_failed} failed</span>'
    )
    versions = manifest.get("versions") or {}
    rows = [
        ("plate", _E(str(manifest.get("plate", ", ".join(map(str, fields.get("plate", [])[:1])))))),
        ("plate path", _E(str(manifest.get("plate_path", "")))),
        ("plate map", _E(str(summ.get("plate_map") or "(none)"))),
        ("backend / device", _E(f"{manifest.get('backend', '?')} / {manifest.get('device', '?')}")),
        ("started", _E(str(manifest.get("started", "")))),
        ("finished", _E(str(manifest.get("finished", "")))),
        ("duration", _E(_duration(manifest))),
        ("fields", status),
        ("QC flags", _E(_flags_line(agg, fields))),
        ("replicate unit", _E(str(summ.get("unit", "")))),
        ("control", _E(str(summ.get("control")))),
        ("post-hoc test", _E(str(summ.get("posthoc", "")))),
        ("red+ rule", _E(_rule_text(summ.get("red_positive"), manifest))),
        ("versions", _E(", ".join(f"{k} {v}" for k, v in versions.items()))),
    ]
    parts = [_kv(rows)]
    notes = list(summ.get("notes") or [])
    if notes:
        items = "".join(f"<li>{_E(str(n))}</li>" for n in notes)
        parts.append(f'<div class="warn"><strong>Notes</strong><ul>{items}</ul></div>')
    parts.append(_timings_html(manifest))
    failed = _failed_fields(manifest, fields)
    if len(failed):
        parts.append(f'<h3 class="bad">Failed fields ({len(failed)})</h3>')
        parts.append(_table(failed))
    cfg = manifest.get("config")
    if cfg:
        text = json.dumps(cfg, indent=1, default=str)
        parts.append(f"<details><summary>Configuration</summary><pre>{_E(text)}</pre></details>")
    return "\n".join(parts)


def _flagged(agg: Mapping[str, Any], fields: pd.DataFrame) -> pd.DataFrame:
    """``well, field, qc_flags`` of the ok fields that carry a QC flag."""
    summ = agg.get("summary", {}) or {}
    if "flagged_fields" in summ:
        df = pd.DataFrame(summ["flagged_fields"], columns=["plate", "well", "field", "qc_flags"])
    elif "qc_flags" in fields:
        ok = fields["status"].astype("string").fillna("failed") == "ok"
        has = fields["qc_flags"].map(lambda v: bool(split_flags(v)))
        df = fields.loc[ok & has, ["plate", "well", "field", "qc_flags"]]
    else:
        df = pd.DataFrame(columns=["plate", "well", "field", "qc_flags"])
    return df.reset_index(drop=True)


def _flags_line(agg: Mapping[str, Any], fields: pd.DataFrame) -> str:
    summ = agg.get("summary", {}) or {}
    text = format_flag_counts(list(_flagged(agg, fields)["qc_flags"])) or "no field flagged"
    excl = summ.get("exclude_flags") or []
    if excl:
        n = int(summ.get("n_fields_excluded", 0))
        text += (
            f"; {n} field{'' if n == 1 else 's'} left out of the statistics "
            f"(exclude_flags: {', '.join(excl)})"
        )
    return text


def _flags_html(out_dir: Path, agg: Mapping[str, Any], fields: pd.DataFrame) -> str:
    """The flagged fields with their codes, meanings and QC picture, and what the
    statistics left out."""
    summ = agg.get("summary", {}) or {}
    flagged = _flagged(agg, fields)
    excl = list(summ.get("exclude_flags") or [])
    n_out = int(summ.get("n_fields_excluded", 0))
    if excl:
        why = (
            f"<p>The statistics left out <strong>{n_out}</strong> field"
            f"{'' if n_out == 1 else 's'}: those flagged {_E(', '.join(excl))} "
            "(<code>statistics.exclude_flags</code> / <code>--exclude-flags</code>).</p>"
        )
    else:
        why = (
            "<p>The statistics left out no field for its flags (a flagged field stays "
            "<code>ok</code>; <code>hcsmito report OUT --exclude-flags CODES</code> leaves "
            "fields with those codes out).</p>"
        )
    legend = "".join(
        f"<tr><td><code>{_E(c)}</code></td><td>{_E(m)}</td></tr>" for c, m in QC_FLAGS.items()
    )
    legend = (
        '<details><summary>All QC codes</summary><table class="kv"><tr><th>code</th>'
        f"<th>meaning</th></tr>{legend}</table></details>"
    )
    if not len(flagged):
        return "<p>No field is flagged.</p>" + why + legend
    rows = []
    for w, f, text in zip(flagged["well"], flagged["field"], flagged["qc_flags"], strict=True):
        codes = split_flags(text)
        stem = field_stem(w, f)
        png = RunDir(out_dir).qc_png(stem)
        pic = ""
        if png.is_file():
            rel = _E(png.relative_to(out_dir).as_posix())
            try:
                data = base64.b64encode(_thumbnail(png, 96)).decode("ascii")
                pic = (f'<a href="{rel}"><img src="data:image/png;base64,{data}" '
                       f'alt="QC overlay {_E(stem)}" width="96"></a>')  # fmt: skip
            except (OSError, ValueError, SyntaxError):
                pic = f'<a href="{rel}">{_E(stem)}.png</a>'
        out = " (left out)" if set(codes) & set(excl) else ""
        meaning = "<br>".join(
            f"<code>{_E(c)}</code>: {_E(QC_FLAGS.get(c, '(unknown code)'))}" for c in codes
        )
        rows.append(
            f"<tr><td>{_E(str(w))}</td><td>{int(f)}{out}</td><td>{_E(', '.join(codes))}</td>"
            f'<td style="text-align:left">{meaning}</td><td>{pic}</td></tr>'
        )
    table = (
        '<div class="scroll"><table><tr><th>well</th><th>field</th><th>flags</th>'
        f"<th>meaning</th><th>QC picture</th></tr>{''.join(rows)}</table></div>"
    )
    return f"<p>{_E(format_flag_counts(list(flagged['qc_flags'])))}.</p>" + why + table + legend


def _rule_text(rule: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> str:
    if rule:
        bits = [f"{k} = {v}" for k, v in rule.items() if k in ("min_foci", "min_volume_um3")
                and v is not None]  # fmt: skip
        text = " or ".join(bits)
        if "controls" in rule:
            share, n = 100 * rule["share"], rule["n_cells"]
            text += (
                f" (calibrated on {', '.join(rule['controls'])}: {share:.1f} % of {n} MSCs red+)"
            )
        return text
    ro = (manifest.get("config") or {}).get("readouts") or {}
    bits = [f"{k.replace('red_positive_', '')} = {v}" for k, v in ro.items() if v is not None]
    return " or ".join(bits) + " (as measured)" if bits else "as measured"


def _timings_html(manifest: Mapping[str, Any]) -> str:
    entries = manifest.get("fields") or []
    rows = [(s, float(t)) for e in entries for s, t in (e.get("timings") or {}).items()
            if isinstance(t, (int, float))]  # fmt: skip
    if not rows:
        return ""
    df = pd.DataFrame(rows, columns=["stage", "seconds"])
    g = df.groupby("stage", sort=False)["seconds"]
    t = pd.DataFrame({"total (s)": g.sum(), "per field (s)": g.mean(), "fields": g.size()})
    t = t.reset_index()
    return "<h3>Time per stage</h3>" + _table(t, scroll=False)


def _failed_fields(manifest: Mapping[str, Any], fields: pd.DataFrame) -> pd.DataFrame:
    entries = [e for e in (manifest.get("fields") or []) if e.get("status") not in (None, "ok")]
    if entries:
        return pd.DataFrame(
            [
                {
                    "well": e.get("well"),
                    "field": e.get("field"),
                    "status": e.get("status"),
                    "error": str(e.get("error", "")),
                }
                for e in entries
            ]  # fmt: skip
        )
    if "status" in fields:
        bad = fields[fields["status"].astype("string").fillna("failed") != "ok"]
        cols = [c for c in ("well", "field", "status", "error") if c in bad]
        return bad[cols].reset_index(drop=True)
    return pd.DataFrame()


def _results_html(agg: Mapping[str, Any]) -> str:
    cond = agg["conditions"]
    if cond is None or cond.empty:
        return "<p><em>No statistics (no plate map, or no mapped wells with data).</em></p>"
    summ = agg.get("summary", {}) or {}
    use_posthoc = cond["p_posthoc"].notna().any()
    star_col = "stars_posthoc" if use_posthoc else "stars"
    cells = []
    for _, r in cond.iterrows():
        if not np.isfinite(r["mean"]):
            txt = ""
        else:
            sem = f" ± {r['sem']:.3g}" if np.isfinite(r["sem"]) else ""
            star = f" {r[star_col]}" if isinstance(r[star_col], str) and r[star_col] else ""
            txt = f"{r['mean']:.3g}{sem} (n={int(r['n'])}){star}"
        cells.append(txt)
    wide = cond.assign(text=cells)
    multi_day = wide["day"].nunique() > 1
    index = ["condition", "day"] if multi_day else ["condition"]
    order = {c: i for i, c in enumerate(summ.get("conditions") or dict.fromkeys(wide["condition"]))}
    table = wide.pivot_table(index=index, columns="readout", values="text", aggfunc="first",
                             sort=False)  # fmt: skip
    cols = [r for r in (summ.get("readouts") or READOUTS) if r in table.columns]
    table = table[cols].rename(columns={r: readout_label(r) for r in cols})
    table = table.reset_index()
    table.columns.name = None
    table = table.sort_values(index, key=lambda s: s.map(order) if s.name == "condition" else s)
    what = "post-hoc test (Tukey HSD / Dunnett) vs" if use_posthoc else "Welch's t-test vs"
    notes = "".join(f"<p>{_E(READOUT_NOTES[r])}</p>" for r in cols if r in READOUT_NOTES)
    notes = f'<div class="warn">{notes}</div>' if notes else ""
    anova = cond.drop_duplicates(["readout", "day"])[["readout", "day", "f_anova", "p_anova",
                                                      "stars_anova"]]  # fmt: skip
    anova = anova.rename(columns={"f_anova": "F", "p_anova": "p", "stars_anova": ""})
    if not multi_day:
        anova = anova.drop(columns="day")
    ratio = cond.pivot_table(index=index, columns="readout", values="ratio", aggfunc="first",
                             sort=False)  # fmt: skip
    ratio = ratio[[c for c in cols if c in ratio.columns]]
    ratio = ratio.rename(columns={r: readout_label(r) for r in ratio.columns})
    ratio = ratio.reset_index()
    ratio.columns.name = None
    ratio = ratio.sort_values(index, key=lambda s: s.map(order) if s.name == "condition" else s)
    return (
        f"<p>Mean ± SEM (n {_E(str(summ.get('unit', '')))}s) and stars from the {what} "
        f"control <strong>{_E(str(summ.get('control')))}</strong>: ns p ≥ 0.05, * p &lt; "
        "0.05, ** p &lt; 0.01, *** p &lt; 0.001. Welch p-values, Holm-adjusted p-values and "
        "ratios to the control are in the conditions table below.</p>"
        + notes
        + _table(table.fillna(""))
        + "<h3>Relative to the control</h3><p>Condition mean / control mean (same day); "
        "for adhesion this is the relative adhesion ratio.</p>"
        + _table(ratio, float_format="{:.3f}")
        + "<h3>One-way ANOVA across conditions</h3>"
        + _table(anova, scroll=False)
    )


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_E(alt)}">'


def _figures_html(figs, out_dir: Path, sections: Sequence[str]) -> str:
    blocks = []
    for f in figs:
        if f.section not in sections:
            continue
        svg = f.svg.relative_to(out_dir).as_posix()
        blocks.append(
            f"<figure>{_img(f.png, f.title)}<figcaption><strong>{_E(f.title)}</strong>. "
            f'{_E(f.caption)} <a href="{_E(svg)}">SVG</a></figcaption></figure>'
        )
    if not blocks:
        return "<p><em>(no figures)</em></p>"
    return '<div class="figs">' + "\n".join(blocks) + "</div>"


def _thumbnail(path: Path, size: int) -> bytes:
    """A PNG of ``path`` reduced by block means to at most ``size`` pixels a side."""
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    step = max(1, int(np.ceil(max(img.shape[:2]) / size)))
    h, w = (img.shape[0] // step) * step, (img.shape[1] // step) * step
    small = img[:h, :w].reshape(h // step, step, w // step, step, -1).mean(axis=(1, 3))
    buf = io.BytesIO()
    mpimg.imsave(buf, np.clip(small[..., :3], 0, 1), format="png")
    return buf.getvalue()


def _qc_html(
    out_dir: Path, fields: pd.DataFrame, *, thumb_px: int = 128, budget: int = 1_500_000
) -> str:
    """QC overlays: a thumbnail of each well's first field embedded (while the page's
    ``budget`` of bytes lasts), every field linked by relative path."""
    qc_dir = RunDir(out_dir).qc_dir
    pngs = sorted(qc_dir.glob("*.png"), key=lambda p: _stem_key(p.stem)) if qc_dir.is_dir() else []
    if not pngs:
        return "<p><em>No QC overlays in qc/.</em></p>"
    status = {}
    if {"well", "field", "status"} <= set(fields.columns):
        for w, f, s in zip(fields["well"], fields["field"], fields["status"], strict=True):
            status[f"{str(w).replace('/', '')}_f{int(f)}"] = str(s)
    by_well: dict[str, list[Path]] = {}
    for p in pngs:
        by_well.setdefault(p.stem.rsplit("_f", 1)[0], []).append(p)
    cards, used, n_thumbs = [], 0, 0
    for well, paths in by_well.items():
        links = []
        for p in paths:
            st = status.get(p.stem, "")
            cls = ' class="bad"' if st and st != "ok" else ""
            rel = _E(p.relative_to(out_dir).as_posix())
            links.append(f'<a{cls} href="{rel}">f{_E(p.stem.rsplit("_f", 1)[1])}</a>')
        thumb = ""
        if used < budget:
            try:
                data = base64.b64encode(_thumbnail(paths[0], thumb_px)).decode("ascii")
            except (OSError, ValueError, SyntaxError) as exc:  # unreadable PNG: link only
                log.warning("QC overlay %s unreadable: %s", paths[0], exc)
            else:
                used += len(data)
                n_thumbs += 1
                rel = _E(paths[0].relative_to(out_dir).as_posix())
                thumb = (f'<a href="{rel}"><img src="data:image/png;base64,{data}" '
                         f'alt="QC overlay {_E(paths[0].stem)}"></a>')  # fmt: skip
        cards.append(f"<div><strong>{_E(well)}</strong> {' '.join(links)}<br>{thumb}</div>")
    more = "" if n_thumbs == len(by_well) else f" (thumbnails for the first {n_thumbs} wells)"
    return (
        f"<p>{len(pngs)} per-field overlays in <code>qc/</code>, linked by relative path "
        f"(open this file next to its folder); failed fields in red{more}.</p>"
        '<div class="qc">' + "".join(cards) + "</div>"
    )


def _stem_key(stem: str) -> tuple:
    m = re.match(r"^([A-Za-z]+)(\d+)_f(\d+)$", stem)
    if m is None:
        return (1, stem)
    row, col, f = m.groups()
    return (0, len(row), row, int(col), int(f))


def render_report(
    out_dir: str | Path,
    agg: Mapping[str, Any],
    manifest: Mapping[str, Any],
    fields: pd.DataFrame,
    figs: Sequence[Any],
) -> str:
    """The report page as a string (see :func:`build_report`)."""
    out_dir = Path(out_dir)
    plate = manifest.get("plate") or (str(fields["plate"].iloc[0]) if len(fields) else "plate")
    title = f"hcsmito report: {plate}"
    sub = f"generated {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}"
    wells = agg["wells"]
    well_cols = [c for c in wells.columns if not c.endswith("_sem")]
    cond_cols = [c for c in agg["conditions"].columns if c not in ("label",)]
    tables = (
        "<h3>Conditions</h3><p>One row per condition, day and readout "
        "(<code>tables/conditions.parquet</code>).</p>"
        + _table(agg["conditions"][cond_cols] if len(agg["conditions"]) else agg["conditions"])
        + "<h3>Wells</h3><p>One row per well (<code>tables/wells.parquet</code>; SEM over "
        "fields in the file).</p>" + _table(wells[well_cols])
    )
    trends = agg.get("trends")
    if trends is not None and len(trends):
        tables += "<h3>Trends over day</h3>" + _table(trends, scroll=False)
    return PAGE.substitute(
        title=_E(title),
        subtitle=_E(sub),
        summary=_summary_html(manifest, agg, fields),
        results=_results_html(agg),
        figures=_figures_html(figs, out_dir, ("bars", "time")),
        plate=_figures_html(figs, out_dir, ("qc", "plate")),
        tables=tables,
        flags=_flags_html(out_dir, agg, fields),
        qc=_qc_html(out_dir, fields),
    )


def build_report(
    out_dir: str | Path,
    *,
    plate_map: str | Path | pd.DataFrame | None = None,
    reaggregate: bool = True,
    **options: Any,
) -> Path:
    """Write ``OUT/report.html`` (and ``OUT/figures/*.png|svg``) from a run's tables.

    Parameters
    ----------
    out_dir : path
        The run folder (``tables/fields.parquet`` required, ``manifest.json`` optional).
    plate_map : path or DataFrame, optional
        Overrides the plate map named in the manifest's config.
    reaggregate : bool
        Recompute ``tables/{wells,conditions,replicates,trends}.parquet`` first
        (:func:`hcsmito.aggregate.write_aggregates`); ``False`` uses those on disk.
    **options
        Passed to :func:`hcsmito.aggregate.write_aggregates` (``unit``, ``control``...).

    Returns
    -------
    Path
        ``OUT/report.html``.
    """
    from hcsmito.report.figures import make_figures

    out_dir = Path(out_dir)
    rd = RunDir(out_dir)
    fields_path = rd.table("fields")
    if not fields_path.is_file():
        raise FileNotFoundError(
            f"{fields_path} is absent: 'hcsmito report' needs the tables of a finished "
            f"'hcsmito run' in {out_dir}"
        )
    manifest = read_manifest(out_dir)
    if reaggregate or not rd.has_table("conditions"):
        agg = write_aggregates(out_dir, plate_map=plate_map, **options)
    else:
        agg = read_aggregates(out_dir)
    fields = rd.read_table("fields")
    figs = make_figures(agg, rd.figures)
    page = render_report(out_dir, agg, manifest, fields, figs)
    path = rd.write_text(rd.report_path, page)
    log.info("wrote %s (%.1f kB)", path, path.stat().st_size / 1e3)
    return path
