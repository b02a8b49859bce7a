"""Foci whose light comes from outside the search region (peak rule of detect_foci)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from hcsmito.stages.foci import detect_foci


def test_light_from_above_the_cell_is_not_a_focus():
    """A mitochondrion in a nanotube just over a cell's top (its centre a plane above the
    MSC mask) lights the mask's top plane with its blur: that plane's brightest voxel has
    a brighter neighbour outside the mask, so it is not a focus; one inside the cell, the
    same brightness, is."""
    vs = (0.6, 0.3, 0.3)
    img = np.zeros((12, 48, 96), np.float32)
    img[3, 24, 24] = 100.0  # inside: the mask holds planes 1-5
    img[6, 24, 72] = 100.0  # over the cell: a plane above the mask's top
    img = ndi.gaussian_filter(img, (0.5 / 0.6, 0.15 / 0.3, 0.15 / 0.3)) + 1.0
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)
    msc = np.zeros(img.shape, np.int32)
    msc[1:6, 4:44, 4:92] = 1
    res = detect_foci(img, voxel_size=vs, msc_labels=msc, foci_diameter_um=0.6)
    assert res.n == 1
    assert tuple(res.peak[0]) == (3, 24, 24)
    assert res.parent.tolist() == [1]
    # a focus in the mask's top plane whose peak is there still counts
    img2 = np.zeros(img.shape, np.float32)
    img2[5, 24, 72] = 100.0
    img2 = ndi.gaussian_filter(img2, (0.5 / 0.6, 0.15 / 0.3, 0.15 / 0.3)) + 1.0
    img2 += np.random.default_rng(1).normal(0, 0.01, img.shape).astype(np.float32)
    res2 = detect_foci(img2, voxel_size=vs, msc_labels=msc, foci_diameter_um=0.6)
    assert res2.n == 1 and tuple(res2.peak[0]) == (5, 24, 72)


def test_search_ends_at_the_cells_top_with_the_gfp():
    """A bright cell whose MSC mask reaches a plane above its top (the field-wide cut of
    a blurred surface): a mitochondrion just over the cell, its peak in that plane, is a
    focus of the mask but not of the column's GFP half maximum (``msc_signal``); one
    inside the cell stays with and without."""
    vs = (0.6, 0.3, 0.3)
    shape = (12, 48, 96)
    gfp = np.zeros(shape, np.float32)
    gfp[1:6, 4:44, 4:92] = 100.0  # the cell: planes 1-5
    gfp = ndi.gaussian_filter(gfp, (0.5 / 0.6, 0.3 / 0.3, 0.3 / 0.3)) + 10.0
    msc = np.zeros(shape, np.int32)
    msc[1:7, 4:44, 4:92] = 1  # the mask: a plane into the blur above
    mito = np.zeros(shape, np.float32)
    mito[3, 24, 24] = 100.0  # inside
    mito[6, 24, 72] = 100.0  # over the cell, in the mask's top plane
    mito = ndi.gaussian_filter(mito, (0.5 / 0.6, 0.15 / 0.3, 0.15 / 0.3)) + 1.0
    mito += np.random.default_rng(0).normal(0, 0.01, shape).astype(np.float32)
    kw = dict(voxel_size=vs, msc_labels=msc, foci_diameter_um=0.6)
    assert detect_foci(mito, **kw).n == 2  # the mask alone
    res = detect_foci(mito, msc_signal=gfp, **kw)
    assert res.n == 1 and tuple(res.peak[0]) == (3, 24, 24)
    assert detect_foci(mito, msc_signal=gfp, msc_top_fraction=0.0, **kw).n == 2
    with pytest.raises(ValueError, match="msc_top_fraction"):
        detect_foci(mito, msc_signal=gfp, msc_top_fraction=1.0, **kw)
    with pytest.raises(ValueError, match="msc_signal"):
        detect_foci(mito, msc_signal=gfp[:-1], **kw)
