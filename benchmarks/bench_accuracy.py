"""Accuracy of the segmentation stages against the synthetic generator's ground truth.

For every seed x condition x variation, a field is generated with
:func:`hcsmito.synth.generate_field`, segmented with the stages' *defaults* (nothing
tuned per field), and compared to the truth:

- foci: centroids matched one-to-one to the true centres within 1 µm (Hungarian
  assignment), F1 pooled over the fields of a row;
- MSCs: number of instances equal to the true number of cells;
- Jurkat cells: number of instances within ±1 of the truth, and the share of
  matched Jurkat cells whose "rests on an MSC" flag equals the truth's ``adhered``.

Variations scale one generator quantity by 0.5 or 1.5 (brightness, noise, PSF width,
voxel size, cell size). Run::

    python benchmarks/bench_accuracy.py                 # full grid, prints a markdown table
    # default row: 3 seeds x all conditions; variation rows: 2 seeds x DMSO, anti-ICAM-1
    python benchmarks/bench_accuracy.py --quick         # 2 seeds, default params only
    python benchmarks/bench_accuracy.py --json out.json

Targets (issue 3): foci F1 >= 0.95, MSC count exact on >= 90 % of fields, Jurkat count
within ±1 on >= 90 %.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from hcsmito.stages.foci import detect_foci
from hcsmito.stages.segmentation import segment_jurkat, segment_msc
from hcsmito.synth import CONDITIONS, SynthParams, generate_field

MATCH_UM = 1.0
VARIATIONS: tuple[tuple[str, float], ...] = tuple(
    (name, f)
    for name in ("brightness", "noise", "psf_width", "voxel_size", "cell_size")
    for f in (0.5, 1.5)
)


@dataclass
class FieldScore:
    """Scores of one field."""

    seed: int
    condition: str
    variation: str
    n_msc_true: int
    n_msc: int
    n_jurkat_true: int
    n_jurkat: int
    foci_true: int
    foci_found: int
    foci_tp: int
    adhesion_agree: float
    seconds: float
    extra: dict = field(default_factory=dict)


def match_points(a: np.ndarray, b: np.ndarray, max_dist: float = MATCH_UM) -> int:
    """Number of one-to-one pairs of points closer than ``max_dist`` (Hungarian)."""
    if len(a) == 0 or len(b) == 0:
        return 0
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    cost = np.where(d <= max_dist, d, 1e6)
    r, c = linear_sum_assignment(cost)
    return int((d[r, c] <= max_dist).sum())


def segment_field(image: np.ndarray, voxel_size: dict, **options) -> dict:
    """Run the stages with their defaults (plus ``options``) on one (C, [Z,] Y, X) field."""
    gfp, mito = image[0], image[1]
    msc = segment_msc(gfp, voxel_size=voxel_size, **options.get("msc", {}))
    jur = segment_jurkat(
        mito, voxel_size=voxel_size, msc_labels=msc.labels, **options.get("jurkat", {})
    )
    foci = detect_foci(
        mito,
        voxel_size=voxel_size,
        msc_labels=msc.labels,
        jurkat_labels=jur.labels,
        **options.get("foci", {}),
    )
    return {"msc": msc, "jurkat": jur, "foci": foci}


def _centroids_um(labels: np.ndarray, weights: np.ndarray, n: int, sp: Sequence[float]):
    if n == 0:
        return np.zeros((0, labels.ndim))
    c = ndi.center_of_mass(weights.astype(np.float64), labels, np.arange(1, n + 1))
    return np.asarray(c, dtype=np.float64) * np.asarray(sp)


def score_field(f, variation: str = "default", **options) -> FieldScore:
    """Segment a generated field and compare it with its truth."""
    t0 = time.perf_counter()
    res = segment_field(f.image, f.voxel_size, **options)
    dt = time.perf_counter() - t0
    ndim = f.image.ndim - 1
    keys = ("z", "y", "x")[3 - ndim :]
    sp = [f.voxel_size[k] for k in keys]
    mito = f.image[1].astype(np.float64)
    bg = np.percentile(mito, 5)
    foci = res["foci"]
    found = _centroids_um(foci.labels, np.maximum(mito - bg, 0) + 1e-3, foci.n, sp)
    truth = f.tables["foci"][[f"{k}_um" for k in keys]].to_numpy(dtype=np.float64)
    tp = match_points(found, truth)

    jur = res["jurkat"]
    jt = f.tables["jurkat"]
    jc = _centroids_um(jur.labels, np.ones_like(mito), jur.n, sp)[:, -2:]
    jtrue = jt[["y_um", "x_um"]].to_numpy(dtype=np.float64)
    agree = np.nan
    if jur.n and len(jt):
        d = np.sqrt(((jc[:, None] - jtrue[None]) ** 2).sum(-1))
        r, c = linear_sum_assignment(d)
        ok = d[r, c] < 0.5 * float(f.params.jurkat_diameter_um)
        if ok.any():
            agree = float(np.mean(jur.on_msc[r[ok]] == jt["adhered"].to_numpy(dtype=bool)[c[ok]]))
    return FieldScore(
        seed=f.seed,
        condition=f.condition,
        variation=variation,
        n_msc_true=len(f.tables["msc"]),
        n_msc=res["msc"].n,
        n_jurkat_true=len(jt),
        n_jurkat=jur.n,
        foci_true=len(truth),
        foci_found=foci.n,
        foci_tp=tp,
        adhesion_agree=agree,
        seconds=dt,
    )


def summarize(scores: Iterable[FieldScore]) -> dict:
    """Pooled foci F1 and the count criteria of a list of field scores."""
    s = list(scores)
    tp = sum(x.foci_tp for x in s)
    fp = sum(x.foci_found - x.foci_tp for x in s)
    fn = sum(x.foci_true - x.foci_tp for x in s)
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    agree = [x.adhesion_agree for x in s if np.isfinite(x.adhesion_agree)]
    return {
        "fields": len(s),
        "foci_true": sum(x.foci_true for x in s),
        "foci_precision": tp / max(tp + fp, 1),
        "foci_recall": tp / max(tp + fn, 1),
        "foci_f1": f1,
        "msc_exact": float(np.mean([x.n_msc == x.n_msc_true for x in s])) if s else 1.0,
        "jurkat_pm1": float(np.mean([abs(x.n_jurkat - x.n_jurkat_true) <= 1 for x in s]))
        if s
        else 1.0,
        "adhesion_agree": float(np.mean(agree)) if agree else float("nan"),
        "seconds_per_field": float(np.mean([x.seconds for x in s])) if s else 0.0,
    }


def passes(summary: dict) -> bool:
    """The issue's targets."""
    return (
        summary["foci_f1"] >= 0.95 and summary["msc_exact"] >= 0.9 and summary["jurkat_pm1"] >= 0.9
    )


def run_grid(
    seeds: Sequence[int],
    conditions: Sequence[str],
    variations: Sequence[tuple[str, float]],
    *,
    base: SynthParams | None = None,
    variation_seeds: Sequence[int] | None = None,
    variation_conditions: Sequence[str] | None = None,
    verbose: bool = False,
) -> dict[str, list[FieldScore]]:
    """Scores per variation row (``"default"`` and ``"name x factor"``).

    The default row runs ``seeds x conditions``; each variation row runs
    ``variation_seeds x variation_conditions`` (the same by default).
    """
    base = base or SynthParams()
    rows: dict[str, list[FieldScore]] = {}
    for name, fac in [("default", 1.0), *variations]:
        params = base if name == "default" else base.varied(**{name: fac})
        key = name if name == "default" else f"{name} x{fac:g}"
        rows[key] = []
        row_seeds = seeds if name == "default" or variation_seeds is None else variation_seeds
        row_conds = (
            conditions
            if name == "default" or variation_conditions is None
            else variation_conditions
        )
        for seed in row_seeds:
            for cond in row_conds:
                f = generate_field(params, condition=cond, seed=seed)
                sc = score_field(f, key)
                rows[key].append(sc)
                if verbose:
                    print(
                        f"  {key:18s} seed={seed} {cond:15s} msc {sc.n_msc}/{sc.n_msc_true} "
                        f"jurkat {sc.n_jurkat}/{sc.n_jurkat_true} foci tp {sc.foci_tp} "
                        f"found {sc.foci_found} true {sc.foci_true}",
                        flush=True,
                    )
    return rows


def table(rows: dict[str, list[FieldScore]]) -> str:
    """Markdown table of the summaries."""
    head = (
        "| variation | fields | foci | precision | recall | F1 | MSC exact | Jurkat ±1 "
        "| adhesion agree | s/field | pass |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for key, sc in rows.items():
        s = summarize(sc)
        lines.append(
            f"| {key} | {s['fields']} | {s['foci_true']} | {s['foci_precision']:.3f} | "
            f"{s['foci_recall']:.3f} | {s['foci_f1']:.3f} | {s['msc_exact']:.2f} | "
            f"{s['jurkat_pm1']:.2f} | {s['adhesion_agree']:.2f} | "
            f"{s['seconds_per_field']:.1f} | {'yes' if passes(s) else 'NO'} |"
        )
    return head + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per condition (default 3)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, DMSO only, no variations")
    ap.add_argument(
        "--variation-seeds", type=int, default=2, help="seeds per variation row (default 2)"
    )
    ap.add_argument(
        "--variation-conditions",
        default="DMSO,anti-ICAM-1",
        help="comma-separated conditions of the variation rows (default DMSO,anti-ICAM-1)",
    )
    ap.add_argument("--json", help="write the per-field scores and summaries here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    seeds = range(2 if args.quick else args.seeds)
    conditions = ["DMSO"] if args.quick else sorted(CONDITIONS)
    variations = () if args.quick else VARIATIONS
    rows = run_grid(
        seeds,
        conditions,
        variations,
        variation_seeds=range(args.variation_seeds),
        variation_conditions=args.variation_conditions.split(","),
        verbose=args.verbose,
    )
    print(table(rows))
    allsc = [x for v in rows.values() for x in v]
    print("\nall fields:", json.dumps(summarize(allsc), indent=1))
    if args.json:
        out = {
            "rows": {k: summarize(v) for k, v in rows.items()},
            "fields": [asdict(x) for v in rows.values() for x in v],
        }
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
