"""``hcsmito demo``: generate a small synthetic plate and run everything on it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_demo"]


def run_demo(out: Path, *, backend: str | None = None, seed: int = 0) -> int:
    """Write ``out/demo.zarr`` (with plate map and truth), process it into ``out/results``.

    Prints, per field, what was measured next to the generator's truth. Returns the exit
    code (non-zero when a field failed).
    """
    from hcsmito.io.rundir import RunDir
    from hcsmito.runner import run_plate
    from hcsmito.synth import read_truth, write_synth_plate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plate = out / "demo.zarr"
    if not plate.exists():
        print(f"generating the demo plate {plate} (seed {seed}) ...")
        write_synth_plate(plate, seed=seed, fields=1)
    platemap = out / "demo_platemap.csv"
    results = out / "results"
    summary = run_plate(plate, results, plate_map=platemap, backend=backend)
    rd = RunDir(results)
    measured = rd.read_table("fields")
    truth = read_truth(plate)["fields"]
    cols = ["n_msc", "n_foci", "n_jurkat"]
    both = measured.merge(truth, on=["well", "field"], suffixes=("", "_truth"))
    show = ["well", "field", "condition"] + [c for col in cols for c in (col, f"{col}_truth")]
    print("\nmeasured vs truth per field:")
    print(both[[c for c in show if c in both.columns]].to_string(index=False))
    print(f"\nresults: {results} (tables/, labels.zarr, qc/, manifest.json)")
    report = rd.report_path
    if report.exists():
        print(f"report: {report}")
    return 1 if summary.failed else 0
