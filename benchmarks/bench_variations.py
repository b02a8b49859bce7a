"""The whole per-field chain on every row of the generator's variation grid, defaults only.

For each row of :data:`hcsmito.synth.VARIATIONS` (well kinds, cell phenotypes, nanotube
geometries, optics and acquisition artefacts), fields are generated with exact truth and
run through :func:`hcsmito.pipeline.process_field` with the default configuration, as a
user would run a plate. Per row:

- foci F1: focus centroids (intensity-weighted on the raw mito channel) matched one-to-one
  to the true centres within 1 µm (Hungarian), pooled over the row's fields;
- MSC exact: share of fields whose MSC count equals the truth;
- Jurkat ±1: share of fields whose donor count is within 1 of the truth (and the number
  of fields without donors where any was found);
- adhered exact: share of fields whose adhered-donor count equals the truth;
- TNT precision and recall: TNTs matched to the true ones by their end points
  (:func:`hcsmito.stages.tnt.match_tnts`, 3 µm), pooled;
- % Red+ error: mean absolute difference of ``pct_msc_red_positive`` from the truth, points;
- glass error: median absolute difference of ``glass_z_um`` from the true glass height;
- silent: fields where a count (MSC, Jurkat, foci, TNT) is off by more than 1 and the
  field carries no QC flag (the worst defect: a wrong number reported ``ok``).

Run::

    python benchmarks/bench_variations.py                  # every row, 2 seeds x 2 conditions
    python benchmarks/bench_variations.py --rows msc_only,washed --seeds 1 -v
    python benchmarks/bench_variations.py --json out.json

Targets (issue 11): foci F1 >= 0.97 in every row; Jurkat ±1 on >= 95 % of fields (0 on
every field without donors); MSC exact >= 95 %; TNT precision and recall >= 0.85 in every
row with TNTs; % Red+ error <= 5 points; no silent field.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from hcsmito.config import Config
from hcsmito.pipeline import process_field
from hcsmito.stages.tnt import match_tnts
from hcsmito.synth import VARIATIONS, SynthParams, generate_field, variation_params

MATCH_UM = 1.0
TNT_MATCH_UM = 3.0
#: The base of every row: a 77 µm field of 3 MSCs and 5 donor cells.
BASE = SynthParams(shape=(24, 256, 256), n_msc=3, n_jurkat=5)
CONDITIONS = ("DMSO", "ara-C")


@dataclass
class FieldScore:
    """What one field got right and wrong."""

    row: str
    seed: int
    condition: str
    n_msc_true: int
    n_msc: int
    n_jurkat_true: int
    n_jurkat: int
    adhered_true: int
    adhered: int
    foci_true: int
    foci_found: int
    foci_tp: int
    tnt_true: int
    tnt_found: int
    tnt_tp: int
    pct_red_true: float
    pct_red: float
    glass_true: float
    glass: float
    qc_flags: str
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def off_by_more_than_one(self) -> list[str]:
        """The counts of this field that are off by more than one."""
        pairs = {
            "msc": (self.n_msc, self.n_msc_true),
            "jurkat": (self.n_jurkat, self.n_jurkat_true),
            "foci": (self.foci_found, self.foci_true),
            "tnt": (self.tnt_found, self.tnt_true),
        }
        return [k for k, (a, b) in pairs.items() if b >= 0 and abs(a - b) > 1]

    @property
    def silent(self) -> bool:
        """Off by more than one with no QC flag."""
        return bool(self.off_by_more_than_one) and not self.qc_flags


def match_points(a: np.ndarray, b: np.ndarray, max_dist: float = MATCH_UM) -> int:
    """Number of one-to-one pairs of points closer than ``max_dist`` (Hungarian)."""
    if len(a) == 0 or len(b) == 0:
        return 0
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    r, c = linear_sum_assignment(np.where(d <= max_dist, d, 1e6))
    return int((d[r, c] <= max_dist).sum())


def _weighted_centroids(labels: np.ndarray, image: np.ndarray, sp: Sequence[float]) -> np.ndarray:
    n = int(labels.max())
    if n == 0:
        return np.zeros((0, labels.ndim))
    w = np.maximum(image.astype(np.float64) - np.percentile(image, 5), 0) + 1e-3
    c = ndi.center_of_mass(w, labels, np.arange(1, n + 1))
    return np.asarray(c, dtype=np.float64) * np.asarray(sp)


def _true_glass(p: SynthParams) -> float:
    """Height of the glass under the field centre (a tilted glass rises across it)."""
    return float(p.glass_z_um)


def score_field(row: str, p: SynthParams, condition: str, seed: int, config: Config) -> FieldScore:
    """Generate one field, run the whole chain with ``config`` and compare with the truth."""
    f = generate_field(p, condition=condition, seed=seed)
    roles = {"msc": f.image[0], "mito": f.image[1], "actin": f.image[2]}
    t0 = time.perf_counter()
    res = process_field(roles, voxel_size=f.voxel_size, config=config, backend="cpu")
    dt = time.perf_counter() - t0
    row_t = res.tables["fields"].iloc[0]
    keys = ("z", "y", "x")[3 - (f.image.ndim - 1) :]
    sp = [f.voxel_size[k] for k in keys]
    found = _weighted_centroids(res.labels["foci"], f.image[1], sp)
    # only foci inside MSCs are reported (cell_id > 0); the truth's are all inside MSCs
    inside = res.tables["foci"]
    if len(inside) and (inside["cell_id"] > 0).any():
        keep = np.isin(np.arange(1, len(found) + 1), inside.loc[inside["cell_id"] > 0, "focus_id"])
        found = found[keep]
    truth = f.tables["foci"][[f"{k}_um" for k in keys]].to_numpy(dtype=np.float64)
    tnt_true, tnt_found = f.tables["tnt"], res.tables["tnt"]
    tnt_tp = (
        len(match_tnts(tnt_found, tnt_true, tolerance_um=TNT_MATCH_UM))
        if len(tnt_found) and len(tnt_true)
        else 0
    )
    s = f.summary
    flags = row_t["qc_flags"]
    return FieldScore(
        row=row,
        seed=seed,
        condition=condition,
        n_msc_true=s["n_msc"],
        n_msc=int(row_t["n_msc"]),
        n_jurkat_true=s["n_jurkat"],
        n_jurkat=int(row_t["n_jurkat"]),
        adhered_true=s["n_jurkat_adhered"],
        adhered=int(row_t["n_jurkat_adhered"]),
        foci_true=len(truth),
        foci_found=len(found),
        foci_tp=match_points(found, truth),
        tnt_true=len(tnt_true),
        tnt_found=len(tnt_found),
        tnt_tp=tnt_tp,
        pct_red_true=float(s["pct_msc_red_positive"]),
        pct_red=float(row_t["pct_msc_red_positive"]),
        glass_true=_true_glass(p),
        glass=float(row_t["glass_z_um"]),
        qc_flags="" if pd.isna(flags) else str(flags),
        seconds=dt,
        extra={
            "status": str(row_t.get("status", "ok")),
            "n_red_true": int(s["n_msc_red_positive"]),
            "n_red": int(row_t["n_msc_red_positive"]),
        },
    )


def summarize(scores: Iterable[FieldScore]) -> dict:
    """Pooled scores of a row (see the module docstring)."""
    s = list(scores)
    tp = sum(x.foci_tp for x in s)
    fp = sum(x.foci_found - x.foci_tp for x in s)
    fn = sum(x.foci_true - x.foci_tp for x in s)
    t_tp = sum(x.tnt_tp for x in s)
    t_found = sum(x.tnt_found for x in s)
    t_true = sum(x.tnt_true for x in s)
    red = [abs(x.pct_red - x.pct_red_true) for x in s if np.isfinite(x.pct_red_true)]
    glass = [abs(x.glass - x.glass_true) for x in s if np.isfinite(x.glass)]
    no_donor = [x for x in s if x.n_jurkat_true == 0]
    return {
        "fields": len(s),
        "foci_true": fn + tp,
        "foci_f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
        "msc_exact": float(np.mean([x.n_msc == x.n_msc_true for x in s])),
        "jurkat_pm1": float(np.mean([abs(x.n_jurkat - x.n_jurkat_true) <= 1 for x in s])),
        "donors_where_none": sum(x.n_jurkat for x in no_donor),
        "adhered_exact": float(np.mean([x.adhered == x.adhered_true for x in s])),
        "tnt_true": t_true,
        "tnt_precision": t_tp / t_found if t_found else (1.0 if t_true == 0 else 0.0),
        "tnt_recall": t_tp / t_true if t_true else float("nan"),
        "red_error_pts": float(np.mean(red)) if red else float("nan"),
        "glass_error_um": float(np.median(glass)) if glass else float("nan"),
        "flagged": sum(bool(x.qc_flags) for x in s),
        "silent": sum(x.silent for x in s),
        "seconds_per_field": float(np.mean([x.seconds for x in s])),
    }


def passes(r: dict) -> bool:
    """The issue's targets for one row."""
    ok = r["foci_f1"] >= 0.97 or r["foci_true"] == 0
    ok &= r["jurkat_pm1"] >= 0.95 and r["donors_where_none"] == 0 and r["msc_exact"] >= 0.95
    if r["tnt_true"]:
        ok &= r["tnt_precision"] >= 0.85 and r["tnt_recall"] >= 0.85
    ok &= not r["red_error_pts"] > 5.0
    return bool(ok and r["silent"] == 0)


def run_rows(
    rows: Sequence[str],
    seeds: Sequence[int],
    conditions: Sequence[str] = CONDITIONS,
    *,
    base: SynthParams = BASE,
    config: Config | None = None,
    verbose: bool = False,
) -> dict[str, list[FieldScore]]:
    """Scores per row of the variation grid."""
    config = config or Config()
    out: dict[str, list[FieldScore]] = {}
    for row in rows:
        p = variation_params(row, base=base)
        out[row] = []
        for seed in seeds:
            for cond in conditions:
                sc = score_field(row, p, cond, seed, config)
                out[row].append(sc)
                if verbose:
                    print(
                        f"  {row:18s} s{seed} {cond:8s} msc {sc.n_msc}/{sc.n_msc_true} "
                        f"jur {sc.n_jurkat}/{sc.n_jurkat_true} adh {sc.adhered}/"
                        f"{sc.adhered_true} foci {sc.foci_tp}/{sc.foci_found}/{sc.foci_true} "
                        f"tnt {sc.tnt_tp}/{sc.tnt_found}/{sc.tnt_true} glass "
                        f"{sc.glass:.2f}/{sc.glass_true:.2f} flags [{sc.qc_flags}] "
                        f"{sc.seconds:.1f}s",
                        flush=True,
                    )
    return out


def table(rows: dict[str, list[FieldScore]]) -> str:
    """One markdown table: a line per row of the grid."""
    head = (
        "| variation | fields | foci F1 | MSC exact | Jurkat ±1 | donors where none "
        "| adhered exact | TNTs | TNT precision | TNT recall | % Red+ error | glass error µm "
        "| flagged | silent | pass |\n" + "|---" * 15 + "|\n"
    )

    def f(v, fmt):
        return "–" if isinstance(v, float) and not np.isfinite(v) else format(v, fmt)

    lines = []
    for key, sc in rows.items():
        r = summarize(sc)
        lines.append(
            f"| {key} | {r['fields']} | {f(r['foci_f1'], '.3f')} | {r['msc_exact']:.0%} | "
            f"{r['jurkat_pm1']:.0%} | {r['donors_where_none']} | {r['adhered_exact']:.0%} | "
            f"{r['tnt_true']} | {f(r['tnt_precision'], '.2f')} | {f(r['tnt_recall'], '.2f')} | "
            f"{f(r['red_error_pts'], '.1f')} | {f(r['glass_error_um'], '.2f')} | "
            f"{r['flagged']} | {r['silent']} | {'yes' if passes(r) else 'NO'} |"
        )
    return head + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", help="comma-separated rows (default: every row of VARIATIONS)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per condition (default 2)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated conditions")
    ap.add_argument("--json", help="write the per-field scores and the row summaries here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    rows = args.rows.split(",") if args.rows else list(VARIATIONS)
    unknown = [r for r in rows if r not in VARIATIONS]
    if unknown:
        ap.error(f"unknown rows {unknown}: use some of {', '.join(VARIATIONS)}")
    t0 = time.perf_counter()
    scores = run_rows(rows, range(args.seeds), args.conditions.split(","), verbose=args.verbose)
    print(table(scores))
    print(f"\n{sum(len(v) for v in scores.values())} fields in {time.perf_counter() - t0:.0f} s")
    if args.json:
        out = {
            "rows": {k: summarize(v) for k, v in scores.items()},
            "fields": [asdict(x) for v in scores.values() for x in v],
        }
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
