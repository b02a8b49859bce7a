"""The stain-free nuclear state call over the nuclear channel's background: a camera offset
or a dim stain must not change which donor nuclei are called condensed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from hcsmito.config import Config
from hcsmito.pipeline import process_field
from hcsmito.stages.segmentation import call_nuclear_state
from hcsmito.stages.segmentation.nuclei import (
    CONDENSED_BRIGHT_CELL_RATIO,
    CONDENSED_BRIGHTNESS,
    nuclear_background,
)
from hcsmito.synth import SynthParams, generate_field


def _donors(mean: list[float], own: list[float]) -> pd.DataFrame:
    n = len(mean)
    return pd.DataFrame({"n_parts": [1] * n, "cell_kind": ["jurkat"] * n,
                         "volume_um3": [100.0] * n, "intensity_mean": mean,
                         "cut": [False] * n, "diameter_to_cell": own})  # fmt: skip


def test_brightness_is_compared_above_the_background():
    """Four normal-sized donor nuclei 100 counts above a background of 110 (raw means 210),
    one small nucleus 140 above it (1.4x: condensed) and one 120 above it (1.2x: normal).
    The same nuclei over a 1000-count camera offset get the same states when the level is
    given; taken raw (the level left at 0) the ratio 1250 / 1210 = 1.03 misses it."""
    own = [0.7, 0.68, 0.72, 0.66, 0.58, 0.58]
    above = np.array([100.0, 95, 105, 100, 140, 120])
    want = ["normal"] * 4 + ["condensed", "normal"]
    assert 0.54 < own[4] < CONDENSED_BRIGHT_CELL_RATIO  # small, but not small enough alone
    assert above[5] / 100 < CONDENSED_BRIGHTNESS < above[4] / 100
    for level in (110.0, 1110.0):
        got = call_nuclear_state(_donors(list(above + level), own), ndim=3, background=level)
        assert got["state"].tolist() == want, level
    raw = call_nuclear_state(_donors(list(above + 1110.0), own), ndim=3)
    assert raw["state"].tolist() == ["normal"] * 6
    # no normal-sized nucleus above the background: no brightness call
    flat = call_nuclear_state(_donors([100.0] * 6, own), ndim=3, background=100.0)
    assert (flat["state"] == "normal").all()


def test_nuclear_background_is_the_camera_offset_and_background_light():
    p = SynthParams(shape=(160, 160), n_msc=1, n_jurkat=10, nuclear_channel=True)
    f = generate_field(p, "DMSO", seed=0)
    dna = f.image[[c.lower() for c in f.channel_labels].index("hoechst")]
    true = p.offset + p.background * p.gain  # 110 counts
    assert nuclear_background(dna) == pytest.approx(true, abs=2.0)
    assert nuclear_background(dna + np.uint16(1000)) == pytest.approx(true + 1000, abs=2.0)


#: The field of ``test_a_bright_condensed_donor_nucleus_a_little_over_the_size_cut_is_
#: condensed`` (tests/test_nuclei.py): 2-D, ara-C + cytochalasin D, apoptosis doubled; one
#: condensed donor nucleus is called only by its brightness (0.55 of its cell).
FIELD = SynthParams(shape=(160, 160), n_msc=1, n_jurkat=10, nuclear_channel=True,
                    apoptosis_rate=2.0)  # fmt: skip
CONDITION, SEED = "ara-C + cytochalasin D", 7


def _calls(f, dna) -> tuple[np.ndarray, np.ndarray]:
    """The stain-free call and the truth's apoptotic state per donor cell matched to the
    truth within 5 µm."""
    ch = {"msc": f.image[0], "mito": f.image[1], "actin": f.image[2], "nuclei": dna}
    r = process_field(ch, voxel_size=f.voxel_size, config=Config(), backend="cpu")
    tj, dj = f.tables["jurkat"], r.tables["jurkat"]
    cols = ["y_um", "x_um"]
    d, i = cKDTree(tj[cols].to_numpy()).query(dj[cols].to_numpy(), distance_upper_bound=5.0)
    ok = np.isfinite(d)
    called = dj["apoptotic"].fillna(False).to_numpy(bool)[ok]
    return called, tj["apoptotic"].to_numpy(bool)[i[ok]]


@pytest.mark.parametrize("how", ["offset", "dim"])
def test_a_camera_offset_or_a_dim_stain_keeps_the_stain_free_calls(how):
    """The same field's nuclear channel 1000 counts higher (a 16-bit camera's offset), or
    drawn with a quarter of the Hoechst photons over the same offset and background (the
    generator's ``nuclear_gain`` 0.25: the other channels and the truth unchanged): the
    same donor cells are called apoptotic as on the original, each a true one. With the
    raw means compared (before), the bright condensed donor at 0.55 of its cell was called
    normal in both (raw ratio 1.5 -> under 1.3)."""
    f = generate_field(FIELD, CONDITION, seed=SEED)
    h = [c.lower() for c in f.channel_labels].index("hoechst")
    called, truth = _calls(f, f.image[h])
    assert truth.sum() >= 6 and not (called & ~truth).any()
    assert (truth & ~called).sum() == 1, (called, truth)
    if how == "offset":
        g, dna = f, f.image[h] + np.uint16(1000)
    else:
        g = generate_field(FIELD.model_copy(update={"nuclear_gain": 0.25}), CONDITION, seed=SEED)
        dna = g.image[h]
        assert np.array_equal(g.image[:3], f.image[:3])
    called_v, truth_v = _calls(g, dna)
    assert np.array_equal(truth_v, truth)  # the same donor cells matched
    assert np.array_equal(called_v, called), (called_v, called, truth)


def test_object_maxima_are_ndimage_maximum():
    """The haze test's per-object maxima (one pass over the voxels on the CPU) equal
    scipy's ``ndimage.maximum`` on a labelled field."""
    from scipy import ndimage as ndi

    from hcsmito.backend import get_backend
    from hcsmito.stages.segmentation.nuclei import _object_maxima

    rng = np.random.default_rng(4)
    img = ndi.gaussian_filter(rng.random((12, 90, 80)), 2).astype(np.float32)
    labels, n = ndi.label(img > np.percentile(img, 70))
    mask = labels > 0
    got = _object_maxima(get_backend("cpu"), img, labels, labels[mask], img[mask], n)
    ref = ndi.maximum(img, labels, np.arange(1, n + 1)).astype(np.float32)
    assert n > 5
    np.testing.assert_array_equal(got, ref)
