"""Richardson-Lucy against scikit-image, the adjoint identity, tiling, real beads and grid."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from hcsmito.stages.deconvolution import (
    RLDeconvolver,
    richardson_lucy,
    richardson_lucy_tiled,
    tiled_halo,
)
from hcsmito.stages.psf import psf_from_beads, psf_gaussian


def _asymmetric_psf(shape, seed=0):
    """A PSF with no mirror symmetry on any axis (a flip on too few axes would show)."""
    rng = np.random.default_rng(seed)
    psf = rng.random(shape) ** 3
    psf[tuple(s // 2 for s in shape)] += 2.0
    psf[(0,) * len(shape)] += 1.0  # a heavy corner: strongly asymmetric on every axis
    return psf / psf.sum()


def _blurred_points(shape, psf, seed=0, background=5.0):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape)
    n = max(int(np.prod(shape) // 400), 4)
    truth[tuple(rng.integers(0, s, n) for s in shape)] = rng.uniform(20, 80, n)
    return ndimage.convolve(truth, psf, mode="wrap") + background + rng.random(shape), truth


def _interior(iterations, psf_shape, shape):
    """Voxels farther from the border than the domain of dependence of the border handling:
    each iteration convolves twice with a PSF of half-width h, so after k iterations a
    voxel at distance >= 2 k h from the border never saw how the border was padded."""
    margin = [2 * iterations * (s // 2) for s in psf_shape]
    assert all(2 * m < n for m, n in zip(margin, shape, strict=True))
    return tuple(slice(m, n - m) for m, n in zip(margin, shape, strict=True))


@pytest.mark.parametrize(
    ("shape", "psf_shape", "iterations"),
    [((32, 64, 64), (5, 7, 7), 3), ((112, 120), (9, 7), 6)],
    ids=["3d", "2d"],
)
def test_equals_skimage_richardson_lucy_in_the_interior(shape, psf_shape, iterations):
    """Same iteration as scikit-image. Differences by design: scikit-image pads with zeros
    ('same' convolution) and starts from 0.5, we reflect-pad and start from the mean; both
    only matter within 2·k·h of the border (see _interior), since after one iteration a
    constant start cancels out. skimage runs in float64 here, ours in float32; the
    background keeps A u far above both epsilons, so the ratio is the same division."""
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    psf = _asymmetric_psf(psf_shape)
    image, _ = _blurred_points(shape, psf)
    ref = sk_richardson_lucy(image, psf, num_iter=iterations, clip=False)
    ours = richardson_lucy(image, psf, iterations=iterations)
    assert ours.dtype == np.float32 and ours.shape == shape
    inner = _interior(iterations, psf_shape, shape)
    assert_allclose(ours[inner], ref[inner], rtol=1e-4)
    # and the border regions do differ (the comparison above is not vacuous about padding)
    assert np.abs(ours - ref).max() > 1e-3 * ref.max()


@pytest.mark.parametrize("psf_shape", [(5, 7, 9), (7, 5)], ids=["3d", "2d"])
def test_forward_and_adjoint_are_convolution_and_correlation(psf_shape):
    """A is the convolution with the PSF, Aᵀ the correlation (PSF flipped on ALL axes),
    checked against scipy.ndimage on the periodic grid, and <Ax, y> == <x, Aᵀy>."""
    rng = np.random.default_rng(1)
    psf = _asymmetric_psf(psf_shape, seed=2)
    shape = (12, 20, 18)[-len(psf_shape) :]
    rl = RLDeconvolver(psf, shape, pad=0)
    assert rl.grid_shape == shape
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    ax, aty = rl.blur(x), rl.blur_adjoint(y)
    assert ax.dtype == np.float32
    assert_allclose(ax, ndimage.convolve(x.astype(float), psf, mode="wrap"), rtol=1e-5, atol=1e-6)
    assert_allclose(aty, ndimage.correlate(y.astype(float), psf, mode="wrap"), rtol=1e-5, atol=1e-6)
    lhs = np.vdot(ax.astype(float), y.astype(float))
    rhs = np.vdot(x.astype(float), aty.astype(float))
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-4)
    # a flip on two axes only (cuCIM's) is not the adjoint of an asymmetric 3-D PSF
    if len(psf_shape) == 3:
        two_axes = ndimage.convolve(y.astype(float), np.flip(psf, axis=(1, 2)), mode="wrap")
        assert np.abs(two_axes - aty).max() > 0.05 * np.abs(aty).max()


def _symmetric_psf(shape, seed=0):
    """A random PSF equal to its mirror image on every axis (what the DCT path needs)."""
    psf = _asymmetric_psf(shape, seed)
    for axis in range(psf.ndim):
        psf = psf + np.flip(psf, axis=axis)
    return psf / psf.sum()


@pytest.mark.parametrize(
    ("shape", "psf_shape"),
    [((12, 20, 18), (5, 7, 9)), ((4, 20, 18), (9, 7, 5)), ((30, 24), (7, 5))],
    ids=["3d", "3d-psf-deeper-than-image", "2d"],
)
def test_dct_blur_is_the_mirror_border_convolution(shape, psf_shape):
    """With a mirror-symmetric PSF the DCT transform computes the convolution of the image
    mirrored at its borders: scipy.ndimage's mode 'reflect' (d c b a | a b c d), repeated
    when the PSF is larger than an axis; A is its own adjoint."""
    rng = np.random.default_rng(3)
    psf = _symmetric_psf(psf_shape, seed=4)
    rl = RLDeconvolver(psf, shape)
    assert rl.transform == "dct" and rl.grid_shape == shape  # no margin on fast lengths
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    ax = rl.blur(x)
    assert ax.dtype == np.float32
    ref = ndimage.convolve(x.astype(float), psf, mode="reflect")
    assert_allclose(ax, ref, rtol=1e-5, atol=1e-6)
    assert_allclose(
        rl.blur_adjoint(y),
        ndimage.correlate(y.astype(float), psf, mode="reflect"),
        rtol=1e-5,
        atol=1e-6,
    )
    lhs = np.vdot(ax.astype(float), y.astype(float))
    assert lhs == pytest.approx(np.vdot(x.astype(float), rl.blur(y).astype(float)), rel=1e-5)


def test_dct_rl_equals_periodic_rl_of_the_mirrored_image():
    """Mirror borders, checked through the whole iteration: RL with the DCT on an image
    equals RL with periodic FFTs (no margin) on the image mirrored on every axis (twice
    the size, which is exactly the periodic extension the DCT assumes), cropped back. (Not
    with tv: forward differences are not mirror-symmetric, so the TV term of the mirrored
    copy is shifted by one voxel; RL-TV on the DCT path is covered by the tiling test.)"""
    psf = _symmetric_psf((5, 7, 7), seed=5)
    image, _ = _blurred_points((10, 24, 30), psf, seed=6)
    mirrored = image
    for axis in range(3):
        mirrored = np.concatenate([mirrored, np.flip(mirrored, axis=axis)], axis=axis)
    for options in ({}, {"acceleration": "biggs"}):
        ours = richardson_lucy(image, psf, iterations=6, **options)
        periodic = richardson_lucy(mirrored, psf, iterations=6, pad=0, transform="fft", **options)
        assert_allclose(ours, periodic[:10, :24, :30], rtol=2e-5, atol=2e-5 * ours.max())


@pytest.mark.parametrize("shape", [(13, 37, 41), (36, 41)], ids=["3d", "2d"])
def test_dct_and_fft_agree_in_the_interior_and_with_skimage(shape):
    """The two transforms differ only in the border model; lengths that are not fast
    (13, 37, 41: primes) are mirrored up to a fast length."""
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    psf_shape = (3, 5, 5)[-len(shape) :]
    psf = _symmetric_psf(psf_shape, seed=7)
    image, _ = _blurred_points(shape, psf, seed=8)
    iterations = 3
    dct = RLDeconvolver(psf, shape)
    assert dct.transform == "dct" and dct.grid_shape != shape
    ours = dct(image, iterations=iterations)
    fft = richardson_lucy(image, psf, iterations=iterations, transform="fft")
    ref = sk_richardson_lucy(image, psf, num_iter=iterations, clip=False)
    inner = _interior(iterations, psf_shape, shape)
    assert_allclose(ours[inner], fft[inner], rtol=1e-5)
    assert_allclose(ours[inner], ref[inner], rtol=1e-4)
    assert np.abs(ours - fft).max() > 1e-4 * fft.max()  # the borders do differ


def test_transform_choice():
    sym, asym = _symmetric_psf((3, 5, 5)), _asymmetric_psf((3, 5, 5))
    assert RLDeconvolver(sym, (8, 16, 16)).transform == "dct"
    assert RLDeconvolver(asym, (8, 16, 16)).transform == "fft"
    assert RLDeconvolver(sym, (8, 16, 16), transform="fft").transform == "fft"
    assert RLDeconvolver(sym, (8, 16, 16), pad=2).transform == "fft"  # explicit margin
    assert RLDeconvolver(sym, (8, 16, 16), pad_mode="edge").transform == "fft"
    even = np.ones((2, 4, 4)) / 32  # even sizes have no centre voxel to mirror about
    assert RLDeconvolver(even, (8, 16, 16)).transform == "fft"
    with pytest.raises(ValueError, match="mirror-symmetric"):
        RLDeconvolver(asym, (8, 16, 16), transform="dct")
    with pytest.raises(ValueError, match="transform="):
        RLDeconvolver(sym, (8, 16, 16), transform="wavelet")


def test_deconvolver_is_reusable_across_channels():
    psf = psf_gaussian(
        (7, 9, 9), voxel_size=(0.3, 0.1, 0.1), na=1.2, wavelength_um=0.5, refractive_index=1.33
    )
    a, _ = _blurred_points((16, 40, 40), psf, seed=3)
    b, _ = _blurred_points((16, 40, 40), psf, seed=4)
    rl = RLDeconvolver(psf, a.shape)
    assert_array_equal(rl(a, iterations=4), richardson_lucy(a, psf, iterations=4))
    assert_array_equal(rl(b, iterations=4), richardson_lucy(b, psf, iterations=4))
    with pytest.raises(ValueError, match="one RLDeconvolver per image shape"):
        rl(a[:8], iterations=2)


def test_constant_image_stays_constant():
    psf = _asymmetric_psf((5, 7, 7))
    out = richardson_lucy(np.full((10, 30, 30), 1000, np.uint16), psf, iterations=5)
    assert_allclose(out, 1000, rtol=1e-5)


def _i_divergence(image, estimate, psf):
    blurred = np.clip(ndimage.convolve(estimate.astype(float), psf, mode="reflect"), 1e-12, None)
    return float(np.sum(image * np.log(image / blurred) - image + blurred))


def test_biggs_acceleration_converges_faster():
    """RL maximises the Poisson likelihood (minimises the I-divergence to the data); with
    Biggs-Andrews extrapolation the same number of iterations gets further."""
    psf = psf_gaussian(
        (9, 11, 11), voxel_size=(0.3, 0.1, 0.1), na=1.0, wavelength_um=0.5, refractive_index=1.33
    )
    image, _ = _blurred_points((24, 48, 48), psf, seed=5)
    plain = richardson_lucy(image, psf, iterations=8)
    fast = richardson_lucy(image, psf, iterations=8, acceleration="biggs")
    longer = richardson_lucy(image, psf, iterations=16)
    d_plain, d_fast = _i_divergence(image, plain, psf), _i_divergence(image, fast, psf)
    assert d_fast < d_plain
    assert d_fast < _i_divergence(image, longer, psf) * 1.05  # ~ as far as twice the steps
    assert np.abs(fast - longer).mean() < np.abs(plain - longer).mean()


def _total_variation(a):
    return float(sum(np.abs(np.diff(a, axis=k)).sum() for k in range(a.ndim)))


def test_total_variation_damps_noise():
    rng = np.random.default_rng(6)
    truth = np.full((64, 64), 20.0)
    truth[16:48, 16:48] = 100.0  # piecewise constant: what TV favours
    psf = psf_gaussian(
        (9, 9), voxel_size=(0.1, 0.1), na=0.8, wavelength_um=0.5, refractive_index=1.0
    )
    image = rng.poisson(ndimage.convolve(truth, psf, mode="reflect")).astype(np.float32)
    plain = richardson_lucy(image, psf, iterations=30)
    regular = richardson_lucy(image, psf, iterations=30, tv=0.01)
    assert _total_variation(regular) < 0.8 * _total_variation(plain)
    inner = (slice(4, -4),) * 2
    assert np.abs(regular - truth)[inner].mean() < np.abs(plain - truth)[inner].mean()
    assert_array_equal(
        richardson_lucy(image, psf, iterations=3, tv=0.0), richardson_lucy(image, psf, iterations=3)
    )


@pytest.mark.parametrize("symmetric", [False, True], ids=["fft", "dct"])
@pytest.mark.parametrize("tv", [0.0, 0.005])
def test_tiled_equals_whole(tv, symmetric):
    psf = (_symmetric_psf if symmetric else _asymmetric_psf)((5, 7, 7), seed=7)
    image, _ = _blurred_points((12, 70, 82), psf, seed=8)
    iterations = 3
    whole = richardson_lucy(image, psf, iterations=iterations, tv=tv)
    tiled = richardson_lucy_tiled(image, psf, iterations=iterations, tile_shape=(24, 32), tv=tv)
    assert tiled.dtype == np.float32 and tiled.shape == image.shape
    hy, hx = tiled_halo(psf.shape, iterations)
    assert (hy, hx) == (18, 18)
    inner = (slice(None), slice(hy, -hy), slice(hx, -hx))
    tol = 1e-5  # float32 round-off of different FFT sizes (measured ~1e-6)
    assert np.abs(tiled - whole)[inner].max() <= tol * whole.max()
    # a memory budget that forces tiles gives the same result
    budget = richardson_lucy_tiled(
        image, psf, iterations=iterations, max_voxels=20 * 70 * 70, tv=tv
    )
    assert np.abs(budget - whole)[inner].max() <= tol * whole.max()
    # a budget the whole image fits in is the untiled call
    assert_array_equal(
        richardson_lucy_tiled(image, psf, iterations=iterations, max_voxels=10**8, tv=tv), whole
    )


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(9, 24, 24), (24, 24)], ids=["3d", "2d"])
def test_degenerate_inputs_give_finite_results(dtype, shape):
    psf = _asymmetric_psf((5, 7, 7)[-len(shape) :])
    top = np.iinfo(np.uint16).max if dtype == np.uint16 else 1e30
    single = np.zeros(shape, dtype)
    single[tuple(s // 2 for s in shape)] = 1000
    cases = {
        "zero": np.zeros(shape, dtype),
        "saturated": np.full(shape, top, dtype),
        "single pixel": single,
        "tiny": np.ones((3,) * len(shape), dtype),  # smaller than the PSF
    }
    for name, image in cases.items():
        for options in ({}, {"acceleration": "biggs", "tv": 0.01}):
            out = richardson_lucy(image, psf, iterations=4, **options)
            assert out.shape == image.shape and out.dtype == np.float32, name
            assert np.isfinite(out).all() and out.min() >= 0, name
    assert not richardson_lucy(cases["zero"], psf, iterations=3).any()
    assert_allclose(richardson_lucy(cases["saturated"], psf, iterations=3), float(top), rtol=1e-5)
    out = richardson_lucy(single, psf, iterations=10)
    assert out.sum() == pytest.approx(1000, rel=1e-3)  # flux kept


def test_inputs_are_checked():
    psf = _asymmetric_psf((3, 5, 5))
    image = np.ones((8, 16, 16), np.float32)
    with pytest.raises(ValueError, match="both must be"):
        richardson_lucy(image[0], psf, iterations=2)
    with pytest.raises(ValueError, match="NaN"):
        richardson_lucy(np.where(image > 0, np.nan, 0), psf, iterations=2)
    with pytest.raises(ValueError, match="positive integer"):
        richardson_lucy(image, psf, iterations=0)
    with pytest.raises(ValueError, match="tv="):
        richardson_lucy(image, psf, iterations=2, tv=0.5)
    with pytest.raises(ValueError, match="non-negative"):
        richardson_lucy(image, -psf, iterations=2)
    with pytest.raises(ValueError, match="acceleration"):
        richardson_lucy(image, psf, iterations=2, acceleration="fast")
    with pytest.raises(ValueError, match="tile_shape"):
        richardson_lucy_tiled(image, psf, iterations=2)


def _line_fwhm(profile, centre, half_window=25):
    """FWHM (samples) of the peak near ``centre`` above the local minimum of the profile."""
    seg = profile[centre - half_window : centre + half_window + 1].astype(np.float64)
    base, peak = seg.min(), int(np.argmax(seg))
    half = base + (seg[peak] - base) / 2
    r = peak + np.nonzero(seg[peak:] < half)[0][0]
    l = peak - np.nonzero(seg[: peak + 1][::-1] < half)[0][0]
    right = r - 1 + (seg[r - 1] - half) / (seg[r - 1] - seg[r])
    left = l + 1 - (seg[l + 1] - half) / (seg[l + 1] - seg[l])
    return right - left


def test_grid_sharpens_with_the_bead_psf(shared_data):
    """The vertical grid, imaged on the bead microscope, deconvolved with the bead PSF:
    the grid lines become narrower in x and the sample thinner in z. Profiles are means
    over y (the lines are vertical: their peak column varies by <= 1 px over y) and over
    the in-focus slices, which averages the (max 8 counts) shot noise away. Lines at x≈43
    and x≈112 are isolated; the ones near 71-83 overlap and are left out. The xy voxel is
    0.0220 µm here and 0.0225 µm for the beads (TIFF resolution): 2 % apart, ignored."""
    tifffile = pytest.importorskip("tifffile")
    beads = tifffile.imread(shared_data / "beads" / "Bead_Image1_crop.tif")
    grid = tifffile.imread(shared_data / "beads" / "DeconvolutionSampleVerticalGrid1AU-crop.tif")
    psf = psf_from_beads(beads, voxel_size=(0.125, 0.0225, 0.0225))
    restored = richardson_lucy(grid, psf, iterations=20)

    def widths(volume):
        x_profile = volume[5:16].mean(axis=(0, 1))
        z_profile = volume.mean(axis=(1, 2))
        return [_line_fwhm(x_profile, c) for c in (43, 112)] + [_line_fwhm(z_profile, 10, 10)]

    before, after = widths(grid.astype(np.float32)), widths(restored)
    # measured: x 12.3 -> 8.4 px (0.27 -> 0.19 µm) for both lines, z 9.3 -> 7.4 slices
    assert 10 < before[0] < 15 and 10 < before[1] < 15
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1]
    assert after[2] < 0.9 * before[2]


@pytest.mark.gpu
def test_gpu_matches_cpu(gpu):
    psf = _asymmetric_psf((5, 7, 7), seed=9)
    image, _ = _blurred_points((12, 48, 56), psf, seed=10)
    image16 = image.astype(np.uint16)
    for options in ({}, {"acceleration": "biggs"}, {"tv": 0.005}):
        cpu = richardson_lucy(image16, psf, iterations=5, **options)
        dev = richardson_lucy(gpu.asarray(image16), gpu.asarray(psf), iterations=5, **options)
        assert type(dev).__module__.startswith("cupy") and dev.dtype == np.float32
        assert np.abs(gpu.to_host(dev) - cpu).max() <= 1e-4 * cpu.max(), options
    cpu = richardson_lucy_tiled(image, psf, iterations=3, tile_shape=(20, 24))
    dev = richardson_lucy_tiled(gpu.asarray(image), psf, iterations=3, tile_shape=(20, 24))
    assert np.abs(gpu.to_host(dev) - cpu).max() <= 1e-4 * cpu.max()
    flat = image[6].astype(np.float32)
    psf2 = _asymmetric_psf((7, 7), seed=11)
    cpu = richardson_lucy(flat, psf2, iterations=5)
    dev = richardson_lucy(flat, psf2, iterations=5, backend="gpu")
    assert np.abs(gpu.to_host(dev) - cpu).max() <= 1e-4 * cpu.max()
    sym = _symmetric_psf((5, 7, 7), seed=12)  # the DCT transform (cupyx.scipy.fft.dctn)
    for options in ({}, {"tv": 0.005}):
        cpu = richardson_lucy(image16, sym, iterations=5, **options)
        dev = richardson_lucy(gpu.asarray(image16), gpu.asarray(sym), iterations=5, **options)
        assert dev.dtype == np.float32, options
        assert np.abs(gpu.to_host(dev) - cpu).max() <= 1e-4 * cpu.max(), options
    rl = RLDeconvolver(gpu.asarray(psf), image.shape, pad=0)
    y = gpu.asarray(image.astype(np.float32))
    assert float((rl.blur(y) * y).sum()) == pytest.approx(
        float((y * rl.blur_adjoint(y)).sum()), rel=1e-5
    )
