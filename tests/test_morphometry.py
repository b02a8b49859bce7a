"""regionprops_table against scikit-image, its per-voxel twin, brute force, and CPU vs GPU."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.measure as skm
from scipy import ndimage as ndi

from hcsmito.backend import get_backend
from hcsmito.measure import (
    aggregate_by_parent,
    regionprops_table,
    table_to_dataframe,
)
from hcsmito.measure._moments import moments_reference, moments_to_host
from hcsmito.measure._scan import moments_cpu
from hcsmito.measure.morphometry import PROPERTIES

SKIMAGE_PROPS = [
    "label",
    "area",
    "centroid",
    "bbox",
    "equivalent_diameter_area",
    "axis_major_length",
    "axis_minor_length",
]
SKIMAGE_INTENSITY_PROPS = [
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "centroid_weighted",
]
# axis lengths are square roots of eigenvalues: near 0 the rounding of scikit-image's own
# float einsum shows, so compare them with a small absolute tolerance (µm)
ATOL = {"axis_major_length": 1e-6, "axis_minor_length": 1e-6}


def random_labels(shape, seed, *, sigma=1.5, fraction=0.15, dtype=np.int32):
    """Labels of thresholded smoothed noise (connected components, seeded)."""
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random(shape), sigma)
    return skm.label(smooth > np.quantile(smooth, 1 - fraction)).astype(dtype)


def random_intensity(shape, seed, dtype=np.uint16):
    rng = np.random.default_rng(seed + 1000)
    return (rng.random(shape) * 4000 + 1).astype(dtype)


def assert_matches_skimage(labels, intensity=None, *, spacing=None, multichannel=False):
    props = SKIMAGE_PROPS + (SKIMAGE_INTENSITY_PROPS if intensity is not None else [])
    ours = regionprops_table(labels, intensity, spacing=spacing)
    sk_int = None
    if intensity is not None:
        sk_int = np.moveaxis(np.asarray(intensity), 0, -1) if multichannel else intensity
    ref = skm.regionprops_table(labels, sk_int, spacing=spacing, properties=props)
    for key, want in ref.items():
        assert key in ours, f"{key} missing from {list(ours)}"
        got = ours[key]
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL.get(key, 0), err_msg=key)
    return ours


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((120, 150), None), ((150, 110), (0.3, 0.2)), ((12, 40, 50), (1.0, 0.25, 0.2))],
)
def test_random_labels_match_skimage(shape, spacing):
    labels = random_labels(shape, seed=len(shape))
    assert labels.max() > 20
    assert_matches_skimage(labels, random_intensity(shape, 0), spacing=spacing)


def test_multichannel_and_float_intensity_match_skimage():
    labels = random_labels((10, 36, 44), seed=3)
    inten = np.stack(
        [random_intensity(labels.shape, 1), random_intensity(labels.shape, 2).astype(np.float32)]
    )
    ours = assert_matches_skimage(labels, inten, spacing=(2.0, 0.5, 0.5), multichannel=True)
    assert "intensity_mean-1" in ours and "centroid_weighted-2-1" in ours
    # a list of channels is the same as a stack
    listed = regionprops_table(labels, list(inten), spacing=(2.0, 0.5, 0.5))
    for k, v in ours.items():
        np.testing.assert_array_equal(listed[k], v, err_msg=k)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.uint64])
def test_non_contiguous_label_values(dtype):
    base = random_labels((60, 70), seed=5)
    base[base > 200] = 0  # room for distinct values in uint8
    n = int(base.max())
    top = min(np.iinfo(dtype).max, 2**63 - 1)
    rng = np.random.default_rng(0)
    values = np.unique(rng.integers(1, top, size=4 * n, dtype=np.uint64, endpoint=True))
    values = rng.permutation(values)[:n]  # distinct, unordered, sparse
    labels = np.concatenate([np.zeros(1, np.uint64), values]).astype(dtype)[base]
    inten = random_intensity(labels.shape, 4)
    if dtype in (np.uint8, np.uint16):
        assert_matches_skimage(labels, inten, spacing=(0.7, 0.4))
    # scikit-image allocates per label value (find_objects), so for 64-bit values compare
    # with its table of the consecutive labels, rows matched through the value map
    ours = regionprops_table(labels, inten, spacing=(0.7, 0.4))
    props = SKIMAGE_PROPS + SKIMAGE_INTENSITY_PROPS
    ref = skm.regionprops_table(base, inten, spacing=(0.7, 0.4), properties=props)
    order = np.argsort(values.astype(dtype))
    np.testing.assert_array_equal(ours["label"], np.sort(values.astype(dtype)))
    for key in ref:
        if key != "label":
            want = ref[key][order]
            np.testing.assert_allclose(ours[key], want, rtol=1e-5, atol=ATOL.get(key, 0))


def test_float_path_for_giant_objects(monkeypatch):
    # objects too big for exact int64 inertia numerators take float64: same answer
    import hcsmito.measure.morphometry as morpho

    monkeypatch.setattr(morpho, "_exact_limit", lambda shape: 0)
    labels = random_labels((10, 40, 50), seed=19)
    assert_matches_skimage(labels, random_intensity(labels.shape, 19), spacing=(1.1, 0.3, 0.2))


def test_one_label():
    labels = np.zeros((9, 30, 31), np.int32)
    labels[2:7, 4:20, 10:29] = 42
    assert_matches_skimage(labels, random_intensity(labels.shape, 5), spacing=(1.5, 0.2, 0.2))


def test_no_labels_gives_zero_rows_full_schema():
    labels = np.zeros((6, 20, 20), np.uint16)
    inten = random_intensity(labels.shape, 6)
    ours = regionprops_table(labels, inten, spacing=(1, 0.5, 0.5), parents=labels)
    with np.errstate(invalid="ignore"):  # scikit-image probes a dummy region: 0/0
        ref = skm.regionprops_table(
            labels, inten, properties=SKIMAGE_PROPS + SKIMAGE_INTENSITY_PROPS, spacing=(1, 0.5, 0.5)
        )
    assert set(ref) <= set(ours)
    assert all(v.shape == (0,) for v in ours.values())
    assert {"n_voxels", "area_projected", "intensity_sum", "parent"} <= set(ours)


def test_one_pixel_objects():
    rng = np.random.default_rng(7)
    labels = np.zeros((5, 40, 40), np.int32)
    flat = rng.choice(labels.size, 60, replace=False)
    labels.flat[flat] = np.arange(1, 61)
    assert_matches_skimage(labels, random_intensity(labels.shape, 7), spacing=(2, 0.3, 0.3))
    t = regionprops_table(labels, spacing=(2, 0.3, 0.3))
    np.testing.assert_array_equal(t["n_voxels"], 1)
    np.testing.assert_allclose(t["area_projected"], 0.09)
    np.testing.assert_array_equal(t["axis_minor_length"], 0)


def test_touching_objects_and_row_wraps():
    # runs of different labels touch, and objects wrap from one row end to the next row start
    labels = np.zeros((7, 9), np.int32)
    labels[:, 6:] = 1
    labels[:, :3] = 1
    labels[:, 3:6] = 2
    labels[3, :] = 3
    assert_matches_skimage(labels, random_intensity(labels.shape, 8), spacing=(1, 1))


def _assert_same_moments(got, want):
    """Every per-label sum equal (exact integers; float sums to rounding), parents too."""
    for f in ("labels", "n", "s1", "s2", "cmin", "cmax", "projected", "wmin", "wmax"):
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
    for f in ("sw", "sww", "swc"):
        np.testing.assert_allclose(getattr(got, f), getattr(want, f), rtol=1e-12, err_msg=f)
    assert set(got.parents) == set(want.parents)
    for name in want.parents:
        for i in range(2):
            np.testing.assert_array_equal(got.parents[name][i], want.parents[name][i])


def test_moments_equal_the_per_voxel_twin():
    labels = random_labels((16, 48, 40), seed=9)
    parents = random_labels(labels.shape, seed=10, sigma=5, fraction=0.5)
    inten = [random_intensity(labels.shape, 11), random_intensity(labels.shape, 12)]
    fast = moments_cpu(labels, inten, {"cell": parents})
    slow = moments_reference(labels, inten, {"cell": parents}, get_backend("cpu"))
    _assert_same_moments(fast, slow)


def _sparse_dense_sparse(shape, seed, dtype):
    """Foci on the outer planes (or rows), a dense band in the middle: every scan path."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    band = slice(shape[0] * 2 // 5, shape[0] * 3 // 5)
    dense = random_labels(labels[band].shape, seed, fraction=0.3)
    labels[band] = np.where(dense > 0, dense + 100, 0)
    n_foci = 40
    for i in range(n_foci):  # small blocks of voxels, away from the band
        z = int(rng.integers(0, shape[0]))
        if band.start - 1 <= z <= band.stop:
            continue
        c = [z] + [int(rng.integers(0, s - 2)) for s in shape[1:]]
        labels[tuple(slice(v, v + 2) for v in c)] = i + 1
    return labels.astype(dtype)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((10, 100, 40), np.int32), ((10, 100, 40), np.uint8), ((1000, 48), np.uint64)],
)
def test_sparse_scan_batches_equal_the_twin(monkeypatch, shape, dtype):
    # small scan blocks and batches: the row-group summary of sparse blocks, its fallback to
    # the direct scan in the dense band, the switch back after it, a last block of rows
    # that is not a multiple of the row group, foreground folded over several batches,
    # and foci in several row groups of one block (rows gathered out of order)
    import hcsmito.measure._scan as scan

    monkeypatch.setattr(scan, "_SCAN_VOXELS", 4000)
    monkeypatch.setattr(scan, "_GATHER_MAX", 1 / 4)
    monkeypatch.setattr(scan, "_BATCH_VOXELS", 300)
    calls = {"summary": 0, "direct": 0, "sparse": 0}
    gather, direct = scan._ForegroundScan._gather_sparse, scan._ForegroundScan._direct

    def counted_gather(self, blk):
        calls["summary"] += 1
        idx = gather(self, blk)
        calls["sparse"] += self.try_summary
        return idx

    def counted_direct(self, blk):
        calls["direct"] += 1
        return direct(self, blk)

    monkeypatch.setattr(scan._ForegroundScan, "_gather_sparse", counted_gather)
    monkeypatch.setattr(scan._ForegroundScan, "_direct", counted_direct)
    labels = _sparse_dense_sparse(shape, seed=21, dtype=dtype)
    parents = random_labels(shape, seed=22, sigma=4, fraction=0.6)
    inten = [random_intensity(shape, 23), random_intensity(shape, 24).astype(np.float32)]
    fast = moments_cpu(labels, inten, {"cell": parents}, threads=1)
    slow = moments_reference(labels, inten, {"cell": parents}, get_backend("cpu"))
    scans = scan._ForegroundScan(labels.reshape(-1, shape[-1]))
    assert labels.reshape(-1, shape[-1]).shape[0] % scans.rows_per_block % 32 != 0
    assert calls["sparse"] >= 4 and calls["summary"] > calls["sparse"] and calls["direct"] >= 3
    assert len(slow.labels) > 20
    _assert_same_moments(fast, slow)
    # the same in 3 threads, each with its own range of rows and partial sums
    threaded = moments_cpu(labels, inten, {"cell": parents}, threads=3)
    _assert_same_moments(threaded, slow)
    if np.dtype(dtype).kind == "i":  # a negative label found through the summary is refused
        labels.flat[7] = -3
        with pytest.raises(ValueError, match="non-negative"):
            moments_cpu(labels, [], {})
        with pytest.raises(ValueError, match="non-negative"):  # also from a worker thread
            moments_cpu(labels, [], {}, threads=3)


def test_projected_area_and_parent_by_brute_force():
    labels = random_labels((9, 30, 34), seed=13, sigma=1.0)
    labels[5:8] = np.roll(labels[5:8], 3, axis=2)  # objects re-enter columns after a gap
    parents = random_labels(labels.shape, seed=14, sigma=4, fraction=0.6)
    t = regionprops_table(labels, spacing=(1.0, 0.5, 0.25), parents={"cell_id": parents})
    for row, lab in enumerate(t["label"]):
        z, y, x = np.nonzero(labels == lab)
        pairs = np.unique(np.stack([y, x], 1), axis=0)
        assert t["area_projected"][row] == pytest.approx(len(pairs) * 0.5 * 0.25)
        p = parents[z, y, x]
        counts = np.bincount(p[p > 0], minlength=1)
        want = int(np.argmax(counts)) if counts.max(initial=0) > 0 else 0
        assert t["cell_id"][row] == want
        assert t["cell_id_overlap"][row] == pytest.approx(counts.max(initial=0) / len(z))


def test_aggregate_by_parent_matches_pandas():
    labels = random_labels((8, 40, 40), seed=15)
    parents = random_labels(labels.shape, seed=16, sigma=4, fraction=0.5)
    parents[parents == parents.max()] = 0  # one parent id is absent...
    parents.flat[np.flatnonzero(labels == 0)[0]] = 999  # ...and one parent holds no object
    inten = random_intensity(labels.shape, 17)
    t = regionprops_table(labels, inten, spacing=(1, 0.5, 0.5), parents=parents)
    agg = aggregate_by_parent(t, parent_labels=parents)
    df = table_to_dataframe(t)
    g = df[df.parent > 0].groupby("parent")
    ids = np.unique(parents[parents > 0])
    np.testing.assert_array_equal(agg["label"], ids)
    want = g.size().reindex(ids, fill_value=0)
    np.testing.assert_array_equal(agg["n_objects"], want.to_numpy())
    for col in ("area", "area_projected", "intensity_sum"):
        w = g[col].sum().reindex(ids, fill_value=0.0).to_numpy()
        np.testing.assert_allclose(agg[col], w, rtol=1e-12, err_msg=col)
    assert agg["n_objects"][ids == 999][0] == 0


def test_properties_subset_and_errors():
    labels = random_labels((30, 30), seed=18)
    t = regionprops_table(labels, properties=["label", "area_projected", "centroid"])
    assert list(t) == ["label", "area_projected", "centroid-0", "centroid-1"]
    assert set(PROPERTIES) >= {"label", "parent"}
    with pytest.raises(TypeError, match="integer dtype"):
        regionprops_table(labels.astype(np.float32))
    with pytest.raises(ValueError, match="intensity has shape"):
        regionprops_table(labels, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="spacing"):
        regionprops_table(labels, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="unknown properties"):
        regionprops_table(labels, properties=["perimeter"])
    with pytest.raises(ValueError, match="non-negative"):
        regionprops_table(-labels)
    with pytest.raises(ValueError, match="B/3 field 0"):
        regionprops_table(labels[None, None], where="B/3 field 0")


def _speckles(shared_data):
    tifffile = pytest.importorskip("tifffile")
    foci = tifffile.imread(shared_data / "speckles" / "1-162hrh2ax2.tif")
    nuclei = tifffile.imread(shared_data / "speckles" / "1-162hrhoe2.tif")
    from skimage.filters import threshold_otsu

    top = foci.astype(np.float32) - ndi.uniform_filter(foci.astype(np.float32), 15)
    foci_labels = skm.label(top > np.percentile(top, 99))
    nuclei_labels = skm.label(ndi.gaussian_filter(nuclei, 2) > threshold_otsu(nuclei))
    return foci, foci_labels.astype(np.int32), nuclei_labels.astype(np.int32)


def test_real_speckle_foci_match_skimage(shared_data):
    foci, labels, nuclei = _speckles(shared_data)
    assert labels.max() > 100
    ours = assert_matches_skimage(labels, foci, spacing=(0.5, 0.5))
    par = regionprops_table(labels, foci, parents=nuclei)
    assert (par["parent"] > 0).mean() > 0.5  # most γH2AX foci lie in a nucleus
    np.testing.assert_array_equal(par["label"], ours["label"])


def test_real_bpae_mito_matches_skimage(shared_data):
    tifffile = pytest.importorskip("tifffile")
    from skimage.filters import threshold_otsu

    mito = tifffile.imread(shared_data / "bpae" / "BPAE_mito.tif")
    labels = skm.label(mito > threshold_otsu(mito)).astype(np.int32)
    assert labels.max() > 50
    assert_matches_skimage(labels, mito, spacing=(0.108, 0.108))


# -------------------------------------------------------------------------------- GPU ----


def _gpu_case(cp, ndim, seed, *, huge=False):
    shape = (10, 70, 90) if ndim == 3 else (150, 170)
    labels = random_labels(shape, seed)
    top = labels.max()
    edge = labels[0] if ndim == 3 else labels  # degenerate shapes: a line, a dimer, a voxel
    edge[0, :] = 0
    edge[0, 2:9], edge[0, 12:14], edge[0, 20] = top + 1, top + 2, top + 3
    if huge:  # label values beyond the lookup table: the kernels bisect
        labels = np.where(labels > 0, labels.astype(np.int64) * 1_000_003 + 2**40, 0)
    parents = random_labels(shape, seed + 1, sigma=4, fraction=0.5)
    inten = np.stack([random_intensity(shape, seed), random_intensity(shape, seed + 2) * 0.5])
    inten = [inten[0], inten[1].astype(np.float32)]
    return labels, inten, parents


@pytest.mark.gpu
@pytest.mark.parametrize(("ndim", "huge"), [(2, False), (3, False), (3, True)])
def test_gpu_kernel_equals_twin_and_cpu(gpu, ndim, huge):
    from hcsmito.measure._kernels import moments_gpu

    cp = gpu.xp
    labels, inten, parents = _gpu_case(cp, ndim, 20 + ndim, huge=huge)
    d_lab, d_par = cp.asarray(labels), cp.asarray(parents)
    d_int = [cp.asarray(c) for c in inten]
    fused = moments_to_host(moments_gpu(d_lab, d_int, {"cell": d_par}, gpu))
    twin = moments_reference(d_lab, d_int, {"cell": d_par}, gpu)
    cpu = moments_cpu(labels, inten, {"cell": parents})
    for ref in (twin, cpu):
        for f in ("labels", "n", "s1", "s2", "cmin", "cmax", "wmin", "wmax"):
            np.testing.assert_array_equal(getattr(fused, f), getattr(ref, f), err_msg=f)
        for f in ("sw", "sww", "swc"):
            np.testing.assert_allclose(getattr(fused, f), getattr(ref, f), rtol=1e-10, err_msg=f)
        if ndim == 3:
            np.testing.assert_array_equal(fused.projected, ref.projected)
        for i in range(2):
            np.testing.assert_array_equal(fused.parents["cell"][i], ref.parents["cell"][i])


def test_table_same_on_every_backend(backend):
    labels, inten, parents = _gpu_case(np, 3, 31)
    spacing = (1.2, 0.3, 0.3)
    want = regionprops_table(labels, np.stack(inten), spacing=spacing, parents=parents)
    got = regionprops_table(
        backend.asarray(labels),
        [backend.asarray(c) for c in inten],
        spacing=spacing,
        parents=backend.asarray(parents),
    )
    assert list(got) == list(want)
    for k in want:
        assert isinstance(got[k], np.ndarray)
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=ATOL.get(k, 0), err_msg=k)
    by_name = regionprops_table(
        labels, inten, spacing=spacing, parents=parents, backend=backend.name
    )
    assert list(by_name) == list(got)  # numpy inputs, computed where backend= says
    for k in by_name:
        np.testing.assert_allclose(by_name[k], got[k], rtol=1e-12, err_msg=k)
    empty = regionprops_table(backend.xp.zeros((4, 5, 6), np.int32), spacing=spacing)
    assert all(v.shape == (0,) for v in empty.values())


@pytest.mark.gpu
@pytest.mark.parametrize("n", [2, 3])
def test_gpu_eigenvalue_kernel_matches_eigvalsh(gpu, n):
    from hcsmito.measure._kernels import eigvalsh_sym

    rng = np.random.default_rng(n)
    M = rng.normal(size=(400, n, n)) * rng.uniform(0.01, 100, size=(400, 1, 1))
    T = M @ M.transpose(0, 2, 1)  # symmetric positive semi-definite...
    T[:50] = np.eye(n) * rng.uniform(0, 5, size=(50, 1, 1))  # ...isotropic
    v = rng.normal(size=(50, n, 1))
    T[50:100] = v @ v.transpose(0, 2, 1)  # rank one: a double eigenvalue 0
    T[100:110] = 0
    T[110:160] = np.diag(np.r_[1.0, 1.0, 3.0][:n])[None] * rng.uniform(0.1, 9, (50, 1, 1))
    got = gpu.to_host(eigvalsh_sym(gpu.asarray(T)))
    want = np.linalg.eigvalsh(T)[:, ::-1]
    scale = np.abs(T).max(axis=(1, 2))[:, None] + 1e-300
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=1e-13)
