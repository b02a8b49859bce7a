"""Per-field QC flags: each flag raised by a generated field that shows its problem and
not by the same field without it; default generated fields carry none; the codes'
text form; and a real plate run whose flagged field shows in the status, the run
summary, the manifest, the report and (when excluded) the statistics."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage as ndi

from hcsmito.qc import (
    QC_FLAGS,
    check_flags,
    cut_cells,
    falloff_ratio,
    field_qc,
    format_flag_counts,
    join_flags,
    msc_cover_fraction,
    share_at_maximum,
    sharpness,
    signal_to_noise,
    split_flags,
)
from hcsmito.synth import SynthParams, generate_field

ROLES = ("msc", "mito", "actin")
PARAMS = SynthParams(shape=(24, 256, 256), n_msc=3, n_jurkat=5)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def field():
    return generate_field(PARAMS, seed=0)


def _channels(f, image=None):
    image = f.image if image is None else image
    return {r: image[i] for i, r in enumerate(ROLES)}


def _qc(f, image=None, labels=None, **kw):
    labels = f.labels if labels is None else labels
    return field_qc(
        _channels(f, image),
        voxel_size=f.voxel_size,
        msc_labels=labels["msc"],
        jurkat_labels=labels["jurkat"],
        **kw,
    )


def _rho2(shape):
    ny, nx = shape[-2:]
    yy = (np.arange(ny) - (ny - 1) / 2) / ((ny - 1) / 2)
    xx = (np.arange(nx) - (nx - 1) / 2) / ((nx - 1) / 2)
    return (yy[:, None] ** 2 + xx[None, :] ** 2) / 2  # 1 at the corners


# --------------------------------------------------------------------------- codes


def test_readme_lists_exactly_the_qc_flags():
    text = README.read_text()
    section = text.split("## QC flags", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    assert codes == list(QC_FLAGS)


def test_flag_text_round_trip_in_declaration_order():
    assert join_flags([]) == ""
    assert join_flags(["vignetting", "saturated", "saturated"]) == "saturated,vignetting"
    assert split_flags("saturated,vignetting") == ("saturated", "vignetting")
    for empty in ("", None, pd.NA, np.nan):
        assert split_flags(empty) == ()
    assert format_flag_counts(["saturated,vignetting", "", "saturated", pd.NA]) == (
        "2 fields flagged: saturated 2, vignetting 1"
    )
    assert format_flag_counts(["", ""]) == ""
    with pytest.raises(ValueError, match=r"'nope'.* from stage x.*QC_FLAGS"):
        check_flags(["saturated", "nope"], source="stage x")


# --------------------------------------------------------------------------- no false alarm


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(24, 256, 256), (256, 256)], ids=["3d", "2d"])
def test_default_generated_fields_carry_no_flag(shape, seed):
    f = generate_field(PARAMS.model_copy(update={"shape": shape}), seed=seed)
    q = _qc(f)
    assert q.flags == (), q.metrics


def test_single_population_controls_flag_only_the_empty_channel():
    """Jurkat-only: the GFP channel is empty (that is why n_msc is 0), nothing else; a
    field without Jurkat cells still has its transferred foci: no flag."""
    jurkat_only = generate_field(PARAMS.model_copy(update={"n_msc": 0}), seed=1)
    assert _qc(jurkat_only).flags == ("empty_channel",)
    assert _qc(jurkat_only).metrics["snr.msc"] < 10 < _qc(jurkat_only).metrics["snr.mito"]
    msc_only = generate_field(PARAMS.model_copy(update={"n_jurkat": 0}), seed=1)
    assert _qc(msc_only).flags == ()


# --------------------------------------------------------------------------- saturated


def test_saturated_clipped_channel(field):
    img = field.image.copy()
    top = np.percentile(img[1], 99.5)
    img[1] = np.minimum(img[1], top).astype(img.dtype)
    expected = np.mean(img[1] == img[1].max())  # independent: numpy over every voxel
    assert share_at_maximum(img[1]) == pytest.approx(expected)
    assert expected > 1e-3
    assert "saturated" in _qc(field, img).flags
    # the unclipped channel reaches its maximum in a voxel or a few
    raw = field.image[1]
    assert share_at_maximum(raw) == pytest.approx(np.mean(raw == raw.max()))
    assert share_at_maximum(raw) < 1e-5
    assert "saturated" not in _qc(field).flags


def test_saturated_at_top_of_dtype_and_not_for_a_constant_channel(field):
    img = field.image.astype(np.float32)
    gain = 255 / np.percentile(img[1], 99.5)  # the brightest 0.5 % pile up at 255
    img8 = np.clip(img * gain, 0, 255).astype(np.uint8)
    assert np.mean(img8[1] == 255) > 1e-3
    assert "saturated" in _qc(field, img8).flags
    flat = np.full((12, 64, 64), 65535, np.uint16)
    assert share_at_maximum(flat) == 0.0  # flat: that is empty_channel, not saturated
    q = field_qc({"mito": flat}, voxel_size=field.voxel_size)
    assert q.flags == ("empty_channel",)


# --------------------------------------------------------------------------- empty channel


def test_empty_channel_noise_only(field):
    rng = np.random.default_rng(5)
    noise = rng.poisson(10.0, field.image.shape[1:]) + 3 * rng.standard_normal(
        field.image.shape[1:]
    )
    img = field.image.copy()
    img[2] = np.rint(100 + noise).astype(img.dtype)
    assert signal_to_noise(img[2]) < 8  # pure noise: ~6-7 (the 10th-highest block over p1)
    assert min(signal_to_noise(c) for c in field.image) > 20
    assert "empty_channel" in _qc(field, img).flags
    assert "empty_channel" not in _qc(field).flags
    assert signal_to_noise(np.zeros((8, 32, 32), np.uint16)) == 0.0


def test_a_marker_channel_without_positive_cells_is_not_an_empty_channel(field):
    """Annexin V in a vehicle well, or a config's own marker, with no positive cell: flat
    noise is the answer (none positive), not a defect; the same channel as a cell
    channel is flagged. Its signal-to-noise is still recorded."""
    rng = np.random.default_rng(6)
    flat = np.rint(100 + rng.poisson(10.0, field.image.shape[1:])).astype(field.image.dtype)
    roles = {"msc": field.image[0], "mito": field.image[1], "actin": field.image[2]}
    for name in ("annexin", "casp3"):
        q = field_qc({**roles, name: flat}, voxel_size=field.voxel_size, markers=(name,))
        assert q.flags == () and q.metrics[f"snr.{name}"] < 10
    q = field_qc({**roles, "annexin": flat}, voxel_size=field.voxel_size)
    assert q.flags == ("empty_channel",)


def test_cells_filling_a_shallow_stack_are_not_an_empty_channel():
    """A stack that holds only the MSC layer, MSCs over 80 % of the field: the median is
    cell, and a high-pass across its few planes is all cell edges (measured before:
    GFP read 6.2 and was flagged empty). Against the floor of the stack and the lateral
    noise it reads tens."""
    from hcsmito.synth import variation_params

    p = variation_params("msc_layer_only", base=SynthParams(shape=(24, 256, 256), n_msc=3))
    f = generate_field(p, "ara-C", seed=0)
    assert float(np.mean(f.labels["msc"].max(axis=0) > 0)) > 0.7
    assert signal_to_noise(f.image[0]) > 30


# --------------------------------------------------------------------------- focus


def test_sharpness_length_of_a_blurred_random_field():
    """White noise blurred by a Gaussian of sigma s has structure length sqrt(2) s,
    with or without pixel noise on top (the estimate is noise-free)."""
    rng = np.random.default_rng(1)
    for s in (2.0, 4.0):
        a = 100 + 1000 * ndi.gaussian_filter(rng.standard_normal((640, 640)), s)
        noisy = a + 5 * rng.standard_normal(a.shape)
        for img in (a, noisy):
            length, plane = sharpness(img, {"y": 0.05, "x": 0.05})  # 8 µm tiles: 160 px
            assert plane == 0
            assert length == pytest.approx(np.sqrt(2) * s * 0.05, rel=0.05)
    # a stack: the sharpest plane is found, a plane of noise has no structure
    stack = np.stack([rng.standard_normal((160, 160)), ndi.gaussian_filter(a[:160, :160], 1)])
    assert sharpness(stack, {"z": 1, "y": 0.05, "x": 0.05})[1] == 1
    assert sharpness(rng.standard_normal((2, 64, 64)), {"z": 1, "y": 0.1, "x": 0.1}) == (
        np.inf,
        -1,
    )


def test_out_of_focus_blurred_field():
    """Defocus: every structure of the field spread over micrometres (PSF x6)."""
    blurred = generate_field(PARAMS.varied(psf_width=6), seed=0)
    q = _qc(blurred)
    assert "out_of_focus" in q.flags
    lengths = [v for k, v in q.metrics.items() if k.startswith("length_um.")]
    assert lengths and min(lengths) > 1.5
    sharp = _qc(generate_field(PARAMS, seed=0))
    assert min(v for k, v in sharp.metrics.items() if k.startswith("length_um.")) < 0.8


def test_out_of_focus_two_d():
    p2 = PARAMS.model_copy(update={"shape": (256, 256)})
    assert "out_of_focus" in _qc(generate_field(p2.varied(psf_width=6), seed=0)).flags
    assert "out_of_focus" not in _qc(generate_field(p2, seed=0)).flags


def test_out_of_focus_cells_below_the_stack():
    """A stack that starts above the MSCs: every channel is sharpest in its first plane
    (the lateral criterion is switched off here by a long focus_length_um)."""
    f = generate_field(PARAMS.model_copy(update={"n_jurkat": 0}), seed=0)
    top = f.image[:, 9:]
    q = field_qc(_channels(f, top), voxel_size=f.voxel_size, focus_length_um=50.0)
    assert "out_of_focus" in q.flags
    planes = [v for k, v in q.metrics.items() if k.startswith("sharpest_plane.")]
    assert planes and set(planes) == {0.0}
    q_full = field_qc(_channels(f), voxel_size=f.voxel_size, focus_length_um=50.0)
    assert "out_of_focus" not in q_full.flags


# --------------------------------------------------------------------------- vignetting


@pytest.mark.parametrize("shape", [(24, 256, 256), (256, 256)], ids=["3d", "2d"])
def test_vignetting_radial_falloff(shape):
    f = generate_field(PARAMS.model_copy(update={"shape": shape}), seed=2)
    ratio0 = min(
        (r for r, s in (falloff_ratio(c) for c in f.image) if np.isfinite(r)),
        key=lambda r: abs(r - 1),
    )
    assert ratio0 == pytest.approx(1.0, abs=0.1)
    for corner, flagged in ((0.5, True), (0.85, False)):
        v = np.exp(np.log(corner) * _rho2(shape))  # corners at `corner` of the centre
        img = np.rint(f.image * v).astype(f.image.dtype)
        q = _qc(f, img)
        assert ("vignetting" in q.flags) is flagged, q.metrics["vignetting_ratio"]
        # the fit recovers the applied fall-off (the background is offset + light)
        assert q.metrics["vignetting_ratio"] == pytest.approx(corner, abs=0.08)


# --------------------------------------------------------------------------- labels


def test_msc_cover(field):
    lab = field.labels["msc"]
    assert msc_cover_fraction(lab) == pytest.approx(np.mean(lab.max(axis=0) > 0))
    assert "msc_cover" not in _qc(field).flags
    covering = np.zeros_like(lab)
    covering[:, :, : int(0.95 * lab.shape[2])] = 1  # one MSC over 95 % of the field
    q = _qc(field, labels={"msc": covering, "jurkat": field.labels["jurkat"]})
    assert "msc_cover" in q.flags and q.metrics["msc_cover"] == pytest.approx(0.95, abs=0.01)


def test_stack_cuts_cells(field):
    """A stack 8.4 µm tall: the Jurkat cells (8.5 µm, on glass at 1 µm or on MSCs)
    go on above it."""
    nz = 14
    labels = {k: v[:nz] for k, v in field.labels.items()}
    jur = labels["jurkat"]
    # independent: per cell, top-plane area over footprint, by numpy
    expected = [
        i
        for i in range(1, jur.max() + 1)
        if (jur.max(axis=0) == i).sum() >= 20
        and (jur[-1] == i).sum() >= 0.25 * (jur.max(axis=0) == i).sum()
    ]
    assert expected
    assert list(cut_cells(jur)) == expected
    q = _qc(field, field.image[:, :nz], labels=labels)
    assert "stack_cuts_cells" in q.flags and q.metrics["cut_cells"] >= len(expected)
    assert list(cut_cells(field.labels["jurkat"])) == []
    assert "stack_cuts_cells" not in _qc(field).flags
    # a cap grazing the top plane is not a cut cell
    ball = np.zeros((10, 40, 40), np.int32)
    zz, yy, xx = np.mgrid[:10, :40, :40]
    ball[(zz - 5) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 4.3**2] = 1
    assert list(cut_cells(ball)) == []
    assert list(cut_cells(ball[:6])) == [1]


# --------------------------------------------------------------------------- a plate run

WELLS = {"B/2": "DMSO", "B/3": "cytochalasin D"}


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory):
    """A 2-well x 2-field plate whose B/3 field 0 has a clipped mito channel, run
    through the command line (20 planes: the stack holds the Jurkats on the MSCs)."""
    from hcsmito.cli import main
    from hcsmito.synth import write_synth_plate

    root = tmp_path_factory.mktemp("qcplate")
    params = SynthParams(n_msc=2, n_jurkat=3).varied(cell_size=0.6)
    plate = write_synth_plate(
        root / "p.zarr", seed=4, wells=WELLS, fields=2, shape=(20, 128, 128), params=params
    )
    arr = zarr.open_array(plate / "B" / "03" / "0" / "0", mode="r+")
    data = arr[...]
    data[1] = np.minimum(data[1], np.percentile(data[1], 99.5)).astype(data.dtype)
    arr[...] = data
    out = root / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["run", "--plate", str(plate), "--out", str(out), "--plate-map",
             str(root / "p_platemap.csv"), "--backend", "cpu", "--workers", "2",
             "--no-progress"]
        )  # fmt: skip
    assert code == 0
    return out, buf.getvalue()


def test_run_flags_the_clipped_field(flagged_run):
    out, printed = flagged_run
    fields = pd.read_parquet(out / "tables" / "fields.parquet")
    assert fields["qc_flags"].dtype == "string"
    assert fields["status"].tolist() == ["ok"] * 4  # a flagged field stays ok
    by = {(w, f): set(split_flags(q)) for w, f, q in fields[["well", "field", "qc_flags"]].values}
    assert by[("B/3", 0)] == {"saturated"}
    assert all(not v for k, v in by.items() if k != ("B/3", 0))  # no false alarm
    # the closing summary counts flagged fields per code
    assert format_flag_counts(list(fields["qc_flags"])) == "1 field flagged: saturated 1"
    assert "1 field flagged: saturated 1" in printed
    # the manifest's per-field status records the flags
    manifest = json.loads((out / "manifest.json").read_text())
    rec = {(e["well"], e["field"]): e for e in manifest["fields"]}
    assert "saturated" in rec[("B/3", 0)]["qc_flags"]
    assert rec[("B/3", 0)]["qc"]["saturated_share.mito"] > 1e-3
    # the TNT stage ran (3-D, actin): its glass plane is in the fields table
    assert fields["glass_z_um"].notna().all() and (fields["glass_source"] != "").all()


def test_status_shows_each_fields_flags(flagged_run, capsys):
    from hcsmito.cli import main
    from hcsmito.runner import field_status

    out, _ = flagged_run
    st = field_status(out)
    assert "saturated" in st.set_index(["well", "field"]).loc[("B/3", 0), "qc_flags"]
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["B/3", "0"])
    assert "saturated" in line
    assert "flagged: " in text and "saturated 1" in text


def test_report_excludes_flagged_fields_from_statistics(flagged_run, capsys):
    from hcsmito.aggregate import READOUTS
    from hcsmito.cli import main

    out, _ = flagged_run
    assert main(["report", str(out), "--unit", "field"]) == 0
    cond_all = pd.read_parquet(out / "tables" / "conditions.parquet")
    html_all = (out / "report.html").read_text()
    assert "QC flags" in html_all and "B/3" in html_all and QC_FLAGS["saturated"] in html_all

    assert main(["report", str(out), "--unit", "field", "--exclude-flags", "saturated"]) == 0
    capsys.readouterr()
    cond = pd.read_parquet(out / "tables" / "conditions.parquet")
    summary = json.loads((out / "tables" / "aggregate.json").read_text())
    assert summary["exclude_flags"] == ["saturated"] and summary["n_fields_excluded"] == 1
    assert summary["excluded_fields"][0]["well"] == "B/3"

    # by hand with pandas: the field values of the fields left, mean and n per condition
    fields = pd.read_parquet(out / "tables" / "fields.parquet")
    keep = ~fields["qc_flags"].map(lambda q: "saturated" in split_flags(q))
    assert keep.sum() == 3
    r = READOUTS["foci_per_msc"]
    kept = fields[keep].copy()
    den = kept[r.den].astype("float64")
    kept["value"] = kept[r.num].astype("float64") / den.where(den > 0)
    kept["condition"] = kept["well"].map(WELLS)
    kept = kept.dropna(subset=["value"])
    hand = kept.groupby("condition")["value"].agg(["mean", "size"])
    got = cond[cond["readout"] == "foci_per_msc"].set_index("condition")
    for c in hand.index:
        assert got.loc[c, "n"] == hand.loc[c, "size"]
        assert got.loc[c, "mean"] == pytest.approx(hand.loc[c, "mean"])
    before = cond_all[cond_all["readout"] == "foci_per_msc"].set_index("condition")
    assert before.loc["cytochalasin D", "n"] == got.loc["cytochalasin D", "n"] + 1
    assert before.loc["DMSO", "n"] == got.loc["DMSO", "n"]
    html = (out / "report.html").read_text()
    assert "left out" in html and "exclude_flags: saturated" in html

    assert main(["report", str(out), "--exclude-flags", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [1, 2])
def test_default_fields_through_the_pipeline_carry_no_flag(seed):
    """With the pipeline's own labels (msc_cover, stack_cuts_cells), 3-D and 2-D."""
    from hcsmito.config import load_config
    from hcsmito.pipeline import process_field

    for shape in ((24, 256, 256), (256, 256)):
        f = generate_field(PARAMS.model_copy(update={"shape": shape}), seed=seed)
        res = process_field(
            _channels(f), voxel_size=f.voxel_size, config=load_config(), backend="cpu"
        )
        assert res.tables["fields"]["qc_flags"].iloc[0] == "", res.qc


@pytest.mark.gpu
def test_field_qc_gpu_equals_cpu(field, gpu):
    """The same flags and measurements from CuPy arrays as from NumPy ones."""
    img = field.image.copy()
    img[1] = np.minimum(img[1], np.percentile(img[1], 99.5)).astype(img.dtype)
    cpu = _qc(field, img)
    dev = field_qc(
        {r: gpu.asarray(img[i]) for i, r in enumerate(ROLES)},
        voxel_size=field.voxel_size,
        msc_labels=gpu.asarray(field.labels["msc"]),
        jurkat_labels=gpu.asarray(field.labels["jurkat"]),
    )
    assert dev.flags == cpu.flags == ("saturated",)
    assert dev.metrics.keys() == cpu.metrics.keys()
    for k, v in cpu.metrics.items():
        assert dev.metrics[k] == pytest.approx(v, rel=1e-3, abs=1e-6), k


def test_fields_above_the_sample_size_are_binned_or_strided():
    """40x600x600 voxels (14 M): the checks look at a sample, with the same answers."""
    rng = np.random.default_rng(2)
    a = (100 + rng.poisson(10.0, (40, 600, 600))).astype(np.uint16)
    assert field_qc({"mito": a}, voxel_size={"z": 0.5, "y": 0.1, "x": 0.1}).flags == (
        "empty_channel",
    )
    a[5:15, 100:300, 100:300] = 4095  # a clipped bright block, 1 % of the voxels
    assert share_at_maximum(a) == pytest.approx(np.mean(a == 4095), rel=0.1)
    q = field_qc({"mito": a}, voxel_size={"z": 0.5, "y": 0.1, "x": 0.1})
    assert q.flags == ("saturated",)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.int16, np.uint32, np.float32])
@pytest.mark.parametrize("shape", [(3, 61, 50), (40, 17), (2, 33, 33)])
def test_binned_sample_is_the_float32_block_mean(dtype, shape):
    """Small integers are binned by integer sums (exact in float32, any order), divided as
    ``mean`` divides: the same numbers as the float32 mean over the blocks."""
    from hcsmito.backend import get_backend
    from hcsmito.qc import _float_sample

    b = get_backend("cpu")
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (info.min, min(info.max, 1 << 20)) if info else (0.0, 7e4)
    a = rng.uniform(lo, hi, shape).astype(dtype)
    a.reshape(-1)[:5] = hi  # the largest values
    for voxels in (a.size // 9, a.size // 16, a.size // 100, a.size):
        got, k = _float_sample(b, a, voxels)
        ny, nx = (a.shape[-2] // k) * k, (a.shape[-1] // k) * k
        c = a[..., :ny, :nx]
        want = (
            c.reshape(*c.shape[:-2], ny // k, k, nx // k, k).mean(axis=(-3, -1), dtype=np.float32)
            if k > 1
            else c.astype(np.float32)
        )
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_field_checks_on_one_sample_per_channel_equal_each_check_alone(monkeypatch):
    import hcsmito.qc as qc_mod
    from hcsmito.qc import falloff_ratio, field_qc, sharpness, signal_to_noise

    rng = np.random.default_rng(3)
    vs = {"z": 0.6, "y": 0.3, "x": 0.3}
    img = rng.poisson(100, (6, 400, 360)).astype(np.uint16)
    img[:, 100:200, 50:150] += 300
    img[2:4, 250:260, 200:330] += 900
    chans = {"mito": img, "msc": (img // 2).astype(np.uint16)}
    small = 1 << 17  # binned (k = 3), as a large field is
    monkeypatch.setattr(qc_mod, "_SAMPLE_VOXELS", small)
    monkeypatch.setattr(qc_mod._float_sample, "__defaults__", (small,))
    assert qc_mod._float_sample(qc_mod.Backend.of(img), img)[1] == 3
    res = field_qc(chans, voxel_size=vs)
    for role, a in chans.items():
        assert res.metrics[f"snr.{role}"] == signal_to_noise(a)
        length, p = sharpness(a, vs)
        assert res.metrics[f"length_um.{role}"] == length
        assert res.metrics[f"sharpest_plane.{role}"] == p
    ratios = [falloff_ratio(a) for a in chans.values()]
    best = min(ratios, key=lambda r: r[1])[0]
    assert res.metrics["vignetting_ratio"] == best or np.isnan(best)
