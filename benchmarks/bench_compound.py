"""The whole per-field chain on compound departures: several variations of the grid at once.

:data:`hcsmito.synth.VARIATIONS` departs from the base scene one way at a time. Plates
from other microscopes combine them: a dim, noisy, coarse-voxel, crowded field with
bleed-through and a tilted coverslip. This benchmark draws random compound scenes (2-4
variations chained with :func:`~hcsmito.synth.variation_params`, each applied to the
previous result), generates one field of each on ``bench_variations.BASE`` (3 x 24 x 256²,
3 MSCs, 5 donors), runs :func:`hcsmito.pipeline.process_field` with the default
configuration on the CPU and scores it against the generator's truth with
``bench_variations.score_field`` (the same matching: foci within 1 µm, TNTs by their ends
within 3 µm).

How variations combine
----------------------
- They are applied in a fixed order whatever order they were drawn in: the scene first
  (well kind, cells, density, nanotubes), then the optics and acquisition, then the stack
  geometry, so that a stack grown to hold the cells (``grow_stack``) or cut to a depth sees
  the final cells and z step, as an operator sets the stack on the plate in front of them.
- Two variations that set the same quantity are never drawn together (one would silently
  undo the other): the groups in :data:`EXCLUSIVE`.
- :data:`EXCLUDED_PAIRS` are combinations that contradict each other or mean nothing
  (each with its reason).
- ``default`` (nothing), and the nuclear-stain rows (``nuclear_haze``, ``nuclear_dim``: no
  nuclear channel is drawn on this base) are not drawn.
- A combination whose parameters do not validate (:class:`SynthParams` raises) is redrawn.

Verdict per field
-----------------
``flagged``: the field carries a QC flag or its status is not ``ok`` (failed); else
``SILENT-WRONG`` when a readout is off by more than its tolerance, else ``ok-right``.
Tolerances, set from the single-variation grid's own spread (``bench_variations.py
--seeds 3``, RESULTS.md: MSC exact and % Red+ error 0 on all 162 fields, Jurkat ±1 on all,
foci F1 >= 0.976 and TNT recall >= 0.89 pooled per row, adhered exact >= 83 %):

- MSC count: exact; MSCs Red+: exact;
- foci inside MSCs: count off by more than max(1, 10 %) of the truth, or F1 < 0.8 with
  at least 5 true foci;
- Jurkat count and adhered count: off by more than max(1, 10 %) of the truth;
- TNTs: recall < 0.5 with at least 2 true, or precision < 0.5 with at least 2 found.

Run::

    python benchmarks/bench_compound.py                   # 48 fields, seed 0
    python benchmarks/bench_compound.py -n 10 --seed 3 --json out.json
    python benchmarks/bench_compound.py --only 7,12       # redo some draws of a run
    python benchmarks/bench_compound.py --set foci.threshold_k=5
"""

from __future__ import annotations

import argparse
import json
import random
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
from bench_variations import BASE, CONDITIONS, FieldScore, score_field

from hcsmito.config import load_config
from hcsmito.synth import VARIATIONS, SynthParams, variation_params

#: Rows applied in this order (scene, then optics and acquisition, then stack geometry).
ORDER: tuple[str, ...] = (
    # scene: the well and its cells
    "msc_only",
    "washed",
    "jurkat_only",
    "cell_size x0.75",
    "cell_size x1.5",
    "density x0.5",
    "density x1.5",
    "crowded_msc",
    "actin_rich_jurkat",
    "tnt_sloped",
    "tnt_long",
    "tnt_bright",
    "tnt_dim",
    "tnt_thin",
    # optics and acquisition
    "brightness x0.5",
    "brightness x1.5",
    "noise x0.5",
    "noise x2",
    "psf x1.5",
    "voxel x1.5",
    "anisotropic",
    "vignetting",
    "depth_attenuation",
    "bleed_through",
    # stack geometry
    "tilted_glass",
    "glass_high",
    "shallow_cut",
    "msc_layer_only",
)

#: Rows not drawn: nothing, or nothing on a field without a nuclear channel.
NOT_DRAWN = ("default", "nuclear_haze", "nuclear_dim")

#: Groups of rows that set the same quantity: at most one of each group in a scene.
EXCLUSIVE: tuple[frozenset[str], ...] = tuple(
    frozenset(g)
    for g in (
        ("brightness x0.5", "brightness x1.5"),
        ("noise x0.5", "noise x2"),
        ("cell_size x0.75", "cell_size x1.5"),
        ("density x0.5", "density x1.5"),
        ("msc_only", "washed", "jurkat_only"),  # n_msc / n_jurkat / foci_rate set
        ("tilted_glass", "glass_high"),  # glass_z_um set
        ("shallow_cut", "msc_layer_only"),  # the stack's depth set
        ("tnt_bright", "tnt_dim"),  # tnt_actin set
    )
)

#: Pairs that contradict each other or mean nothing together, with the reason.
EXCLUDED_PAIRS: dict[frozenset[str], str] = {
    frozenset(("glass_high", "shallow_cut")): "glass_high grows the stack to hold the cells",
    frozenset(("glass_high", "msc_layer_only")): "glass_high grows the stack to hold the cells",
    frozenset(("crowded_msc", "tnt_long")): "tnt_long is a sparse field with room for them",
    frozenset(("crowded_msc", "jurkat_only")): "no MSCs to crowd",
    frozenset(("crowded_msc", "density x0.5")): "sparse seeding packed edge to edge",
    frozenset(("actin_rich_jurkat", "msc_only")): "no Jurkat cells",
    frozenset(("actin_rich_jurkat", "washed")): "no Jurkat cells",
}

DRAWABLE = tuple(r for r in ORDER if r in VARIATIONS and r not in NOT_DRAWN)


def compatible(names: Sequence[str]) -> bool:
    """Whether these rows can be applied together (no shared setting, no excluded pair)."""
    s = set(names)
    if any(len(s & g) > 1 for g in EXCLUSIVE):
        return False
    return not any(pair <= s for pair in EXCLUDED_PAIRS)


def compound_params(names: Sequence[str], base: SynthParams = BASE) -> SynthParams:
    """``base`` with every row of ``names`` applied, in :data:`ORDER` (raises ValueError
    when the result does not validate)."""
    p = base
    for name in sorted(names, key=ORDER.index):
        p = variation_params(name, base=p)
    return p


def draw_scenes(
    n: int, seed: int = 0, *, k: tuple[int, int] = (2, 4)
) -> list[tuple[tuple[str, ...], SynthParams, str]]:
    """``n`` reproducible compound scenes: (rows in applied order, parameters, condition)."""
    rng = random.Random(seed)
    out: list[tuple[tuple[str, ...], SynthParams, str]] = []
    seen: set[tuple[str, ...]] = set()
    while len(out) < n:
        names = tuple(sorted(rng.sample(DRAWABLE, rng.randint(*k)), key=ORDER.index))
        if names in seen or not compatible(names):
            continue
        try:
            p = compound_params(names)
        except ValueError:
            continue
        seen.add(names)
        out.append((names, p, rng.choice(CONDITIONS)))
    return out


def _off(found: int, true: int, rel: float = 0.1) -> bool:
    return abs(found - true) > max(1.0, rel * true)


def wrong_readouts(s: FieldScore) -> list[str]:
    """The readouts of a field off by more than their tolerance (module docstring)."""
    bad = []
    if s.n_msc != s.n_msc_true:
        bad.append("n_msc")
    if s.extra.get("n_red") != s.extra.get("n_red_true"):
        bad.append("n_red_positive")
    f1_den = s.foci_found + s.foci_true
    f1 = 2 * s.foci_tp / f1_den if f1_den else 1.0
    if _off(s.foci_found, s.foci_true) or (f1 < 0.8 and s.foci_true >= 5):
        bad.append("n_foci")
    if _off(s.n_jurkat, s.n_jurkat_true):
        bad.append("n_jurkat")
    if _off(s.adhered, s.adhered_true):
        bad.append("n_adhered")
    if s.tnt_true >= 2 and s.tnt_tp / s.tnt_true < 0.5:
        bad.append("tnt_recall")
    if s.tnt_found >= 2 and s.tnt_tp / s.tnt_found < 0.5:
        bad.append("tnt_precision")
    return bad


def verdict(s: FieldScore) -> str:
    """``flagged``, ``SILENT-WRONG`` or ``ok-right``."""
    if s.qc_flags or s.extra.get("status", "ok") != "ok":
        return "flagged"
    return "SILENT-WRONG" if wrong_readouts(s) else "ok-right"


def _line(i: int, names: Sequence[str], s: FieldScore) -> str:
    f1_den = s.foci_found + s.foci_true
    f1 = 2 * s.foci_tp / f1_den if f1_den else 1.0
    rec = f"{s.tnt_tp / s.tnt_true:.2f}" if s.tnt_true else "-"
    prec = f"{s.tnt_tp / s.tnt_found:.2f}" if s.tnt_found else "-"
    bad = wrong_readouts(s)
    return (
        f"[{i:3d}] {' + '.join(names)} ({s.condition}, seed {s.seed})\n"
        f"      msc {s.n_msc}/{s.n_msc_true} red+ {s.extra.get('n_red')}/"
        f"{s.extra.get('n_red_true')} foci {s.foci_found}/{s.foci_true} (F1 {f1:.2f}) "
        f"jurkat {s.n_jurkat}/{s.n_jurkat_true} adhered {s.adhered}/{s.adhered_true} "
        f"tnt {s.tnt_found}/{s.tnt_true} P {prec} R {rec} | {s.extra.get('status', 'ok')} "
        f"[{s.qc_flags}] {s.seconds:.1f}s -> {verdict(s)}" + (f" ({', '.join(bad)})" if bad else "")
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=48, help="compound fields (default 48)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws and the fields")
    ap.add_argument("--only", help="comma-separated indices of the draws to run")
    ap.add_argument("--json", help="write the per-field scores and verdicts here")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="K=V", help="config overrides (default: none)"
    )
    args = ap.parse_args(argv)
    scenes = draw_scenes(args.n, args.seed)
    only = {int(i) for i in args.only.split(",")} if args.only else set(range(args.n))
    config = load_config(overrides=args.set)
    results: list[dict] = []
    t0 = time.perf_counter()
    for i, (names, p, cond) in enumerate(scenes):
        if i not in only:
            continue
        fseed = args.seed * 1000 + i
        row = " + ".join(names)
        try:
            s = score_field(row, p, cond, fseed, config)
        except Exception as exc:  # a failed field is a status, not a crash of the benchmark
            print(f"[{i:3d}] {row} ({cond}, seed {fseed}) FAILED: {exc!r}", flush=True)
            traceback.print_exc()
            results.append({"index": i, "names": names, "verdict": "flagged", "error": repr(exc)})
            continue
        print(_line(i, names, s), flush=True)
        results.append(
            {
                "index": i,
                "names": names,
                "verdict": verdict(s),
                "wrong": wrong_readouts(s),
                "score": asdict(s),
            }
        )
    counts = Counter(r["verdict"] for r in results)
    print(f"\n{len(results)} fields in {time.perf_counter() - t0:.0f} s")
    print("| verdict | fields |\n|---|---|")
    for v in ("ok-right", "flagged", "SILENT-WRONG"):
        print(f"| {v} | {counts.get(v, 0)} |")
    silent = [r for r in results if r["verdict"] == "SILENT-WRONG"]
    if silent:
        print("\n| draw | variations | condition | wrong |\n|---|---|---|---|")
        for r in silent:
            print(
                f"| {r['index']} | {' + '.join(r['names'])} | {r['score']['condition']} "
                f"| {', '.join(r['wrong'])} |"
            )
    wrong_flagged = sum(1 for r in results if r["verdict"] == "flagged" and r.get("wrong"))
    print(f"\nflagged fields with a readout off tolerance: {wrong_flagged}")
    if args.json:
        by_row = {"counts": dict(counts), "fields": results}
        with open(args.json, "w") as fh:
            json.dump(by_row, fh, indent=1, default=lambda o: float(np.asarray(o)))


if __name__ == "__main__":
    main()
