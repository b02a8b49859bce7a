"""PSF models against closed forms, and the empirical PSF against real and generated beads."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage, special

from hcsmito.stages.psf import (
    find_beads,
    gaussian_sigmas,
    psf_born_wolf,
    psf_from_beads,
    psf_fwhm,
    psf_gaussian,
)

OPTICS = dict(na=1.4, wavelength_um=0.5, refractive_index=1.518)
FINE = (0.05, 0.01, 0.01)  # fine sampling: FWHMs measurable to ~1%
BEAD_VOXEL = (0.125, 0.0225, 0.0225)  # Bead_Image1_crop.tif: ImageJ spacing, 44.46 px/µm


def _centre(shape):
    return tuple(s // 2 for s in shape)


@pytest.mark.parametrize("model", [psf_gaussian, psf_born_wolf])
@pytest.mark.parametrize("shape", [(21, 41, 41), (41, 41)])
def test_psf_is_normalised_centred_float32(model, shape):
    voxel = FINE[-len(shape) :]
    psf = model(shape, voxel_size=voxel, **OPTICS)
    assert psf.dtype == np.float32 and psf.shape == shape
    assert abs(float(psf.sum(dtype=np.float64)) - 1) < 1e-5
    assert np.unravel_index(np.argmax(psf), shape) == _centre(shape)
    assert psf.min() >= 0
    # symmetric models: mirror images are identical
    assert_allclose(psf, psf[(slice(None, None, -1),) * len(shape)], rtol=1e-5, atol=1e-9)


def test_psf_fwhm_of_a_sampled_gaussian():
    sigma = np.array([0.3, 0.07, 0.05])
    zyx = np.meshgrid(
        *[(np.arange(n) - n // 2) * d for n, d in zip((41, 61, 61), FINE, strict=True)],
        indexing="ij",
    )
    g = np.exp(-0.5 * sum((c / s) ** 2 for c, s in zip(zyx, sigma, strict=True)))
    assert_allclose(psf_fwhm(g, FINE), 2 * np.sqrt(2 * np.log(2)) * sigma, rtol=5e-3)


@pytest.mark.parametrize("confocal", [False, True])
def test_gaussian_widths_follow_zhang_2007(confocal):
    psf = psf_gaussian((61, 81, 81), voxel_size=FINE, confocal=confocal, **OPTICS)
    lam = OPTICS["wavelength_um"] / (np.sqrt(2) if confocal else 1)
    sz = 0.66 * lam * OPTICS["refractive_index"] / OPTICS["na"] ** 2
    sxy = 0.21 * lam / OPTICS["na"]
    assert_allclose(gaussian_sigmas(confocal=confocal, **OPTICS), (sz, sxy), rtol=1e-12)
    assert_allclose(psf_fwhm(psf, FINE), 2.3548 * np.array([sz, sxy, sxy]), rtol=0.01)


def test_born_wolf_widefield_matches_airy_and_axial_sinc():
    """In focus the scalar PSF is the Airy pattern (2 J1(v)/v)², on axis sinc²(u/4)."""
    shape = (61, 81, 81)
    psf = psf_born_wolf(shape, voxel_size=FINE, confocal=False, **OPTICS).astype(np.float64)
    cz, cy, cx = _centre(shape)
    k = 2 * np.pi / OPTICS["wavelength_um"]
    v = k * OPTICS["na"] * (np.arange(shape[2]) - cx) * FINE[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = np.where(v == 0, 1.0, (2 * special.j1(v) / v) ** 2)
    assert_allclose(psf[cz, cy] / psf[cz, cy, cx], airy, atol=2e-4)
    u = k * OPTICS["na"] ** 2 / OPTICS["refractive_index"] * (np.arange(shape[0]) - cz) * FINE[0]
    axial = np.sinc(u / (4 * np.pi)) ** 2  # np.sinc(x) = sin(πx)/(πx)
    assert_allclose(psf[:, cy, cx] / psf[cz, cy, cx], axial, atol=2e-4)


def test_confocal_is_the_squared_widefield_and_gaussian_is_close():
    shape = (61, 81, 81)
    wide = psf_born_wolf(shape, voxel_size=FINE, confocal=False, **OPTICS).astype(np.float64)
    conf = psf_born_wolf(shape, voxel_size=FINE, confocal=True, **OPTICS)
    assert_allclose(conf, wide**2 / (wide**2).sum(), rtol=1e-4, atol=1e-10)
    same = psf_born_wolf(shape, voxel_size=FINE, excitation_um=0.5, **OPTICS)
    assert_allclose(same, conf, rtol=1e-4, atol=1e-10)
    # Zhang et al. fit the Gaussian to the Born & Wolf model: FWHMs agree within 15 %
    gauss = psf_gaussian(shape, voxel_size=FINE, confocal=True, **OPTICS)
    assert_allclose(psf_fwhm(gauss, FINE), psf_fwhm(conf, FINE), rtol=0.15)


def test_2d_psf_is_the_in_focus_plane():
    p3 = psf_born_wolf((21, 41, 41), voxel_size=FINE, **OPTICS)
    p2 = psf_born_wolf((41, 41), voxel_size=FINE[1:], **OPTICS)
    assert_allclose(p2, p3[10] / p3[10].sum(), rtol=1e-4, atol=1e-9)


def test_psf_inputs_are_checked():
    with pytest.raises(ValueError, match="odd"):
        psf_gaussian((20, 41, 41), voxel_size=FINE, **OPTICS)
    with pytest.raises(ValueError, match="micrometres"):
        psf_gaussian((21, 41, 41), voxel_size=FINE, na=1.4, wavelength_um=520, refractive_index=1.5)
    with pytest.raises(ValueError, match="numerical aperture"):
        psf_born_wolf(
            (21, 41, 41), voxel_size=FINE, na=1.6, wavelength_um=0.5, refractive_index=1.5
        )
    with pytest.raises(ValueError, match="voxel_size"):
        psf_gaussian((21, 41, 41), voxel_size=(0.1, 0.1), **OPTICS)


def _synthetic_beads(seed=0):
    """Beads at sub-voxel positions blurred by a known anisotropic Gaussian, Poisson noise."""
    rng = np.random.default_rng(seed)
    shape, sigma = (40, 96, 96), np.array([2.0, 1.6, 1.2])  # voxels
    centres = np.array(
        [[19.3, 24.6, 25.2], [20.7, 70.2, 30.8], [18.6, 30.4, 69.5], [20.1, 71.8, 70.4]]
    )
    grid = np.indices(shape, dtype=np.float64)
    clean = np.full(shape, 5.0)
    for c in centres:
        clean += 400 * np.exp(
            -0.5 * sum(((g - x) / s) ** 2 for g, x, s in zip(grid, c, sigma, strict=True))
        )
    return rng.poisson(clean).astype(np.uint16), centres, sigma


def test_psf_from_generated_beads_recovers_the_known_psf():
    image, centres, sigma = _synthetic_beads()
    voxel = (0.2, 0.1, 0.1)
    found = find_beads(image, voxel_size=voxel, shape=(15, 21, 21))
    order = np.argsort(found[:, 1] * 1000 + found[:, 2])
    truth = centres[np.argsort(centres[:, 1] * 1000 + centres[:, 2])]
    assert_allclose(found[order], truth, atol=0.3)
    psf = psf_from_beads(image, voxel_size=voxel, shape=(15, 21, 21))
    assert psf.dtype == np.float32 and abs(float(psf.sum()) - 1) < 1e-5
    assert_allclose(psf_fwhm(psf, voxel), 2.3548 * sigma * voxel, rtol=0.06)
    com = ndimage.center_of_mass(psf)
    assert_allclose(com, (7, 10, 10), atol=0.15)


def test_psf_from_real_beads(shared_data):
    tifffile = pytest.importorskip("tifffile")
    image = tifffile.imread(shared_data / "beads" / "Bead_Image1_crop.tif")
    assert image.shape == (41, 150, 150)
    # independent count: connected bright blobs of the lightly smoothed image
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    blobs, n_blobs = ndimage.label(smooth > 0.25 * smooth.max())
    blob_centres = np.array(ndimage.center_of_mass(smooth, blobs, range(1, n_blobs + 1)))
    assert n_blobs == 4
    psf = psf_from_beads(image, voxel_size=BEAD_VOXEL)  # default window: 4 µm x 1 µm x 1 µm
    beads = find_beads(image, voxel_size=BEAD_VOXEL, shape=psf.shape)
    assert len(beads) == 4
    for c in blob_centres:  # each blob matched by one bead within ~2 voxels
        assert np.min(np.abs(beads - c).max(axis=1)) < 2.5
    assert psf.shape == (33, 45, 45) and psf.dtype == np.float32
    assert abs(float(psf.sum(dtype=np.float64)) - 1) < 1e-5 and psf.min() >= 0
    # centred: the centroid of the PSF core (voxels above half maximum) is the centre voxel
    core = ndimage.center_of_mass(np.where(psf >= psf.max() / 2, psf, 0))
    assert_allclose(core, _centre(psf.shape), atol=0.5)
    fz, fy, fx = psf_fwhm(psf, BEAD_VOXEL)  # measured: z 0.55 µm, y 0.24 µm, x 0.17 µm
    # Plausible for a high-NA confocal: the diffraction limit at NA 1.4 and ~0.45-0.6 µm
    # (confocal Born & Wolf: xy 0.12-0.16, z 0.45-0.6 µm) is the floor; a 1 AU pinhole,
    # aberrations and 0.1-0.2 µm beads broaden it, but not beyond 0.4 µm (xy) and 1.5 µm (z).
    assert 0.12 < fx < 0.40 and 0.12 < fy < 0.40
    assert 0.40 < fz < 1.5
    assert fz > 2 * max(fx, fy)  # elongated along the optical axis


def test_psf_from_beads_needs_beads():
    flat = np.full((20, 40, 40), 3, np.uint16)
    with pytest.raises(ValueError, match="isolated beads"):
        psf_from_beads(flat, voxel_size=(0.2, 0.1, 0.1), shape=(9, 11, 11))


@pytest.mark.gpu
def test_psf_from_beads_gpu_matches_cpu(gpu):
    image, _, _ = _synthetic_beads(seed=1)
    cpu = psf_from_beads(image, voxel_size=(0.2, 0.1, 0.1), shape=(15, 21, 21))
    dev = psf_from_beads(gpu.asarray(image), voxel_size=(0.2, 0.1, 0.1), shape=(15, 21, 21))
    assert type(dev).__module__.startswith("cupy")
    assert_allclose(gpu.to_host(dev), cpu, rtol=1e-4, atol=1e-7)
