"""Cell masks cut back to their own signal (stages.cell_surface) and what TNT detection
gains from them: against the generator's true cells and true nanotubes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage as ndi

from hcsmito.stages.cell_surface import tighten_labels
from hcsmito.stages.segmentation import segment_jurkat, segment_msc
from hcsmito.stages.tnt import detect_tnts, match_tnts
from hcsmito.stages.tnt._geometry import inside_stack
from hcsmito.synth import SynthParams, generate_field, variation_params

BASE = SynthParams(shape=(24, 256, 256), n_msc=3, n_jurkat=5)


@functools.cache
def _segmented(row: str, seed: int, condition: str):
    f = generate_field(variation_params(row, base=BASE), condition=condition, seed=seed)
    sp = tuple(f.voxel_size[k] for k in "zyx")
    msc = segment_msc(f.image[0], voxel_size=sp).labels
    jur = segment_jurkat(f.image[1], voxel_size=sp, msc_labels=msc).labels
    return f, sp, msc, jur


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_tightened_msc_masks_are_closer_to_the_true_cells():
    """Segmented MSC masks hold ~35 % more voxels than the true cells; cut back to their
    GFP they are a subset with the same ids, and closer to the truth (Dice and volume)."""
    f, sp, msc, _ = _segmented("washed", 2, "DMSO")
    tight = tighten_labels(msc, f.image[0], voxel_size=sp, sigma_um=(0.0, 0.4, 0.4),
                           fraction=0.3)  # fmt: skip
    assert tight.dtype == msc.dtype  # the labels' own dtype
    assert np.all((tight == msc) | (tight == 0))  # a subset, ids unchanged
    assert set(np.unique(tight)) == set(np.unique(msc))
    true = f.labels["msc"] > 0
    assert (msc > 0).sum() > 1.2 * true.sum()  # the bloat this stage exists for
    assert abs(int((tight > 0).sum()) - int(true.sum())) < 0.7 * abs(
        int((msc > 0).sum()) - int(true.sum())
    )
    assert _dice(tight > 0, true) > _dice(msc > 0, true) + 0.03


def test_tightened_jurkat_bodies_keep_one_piece_per_cell():
    """Jurkat labels cut back to their MitoTracker: one connected body per cell (a
    mitochondrion on a tube is no part of it), closer to the true cells than the mask."""
    f, sp, msc, jur = _segmented("cell_size x1.5", 2, "DMSO")
    tight = tighten_labels(jur, f.image[1], voxel_size=sp, sigma_um=(0.5, 0.5, 0.5),
                           fraction=0.5, fill_holes=True, main_body=True,
                           keep_z_um=1.0)  # fmt: skip
    assert np.all((tight == jur) | (tight == 0))
    for i in np.unique(tight)[1:]:
        _, n = ndi.label(tight == i, structure=np.ones((3, 3, 3), bool))
        assert n == 1, i
    true = f.labels["jurkat"] > 0
    assert _dice(tight > 0, true) >= _dice(jur > 0, true)


def test_tighten_labels_without_cells_and_in_2d():
    empty = np.zeros((5, 20, 20), np.int32)
    assert not tighten_labels(empty, np.ones((5, 20, 20)), voxel_size=(1, 1, 1),
                              sigma_um=(0, 1, 1), fraction=0.5).any()  # fmt: skip
    lab = np.zeros((40, 40), np.int32)
    lab[5:35, 5:35] = 1  # a mask 5 px larger than its square of signal on every side
    sig = np.zeros((40, 40), np.float32)
    sig[10:30, 10:30] = 100
    sig += np.random.default_rng(0).normal(0, 1, sig.shape).astype(np.float32)
    tight = tighten_labels(lab, sig, voxel_size=(1, 1), sigma_um=(0.5, 0.5), fraction=0.5)
    assert abs(int(tight.sum()) - 400) <= 40


@pytest.mark.parametrize(("row", "seed", "condition"), [("washed", 2, "ara-C"),
                                                        ("cell_size x1.5", 2, "DMSO")])  # fmt: skip
def test_short_tubes_over_gaps_the_masks_close(row, seed, condition):
    """4-5 µm nanotubes across gaps that the segmented masks close up (two MSCs, a Jurkat
    whose mask reaches along the tube's cargo): missed against the masks as they are,
    found against masks cut back to their signal (all but at most one: a 4.5 µm tube
    on the cell_size x1.5 field stays hidden); no false TNT either way."""
    f, sp, msc, jur = _segmented(row, seed, condition)
    truth = f.tables["tnt"]
    kw = dict(voxel_size=sp, msc_labels=msc, jurkat_labels=jur, mito=f.image[1],
              msc_signal=f.image[0])  # fmt: skip
    loose = detect_tnts(f.image[2], tighten_cells=False, **kw)
    tight = detect_tnts(f.image[2], **kw)
    tp_loose = len(match_tnts(loose.table, truth, tolerance_um=3.0))
    tp_tight = len(match_tnts(tight.table, truth, tolerance_um=3.0))
    assert tp_loose == loose.n and tp_tight == tight.n  # precision 1 both ways
    assert tp_tight > tp_loose and tp_tight >= len(truth) - 1, (tp_loose, tp_tight, len(truth))


def test_end_points_stay_between_glass_and_stack_top():
    from hcsmito.stages.glass import Glass

    gl = Glass(1.0, "given", True, (0.0, 0.1), (10.0, 10.0))
    p = inside_stack(np.array([-0.7, 10.0, 20.0]), gl, 12.0)
    assert p[0] == pytest.approx(2.0) and tuple(p[1:]) == (10.0, 20.0)
    assert inside_stack(np.array([15.0, 1.0, 1.0]), None, 12.0)[0] == 12.0
    assert inside_stack(np.array([5.0, 1.0, 1.0]), gl, 12.0)[0] == 5.0


def test_upright_bridge_under_a_resting_cell_is_no_tnt():
    """An actin bridge standing upright between an MSC and a cell resting above it (the
    resting cell's cortex) is rejected by the steepness rule; a level tube is kept."""
    shape, vs = (30, 48, 120), (0.5, 0.25, 0.25)
    img = np.full(shape, 10.0, np.float32)
    msc = np.zeros(shape, np.int32)
    jur = np.zeros(shape, np.int32)
    msc[2:8, 10:38, 10:110] = 1
    msc[2:8, 10:38, 60:62] = 0  # two MSCs side by side
    msc[2:8, 10:38, 62:110] = 2
    jur[17:27, 14:34, 20:40] = 1  # resting high above MSC 1
    img[(msc > 0) | (jur > 0)] += 15
    # upright: from MSC 1's top (plane 8) up to the Jurkat's bottom (plane 17), rising
    # 4.5 µm over 0.75 µm
    for t in np.linspace(0, 1, 60):
        img[int(round(8 + 9 * t)), 24, int(round(30 + 3 * t))] += 200
    img = ndi.gaussian_filter(img, (1.0, 0.7, 0.7))
    img += np.random.default_rng(2).normal(0, 1, shape).astype(np.float32)
    kw = dict(voxel_size=vs, msc_labels=msc, jurkat_labels=jur, glass_z_um=1.0)
    assert detect_tnts(img, **kw).n == 0
    assert detect_tnts(img, max_steepness=100.0, **kw).n == 1
