"""Jurkat adhesion against the generator's truth (truth labels and segmented cells),
hand-built geometry with a known contact area, the 2-D fallback, degenerate input and
GPU parity."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from hcsmito.stages._util import bincount
from hcsmito.stages.adhesion import ADHESION_COLUMNS, measure_adhesion
from hcsmito.stages.segmentation import segment_jurkat, segment_msc
from hcsmito.synth import SynthParams, generate_field

PARAMS = SynthParams(shape=(20, 192, 192), n_msc=2, n_jurkat=6)
GRID = [(c, s) for c in ("DMSO", "anti-ICAM-1", "ara-C") for s in (0, 1, 2)]
VS = (0.5, 0.25, 0.25)


@functools.cache
def _field(condition: str, seed: int):
    return generate_field(PARAMS, condition=condition, seed=seed)


def test_truth_labels_match_truth_table():
    """Truth labels: adhered count exact on every field, and per Jurkat the right MSC."""
    exact = 0
    for cond, seed in GRID:
        f = _field(cond, seed)
        truth = f.tables["jurkat"]
        res = measure_adhesion(f.labels["jurkat"], f.labels["msc"], voxel_size=f.voxel_size)
        assert list(res.columns) == ADHESION_COLUMNS
        assert res["jurkat_id"].tolist() == truth["jurkat_id"].tolist()
        exact += int(res["adhered"].sum()) == int(truth["adhered"].sum())
        np.testing.assert_array_equal(res["adhered"], truth["adhered"])
        np.testing.assert_array_equal(res["msc_id"], np.where(truth["adhered"], truth["msc_id"], 0))
        assert (res.loc[res["adhered"], "contact_area_um2"] >= 2.0).all()
    assert exact / len(GRID) >= 0.9


def test_label_dtypes_give_the_same_table():
    """int32 is the working type (4 bytes a voxel for the shifted copies); uint16, int64
    and uint64 labels give the same table."""
    f = _field(*GRID[0])
    jur, msc = f.labels["jurkat"], f.labels["msc"]
    ref = measure_adhesion(jur, msc, voxel_size=f.voxel_size)
    assert ref["adhered"].any()
    for dtype in (np.uint16, np.int64, np.uint64):
        got = measure_adhesion(jur.astype(dtype), msc.astype(dtype), voxel_size=f.voxel_size)
        pd.testing.assert_frame_equal(got, ref)


def test_segmented_cells():
    """Cells from segment_msc / segment_jurkat: adhered count exact on >= 80 % of fields
    (figures over a bigger grid in benchmarks/bench_tnt_accuracy.py)."""
    exact = 0
    grid = GRID[::2]
    for cond, seed in grid:
        f = _field(cond, seed)
        msc = segment_msc(f.image[0], voxel_size=f.voxel_size).labels
        jur = segment_jurkat(f.image[1], voxel_size=f.voxel_size, msc_labels=msc).labels
        res = measure_adhesion(jur, msc, voxel_size=f.voxel_size)
        exact += int(res["adhered"].sum()) == int(f.tables["jurkat"]["adhered"].sum())
    assert exact / len(grid) >= 0.8


def _scene(gap_planes: int):
    """An MSC slab (planes 0-7) and a Jurkat cylinder standing ``gap_planes`` above it,
    plus a Jurkat on the glass beside the slab."""
    msc = np.zeros((24, 40, 60), np.int32)
    jur = np.zeros_like(msc)
    msc[0:8, 5:35, 5:35] = 3
    yy, xx = np.ogrid[:40, :60]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 36  # 113 px
    top = 8 + gap_planes
    jur[top : top + 10][:, disc] = 2
    side = (yy - 20) ** 2 + (xx - 48) ** 2 <= 25
    jur[0:10][:, side] = 5
    return jur, msc, int(disc.sum())


@pytest.mark.parametrize("gap", [0, 1, 2, 3])
def test_contact_distance_and_area(gap):
    jur, msc, n_px = _scene(gap)
    res = measure_adhesion(jur, msc, voxel_size=VS, contact_distance_um=1.0, min_lift_um=3.0)
    assert res["jurkat_id"].tolist() == [2, 5]
    on = res.iloc[0]
    # gap of `gap` empty planes: the MSC is gap + 1 planes below the bottom voxel
    expect = (gap + 1) * VS[0] <= 1.0
    assert bool(on["adhered"]) is expect
    assert on["msc_id"] == (3 if expect else 0)
    assert on["contact_area_um2"] == pytest.approx(n_px * VS[1] * VS[2] if expect else 0.0)
    side = res.iloc[1]  # on the glass beside the MSC: lateral only
    assert not side["adhered"] and side["msc_id"] == 0


def test_lift_rule_rejects_glass_cell_inside_msc_label():
    """A Jurkat on the glass whose column the MSC label also fills (hole filling) is not
    adhered with the lift rule, and is without it."""
    msc = np.zeros((20, 30, 30), np.int32)
    jur = np.zeros_like(msc)
    msc[0:8, 2:28, 2:28] = 1
    jur[1:12, 10:20, 10:20] = 1
    assert not measure_adhesion(jur, msc, voxel_size=VS)["adhered"].iloc[0]
    assert measure_adhesion(jur, msc, voxel_size=VS, min_lift_um=0)["adhered"].iloc[0]


def test_2d_overlap_fallback():
    msc = np.zeros((40, 40), np.int32)
    jur = np.zeros_like(msc)
    msc[:, :20] = 1
    jur[5:15, 2:12] = 1  # fully over the MSC
    jur[25:35, 16:26] = 2  # 40 % over
    res = measure_adhesion(jur, msc, voxel_size={"y": 0.5, "x": 0.5})
    assert res["adhered"].tolist() == [True, False]
    assert res["contact_area_um2"].tolist() == pytest.approx([25.0, 10.0])


def test_degenerate(backend):
    a = backend.asarray
    z = np.zeros((6, 10, 10), np.int32)
    res = measure_adhesion(a(z), a(z), voxel_size=VS)
    assert len(res) == 0 and list(res.columns) == ADHESION_COLUMNS
    jur = z.copy()
    jur[2:4, 2:4, 2:4] = 1
    res = measure_adhesion(a(jur), None, voxel_size=VS)
    assert res["adhered"].tolist() == [False] and res["msc_id"].tolist() == [0]
    res = measure_adhesion(a(jur), a(z), voxel_size=VS)
    assert res["adhered"].tolist() == [False]
    msc = z.copy()
    msc[:, 6:, 6:] = 2  # an MSC, nowhere under the Jurkat: no contact voxel at all
    res = measure_adhesion(a(jur), a(msc), voxel_size=VS)
    assert res["adhered"].tolist() == [False] and res["contact_area_um2"].tolist() == [0.0]
    with pytest.raises(ValueError, match="same field"):
        measure_adhesion(jur, z[:-1], voxel_size=VS)


def test_bincount_takes_empty(backend):
    x = np.array([0, 3, 3, 1], np.int64)
    got = backend.to_host(bincount(backend, backend.asarray(x), 6))
    np.testing.assert_array_equal(got, np.bincount(x, minlength=6))
    empty = backend.to_host(bincount(backend, backend.asarray(x[:0]), 4))
    np.testing.assert_array_equal(empty, np.zeros(4))


@pytest.mark.gpu
def test_gpu_matches_cpu(gpu):
    for cond, seed in GRID[:3]:
        f = _field(cond, seed)
        cpu = measure_adhesion(f.labels["jurkat"], f.labels["msc"], voxel_size=f.voxel_size)
        dev = measure_adhesion(
            gpu.asarray(f.labels["jurkat"]), gpu.asarray(f.labels["msc"]), voxel_size=f.voxel_size
        )
        assert cpu.equals(dev)


def test_glass_cell_overhanging_an_msc_edge_is_not_adhered():
    """A round cell on the glass beside a thin MSC edge: its lower side curves up over the
    edge and touches it (contact and lift rules pass), but most of its footprint lies over
    the glass: it rests on the glass. The same cell moved over the MSC is adhered."""
    vs = (0.3, 0.3, 0.3)
    z, y, x = np.ogrid[:40, :60, :80]
    zc = z * vs[0]
    msc = np.where((x < 34) & (zc >= 0.3) & (zc < 3.3) & (y >= 0), 1, 0).astype(np.int32)

    def ball(cx, cz):
        rr = np.sqrt(((zc - cz) / 0.85) ** 2 + ((y - 30) * 0.3) ** 2 + ((x - cx) * 0.3) ** 2)
        return rr <= 5.0

    glass_cell = ball(45, 0.3 + 4.25) & (msc == 0)  # centre 3.3 µm beyond the MSC edge
    res = measure_adhesion(glass_cell.astype(np.int32), msc, voxel_size=vs)
    assert res["contact_area_um2"].iloc[0] > 0  # it does touch the edge from above
    over = (glass_cell.any(axis=0) & (x[0] < 34)).sum() / glass_cell.any(axis=0).sum()
    assert over < 0.5  # independent: most of its footprint lies over the glass
    assert not res["adhered"].iloc[0]
    # the contact and lift rules alone (before the footprint rule) call it adhered
    assert measure_adhesion(glass_cell.astype(np.int32), msc, voxel_size=vs, overlap_min=0)[
        "adhered"
    ].iloc[0]
    on_msc = ball(17, 3.3 + 4.25) & (msc == 0)
    res = measure_adhesion(on_msc.astype(np.int32), msc, voxel_size=vs)
    assert res["adhered"].iloc[0] and res["msc_id"].iloc[0] == 1
