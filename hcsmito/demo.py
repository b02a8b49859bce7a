"""``hcsmito demo``: generate a small synthetic plate and run everything on it.

The demo plate is the protection half of the assay on a co-culture plate: one column per
condition of :data:`DEMO_CONDITIONS` (vehicle, chemotherapy, and chemotherapy with the
contact blocked), two wells each, with a nuclear stain and an annexin V channel beside
GFP, MitoTracker and phalloidin. The demo prints, per field, the counts measured next to
the generator's truth, and per condition the share of apoptotic Jurkat cells measured
(annexin V+, and the stain-free nuclear-morphology proxy) next to the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["DEMO_CONDITIONS", "fate_by_condition", "run_demo"]

#: The demo plate's conditions, one plate column each (two wells): the vehicle,
#: chemotherapy (MSC contact protects the Jurkat cells), and chemotherapy with the
#: protection cancelled (actin or adhesion blocked; also less transfer).
DEMO_CONDITIONS = ("DMSO", "ara-C", "ara-C + cytochalasin D", "ara-C + anti-ICAM-1")

#: Per-field counts printed next to the truth (those the run measured).
_COUNTS = ("n_msc", "n_foci", "n_jurkat", "n_jurkat_apoptotic")
#: Measured per-condition shares of apoptotic Jurkat cells: (readout, column title).
_FATE = (
    ("pct_jurkat_annexin_positive", "% annexin V+"),
    ("pct_jurkat_apoptotic", "% apoptotic (nuclei, proxy)"),
)


def run_demo(
    out: Path,
    *,
    backend: str | None = None,
    seed: int = 0,
    shape: Sequence[int] | None = None,
) -> int:
    """Write ``out/demo.zarr`` (with plate map and truth), process it into ``out/results``.

    Prints, per field, what was measured next to the generator's truth, and per condition
    the share of apoptotic Jurkat cells (:func:`fate_by_condition`). A plate already in
    ``out`` is used as it is. ``shape``: the fields' shape (default the generator's,
    24 x 384 x 384). Returns the exit code (non-zero when a field failed).
    """
    from hcsmito.io.rundir import RunDir
    from hcsmito.runner import run_plate
    from hcsmito.synth import SynthParams, read_truth, write_synth_plate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plate = out / "demo.zarr"
    if not plate.exists():
        print(f"generating the demo plate {plate} (seed {seed}) ...")
        params = SynthParams(nuclear_channel=True, annexin_channel=True)
        write_synth_plate(plate, seed=seed, fields=1, shape=shape, params=params,
                          conditions=DEMO_CONDITIONS)  # fmt: skip
    platemap = out / "demo_platemap.csv"
    results = out / "results"
    summary = run_plate(plate, results, plate_map=platemap, backend=backend)
    rd = RunDir(results)
    measured = rd.read_table("fields")
    truth = read_truth(plate)["fields"]
    both = measured.merge(truth, on=["well", "field"], suffixes=("", "_truth"))
    show = ["well", "field", "condition"]
    show += [c for col in _COUNTS for c in (col, f"{col}_truth") if col in measured]
    print("\nmeasured vs truth per field:")
    print(both[[c for c in show if c in both.columns]].to_string(index=False))
    fate = fate_by_condition(measured, truth, pd.read_csv(platemap))
    if len(fate.columns) > 2:
        print(
            "\napoptotic Jurkat cells per condition (pooled over the condition's fields; "
            "truth: the generator's apoptotic cells):"
        )
        print(fate.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"\nresults: {results} (tables/, labels.zarr, qc/, manifest.json)")
    report = rd.report_path
    if report.exists():
        print(f"report: {report}")
    return 1 if summary.failed else 0


def fate_by_condition(
    measured: pd.DataFrame, truth: pd.DataFrame, plate_map: pd.DataFrame
) -> pd.DataFrame:
    """Per condition: Jurkat cells found, % annexin V+ and % apoptotic by nuclear
    morphology (the stain-free proxy) of the run's ``fields`` table, and the truth's %
    apoptotic Jurkat cells.

    Shares are pooled over the condition's ok fields (cells counted, then divided, as the
    readouts of :data:`hcsmito.aggregate.READOUTS` define them); a readout whose columns
    the run lacks (no such channel) is left out, and so is the truth without fates.

    Parameters
    ----------
    measured : DataFrame
        The run's ``fields`` table.
    truth : DataFrame
        The generator's ``fields`` truth (:func:`hcsmito.synth.read_truth`).
    plate_map : DataFrame
        ``well, condition``: the order of the rows.

    Returns
    -------
    DataFrame
        ``condition, n_jurkat`` and a column per share present, titled for printing.
    """
    from hcsmito.aggregate import READOUTS
    from hcsmito.io.names import plate_well

    pm = plate_map.assign(well=plate_map["well"].map(plate_well))[["well", "condition"]]
    ok = measured[measured["status"].astype("string").fillna("failed") == "ok"]
    m = ok.drop(columns=["condition"], errors="ignore").merge(pm, on="well")
    t = truth.drop(columns=["condition"], errors="ignore").merge(pm, on="well")
    t = t.merge(ok[["well", "field"]], on=["well", "field"])  # the fields measured
    order = list(dict.fromkeys(pm["condition"]))
    out = pd.DataFrame({"condition": order})
    out["n_jurkat"] = out["condition"].map(m.groupby("condition")["n_jurkat"].sum())
    out["n_jurkat"] = out["n_jurkat"].fillna(0).astype(int)

    def pooled(df: pd.DataFrame, num: str, den: str) -> pd.Series:
        g = df.groupby("condition")[[num, den]].sum()
        return out["condition"].map(100.0 * g[num] / g[den].where(g[den] > 0))

    for name, title in _FATE:
        r = READOUTS.get(name)
        if r is not None and {r.num, r.den} <= set(m.columns):
            out[title] = pooled(m, r.num, r.den)
    if len(out.columns) > 2 and "n_jurkat_apoptotic" in t:
        out["% apoptotic (truth)"] = pooled(t, "n_jurkat_apoptotic", "n_jurkat")
    return out
