"""Wells and plates unlike the demo: single-channel plates, fields without donor cells.

Each case runs the whole per-field chain with a shipped configuration and compares with
an independent result (the ground truth of a generated field, or the stage called
directly).
"""

from __future__ import annotations

import numpy as np
import pytest

from hcsmito.config import load_config
from hcsmito.pipeline import process_field
from hcsmito.stages.foci import detect_foci

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mito_only():
    return load_config(ROOT / "conf" / "mito-only.yaml")


def _yeast_like(shared_data):
    """A 3-D stack of one cell full of real mitochondria (BPAE crop, Gaussian in z)."""
    import tifffile

    mito = tifffile.imread(shared_data / "bpae" / "BPAE_mito.tif").astype(np.float32)
    cell = mito[200:330, 400:530]
    return np.stack([cell * np.exp(-(((z - 6) / 3.0) ** 2)) for z in range(13)]) + 50


def test_mito_only_measures_every_mitochondrion(shared_data, mito_only):
    """conf/mito-only.yaml detects no donor bodies: a single-channel stack of one cell
    full of mitochondria keeps its mitochondria (before: the cell was one 'Jurkat body'
    and 2 foci were left), the same as the foci stage called without donor labels."""
    stack = _yeast_like(shared_data)
    vs = {"z": 0.3, "y": 0.108, "x": 0.108}
    res = process_field({"mito": stack}, voxel_size=vs, config=mito_only, backend="cpu")
    row = res.tables["fields"].iloc[0]
    direct = detect_foci(stack, voxel_size=vs, **mito_only.foci.stage_kwargs())
    assert row["n_foci"] == direct.n >= 10
    assert row["n_jurkat"] == 0 and not res.labels["jurkat"].any()
    assert any("no donor detection" in n for n in res.notes)


def test_mito_only_on_a_real_2d_field(shared_data, mito_only):
    import tifffile

    mito = tifffile.imread(shared_data / "bpae" / "BPAE_mito.tif")
    vs = {"y": 0.108, "x": 0.108}
    res = process_field({"mito": mito}, voxel_size=vs, config=mito_only, backend="cpu")
    direct = detect_foci(mito, voxel_size=vs, **mito_only.foci.stage_kwargs())
    assert res.tables["fields"].iloc[0]["n_foci"] == direct.n > 100


def _bench():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "bench_variations", ROOT / "benchmarks" / "bench_variations.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


BV = _bench()

#: A subset of the variation grid that CI runs (the whole grid: bench_variations.py).
CI_ROWS = (
    "washed",
    "msc_only",
    "jurkat_only",
    "shallow_cut",
    "msc_layer_only",
    "actin_rich_jurkat",
    "tnt_sloped",
    "anisotropic",
    "bleed_through",
    "vignetting",
    "tilted_glass",
    "cell_size x1.5",
    "density x1.5",
    "voxel x1.5",
)


@pytest.mark.parametrize("row", CI_ROWS)
def test_variation_rows_with_defaults(row):
    """One field of a row of the variation grid through the whole chain with the default
    configuration, against the generator's truth: counts right, or the field flagged."""
    from hcsmito.config import Config
    from hcsmito.synth import variation_params

    p = variation_params(row, base=BV.BASE)
    sc = BV.score_field(row, p, "ara-C", 0, Config())
    assert sc.n_msc == sc.n_msc_true, sc
    assert abs(sc.n_jurkat - sc.n_jurkat_true) <= 1, sc
    if sc.n_jurkat_true == 0:
        assert sc.n_jurkat == 0, sc
    assert sc.adhered == sc.adhered_true or sc.qc_flags, sc
    if sc.foci_true:
        f1 = 2 * sc.foci_tp / (sc.foci_true + sc.foci_found)
        assert f1 >= 0.9, sc
    assert sc.tnt_tp >= sc.tnt_true - 1 and sc.tnt_found <= sc.tnt_true + 1, sc
    assert abs(sc.glass - sc.glass_true) <= 0.5, sc
    assert not sc.silent, sc
