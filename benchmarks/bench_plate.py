"""Whole-plate throughput: fields per second for a plate of realistic fields, read from
zarr and written to OUT by the runner, as a batch job runs it (issue 16).

One co-culture field is generated at the given shape (the generator's density scaled to
it: 3 MSCs and 5 donor cells per 256² of 0.3 µm pixels); the plate holds it in every
field, each copy rolled laterally by its own offset (the same work per field, different
positions; generating each field would cost more than processing it). The plate is
written once (uint16, the writer's chunks), a one-field warm-up run pays the one-time
costs (imports, the GPU's kernel compilation), then the whole plate is run with
:func:`hcsmito.runner.run_plate` into a fresh OUT and timed end to end: reading,
every stage, writing the tables and label images.

Run::

    python benchmarks/bench_plate.py --backend gpu --fields 12 --json plate_gpu.json
    python benchmarks/bench_plate.py --shape 16,256,256 --fields 4       # a quick CPU check

It prints seconds per field and what a 96-well x 9-field plate would take at that rate
(issue 16's target on one H100/H200: under 20 minutes, i.e. <= 1.4 s per field).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

PLATE_FIELDS = 96 * 9
TARGET_S_PER_FIELD = 1.4


def write_plate(root: Path, shape: tuple[int, int, int], fields: int, seed: int = 0) -> Path:
    """A plate of ``fields`` fields (one well per 4 fields), each a rolled copy of one
    generated field."""
    from hcsmito.io.writer import create_plate, write_image
    from hcsmito.synth import SynthParams, generate_field

    z, y, x = shape
    scale = (y * x) / (256 * 256)
    params = SynthParams(shape=shape, n_msc=max(1, round(3 * scale)),
                         n_jurkat=max(1, round(5 * scale)))  # fmt: skip
    f = generate_field(params, "ara-C", seed=seed)
    per_well = 4
    wells = [f"B/{2 + i}" for i in range((fields + per_well - 1) // per_well)]
    path = root / "plate.zarr"
    counts = {w: min(per_well, fields - i * per_well) for i, w in enumerate(wells)}
    create_plate(path, wells=wells, fields_per_well=counts)
    rng = np.random.default_rng(seed)
    for w, n in counts.items():
        for k in range(n):
            dy, dx = (int(v) for v in rng.integers(0, [y, x]))
            data = np.roll(f.image, (dy, dx), axis=(-2, -1))
            write_image(path, w, k, data, axes="czyx", voxel_size=f.voxel_size,
                        channel_labels=f.channel_labels)  # fmt: skip
    return path


def device_name(backend: str) -> str:
    """The card (GPU) or the processor (CPU) the run used."""
    if backend == "gpu":
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            return props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        except Exception as exc:  # the run itself would have failed first
            return f"GPU ({exc})"
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="40,1024,1024", help="Z,Y,X of each field")
    ap.add_argument("--fields", type=int, default=12, help="fields of the plate")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from hcsmito.runner import run_plate

    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        plate = write_plate(root, shape, args.fields)
        t_write = time.perf_counter() - t0
        kw = dict(backend=args.backend, scheduler=args.scheduler, workers=args.workers,
                  progress=False, report=False)  # fmt: skip
        t0 = time.perf_counter()
        warm = run_plate(plate, root / "warm", wells=["B/2"], **kw)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = run_plate(plate, root / "out", **kw)
        t_run = time.perf_counter() - t0
        ok = bool(s.ok and warm.ok and len(s.processed) == args.fields)
    per_field = t_run / args.fields
    res = {
        "backend": args.backend,
        "device": device_name(args.backend),
        "shape": list(shape),
        "fields": args.fields,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "ok": ok,
        "seconds_plate_written": round(t_write, 1),
        "seconds_warm_up_well": round(t_warm, 1),
        "seconds_run": round(t_run, 2),
        "seconds_per_field": round(per_field, 3),
        "fields_per_second": round(args.fields / t_run, 3),
        "minutes_96x9_plate": round(per_field * PLATE_FIELDS / 60, 1),
        "target_met": per_field <= TARGET_S_PER_FIELD,
    }
    print(
        f"{args.fields} fields of 3 x {' x '.join(map(str, shape))} on {res['device']} "
        f"({args.backend}, {args.workers} {args.scheduler} worker(s)): {t_run:.1f} s, "
        f"{per_field:.2f} s per field -> a 96 x 9 plate in {res['minutes_96x9_plate']} min "
        f"(target {TARGET_S_PER_FIELD} s per field, 20 min: "
        f"{'met' if res['target_met'] else 'not met'}); outputs ok: {ok}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
