"""Cost of each stage of one field, per voxel, against the cost of reading it (issue 16).

A synthetic plate of one field per shape is written (3 channels × Z × Y × X, uint16, the
generator's co-culture scaled to the field), or an existing plate is read with
``--plate``. Each field is processed in a fresh child process, as a worker would: read from
zarr, then :func:`hcsmito.pipeline.process_field` with the default configuration. Reported
per stage:

- µs per field voxel (Z·Y·X: one voxel of every channel), and the stage as a multiple of
  two reference passes over the same data: reading the field from zarr, and one Gaussian
  filter (σ 1 µm) of one channel;
- peak host memory above the stage's start, bytes per field voxel (:mod:`tracemalloc`,
  which sees NumPy's arrays; a second child, as tracing slows allocation down);
- the child's peak RSS over the whole field, bytes per field voxel.

Run::

    python benchmarks/bench_field.py                        # 40×1024×1024
    python benchmarks/bench_field.py --shapes 40,1024,1024 40,2048,2048 --json out.json
    python benchmarks/bench_field.py --plate P.zarr --well B/2 --field 0
    python benchmarks/bench_field.py --backend gpu          # GPU (name the card in RESULTS)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _child(plate: str, well: str, field: int, backend: str, trace: bool) -> dict:
    """Read one field and process it; timings (and peaks) as JSON-ready numbers."""
    import numpy as np

    from hcsmito.backend import get_backend
    from hcsmito.config import Config, FieldConfig
    from hcsmito.io.plate import open_plate
    from hcsmito.pipeline import process_field
    from hcsmito.stages._util import gaussian

    cfg = Config()
    img = open_plate(plate).read_field(well, field)
    roles = img.resolve_roles(dict(cfg.channels))
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    channels = {r: img.read_channel(i) for r, i in roles.items() if i is not None}
    t_read = time.perf_counter() - t0
    vox = dict(img.voxel_size)
    b = get_backend(backend)
    one = b.asarray(channels["mito"])
    t0 = time.perf_counter()
    sp = [vox[a] for a in "zyx"[3 - one.ndim :]]
    gaussian(b, one, [1.0 / s for s in sp])
    b.synchronize()
    t_gauss = time.perf_counter() - t0
    del one
    t0 = time.perf_counter()
    res = process_field(channels, voxel_size=vox, config=FieldConfig.of(cfg), backend=b)
    t_field = time.perf_counter() - t0
    shape = next(iter(channels.values())).shape
    return {
        "shape": list(shape),
        "voxels": int(np.prod(shape)),
        "read_s": t_read,
        "gaussian_s": t_gauss,
        "field_s": t_field,
        "stages_s": res.timings,
        "peak_bytes": res.peak_bytes,
        "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n": {k: len(v) for k, v in res.tables.items()},
    }


def _run_child(plate: Path, well: str, field: int, backend: str, trace: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(plate), "--well", well, "--field", str(field)]
    cmd += ["--backend", backend] + (["--trace"] if trace else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _plate_for(shape: tuple[int, int, int], root: Path) -> Path:
    from hcsmito.synth import SynthParams, write_synth_plate

    z, y, x = shape
    # the base field is 256² with 3 MSCs and 5 donors: keep the density
    scale = (y * x) / (256 * 256)
    params = SynthParams(shape=shape, n_msc=max(1, round(3 * scale)),
                         n_jurkat=max(1, round(5 * scale)))  # fmt: skip
    path = root / f"f_{z}x{y}x{x}.zarr"
    write_synth_plate(path, seed=0, wells={"B/2": "DMSO"}, fields=1, params=params)
    return path


def report(r: dict) -> str:
    n = r["voxels"]
    read_us, gauss_us = 1e6 * r["read_s"] / n, 1e6 * r["gaussian_s"] / n
    lines = [
        f"field {'×'.join(map(str, r['shape']))} ({n / 1e6:.0f} M voxels), "
        f"{r['backend']}: {r['field_s']:.1f} s, peak RSS {r['rss_bytes'] / n:.0f} B/voxel "
        f"({r['rss_bytes'] / 2**30:.2f} GiB); read {read_us:.3f} µs/voxel, one Gaussian "
        f"{gauss_us:.3f} µs/voxel",
        "",
        "| stage | s | µs/voxel | × read | × Gaussian | peak B/voxel |",
        "|---|---|---|---|---|---|",
    ]
    for k, s in sorted(r["stages_s"].items(), key=lambda kv: -kv[1]):
        us = 1e6 * s / n
        peak = r.get("peak_bytes", {}).get(k)
        lines.append(
            f"| {k} | {s:.2f} | {us:.3f} | {us / read_us:.1f} | {us / gauss_us:.1f} | "
            f"{'–' if peak is None else f'{peak / n:.0f}'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["40,1024,1024"], help="Z,Y,X per field")
    ap.add_argument("--plate", help="an existing plate instead of generated fields")
    ap.add_argument("--well", default="B/2")
    ap.add_argument("--field", type=int, default=0)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc pass")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.well, args.field, args.backend, args.trace)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plates = (
            [Path(args.plate)]
            if args.plate
            else [_plate_for(tuple(int(v) for v in s.split(",")), Path(tmp)) for s in args.shapes]
        )
        for plate in plates:
            r = _run_child(plate, args.well, args.field, args.backend, trace=False)
            if not args.no_trace:
                r["peak_bytes"] = _run_child(
                    plate, args.well, args.field, args.backend, trace=True
                )["peak_bytes"]
            r.update(backend=args.backend, machine=platform.processor() or platform.machine())
            results.append(r)
            print(report(r), "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
