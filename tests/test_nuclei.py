"""Nuclei: segmentation against hand-built and generated ground truth, the cells they seed,
the stain-free apoptosis call, and the channel-role errors of a nuclear stain."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from hcsmito.config import Config
from hcsmito.io.errors import PlateError
from hcsmito.io.roles import resolve_channel_roles
from hcsmito.pipeline import process_field
from hcsmito.stages.segmentation import (
    assign_nuclei,
    call_nuclear_state,
    group_fragments,
    segment_nuclei,
    typical_size,
)
from hcsmito.synth import SynthParams, generate_field

VOX = (0.5, 0.2, 0.2)


def _draw(shape, balls, vox=VOX, seed=0):
    """A DNA-stain field of ellipsoids ``(center_um, radii_um, level)``, blurred by a
    confocal-like PSF, with Poisson noise; and the ellipsoids' own label image."""
    grids = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, vox, strict=True)],
                        indexing="ij")  # fmt: skip
    img = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.int32)
    for k, (c, r, level) in enumerate(balls, start=1):
        inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r, strict=True)) <= 1
        img[inside] = level
        truth[inside] = k
    blur = ndi.gaussian_filter(img, [s / v for s, v in zip((0.5, 0.15, 0.15), vox, strict=True)])
    rng = np.random.default_rng(seed)
    return rng.poisson(blur + 20).astype(np.uint16), truth


def _centres(labels, vox=VOX):
    n = int(labels.max())
    return np.array(ndi.center_of_mass(labels > 0, labels, range(1, n + 1))) * np.array(vox)


def test_touching_nuclei_split_and_a_flat_nucleus_stays_whole():
    balls = [
        ((6.0, 10.0, 10.0), (2.5, 7.0, 6.0), 200),  # a flat MSC nucleus, 14 x 12 x 5 µm
        ((8.0, 10.0, 28.0), (3.2, 3.2, 3.2), 200),  # two donor nuclei that touch
        ((8.0, 10.0, 34.2), (3.2, 3.2, 3.2), 200),
        ((8.0, 28.0, 28.0), (3.0, 3.6, 3.0), 200),  # one alone
    ]
    img, truth = _draw((28, 200, 220), balls)
    got = segment_nuclei(img, voxel_size=VOX)
    assert got.n == 4, got.n
    d, _ = cKDTree(_centres(truth)).query(_centres(got.labels))
    assert d.max() < 1.0, d
    assert got.flags == () and list(got.n_parts) == [1, 1, 1, 1]


@pytest.mark.parametrize("seed", [0, 2])
def test_a_nucleus_whose_distance_map_tops_tie_stays_whole(seed):
    """Two balls 2 µm apart make one peanut-shaped nucleus with no neck: its distance map
    has two tops a few voxels apart, tied, and a saddle 0.15 µm below them, far less than
    the split depth (0.25 x the 4 µm radius). They are one maximum (seed_dynamics); before,
    scikit-image's h-maxima tops kept them two seeds, and the nucleus was split (on these
    noise draws; as on a 2-D crowded field of the generator: an elongated MSC nucleus cut
    in two, seeding two MSCs). Two touching nuclei with a neck still split."""
    balls = [
        ((5.0, 8.0, 8.0), (3.4, 3.4, 3.4), 200),  # one nucleus, two tied tops
        ((5.0, 8.0, 10.0), (3.4, 3.4, 3.4), 200),
        ((5.0, 8.0, 22.0), (3.2, 3.2, 3.2), 200),  # two nuclei that touch
        ((5.0, 8.0, 28.2), (3.2, 3.2, 3.2), 200),
    ]
    img, truth = _draw((20, 80, 170), balls, seed=seed)
    lab = np.asarray(segment_nuclei(img, voxel_size=VOX).labels)
    blob = (truth == 1) | (truth == 2)
    assert len(set(np.unique(lab[blob])) - {0}) == 1
    pair = [np.bincount(lab[truth == k]).argmax() for k in (3, 4)]
    assert 0 not in pair and pair[0] != pair[1]


def test_fragments_close_together_are_one_nucleus_and_debris_is_dropped():
    # three pieces 1.4 µm apart (more than the blur joins, less than the merge gap)
    pieces = [((8.0, 20.0, 20.0), (0.7, 0.7, 0.7), 300), ((8.0, 20.0, 22.8), (0.7, 0.7, 0.7), 300),
              ((8.0, 22.4, 21.4), (0.7, 0.7, 0.7), 300)]  # fmt: skip
    whole = [((8.0, 8.0, 8.0), (3.2, 3.2, 3.2), 200)]
    speck = [((8.0, 8.0, 30.0), (0.15, 0.15, 0.15), 300)]  # < 1 % of a nucleus
    img, _ = _draw((28, 160, 180), whole + pieces + speck)
    got = segment_nuclei(img, voxel_size=VOX)
    assert got.n == 2, got.n
    parts = sorted(got.n_parts.tolist())
    assert parts == [1, 3], parts


def test_pieces_far_apart_in_one_cell_are_grouped_and_called_fragmented():
    pieces = [((4.0, 20.0, 14.0), (1.0, 1.4, 1.4), 300), ((4.0, 20.0, 24.0), (1.0, 1.4, 1.4), 300),
              ((4.0, 25.0, 19.0), (1.0, 1.4, 1.4), 300)]  # fmt: skip
    others = [((4.0, 60.0, 20.0), (2.5, 7.0, 6.0), 200), ((4.0, 20.0, 60.0), (2.5, 7.0, 6.0), 200),
              ((4.0, 60.0, 60.0), (2.5, 7.0, 6.0), 200)]  # fmt: skip
    img, _ = _draw((20, 400, 400), pieces + others)
    nuc = segment_nuclei(img, voxel_size=VOX)
    assert nuc.n == 6
    cells = np.zeros(img.shape, np.int32)  # four MSCs: one holds the three pieces
    cells[:, :200, :200], cells[:, 200:, :200] = 1, 2
    cells[:, :200, 200:], cells[:, 200:, 200:] = 3, 4
    assigned = assign_nuclei(nuc.labels, msc_labels=cells)
    grouped, cells_of = group_fragments(nuc, assigned)
    assert grouped.n == 4 and sorted(grouped.n_parts.tolist()) == [1, 1, 1, 3]
    assert sorted(cells_of["cell_id"].tolist()) == [1, 2, 3, 4]
    assert (cells_of["cell_kind"] == "msc").all()


def test_msc_pieces_split_between_two_cells_or_in_no_cell_are_one_nucleus():
    """The pieces of one fragmented MSC nucleus where crowded cytoplasm put the boundary
    between two MSCs through them, and one piece in the rim no mask holds (beside a donor
    in a projection): one nucleus of 3 pieces, in an MSC. Without the voxel size (the
    old behaviour) they stay 2 nuclei in two cells and one in none."""
    pieces = [((4.0, 20.0, 15.0), (1.0, 1.4, 1.4), 300), ((4.0, 20.0, 23.0), (1.0, 1.4, 1.4), 300),
              ((4.0, 25.0, 17.0), (1.0, 1.4, 1.4), 300)]  # fmt: skip
    others = [((4.0, 45.0, 12.0), (2.5, 7.0, 6.0), 200), ((4.0, 45.0, 40.0), (2.5, 7.0, 6.0), 200)]
    img, _ = _draw((20, 280, 280), pieces + others)
    nuc = segment_nuclei(img, voxel_size=VOX)
    assert nuc.n == 5
    cells = np.zeros(img.shape, np.int32)
    cells[:, :140, :95], cells[:, :140, 95:] = 1, 2  # x 19 µm: between the first two
    cells[:, 140:, :140], cells[:, 140:, 140:] = 3, 4
    y, x = np.ogrid[:280, :280]
    cells[:, (np.hypot(y - 125, x - 85) < 9)] = 0  # the third piece (25, 17 µm) in a gap
    for sp, n, parts, kinds in ((VOX, 3, [1, 1, 3], ["msc"] * 3),
                                (None, 5, [1] * 5, ["", "msc", "msc", "msc", "msc"])):  # fmt: skip
        assigned = assign_nuclei(nuc.labels, msc_labels=cells, spacing_um=sp)
        grouped, cells_of = group_fragments(nuc, assigned, spacing_um=sp)
        assert grouped.n == n and sorted(grouped.n_parts.tolist()) == parts
        assert sorted(cells_of["cell_kind"].tolist()) == kinds


def test_msc_fragments_below_a_donor_nucleus_do_not_set_the_msc_size_a_speck_seeds_none():
    """A field of one healthy MSC nucleus, the 3 pieces of a fragmented one (each smaller
    than a donor's nucleus), 2 donors and a speck of haze over the first MSC: the pieces
    are one nucleus (with the 3 pieces among the MSC-kind sizes, the median of their upper
    half was a piece's, and 2 of them were not "small"); the speck seeds no MSC."""
    msc = [((4.0, 20.0, 20.0), (2.5, 7.0, 6.0), 200)]
    frag = [((4.0, 60.0, 55.0), (1.2, 1.6, 1.6), 300), ((4.0, 60.0, 61.0), (1.2, 1.6, 1.6), 300),
            ((4.0, 65.0, 58.0), (1.2, 1.6, 1.6), 300)]  # fmt: skip
    donors = [((5.0, 20.0, 60.0), (2.5, 3.2, 3.2), 250), ((5.0, 60.0, 20.0), (2.5, 3.2, 3.2), 250)]
    speck = [((4.0, 30.0, 30.0), (0.6, 0.5, 0.5), 400)]
    img, _ = _draw((20, 400, 400), msc + frag + donors + speck)
    nuc = segment_nuclei(img, voxel_size=VOX)
    assert nuc.n == 7
    cells = np.zeros(img.shape, np.int32)
    cells[:, :, :200], cells[:, :, 200:] = 1, 2  # two MSCs: x < 40 µm, x >= 40 µm
    bodies = np.zeros(img.shape, np.int32)
    z, y, x = np.ogrid[:20, :400, :400]
    for k, (_, cy, cx) in enumerate([d[0] for d in donors], start=1):
        bodies[np.broadcast_to(np.hypot(y - cy / 0.2, x - cx / 0.2) < 25, img.shape)] = k
    assigned = assign_nuclei(nuc.labels, msc_labels=cells, jurkat_labels=bodies)
    grouped, cells_of = group_fragments(nuc, assigned)
    kinds = cells_of["cell_kind"].tolist()
    assert sorted(kinds) == ["", "jurkat", "jurkat", "msc", "msc"], kinds
    assert sorted(grouped.n_parts[cells_of["cell_kind"].eq("msc").to_numpy()]) == [1, 3]


def test_two_touching_halves_of_one_msc_nucleus_are_joined_two_apart_stay_two():
    """An MSC nucleus pinched by a donor that displaces it (a waist: two distance maxima,
    the split cuts it in two): the halves touch and lie in one MSC, so they are one
    nucleus; two nuclei of one cytoplasm mask (crowded MSCs) that do not touch stay two."""
    y, x = np.ogrid[:200, :200]
    dna = np.zeros((200, 200), np.float32)
    crescent = (np.hypot(y - 100, x - 75) < 25) | (np.hypot(y - 100, x - 120) < 25)
    dna[crescent] = 300
    dna[(np.hypot(y - 30, x - 30) < 20)] = 300  # a round nucleus apart
    dna = ndi.gaussian_filter(dna, 1.0) + 20
    vox = (0.2, 0.2)
    nuc = segment_nuclei(dna, voxel_size=vox, nucleus_diameter_um=8.0)
    assert nuc.n == 3  # the pinched nucleus split at its waist, and the round one
    cells = np.ones((200, 200), np.int32)  # one MSC mask holds all
    assigned = assign_nuclei(nuc.labels, msc_labels=cells, spacing_um=vox)
    grouped, cells_of = group_fragments(nuc, assigned, spacing_um=vox)
    assert grouped.n == 2 and grouped.n_parts.tolist() == [1, 1]
    big = grouped.labels == grouped.labels[100, 75]
    assert (big == crescent).mean() > 0.98


def test_a_donor_nucleus_merged_with_an_msc_nucleus_in_a_projection_is_cut_at_its_body():
    """2-D: a donor's round nucleus against the end of a long MSC nucleus is one blob
    (no second distance maximum). Cut along the donor body, which holds no other
    nucleus: the donor gets its nucleus back (IoU >= 0.7 with the drawn disc: the body's
    outline cuts, not the nucleus'; centre within 1 µm) and the MSC keeps the rest.
    Without a body over it the blob stays whole."""
    from hcsmito.stages.segmentation import split_at_donors

    vox = (0.25, 0.25)
    y, x = np.ogrid[:240, :240]
    msc_nuc = ((y - 120) / 22.0) ** 2 + ((x - 100) / 60.0) ** 2 <= 1  # 11 x 30 µm
    donor_nuc = np.hypot(y - 120, x - 165) < 13  # r 3.25 µm, over the MSC nucleus' end
    other_nuc = np.hypot(y - 40, x - 40) < 13  # a donor with its own nucleus
    dna = np.where(msc_nuc | donor_nuc | other_nuc, 300.0, 0.0).astype(np.float32)
    dna = ndi.gaussian_filter(dna, 0.6) + 20
    nuc = segment_nuclei(dna, voxel_size=vox)
    assert nuc.n == 2  # the blob and the other donor's nucleus
    bodies = np.zeros((240, 240), np.int32)
    bodies[np.hypot(y - 120, x - 168) < 20] = 1  # its body reaches over the MSC nucleus' end
    bodies[np.hypot(y - 40, x - 40) < 22] = 2
    out = split_at_donors(nuc, bodies)
    assert out.n == 3 and out.n_parts.tolist() == [1, 1, 1]
    cells = assign_nuclei(out.labels, msc_labels=(bodies == 0).astype(np.int32),
                          jurkat_labels=bodies)  # fmt: skip
    own = out.labels == 1 + int(np.flatnonzero(cells["cell_id"].eq(1)
                                               & cells["cell_kind"].eq("jurkat"))[0])  # fmt: skip
    assert _iou(own, donor_nuc) >= 0.7, _iou(own, donor_nuc)  # cut at the body, not the disc
    centre = np.array(ndi.center_of_mass(own)) * 0.25
    assert np.hypot(*(centre - (120 * 0.25, 165 * 0.25))) < 1.0
    assert sorted(cells["cell_kind"]) == ["jurkat", "jurkat", "msc"]
    held = split_at_donors(nuc, np.where(bodies == 1, 0, bodies))  # no body over the blob
    assert held.n == 2


def test_assign_prefers_the_donor_body_a_nucleus_lies_in():
    nuclei = np.zeros((1, 10, 10), np.int32)
    nuclei[0, 2:5, 2:5] = 1  # inside an MSC and, on top of it, a donor (a 2-D projection)
    nuclei[0, 6:9, 6:9] = 2  # inside the MSC only
    msc = np.zeros_like(nuclei)
    msc[0] = 1
    jurkat = np.zeros_like(nuclei)
    jurkat[0, 1:6, 1:6] = 4
    got = assign_nuclei(nuclei, msc_labels=msc, jurkat_labels=jurkat)
    assert got["cell_kind"].tolist() == ["jurkat", "msc"]
    assert got["cell_id"].tolist() == [4, 1]


def test_condensed_call_uses_the_typical_nucleus_of_its_kind():
    import pandas as pd

    vols = [100.0, 120, 140, 160, 30, 180, 110]  # one small nucleus among donor nuclei
    t = pd.DataFrame({"n_parts": [1] * 7, "cell_kind": ["jurkat"] * 7, "volume_um3": vols,
                      "intensity_mean": [1.0] * 7, "cut": [False] * 6 + [False]})  # fmt: skip
    got = call_nuclear_state(t, ndim=3)
    assert got["state"].tolist() == ["normal"] * 4 + ["condensed"] + ["normal"] * 2
    assert typical_size(vols) == 150  # the median of the upper half: 120, 140, 160, 180
    # a field's MSC nuclei: one whole, three pieces of a fragmented one
    assert typical_size([41.0, 83.5, 675.0, 29.6]) == pytest.approx((83.5 + 675) / 2)
    # a nucleus cut by the stack is not called from its size
    assert not call_nuclear_state(t.assign(cut=True), ndim=3)["apoptotic"].any()


def _run(p: SynthParams, condition: str, seed: int, **overrides):
    f = generate_field(p, condition, seed=seed)
    names = [c.lower() for c in f.channel_labels]
    ch = {"msc": f.image[0], "mito": f.image[1], "actin": f.image[2],
          "nuclei": f.image[names.index("hoechst")]}  # fmt: skip
    cfg = Config(**overrides) if overrides else Config()
    return f, process_field(ch, voxel_size=f.voxel_size, config=cfg, backend="cpu")


def _match(a, b, tol):
    d, i = cKDTree(b).query(a, distance_upper_bound=tol)
    return len(set(i[np.isfinite(d)]))


def test_generated_field_nuclei_cells_and_apoptosis_against_truth(fate_field):
    """3-D, ara-C: nuclei matched within 2 µm (F1), MSC count exact, donors within 1, and
    the stain-free call equal to the generator's apoptotic donors."""
    f, r = fate_field
    tn, nn = f.tables["nuclei"], r.tables["nuclei"]
    cols = ["z_um", "y_um", "x_um"]
    tp = _match(nn[cols].to_numpy(), tn[cols].to_numpy(), 2.0)
    f1 = 2 * tp / (len(tn) + len(nn))
    assert f1 >= 0.95, (f1, len(tn), len(nn))
    fields = r.tables["fields"].iloc[0]
    assert fields["n_msc"] == f.summary["n_msc"]
    assert abs(fields["n_jurkat"] - f.summary["n_jurkat"]) <= 1
    assert fields["n_nuclei"] == len(nn) and fields["qc_flags"] == ""
    # the call, per donor cell matched to the truth
    tj, dj = f.tables["jurkat"], r.tables["jurkat"]
    d, i = cKDTree(tj[cols].to_numpy()).query(dj[cols].to_numpy(), distance_upper_bound=5.0)
    ok = np.isfinite(d)
    called = dj["apoptotic"].fillna(False).to_numpy(bool)[ok]
    truth = tj["apoptotic"].to_numpy(bool)[i[ok]]
    assert truth.sum() >= 3 and (called == truth).all(), (called, truth)
    assert fields["n_jurkat_apoptotic"] == truth.sum()


def test_a_bright_condensed_donor_nucleus_a_little_over_the_size_cut_is_condensed():
    """2-D, ara-C + cytochalasin D, apoptosis doubled (most donors apoptotic): a condensed
    donor nucleus, bright (1.5 x the field's normal-sized donor nuclei), measures 0.55 of
    its cell's diameter at the field's threshold, over the size cut (0.54: the threshold
    lies lower on a brighter nucleus's blurred edge); small and bright, it is condensed.
    Per donor cell matched to the truth: every call apoptotic is, and one condensed donor
    fewer is called normal (two before: the bright one, and one as bright as the normal
    ones)."""
    p = SynthParams(shape=(160, 160), n_msc=1, n_jurkat=10, nuclear_channel=True,
                    apoptosis_rate=2.0)  # fmt: skip
    f, r = _run(p, "ara-C + cytochalasin D", 7)
    tj, dj = f.tables["jurkat"], r.tables["jurkat"]
    cols = ["y_um", "x_um"]
    d, i = cKDTree(tj[cols].to_numpy()).query(dj[cols].to_numpy(), distance_upper_bound=5.0)
    ok = np.isfinite(d)
    called = dj["apoptotic"].fillna(False).to_numpy(bool)[ok]
    truth = tj["apoptotic"].to_numpy(bool)[i[ok]]
    assert truth.sum() >= 6 and not (called & ~truth).any()
    assert (truth & ~called).sum() == 1, (called, truth)


def test_nuclei_count_the_msc_that_a_2d_field_merges():
    """A 2-D field where the cytoplasm alone finds 3 MSCs of 5: seeded by their nuclei, 5;
    the same field with ``nuclei.seed_cells: false`` keeps the old count (the test fails
    without the seeding)."""
    p = SynthParams(nuclear_channel=True, shape=SynthParams().shape[1:])
    f, seeded = _run(p, "DMSO", 0)
    _, unseeded = _run(p, "DMSO", 0, nuclei={"seed_cells": False})
    assert f.summary["n_msc"] == 5
    assert seeded.tables["fields"]["n_msc"].iloc[0] == 5
    assert unseeded.tables["fields"]["n_msc"].iloc[0] == 3


def test_nuclei_channel_with_seeding_off_leaves_the_cell_tables_as_without_it():
    p = SynthParams(nuclear_channel=True, shape=(16, 128, 128), n_msc=3, n_jurkat=5)
    f, r = _run(p, "DMSO", 4, nuclei={"seed_cells": False})
    ch = {"msc": f.image[0], "mito": f.image[1], "actin": f.image[2]}
    plain = process_field(ch, voxel_size=f.voxel_size, config=Config(), backend="cpu")
    for name in ("cells", "jurkat", "foci", "tnt"):
        got = r.tables[name].drop(columns=["nucleus_id", "apoptotic"], errors="ignore")
        assert got.equals(plain.tables[name]), name
    assert len(plain.tables["nuclei"]) == 0 and "n_nuclei" not in plain.tables["fields"]
    assert "nuclei" not in plain.labels and "nuclei" in r.labels


def test_two_channels_matching_nuclei_is_an_error_naming_the_role():
    with pytest.raises(PlateError, match=r"nuclei.*(?s:.*)channels\.nuclei"):
        resolve_channel_roles(["GFP", "MitoTracker", "Phalloidin", "Hoechst", "DAPI"])
    got = resolve_channel_roles(["GFP", "MitoTracker", "Hoechst 33342"])
    assert got["nuclei"] == 2 and got["actin"] is None


def test_h_maxima_by_component_equals_scikit_image_on_the_whole_volume():
    from skimage.morphology import h_maxima

    from hcsmito.stages.segmentation.nuclei import _h_maxima_by_component

    balls = [
        ((6.0, 10.0, 10.0), (2.5, 7.0, 6.0), 200),
        ((8.0, 10.0, 28.0), (3.2, 3.2, 3.2), 200),
        ((8.0, 10.0, 34.2), (3.2, 3.2, 3.2), 200),
        ((8.0, 28.0, 28.0), (0.4, 0.4, 0.4), 300),
    ]
    _, truth = _draw((28, 200, 220), balls)
    mask = truth > 0
    dist = ndi.distance_transform_edt(mask, sampling=VOX).astype(np.float32)
    full = np.ones((3, 3, 3), bool)
    for h in (0.2, 1.0):  # the small ball: above h once, below it once
        whole = h_maxima(dist.astype(np.float64), h).astype(bool) & mask
        np.testing.assert_array_equal(_h_maxima_by_component(dist, mask, h, full), whole)


# -- DNA stain with a cytoplasmic haze: real fields and the generator's ------------------


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_real_hoechst_field_nuclei_match_an_otsu_mask_and_touching_ones_split(shared_data):
    """CellProfiler's speckles Hoechst field (widefield, 2-D): the glow around the nuclei
    lies above the field's ``auto`` threshold and joined 8 nuclei into 5 blobs before the
    haze test. Against scikit-image's Otsu mask (the independent reference: its objects
    inside the field), each of the 4 single nuclei is found with IoU >= 0.8, and the one
    reference object that holds two touching nuclei holds two of ours. Pixel 0.1 µm
    (CellProfiler's typical diameter of 120-300 px for these nuclei)."""
    import tifffile
    from skimage.filters import gaussian as sk_gaussian
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    img = tifffile.imread(shared_data / "speckles" / "1-162hrhoe2.tif").astype(np.float32)
    r = segment_nuclei(img, voxel_size=(1.0, 0.1, 0.1))
    assert r.flags == ()
    s = sk_gaussian(img, 4, preserve_range=True)
    ref = label(s > threshold_otsu(s))
    ours = r.labels
    inside = [i for i in range(1, ref.max() + 1)
              if (ref == i).sum() > 10_000 and not touches_edge(ref == i)]  # fmt: skip
    assert len(inside) == 5
    pairs = 0
    for i in inside:
        obj = ref == i
        ids, n = np.unique(ours[obj], return_counts=True)
        big = ids[(ids > 0) & (n > 0.2 * obj.sum())]
        if len(big) == 2:  # the touching pair, each nucleus >= 100 µm²
            pairs += 1
            assert all((ours == k).sum() * 0.01 >= 100 for k in big)
        else:
            assert len(big) == 1 and _iou(ours == big[0], obj) >= 0.8, i
    assert pairs == 1


def touches_edge(mask):
    return mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()


def test_real_dapi_field_with_cytoplasmic_stain_gives_its_nucleus_not_its_cell(shared_data):
    """The BPAE DAPI field (2-D, ~0.108 µm/px): the cytoplasm holds about a quarter of the
    nuclear stain, and the ``auto`` threshold took the whole cell (2200 µm²) for a
    nucleus. Now one nucleus of >= 100 µm², overlapping the top class of scikit-image's
    three-class Otsu (the independent reference, 215 µm²) with IoU >= 0.75, unflagged."""
    import tifffile
    from skimage.filters import gaussian as sk_gaussian
    from skimage.filters import threshold_multiotsu
    from skimage.measure import label

    img = tifffile.imread(shared_data / "bpae" / "BPAE_nuclei.tif").astype(np.float32)
    px = 0.108
    r = segment_nuclei(img, voxel_size=(1.0, px, px))
    assert r.flags == ()
    areas = np.bincount(r.labels.ravel())[1:] * px * px
    assert (areas >= 100).sum() == 1, areas
    s = sk_gaussian(img, 4, preserve_range=True)
    top = label(s > threshold_multiotsu(s, 3)[1])
    ref = top == top[274, 626]  # the nucleus (by eye: centre about y 274, x 626)
    assert ref.sum() * px * px > 150
    ours = r.labels == 1 + int(np.argmax(areas))
    assert _iou(ours, ref) >= 0.75, _iou(ours, ref)


@pytest.mark.parametrize(
    ("shape", "n_msc", "seed"),
    [((16, 160, 160), 2, 3), ((160, 160), 1, 4), ((160, 160), 1, 1)],
    ids=["3-D", "2-D below the haze", "2-D above the nuclei"],
)  # 2-D below the haze was seed 2 until the generator kept donors off MSC nuclei: its
# donors now rest over the MSC nucleus, one blob with it in the projection, which
# segment_nuclei alone does not split (split_at_donors does, in the pipeline)
def test_generated_haze_is_found_and_a_field_without_it_keeps_its_threshold(shape, n_msc, seed):
    """The generator's cytoplasmic haze (a quarter of the nuclear level): nuclei F1 >= 0.9
    against the truth, where the field's ``auto`` threshold alone gives below 0.6 (below
    the haze: cells for nuclei; or, in a 2-D field the haze covers more than the
    background does, far above it: nuclei lost). The same field without haze keeps the
    ``auto`` threshold exactly (tables unchanged)."""
    from hcsmito.backend import Backend
    from hcsmito.stages._util import gaussian, spacing
    from hcsmito.stages.segmentation._common import fg_threshold
    from hcsmito.stages.segmentation.nuclei import nuclear_threshold
    from hcsmito.stages.threshold import as_threshold

    b = Backend.of(np.zeros(1))
    for haze in (0.0, 0.25):
        p = SynthParams(nuclear_channel=True, shape=shape, n_msc=n_msc, n_jurkat=8,
                        nuclear_haze=haze)  # fmt: skip
        f = generate_field(p, "DMSO", seed=seed)
        dna = f.image[[c.lower() for c in f.channel_labels].index("hoechst")]
        sp = spacing(f.voxel_size, dna.ndim)
        smooth = gaussian(b, dna.astype(np.float32), [0.4 / s for s in sp])
        old = fg_threshold(b, smooth, as_threshold("auto"))
        new = nuclear_threshold(b, smooth, "auto", sp, 0.4 / sp[-1])
        if haze == 0:
            assert new == old
    truth = f.labels["nuclei"]
    truth = truth.max(axis=0) if truth.ndim > dna.ndim else truth
    ids = np.unique(truth)[1:]
    true_c = np.array(ndi.center_of_mass(truth > 0, truth, ids)) * np.array(sp)
    runs = {
        "old": segment_nuclei(dna, voxel_size=f.voxel_size,
                              threshold={"method": "manual", "value": float(old)}),
        "new": segment_nuclei(dna, voxel_size=f.voxel_size),
    }  # fmt: skip
    assert runs["new"].threshold == pytest.approx(new)
    scores = {}
    for name, got in runs.items():
        c = _centres(got.labels, sp)
        tp = _match(c, true_c, 2.0) if len(c) else 0
        scores[name] = 2 * tp / (len(ids) + len(c))
    assert scores["new"] >= 0.9 and scores["old"] < 0.6, scores


@pytest.mark.parametrize("seed", [1, 3])
def test_crowded_2d_msc_count_from_nuclei(seed):
    """2-D, MSCs packed edge to edge (no thinning between them): one MSC per MSC nucleus,
    the count equal to the generator's. Cells grow from their nuclei by distance within
    the mask; on the cytoplasm's distance map alone one seed flooded its neighbours
    (seed 3: 3 of 4) and the pieces of an apoptotic MSC's nucleus outside the mask were
    lost (seed 1: 2 of 3)."""
    from hcsmito.synth import variation_params

    base = SynthParams(shape=(256, 256), n_msc=3, n_jurkat=16, nuclear_channel=True)
    f, r = _run(variation_params("crowded_msc", base=base), "DMSO", seed)
    assert r.tables["fields"]["n_msc"].iloc[0] == f.summary["n_msc"]
