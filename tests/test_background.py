"""Background estimation against scikit-image's opening and a known generated background."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.morphology import white_tophat

from hcsmito.stages._util import ellipsoid_footprint
from hcsmito.stages.background import estimate_background, subtract_background


def _spots_on_ramp(shape, spacing, seed=0):
    """Small bright spots (radius ~1 µm) on a smooth background; returns image, background."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    bg = 100.0 + 4.0 * grids[-1] + 2.0 * grids[-2]
    spots = np.zeros(shape)
    for _ in range(12):
        c = [rng.uniform(0, n * s) for n, s in zip(shape, spacing, strict=True)]
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True))
        spots += 200.0 * np.exp(-d2 / (2 * 0.7**2))
    return (bg + spots).astype(np.float32), bg.astype(np.float32), spots.astype(np.float32)


@pytest.mark.parametrize("ndim", [2, 3])
def test_exact_tophat_equals_skimage(backend, ndim):
    rng = np.random.default_rng(ndim)
    shape = (40, 50) if ndim == 2 else (9, 30, 34)
    vs = (0.2, 0.2) if ndim == 2 else (0.6, 0.2, 0.2)
    img = rng.gamma(3.0, 10.0, shape).astype(np.float32)
    got = subtract_background(backend.asarray(img), voxel_size=vs, radius_um=1.0, downsample=1)
    fp = ellipsoid_footprint([1.0 / s for s in vs])
    ref = white_tophat(img, fp)
    np.testing.assert_allclose(backend.to_host(got), ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("method", ["tophat", "gaussian"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_recovers_known_background(backend, method, ndim):
    shape = (96, 96) if ndim == 2 else (12, 64, 64)
    vs = (0.2, 0.2) if ndim == 2 else (0.5, 0.25, 0.25)
    img, bg, spots = _spots_on_ramp(shape, vs)
    est = backend.to_host(
        estimate_background(
            backend.asarray(img), voxel_size=vs, method=method, radius_um=4.0, sigma_um=3.0
        )
    )
    assert est.dtype == np.float32 and est.shape == img.shape
    assert np.all(est <= img + 1e-3)
    far = spots < 1.0  # away from the spots (and the border) the background is recovered
    margin = tuple(
        slice(int(4.0 / s), n - int(4.0 / s)) if n > 20 else slice(None)
        for n, s in zip(shape, vs, strict=True)
    )
    inner = np.zeros_like(far)
    inner[margin] = True
    far &= inner  # an opening cuts the top edge of a ramp by radius x slope
    err = np.abs(est - bg)[far]
    tol = 6.0 if method == "tophat" else 25.0  # the ramp spans ~100 units
    assert np.median(err) < tol / 2 and np.percentile(err, 95) < tol
    # the spots survive the subtraction
    sub = backend.to_host(subtract_background(backend.asarray(img), voxel_size=vs, method=method))
    assert sub[spots > 150].mean() > 0.6 * spots[spots > 150].mean()


def test_auto_downsample_close_to_exact():
    vs = (0.1, 0.1)
    img, bg, spots = _spots_on_ramp((200, 240), vs, seed=3)
    exact = estimate_background(img, voxel_size=vs, radius_um=3.0, downsample=1)
    fast = estimate_background(img, voxel_size=vs, radius_um=3.0)
    assert np.all(fast <= img + 1e-3)
    assert np.percentile(np.abs(fast - exact), 95) < 5.0  # ramp: 4 units/µm


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 1), (5, 7), (3, 4, 6)])
def test_degenerate(dtype, shape):
    for fill in (0, 65535 if dtype == np.uint16 else 1e6):
        img = np.full(shape, fill, dtype)
        for method in ("tophat", "gaussian", "none"):
            out = subtract_background(img, voxel_size=0.1, method=method)
            assert out.shape == shape and out.dtype == np.float32
            if method != "none":
                assert np.all(out == 0)


def test_bad_options():
    with pytest.raises(ValueError, match="radius_um"):
        estimate_background(np.zeros((4, 4)), voxel_size=0.1, radius_um=0)
    with pytest.raises(ValueError, match="unknown background method"):
        estimate_background(np.zeros((4, 4)), voxel_size=0.1, method="median")
    with pytest.raises(ValueError, match="one channel"):
        estimate_background(np.zeros((2, 3, 4, 4)), voxel_size=0.1)
    with pytest.raises(ValueError, match="lacks axis"):
        estimate_background(np.zeros((3, 4, 4)), voxel_size={"y": 0.1, "x": 0.1})


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["tophat", "gaussian"])
def test_gpu_matches_cpu(gpu, method):
    vs = (0.5, 0.25, 0.25)
    img, _, _ = _spots_on_ramp((10, 48, 56), vs, seed=4)
    cpu = estimate_background(img, voxel_size=vs, method=method, radius_um=3.0)
    dev = gpu.to_host(
        estimate_background(gpu.asarray(img), voxel_size=vs, method=method, radius_um=3.0)
    )
    np.testing.assert_allclose(dev, cpu, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("shape", [(200, 200), (16, 96, 96)], ids=["2d", "3d"])
def test_noise_sigma_robust(backend, shape):
    from hcsmito.stages.background import noise_sigma

    rng = np.random.default_rng(7)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    img = 100 + 0.5 * grids[-1] + 0.2 * grids[-2] + rng.normal(0, 3.0, shape)
    spots = tuple(rng.integers(0, n, 100) for n in shape)
    img[spots] += 500.0  # bright outliers do not inflate the estimate much
    assert noise_sigma(backend.asarray(img.astype(np.float32))) == pytest.approx(3.0, rel=0.1)
    poisson = rng.poisson(20.0, shape).astype(np.uint16)
    assert noise_sigma(backend.asarray(poisson)) == pytest.approx(np.sqrt(20.0), rel=0.1)
    assert noise_sigma(np.zeros(shape, np.uint16)) == 0.0
