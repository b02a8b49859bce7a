"""The stages' Gaussian (stages._util.gaussian) against scipy.ndimage, pass by pass.

On the CPU the passes along an outer axis of a large volume are computed over blocks of
whole lines (``_outer_axis_pass``) instead of scipy's line-by-line loop; the numbers must
be scipy's, bit for bit, or every table downstream would drift.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from hcsmito.backend import get_backend
from hcsmito.stages import _util
from hcsmito.stages._util import gaussian, gaussian_weights


def _scipy(img: np.ndarray, sigma, truncate: float = 3.0, dtype=np.float32) -> np.ndarray:
    out = img.astype(dtype)
    for ax, s in enumerate(sigma):
        if s > 0:
            out = ndi.gaussian_filter1d(out, s, axis=ax, mode="nearest", truncate=truncate)
    return out


@pytest.mark.parametrize("sigma", [0.5, 1.44, 2.3, 4.0])
def test_weights_are_scipys_kernel(sigma):
    """The half kernel filters an impulse into scipy's response, exactly."""
    w = gaussian_weights(sigma)
    r = w.size - 1
    imp = np.zeros(4 * r + 3)
    imp[2 * r + 1] = 1.0
    resp = ndi.gaussian_filter1d(imp, sigma, mode="nearest", truncate=3.0)
    np.testing.assert_array_equal(resp[r + 1 : 3 * r + 2], np.r_[w[::-1], w[1:]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("shape", "axis", "sigma"),
    [
        ((40, 96, 80), 0, 1.44),  # z: few long lines' worth of planes
        ((40, 96, 80), 1, 2.3),  # y within each plane
        ((3, 70, 50), 0, 4.0),  # a kernel wider than the line (edges repeated)
        ((130, 300), 0, 1.7),  # 2-D
        ((2, 5, 70000), 1, 0.9),  # more columns than one block
    ],
)
def test_outer_axis_pass_is_scipys_bit_for_bit(shape, axis, sigma, dtype):
    """float64 exposes the order of the sums (a different order differs in the last
    bits in most voxels); float32 is what the stages use."""
    rng = np.random.default_rng(3)
    img = (rng.random(shape) * 1000).astype(dtype)
    ref = ndi.gaussian_filter1d(img, sigma, axis=axis, mode="nearest", truncate=3.0)
    out = img.copy()
    _util._outer_axis_pass(out, axis, sigma, 3.0)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    "sigma", [(1.44, 1.58, 1.58), (0.0, 1.33, 1.33), (0.9, 0.0, 2.1), (2.0, 6.5, 6.5), (0, 0, 0)]
)
def test_gaussian_is_scipys_and_leaves_its_input(sigma, monkeypatch):
    """Large enough for the block passes (and, with the size floor lifted, small volumes
    too; a kernel too wide for them goes to scipy): scipy's separable Gaussian in
    float32, from uint16 and from float32 input, which is left as it was."""
    b = get_backend("cpu")
    img = np.random.default_rng(0).integers(90, 4000, (12, 150, 140)).astype(np.uint16)
    assert img.size >= _util._OUTER_PASS_MIN
    ref = _scipy(img, sigma)
    np.testing.assert_array_equal(gaussian(b, img, sigma), ref)
    f = img.astype(np.float32)
    out = gaussian(b, f, sigma)
    np.testing.assert_array_equal(out, ref)
    assert out.dtype == np.float32 and out is not f
    np.testing.assert_array_equal(f, img.astype(np.float32))
    small = img[:5, :20, :17]
    monkeypatch.setattr(_util, "_OUTER_PASS_MIN", 1)
    np.testing.assert_array_equal(gaussian(b, small, sigma), _scipy(small, sigma))


def test_gaussian_of_a_view_and_truncate():
    """A strided view (a box of a field) and another truncate: still scipy's numbers."""
    b = get_backend("cpu")
    img = np.random.default_rng(1).random((30, 200, 160)).astype(np.float32)
    view = img[2:28, 10:190:2, 5:150]
    np.testing.assert_array_equal(
        gaussian(b, view, (1.2, 2.0, 1.0), truncate=4.0), _scipy(view, (1.2, 2.0, 1.0), 4.0)
    )


@pytest.mark.gpu
def test_gpu_matches_cpu(gpu):
    """cupyx's passes against the CPU's: float32 rounding apart."""
    img = np.random.default_rng(2).integers(90, 4000, (20, 128, 128)).astype(np.uint16)
    sigma = (1.44, 1.58, 1.58)
    dev = gpu.to_host(gaussian(gpu, gpu.asarray(img), sigma))
    np.testing.assert_allclose(dev, gaussian(get_backend("cpu"), img, sigma), rtol=1e-5, atol=1e-3)
