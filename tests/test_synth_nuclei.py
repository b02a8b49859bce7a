"""Nuclei, cell fate and annexin V in the synthetic generator (issue 15.4): the truth against
the pixels, apoptotic shares by condition, crowded MSCs, 2-D fields, variations, the plate,
and the default fields unchanged byte for byte."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from hcsmito.synth import (
    CONDITIONS,
    SynthParams,
    generate_field,
    read_truth,
    resolve_condition,
    variation_params,
    write_synth_plate,
)

SMALL = SynthParams(shape=(24, 192, 192), n_msc=2, n_jurkat=5, msc_diameter_um=40.0)
FATE = {"nuclear_channel": True, "annexin_channel": True}
# twice the condition's apoptosis: many condensed and fragmented nuclei per field
DYING = SynthParams(shape=(24, 256, 256), **FATE, apoptosis_rate=2.0)


def _with(p: SynthParams, **values) -> SynthParams:
    return SynthParams(**{**p.model_dump(), **values})


def _h(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def _digest(f) -> dict[str, str]:
    d = {"image": _h(f.image.tobytes())}
    d |= {f"lab_{k}": _h(v.tobytes()) for k, v in f.labels.items()}
    d |= {f"tab_{k}": _h(t.to_csv().encode()) for k, t in f.tables.items()}
    summary = json.dumps({k: str(v) for k, v in f.summary.items()}, sort_keys=True)
    return d | {"summary": _h(summary.encode())}


# hashes of fields drawn before the fate options existed (commit eeb6a30; numpy 2.4,
# scipy 1.17, pandas' CSV of the tables); "default" retaken when donor cells and
# neighbours stopped cutting MSC nuclei (its scene changed; the other two did not)
_BEFORE = {
    "default": {
        "image": "ac27902f0836112d", "lab_msc": "2ef2840bebc3b1db",
        "lab_jurkat": "0ffbec941f1891cb", "lab_foci": "97450f68cba39d6d",
        "lab_tnt": "811fcdf9d640a924", "tab_msc": "ade4f7b6c37feeb4",
        "tab_jurkat": "61cf12c7ca899b76", "tab_foci": "731a04bb6ed1418a",
        "tab_tnt": "a840cafa86ec8da7", "summary": "61f9d90e3ad57fca",
    },
    "combination": {
        "image": "e6a43f0a62ed628e", "lab_msc": "04fe68d2d2695056",
        "lab_jurkat": "47b898148f01b547", "lab_foci": "bdf33fef91462825",
        "lab_tnt": "5954ceccd88af037", "tab_msc": "a1d934739363e90b",
        "tab_jurkat": "c6d6d1b3a46b4853", "tab_foci": "e427d799a3b2b132",
        "tab_tnt": "b355f9ae2184471b", "summary": "84d7ad8411edf457",
    },
    "2d": {
        "image": "dc557f49abb8f9b8", "lab_msc": "d9d49e647175ff9f",
        "lab_jurkat": "3132f171c3f73b3f", "lab_foci": "08f2dd947646d0fd",
        "lab_tnt": "ab8a51d24cb464ee", "tab_msc": "b02112e091e361ff",
        "tab_jurkat": "ecff6b6a77c4a399", "tab_foci": "cc5b2696db6c2afb",
        "tab_tnt": "dc1420ae3cd4ce65", "summary": "42c1fb1ac9fb1b4f",
    },
}  # fmt: skip
_CASES = {
    "default": (SynthParams(shape=(24, 256, 256)), "DMSO", 0),
    "combination": (SMALL, "ara-C + cytochalasin D", 7),
    "2d": (_with(SMALL, shape=(192, 192)), "MTX", 3),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_default_fields_unchanged_byte_for_byte(case):
    """Without the new options a field is what it was: image, labels, tables, summary."""
    p, condition, seed = _CASES[case]
    f = generate_field(p, condition, seed=seed)
    assert _digest(f) == _BEFORE[case]
    assert "nuclei" not in f.labels and "nuclei" not in f.tables
    assert "apoptotic" not in f.tables["jurkat"] and "n_nuclei" not in f.summary


@pytest.mark.parametrize("case", ["combination", "2d"])
def test_extra_channels_leave_the_others_unchanged(case):
    p, condition, seed = _CASES[case]
    base = generate_field(p, condition, seed=seed)
    for extra in ({"nuclear_channel": True}, {"annexin_channel": True}, FATE):
        f = generate_field(_with(p, **extra), condition, seed=seed)
        assert f.channel_labels == base.channel_labels + tuple(
            label for key, label in (("nuclear_channel", "Hoechst"), ("annexin_channel",
                                     "Annexin V")) if key in extra
        )  # fmt: skip
        assert f.image.shape == (len(f.channel_labels), *p.shape)
        assert f.image[:3].tobytes() == base.image.tobytes()
        for k, lab in base.labels.items():
            assert f.labels[k].tobytes() == lab.tobytes(), k
        for k, t in base.tables.items():
            pd.testing.assert_frame_equal(f.tables[k][t.columns], t)
        assert {k: f.summary[k] for k in base.summary} == base.summary
    # the fate is drawn alike with one channel or both
    a = generate_field(_with(p, nuclear_channel=True), condition, seed=seed)
    b = generate_field(_with(p, annexin_channel=True), condition, seed=seed)
    pd.testing.assert_frame_equal(a.tables["nuclei"], b.tables["nuclei"])
    assert a.labels["nuclei"].tobytes() == b.labels["nuclei"].tobytes()


# -- truth against the pixels ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dying_fields():
    """Chemotherapy fields with twice its apoptosis, flat and on tilted glass."""
    tilted = variation_params("tilted_glass", DYING)
    return [generate_field(DYING, "ara-C", seed=s, return_expected=True) for s in range(3)] + [
        generate_field(tilted, "MTX", seed=s) for s in range(2)
    ]


def test_one_nucleus_per_cell_inside_its_cell(dying_fields):
    states = set()
    for f in dying_fields:
        t, lab = f.tables["nuclei"], f.labels["nuclei"]
        n_msc, n_jur = len(f.tables["msc"]), len(f.tables["jurkat"])
        assert lab.dtype == np.int32 and lab.shape == f.labels["msc"].shape
        assert list(t["nucleus_id"]) == list(range(1, n_msc + n_jur + 1))
        assert list(t["cell_kind"]) == ["msc"] * n_msc + ["jurkat"] * n_jur
        assert list(t["cell_id"]) == [*range(1, n_msc + 1), *range(1, n_jur + 1)]
        assert set(np.unique(lab)) - {0} == set(t["nucleus_id"])  # none empty
        vox = np.prod(f.params.voxel_size)
        counts = np.bincount(lab.ravel(), minlength=len(t) + 1)[1:]
        np.testing.assert_allclose(t["volume_um3"], counts * vox)
        for row in t.itertuples():
            cell = f.labels[row.cell_kind][lab == row.nucleus_id]
            assert (cell == row.cell_id).all(), (row.cell_kind, row.cell_id)
        # the fate columns agree
        merged = t.query("cell_kind == 'jurkat'")["apoptotic"].to_numpy()
        np.testing.assert_array_equal(merged, f.tables["jurkat"]["apoptotic"].to_numpy())
        merged = t.query("cell_kind == 'msc'")["apoptotic"].to_numpy()
        np.testing.assert_array_equal(merged, f.tables["msc"]["apoptotic"].to_numpy())
        assert (t["apoptotic"] == (t["state"] != "normal")).all()
        s = f.summary
        assert s["n_nuclei"] == len(t)
        assert s["n_jurkat_apoptotic"] == f.tables["jurkat"]["apoptotic"].sum()
        assert s["pct_jurkat_apoptotic"] == pytest.approx(
            100 * f.tables["jurkat"]["apoptotic"].mean()
        )
        states |= set(t["state"])
    assert states == {"normal", "condensed", "fragmented"}


def test_nuclear_shapes_and_brightness(dying_fields):
    """Fragmented nuclei: one id, several pieces; condensed: small and bright; MSC nuclei
    flat, Jurkat nuclei 0.6-0.7 of their cell."""
    rows, hoechst = [], []
    for f in dying_fields[:3]:
        t, lab = f.tables["nuclei"], f.labels["nuclei"]
        mean = ndi.mean(f.expected[3], lab, t["nucleus_id"]) - f.params.background
        hoechst.append(t.assign(hoechst=mean))
        for row in t.query("state == 'fragmented'").itertuples():
            _, n = ndi.label(lab == row.nucleus_id, structure=np.ones((3, 3, 3)))
            assert n == row.n_parts >= 2, row
        for row in t.query("state != 'fragmented'").itertuples():
            _, n = ndi.label(lab == row.nucleus_id, structure=np.ones((3, 3, 3)))
            assert n == row.n_parts == 1, row
        jur = f.tables["jurkat"].set_index("jurkat_id")
        for row in t.query("cell_kind == 'jurkat' and state == 'normal'").itertuples():
            cell = jur.loc[row.cell_id]
            ratio = (row.volume_um3 / cell["volume_um3"]) ** (1 / 3)
            rows.append(ratio)
        msc_nuc = lab == t.query("cell_kind == 'msc' and state == 'normal'")["nucleus_id"].iloc[0]
        zs, ys, xs = np.nonzero(msc_nuc)
        vz, vy, _ = f.params.voxel_size
        assert (np.ptp(ys) * vy) > 2.5 * (np.ptp(zs) * vz)  # flat
    assert 0.55 < np.median(rows) < 0.72  # diameter fraction, voxelised
    h = pd.concat(hoechst).query("cell_kind == 'jurkat'")
    normal = h.query("state == 'normal'")
    condensed = h.query("state == 'condensed'")
    assert condensed["volume_um3"].median() < 0.3 * normal["volume_um3"].median()
    assert condensed["hoechst"].median() > 1.4 * normal["hoechst"].median()


def test_annexin_ring_on_apoptotic_cells(dying_fields):
    for f in dying_fields[:3]:
        p = f.params
        ann = f.expected[4] - p.background
        jur = f.labels["jurkat"]
        t = f.tables["jurkat"].set_index("jurkat_id")
        ids = t.index.to_numpy()
        inner = ndi.binary_erosion(jur > 0, iterations=3)
        shell = np.where((jur > 0) & ~inner, jur, 0)
        ring = ndi.mean(ann, shell, ids)
        centre = ndi.mean(ann, np.where(inner, jur, 0), ids)
        dead, alive = t["apoptotic"].to_numpy(), ~t["apoptotic"].to_numpy()
        assert dead.any() and alive.any()
        medium = ann[(f.labels["msc"] == 0) & (jur == 0)]
        assert np.median(medium) == pytest.approx(p.brightness * p.annexin_background, rel=0.2)
        assert ring[dead].min() > 5 * max(ring[alive].max(), np.median(medium))
        assert (ring[dead] > 1.5 * centre[dead]).all()  # a ring, not a filled cell


# -- apoptosis by condition -----------------------------------------------------------------


def test_condition_apoptosis_follows_the_paper():
    names = [*CONDITIONS, "ara-C + cytochalasin D", "MTX + anti-ICAM-1", "ara-C + MTX"]
    c = {name: resolve_condition(name) for name in names}
    base = c["DMSO"].jurkat_apoptosis(False)
    assert base == pytest.approx(0.08)
    assert c["DMSO"].jurkat_apoptosis(True) == pytest.approx(base)
    for chemo in ("ara-C", "MTX"):
        free, held = c[chemo].jurkat_apoptosis(False), c[chemo].jurkat_apoptosis(True)
        assert 0.35 <= free <= 0.45 and 0.12 <= held <= 0.17
    for mix in ("ara-C + cytochalasin D", "MTX + anti-ICAM-1"):
        free, held = c[mix].jurkat_apoptosis(False), c[mix].jurkat_apoptosis(True)
        assert held == pytest.approx(free) and free >= 0.38
    assert c["ara-C + MTX"].apoptosis_jurkat > c["ara-C"].apoptosis_jurkat
    assert all(0.02 <= x.apoptosis_msc <= 0.08 for x in c.values())
    # the fields each condition had keep their values
    cyto = c["cytochalasin D"]
    assert (cyto.foci_per_msc, cyto.adhesion_share, cyto.tnt_rate) == (1.0, 0.4, 0.1)


def test_apoptotic_shares_follow_the_conditions():
    """Over many Jurkat cells, drawn through whole fields: chemotherapy raises the share,
    contact with an MSC lowers it, cytochalasin D and anti-ICAM-1 cancel that."""
    p = _with(SMALL.varied(voxel_size=2.0), nuclear_channel=True, n_jurkat=12,
              n_jurkat_spread=0, tnt_rate=0.0, shot_noise=False)  # fmt: skip
    shares = {}
    for cond in ("DMSO", "ara-C", "ara-C + cytochalasin D", "ara-C + anti-ICAM-1"):
        # anti-ICAM-1 cuts adhesion: more adhered cells asked for to have enough of them
        q = _with(p, adhesion_rate=4.0) if "ICAM" in cond else p
        t = pd.concat([generate_field(q, cond, seed=s).tables["jurkat"] for s in range(20)])
        shares[cond] = t.groupby("msc_contact")["apoptotic"].agg(["mean", "size"])
    free = {k: v.loc[False, "mean"] for k, v in shares.items()}
    held = {k: v.loc[True, "mean"] for k, v in shares.items()}
    assert all(v.loc[True, "size"] >= 60 and v.loc[False, "size"] >= 60 for v in shares.values())
    assert free["DMSO"] < 0.16 and held["DMSO"] < 0.16
    assert free["ara-C"] > 0.3 and held["ara-C"] < free["ara-C"] - 0.15
    for mix in ("ara-C + cytochalasin D", "ara-C + anti-ICAM-1"):
        assert free[mix] > 0.3 and held[mix] > held["ara-C"] + 0.12
        assert abs(held[mix] - free[mix]) < 0.15


def test_msc_apoptosis_is_rare_and_drawn():
    p = _with(SMALL.varied(voxel_size=2.0), annexin_channel=True, n_msc=3, n_jurkat=0,
              tnt_rate=0.0, apoptosis_rate=2.0)  # fmt: skip
    t = pd.concat([generate_field(p, "ara-C", seed=s).tables["msc"] for s in range(15)])
    assert len(t) >= 30 and 0 < t["apoptotic"].mean() < 0.25
    t = generate_field(_with(p, apoptosis_rate=40.0), "DMSO", seed=0).tables["msc"]
    assert t["apoptotic"].all()


# -- crowded MSCs, 2-D fields, variations ---------------------------------------------------


def _border_dips(f) -> list[float]:
    """For each pair of touching MSCs: 1 - (GFP summed over z at their shared border) /
    (GFP 4-8 µm from it), away from the glass, nuclei and Jurkat cells (noise-free)."""
    p = f.params
    dy = p.voxel_size[1]
    flat = (lambda a: a.max(0)) if p.ndim == 3 else (lambda a: a)
    gfp = f.expected[0] - p.background
    gfp = gfp.sum(0) if p.ndim == 3 else gfp
    lab = flat(f.labels["msc"])
    keep = ndi.distance_transform_edt(lab > 0, sampling=dy) > 3.0
    keep &= ~ndi.binary_dilation(flat(f.labels["jurkat"]) > 0, iterations=round(2 / dy))
    msc_nuclei = f.tables["nuclei"].query("cell_kind == 'msc'")["nucleus_id"]
    nuclei = np.isin(flat(f.labels["nuclei"]), msc_nuclei)
    keep &= ~ndi.binary_dilation(nuclei, iterations=round(3 / dy))
    ids = np.unique(lab[lab > 0])
    dist = {i: ndi.distance_transform_edt(lab != i, sampling=dy) for i in ids}
    out = []
    for a in ids:
        for b in ids[ids > a]:
            border = (((lab == a) & (dist[b] < 0.6)) | ((lab == b) & (dist[a] < 0.6))) & keep
            near = ((lab == a) & (dist[b] >= 4) & (dist[b] <= 8)) | (
                (lab == b) & (dist[a] >= 4) & (dist[a] <= 8)
            )
            if border.sum() >= 30 and (near & keep).sum() >= 30:
                out.append(1 - np.median(gfp[border]) / np.median(gfp[near & keep]))
    return out


@pytest.mark.parametrize("ndim", [3, 2])
def test_crowded_mscs_touch_with_little_dip(ndim):
    """Default MSCs thin to their edge height where they meet (a GFP dip, z-summed, of
    ~50 %); crowded ones do not (median dip about 0)."""
    shape = (24, 256, 256) if ndim == 3 else (256, 256)
    base = SynthParams(shape=shape, nuclear_channel=True)
    crowded = variation_params("crowded_msc", base)
    assert crowded.msc_crowding == 1.0 and crowded.n_msc == 6
    dips = {}
    for name, p in (("default", base), ("crowded", crowded)):
        fields = [generate_field(p, "DMSO", seed=s, return_expected=True) for s in range(3)]
        dips[name] = sum((_border_dips(f) for f in fields), [])
        if name == "crowded":
            assert all(f.summary["n_msc"] >= 4 for f in fields)
            assert len(dips[name]) >= 12  # touching pairs
    # 2-D: the maximum over z sees less of the thinning than the sum does (~10 %)
    gap = 0.25 if ndim == 3 else 0.06
    assert np.median(dips["default"]) > gap
    assert abs(np.median(dips["crowded"])) < 0.06
    assert np.median(dips["crowded"]) < np.median(dips["default"]) - gap


def test_donors_and_neighbours_leave_msc_nuclei_whole():
    """A donor cell on the glass pushes MSCs aside and one resting on an MSC sinks into its
    cytoplasm, but neither cuts into an MSC's nucleus, and a crowded neighbour does not
    claim part of it: every normal MSC nucleus holds (nearly) the voxels of its ellipsoid,
    semi-axes 0.45 x msc_nucleus_diameter_um and (msc_nucleus_height_um - 0.9) / 2 (the
    rest: the voxel grid). Before, on this field the donors left 22 % and 3 % of them (the
    second a sliver, counted as no MSC)."""
    p = variation_params("crowded_msc", _with(SMALL, shape=(24, 160, 160), msc_diameter_um=52.0,
                                              n_jurkat=10, nuclear_channel=True))  # fmt: skip
    f = generate_field(p, "ara-C + anti-ICAM-1", seed=3)
    t = f.tables["nuclei"]
    normal = t[(t["cell_kind"] == "msc") & (t["state"] == "normal")]
    full = (
        4
        / 3
        * np.pi
        * 0.5
        * (p.msc_nucleus_height_um - 0.9)
        * (0.45 * p.msc_nucleus_diameter_um) ** 2
    )
    assert len(normal) == 2 and f.summary["n_jurkat_adhered"] >= 1
    assert (normal["volume_um3"] > 0.95 * full).all(), (normal["volume_um3"] / full).tolist()
    # the lateral footprint too (what a 2-D field's projection shows)
    own = np.isin(f.labels["nuclei"], normal["nucleus_id"]).any(axis=0)
    area = own.sum() * p.voxel_size[1] * p.voxel_size[2]
    assert area > 0.95 * 2 * np.pi * (0.45 * p.msc_nucleus_diameter_um) ** 2


def test_2d_fields_with_the_new_channels():
    p3 = _with(DYING, shape=(24, 192, 192), n_msc=2, msc_diameter_um=40.0)
    p2 = _with(p3, shape=(192, 192))
    f3 = generate_field(p3, "ara-C", seed=4)
    f2 = generate_field(p2, "ara-C", seed=4)
    assert f2.image.shape == (5, 192, 192) and f2.labels["nuclei"].shape == (192, 192)
    assert f2.channel_labels == f3.channel_labels
    # the same scene, projected: same truth tables, the labels the maximum over z
    pd.testing.assert_frame_equal(f2.tables["nuclei"], f3.tables["nuclei"], check_exact=False)
    lab3 = f3.labels["nuclei"]
    np.testing.assert_array_equal(f2.labels["nuclei"][lab3.max(0) > 0] > 0, True)
    assert set(np.unique(f2.labels["nuclei"])) - {0} <= set(f2.tables["nuclei"]["nucleus_id"])
    assert f2.image[3][f2.labels["nuclei"] > 0].mean() > f2.image[3].mean() + 20


@pytest.mark.parametrize(
    "name,factor", [("brightness x1.5", 1.5), ("noise x2", 2.0), ("psf x1.5", 1.5)]
)
def test_new_channels_follow_the_variations(name, factor):
    base = _with(SMALL, **FATE)
    varied = variation_params(name, base)
    a = generate_field(base, "ara-C", seed=2, return_expected=True)
    b = generate_field(varied, "ara-C", seed=2, return_expected=True)
    sig_a, sig_b = a.expected - base.background, b.expected - varied.background
    if name.startswith("brightness"):
        for c in range(5):  # every channel scales alike
            assert sig_b[c].sum() == pytest.approx(factor * sig_a[c].sum(), rel=1e-4)
    elif name.startswith("noise"):
        bg = [np.median(b.image[c]) - varied.offset for c in range(5)]
        assert varied.background == pytest.approx(factor * base.background)
        assert bg[3] == pytest.approx(bg[0], abs=3) and bg[4] > bg[0]  # annexin in the medium
    else:
        for (sz, sxy), (sz0, sxy0) in zip(varied.psf_sigma_um(), base.psf_sigma_um(), strict=True):
            assert (sz, sxy) == pytest.approx((factor * sz0, factor * sxy0))
        assert len(base.psf_sigma_um()) == 5
        # a wider PSF spreads the same Hoechst light further from the nuclei
        outside = [sig[3][f.labels["nuclei"] == 0].sum() for sig, f in ((sig_a, a), (sig_b, b))]
        assert outside[1] > 1.3 * outside[0]
        assert sig_b[3].sum() == pytest.approx(sig_a[3].sum(), rel=0.02)


def test_voxel_size_changes_pixels_not_nuclei():
    """The MSC layout is drawn in µm: its nuclei keep their place and volume on 1.5x
    coarser voxels (Jurkat cells are placed on the pixel grid, and move)."""
    base = _with(SMALL, nuclear_channel=True, apoptosis_rate=0.0)
    for seed in (1, 2, 3):
        a = generate_field(base, "DMSO", seed=seed).tables["nuclei"]
        b = generate_field(base.varied(voxel_size=1.5), "DMSO", seed=seed).tables["nuclei"]
        a, b = a.query("cell_kind == 'msc'"), b.query("cell_kind == 'msc'")
        assert len(a) == len(b) >= 1 and (a["state"] == "normal").all()
        np.testing.assert_allclose(b["volume_um3"], a["volume_um3"], rtol=0.15)
        np.testing.assert_allclose(b[["y_um", "x_um"]], a[["y_um", "x_um"]], atol=0.01)


def test_bleed_through_of_the_new_channels():
    p = _with(SMALL, **FATE)
    x = np.zeros((5, 5))
    x[0, 3] = 0.1  # Hoechst seen in the GFP channel
    x[4, 0] = 0.05  # GFP seen in the annexin channel
    bled = _with(p, crosstalk=tuple(map(tuple, x)), shot_noise=False, read_noise=0.0)
    clean = _with(p, shot_noise=False, read_noise=0.0)
    a = generate_field(clean, "DMSO", seed=1, return_expected=True).expected - p.background
    b = generate_field(bled, "DMSO", seed=1, return_expected=True).expected - p.background
    np.testing.assert_allclose(b[0], a[0] + 0.1 * a[3], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(b[4], a[4] + 0.05 * a[0], rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(b[1:4], a[1:4])
    with pytest.raises(ValueError, match="crosstalk"):
        _with(SMALL, crosstalk=tuple(map(tuple, x)))  # 5 x 5 for 3 channels
    with pytest.raises(ValueError, match="crosstalk"):
        _with(p, crosstalk=((0.0, 0.1), (0.0, 0.0)))


def test_fate_params_are_checked():
    for bad in (
        {"condensed_scale": (0.6, 1.2)},
        {"jurkat_nucleus_fraction": (0.7, 0.6)},
        {"fragment_count": (0, 3)},
        {"apoptotic_hoechst": (2.0, 1.0)},
        {"msc_crowding": 1.5},
    ):
        with pytest.raises(ValueError):
            _with(SMALL, **bad)


# -- the plate ------------------------------------------------------------------------------


def test_plate_with_nuclei_and_annexin(tmp_path):
    zarr = pytest.importorskip("zarr")
    from hcsmito.io.plate import open_plate

    p = _with(SMALL, **FATE, voxel_size=(0.8, 0.3, 0.3), shape=(16, 128, 128), n_jurkat=3)
    out = tmp_path / "fate.zarr"
    write_synth_plate(out, seed=3, wells={"B2": "ara-C"}, fields=1, params=p)
    img = open_plate(out).read_field("B/2", 0)
    assert img.channel_labels == ["GFP", "MitoTracker Red", "Phalloidin", "Hoechst", "Annexin V"]
    meta = json.loads(next(out.glob("B/*/0/zarr.json")).read_text())
    colors = [c["color"] for c in meta["attributes"]["ome"]["omero"]["channels"]]
    assert colors[3:] == ["0000FF", "00FFFF"]
    from hcsmito.synth import field_seed

    expect = generate_field(p, "ara-C", seed=field_seed(3, "B2", 0))
    np.testing.assert_array_equal(np.asarray(img.data), expect.image)
    truth = read_truth(out)
    assert len(truth["nuclei"]) == len(expect.tables["nuclei"])
    assert {"apoptotic", "msc_contact"} <= set(truth["jurkat"].columns)
    assert "pct_jurkat_apoptotic" in truth["fields"]
    root = tmp_path / "fate_truth" / "labels.zarr" / "B" / "02" / "0" / "labels"
    stored = zarr.open_array(root / "nuclei" / "0", mode="r")[...]
    np.testing.assert_array_equal(stored, expect.labels["nuclei"])
    # a plate without the channels has no nuclei truth, and refuses them as channels
    plain = tmp_path / "plain.zarr"
    with pytest.raises(ValueError, match="nuclear_channel"):
        write_synth_plate(plain, wells=["B2"], fields=1, params=SMALL, channels=["Hoechst"])
    write_synth_plate(plain, wells=["B2"], fields=1, params=SMALL, channels=["GFP"])
    assert "nuclei" not in read_truth(plain)


def test_fate_layout():
    from hcsmito.synth import FATE_CONDITIONS, default_layout

    layout = default_layout(FATE_CONDITIONS)
    assert len(layout) == 2 * len(FATE_CONDITIONS)
    assert layout["B2"] == layout["C2"] == "DMSO" and layout["B4"] == "ara-C + cytochalasin D"
    assert default_layout() == default_layout(
        ("DMSO", "cytochalasin D", "18-alpha-GA", "dynasore", "anti-ICAM-1")
    )
    with pytest.raises(ValueError, match="unknown condition"):
        default_layout(("DMSO", "aspirin"))
