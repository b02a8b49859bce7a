"""Foci detection on generated fields with known foci, on real images, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from test_segmentation import VS3, toy_field

from hcsmito.stages.foci import detect_foci, enhance_spots
from hcsmito.stages.segmentation import segment_jurkat, segment_msc


@pytest.fixture(scope="module", params=[False, True], ids=["3d", "2d"])
def field(request):
    twod = request.param
    gfp, mito, truth = toy_field(seed=1, twod=twod)
    vs = VS3[1:] if twod else VS3
    msc = segment_msc(gfp, voxel_size=vs, msc_diameter_um=30.0)
    jur = segment_jurkat(mito, voxel_size=vs, msc_labels=msc.labels)
    return twod, vs, mito, truth, msc.labels, jur.labels


def _match(found_um, truth_um, tol=1.0):
    d = np.sqrt(((found_um[:, None] - truth_um[None]) ** 2).sum(-1))
    return d.min(axis=0) <= tol, d.min(axis=1) <= tol


def test_foci_found_with_parents(backend, field):
    twod, vs, mito, truth, msc, jur = field
    res = detect_foci(
        backend.asarray(mito),
        voxel_size=vs,
        msc_labels=backend.asarray(msc),
        jurkat_labels=backend.asarray(jur),
    )
    lab = backend.to_host(res.labels)
    assert lab.dtype == np.int32 and lab.shape == mito.shape
    assert int(lab.max()) == res.n == len(res.parent) == len(res.peak)
    cent = np.array(ndi.center_of_mass(mito.astype(float), lab, range(1, res.n + 1))) * vs
    true = truth["foci"][:, :3][:, -len(vs) :]
    found_true, true_found = _match(cent, true)
    assert found_true.all() and true_found.all()  # every focus found, no false positive
    # parents: the MSC label under each true focus
    for cz, cy, cx, _cell in truth["foci"]:
        i = int(np.argmin(np.hypot(cent[:, -2] - cy, cent[:, -1] - cx)))
        idx = tuple(np.round(np.array([cz, cy, cx][-len(vs) :]) / vs).astype(int))
        assert res.parent[i] == msc[idx] > 0
    # peaks lie inside their own focus
    assert (lab[tuple(res.peak.T)] == np.arange(1, res.n + 1)).all()


def test_jurkat_bodies_and_halo_excluded(field):
    twod, vs, mito, truth, msc, jur = field
    whole = detect_foci(mito, voxel_size=vs)  # plate without an MSC channel
    assert (whole.parent == 0).all()

    def proj(a):
        return a.any(axis=0) if a.ndim == 3 else a

    jur_far = ndi.distance_transform_edt(~proj(jur > 0), sampling=vs[-2:])  # lateral, µm
    msc_in = ndi.distance_transform_edt(proj(msc > 0), sampling=vs[-2:])

    def at(img2d, peaks):
        return img2d[tuple(peaks[:, -2:].T)]

    assert (at(jur_far, whole.peak) < 2.0).sum() > 10  # the Jurkat mitochondria are spots too
    res = detect_foci(
        mito, voxel_size=vs, msc_labels=msc, jurkat_labels=jur, halo_um=2.0, edge_margin_um=1.0
    )
    assert (at(jur_far, res.peak) > 2.0).all() and (at(msc_in, res.peak) > 1.0).all()
    # every focus of the whole-field detection in the search region is kept, no other
    keep = (msc[tuple(whole.peak.T)] > 0) & (at(jur_far, whole.peak) > 2.0)
    keep &= at(msc_in, whole.peak) > 1.0
    assert res.n == int(keep.sum())


def test_enhance_spots_peaks_at_spot_centres():
    img = np.zeros((15, 48, 48), np.float32)
    centres = [(7, 10, 12), (5, 30, 33), (9, 36, 9)]
    for c in centres:
        img[c] = 100.0
    img = ndi.gaussian_filter(img, (0.5 / 0.5, 0.15 / 0.1, 0.15 / 0.1))
    resp = enhance_spots(img, voxel_size=(0.5, 0.1, 0.1), foci_diameter_um=0.4)
    for c in centres:
        win = tuple(slice(max(v - 3, 0), v + 4) for v in c)
        local = np.unravel_index(np.argmax(resp[win]), resp[win].shape)
        assert tuple(int(s.start + i) for s, i in zip(win, local, strict=True)) == c
    assert resp.dtype == np.float32


def test_touching_foci_split():
    vs = (0.2, 0.2)
    img = np.zeros((40, 40), np.float32)
    img[20, 17] = img[20, 23] = 100.0  # 1.2 µm apart
    img = ndi.gaussian_filter(img, 0.15 / 0.2) + 1.0
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)
    res = detect_foci(img, voxel_size=vs, foci_diameter_um=0.4, min_separation_um=0.8)
    assert res.n == 2
    assert sorted(map(tuple, res.peak)) == [(20, 17), (20, 23)]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 1), (9, 11), (4, 9, 11)], ids=str)
def test_degenerate_fields(dtype, shape):
    rng = np.random.default_rng(0)
    top = 65535 if dtype == np.uint16 else 1e6
    vs = (0.5, 0.2, 0.2)[3 - len(shape) :]
    for img in (np.zeros(shape, dtype), np.full(shape, top, dtype)):
        for msc in (None, np.ones(shape, np.int32), np.zeros(shape, np.int32)):
            res = detect_foci(img, voxel_size=vs, msc_labels=msc, jurkat_labels=msc)
            assert res.n == 0 and res.labels.shape == shape and not res.labels.any()
    noise = (100 + rng.poisson(10.0, (6, 40, 40))).astype(dtype)
    res = detect_foci(noise, voxel_size=(0.5, 0.2, 0.2))
    assert res.n <= 1  # ~1e-9 false-alarm rate per voxel at 6 sigma


def test_bad_inputs():
    with pytest.raises(ValueError, match="same field"):
        detect_foci(np.zeros((8, 8)), voxel_size=0.2, msc_labels=np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="select the channel"):
        detect_foci(np.zeros((2, 3, 8, 8)), voxel_size=0.2)


def test_speckles_foci_inside_nuclei(shared_data):
    """gamma-H2AX foci and Hoechst nuclei (CellProfiler ExampleSpeckles).

    The pixel size is not recorded; 0.1 µm/px is assumed (the pipeline's nuclei of
    120-300 px are then 12-30 µm, its foci of 4-35 px 0.4-3.5 µm). Nuclei are segmented
    with the MSC segmentation (Otsu, shape split: the pipeline uses Otsu and shape
    declumping too).
    """
    d = shared_data / "speckles"
    hoechst = tifffile.imread(d / "1-162hrhoe2.tif")
    h2ax = tifffile.imread(d / "1-162hrh2ax2.tif")
    vs = (0.1, 0.1)
    nuclei = segment_msc(hoechst, voxel_size=vs, msc_diameter_um=15.0, threshold="otsu")
    # 6 whole nuclei, and two cut by the left border (one a sliver) are visible
    assert nuclei.n == 8 and nuclei.touches_border.sum() == 2
    areas = np.bincount(nuclei.labels.ravel())[1:] * 0.01
    assert np.all(areas[~nuclei.touches_border] > 120) and np.all(areas < 260)
    whole = detect_foci(h2ax, voxel_size=vs, foci_diameter_um=0.8)
    inside = nuclei.labels[tuple(whole.peak.T)] > 0
    assert whole.n > 100 and inside.mean() > 0.75  # most foci of the field are nuclear
    res = detect_foci(h2ax, voxel_size=vs, msc_labels=nuclei.labels, foci_diameter_um=0.8)
    per_nucleus = np.bincount(res.parent, minlength=nuclei.n + 1)[1:]
    whole_nuclei = ~nuclei.touches_border
    assert (per_nucleus[whole_nuclei] >= 2).all() and (per_nucleus <= 60).all()


def test_bpae_mitochondria_plausible(shared_data):
    """Mitochondria of fixed BPAE cells (2-D, ~0.108 µm/px), segmented without parents.

    Ranges: BPAE cells hold hundreds of mitochondrial fragments per field of a few
    cells (measured: 488); a fragment is a tubule ~0.3-0.5 µm wide and ~0.5-4 µm long,
    0.1-2 µm² (measured median 0.50 µm² with the half-maximum outline, 0.93 µm² for the
    whole thresholded regions); mitochondria cover a minority of a field that holds
    several cells and background (measured 2.8 %; Otsu on the background-subtracted image
    gives 2.7 %, on the raw image 9 %).
    """
    img = tifffile.imread(shared_data / "bpae" / "BPAE_mito.tif")
    vs = (0.108, 0.108)
    res = detect_foci(img, voxel_size=vs, foci_diameter_um=0.5)
    areas = np.bincount(res.labels.ravel())[1:] * vs[0] * vs[1]
    covered = float((res.labels > 0).mean())
    assert 200 <= res.n <= 5000
    assert 0.1 <= float(np.median(areas)) <= 2.0
    assert 0.01 <= covered <= 0.4
    # objects lie on the mitochondria, not on the background: bright in the raw image
    from skimage.filters import threshold_otsu

    # measured: 441 of 490 peaks (0.90); 440 of 488 with a fixed 2-voxel minimum: the two
    # lone-voxel foci at 6.1 and 6.2 sigmas (one on a mitochondrion) are like the 16 larger
    # foci under 6.45 sigmas (k / rho at 0.108 µm), half of which are on one
    assert (img[tuple(res.peak.T)] > threshold_otsu(img) * 0.5).mean() > 0.88


@pytest.mark.gpu
def test_gpu_matches_cpu(gpu, field):
    twod, vs, mito, truth, msc, jur = field
    cpu = detect_foci(mito, voxel_size=vs, msc_labels=msc, jurkat_labels=jur)
    dev = detect_foci(
        gpu.asarray(mito),
        voxel_size=vs,
        msc_labels=gpu.asarray(msc),
        jurkat_labels=gpu.asarray(jur),
    )
    assert dev.n == cpu.n
    np.testing.assert_array_equal(dev.parent, cpu.parent)
    np.testing.assert_array_equal(dev.peak, cpu.peak)
    assert np.mean(gpu.to_host(dev.labels) == cpu.labels) > 0.999
    whole_cpu = detect_foci(mito, voxel_size=vs)
    whole_dev = detect_foci(gpu.asarray(mito), voxel_size=vs)
    assert abs(whole_dev.n - whole_cpu.n) <= max(1, 0.01 * whole_cpu.n)


def _generated_foci(brightness, extent_fraction):
    """Foci of one generated field, matched to the generator's true foci: (projected
    areas found, true projected areas, detected peaks, the matched true foci's rows)."""
    from scipy.optimize import linear_sum_assignment

    from hcsmito.synth import SynthParams, generate_field

    p = SynthParams(shape=(24, 256, 256)).varied(brightness=brightness)
    f = generate_field(p, "ara-C", seed=3)
    gfp, mito = f.image[0], f.image[1]  # GFP, MitoTracker Red
    vs = dict(zip("zyx", p.voxel_size, strict=True))
    msc = segment_msc(gfp, voxel_size=vs).labels
    jur = segment_jurkat(mito, voxel_size=vs, msc_labels=msc).labels
    res = detect_foci(
        mito, voxel_size=vs, msc_labels=msc, jurkat_labels=jur, extent_fraction=extent_fraction
    )
    ids = np.arange(1, res.n + 1)
    sp = np.array(p.voxel_size)
    cent = np.array(ndi.center_of_mass(mito.astype(float), res.labels, ids)) * sp
    t = f.tables["foci"]
    d = np.linalg.norm(cent[:, None] - t[["z_um", "y_um", "x_um"]].to_numpy()[None], axis=2)
    r, c = linear_sum_assignment(d)
    ok = d[r, c] <= 1.0
    proj = ndi.sum_labels(np.ones(mito.shape[1:]), res.labels.max(axis=0), ids)  # footprints
    area = np.asarray(proj)[r[ok]] * sp[1] * sp[2]
    true_area = np.pi / 4 * t["diameter_um"].to_numpy()[c[ok]] ** 2
    return area, true_area, res, c[ok]


def test_focus_extent_is_the_half_maximum_outline():
    """The same field at 1/2x and 2x brightness: the half-maximum outline gives each focus
    the same area (the noise-threshold region grows with brightness) and stays near the
    generator's true area. Measured (20 foci): median area / true area 1.48 at both
    brightnesses (sub-resolution foci: 0.3-1 µm on 0.3 µm pixels); the threshold regions
    3.73x and 4.99x.

    The growth of the threshold region is taken per focus, the same true focus at both
    brightnesses: medians of two separate sets of pixel-quantised areas compare foci that
    differ in size and went from 1.34x to 1.05x on this field when 68b9f4b redrew the
    scenes (1.05-1.49x over seeds 0-7). Measured over seeds 0-7 (68b9f4b, 8-24 matched
    foci each): the threshold region's median paired growth 1.09-1.27x, 79-100 % of foci
    grow and none shrinks; the half-maximum outline's 1.00x on every seed, 0-40 % grow.
    The bounds sit between the two: median growth > 1.05x, at least 60 % growing."""
    dim, true_dim, res_dim, t_dim = _generated_foci(0.5, 0.5)
    bright, true_bright, res_bright, t_bright = _generated_foci(2.0, 0.5)
    assert res_dim.n >= 8 and res_bright.n >= 8
    assert 0.8 < np.median(dim / true_dim) < 2.0
    assert 0.8 < np.median(bright / true_bright) < 2.0
    assert abs(np.median(bright / true_bright) / np.median(dim / true_dim) - 1) < 0.15
    # the whole thresholded region (extent_fraction=0): bigger, and growing with brightness
    dim0, true_dim0, res0, t_dim0 = _generated_foci(0.5, 0.0)
    bright0, true_bright0, _, t_bright0 = _generated_foci(2.0, 0.0)
    both = np.intersect1d(t_dim0, t_bright0)
    assert both.size >= 8
    # each focus's threshold region at 2x over its own at 1/2x (paired by the true focus)
    a_dim0 = dict(zip(t_dim0.tolist(), dim0.tolist(), strict=True))
    a_bright0 = dict(zip(t_bright0.tolist(), bright0.tolist(), strict=True))
    grow0 = np.array([a_bright0[k] / a_dim0[k] for k in both.tolist()])
    assert np.median(grow0) > 1.05 and np.mean(grow0 > 1) >= 0.6
    a_dim = dict(zip(t_dim.tolist(), dim.tolist(), strict=True))
    a_bright = dict(zip(t_bright.tolist(), bright.tolist(), strict=True))
    same = [a_bright[k] / a_dim[k] for k in set(a_dim) & set(a_bright)]
    assert abs(np.median(same) - 1) < 0.05  # the outline: the same area at both
    assert np.median(dim0 / true_dim0) > 2 * np.median(dim / true_dim)
    # the outline changes the extent only: same foci, same parents, nested labels
    assert res0.n == res_dim.n
    assert (res0.parent == res_dim.parent).all() and (res0.peak == res_dim.peak).all()
    inside = res_dim.labels > 0
    assert (res0.labels[inside] == res_dim.labels[inside]).all()
    with pytest.raises(ValueError, match="extent_fraction"):
        detect_foci(np.zeros((9, 9), np.float32), voxel_size=(0.1, 0.1), extent_fraction=1.0)


def _truth_matched(res, mito, sp, truth_um, tol=1.0):
    """Number of foci of ``res`` matched one-to-one to the true centres within ``tol`` µm."""
    from scipy.optimize import linear_sum_assignment

    ids = np.arange(1, res.n + 1)
    cent = np.array(ndi.center_of_mass(mito.astype(float), res.labels, ids)).reshape(-1, 3) * sp
    d = np.linalg.norm(cent[:, None] - truth_um[None], axis=2)
    r, c = linear_sum_assignment(np.where(d <= tol, d, 1e6))
    return int((d[r, c] <= tol).sum())


def _coarse_dim_field(seed):
    from hcsmito.synth import SynthParams, generate_field, variation_params

    base = SynthParams(shape=(24, 256, 256), n_msc=3, n_jurkat=5)
    p = variation_params("voxel x1.5", base=variation_params("brightness x0.5", base=base))
    return p, generate_field(p, "DMSO", seed=seed)


def test_lone_voxel_foci_kept_at_coarse_sampling():
    """Half the stain on 0.9 x 0.45 x 0.45 µm voxels (the true cells as masks): a dim focus
    has only its peak voxel over the threshold. A fixed 2-voxel minimum misses one true focus
    on each of these two fields (seeds 0 and 40: 19 of 22 found); the lone-voxel rule finds
    them (21 of 22) and nothing that is not a true focus."""
    old_tp = new_tp = n_true = 0
    for seed in (0, 40):
        p, f = _coarse_dim_field(seed)
        mito, sp = f.image[1], np.array(p.voxel_size)
        truth = f.tables["foci"][["z_um", "y_um", "x_um"]].to_numpy()
        kw = dict(voxel_size=f.voxel_size, msc_labels=f.labels["msc"])
        kw["jurkat_labels"] = f.labels["jurkat"]
        old = detect_foci(mito, min_volume_um3=2 * float(np.prod(sp)), **kw)
        new = detect_foci(mito, **kw)
        tp_old, tp_new = _truth_matched(old, mito, sp, truth), _truth_matched(new, mito, sp, truth)
        assert tp_old == old.n and tp_new == new.n  # no false focus either way
        assert tp_new == tp_old + 1
        sizes = np.bincount(new.labels.ravel())[1:]
        assert (sizes == 1).sum() >= 1  # the focus gained is a single voxel over the threshold
        old_tp, new_tp, n_true = old_tp + tp_old, new_tp + tp_new, n_true + len(truth)
    assert (old_tp, new_tp, n_true) == (19, 21, 22)


def test_lone_hot_voxel_is_not_a_focus():
    """One hot voxel added inside an MSC of a 0.6 x 0.3 x 0.3 µm field: its enhanced image is
    the bare kernel, 10 noise sigmas at the voxel and under the threshold around it (a lone
    voxel), brighter than a focus can be and stay alone (k / rho = 8.7 sigmas): not a focus,
    and the field's foci are those found without it."""
    from hcsmito.synth import SynthParams, generate_field

    p = SynthParams(shape=(24, 256, 256), n_msc=3, n_jurkat=5)
    f = generate_field(p, "DMSO", seed=0)
    mito, sp = f.image[1].astype(np.float32), np.array(p.voxel_size)
    kw = dict(voxel_size=f.voxel_size, msc_labels=f.labels["msc"])
    kw["jurkat_labels"] = f.labels["jurkat"]
    clean = detect_foci(mito, **kw)
    # an MSC voxel well inside the cells, far from every true focus, on a quiet background
    # (the enhanced image at most 1 noise sigma over its median in the voxel's box)
    msc = f.labels["msc"]
    inner = ndi.distance_transform_edt(msc.any(axis=0), sampling=sp[1:])
    yy, xx = np.mgrid[: inner.shape[0], : inner.shape[1]] * sp[1:, None, None]
    far = np.full(inner.shape, np.inf)
    for ty, tx in f.tables["foci"][["y_um", "x_um"]].to_numpy():
        far = np.minimum(far, np.hypot(yy - ty, xx - tx))
    quiet = ndi.maximum_filter(clean.spots.response, size=3)
    quiet = quiet - (clean.threshold - 6.0 * clean.noise)
    ok = (msc > 0) & ((inner > 3.0) & (far > 4.0))[None] & (quiet < clean.noise)
    z, y, x = (int(v[len(v) // 2]) for v in np.nonzero(ok))
    impulse = np.zeros((9, 17, 17), np.float32)
    impulse[4, 8, 8] = 1.0
    k0 = float(enhance_spots(impulse, voxel_size=f.voxel_size)[4, 8, 8])
    hot = mito.copy()
    hot[z, y, x] += 10.0 * clean.noise / k0
    res = detect_foci(hot, **kw)
    resp = res.spots.response
    box = resp[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2].copy()
    height = (box[1, 1, 1] - (res.threshold - 6.0 * res.noise)) / res.noise
    assert 9.0 < height < 11.0  # over the threshold...
    box[1, 1, 1] = -np.inf
    assert box.max() < res.threshold  # ...alone
    assert res.labels[z, y, x] == 0
    assert res.n == clean.n and (res.peak == clean.peak).all()


def test_lone_voxel_bars():
    """The bars follow the sampling: k1 from the Gaussian tail of a pair, checked against
    scipy's bivariate normal; coarser voxels ask more of a lone voxel and allow it more."""
    from scipy.stats import multivariate_normal

    from hcsmito.stages.foci import _pair_tail, lone_voxel_bars

    for rho in (0.0, 0.4, 0.8):
        ref = multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([-2.0, -2.0])
        assert _pair_tail(2.0, rho) == pytest.approx(ref, rel=1e-3)
    fine = lone_voxel_bars((0.6, 0.3, 0.3), 6.0)
    coarse = lone_voxel_bars((0.9, 0.45, 0.45), 6.0)
    assert 6.0 < fine[0] < 7.0 < coarse[0] < 8.0  # 6.6 and 7.4 sigmas
    assert 8.0 < fine[1] < 9.5 and coarse[1] > 15  # k / rho: 8.7 and 16
    assert lone_voxel_bars((0.3, 0.1, 0.1), 6.0)[0] == 6.0  # never under k
