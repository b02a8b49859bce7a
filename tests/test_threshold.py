"""Thresholds against scikit-image, on generated and real images, both backends."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import filters

from hcsmito.stages.threshold import (
    histogram,
    plate_threshold,
    threshold,
    threshold_from_histogram,
)

METHODS = ["otsu", "li", "triangle", "yen"]


def _bimodal(seed: int = 0, shape=(64, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.gamma(4.0, 25.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in rng.uniform(8, 56, (6, 2)):
        img += 400.0 * ((yy - cy) ** 2 + (xx - cx) ** 2 < 30)
    return img.astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_matches_skimage_float(backend, method):
    img = _bimodal()
    ref = float(getattr(filters, f"threshold_{method}")(img))
    got = threshold(backend.asarray(img), method=method)
    bin_width = (img.max() - img.min()) / 256
    # Otsu, triangle and Yen search the same histogram: same bin. Li iterates on the
    # histogram here (on the voxels in scikit-image for floats): within one bin.
    tol = 1.0 if method == "li" else 1e-3
    assert abs(got - ref) <= tol * bin_width


@pytest.mark.parametrize("method", METHODS)
def test_matches_skimage_real_image(shared_data, method):
    img = tifffile.imread(shared_data / "bpae" / "BPAE_mito.tif")
    ref = float(getattr(filters, f"threshold_{method}")(img))
    bin_width = (img.max() - img.min()) / 256
    got = threshold(img, method=method)
    assert abs(got - ref) <= (1.0 if method == "li" else 1e-3) * bin_width


@pytest.mark.parametrize("method", METHODS)
def test_uint16_matches_skimage(backend, method):
    # Integer images: one bin per integer value, as in scikit-image.
    img = (_bimodal(3) * 10).astype(np.uint16)
    ref = float(getattr(filters, f"threshold_{method}")(img))
    assert threshold(backend.asarray(img), method=method) == pytest.approx(ref, abs=0.5)


def test_histogram_counts_match_numpy(backend):
    img = _bimodal(1)
    counts, centers = histogram(backend.asarray(img), nbins=50)
    ref, edges = np.histogram(img, bins=50)
    np.testing.assert_array_equal(counts, ref)
    np.testing.assert_allclose(centers, 0.5 * (edges[1:] + edges[:-1]), rtol=1e-6)


def test_mask_restricts_histogram():
    img = _bimodal(2)
    mask = img < 300
    assert threshold(img, mask=mask) == pytest.approx(float(filters.threshold_otsu(img[mask])))


def test_manual_and_errors():
    assert threshold(np.zeros((4, 4)), method="manual", value=3.5) == 3.5
    with pytest.raises(ValueError, match="value="):
        threshold(np.zeros((4, 4)), method="manual")
    with pytest.raises(ValueError, match="unknown threshold method"):
        threshold_from_histogram(np.ones(3), np.arange(3.0), method="bogus")


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_inputs(method):
    assert threshold(np.zeros((8, 8), np.uint16), method=method) == 0.0
    assert threshold(np.full((8, 8), 4095, np.uint16), method=method) == 4095.0
    assert threshold(np.ones((1, 1), np.float32), method=method) == 1.0
    assert np.isnan(threshold(np.full((3, 3), np.nan, np.float32), method=method))


@pytest.mark.parametrize("method", METHODS)
def test_plate_threshold_pools_fields(method):
    fields = [_bimodal(s) for s in range(3)]
    pooled = np.concatenate([f.ravel() for f in fields])
    kw = {} if method == "li" else {"nbins": 1024}
    ref = float(getattr(filters, f"threshold_{method}")(pooled, **kw))
    got = plate_threshold(fields, method=method, nbins=1024)
    bin_width = (pooled.max() - pooled.min()) / 1024
    assert abs(got - ref) <= (1.0 if method == "li" else 1e-3) * bin_width


def test_plate_threshold_keeps_fields_comparable():
    # A dim field without objects gets its own (meaningless) per-field threshold, but
    # the plate threshold cuts it where the bright fields are cut.
    bright = _bimodal(0)
    empty = np.random.default_rng(5).gamma(4.0, 25.0, bright.shape).astype(np.float32)
    t_plate = plate_threshold([bright, empty])
    assert (empty > t_plate).mean() < 0.01
    assert (empty > threshold(empty)).mean() > 0.1


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_gpu_matches_cpu(gpu, method):
    img = _bimodal(4)
    assert threshold(gpu.asarray(img), method=method) == pytest.approx(
        threshold(img, method=method), rel=1e-6
    )
    assert plate_threshold([gpu.asarray(img), gpu.asarray(img * 2)], method=method) == (
        pytest.approx(plate_threshold([img, img * 2], method=method), rel=1e-6)
    )


def test_threshold_option_is_one_tagged_union():
    from pydantic import ValidationError

    from hcsmito.stages.threshold import (
        AutoThreshold,
        HistogramThreshold,
        ManualThreshold,
        as_threshold,
    )

    img = _bimodal(1)
    assert as_threshold("auto") == AutoThreshold(k=5.0, fraction=0.3)
    assert as_threshold({"method": "yen"}) == HistogramThreshold(method="yen")
    assert as_threshold(ManualThreshold(value=3)) == ManualThreshold(value=3.0)
    # a histogram option is the global threshold of that method; manual, its value
    assert HistogramThreshold(method="li").of(img) == threshold(img, method="li")
    assert ManualThreshold(value=12.5).of(img) == 12.5
    for bad in (
        "mean",
        {"method": "manual"},
        {"method": "otsu", "k": 3},
        {"method": "auto", "k": 0},
    ):
        with pytest.raises(ValidationError):
            as_threshold(bad)
    with pytest.raises(ValidationError, match="finite"):
        as_threshold({"method": "manual", "value": float("nan")})
