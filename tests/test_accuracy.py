"""Accuracy against the synthetic generator's truth: a fast subset of benchmarks/bench_accuracy.py.

Small fields (77 µm square), the stages' defaults, two seeds over the conditions and one
field per ±50 % variation of brightness, noise, PSF width, voxel size and cell size. The
full grid (more seeds, all conditions, every variation) is ``benchmarks/bench_accuracy.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from hcsmito.synth import SynthParams, generate_field

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_accuracy", ROOT / "benchmarks" / "bench_accuracy.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


B = _bench()
SMALL = SynthParams(shape=(24, 256, 256), n_msc=3, n_jurkat=5)


def test_match_points_is_one_to_one():
    import numpy as np

    a = np.array([[0.0, 0.0], [0.5, 0.0], [5.0, 5.0]])
    b = np.array([[0.2, 0.0], [5.0, 6.5]])
    assert B.match_points(a, b, 1.0) == 1  # two found near one true focus count once
    assert B.match_points(a, b, 2.0) == 2


def test_default_conditions():
    rows = B.run_grid([0, 1], ["DMSO", "anti-ICAM-1"], [], base=SMALL)
    s = B.summarize(rows["default"])
    assert s["foci_true"] > 15
    assert s["foci_f1"] >= 0.95, s
    assert s["msc_exact"] >= 3 / 4, s
    assert s["jurkat_pm1"] == 1.0, s
    assert s["adhesion_agree"] >= 0.8, s


@pytest.mark.parametrize(
    "variation",
    [
        ("brightness", 0.5),
        ("noise", 1.5),
        ("psf_width", 1.5),
        ("voxel_size", 1.5),
        ("cell_size", 0.5),
        ("cell_size", 1.5),
    ],
    ids=lambda v: f"{v[0]}x{v[1]}",
)
def test_variations_same_defaults(variation):
    name, fac = variation
    f = generate_field(SMALL.varied(**{name: fac}), condition="DMSO", seed=0)
    sc = B.score_field(f, f"{name} x{fac}")
    s = B.summarize([sc])
    assert s["foci_f1"] >= 0.9, sc
    assert sc.n_msc == sc.n_msc_true, sc
    assert abs(sc.n_jurkat - sc.n_jurkat_true) <= 1, sc
