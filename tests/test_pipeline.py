"""The fused per-field chain against the generator's truth and on awkward fields."""

import numpy as np
import pandas as pd
import pytest

from hcsmito.config import load_config
from hcsmito.pipeline import process_field
from hcsmito.schema import TABLES, field_tables
from hcsmito.synth import SynthParams, generate_field

ROLES = {"msc": 0, "mito": 1, "actin": 2}


@pytest.fixture(scope="module")
def field():
    p = SynthParams().model_copy(update={"shape": (22, 192, 192), "n_msc": 3, "n_jurkat": 3})
    return generate_field(p, condition="DMSO", seed=11)


def _channels(f, roles=ROLES):
    return {r: f.image[i] for r, i in roles.items()}


def _check_schema(tables):
    assert list(tables) == list(field_tables())
    for name in field_tables():
        cols = TABLES[name].dtypes
        assert list(tables[name].columns[: len(cols)]) == list(cols), name
    assert len(tables["fields"]) == 1


def test_counts_match_truth(field):
    res = process_field(
        _channels(field), voxel_size=field.voxel_size, config=load_config(), backend="cpu"
    )
    _check_schema(res.tables)
    row = res.tables["fields"].iloc[0]
    truth = field.tables
    assert row["n_msc"] == len(truth["msc"])
    assert abs(row["n_jurkat"] - len(truth["jurkat"])) <= 1
    assert abs(row["n_foci"] - len(truth["foci"])) <= max(1, 0.1 * len(truth["foci"]))
    # per-cell sums are consistent with the foci table
    cells, foci = res.tables["cells"], res.tables["foci"]
    inside = foci[foci["cell_id"] > 0]
    assert cells["n_foci"].sum() == len(inside)
    np.testing.assert_allclose(cells["foci_volume_um3"].sum(), inside["volume_um3"].sum())
    assert row["n_msc_red_positive"] == (cells["n_foci"] >= 1).sum()
    # the field's projected foci area never exceeds the sum of the foci's projected areas
    assert 0 < row["foci_area_um2"] <= inside["area_um2"].sum() + 1e-9
    assert set(res.labels) == {"msc", "jurkat", "foci", "tnt"}
    assert res.labels["foci"].max() == len(foci)
    assert abs(row["n_tnt"] - len(truth["tnt"])) <= 1
    # exact adhesion counts over many fields are the adhesion tests' job; here: plumbing
    assert abs(row["n_jurkat_adhered"] - int(truth["jurkat"]["adhered"].sum())) <= 1
    jur = res.tables["jurkat"]
    assert (jur.loc[jur["adhered"], "msc_id"] > 0).all()
    assert (jur.loc[~jur["adhered"], "msc_id"] == 0).all()
    assert cells["n_adhered_jurkat"].sum() == jur["adhered"].sum()


def test_without_actin_tnt_columns_are_null(field):
    ch = {"msc": field.image[0], "mito": field.image[1]}
    res = process_field(ch, voxel_size=field.voxel_size, config=load_config(), backend="cpu")
    row = res.tables["fields"].iloc[0]
    assert pd.isna(row["n_tnt"]) and pd.isna(row["n_tnt_with_mito"])
    assert any("no actin channel" in n for n in res.notes)
    assert "tnt" not in res.labels and len(res.tables["tnt"]) == 0


def test_raw_intensity_columns_measure_the_raw_channel(field):
    res = process_field(
        _channels(field), voxel_size=field.voxel_size, config=load_config(), backend="cpu"
    )
    foci = res.tables["foci"]
    lab = res.labels["foci"]
    mito = field.image[1].astype(np.float64)
    for _, r in foci.head(5).iterrows():
        vals = mito[lab == r["focus_id"]]
        assert r["intensity_sum"] == pytest.approx(vals.sum())
        assert r["intensity_max"] == pytest.approx(vals.max())


def test_deconvolution_variant_adds_decon_columns(field):
    cfg = load_config(
        overrides=["deconvolution.method=richardson_lucy", "deconvolution.iterations=3"]
    )
    res = process_field(_channels(field), voxel_size=field.voxel_size, config=cfg, backend="cpu")
    assert "mito" in res.processed and res.processed["mito"].dtype == np.float32
    assert "intensity_mean_decon" in res.tables["foci"].columns
    assert "deconvolve" in res.timings
    # the transform option reaches the stage: padded FFTs give the same image away from
    # the borders (2 · iterations · PSF half-width), another one at them
    from hcsmito.pipeline.prepare import psf_for
    from hcsmito.stages.deconvolution import richardson_lucy

    one = ["deconvolution.method=richardson_lucy", "deconvolution.iterations=1"]
    out = {}
    for transform in ("auto", "fft"):
        c = load_config(overrides=[*one, f"deconvolution.transform={transform}"])
        out[transform] = process_field(
            _channels(field), voxel_size=field.voxel_size, config=c, backend="cpu"
        ).processed["mito"]
    psf = psf_for(c.deconvolution, c.optics, "mito", tuple(field.voxel_size[a] for a in "zyx"))
    direct = richardson_lucy(field.image[1], psf, iterations=1, transform="fft")
    np.testing.assert_array_equal(out["fft"], direct)
    inner = tuple(
        slice(2 * (k // 2), n - 2 * (k // 2)) for k, n in zip(psf.shape, direct.shape, strict=True)
    )
    assert direct[inner].size > 0.5 * direct.size, (psf.shape, direct.shape)
    np.testing.assert_allclose(out["auto"][inner], direct[inner], rtol=1e-4, atol=1e-3)
    assert not np.array_equal(out["auto"], direct)


def test_decon_intensities_measure_the_deconvolved_image_not_background_subtracted(field):
    cfg = load_config(
        overrides=[
            "deconvolution.method=richardson_lucy",
            "deconvolution.iterations=2",
            "background.method=gaussian",
        ]
    )
    res = process_field(_channels(field), voxel_size=field.voxel_size, config=cfg, backend="cpu")
    assert "background" in res.timings
    foci, lab, dec = res.tables["foci"], res.labels["foci"], res.processed["mito"]
    assert len(foci)
    for _, r in foci.head(3).iterrows():
        vals = dec[lab == r["focus_id"]].astype(np.float64)
        assert r["intensity_mean_decon"] == pytest.approx(vals.mean(), rel=1e-5)


def test_without_msc_channel_foci_cover_the_field(field):
    res = process_field(
        {"mito": field.image[1]}, voxel_size=field.voxel_size, config=load_config(), backend="cpu"
    )
    assert res.notes and "no msc channel" in res.notes[0]
    assert (res.tables["foci"]["cell_id"] == 0).all()
    assert len(res.tables["cells"]) == 0
    assert res.tables["fields"]["n_foci"].iloc[0] == len(res.tables["foci"]) > 0


def test_two_d_field():
    p = SynthParams().model_copy(update={"shape": (192, 192), "n_msc": 3, "n_jurkat": 3})
    f = generate_field(p, condition="DMSO", seed=2)
    res = process_field(_channels(f), voxel_size=f.voxel_size, config=load_config(), backend="cpu")
    _check_schema(res.tables)
    assert res.labels["msc"].ndim == 2
    assert res.tables["foci"]["volume_um3"].isna().all()


@pytest.mark.parametrize("kind", ["zeros", "saturated", "one_pixel"])
def test_degenerate_fields_give_empty_tables(kind):
    shape = (12, 64, 64)
    img = np.zeros(shape, np.uint16)
    if kind == "saturated":
        img[:] = 65535
    elif kind == "one_pixel":
        img[6, 32, 32] = 4000
    res = process_field(
        {"msc": img, "mito": img},
        voxel_size={"z": 0.5, "y": 0.2, "x": 0.2},
        config=load_config(),
        backend="cpu",
    )
    _check_schema(res.tables)
    assert len(res.tables["foci"]) == 0
    assert res.tables["fields"]["status"].iloc[0] == "ok"


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="no 'mito' channel"):
        process_field(
            {"msc": np.zeros((4, 4))},
            voxel_size={"y": 1, "x": 1},
            config=load_config(),
            where="plate p, well B/3, field 0",
        )
    with pytest.raises(ValueError, match="well B/3.*differ in shape"):
        process_field(
            {"msc": np.zeros((4, 4)), "mito": np.zeros((4, 5))},
            voxel_size={"y": 1, "x": 1},
            config=load_config(),
            where="plate p, well B/3, field 0",
        )


def test_gpu_pipeline_equals_cpu(field, gpu):
    cfg = load_config()
    cpu = process_field(_channels(field), voxel_size=field.voxel_size, config=cfg, backend="cpu")
    dev = process_field(_channels(field), voxel_size=field.voxel_size, config=cfg, backend=gpu)
    for name in ("foci", "cells", "jurkat", "fields"):
        pd.testing.assert_frame_equal(
            dev.tables[name], cpu.tables[name], check_exact=False, rtol=1e-4
        )


def test_foci_table_equals_scikit_image_with_contract_names():
    from skimage.measure import label, regionprops_table

    from hcsmito.measure.morphometry import regionprops_table as ours
    from hcsmito.pipeline.tables import foci_table as _foci_table

    rng = np.random.default_rng(4)
    labels = label(rng.random((8, 40, 50)) > 0.93)
    cells = np.zeros(labels.shape, np.int32)
    cells[:, :, 25:] = 7
    mito = rng.integers(0, 4000, labels.shape).astype(np.uint16)
    spacing = (0.5, 0.2, 0.1)
    t = ours(labels, [mito], spacing=spacing, parents={"parent": cells})
    df = _foci_table(t, 3, decon=False)
    assert list(df.columns) == list(TABLES["foci"].dtypes)
    ref = regionprops_table(
        labels,
        mito,
        spacing=spacing,
        properties=[
            "label",
            "centroid",
            "area",
            "intensity_max",
            "intensity_mean",
            "equivalent_diameter_area",
            "axis_major_length",
        ],
    )
    np.testing.assert_array_equal(df["focus_id"], ref["label"])
    for ours_col, ref_col in [
        ("z_um", "centroid-0"),
        ("y_um", "centroid-1"),
        ("x_um", "centroid-2"),
        ("volume_um3", "area"),
        ("intensity_max", "intensity_max"),
        ("intensity_mean", "intensity_mean"),
        ("equivalent_diameter_um", "equivalent_diameter_area"),
        ("axis_major_length_um", "axis_major_length"),
    ]:
        np.testing.assert_allclose(df[ours_col], ref[ref_col], rtol=1e-5, err_msg=ours_col)
    majority = [7 if (cells[labels == i] == 7).mean() > 0.5 else 0 for i in ref["label"]]
    np.testing.assert_array_equal(df["cell_id"], majority)


# --------------------------------------------------------------------------- QC flags


@pytest.fixture(scope="module")
def small_field():
    p = SynthParams(shape=(16, 128, 128), n_msc=2, n_jurkat=2).varied(cell_size=0.6)
    return generate_field(p, condition="DMSO", seed=3)


def test_fields_row_carries_qc_flags_and_glass(small_field):
    from hcsmito.qc import join_flags

    f = small_field
    res = process_field(_channels(f), voxel_size=f.voxel_size, config=load_config(), backend="cpu")
    row = res.tables["fields"]
    _check_schema(res.tables)
    assert str(row["qc_flags"].dtype) == "string" and str(row["glass_source"].dtype) == "string"
    assert row["qc_flags"].iloc[0] == join_flags(res.qc_flags) == ""  # a default field
    assert row["status"].iloc[0] == "ok"
    # the TNT stage ran: its glass plane (the generator's glass is at 1 µm)
    assert abs(row["glass_z_um"].iloc[0] - 1.0) < 1.0
    assert row["glass_source"].iloc[0] != ""
    assert res.qc["snr.mito"] > 10
    # no actin: no TNT stage, no glass
    no_actin = {"msc": f.image[0], "mito": f.image[1]}
    res2 = process_field(no_actin, voxel_size=f.voxel_size, config=load_config(), backend="cpu")
    row2 = res2.tables["fields"].iloc[0]
    assert np.isnan(row2["glass_z_um"]) and row2["glass_source"] == ""


def _with_flags(monkeypatch, module, name, flags):
    """Make stage ``module.name`` return its result plus a ``flags`` attribute (a dataclass
    like the stage's own, which the pipeline copies with ``dataclasses.replace``)."""
    import dataclasses
    import importlib

    mod = importlib.import_module(module)
    real = getattr(mod, name)

    def stage(*args, **kw):
        res = real(*args, **kw)
        cls = dataclasses.make_dataclass(
            type(res).__name__, [("flags", tuple, dataclasses.field(default=()))],
            bases=(type(res),), frozen=type(res).__dataclass_params__.frozen,
        )  # fmt: skip
        own = {f.name: getattr(res, f.name) for f in dataclasses.fields(res) if f.init}
        return cls(**{**own, "flags": flags})

    monkeypatch.setattr(mod, name, stage)


def test_stage_flags_are_collected_in_declaration_order(small_field, monkeypatch):
    f = small_field
    _with_flags(monkeypatch, "hcsmito.stages.tnt", "detect_tnts", ("glass_implausible",))
    _with_flags(
        monkeypatch, "hcsmito.stages.segmentation", "segment_jurkat", ("donor_covers_field",)
    )
    img = f.image.copy()
    img[0] = np.minimum(img[0], np.percentile(img[0], 99.0)).astype(img.dtype)  # + saturated
    channels = {r: img[i] for r, i in ROLES.items()}
    res = process_field(channels, voxel_size=f.voxel_size, config=load_config(), backend="cpu")
    assert res.qc_flags == ("glass_implausible", "donor_covers_field", "saturated")
    assert res.tables["fields"]["qc_flags"].iloc[0] == (
        "glass_implausible,donor_covers_field,saturated"
    )
    assert res.tables["fields"]["status"].iloc[0] == "ok"


def test_unknown_stage_flag_is_a_programming_error(small_field, monkeypatch):
    f = small_field
    _with_flags(monkeypatch, "hcsmito.stages.foci", "detect_foci", ("bogus",))
    with pytest.raises(ValueError, match=r"'bogus'.*stage foci"):
        process_field(_channels(f), voxel_size=f.voxel_size, config=load_config(), backend="cpu")


def test_every_deconvolution_option_has_an_implementation():
    """The pipeline dispatches on the option's type: adding an option to the config's
    union without its implementation fails here, not in a run."""
    import typing

    from hcsmito.config import Config
    from hcsmito.pipeline.prepare import deconvolve

    options = typing.get_args(Config.model_fields["deconvolution"].annotation)
    assert options and all(
        deconvolve.dispatch(o) is not deconvolve.dispatch(object) for o in options
    )
    with pytest.raises(TypeError, match="no deconvolution for str"):
        deconvolve("wiener", {})


def test_stage_peaks_only_under_tracemalloc():
    """Per-stage host memory peaks (benchmarks/bench_field.py) are recorded while
    tracemalloc traces, for every timed stage, and at least one float32 copy of a channel
    for the stages that smooth one; without tracing nothing is recorded."""
    import tracemalloc

    f = generate_field(SynthParams(shape=(14, 96, 96)), condition="ara-C", seed=4)
    roles = {"msc": f.image[0], "mito": f.image[1], "actin": f.image[2]}
    plain = process_field(roles, voxel_size=f.voxel_size, config=load_config(), backend="cpu")
    assert plain.peak_bytes == {}
    tracemalloc.start()
    try:
        traced = process_field(roles, voxel_size=f.voxel_size, config=load_config(),
                               backend="cpu")  # fmt: skip
    finally:
        tracemalloc.stop()
    assert set(traced.peak_bytes) == set(traced.timings)
    one_copy = f.image[0].size * 4
    for stage in ("segment_msc", "foci", "tnt"):
        assert traced.peak_bytes[stage] >= one_copy, stage
    for name, table in plain.tables.items():
        pd.testing.assert_frame_equal(table, traced.tables[name])
