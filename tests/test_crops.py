"""Work done on boxes instead of the whole field, or once instead of twice, gives the
whole field's answer (issue 16).

Each cropped computation is compared with the same computation on the uncropped arrays,
element for element, on seeded generated volumes that hold ties (cells on a grid, equal
distances to two cells) and features far outside the boxes.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as sndi

from hcsmito.stages._util import bbox, enhance_spots, fill_holes, label_sizes, voronoi_labels
from hcsmito.stages.foci import detect_foci
from hcsmito.stages.tnt._geometry import (
    far_from,
    feature_transform,
    near_features,
    nearest_features,
)

SP = (0.6, 0.3, 0.3)


def _cells_and_tubes(seed: int, shape=(12, 64, 72)):
    """Blocky cells (some touching the volume's edges), thin tubes in the free space."""
    rng = np.random.default_rng(seed)
    cells = np.zeros(shape, bool)
    for _ in range(6):
        z, y, x = (int(rng.integers(0, s)) for s in shape)
        h = [int(rng.integers(1, 4)), int(rng.integers(2, 10)), int(rng.integers(2, 10))]
        cells[
            max(z - h[0], 0) : z + h[0], max(y - h[1], 0) : y + h[1], max(x - h[2], 0) : x + h[2]
        ] = True
    # symmetric pairs: a voxel midway between two equal blocks is a tie
    cells[4:6, 10:14, 10:14] = True
    cells[4:6, 10:14, 30:34] = True
    tubes = np.zeros(shape, bool)
    tubes[5, 12, 14:30] = True  # between the symmetric pair
    for _ in range(5):
        z, y = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        x0 = int(rng.integers(0, shape[2] - 10))
        tubes[z, y, x0 : x0 + int(rng.integers(3, 10))] = True
    tubes[shape[0] - 1, shape[1] - 2, 1:4] = True  # at the volume's edge
    tubes &= ~cells
    return cells, tubes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margins_um", [(0.3,), (1.0, 4.0), (4.0,), ()])
def test_nearest_features_equal_the_whole_field_transform(backend, seed, margins_um):
    xp = backend.xp
    cells, tubes = _cells_and_tubes(seed)
    if not cells.any():
        pytest.skip("no cell")
    free = xp.asarray(~cells)
    comp, _ = sndi.label(tubes, structure=np.ones((3, 3, 3), bool))
    at = xp.nonzero(xp.asarray(tubes))
    got = nearest_features(backend, free, at, xp.asarray(comp)[at], SP, margins_um=margins_um)
    full = feature_transform(backend, free, SP)
    for i in range(3):
        np.testing.assert_array_equal(backend.to_host(got[i]), backend.to_host(full[i][at]))


def test_nearest_features_without_a_feature_nearby_use_the_whole_field(backend):
    xp = backend.xp
    cells = np.zeros((6, 40, 40), bool)
    cells[:, :3, :3] = True  # far from the tube, beyond any margin
    tubes = np.zeros_like(cells)
    tubes[3, 30, 25:35] = True
    at = xp.nonzero(xp.asarray(tubes))
    free = xp.asarray(~cells)
    got = nearest_features(backend, free, at, xp.ones(at[0].shape, xp.int32), SP, margins_um=(0.5,))
    full = feature_transform(backend, free, SP)
    for i in range(3):
        np.testing.assert_array_equal(backend.to_host(got[i]), backend.to_host(full[i][at]))


def _voronoi_full(seeds, mask, sampling):
    """voronoi_labels as it was, on the whole array (the reference)."""
    ones = np.ones((3,) * mask.ndim, bool)
    cc, n_cc = sndi.label(mask, structure=ones)
    idx = sndi.distance_transform_edt(seeds == 0, sampling=sampling, return_distances=False,
                                      return_indices=True)  # fmt: skip
    near = tuple(idx)
    ok = mask & (cc[near] == cc)
    out = np.where(ok, seeds[near], np.where(mask, cc + int(seeds.max()), 0))
    present = np.bincount(out.ravel()) > 0
    present[0] = False
    return (np.cumsum(present) * present)[out]


@pytest.mark.parametrize("seed", range(5))
def test_voronoi_labels_on_the_mask_box_equal_the_whole_field(backend, seed):
    rng = np.random.default_rng(seed)
    shape = (10, 60, 70)
    mask = np.zeros(shape, bool)
    mask[2:7, 15:40, 20:50] = rng.random((5, 25, 30)) > 0.35
    seeds = np.zeros(shape, np.int32)
    pts = np.argwhere(mask)[rng.choice(int(mask.sum()), 12, replace=False)]
    seeds[tuple(pts.T)] = np.arange(1, 13)
    got = voronoi_labels(backend, backend.asarray(seeds), backend.asarray(mask), SP)
    np.testing.assert_array_equal(backend.to_host(got), _voronoi_full(seeds, mask, SP))


def test_bbox_margin_and_empty(backend):
    xp = backend.xp
    m = xp.zeros((5, 20, 30), bool)
    assert bbox(backend, m) is None
    m[2, 5:8, 10] = True
    assert bbox(backend, m) == (slice(2, 3), slice(5, 8), slice(10, 11))
    assert bbox(backend, m, (3, 6, 25)) == (slice(0, 5), slice(0, 14), slice(0, 30))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["default", "lateral", "full", "2d"])
def test_fill_holes_equals_binary_fill_holes(backend, seed, kind):
    rng = np.random.default_rng(seed)
    shape = (40, 50) if kind == "2d" else (7, 40, 50)
    # rings and random blobs: holes of every size, open and closed at the edges
    mask = rng.random(shape) > 0.55
    mask = sndi.binary_opening(mask) | (
        sndi.binary_dilation(rng.random(shape) > 0.99, iterations=3)
        ^ (sndi.binary_dilation(rng.random(shape) > 0.99, iterations=1))
    )
    st = None
    if kind == "lateral":
        st = np.zeros((3, 3, 3), bool)
        st[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    elif kind == "full":
        st = np.ones((3, 3, 3), bool)
    want = sndi.binary_fill_holes(mask, structure=st)
    got = fill_holes(backend, backend.asarray(mask), st)
    np.testing.assert_array_equal(backend.to_host(got), want)
    assert (want != mask).any() or kind == "full"  # the case has holes


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("min_um", [0.3, 0.6, 0.9, 1.0, 1.5])
@pytest.mark.parametrize("two_d", [False, True])
@pytest.mark.parametrize("tile", [7, 16, 128])
def test_far_from_equals_the_distance_transform(backend, seed, min_um, two_d, tile):
    rng = np.random.default_rng(seed)
    shape = (50, 60) if two_d else (9, 50, 60)
    sp = SP[1:] if two_d else SP
    feats = np.zeros(shape, bool)
    pts = tuple(rng.integers(2, n - 2, 6) for n in shape)
    feats[pts] = True
    feats = sndi.binary_dilation(feats, iterations=2)
    want = sndi.distance_transform_edt(~feats, sampling=sp) > min_um
    got = far_from(backend, backend.asarray(feats), min_um, sp, tile=tile)
    np.testing.assert_array_equal(backend.to_host(got), want)


def test_spot_response_is_reused_only_for_its_image_and_options(backend):
    rng = np.random.default_rng(0)
    mito = backend.asarray(rng.random((6, 30, 40)).astype(np.float32))
    other = backend.asarray(backend.to_host(mito).copy())
    kept = enhance_spots(mito, voxel_size=SP, keep=True)
    np.testing.assert_array_equal(
        backend.to_host(kept.response), backend.to_host(enhance_spots(mito, voxel_size=SP))
    )
    assert enhance_spots(mito, voxel_size=list(SP), reuse=kept) is kept.response
    for kw in ({"foci_diameter_um": 0.8}, {"psf_sigma_um": (0.6, 0.2)}, {"dog_ratio": 2.0}):
        assert enhance_spots(mito, voxel_size=SP, reuse=kept, **kw) is not kept.response
    assert enhance_spots(other, voxel_size=SP, reuse=kept) is not kept.response


def test_foci_keep_their_spot_response(backend):
    rng = np.random.default_rng(1)
    img = rng.normal(100, 5, (8, 40, 40)).astype(np.float32)
    img[4, 20, 20] += 400
    mito = backend.asarray(img)
    foci = detect_foci(mito, voxel_size=SP)
    assert foci.spots is not None and foci.spots.image is mito
    np.testing.assert_array_equal(
        backend.to_host(foci.spots.response), backend.to_host(enhance_spots(mito, voxel_size=SP))
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("within_um", [0.3, 0.6, 1.2])
def test_near_features_equal_the_distance_transform(backend, seed, within_um):
    xp = backend.xp
    rng = np.random.default_rng(seed)
    shape = (10, 60, 70)
    feats = np.zeros(shape, bool)
    feats[tuple(rng.integers(0, n, 30) for n in shape)] = True
    fz, fy, fx = np.nonzero(feats)
    near = [np.clip(np.resize(c, 100) + rng.integers(-2, 3, 100), 0, n - 1)
            for c, n in zip((fz, fy, fx), shape, strict=True)]  # fmt: skip
    pts = tuple(np.r_[a, rng.integers(0, n, 100)] for a, n in zip(near, shape, strict=True))
    at = tuple(xp.asarray(p) for p in pts)
    tiles = xp.asarray(pts[2] // 16 + (pts[1] // 16) * 8)
    got = near_features(backend, xp.asarray(feats), at, tiles, SP, within_um)
    want = sndi.distance_transform_edt(~feats, sampling=SP)[pts] <= within_um
    assert want.any() and not want.all()
    np.testing.assert_array_equal(backend.to_host(got), want)


@pytest.mark.parametrize("seed", range(3))
def test_label_sizes_equal_bincount(backend, seed):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 40, (6, 20, 30)).astype(np.int32)
    lab[lab > 30] = 0
    for case in (lab, np.zeros_like(lab), np.full((3, 4), 7, np.int32)):
        got = label_sizes(backend, backend.asarray(case))
        np.testing.assert_array_equal(backend.to_host(got), np.bincount(case.ravel()))


def _foci_field(seed: int, shape=(14, 60, 70)):
    """Noise, single and touching foci (two peaks in one thresholded piece), foci at the
    volume's edges, an MSC label over part of the field and a donor body."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 4.0, shape)
    spots = np.zeros(shape)
    z0, z1 = 3, 9  # the foci lie in a few planes, as over flat MSCs
    for _ in range(25):
        spots[int(rng.integers(z0, z1)), int(rng.integers(0, shape[1])),
              int(rng.integers(0, shape[2]))] = rng.uniform(300, 900)  # fmt: skip
    for z, y, x in ((5, 20, 20), (5, 20, 23), (6, 40, 50), (6, 42, 51)):  # touching pairs
        spots[z, y, x] = 800.0
    spots[z0, 0, 10] = spots[z1 - 1, 30, shape[2] - 1] = spots[z0, shape[1] - 1, 0] = 900.0
    spots[5, 4, 30] = 2000.0  # just outside the search region: brighter than its edge
    img += sndi.gaussian_filter(spots, (0.8, 1.2, 1.2)) * 20
    msc = np.zeros(shape, np.int32)
    msc[1:10, 2:45, :] = 1
    msc[1:10, 45:, 5:] = 2
    jur = np.zeros(shape, np.int32)
    jur[2:12, 50:58, 20:28] = 1
    return img.astype(np.float32), msc, jur


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "kw", [{}, {"extent_fraction": 0.0}, {"require_parent": False, "edge_margin_um": 0.0}]
)
def test_foci_on_their_box_equal_the_whole_field(backend, monkeypatch, seed, kw):
    import hcsmito.stages.foci as foci_mod

    img, msc, jur = _foci_field(seed)
    args = dict(voxel_size=SP, msc_labels=backend.asarray(msc), jurkat_labels=backend.asarray(jur))
    got = foci_mod.detect_foci(backend.asarray(img), **args, **kw)
    whole = lambda b, mask, margin=None: tuple(slice(0, n) for n in mask.shape)  # noqa: E731
    monkeypatch.setattr(foci_mod, "bbox", whole)
    want = foci_mod.detect_foci(backend.asarray(img), **args, **kw)
    assert want.n >= 10
    assert got.labels.dtype == want.labels.dtype
    np.testing.assert_array_equal(backend.to_host(got.labels), backend.to_host(want.labels))
    np.testing.assert_array_equal(got.parent, want.parent)
    np.testing.assert_array_equal(got.peak, want.peak)


def _bodies(seed: int, shape=(10, 110, 120)):
    """Blob labels in the lateral plane (some at the field's edges), a mask through z with
    holes in some planes, an image and an MSC-free region."""
    rng = np.random.default_rng(seed)
    lab2d = np.zeros(shape[1:], np.int32)
    for i in range(1, 8):
        y, x = int(rng.integers(0, shape[1])), int(rng.integers(0, shape[2]))
        r = int(rng.integers(3, 9))
        yy, xx = np.ogrid[: shape[1], : shape[2]]
        lab2d[((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (lab2d == 0)] = i
    lab2d[lab2d == 3] = 0  # a missing label
    mask = rng.random(shape) < 0.6
    mask[:, 30:40, 30:40] = True
    mask[3, 33:36, 33:36] = False  # a hole in one plane
    mask[0] = False
    img = rng.normal(100.0, 10.0, shape).astype(np.float32)
    outside = rng.random(shape) < 0.8
    return lab2d, mask, img, outside


@pytest.mark.parametrize("seed", range(4))
def test_donor_light_on_label_boxes_equals_the_whole_field(backend, seed):
    from hcsmito.stages._util import gaussian
    from hcsmito.stages.segmentation.jurkat import _light_at_labels

    xp = backend.xp
    lab2d, _, img, outside = _bodies(seed)
    sig = [0.83, 1.67, 1.67]
    for out in (outside, None):
        o = None if out is None else xp.asarray(out)
        got = backend.to_host(_light_at_labels(backend, xp.asarray(img), xp.asarray(lab2d), sig, o))
        whole = backend.to_host(gaussian(backend, xp.asarray(img), sig))
        if out is not None:
            whole = np.where(out, whole, 0)
        np.testing.assert_array_equal(got[lab2d > 0], whole.max(axis=0)[lab2d > 0])
    got2 = _light_at_labels(backend, xp.asarray(img[4]), xp.asarray(lab2d), sig[1:], None)
    whole2 = backend.to_host(gaussian(backend, xp.asarray(img[4]), sig[1:]))
    np.testing.assert_array_equal(backend.to_host(got2)[lab2d > 0], whole2[lab2d > 0])


@pytest.mark.parametrize("seed", range(4))
def test_donor_planes_filled_and_extended_on_boxes_equal_the_whole_field(backend, seed):
    from hcsmito.stages._util import relabel_sequential
    from hcsmito.stages.segmentation.jurkat import _extend_labels, _fill_holes_lateral

    xp = backend.xp
    lab2d, mask, _, _ = _bodies(seed)
    sparse = np.zeros_like(mask)
    sparse[2:7, 20:50, 15:60] = mask[2:7, 20:50, 15:60]  # a box inside the field
    for m in (mask, sparse, np.zeros_like(mask)):
        got = backend.to_host(_fill_holes_lateral(backend, xp.asarray(m)))
        want = np.stack([sndi.binary_fill_holes(p) for p in m])
        np.testing.assert_array_equal(got, want)
        labels, proj = _extend_labels(backend, xp.asarray(lab2d), xp.asarray(m))
        ref = relabel_sequential(backend, xp.asarray(np.where(m, lab2d[None], 0)))
        np.testing.assert_array_equal(backend.to_host(labels), backend.to_host(ref))
        assert labels.dtype == ref.dtype
        np.testing.assert_array_equal(backend.to_host(proj), backend.to_host(ref).max(axis=0))


@pytest.mark.parametrize("radius", [1.0, 2.5, 3.0, 5.5, 8.33])
@pytest.mark.parametrize("seed", range(3))
def test_disc_opening_by_distance_transforms_equals_the_filter(backend, radius, seed):
    from hcsmito.stages._util import ellipsoid_footprint
    from hcsmito.stages.segmentation.jurkat import _opening

    rng = np.random.default_rng(seed)
    blobs = sndi.gaussian_filter(rng.random((150, 170)), 3)
    mask = blobs > np.quantile(blobs, 0.5)
    mask |= sndi.binary_dilation(rng.random(mask.shape) < 0.01, iterations=int(radius) + 1)
    mask[:, :3] = True  # against the image's edge
    fp = ellipsoid_footprint([radius, radius])
    got = _opening(backend, backend.asarray(mask), fp)
    np.testing.assert_array_equal(backend.to_host(got), sndi.binary_opening(mask, structure=fp))
    # a footprint that is no disc takes the filter
    oval = ellipsoid_footprint([radius, 1.5 * radius])
    got = _opening(backend, backend.asarray(mask), oval)
    np.testing.assert_array_equal(backend.to_host(got), sndi.binary_opening(mask, structure=oval))
