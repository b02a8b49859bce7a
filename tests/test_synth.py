"""The synthetic co-culture generator: determinism, truth checked against the pixels written,
conditions, 2-D fields, parameter variations and the plate on disk."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from hcsmito.synth import (
    CONDITIONS,
    VARIATIONS,
    SynthParams,
    field_seed,
    generate_field,
    read_truth,
    resolve_condition,
    variation_params,
    write_synth_plate,
)

SMALL = SynthParams(shape=(24, 192, 192), n_msc=2, n_jurkat=5, msc_diameter_um=40.0)
# the same physical field on coarse voxels: for tests of the truth counts alone
COARSE = SMALL.varied(voxel_size=2.0)


@pytest.fixture(scope="module")
def field():
    """A default DMSO field (nanotubes twice as frequent) with its noise-free image."""
    return generate_field(SynthParams(tnt_rate=2.0), condition="DMSO", seed=3, return_expected=True)


def _voxel(f):
    return np.asarray(f.params.voxel_size)


def test_layout_of_a_field(field):
    p = field.params
    assert field.image.dtype == np.uint16
    assert field.image.shape == (3, *p.shape)
    assert field.channel_labels == ("GFP", "MitoTracker Red", "Phalloidin")
    assert field.voxel_size == {"z": 0.6, "y": 0.3, "x": 0.3}
    for name in ("msc", "jurkat", "foci", "tnt"):
        assert field.labels[name].dtype == np.int32
        assert field.labels[name].shape == p.shape
    s = field.summary
    assert s["n_msc"] >= 3 and 5 <= s["n_jurkat"] <= p.n_jurkat + p.n_jurkat_spread
    assert s["n_foci"] > 0
    # camera: offset + background where nothing is, and no wrap-around
    empty = (field.labels["msc"] == 0) & (field.labels["jurkat"] == 0)
    bg = field.image[0][empty].astype(float)
    assert abs(np.median(bg) - (p.offset + p.background)) < 3


def test_same_seed_same_bytes_other_seed_differs():
    a = generate_field(SMALL, "DMSO", seed=11)
    b = generate_field(SMALL, "DMSO", seed=11)
    c = generate_field(SMALL, "DMSO", seed=12)
    assert a.image.tobytes() == b.image.tobytes()
    for k in a.labels:
        assert a.labels[k].tobytes() == b.labels[k].tobytes()
    for k in a.tables:
        pd.testing.assert_frame_equal(a.tables[k], b.tables[k])
    assert a.image.tobytes() != c.image.tobytes()
    assert a.labels["msc"].tobytes() != c.labels["msc"].tobytes()


def test_msc_labels_tile_and_match_table(field):
    msc = field.labels["msc"]
    t = field.tables["msc"]
    n = len(t)
    assert list(t["cell_id"]) == list(range(1, n + 1))
    assert set(np.unique(msc)) == set(range(n + 1))
    # one cell per (y, x) column: cells are flat and tile the dish without overlap
    top = msc.max(0)
    low = np.where(msc > 0, msc, n + 1).min(0)
    assert np.array_equal(np.where(top > 0, low, 0), top)
    # cells touch each other: some pixel of one cell borders another cell
    touching = (top[:, 1:] != top[:, :-1]) & (top[:, 1:] > 0) & (top[:, :-1] > 0)
    assert touching.any()
    # volumes, centroids and border flags against scipy
    vox = _voxel(field)
    counts = np.bincount(msc.ravel(), minlength=n + 1)[1:]
    np.testing.assert_allclose(t["volume_um3"], counts * vox.prod())
    com = np.asarray(ndi.center_of_mass(msc > 0, msc, range(1, n + 1))) * vox
    np.testing.assert_allclose(t[["z_um", "y_um", "x_um"]].to_numpy(), com, atol=1e-6)
    edge = np.unique(np.concatenate([top[0], top[-1], top[:, 0], top[:, -1]]))
    assert set(t.loc[t["touches_border"], "cell_id"]) == set(edge) - {0}
    # MSCs are thin: 1-7 µm
    heights = (msc > 0).sum(0)[top > 0] * vox[0]
    assert heights.min() >= 0.6 and heights.max() <= 7.0
    # GFP is where MSCs are
    g = field.expected[0]
    assert g[msc > 0].mean() > 10 * (g[(msc == 0) & (field.labels["jurkat"] == 0)].mean() - 10)


def test_jurkat_truth_matches_pixels(field):
    jur, msc = field.labels["jurkat"], field.labels["msc"]
    t = field.tables["jurkat"]
    n = len(t)
    vox = _voxel(field)
    p = field.params
    assert list(t["jurkat_id"]) == list(range(1, n + 1))
    assert not np.any((jur > 0) & (msc > 0))
    com = np.asarray(ndi.center_of_mass(jur > 0, jur, range(1, n + 1))) * vox
    np.testing.assert_allclose(t[["z_um", "y_um", "x_um"]].to_numpy(), com, atol=0.5 * vox.max())
    counts = np.bincount(jur.ravel(), minlength=n + 1)[1:]
    np.testing.assert_allclose(t["volume_um3"], counts * vox.prod())
    # volume of the spheroid
    ellipsoid = math.pi / 6 * t["diameter_um"] ** 2 * t["height_um"]
    np.testing.assert_allclose(t["volume_um3"], ellipsoid, rtol=0.08)
    assert t["diameter_um"].between(0.6 * p.jurkat_diameter_um, 1.4 * p.jurkat_diameter_um).all()
    assert t["adhered"].any() and (~t["adhered"]).any()
    for row in t.itertuples():
        iy, ix = round(row.y_um / vox[1]), round(row.x_um / vox[2])
        column = np.flatnonzero(jur[:, iy, ix] == row.jurkat_id)
        below = column[0] - 1
        if row.adhered:
            # resting on its MSC's upper surface: the voxel below its lowest is that MSC
            assert row.msc_id > 0
            assert msc[below, iy, ix] == row.msc_id
        else:
            # on the glass, clear of every MSC
            assert row.msc_id == 0
            assert column[0] == math.ceil(p.glass_z_um / vox[0] - 1e-6)
            ring = ndi.binary_dilation(jur == row.jurkat_id, iterations=2)
            assert not np.any(msc[ring])
    # red: Jurkat cells are packed with mitochondria, textured
    r = field.expected[1]
    inside, outside = r[jur > 0], r[(jur == 0) & (msc == 0)]
    assert inside.mean() > outside.mean() + 30
    assert inside.std() > 0.3 * (inside.mean() - p.background)


def test_foci_truth_matches_pixels(field):
    foci, msc, jur = field.labels["foci"], field.labels["msc"], field.labels["jurkat"]
    t = field.tables["foci"]
    n = len(t)
    vox = _voxel(field)
    p = field.params
    assert list(t["focus_id"]) == list(range(1, n + 1))
    assert t["diameter_um"].between(*p.foci_diameter_um).all()
    np.testing.assert_array_equal(t["n_voxels"], np.bincount(foci.ravel(), minlength=n + 1)[1:])
    red = field.expected[1]
    jt = field.tables["jurkat"]
    for row in t.itertuples():
        voxels = foci == row.focus_id
        assert voxels.any()
        # entirely inside its parent MSC
        assert np.all(msc[voxels] == row.cell_id)
        # away from Jurkat bodies (not hidden under one)
        d = np.hypot(jt["y_um"] - row.y_um, jt["x_um"] - row.x_um) - 0.5 * jt["diameter_um"]
        assert d.min() >= p.foci_jurkat_clearance_um - 1e-6
        # the noise-free red peaks at the truth position, within one voxel
        c = np.array([row.z_um, row.y_um, row.x_um]) / vox
        lo = np.maximum(np.floor(c - 1.0 / vox).astype(int), 0)
        hi = np.minimum(np.ceil(c + 1.0 / vox).astype(int) + 1, red.shape)
        win = red[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        peak = np.array(np.unravel_index(np.argmax(win), win.shape)) + lo
        assert np.all(np.abs(peak - c) <= 1.0), (row, peak, c)
        assert win.max() > p.background + 10
    assert not np.any((foci > 0) & (jur > 0))
    # table of MSCs counts the foci
    per_cell = np.bincount(t["cell_id"], minlength=len(field.tables["msc"]) + 1)[1:]
    np.testing.assert_array_equal(field.tables["msc"]["n_foci"], per_cell)


def _distance_to(mask: np.ndarray, point_um, vox) -> float:
    idx = np.argwhere(mask)
    return float(np.min(np.linalg.norm(idx * vox - np.asarray(point_um), axis=1)))


def test_tnt_truth_matches_pixels(field):
    f, p = field, field.params
    t = f.tables["tnt"]
    assert len(t) >= 3
    tnt, msc, jur = f.labels["tnt"], f.labels["msc"], f.labels["jurkat"]
    vox = _voxel(f)
    labels_of = {"msc": msc, "jurkat": jur}
    actin, red = f.expected[2], f.expected[1]
    for row in t.itertuples():
        voxels = tnt == row.tnt_id
        assert voxels.any()
        _, n_pieces = ndi.label(voxels, structure=np.ones((3, 3, 3)))
        assert n_pieces == 1
        assert (row.from_kind, row.from_id) != (row.to_kind, row.to_id)
        # each end on its cell, within a voxel diagonal
        for kind, ident, end in (
            (row.from_kind, row.from_id, (row.z0_um, row.y0_um, row.x0_um)),
            (row.to_kind, row.to_id, (row.z1_um, row.y1_um, row.x1_um)),
        ):
            assert _distance_to(labels_of[kind] == ident, end, vox) <= np.linalg.norm(vox)
        assert row.endpoints[0] == pytest.approx([row.z0_um, row.y0_um, row.x0_um])
        # away from every other cell (but near its ends)
        others = (msc.max(0) > 0) | (jur.max(0) > 0)
        for kind, ident in ((row.from_kind, row.from_id), (row.to_kind, row.to_id)):
            others &= labels_of[kind].max(0) != ident
        dist = ndi.distance_transform_edt(~others, sampling=vox[1:])
        pts = np.argwhere(voxels) * vox
        ends = np.array([row.endpoints[0], row.endpoints[1]])
        far = np.linalg.norm(pts[:, None] - ends[None], axis=2).min(1) > 1.5
        yx = np.argwhere(voxels)[far][:, 1:]
        if len(yx):
            assert dist[yx[:, 0], yx[:, 1]].min() >= p.tnt_clearance_um - 0.5
        length = math.dist((row.z0_um, row.y0_um, row.x0_um), (row.z1_um, row.y1_um, row.x1_um))
        assert row.length_um == pytest.approx(length)
        assert p.tnt_length_um[0] <= row.length_um <= p.tnt_length_um[1]
        # above the glass, at the height given
        z = np.argwhere(voxels)[:, 0] * vox[0] - p.glass_z_um
        assert abs(np.mean(z) - row.height_um) <= vox[0]
        assert p.tnt_height_um[0] <= row.height_um <= p.tnt_height_um[1]
        # brighter in actin than the glass around it
        mid = np.rint(np.array([(row.z0_um + row.z1_um) / 2, (row.y0_um + row.y1_um) / 2,
                                (row.x0_um + row.x1_um) / 2]) / vox).astype(int)  # fmt: skip
        assert actin[tuple(mid)] > p.background + 15
        if row.carries_mito:
            m = np.rint(np.array([row.mito_z_um, row.mito_y_um, row.mito_x_um]) / vox).astype(int)
            sl = tuple(slice(max(c - 1, 0), c + 2) for c in m)
            assert red[sl].max() > p.background + 50
        else:
            assert math.isnan(row.mito_z_um)
    # no TNT voxel inside a cell
    assert not np.any((tnt > 0) & ((msc > 0) | (jur > 0)))
    assert t["carries_mito"].any()


def test_conditions_change_truth_as_designed():
    seeds = range(5)
    totals = {}
    for cond in ("DMSO", "cytochalasin D", "anti-ICAM-1"):
        s = [generate_field(COARSE, cond, seed=i).summary for i in seeds]
        totals[cond] = pd.DataFrame(s).sum(numeric_only=True)
    dmso, cyto, icam = totals["DMSO"], totals["cytochalasin D"], totals["anti-ICAM-1"]
    # cytochalasin D blocks nanotubes and cuts transfer; anti-ICAM-1 cuts adhesion and transfer
    assert dmso["n_foci"] > 2 * cyto["n_foci"]
    assert dmso["n_tnt"] > 2 * cyto["n_tnt"]
    assert dmso["n_foci"] > 2 * icam["n_foci"]
    assert dmso["n_jurkat_adhered"] > 2 * icam["n_jurkat_adhered"]
    assert dmso["n_msc_red_positive"] >= cyto["n_msc_red_positive"]
    assert set(CONDITIONS) >= {"DMSO", "cytochalasin D", "anti-ICAM-1", "18-alpha-GA", "dynasore"}
    with pytest.raises(ValueError, match="unknown condition"):
        generate_field(SMALL, "nothing")
    with pytest.raises(ValueError, match="unknown condition"):
        generate_field(SMALL, "DMSO + nothing")


def test_combined_conditions_multiply_effects():
    combo = resolve_condition("ara-C + anti-ICAM-1")
    dmso, arac, icam = (CONDITIONS[k] for k in ("DMSO", "ara-C", "anti-ICAM-1"))
    assert combo.foci_per_msc == pytest.approx(
        dmso.foci_per_msc
        * arac.foci_per_msc
        / dmso.foci_per_msc
        * icam.foci_per_msc
        / dmso.foci_per_msc
    )
    assert combo.adhesion_share == pytest.approx(
        arac.adhesion_share * icam.adhesion_share / dmso.adhesion_share
    )
    assert resolve_condition("DMSO") is dmso
    f = generate_field(SMALL, "ara-C + anti-ICAM-1", seed=1)
    assert f.condition == "ara-C + anti-ICAM-1"


def test_msc_layout_does_not_depend_on_condition():
    a = generate_field(SMALL, "DMSO", seed=4)
    b = generate_field(SMALL, "cytochalasin D", seed=4)
    # the MSC footprints are the same; only Jurkat cells may reshape them
    fa, fb = a.labels["msc"].max(0), b.labels["msc"].max(0)
    free = (a.labels["jurkat"].max(0) == 0) & (b.labels["jurkat"].max(0) == 0)
    assert np.mean(fa[free] == fb[free]) > 0.97


def test_2d_field_is_the_projection_of_its_scene():
    p2 = SynthParams(shape=(192, 192), n_msc=2, n_jurkat=5, msc_diameter_um=40.0)
    f2 = generate_field(p2, "DMSO", seed=7, return_expected=True)
    assert f2.image.shape == (3, 192, 192) and f2.image.dtype == np.uint16
    assert f2.voxel_size == {"y": 0.3, "x": 0.3}
    p3 = SynthParams(**{**p2.model_dump(), "shape": p2.scene_shape})
    f3 = generate_field(p3, "DMSO", seed=7, return_expected=True)
    for k in f2.labels:
        assert f2.labels[k].shape == (192, 192)
        np.testing.assert_array_equal(f2.labels[k], f3.labels[k].max(0))
    np.testing.assert_allclose(f2.expected, f3.expected.max(1))
    for k in f2.tables:
        pd.testing.assert_frame_equal(f2.tables[k], f3.tables[k])


def test_varied_scales_what_it_names():
    p = SMALL
    v = p.varied(voxel_size=0.5)
    assert v.voxel_size == pytest.approx((0.3, 0.15, 0.15))
    assert v.shape == (48, 384, 384)
    w = p.varied(cell_size=1.5, brightness=1.5, noise=0.5, psf_width=1.5, n_jurkat=2)
    assert w.jurkat_diameter_um == pytest.approx(15.0)
    assert w.msc_diameter_um == pytest.approx(60.0)
    assert w.brightness == pytest.approx(300.0)
    assert (w.read_noise, w.background) == pytest.approx((1.5, 5.0))
    assert w.n_jurkat == 10
    for (sz, sxy), (sz0, sxy0) in zip(w.psf_sigma_um(), p.psf_sigma_um(), strict=True):
        assert (sz, sxy) == pytest.approx((1.5 * sz0, 1.5 * sxy0))
    # taller Jurkat cells get a taller scene
    assert w.shape[0] * w.voxel_size[0] >= w.required_height_um()
    with pytest.raises(ValueError, match="unknown variation"):
        p.varied(colour=2.0)
    with pytest.raises(ValueError, match="positive"):
        p.varied(brightness=-1.0)


def test_voxel_size_changes_pixels_not_physics():
    p = SynthParams(shape=(16, 128, 128), n_msc=2, n_jurkat=2, msc_diameter_um=26.0,
                    jurkat_diameter_um=7.0, msc_nucleus_diameter_um=8.0)  # fmt: skip
    a = generate_field(p, "DMSO", seed=2)
    b = generate_field(p.varied(voxel_size=0.5), "DMSO", seed=2)
    assert b.image.shape == (3, 32, 256, 256)
    ta, tb = a.tables["msc"], b.tables["msc"]
    assert len(ta) == len(tb)
    np.testing.assert_allclose(tb["area_um2"], ta["area_um2"], rtol=0.03)
    np.testing.assert_allclose(tb[["y_um", "x_um"]], ta[["y_um", "x_um"]], atol=0.5)
    # a Jurkat cell spans twice as many pixels
    for f in (a, b):
        j = f.tables["jurkat"].iloc[0]
        lab = f.labels["jurkat"] == j["jurkat_id"]
        width_px = np.ptp(np.argwhere(lab)[:, 2]) + 1
        assert width_px * f.voxel_size["x"] == pytest.approx(j["diameter_um"], abs=2 * 0.3)


def test_brightness_psf_and_noise_act_on_the_image():
    base = generate_field(SMALL, "DMSO", seed=9, return_expected=True)
    bright = generate_field(SMALL.varied(brightness=1.5), "DMSO", seed=9, return_expected=True)
    bg = SMALL.background
    np.testing.assert_allclose(bright.expected - bg, 1.5 * (base.expected - bg), rtol=1e-4,
                               atol=1e-3)  # fmt: skip
    wide = generate_field(SMALL.varied(psf_width=1.5), "DMSO", seed=9, return_expected=True)
    # a wider PSF lowers the peaks of the foci
    peaks = [f.expected[1][f.labels["foci"] > 0].max() for f in (base, wide)]
    assert peaks[1] < 0.8 * peaks[0]
    quiet = generate_field(SMALL.varied(noise=0.1), "DMSO", seed=9)
    empty = base.expected[0] < SMALL.background + 1e-3  # no light from any object
    assert empty.mean() > 0.2
    s_base = base.image[0][empty].std()
    s_quiet = quiet.image[0][empty].std()
    expected_base = math.sqrt(SMALL.background + SMALL.read_noise**2)
    assert s_base == pytest.approx(expected_base, rel=0.1)
    assert s_quiet < 0.5 * s_base


@pytest.mark.parametrize("lam", [0.7, 10.0, 123.4])
def test_background_shot_noise_is_poisson(lam):
    from scipy import stats

    from hcsmito.synth.render import poisson_constant as _poisson_constant

    x = _poisson_constant(np.random.default_rng(0), lam, 200_000)
    # exactly scipy's Poisson inverse CDF of the same uniforms
    u = np.random.default_rng(0).random(200_000)
    np.testing.assert_array_equal(x, stats.poisson.ppf(u, lam))
    assert x.mean() == pytest.approx(lam, rel=0.02) and x.var() == pytest.approx(lam, rel=0.03)


def test_params_are_checked():
    with pytest.raises(ValueError, match="shape"):
        SynthParams(shape=(4, 5))
    with pytest.raises(ValueError, match="voxel_size"):
        SynthParams(voxel_size=(0.0, 0.3, 0.3))
    with pytest.raises(ValueError, match="foci_diameter_um"):
        SynthParams(foci_diameter_um=(1.0, 0.3))
    with pytest.raises(ValueError, match="too short"):
        generate_field(SynthParams(shape=(8, 64, 64)))


@pytest.mark.parametrize(
    "ngff,shape,channels",
    [("0.5", (16, 128, 128), None), ("0.4", (128, 128), ("MitoTracker Red", "GFP"))],
)
def test_plate_reads_back_with_truth(tmp_path, ngff, shape, channels):
    zarr = pytest.importorskip("zarr")
    from hcsmito.io.plate import open_plate

    params = SynthParams(voxel_size=(0.8, 0.3, 0.3), n_msc=2, n_jurkat=3, msc_diameter_um=26.0,
                         jurkat_diameter_um=7.0, msc_nucleus_diameter_um=8.0)  # fmt: skip
    out = tmp_path / "synthetic.zarr"
    wells = {"B2": "DMSO", "C3": "cytochalasin D"}
    write_synth_plate(
        out, seed=5, wells=wells, fields=2, shape=shape, ngff=ngff, params=params, channels=channels
    )
    plate = open_plate(out)
    assert plate.version == ngff
    assert sorted(plate.wells) == ["B/02", "C/03"]
    assert len(plate.fields) == 4
    pmap = pd.read_csv(tmp_path / "synthetic_platemap.csv")
    assert list(pmap.columns) == ["well", "condition", "replicate", "day"]
    assert dict(zip(pmap["well"], pmap["condition"], strict=True)) == {
        "B/2": "DMSO",
        "C/3": "cytochalasin D",
    }
    truth = read_truth(out)
    p = SynthParams(**{**params.model_dump(), "shape": shape})
    img = plate.read_field("C/3", 1)
    expect = generate_field(p, "cytochalasin D", seed=field_seed(5, "C3", 1))
    pick = [expect.channel_labels.index(c) for c in channels or expect.channel_labels]
    assert img.channel_labels == [expect.channel_labels[i] for i in pick]
    assert img.voxel_size == pytest.approx(expect.voxel_size)
    np.testing.assert_array_equal(np.asarray(img.data), expect.image[pick])
    labels_root = tmp_path / "synthetic_truth" / "labels.zarr" / "C" / "03" / "1" / "labels"
    for name in ("msc", "jurkat", "foci", "tnt"):
        stored = zarr.open_array(labels_root / name / "0", mode="r")[...]
        np.testing.assert_array_equal(stored, expect.labels[name])
    for name in ("msc", "jurkat", "foci", "tnt"):
        part = (
            truth[name]
            .query("well == 'C/3' and field == 1")
            .drop(columns=["plate", "well", "field"])
        )
        assert len(part) == len(expect.tables[name])
        assert (truth[name]["plate"] == "synthetic").all()
    fields = truth["fields"].set_index(["well", "field"])
    assert fields.loc[("C/3", 1), "n_foci"] == len(expect.tables["foci"])
    with pytest.raises(FileExistsError):
        write_synth_plate(out, seed=5, wells=wells, fields=1, shape=shape, ngff=ngff)


# -- variations of the assay and of the microscope ----------------------------------------


def _assert_consistent(f):
    """Truth tables, labels and summary of one field tell the same story."""
    t, lab, s = f.tables, f.labels, f.summary
    for name, key in (("msc", "cell_id"), ("jurkat", "jurkat_id"), ("foci", "focus_id"),
                      ("tnt", "tnt_id")):  # fmt: skip
        ids = set(np.unique(lab[name])) - {0}
        assert ids == set(t[name][key]), name
    assert not np.any((lab["jurkat"] > 0) & (lab["msc"] > 0))
    assert not np.any((lab["foci"] > 0) & (lab["msc"] == 0))
    for key, table in (("n_msc", "msc"), ("n_jurkat", "jurkat"), ("n_foci", "foci"),
                       ("n_tnt", "tnt")):  # fmt: skip
        assert s[key] == len(t[table]), key
    n = len(t["msc"])
    per_cell = np.bincount(t["foci"]["cell_id"], minlength=n + 1)[1:]
    np.testing.assert_array_equal(t["msc"]["n_foci"], per_cell)
    adh = t["jurkat"].query("adhered")
    assert adh["msc_id"].isin(t["msc"]["cell_id"]).all()
    assert (t["jurkat"].query("~adhered")["msc_id"] == 0).all()
    assert s["n_jurkat_adhered"] == len(adh) == t["msc"]["n_adhered_jurkat"].sum()
    assert s["n_msc_red_positive"] == int((per_cell > 0).sum())


def test_default_output_unchanged_by_hash():
    """The new parameters at their defaults draw today's fields, byte for byte (hashes taken
    before they were added; numpy 2.4, scipy 1.17; retaken when donor cells and crowded
    neighbours stopped cutting MSC nuclei, which changed this scene)."""
    import hashlib

    f = generate_field(SynthParams(shape=(24, 256, 256)), seed=0)
    digest = {k: hashlib.sha256(v.tobytes()).hexdigest()[:16] for k, v in f.labels.items()}
    assert digest == {
        "msc": "2ef2840bebc3b1db",
        "jurkat": "0ffbec941f1891cb",
        "foci": "97450f68cba39d6d",
        "tnt": "811fcdf9d640a924",
    }
    assert hashlib.sha256(f.image.tobytes()).hexdigest()[:16] == "ac27902f0836112d"
    assert not f.tables["jurkat"]["cut"].any()
    assert (f.summary["glass_slope_y"], f.summary["glass_slope_x"]) == (0.0, 0.0)


@pytest.mark.parametrize("kind", ["msc_only", "washed", "jurkat_only"])
def test_well_kinds(kind):
    p = variation_params(kind, COARSE.model_copy(update={"tnt_rate": 3.0}))
    fields = [generate_field(p, "DMSO", seed=s) for s in (0, 1, 2)]
    kinds = set()
    for f in fields:
        _assert_consistent(f)
        kinds |= set(zip(f.tables["tnt"]["from_kind"], f.tables["tnt"]["to_kind"], strict=True))
        s = f.summary
        if kind == "jurkat_only":
            assert s["n_msc"] == 0 and s["n_foci"] == 0 and s["n_jurkat"] > 0
            assert s["n_jurkat_adhered"] == 0 and not f.labels["msc"].any()
            assert math.isnan(s["pct_msc_red_positive"])
        else:
            assert s["n_jurkat"] == 0 and not f.labels["jurkat"].any() and s["n_msc"] > 0
    total_foci = sum(f.summary["n_foci"] for f in fields)
    assert total_foci == 0 if kind != "washed" else total_foci > 0
    assert kinds  # nanotubes, between the cells the well has
    assert kinds <= ({("jurkat", "jurkat")} if kind == "jurkat_only" else {("msc", "msc")})


def test_actin_rich_jurkat_outshines_stress_fibres():
    p = variation_params("actin_rich_jurkat", SMALL)
    assert p.jurkat_actin > p.fibre_actin
    f = generate_field(p, "DMSO", seed=2, return_expected=True)
    actin, jur, msc = f.expected[2] - p.background, f.labels["jurkat"], f.labels["msc"]
    # the fibre plane of the MSCs, away from any Jurkat cell
    zf = round((p.glass_z_um + p.fibre_height_um) / p.voxel_size[0])
    clear = ~ndi.binary_dilation(jur.max(0) > 0, iterations=20)
    fibres = actin[zf][(msc[zf] > 0) & clear].max()
    assert actin[jur > 0].max() > 1.5 * fibres
    # above an MSC, the actin profile of a column peaks in the Jurkat cell resting on it
    t = f.tables["jurkat"].query("adhered")
    assert len(t)
    vox = _voxel(f)
    for row in t.itertuples():
        iy, ix = (
            round(row.y_um / vox[1]),
            round(row.x_um / vox[2]) + round(0.6 * row.diameter_um / 2 / vox[2]),
        )
        assert jur[actin[:, iy, ix].argmax(), iy, ix] == row.jurkat_id


def test_sloped_tnt_truth():
    p = variation_params("tnt_sloped", SMALL.model_copy(update={"tnt_rate": 4.0}))
    f = generate_field(p, "DMSO", seed=1)
    t, vox = f.tables["tnt"], _voxel(f)
    rise = (t["z1_um"] - t["z0_um"]).abs()
    assert len(t) >= 3 and rise.max() > 1.0 and rise.max() <= p.tnt_slope_um
    labels_of = {"msc": f.labels["msc"], "jurkat": f.labels["jurkat"]}
    for row in t.itertuples():
        # height: the free part's midpoint above the glass; its voxels centred there
        assert row.height_um == pytest.approx(0.5 * (row.z0_um + row.z1_um) - p.glass_z_um)
        z = np.argwhere(f.labels["tnt"] == row.tnt_id)[:, 0] * vox[0] - p.glass_z_um
        assert abs(z.mean() - row.height_um) <= vox[0]
        assert min(row.z0_um, row.z1_um) - p.glass_z_um > 0.5 * row.diameter_um
        for kind, ident, end in ((row.from_kind, row.from_id, row.endpoints[0]),
                                 (row.to_kind, row.to_id, row.endpoints[1])):  # fmt: skip
            assert _distance_to(labels_of[kind] == ident, end, vox) <= np.linalg.norm(vox)
    _assert_consistent(f)


def test_long_tnts_are_placed_when_the_field_has_room():
    from hcsmito.synth.cells import build_scene

    p = variation_params("tnt_long")  # the default 115 µm field, fewer MSCs
    scene = build_scene(p, resolve_condition("DMSO"), seed=2)
    lengths = [t.length for t in scene.tnts]
    assert len(lengths) >= 4 and max(lengths) > 40
    assert all(p.tnt_length_um[0] <= x <= p.tnt_length_um[1] for x in lengths)


def test_tnt_brightness_relative_to_fibres():
    dim, bright = (variation_params(k, COARSE) for k in ("tnt_dim", "tnt_bright"))
    assert dim.tnt_fibre_ratio() == pytest.approx(1.0)
    assert bright.tnt_fibre_ratio() == pytest.approx(3.0)
    assert SynthParams().tnt_fibre_ratio() == pytest.approx(3.0 * 0.45**2 / (1.5 * 0.5**2))
    # the actin the tubes add to the image is their concentration x volume (same scene)
    p = [x.model_copy(update={"tnt_rate": 4.0}) for x in (dim, bright)]
    a, b = (generate_field(x, "DMSO", seed=3, return_expected=True) for x in p)
    t = a.tables["tnt"]
    assert len(t) >= 2
    pd.testing.assert_frame_equal(t, b.tables["tnt"])
    volume = (math.pi * (0.5 * t["diameter_um"]) ** 2 * (t["length_um"] + 0.6)).sum()
    added = (b.expected[2] - a.expected[2]).sum() * _voxel(a).prod()
    expect = p[0].brightness * (p[1].tnt_actin - p[0].tnt_actin) * volume
    assert added == pytest.approx(expect, rel=0.03)


def test_shallow_stack_cuts_cells_like_their_labels():
    p = variation_params("shallow_cut", SMALL)
    assert p.shape[0] == 16 and p.allow_cut
    short = generate_field(p, "DMSO", seed=4)
    tall = generate_field(p.model_copy(update={"shape": (24, *p.shape[1:])}), "DMSO", seed=4)
    # the same scene: the short stack's truth is the tall one's, cut at its top plane
    for k in short.labels:
        np.testing.assert_array_equal(short.labels[k], tall.labels[k][:16])
    js, jt = short.tables["jurkat"], tall.tables["jurkat"]
    assert len(js) == len(jt) == int(short.labels["jurkat"].max()) > 0
    top = set(np.unique(short.labels["jurkat"][-1])) - {0}
    assert set(js.loc[js["cut"], "jurkat_id"]) == top and js["cut"].any()
    assert js.query("adhered")["cut"].all()  # cells resting on MSCs stick out of the top
    assert (js["volume_um3"] <= jt["volume_um3"]).all()
    assert (js.loc[js["cut"], "volume_um3"] < jt.loc[js["cut"], "volume_um3"]).all()
    assert (js["cut"] >= jt["cut"]).all() and js["cut"].sum() > jt["cut"].sum()
    _assert_consistent(short)
    # a stack too short for the MSCs needs allow_cut
    layer = variation_params("msc_layer_only", SMALL)
    assert layer.shape[0] == 10
    _assert_consistent(generate_field(layer, "DMSO", seed=4))
    with pytest.raises(ValueError, match="allow_cut"):
        generate_field(layer.model_copy(update={"allow_cut": False}))


def test_bleed_through_is_the_ratio_of_channel_means():
    x = ((0.0, 0.0, 0.0), (0.08, 0.0, 0.0), (0.02, 0.10, 0.0))
    # an MSC-only well with GFP alone (no red, no actin), a Jurkat-only well with red alone
    gfp_only = {"msc_red": 0.0, "msc_actin": 0.0, "msc_cortex_actin": 0.0, "fibres_per_msc": 0,
                "n_jurkat": 0, "foci_rate": 0.0, "tnt_rate": 0.0, "crosstalk": x}  # fmt: skip
    red_only = {"n_msc": 0, "jurkat_actin": 0.0, "tnt_rate": 0.0, "crosstalk": x}
    means = []
    for update in (gfp_only, red_only):
        p = COARSE.model_copy(update=update)
        f = generate_field(p, "DMSO", seed=5, return_expected=True)
        means.append((f.expected - p.background).mean(axis=(1, 2, 3)))
    (g0, g1, g2), (r0, r1, r2) = means
    assert g0 > 1 and r1 > 1 and r0 == 0
    assert g1 / g0 == pytest.approx(0.08, rel=1e-4)
    assert g2 / g0 == pytest.approx(0.02, rel=1e-4)
    assert r2 / r1 == pytest.approx(0.10, rel=1e-4)
    # and the variation of the grid is this matrix
    assert variation_params("bleed_through").crosstalk == x
    with pytest.raises(ValueError, match="crosstalk"):
        SynthParams(crosstalk=((0.1, 0, 0), (0, 0, 0), (0, 0, 0)))


def test_vignetting_ratio_corner_to_centre():
    empty = SynthParams(shape=(14, 65, 81), n_msc=0, n_jurkat=0, vignetting=0.6)
    f = generate_field(empty, seed=0, return_expected=True)
    e = f.expected[:, 5]
    for c in range(3):
        centre = e[c, 32, 40]
        assert e[c, 32, 40] == pytest.approx(empty.background, rel=1e-6)
        for corner in (e[c, 0, 0], e[c, -1, 0], e[c, 0, -1], e[c, -1, -1]):
            assert corner / centre == pytest.approx(0.6, rel=1e-5)
    # the cos^4 law between: (1 + (r/f)^2)^-2 with (r_corner/f)^2 = 0.6^-1/2 - 1
    ry, rx = 32 * 0.3, 40 * 0.3
    q = (0.6**-0.5 - 1) * rx**2 / (rx**2 + ry**2)
    assert e[0, 32, 0] / e[0, 32, 40] == pytest.approx((1 + q) ** -2, rel=1e-5)
    # a field: the vignetted expected photons are the flat ones times the profile
    flat = generate_field(COARSE, seed=1, return_expected=True)
    vig = generate_field(COARSE.model_copy(update={"vignetting": 0.5}), seed=1,
                         return_expected=True)  # fmt: skip
    ratio = vig.expected[:, :, 0, 0] / flat.expected[:, :, 0, 0]
    np.testing.assert_allclose(ratio, 0.5, rtol=1e-5)


def test_depth_attenuation_falls_exponentially_from_the_first_plane_to_the_last():
    empty = SynthParams(shape=(14, 33, 33), n_msc=0, n_jurkat=0, z_attenuation=0.5)
    e = generate_field(empty, seed=0, return_expected=True).expected
    per_plane = e[:, :, 16, 16] / empty.background  # (C, Z): only the medium's light
    z = np.arange(14) / 13
    np.testing.assert_allclose(per_plane, np.broadcast_to(0.5**z, per_plane.shape), rtol=1e-5)
    # a field: the attenuated expected photons are the flat ones times the profile, the
    # scene unchanged (same seed, same cells)
    flat = generate_field(COARSE, seed=1, return_expected=True)
    att = generate_field(COARSE.model_copy(update={"z_attenuation": 0.6}), seed=1,
                         return_expected=True)  # fmt: skip
    nz = COARSE.shape[0]
    ratio = att.expected[:, :, 5, 7] / flat.expected[:, :, 5, 7]
    np.testing.assert_allclose(ratio, np.broadcast_to(0.6 ** (np.arange(nz) / (nz - 1)),
                                                      ratio.shape), rtol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(att.labels["msc"], flat.labels["msc"])
    assert variation_params("depth_attenuation").z_attenuation == 0.55


def test_tilted_glass_carries_the_scene():
    p = SMALL.model_copy(update={"glass_tilt_um": 2.0, "glass_z_um": 2.0, "shape": (28, 192, 192)})
    f = generate_field(p, "DMSO", seed=6)
    s, vox = f.summary, _voxel(f)
    width = p.shape[2] * vox[2]
    assert (s["glass_z_um"], s["glass_slope_y"]) == (2.0, 0.0)
    assert s["glass_slope_x"] == pytest.approx(2.0 / width)
    # the lowest MSC voxel of each column follows the plane, within a plane
    msc = f.labels["msc"]
    has = msc.max(0) > 0
    iy, ix = np.nonzero(has)
    low = np.argmax(msc > 0, axis=0)[has] * vox[0]
    plane = 2.0 + s["glass_slope_x"] * (ix - 0.5 * (p.shape[2] - 1)) * vox[2]
    assert np.abs(low - plane).max() <= vox[0]
    assert np.polyfit(ix * vox[2], low, 1)[0] == pytest.approx(2.0 / width, rel=0.1)
    # cells stand on it: a Jurkat cell on the glass starts at the plane under its centre
    for row in f.tables["jurkat"].query("~adhered").itertuples():
        g = 2.0 + s["glass_slope_x"] * (row.x_um - 0.5 * (p.shape[2] - 1) * vox[2])
        assert row.bottom_z_um == pytest.approx(g, abs=1e-9)
    _assert_consistent(f)
    # a random direction per field, the same for the same seed
    r = variation_params("tilted_glass", COARSE)
    a, b, c = (generate_field(r, seed=k).summary for k in (7, 8, 7))
    slope = math.hypot(a["glass_slope_y"], a["glass_slope_x"])
    assert slope == pytest.approx(2.0 / (r.shape[2] * r.voxel_size[2]))
    assert (a["glass_slope_y"], a["glass_slope_x"]) != (b["glass_slope_y"], b["glass_slope_x"])
    assert a == c
    with pytest.raises(ValueError, match="glass_z_um"):
        SynthParams(glass_tilt_um=4.0)


def test_anisotropic_voxels_keep_the_foci_truth():
    p = variation_params("anisotropic", SMALL)
    assert p.voxel_size == (1.0, 0.3, 0.3) and p.shape[0] == 15
    assert p.psf_sigma_um()[1][0] == pytest.approx(1.5 * SMALL.psf_sigma_um()[1][0])
    f = generate_field(p, "DMSO", seed=3, return_expected=True)
    _assert_consistent(f)
    t, foci, vox, red = f.tables["foci"], f.labels["foci"], _voxel(f), f.expected[1]
    assert len(t) > 3
    np.testing.assert_array_equal(
        t["n_voxels"], np.bincount(foci.ravel(), minlength=len(t) + 1)[1:]
    )
    for row in t.itertuples():
        c = np.rint(np.array([row.z_um, row.y_um, row.x_um]) / vox).astype(int)
        assert foci[tuple(c)] == row.focus_id
        win = red[tuple(slice(max(k - 2, 0), k + 3) for k in c)]
        peak = np.array(np.unravel_index(np.argmax(win), win.shape)) + np.maximum(c - 2, 0)
        assert np.all(np.abs(peak - c) <= 1)


def test_variation_grid():
    base = COARSE.varied(voxel_size=1.5)  # every variation builds, its truth consistent
    for name, entry in VARIATIONS.items():
        assert entry["doc"] and set(entry) <= {"doc", "scale", "set"}, name
        p = variation_params(name, base)
        if name != "tnt_long":  # slow in so small a field: see its own test
            _assert_consistent(generate_field(p, "DMSO", seed=0))
    assert variation_params("default", base) is base
    assert variation_params("washed").n_jurkat == 0
    assert variation_params("jurkat_only").n_msc == 0
    assert variation_params("noise x2").read_noise == pytest.approx(6.0)
    with pytest.raises(ValueError, match="unknown variation"):
        variation_params("nothing")
    with pytest.raises(ValueError, match="3-D"):
        variation_params("shallow_cut", SynthParams(shape=(128, 128)))
