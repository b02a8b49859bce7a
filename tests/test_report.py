"""Figures and the HTML report on a 96-well simulated run: self-contained, images that
decode, bounded size, readable heatmaps, and a clean render in headless Chromium
(skipped without Chromium: ``apt-get install -y chromium``)."""

import base64
import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from test_aggregate import simulate_tables

from hcsmito.aggregate import READOUTS, aggregate_tables
from hcsmito.report import build_report
from hcsmito.report.figures import bar_chart, plate_format, plate_heatmap, save_figure

CONDS4 = ("DMSO", "cytochalasin D", "anti-ICAM-1", "ara-C")
READ = ["foci_per_msc"]


def _run_folder(out: Path) -> Path:
    """A 96-well run: 4 conditions x days 1-3 across the 12 columns, 8 replicate rows,
    two failed fields, one well missing from the plate map, a few QC overlays."""
    layout, rows_map = {}, []
    for col in range(1, 13):
        cond, day = CONDS4[(col - 1) // 3], (col - 1) % 3 + 1
        for r, row in enumerate("ABCDEFGH"):
            well = f"{row}/{col}"
            layout[well] = cond
            if well != "H/12":
                rows_map.append({"well": f"{row}{col:02d}", "condition": cond,
                                 "replicate": r + 1, "day": day})  # fmt: skip
    tables = simulate_tables(layout, seed=7, fields=2)
    f = tables["fields"]
    f.loc[(f["well"] == "C/5") & (f["field"] == 1), "status"] = "failed"
    f.loc[(f["well"] == "D/7"), "status"] = "failed"
    (out / "tables").mkdir(parents=True)
    for k, v in tables.items():
        v.to_parquet(out / "tables" / f"{k}.parquet")
    pd.DataFrame(rows_map).to_csv(out / "platemap.csv", index=False)
    (out / "qc").mkdir()
    for w, fi in (("B/2", 0), ("C/5", 1), ("D/7", 0)):
        mpimg.imsave(
            out / "qc" / f"{w.replace('/', '')}_f{fi}.png", np.kron(np.eye(8), np.ones((48, 48)))
        )
    bad = {("C/5", 1), ("D/7", 0), ("D/7", 1)}
    manifest = {
        "plate": "sim96", "plate_path": "/data/sim96.zarr",
        "config": {"plate_map": str(out / "platemap.csv"),
                   "readouts": {"red_positive_min_foci": 1}},
        "versions": {"hcsmito": "0.1.0", "numpy": np.__version__},
        "backend": "cpu", "device": "CPU (2 threads)",
        "started": "2026-11-26T15:00:00+00:00", "finished": "2026-11-26T15:12:30+00:00",
        "fields": [{"well": w, "field": int(fi),
                    "status": "failed" if (w, fi) in bad else "ok",
                    "error": "MemoryError <in deconvolve> & co" if (w, fi) in bad else None,
                    "timings": {"load": 0.1, "segment_msc": 1.5}}
                   for w, fi in zip(f["well"], f["field"], strict=True)],
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def report96(tmp_path_factory):
    out = _run_folder(tmp_path_factory.mktemp("run96"))
    path = build_report(out, readouts=READ, unit="well")
    return out, path


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(path):
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p.tags


def test_report_self_contained(report96):
    out, path = report96
    tags = _tags(path)
    imgs = [a for t, a in tags if t == "img"]
    # bar chart, time course, QC heatmap, readout heatmap; QC thumbnails of 3 wells
    assert len(imgs) == 4 + 3
    assert sum(a["alt"].startswith("QC overlay") for a in imgs) == 3
    for a in imgs:
        src = a["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        img = mpimg.imread(io.BytesIO(raw), format="png")
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0.01  # decodes, not blank
        assert a.get("alt")
    assert not [t for t, _ in tags if t in ("script", "iframe", "object", "link")]
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    # relative links to files that exist: SVG twins and QC overlays
    hrefs = [a["href"] for t, a in tags if t == "a" and not a["href"].startswith("#")]
    assert "qc/C5_f1.png" in hrefs and "figures/bar_foci_per_msc.svg" in hrefs
    for h in hrefs:
        assert (out / h).is_file(), h
    assert path.stat().st_size < 3_000_000  # 96 wells: a few hundred kB of figures


def test_report_content(report96):
    out, path = report96
    text = path.read_text(encoding="utf-8")
    assert "sim96" in text and "CPU (2 threads)" in text and "12.5 min" in text
    # the failed fields, with their error escaped
    assert "MemoryError &lt;in deconvolve&gt; &amp; co" in text and "<in deconvolve>" not in text
    assert "3 failed" in text and "H/12" in text  # unmapped well noted
    cond = pd.read_parquet(out / "tables" / "conditions.parquet")
    assert set(cond["readout"]) == set(READ) and set(cond["day"]) == {1.0, 2.0, 3.0}
    # what the page shows is what the table says (mean ± SEM (n) of one cell)
    r = cond[(cond["readout"] == "foci_per_msc") & (cond["condition"] == "cytochalasin D")]
    r = r[r["day"] == 2.0].iloc[0]
    assert f"{r['mean']:.3g} ± {r['sem']:.3g} (n={int(r['n'])})" in text
    assert "Relative to the control" in text and f"<td>{r['ratio']:.3f}</td>" in text
    # the designed effect is in the tables the report shows
    assert r["diff"] < 0 and r["p_welch"] < 0.001 and r["stars"] == "***"
    assert (out / "figures" / "plate_qc.svg").stat().st_size > 1000
    # the SVG twin parses as XML
    import xml.etree.ElementTree as ET

    assert ET.parse(out / "figures" / "bar_foci_per_msc.svg").getroot().tag.endswith("svg")


def test_heatmap_readable_for_96_wells(report96):
    out, _ = report96
    png = mpimg.imread(out / "figures" / "plate_foci_per_msc.png")
    h, w = png.shape[:2]
    assert 400 <= w <= 1200 and 250 <= h <= 800, (w, h)
    # at least ~25 px per well on a 12-column plate
    assert w / 12 >= 25 and h / 8 >= 25
    # wells of different value get different colours: many distinct colours in the plate
    colours = np.unique((png[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50


def test_plate_format_and_heatmap_values():
    assert plate_format(["B/3", "C/6"]) == (8, 12)  # partly imaged 96-well plate
    assert plate_format(["B/3", "C/6"], smallest=(2, 3)) == (4, 6)
    assert plate_format(["P/24"]) == (16, 24)
    assert plate_format(["A/1"]) == (8, 12)
    wells = pd.DataFrame({"well": ["A/1", "H/12"], "v": [1.0, 3.0]})
    fig = plate_heatmap(wells, "v")
    im = fig.axes[0].images[0]
    arr = im.get_array()
    assert arr.shape == (8, 12)
    assert arr[0, 0] == 1.0 and arr[7, 11] == 3.0 and np.ma.is_masked(arr[3, 3])


def test_bar_chart_draws_means_sem_points(tmp_path):
    layout = {f"{r}/{c}": cond for c, cond in enumerate(CONDS4, 1) for r in "ABC"}
    tables = simulate_tables(layout, seed=2)
    pm = pd.DataFrame({"well": list(layout), "condition": list(layout.values()),
                       "replicate": 1, "day": 1.0, "drug": "", "inhibitor": ""})  # fmt: skip
    agg = aggregate_tables(tables, pm, readouts=["foci_per_msc"])
    fig = bar_chart(agg["conditions"], agg["replicates"], "foci_per_msc")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    c = agg["conditions"]
    np.testing.assert_allclose(heights, c["mean"].to_numpy())
    n_points = sum(len(coll.get_offsets()) for coll in ax.collections if coll.get_offsets().size)
    assert n_points >= len(agg["replicates"])  # every replicate drawn
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("***") >= 1  # cytochalasin D vs DMSO
    assert ax.get_ylabel() == READOUTS["foci_per_msc"].label
    png, svg = save_figure(fig, tmp_path / "bar")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:500]


def test_report_without_plate_map_and_errors(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="hcsmito run"):
        build_report(out)
    tables = simulate_tables({"B/2": "DMSO", "B/3": "DMSO"}, seed=0, fields=1)
    (out / "tables").mkdir(parents=True)
    tables["fields"].to_parquet(out / "tables" / "fields.parquet")
    path = build_report(out, readouts=["foci_per_msc"])  # no manifest, no plate map
    text = path.read_text(encoding="utf-8")
    assert "No statistics" in text and "no plate map" in text
    assert len([t for t, _ in _tags(path) if t == "img"]) == 2  # QC + one heatmap


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]  # fmt: skip


def _chromium(page: Path, shot: Path, tmp: Path) -> str:
    cmd = [CHROMIUM, *_FLAGS, f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,2400",
           f"--screenshot={shot}", page.resolve().as_uri()]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.is_file(), res.stderr[-2000:]
    return res.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium absent: apt-get install -y chromium")
def test_report_renders_in_chromium(report96, tmp_path):
    _, path = report96
    # the console check can fail: a page that logs an error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script></body></html>")
    log = _chromium(bad, tmp_path / "bad.png", tmp_path)
    assert re.search(r"CONSOLE.*boom", log)

    shot = tmp_path / "report.png"
    log = _chromium(path, shot, tmp_path)
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln]
    assert not console, console
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    ink = (img < 0.9).any(axis=2).mean()  # share of non-white pixels
    assert 0.05 < ink < 0.9, ink
    assert img.std() > 0.05
    # the header band (dark blue) and figures (colour) are painted
    assert img[:40].mean() < 0.5
    assert len(np.unique((img[600:] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200


def test_qc_heatmap_flags(report96):
    from hcsmito.report.figures import qc_heatmap

    out, _ = report96
    wells = pd.read_parquet(out / "tables" / "wells.parquet")
    grid = qc_heatmap(wells).axes[0].images[0].get_array()
    # 0 ok, 1 some fields failed, 2 all failed, 3 not in the plate map
    assert grid[2, 4] == 1 and grid[3, 6] == 2 and grid[7, 11] == 3
    assert (np.ma.filled(grid, -1) == 0).sum() == 96 - 3
    texts = sorted(t.get_text() for t in qc_heatmap(wells).axes[0].texts)
    assert texts == ["1", "2"]  # failed fields written in their wells


def test_report_lists_flagged_fields_and_what_the_statistics_left_out(tmp_path):
    from hcsmito.qc import QC_FLAGS

    out = tmp_path / "run"
    wells = {"B/2": "DMSO", "B/3": "DMSO", "C/2": "ara-C", "C/3": "ara-C"}
    tables = simulate_tables(wells, seed=3, fields=2)
    f = tables["fields"]
    f["qc_flags"] = pd.array([""] * len(f), dtype="string")
    f.loc[(f["well"] == "C/3") & (f["field"] == 1), "qc_flags"] = "saturated,vignetting"
    f.loc[(f["well"] == "B/2") & (f["field"] == 0), "qc_flags"] = "out_of_focus"
    (out / "tables").mkdir(parents=True)
    for k, v in tables.items():
        v.to_parquet(out / "tables" / f"{k}.parquet")
    pd.DataFrame({"well": list(wells), "condition": list(wells.values())}).to_csv(
        out / "platemap.csv", index=False
    )
    (out / "qc").mkdir()
    mpimg.imsave(out / "qc" / "C3_f1.png", np.kron(np.eye(4), np.ones((32, 32))))
    path = build_report(out, readouts=READ, unit="field", exclude_flags=["saturated"])
    text = path.read_text(encoding="utf-8")
    section = text.split('<section id="flags">', 1)[1].split("</section>", 1)[0]
    # counts per code, in the declaration order of QC_FLAGS
    assert "2 fields flagged: saturated 1, out_of_focus 1, vignetting 1" in section
    for code in ("saturated", "vignetting", "out_of_focus"):
        assert html.escape(QC_FLAGS[code]) in section
    assert "C/3</td><td>1 (left out)" in section and "B/2</td><td>0</td>" in section
    assert 'alt="QC overlay C3_f1"' in section and 'href="qc/C3_f1.png"' in section
    assert "left out <strong>1</strong> field" in section
    assert "1 field left out of the statistics (exclude_flags: saturated)" in text
    cond = pd.read_parquet(out / "tables" / "conditions.parquet").set_index("condition")
    assert cond.loc["ara-C", "n"] == 3 and cond.loc["DMSO", "n"] == 4


def test_condition_names_are_drawn_and_written_literally(tmp_path):
    """Before: a condition name with a "$" pair was parsed as mathtext, and one such as
    "ara-C $\\frac{a}{$" failed the figures: no report. Now the figure text and the HTML
    hold the name as typed."""
    name = r"ara-C $\frac{a}{$ 5 µM & <b>"
    layout = {"B/2": "DMSO", "B/3": name, "B/4": "DMSO", "B/5": name}
    tables = simulate_tables(layout, seed=3, fields=2, null="ara-C")
    out = tmp_path / "run"
    (out / "tables").mkdir(parents=True)
    for k, v in tables.items():
        v.to_parquet(out / "tables" / f"{k}.parquet")
    pd.DataFrame({"well": list(layout), "condition": list(layout.values())}).to_csv(
        out / "platemap.csv", index=False
    )
    path = build_report(out, plate_map=out / "platemap.csv", readouts=READ, unit="well")
    svg = next((out / "figures").glob("bar_*.svg")).read_text(encoding="utf-8")
    assert r"\frac{a}{" in svg.replace("&amp;", "&")  # the text itself, not a formula
    page = path.read_text(encoding="utf-8")
    assert "ara-C $\\frac{a}{$ 5 µM &amp; &lt;b&gt;" in page


# ------------------------------------------------------------- issue 14.8: QC pictures people read


def _qc_field(z=6, y=40, x=60):
    """A small field: one MSC, one Jurkat, two foci and one TNT."""
    rng = np.random.default_rng(1)
    mito, msc = rng.random((z, y, x)) * 50, rng.random((z, y, x)) * 50
    lab = {k: np.zeros((z, y, x), np.int32) for k in ("msc", "jurkat", "foci", "tnt")}
    lab["msc"][:, 5:30, 5:30] = 1
    lab["jurkat"][:, 10:20, 42:55] = 1
    lab["foci"][3, 10:12, 10:12] = 1
    lab["foci"][3, 20:22, 20:22] = 2
    lab["tnt"][3, 15, 30:42] = 1
    return {"mito": mito, "msc": msc}, lab


def test_qc_picture_scale_bar_legend_caption_tnt_upscaled():
    """Before: the QC picture was the field's max projection at one pixel per voxel (a
    160 px field gave a 160 px PNG), with contours only: no scale, legend, caption or TNTs."""
    from hcsmito.report.overlay import (
        LEGEND,
        TNT_COLOR,
        qc_caption,
        qc_overlay,
        qc_picture,
        scale_bar_um,
    )

    channels, labels = _qc_field()
    caption = qc_caption("p", "B/3", 1, "cytochalasin $D$")  # '$' drawn literally
    assert caption == "plate p · well B/3 · field 1 · cytochalasin $D$"
    assert qc_caption("p", "B/3", 0) == "plate p · well B/3 · field 0"
    pic = qc_picture(channels, labels, voxel_size={"z": 0.4, "y": 0.2, "x": 0.2}, caption=caption)
    f = 512 // 60 + 1  # whole voxels: 60 px -> 540 px
    h, w = 40 * f, 60 * f
    assert pic.shape[1] == w and pic.shape[0] > h and pic.dtype == np.float32
    top, bottom = pic[:26], pic[26 : 26 + h]
    legend = pic[26 + h :]
    # the image itself: the overlay, upscaled (contours drawn one pixel wide after upscaling)
    core = qc_overlay(channels, labels, upscale=f)
    assert core.shape[:2] == (h, w)
    # TNT path drawn, where the TNT is
    tnt = np.all(np.isclose(bottom, TNT_COLOR, atol=0.02), axis=-1)
    ys, xs = np.nonzero(tnt)
    assert len(ys) > 10 * f and (ys // f == 15).all() and (30 <= xs // f).all()
    # the legend strip holds each colour it names
    for name, color in LEGEND:
        assert np.all(np.isclose(legend, color, atol=0.02), axis=-1).sum() > 20, name
    # a caption: text in the strip above
    assert (top.max(axis=-1) > 0.8).sum() > 100
    # a scale bar: 12 µm field / 5 -> 2 µm = 10 voxels = 10 * f white pixels, lower right
    assert scale_bar_um(12.0) == 2.0 and scale_bar_um(300.0) == 50.0
    rows = np.all(bottom[h // 2 :, w // 2 :] > 0.98, axis=-1)
    assert abs(rows.sum(axis=1).max() - 10 * f) <= 2
    # a large field is not upscaled
    big_ch = {k: np.tile(v, (1, 15, 10)) for k, v in channels.items()}
    big_lab = {k: np.tile(v, (1, 15, 10)) for k, v in labels.items()}
    assert qc_picture(big_ch, big_lab, voxel_size={"x": 0.2}).shape[1] == 600


def test_qc_picture_in_the_report_links_to_the_full_picture(tmp_path):
    """The report's QC thumbnail opens the full picture."""
    from hcsmito.io.rundir import RunDir
    from hcsmito.report.html import _qc_html
    from hcsmito.report.overlay import qc_picture

    channels, labels = _qc_field()
    rd = RunDir(tmp_path)
    rd.write_png(rd.qc_png("B3_f0"), qc_picture(channels, labels, voxel_size={"x": 0.2}),
                 title="plate p · well B/3 · field 0")  # fmt: skip
    from PIL import Image

    assert Image.open(rd.qc_png("B3_f0")).text["Title"] == "plate p · well B/3 · field 0"
    section = _qc_html(tmp_path, pd.DataFrame())
    assert re.search(r'<a href="qc/B3_f0.png"><img src="data:image/png;base64,', section)
