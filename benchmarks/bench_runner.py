"""Batch runner throughput: fields per second on a synthetic plate, 1 and 2 workers.

For each scheduler and worker count, in one run on the same plate, this reports:

- fields per second (wall clock of ``run_plate``, fresh output folder each time);
- the share of wall time spent outside the stages: ``1 - Σ stage seconds / (wall × workers)``.
  The stage seconds come from the per-field timings in the manifest (deconvolution,
  segmentation, foci, morphometry). What is left over is scheduling, reading, writing,
  cluster start-up and idle workers;
- the mean stage seconds of each process' first field and of the later ones (a fresh
  process pays its lazy imports and first calls inside the first field's stages).

The tables of every configuration are checked against those of the first one before
anything is reported.

Usage::

    python benchmarks/bench_runner.py [--fields N] [--wells B/2,B/3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from hcsmito.runner import run_plate
from hcsmito.schema import field_tables
from hcsmito.synth import write_synth_plate

IO = ("read", "write")  # every other timing key of a field is a stage


def _one(plate: Path, out: Path, scheduler: str, workers: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    s = run_plate(
        plate,
        out,
        scheduler=scheduler,
        workers=workers,
        backend="cpu",
        progress=False,
        report=False,
    )
    wall = time.perf_counter() - t0
    assert s.ok, s.failed
    manifest = json.loads((out / "manifest.json").read_text())
    stage_s = sum(
        v for f in manifest["fields"] for k, v in (f["timings"] or {}).items() if k not in IO
    )
    io_s = sum(v for f in manifest["fields"] for k, v in (f["timings"] or {}).items() if k in IO)
    n = len(manifest["fields"])
    first, later = _first_and_later(out)
    return {
        "scheduler": scheduler,
        "workers": workers,
        "fields": n,
        "wall_s": wall,
        "fields_per_s": n / wall,
        "stage_s": stage_s,
        "read_write_s": io_s,
        "outside_stages_share": 1.0 - stage_s / (wall * workers),
        "first_field_stage_s": first,
        "later_field_stage_s": later,
    }


def _first_and_later(out: Path) -> tuple[float, float]:
    """Mean stage seconds of each process' first field (its lazy imports and first-call
    set-up are timed inside the stages) and of the other fields, from the ledger (pid,
    wall time, file time)."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for p in (out / "ledger").glob("*.json"):
        e = json.loads(p.read_text())
        stage = sum(v for k, v in (e.get("timings") or {}).items() if k not in IO)
        by_pid.setdefault(e["pid"], []).append((p.stat().st_mtime - e["wall_s"], stage))
    first, later = [], []
    for runs in by_pid.values():
        runs.sort()
        first.append(runs[0][1])
        later += [s for _, s in runs[1:]]
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return mean(first), mean(later)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=2, help="fields per well")
    ap.add_argument("--wells", default="B/2,B/3,B/4", help="wells of the synthetic plate")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plate = write_synth_plate(
            tmp / "bench.zarr", seed=0, wells=args.wells.split(","), fields=args.fields
        )
        rows = []
        ref = None
        for scheduler, workers in (("threads", 1), ("threads", 2), ("processes", 2)):
            out = tmp / f"out-{scheduler}-{workers}"
            rows.append(_one(plate, out, scheduler, workers))
            tables = {t: pd.read_parquet(out / "tables" / f"{t}.parquet") for t in field_tables()}
            if ref is None:
                ref = tables
            for t in field_tables():
                pd.testing.assert_frame_equal(tables[t], ref[t], check_exact=False, rtol=1e-6)
    df = pd.DataFrame(rows)
    print(f"machine: {platform.processor() or platform.machine()}, CPU backend")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
