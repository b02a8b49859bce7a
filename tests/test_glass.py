"""The glass plane against the generator's truth and hand-made fields that fool a
whole-field actin profile: actin-rich cells above the glass, Jurkat-only wells, tilted
plates, coarse z steps, pure noise; the plate-reference fallback; nanotubes found with the
glass so estimated."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage as ndi

from hcsmito.stages.glass import Glass, estimate_glass, resolve_glass
from hcsmito.stages.tnt import detect_tnts, match_tnts
from hcsmito.synth import SynthParams, generate_field

PARAMS = SynthParams(shape=(20, 160, 160), n_msc=2, n_jurkat=6)


@functools.cache
def _field(params: SynthParams = PARAMS, condition: str = "DMSO", seed: int = 2):
    return generate_field(params, condition=condition, seed=seed)


def _channels(f, image=None):
    img = f.image if image is None else image
    return {"msc": img[0], "mito": img[1], "actin": img[2]}


def _with_actin_rich_cells_on_mscs(f, n: int = 3, amplitude: float = 1500.0):
    """The field with ``n`` bright actin shells (Jurkat-like cortex, radius 4 µm) resting on
    the MSCs, away from the nanotubes, added to the actin channel and to the Jurkat labels:
    they dominate the actin z-profile of the MSC footprint ~3.6 µm above the glass."""
    dz, dy, dx = f.params.voxel_size
    msc = f.labels["msc"] > 0
    top = np.where(msc.any(0), msc.shape[0] - 1 - np.argmax(msc[::-1], axis=0), -1) * dz
    inner = ndi.distance_transform_edt(msc.any(0), sampling=(dy, dx)) > 6.0
    tubes = ndi.binary_dilation(f.labels["tnt"].any(0), iterations=20)
    ok = inner & ~tubes
    actin = f.image[2].astype(np.float32)
    jur = f.labels["jurkat"].copy()
    zz, yy, xx = np.indices(actin.shape, dtype=np.float32)
    zz, yy, xx = zz * dz, yy * dy, xx * dx
    shells = np.zeros(actin.shape, np.float32)
    rng = np.random.default_rng(0)
    placed = 0
    for _ in range(200):
        if placed == n or not ok.any():
            break
        iy, ix = np.argwhere(ok)[rng.integers(int(ok.sum()))]
        r = 4.0
        cz, cy, cx = top[iy, ix] + r + 0.2, iy * dy, ix * dx
        rho = np.sqrt(((zz - cz) / r) ** 2 + ((yy - cy) / r) ** 2 + ((xx - cx) / r) ** 2)
        shells += ((rho <= 1) & (rho > 1 - 0.6 / r)).astype(np.float32)
        jur[rho <= 1] = jur.max() + 1
        ok &= (np.hypot(np.arange(ok.shape[0])[:, None] * dy - cy,
                        np.arange(ok.shape[1])[None] * dx - cx) > 2.5 * r)  # fmt: skip
        placed += 1
    assert placed == n
    sz, sxy = f.params.psf_sigma_um()[2]
    actin += amplitude * ndi.gaussian_filter(shells, (sz / dz, sxy / dy, sxy / dx))
    return actin, jur


def _old_whole_profile_glass(actin, dz, msc_labels):
    """The estimate this stage replaced: half-maximum of the actin z-profile of the MSC
    footprint (what a whole-field profile gives)."""
    foot = (msc_labels > 0).any(0)
    prof = actin[:, foot].mean(axis=1)
    level = prof.min() + 0.5 * (prof.max() - prof.min())
    i = int(np.flatnonzero(prof[: int(np.argmax(prof)) + 1] < level)[-1])
    return (i + (level - prof[i]) / (prof[i + 1] - prof[i])) * dz


def test_default_field_glass_within_a_quarter_micron_and_plausible():
    """The three cues together, and each channel alone. GFP and actin alone stay within
    0.35 µm; MitoTracker alone (the last resort: the bottoms of rounded Jurkat bodies and
    of the MSCs' mitochondria, which lie above the glass) reads high. Measured (68b9f4b,
    seeds 0-15 of this field): GFP -0.05 µm on every seed, actin -0.15 to 0.00, MitoTracker
    -0.06 to +0.47 (+0.36 on seed 2, this field; before 68b9f4b up to +0.41-0.45 over
    seeds 0-7), so MitoTracker is held to -0.35 to +0.6 µm: at most one plane (0.6 µm)
    high, and no lower than the other cues may read."""
    f = _field()
    g = estimate_glass(_channels(f), voxel_size=f.voxel_size)
    assert g.plausible and g.flags == () and g.source == "gfp_edge"
    assert g.z_um == pytest.approx(PARAMS.glass_z_um, abs=0.25)
    assert set(g.cues) == {"gfp_edge", "actin_rise"}
    for cue in g.cues.values():
        assert cue == pytest.approx(PARAMS.glass_z_um, abs=0.3)
    # each channel alone
    for role, cue in (("msc", "gfp_edge"), ("actin", "actin_rise"), ("mito", "mito_rise")):
        one = estimate_glass({role: f.image["msc mito actin".split().index(role)]},
                             voxel_size=f.voxel_size)  # fmt: skip
        assert one.source == cue and one.plausible
        if role == "mito":
            assert -0.35 <= one.z_um - PARAMS.glass_z_um <= 0.6, role
        else:
            assert one.z_um == pytest.approx(PARAMS.glass_z_um, abs=0.35), role


@pytest.mark.parametrize("glass_z", [0.5, 3.0])
def test_glass_height_followed(glass_z):
    p = PARAMS.model_copy(update={"glass_z_um": glass_z, "shape": (26, 160, 160)})
    f = _field(p)
    g = estimate_glass(_channels(f), voxel_size=f.voxel_size)
    assert g.plausible and g.z_um == pytest.approx(glass_z, abs=0.3)


def test_coarse_z_steps():
    """1 µm z steps (the glass between two planes or on one): the half-rise crossing."""
    p = PARAMS.model_copy(update={"voxel_size": (1.0, 0.3, 0.3), "shape": (13, 160, 160)})
    for glass_z in (1.0, 1.5):
        f = _field(p.model_copy(update={"glass_z_um": glass_z}))
        g = estimate_glass(_channels(f), voxel_size=f.voxel_size)
        assert g.plausible and g.z_um == pytest.approx(glass_z, abs=0.3)


def test_actin_rich_cells_above_do_not_lift_the_glass_and_tnts_are_found():
    """Bright cortex of cells resting on the MSCs lifts the whole-profile estimate by
    micrometres (every nanotube then fails the height rule); the first rise stays on the
    glass, from the actin channel alone too, and the nanotubes are found."""
    f = _field()
    truth = f.tables["tnt"]
    assert len(truth) >= 3
    actin, jur = _with_actin_rich_cells_on_mscs(f)
    dz = f.params.voxel_size[0]
    assert _old_whole_profile_glass(actin, dz, f.labels["msc"]) > PARAMS.glass_z_um + 2.0
    img = np.stack([f.image[0], f.image[1], actin])
    for chans in (_channels(f, img), {"actin": actin}):
        g = estimate_glass(chans, voxel_size=f.voxel_size)
        assert g.plausible and g.z_um == pytest.approx(PARAMS.glass_z_um, abs=0.5)
    res = detect_tnts(
        actin, voxel_size=f.voxel_size, msc_labels=f.labels["msc"], jurkat_labels=jur,
        mito=f.image[1], glass_channels=_channels(f, img),
    )  # fmt: skip
    assert res.flags == () and res.glass_source == "gfp_edge"
    assert len(match_tnts(res.table, truth)) >= len(truth) - 1
    assert res.n <= len(truth) + 1


def test_jurkat_only_well():
    p = PARAMS.model_copy(update={"n_msc": 0, "n_msc_spread": 0})
    for seed in (0, 1):
        f = _field(p, seed=seed)
        g = estimate_glass(_channels(f), voxel_size=f.voxel_size)
        assert g.source == "actin_rise" and g.plausible  # no GFP; MitoTracker held back
        assert g.z_um == pytest.approx(p.glass_z_um, abs=0.5)
        m = estimate_glass({"mito": f.image[1]}, voxel_size=f.voxel_size)  # no actin either
        assert m.source == "mito_rise" and m.z_um == pytest.approx(p.glass_z_um, abs=0.8)


def _tilted(f, rise_um: float):
    """The field sheared along z: the glass rises ``rise_um`` across x (linear interpolation
    of every column; the stack was generated with room above and below)."""
    dz, _, dx = f.params.voxel_size
    nz, ny, nx = f.image.shape[1:]
    shift = (np.arange(nx) - (nx - 1) / 2) * dx * (rise_um / (nx * dx)) / dz  # planes
    zz = np.arange(nz)[:, None, None] - shift[None, None, :]
    zz = np.broadcast_to(zz, (nz, ny, nx))
    yy, xx = (np.broadcast_to(a[None], (nz, ny, nx)) for a in np.indices((ny, nx)))
    out = np.stack([ndi.map_coordinates(c.astype(np.float32), [zz, yy, xx], order=1,
                                        mode="nearest") for c in f.image])  # fmt: skip
    return out, rise_um / (nx * dx)


def test_tilted_plate_fitted_as_a_plane():
    p = PARAMS.model_copy(update={"glass_z_um": 2.5, "shape": (26, 160, 160)})
    f = _field(p)
    img, slope = _tilted(f, 3.0)
    g = estimate_glass(_channels(f, img), voxel_size=f.voxel_size)
    assert g.plausible
    assert g.slope[1] == pytest.approx(slope, abs=0.006) and abs(g.slope[0]) < 0.006
    ny, nx = img.shape[-2:]
    dy, dx = f.params.voxel_size[1:]
    for y in (0, (ny - 1) * dy):
        for x in (0, (nx - 1) * dx):
            truth = 2.5 + slope * (x - (nx - 1) * dx / 2)
            assert float(g.at(y, x)) == pytest.approx(truth, abs=0.5)
    # a flat field gets no tilt
    flat = estimate_glass(_channels(f), voxel_size=f.voxel_size)
    assert flat.slope == (0.0, 0.0)


def test_noise_is_implausible_and_flagged():
    rng = np.random.default_rng(0)
    noise = rng.poisson(110, (20, 128, 128)).astype(np.uint16)
    g = estimate_glass({"actin": noise}, voxel_size=(0.6, 0.3, 0.3))
    assert not g.plausible and np.isnan(g.z_um) and g.flags == ("glass_implausible",)
    cells = np.zeros(noise.shape, np.int32)
    cells[2:10, 10:40, 10:40] = 1
    res = detect_tnts(noise, voxel_size=(0.6, 0.3, 0.3), msc_labels=cells,
                      jurkat_labels=np.zeros_like(cells))  # fmt: skip
    assert res.flags == ("glass_implausible",) and res.glass_source == "none"
    # the plate's reference replaces it, still flagged
    res = detect_tnts(noise, voxel_size=(0.6, 0.3, 0.3), msc_labels=cells,
                      jurkat_labels=np.zeros_like(cells), glass_reference_um=1.2)  # fmt: skip
    assert res.glass_source == "plate" and res.glass_z_um == 1.2
    assert res.flags == ("glass_implausible",)


def test_stack_above_the_glass_is_implausible():
    """A stack whose first plane lies inside the cells has no glass to find, from the
    three channels together or any one alone: a few tiles still rise (a Jurkat cell on an
    MSC, a tube, a focus; the MitoTracker cue found a 'glass' 0.28 µm up in this stack)
    but in most the cells start below the first plane."""
    f = _field()
    cut = f.image[:, 4:]  # the glass (1 µm) and 1.4 µm of the cells cut away
    g = estimate_glass(_channels(f, cut), voxel_size=f.voxel_size)
    assert not g.plausible and g.flags == ("glass_implausible",)
    assert "below the first plane" in g.reason
    for role, img in _channels(f, cut).items():
        assert not estimate_glass({role: img}, voxel_size=f.voxel_size).plausible, role


def test_resolve_glass_against_the_plate_reference():
    own = Glass(1.0, "combined", True)
    assert resolve_glass(own, reference_um=1.4) is own
    assert resolve_glass(own, reference_um=None) is own
    far = resolve_glass(own, reference_um=3.0, tolerance_um=1.5)
    assert far.source == "plate" and far.z_um == 3.0 and far.flags == ("glass_implausible",)
    bad = Glass(1.0, "actin_rise", False, reason="cues disagree")
    fb = resolve_glass(bad, reference_um=1.1)
    assert fb.source == "plate" and "cues disagree" in fb.reason and not fb.plausible
    given = detect_tnts(
        np.zeros((12, 32, 32), np.float32), voxel_size=0.5,
        msc_labels=np.zeros((12, 32, 32), np.int32), jurkat_labels=np.zeros((12, 32, 32), np.int32),
        glass_z_um=2.0,
    )  # fmt: skip
    assert given.glass_source == "given" and given.glass_z_um == 2.0 and given.flags == ()


def test_gpu_matches_cpu_glass(backend):
    f = _field()
    want = estimate_glass(_channels(f), voxel_size=f.voxel_size)
    got = estimate_glass(
        {k: backend.asarray(v) for k, v in _channels(f).items()}, voxel_size=f.voxel_size
    )
    assert got.source == want.source and got.plausible == want.plausible
    assert got.z_um == pytest.approx(want.z_um, abs=1e-3)


def test_plate_glass_reference_from_a_sample_of_fields(tmp_path):
    """The runner's plate reference: the median of the sampled fields' estimates, set as
    tnt.glass_reference_um and recorded for the manifest; skipped when the glass is given."""
    from hcsmito.config import load_config
    from hcsmito.io.plate import open_plate
    from hcsmito.plate_refs import plate_glass
    from hcsmito.synth import write_synth_plate

    p = PARAMS.model_copy(update={"glass_z_um": 1.8, "shape": (22, 128, 128)})
    path = write_synth_plate(tmp_path / "g.zarr", seed=1, wells={"B/2": "DMSO", "B/3": "DMSO"},
                             fields=1, params=p)  # fmt: skip
    plate = open_plate(path)
    cfg, info = plate_glass(plate, load_config(overrides=["plate_threshold.sample_fields=2"]))
    assert info["fields"] == ["B/2/0", "B/3/0"] and not info["left_out"]
    assert info["z_um"] == pytest.approx(1.8, abs=0.3)
    assert cfg.tnt.glass_reference_um == info["z_um"]
    given = load_config(overrides=["tnt.glass_z_um=2.0"])
    assert plate_glass(plate, given) == (given, {})
