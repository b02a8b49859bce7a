"""Accuracy of TNT detection, the glass plane and Jurkat adhesion on generated fields with
known truth.

First the variation grid (:data:`hcsmito.synth.VARIATIONS`, the rows with nanotubes and
the geometries of issue 11): per row, TNTs with the stages' defaults on segmented cells
(precision and recall at 3 µm), the glass plane's largest error against the truth over the
field (centre and corners, so a missed tilt counts), and the fields flagged
``glass_implausible``; one table, then the stress-fibre control.

Then, for each (condition, seed) field of the grid: TNTs are detected in the phalloidin channel
with the truth cell labels ("truth labels") and with the cells segmented by
:func:`segment_msc` / :func:`segment_jurkat` ("segmented"); adhesion is measured both ways.
Printed figures:

- share of fields with the TNT count within ±1 of the truth;
- precision and recall of TNTs matched by their endpoint pairs (``match_tnts``, 3 and 5 µm);
- length and height errors of matched TNTs, thickness vs true diameter correlation;
- ``carries_mito`` agreement on matched true TNTs (mito channel given);
- share of fields with the exact adhered Jurkat count, and per-Jurkat agreement.

Run: ``python benchmarks/bench_tnt_accuracy.py [--seeds N] [--shape Z,Y,X] [--grid-only]
[--grid-seeds N] [--rows NAME,...]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hcsmito.stages.adhesion import measure_adhesion
from hcsmito.stages.segmentation import segment_jurkat, segment_msc
from hcsmito.stages.tnt import detect_tnts, match_tnts
from hcsmito.synth import SynthParams, generate_field

CONDITIONS = ("DMSO", "cytochalasin D", "anti-ICAM-1", "ara-C", "MTX")


def evaluate(p: SynthParams, conditions, seeds, *, segmented: bool) -> dict:
    count_ok = n_fields = tp = tp5 = n_found = n_truth = mito_ok = mito_n = 0
    len_err, h_err, thick = [], [], []
    adh_exact = adh_cells_ok = adh_cells = 0
    psf = p.psf_sigma_um()[2]
    t_tnt = 0.0
    for cond in conditions:
        for seed in seeds:
            f = generate_field(p, condition=cond, seed=seed)
            img = f.image
            if segmented:
                msc = segment_msc(img[0], voxel_size=f.voxel_size).labels
                jur = segment_jurkat(img[1], voxel_size=f.voxel_size, msc_labels=msc).labels
            else:
                msc, jur = f.labels["msc"], f.labels["jurkat"]
            t0 = time.perf_counter()
            res = detect_tnts(
                img[2],
                voxel_size=f.voxel_size,
                msc_labels=msc,
                jurkat_labels=jur,
                mito=img[1],
                # as the pipeline: segmented MSCs are tightened to their GFP
                msc_signal=img[0] if segmented else None,
                psf_sigma_um=psf,
            )
            t_tnt += time.perf_counter() - t0
            truth = f.tables["tnt"]
            n_fields += 1
            count_ok += abs(res.n - len(truth)) <= 1
            pairs = match_tnts(res.table, truth, tolerance_um=3.0)
            tp += len(pairs)
            tp5 += len(match_tnts(res.table, truth, tolerance_um=5.0))
            n_found += res.n
            n_truth += len(truth)
            for i, j in pairs:
                mito_n += 1
                len_err.append(res.table["length_um"].iloc[i] - truth["length_um"].iloc[j])
                h_err.append(res.table["height_um"].iloc[i] - truth["height_um"].iloc[j])
                thick.append((res.table["thickness_um"].iloc[i], truth["diameter_um"].iloc[j]))
                mito_ok += bool(res.table["carries_mito"].iloc[i]) == bool(
                    truth["carries_mito"].iloc[j]
                )
            adh = measure_adhesion(jur, msc, voxel_size=f.voxel_size)
            tj = f.tables["jurkat"]
            adh_exact += int(adh["adhered"].sum()) == int(tj["adhered"].sum())
            if not segmented:
                adh_cells += len(tj)
                adh_cells_ok += int((adh["adhered"].to_numpy() == tj["adhered"].to_numpy()).sum())
    return {
        "fields": n_fields,
        "tnt_count_within_1": count_ok / max(n_fields, 1),
        "tnt_precision": tp / max(n_found, 1),
        "tnt_recall": tp / max(n_truth, 1),
        "tnt_precision_5um": tp5 / max(n_found, 1),
        "tnt_recall_5um": tp5 / max(n_truth, 1),
        "length_error_um_median": float(np.median(len_err)) if len_err else float("nan"),
        "length_abs_error_um_p90": float(np.percentile(np.abs(len_err), 90))
        if len_err
        else float("nan"),
        "height_error_um_median": float(np.median(h_err)) if h_err else float("nan"),
        "thickness_vs_diameter_corr": float(np.corrcoef(np.asarray(thick).T)[0, 1])
        if len(thick) > 2
        else float("nan"),
        "n_truth_tnt": n_truth,
        "n_found_tnt": n_found,
        "carries_mito_agreement": mito_ok / max(mito_n, 1),
        "adhered_count_exact": adh_exact / max(n_fields, 1),
        "adhered_per_jurkat": adh_cells_ok / adh_cells if adh_cells else float("nan"),
        "detect_tnts_s_per_field": t_tnt / max(n_fields, 1),
    }


def control(p: SynthParams, seeds) -> tuple[int, int]:
    """Fields with stress fibres and cortices but no TNT: (fields, TNTs found)."""
    q = p.model_copy(update={"tnt_rate": 0.0, "fibres_per_msc": 20, "fibre_actin": 3.0})
    found = 0
    for seed in seeds:
        f = generate_field(q, condition="cytochalasin D", seed=seed)
        res = detect_tnts(
            f.image[2],
            voxel_size=f.voxel_size,
            msc_labels=f.labels["msc"],
            jurkat_labels=f.labels["jurkat"],
            psf_sigma_um=q.psf_sigma_um()[2],
        )
        found += res.n
    return len(seeds), found


#: Rows of the variation grid run by :func:`grid` (names of ``VARIATIONS``, plus a few
#: set here as parameter changes of the base).
GRID_ROWS = (
    "default",
    "brightness x0.5",
    "brightness x1.5",
    "noise x1.5",
    "psf x1.5",
    "voxel x1.5",
    "anisotropic",
    "vignetting",
    "bleed_through",
    "actin_rich_jurkat",
    "actin_rich_jurkat x5",
    "tnt_sloped",
    "tnt_long",
    "tnt_dim",
    "tnt_bright",
    "shallow_cut",
    "tilted_glass",
    "glass_high",
    "glass_low",
    "jurkat_only",
)

_EXTRA_ROWS = {
    "noise x1.5": ({"noise": 1.5}, {}),
    "actin_rich_jurkat x5": ({"jurkat_actin": 5.0, "adhesion_rate": 3.0}, {}),
    "glass_low": ({}, {"glass_z_um": 0.5}),
}


def row_params(name: str, base: SynthParams) -> SynthParams:
    """Parameters of grid row ``name`` on ``base``."""
    if name in _EXTRA_ROWS:
        scale, setting = _EXTRA_ROWS[name]
        p = base.varied(**scale) if scale else base
        return p.model_copy(update=setting) if setting else p
    from hcsmito.synth import variation_params

    return variation_params(name, base)


def glass_error(glass, f) -> float:
    """Largest |estimate - truth| (µm) of the glass height at the field centre and corners."""
    if glass is None or not np.isfinite(glass.z_um):
        return float("inf")
    s = f.summary
    ny, nx = f.image.shape[-2:]
    dy, dx = f.params.voxel_size[1:]
    yc, xc = 0.5 * (ny - 1) * dy, 0.5 * (nx - 1) * dx
    err = 0.0
    for y in (0.0, yc, 2 * yc):
        for x in (0.0, xc, 2 * xc):
            truth = s["glass_z_um"] + s.get("glass_slope_y", 0.0) * (y - yc)
            truth += s.get("glass_slope_x", 0.0) * (x - xc)
            err = max(err, abs(float(glass.at(y, x)) - truth))
    return err


def grid(base: SynthParams, rows, seeds, conditions=("DMSO", "ara-C")) -> list[dict]:
    """One dict per row: fields, truth / found / matched TNTs, precision, recall, largest and
    median glass error, fields flagged glass_implausible."""
    out = []
    for name in rows:
        p = row_params(name, base)
        n_t = n_f = tp = flagged = n = 0
        errs = []
        t0 = time.perf_counter()
        for cond in conditions:
            for seed in seeds:
                f = generate_field(p, condition=cond, seed=seed)
                img = f.image
                msc = segment_msc(img[0], voxel_size=f.voxel_size).labels
                jur = segment_jurkat(img[1], voxel_size=f.voxel_size, msc_labels=msc).labels
                chans = {"msc": img[0], "mito": img[1], "actin": img[2]}
                res = detect_tnts(
                    img[2],
                    voxel_size=f.voxel_size,
                    msc_labels=msc,
                    jurkat_labels=jur,
                    mito=img[1],
                    msc_signal=img[0],
                    glass_channels=chans,
                )
                truth = f.tables["tnt"]
                n += 1
                n_t += len(truth)
                n_f += res.n
                tp += len(match_tnts(res.table, truth, tolerance_um=3.0))
                flagged += "glass_implausible" in res.flags
                errs.append(glass_error(res.glass, f))
        out.append(
            {
                "row": name,
                "fields": n,
                "truth": n_t,
                "found": n_f,
                "precision": tp / n_f if n_f else float("nan"),
                "recall": tp / n_t if n_t else float("nan"),
                "glass_err_max": float(np.max(errs)),
                "glass_err_median": float(np.median(errs)),
                "flagged": flagged,
                "s_per_field": (time.perf_counter() - t0) / max(n, 1),
            }
        )
        _print_grid_row(out[-1])
    return out


def _print_grid_header() -> None:
    print(
        f"{'row':22s} {'fields':>6s} {'truth':>5s} {'found':>5s} {'prec':>5s} {'recall':>6s} "
        f"{'glass max':>9s} {'glass med':>9s} {'flagged':>7s} {'s/field':>7s}"
    )


def _print_grid_row(r: dict) -> None:
    print(
        f"{r['row']:22s} {r['fields']:6d} {r['truth']:5d} {r['found']:5d} "
        f"{r['precision']:5.2f} {r['recall']:6.2f} {r['glass_err_max']:9.2f} "
        f"{r['glass_err_median']:9.2f} {r['flagged']:7d} {r['s_per_field']:7.1f}",
        flush=True,
    )


def _print(title: str, r: dict) -> None:
    print(title)
    for k, v in r.items():
        print(f"  {k:28s} {v:.3f}" if isinstance(v, float) else f"  {k:28s} {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--shape", default="24,256,256")
    ap.add_argument("--no-variations", action="store_true", help="skip the varied-parameter runs")
    ap.add_argument("--grid-only", action="store_true", help="only the variation grid table")
    ap.add_argument("--grid-seeds", type=int, default=3, help="seeds per condition and row")
    ap.add_argument("--rows", default=None, help="comma-separated grid rows (default: all)")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    p = SynthParams(shape=shape, n_msc=2, n_jurkat=6)
    rows = GRID_ROWS if args.rows is None else tuple(args.rows.split(","))
    print(f"== variation grid: base shape {shape}, 2 MSCs, 6 Jurkats; segmented cells, defaults")
    _print_grid_header()
    grid(p, rows, range(400, 400 + args.grid_seeds))
    n, found = control(p, list(range(300, 300 + 2 * args.seeds)))
    print(f"{'stress-fibre control':22s} {n:6d} fields, {found} TNTs (TNT rate 0, 20 fibres/MSC)")
    if args.grid_only:
        return
    seeds = range(100, 100 + args.seeds)
    for segmented in (False, True):
        name = "segmented cells" if segmented else "truth cell labels"
        r = evaluate(p, CONDITIONS, seeds, segmented=segmented)
        _print(f"== {name}: shape {shape}, conditions {CONDITIONS}, seeds {list(seeds)}", r)
    n, found = control(p, list(range(300, 300 + 2 * args.seeds)))
    print(f"== stress fibres + cortex only (TNT rate 0, 20 fibres/MSC): {found} TNTs in {n} fields")
    if not args.no_variations:
        for var in ({"brightness": 0.5}, {"noise": 2.0}, {"psf_width": 1.3}, {"tnt_width": 0.7}):
            r = evaluate(p.varied(**var), ("DMSO", "ara-C"), range(200, 203), segmented=False)
            _print(f"== truth cell labels, varied {var}", r)


if __name__ == "__main__":
    main()
