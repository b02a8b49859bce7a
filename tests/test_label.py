"""label() against skimage.measure.label, up to renumbering, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.measure as skm
from scipy import ndimage as ndi

from hcsmito.measure import label


def random_mask(shape, seed, sigma=1.2, fraction=0.3):
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random(shape), sigma)
    return smooth > np.quantile(smooth, 1 - fraction)


def assert_same_partition(a, b):
    """Equal up to renumbering: same background, and a one-to-one map between labels."""
    np.testing.assert_array_equal(a == 0, b == 0)
    fg = a != 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize(
    ("shape", "connectivity"),
    [((80, 90), 1), ((80, 90), 2), ((12, 40, 50), 1), ((12, 40, 50), 2), ((12, 40, 50), 3)],
)
def test_label_matches_skimage(backend, shape, connectivity):
    mask = random_mask(shape, seed=connectivity + len(shape))
    got = backend.to_host(label(backend.asarray(mask), connectivity=connectivity))
    want = skm.label(mask, connectivity=connectivity)
    assert got.dtype == np.int32
    assert got.max() == want.max() > 10
    assert_same_partition(got, want)


def test_cpu_labels_are_numbered_as_scipy_numbers_them():
    # the stages label with ndi.label: the same numbers, not only the same partition
    for shape, conn in (((60, 70), 1), ((60, 70), 2), ((8, 30, 40), 2), ((8, 30, 40), 3)):
        mask = random_mask(shape, seed=conn)
        want, _ = ndi.label(mask, structure=ndi.generate_binary_structure(len(shape), conn))
        np.testing.assert_array_equal(label(mask, connectivity=conn), want)


def test_label_default_is_full_connectivity_and_non_bool_masks():
    mask = np.zeros((5, 5), np.uint8)
    mask[1, 1] = mask[2, 2] = 7  # diagonal neighbours: one object at full connectivity
    assert label(mask).max() == 1
    assert label(mask, connectivity=1).max() == 2
    assert label(np.zeros((3, 4), bool)).max() == 0


def test_label_rejects_bad_connectivity():
    with pytest.raises(ValueError, match="connectivity must be between 1 and mask.ndim=2"):
        label(np.ones((3, 3), bool), connectivity=3)
