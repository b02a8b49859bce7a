"""Per-cell markers (annexin V): intensities against scikit-image, the positive call on
hand-made and generated cells, and the errors of a marker the plate or config gets wrong."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.measure import regionprops_table

from hcsmito.config import load_config
from hcsmito.config.load import ConfigError
from hcsmito.io.writer import create_plate, write_image
from hcsmito.runner import run_plate
from hcsmito.stages.markers import (
    MarkerLevels,
    call_positive,
    marker_levels,
    measure_cells,
    measure_marker,
)
from hcsmito.synth import SynthParams, generate_field


def test_cell_means_and_sums_equal_scikit_image():
    rng = np.random.default_rng(0)
    labels = np.zeros((6, 40, 40), np.int32)
    labels[1:4, 5:15, 5:15], labels[2:5, 20:35, 22:30], labels[:, 36:, :4] = 1, 2, 3
    image = rng.poisson(100, labels.shape).astype(np.uint16)
    mean, total = measure_cells(image, labels)
    ref = regionprops_table(labels, image, properties=("label", "intensity_mean", "area"))
    np.testing.assert_allclose(mean, ref["intensity_mean"])
    np.testing.assert_allclose(total, ref["intensity_mean"] * ref["area"])


def test_auto_call_follows_the_cells_that_stand_out_not_the_stain_level():
    levels = MarkerLevels(level=100.0, sigma=5.0)
    contrast = np.array([-3.0, -2, -4, -1, 60, -3, 45])
    called, thr = call_positive(contrast, levels)
    assert called.tolist() == [False] * 4 + [True, False, True] and thr == 10.0
    # unspecific staining lifts every cell by 30: the same cells stand out, above the
    # lower quartile of the cells (27 by hand: the 2nd and 3rd lowest, -3 + 30) + 2 sigma
    called, thr = call_positive(contrast + 30, levels)
    assert called.tolist() == [False] * 4 + [True, False, True] and thr == pytest.approx(37.0)
    # a threshold by hand wins
    assert call_positive(contrast, levels, threshold=50)[0].sum() == 1
    # five of eight cells positive (a chemotherapy field): the median (a positive cell)
    # would leave most unmarked; the quartile stays on the unstained cells
    many = np.array([-2.0, 80, -1, 95, 70, 0, 88, 75])
    called, thr = call_positive(many, levels)
    assert called.tolist() == [c > 50 for c in many] and thr == pytest.approx(10.0)


def _projected_field():
    """A hand-made 2-D projection: medium at 100, an MSC (rows 10-69, columns 10-89)
    stained +80 (apoptotic), a live donor over it (+0 of its own: it shows the MSC's +80),
    an apoptotic donor over it (+150 on its 2-pixel rim over the MSC's +80), a live donor
    and an apoptotic one (+150 rim) on the medium; 0.3 µm pixels."""
    image = np.full((80, 200), 100.0, np.float32)
    msc = np.zeros(image.shape, np.int32)
    msc[10:70, 10:90] = 1
    image[msc == 1] += 80
    donors = np.zeros(image.shape, np.int32)
    boxes = {1: (20, 40, 20, 40), 2: (40, 60, 55, 75), 3: (20, 40, 140, 160), 4: (50, 70, 140, 160)}
    for i, (y0, y1, x0, x1) in boxes.items():
        donors[y0:y1, x0:x1] = i
        if i in (2, 4):
            rim = np.zeros(image.shape, bool)
            rim[y0:y1, x0:x1] = True
            rim[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = False
            image[rim] += 150
    rng = np.random.default_rng(0)
    return image + rng.normal(0, 1, image.shape).astype(np.float32), donors, msc


def test_a_donor_over_a_stained_msc_is_measured_above_the_msc_not_the_medium():
    """2-D: the live donor over the apoptotic MSC has the MSC's +80 in every pixel; its
    contrast is its mean less the MSC's level near it (0 by construction), the apoptotic
    donor's is its rim's share of +150 (144 of 400 pixels: 54), and the MSC is measured
    on its pixels away from the donors (+80), not with their rims."""
    image, donors, msc = _projected_field()
    levels, donor, cell = measure_marker(image, donors, msc, spacing=(0.3, 0.3))
    rim = 150 * (400 - 16 * 16) / 400
    np.testing.assert_allclose(donor.contrast, [0, rim, 0, rim], atol=1.0)
    np.testing.assert_allclose(cell.contrast, [80], atol=0.5)
    # the raw measures are the labels' own (regionprops), the field level the medium
    ref = regionprops_table(donors, image, properties=("intensity_mean", "area"))
    np.testing.assert_allclose(donor.mean, ref["intensity_mean"], rtol=1e-6)
    np.testing.assert_allclose(donor.sum, ref["intensity_mean"] * ref["area"], rtol=1e-5)
    assert abs(levels.level - 100) < 1
    called, _ = call_positive(np.concatenate([donor.contrast, cell.contrast]), levels)
    assert called.tolist() == [False, True, False, True, True]
    # labels that do not overlap (a 3-D field): the contrast is the mean above the level
    apart = np.where(msc > 0, 0, donors)
    _, d2, c2 = measure_marker(image, apart, msc, spacing=(0.3, 0.3))
    np.testing.assert_allclose(d2.contrast, d2.mean - levels.level)
    np.testing.assert_allclose(c2.contrast, c2.mean - levels.level)


def test_marker_levels_read_the_medium():
    rng = np.random.default_rng(1)
    image = rng.normal(120, 6, (8, 64, 64)).astype(np.float32)
    image[:, 10:20, 10:20] += 80  # one bright cell
    lv = marker_levels(image)
    assert abs(lv.level - 120) < 2 and abs(lv.sigma - 6) < 1


def test_annexin_call_equals_the_generators_apoptotic_cells(fate_field):
    f, r = fate_field
    cols = ["z_um", "y_um", "x_um"]
    tj, dj = f.tables["jurkat"], r.tables["jurkat"]
    d, i = cKDTree(tj[cols].to_numpy()).query(dj[cols].to_numpy(), distance_upper_bound=5.0)
    ok = np.isfinite(d)
    assert ok.sum() >= len(tj) - 1
    np.testing.assert_array_equal(dj["annexin_positive"].to_numpy()[ok],
                                  tj["apoptotic"].to_numpy()[i[ok]])  # fmt: skip
    fields = r.tables["fields"].iloc[0]
    assert fields["n_jurkat_annexin_positive"] == dj["annexin_positive"].sum()
    # MSC: the generator's apoptotic MSCs (a ring on a large cell) are called too
    tm, dm = f.tables["msc"], r.tables["cells"]
    d, i = cKDTree(tm[["y_um", "x_um"]].to_numpy()).query(dm[["y_um", "x_um"]].to_numpy())
    np.testing.assert_array_equal(dm["annexin_positive"].to_numpy(),
                                  tm["apoptotic"].to_numpy()[i])  # fmt: skip


def test_unknown_marker_in_the_config_is_an_error():
    with pytest.raises(ConfigError, match=r"markers.threshold.*unknown markers \['caspase'\]"):
        load_config(overrides=["markers.threshold={caspase: 10}"])


def test_a_marker_the_config_names_but_the_plate_lacks_fails_before_any_field(tmp_path):
    f = generate_field(SynthParams(shape=(14, 64, 64), n_msc=1, n_jurkat=1), seed=3)
    plate = tmp_path / "p.zarr"
    create_plate(plate, wells=["B/2", "B/3"], fields_per_well=1)
    for well in ("B/2", "B/3"):
        write_image(plate, well, 0, f.image, axes="czyx", voxel_size=f.voxel_size,
                    channel_labels=list(f.channel_labels))  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text("channels:\n  annexin: AnnexinV\n")
    with pytest.raises(Exception, match="AnnexinV") as err:
        run_plate(plate, tmp_path / "out", config=load_config(cfg), scheduler="threads", workers=1,
                  backend="cpu", progress=False)  # fmt: skip
    assert "channels.annexin" in str(err.value)
    assert not (tmp_path / "out" / "ledger").exists() or not any(
        (tmp_path / "out" / "ledger").iterdir()
    )


def test_marker_calibration_on_control_wells_sets_the_share_and_recounts_fields():
    """Two wells of controls, two treated: the calibrated threshold leaves at most 10 % of
    the control cells positive, and every field's count is recomputed from its cells."""
    import pandas as pd

    from hcsmito.aggregate import aggregate_tables

    rng = np.random.default_rng(5)
    key = []
    for w, treated in (("B/2", 0), ("B/3", 0), ("C/2", 1), ("C/3", 1)):
        for cid in range(1, 21):
            bright = rng.random() < (0.05 if not treated else 0.5)
            key.append((w, cid, 100 + rng.normal(3, 1) + (60 if bright else 0)))
    jurkat = pd.DataFrame(key, columns=["well", "jurkat_id", "annexin_mean"]).assign(
        plate="p", field=0
    )
    fields = pd.DataFrame({"plate": "p", "well": ["B/2", "B/3", "C/2", "C/3"], "field": 0,
                           "n_msc": 0, "n_jurkat": 20, "status": "ok",
                           "annexin_background": 100.0, "annexin_threshold": 10.0,
                           "n_jurkat_annexin_positive": pd.array([0] * 4, dtype="Int64"),
                           "n_msc_annexin_positive": pd.array([0] * 4, dtype="Int64")})  # fmt: skip
    pm = pd.DataFrame({"well": ["B/2", "B/3", "C/2", "C/3"],
                       "condition": ["DMSO", "DMSO", "ara-C", "ara-C"], "replicate": [1, 2, 1, 2],
                       "day": 1.0})  # fmt: skip
    res = aggregate_tables({"fields": fields, "jurkat": jurkat}, pm, calibrate_markers=["DMSO"],
                           readouts=["pct_jurkat_annexin_positive"])  # fmt: skip
    rule = res["summary"]["marker_calibration"]["annexin"]
    assert rule["share"] <= 0.1 and rule["n_cells"] == 40
    contrast = jurkat["annexin_mean"] - 100.0
    expected = (contrast > rule["threshold"]).groupby(jurkat["well"]).sum()
    wells = res["wells"].set_index("well")
    for w in expected.index:
        assert wells.loc[w, "pct_jurkat_annexin_positive"] == pytest.approx(100 * expected[w] / 20)
    with pytest.raises(ValueError, match="not in the plate map"):
        aggregate_tables({"fields": fields, "jurkat": jurkat}, pm, calibrate_markers=["PBS"])


def _casp3_plate(tmp_path, label="Casp3"):
    """Two wells (DMSO, ara-C) of one small 2-D field each, their annexin V channel
    labelled ``label``: a marker no built-in role matches; the generator's truth says
    which cells carry it."""
    plate = tmp_path / "p.zarr"
    create_plate(plate, wells=["B/2", "B/3"], fields_per_well=1)
    truth = {}
    p = SynthParams(shape=(192, 192), n_msc=2, n_jurkat=10, annexin_channel=True)
    for well, cond in (("B/2", "DMSO"), ("B/3", "ara-C")):
        f = generate_field(p, cond, seed=4)
        labels = [label if c == "Annexin V" else c for c in f.channel_labels]
        write_image(plate, well, 0, f.image, axes="cyx", voxel_size=f.voxel_size,
                    channel_labels=labels)  # fmt: skip
        truth[well] = f.tables
    pm = tmp_path / "map.csv"
    pm.write_text("well,condition\nB/2,DMSO\nB/3,ara-C\n")
    return plate, pm, truth


def test_a_marker_the_config_names_is_measured_called_and_reported(tmp_path, capsys):
    """A "Casp3" channel named in markers.channels: every donor and MSC gets casp3_mean,
    _sum, _contrast, _positive (the donors' calls are the generator's apoptotic cells),
    each field its counts, threshold and background; ``report --calibrate-markers DMSO``
    calibrates it (at most 10 % of the DMSO cells positive) and gives the wells % casp3+
    recounted from their cells, and the conditions and report.html its readouts; the
    columns have the dtypes schema.MARKER_COLUMNS declares. Without the config entry the
    same plate's tables are the same, less the casp3 columns."""
    import pandas as pd

    from hcsmito import schema
    from hcsmito.aggregate import read_aggregates, read_tables
    from hcsmito.cli import main

    plate, pm, truth = _casp3_plate(tmp_path)
    kw = dict(plate_map=pm, scheduler="threads", workers=1, backend="cpu", progress=False,
              report=False)  # fmt: skip
    cfg = load_config(overrides=["markers.channels=[Casp3]"])
    assert run_plate(plate, tmp_path / "out", config=cfg, **kw).ok
    t = read_tables(tmp_path / "out")
    for name in ("cells", "jurkat", "fields"):
        for col in schema.marker_columns(name, "casp3"):
            assert str(t[name][col.name].dtype) == str(pd.Series(dtype=col.dtype).dtype), col
    assert schema.markers_in(t["fields"].columns) == ("casp3",)
    jur = t["jurkat"]
    for well, tables in truth.items():
        tj, dj = tables["jurkat"], jur[jur["well"] == well]
        d, i = cKDTree(tj[["y_um", "x_um"]].to_numpy()).query(
            dj[["y_um", "x_um"]].to_numpy(), distance_upper_bound=5.0
        )
        ok = np.isfinite(d)
        assert ok.sum() >= len(tj) - 1
        np.testing.assert_array_equal(dj["casp3_positive"].to_numpy()[ok],
                                      tj["apoptotic"].to_numpy()[i[ok]])  # fmt: skip
    assert jur["casp3_positive"].sum() >= 3  # ara-C: apoptotic donors to find
    fields = t["fields"].set_index("well")
    per_well = jur.groupby("well")["casp3_positive"].sum()
    assert (fields["n_jurkat_casp3_positive"] == per_well.reindex(fields.index)).all()
    # the report, calibrated on DMSO: at most 10 % of its cells (donors and MSCs) above
    # the threshold, the wells' % recounted from their cells' contrast
    assert main(["report", str(tmp_path / "out"), "--calibrate-markers", "DMSO"]) == 0
    capsys.readouterr()
    agg = read_aggregates(tmp_path / "out")
    rule = agg["summary"]["marker_calibration"]["casp3"]
    dmso = pd.concat(
        [t[n].loc[t[n]["well"] == "B/2", "casp3_contrast"] for n in ("jurkat", "cells")]
    )
    assert rule["n_cells"] == len(dmso) and (dmso > rule["threshold"]).mean() <= 0.1
    recount = jur.assign(pos=jur["casp3_contrast"] > rule["threshold"]).groupby("well")["pos"]
    expect = 100 * recount.sum() / recount.size()
    wells = agg["wells"].set_index("well")
    np.testing.assert_allclose(wells.loc[expect.index, "pct_jurkat_casp3_positive"], expect)
    cond = agg["conditions"]
    got = cond.loc[cond["readout"] == "pct_jurkat_casp3_positive", ["condition", "label"]]
    assert set(got["condition"]) == {"DMSO", "ara-C"}
    assert set(got["label"]) == {"Jurkat casp3+ (%)"}
    assert "Jurkat casp3+ (%)" in (tmp_path / "out" / "report.html").read_text()
    # without the config entry: the same tables, less the marker's columns and the QC
    # flag of its channel where it is blank (DMSO: no casp3+ cell; as for annexin V)
    assert run_plate(plate, tmp_path / "plain", **kw).ok
    plain = read_tables(tmp_path / "plain")
    flags = t["fields"]["qc_flags"].str.replace("empty_channel", "").str.strip(",")
    t["fields"] = t["fields"].assign(qc_flags=flags.astype(t["fields"]["qc_flags"].dtype))
    for name, df in plain.items():
        drop = [c.name for c in schema.marker_columns(name, "casp3")]
        pd.testing.assert_frame_equal(t[name].drop(columns=drop), df)


def test_a_config_marker_the_plate_lacks_is_one_line_before_any_field(tmp_path):
    plate, _, _ = _casp3_plate(tmp_path, label="Cy5")
    cfg = load_config(overrides=["markers.channels={casp3: Casp3}"])
    with pytest.raises(Exception, match="marker 'casp3' = 'Casp3' matches no channel") as err:
        run_plate(plate, tmp_path / "out", config=cfg, scheduler="threads", workers=1,
                  backend="cpu", progress=False)  # fmt: skip
    assert "markers.channels.casp3" in str(err.value) and "\n" not in str(err.value)
    assert "Cy5" in str(err.value)  # the labels present
    ledger = tmp_path / "out" / "ledger"
    assert not ledger.exists() or not any(ledger.iterdir())


def test_an_empty_table_keeps_its_markers_columns_typed(tmp_path):
    """A table without rows (a field without cells) written as Parquet: each marker's
    columns, found by their names (schema.markers_in), take the declared types, not
    Arrow's null type of an empty object column."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hcsmito import schema
    from hcsmito.io.rundir import RunDir

    rd = RunDir(tmp_path)
    rd.tables_dir.mkdir(parents=True)
    arrow = {"float64": pa.float64(), "bool": pa.bool_(), "Int64": pa.int64()}
    for name in ("cells", "jurkat", "fields"):
        cols = [c.name for m in ("annexin", "casp3") for c in schema.marker_columns(name, m)]
        df = schema.empty_table(name, keys=True).assign(
            **{c: pd.Series(dtype=object) for c in cols}
        )
        got = pq.read_schema(rd.write_table(name, df))
        for m in ("annexin", "casp3"):
            for col in schema.marker_columns(name, m):
                assert got.field(col.name).type == arrow[col.dtype], (name, col.name)
