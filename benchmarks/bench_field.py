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

Side by side (``--baseline REF``): the same field is processed by the code of a git commit
(checked out into a temporary worktree) or of a source tree (a path), and by this
checkout, each in its own child processes (``PYTHONPATH`` set to the tree), alternately
``--repeat`` times (the least time of each stage is kept); the per-stage table gains the
ratio baseline / current, and the output tables and label images of the two are compared
exactly (which differ is printed). ``--clock cpu`` times with the process' CPU time (a
shared machine: other jobs' load inflates wall time, not CPU time; the stages are
single-threaded).

Run::

    python benchmarks/bench_field.py                        # 40×1024×1024
    python benchmarks/bench_field.py --shapes 40,1024,1024 40,2048,2048 --json out.json
    python benchmarks/bench_field.py --plate P.zarr --well B/2 --field 0
    python benchmarks/bench_field.py --backend gpu          # GPU (name the card in RESULTS)
    python benchmarks/bench_field.py --baseline eeb6a30 --shapes 40,512,512 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _child(
    plate: str,
    well: str,
    field: int,
    backend: str,
    trace: bool,
    clock: str = "wall",
    dump: str | None = None,
) -> dict:
    """Read one field and process it; timings (and peaks) as JSON-ready numbers. With
    ``dump``, the tables and label images are pickled there."""
    import numpy as np

    import hcsmito.pipeline.prepare as prepare_mod
    from hcsmito.backend import get_backend
    from hcsmito.config import Config, FieldConfig
    from hcsmito.io.plate import open_plate
    from hcsmito.pipeline import process_field
    from hcsmito.stages._util import gaussian

    if clock == "cpu":
        # the stages' timer reads the process' CPU time (the same Timer in every version)
        time.perf_counter = time.process_time
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
    if dump:
        with open(dump, "wb") as f:
            pickle.dump({"tables": res.tables, "labels": res.labels}, f)
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
        "hcsmito": str(Path(prepare_mod.__file__).parents[2]),
    }


def _run_child(
    plate: Path,
    well: str,
    field: int,
    backend: str,
    trace: bool,
    *,
    tree: Path | None = None,
    clock: str = "wall",
    dump: Path | None = None,
) -> dict:
    """One child process; ``tree``: the source tree whose ``hcsmito`` it imports."""
    cmd = [sys.executable, __file__, "--child", str(plate), "--well", well, "--field", str(field)]
    cmd += ["--backend", backend, "--clock", clock] + (["--trace"] if trace else [])
    cmd += ["--dump", str(dump)] if dump else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree or _HERE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


_HERE = Path(__file__).resolve().parent


def _baseline_tree(ref: str, root: Path) -> tuple[Path, str]:
    """The source tree of ``ref``: a path as it is, or a git commit checked out (detached)
    into a worktree under ``root``; and what it is, for the report."""
    path = Path(ref)
    if (path / "hcsmito").is_dir():
        return path.resolve(), str(path.resolve())
    repo = _HERE.parent
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", ref], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    tree = root / f"baseline_{sha}"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), sha],
                   check=True, capture_output=True)  # fmt: skip
    return tree, f"commit {sha}"


def _drop_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(_HERE.parent), "worktree", "remove", "--force", str(tree)],
                   capture_output=True)  # fmt: skip


def _same_outputs(a: Path, b: Path) -> list[str]:
    """What differs between two dumped results: tables (exact) and label images."""
    import numpy as np
    import pandas as pd

    with open(a, "rb") as f:
        ra = pickle.load(f)
    with open(b, "rb") as f:
        rb = pickle.load(f)
    diff = []
    for k in sorted(set(ra["tables"]) | set(rb["tables"])):
        if k not in ra["tables"] or k not in rb["tables"]:
            t, side = (ra, "baseline") if k in ra["tables"] else (rb, "current")
            if len(t["tables"][k]):  # a table one version does not write: only rows count
                diff.append(f"table {k}: only in the {side} ({len(t['tables'][k])} rows)")
            continue
        try:
            pd.testing.assert_frame_equal(ra["tables"][k], rb["tables"][k], check_exact=True)
        except AssertionError as e:
            diff.append(f"table {k}: {str(e).splitlines()[0]}")
    for k in sorted(set(ra["labels"]) | set(rb["labels"])):
        la, lb = ra["labels"].get(k), rb["labels"].get(k)
        if la is None or lb is None or la.shape != lb.shape or not np.array_equal(la, lb):
            n = "?" if la is None or lb is None or la.shape != lb.shape else int((la != lb).sum())
            diff.append(f"labels {k}: {n} voxels differ")
    return diff


def _least(runs: list[dict]) -> dict:
    """One result from repeats: the least time of each stage and of the field."""
    out = dict(runs[0])
    for key in ("read_s", "gaussian_s", "field_s"):
        out[key] = min(r[key] for r in runs)
    out["stages_s"] = {k: min(r["stages_s"].get(k, float("inf")) for r in runs)
                       for k in runs[0]["stages_s"]}  # fmt: skip
    out["rss_bytes"] = max(r["rss_bytes"] for r in runs)
    return out


def _plate_for(shape: tuple[int, int, int], root: Path) -> Path:
    """The plate of one generated field, written by a child process: a parent that held
    the generator's arrays would pass its peak RSS on to every child it starts (Linux
    keeps ``ru_maxrss`` across fork and exec), and each field's RSS would read it."""
    path = root / f"f_{shape[0]}x{shape[1]}x{shape[2]}.zarr"
    cmd = [sys.executable, __file__, "--write-plate", ",".join(map(str, shape)), str(path)]
    subprocess.run(cmd, check=True)
    return path


def _write_plate(shape: tuple[int, int, int], path: Path) -> None:
    from hcsmito.synth import SynthParams, write_synth_plate

    z, y, x = shape
    # the base field is 256² with 3 MSCs and 5 donors: keep the density
    scale = (y * x) / (256 * 256)
    params = SynthParams(shape=shape, n_msc=max(1, round(3 * scale)),
                         n_jurkat=max(1, round(5 * scale)))  # fmt: skip
    write_synth_plate(path, seed=0, wells={"B/2": "DMSO"}, fields=1, params=params)


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


def report_side_by_side(base: dict, cur: dict, base_name: str, diff: list[str]) -> str:
    """Per stage: baseline and current µs/voxel, their ratio, peak bytes per voxel and the
    multiple of one Gaussian (each run's own)."""
    n = cur["voxels"]
    g_b, g_c = base["gaussian_s"] / n * 1e6, cur["gaussian_s"] / n * 1e6
    lines = [
        f"field {'×'.join(map(str, cur['shape']))} ({n / 1e6:.0f} M voxels), {cur['backend']}, "
        f"clock {cur['clock']}: baseline ({base_name}) {base['field_s']:.1f} s, current "
        f"{cur['field_s']:.1f} s: {base['field_s'] / cur['field_s']:.2f}x; peak RSS "
        f"{base['rss_bytes'] / n:.0f} -> {cur['rss_bytes'] / n:.0f} B/voxel; one Gaussian "
        f"{g_b:.3f} / {g_c:.3f} µs/voxel",
        "outputs: " + ("tables and labels identical" if not diff else "; ".join(diff)),
        "",
        "| stage | baseline µs/voxel | current µs/voxel | baseline / current | "
        "× Gaussian (base → cur) | peak B/voxel (base → cur) |",
        "|---|---|---|---|---|---|",
    ]
    stages = sorted(set(base["stages_s"]) | set(cur["stages_s"]),
                    key=lambda k: -base["stages_s"].get(k, 0.0))  # fmt: skip
    for k in stages + ["field"]:
        sb = base["field_s"] if k == "field" else base["stages_s"].get(k)
        sc = cur["field_s"] if k == "field" else cur["stages_s"].get(k)
        if sb is None or sc is None:
            continue
        ub, uc = 1e6 * sb / n, 1e6 * sc / n
        pb = base.get("peak_bytes", {}).get(k)
        pc = cur.get("peak_bytes", {}).get(k)
        peak = "–" if pb is None or pc is None else f"{pb / n:.0f} → {pc / n:.0f}"
        ratio = f"{ub / uc:.2f}" if uc > 0 else "–"
        lines.append(f"| {k} | {ub:.3f} | {uc:.3f} | {ratio} | {ub / g_b:.1f} → {uc / g_c:.1f} "
                     f"| {peak} |")  # fmt: skip
    return "\n".join(lines)


def _side_by_side(plate: Path, args, tmp: Path) -> dict:
    tree, name = _baseline_tree(args.baseline, tmp)
    try:
        runs: dict[str, list] = {"base": [], "cur": []}
        dumps = {"base": tmp / "base.pkl", "cur": tmp / "cur.pkl"}
        for i in range(args.repeat):
            for who, t in (("base", tree), ("cur", None)):
                runs[who].append(_run_child(plate, args.well, args.field, args.backend, False,
                                            tree=t, clock=args.clock,
                                            dump=dumps[who] if i == 0 else None))  # fmt: skip
        res = {who: _least(r) for who, r in runs.items()}
        if not args.no_trace:
            for who, t in (("base", tree), ("cur", None)):
                res[who]["peak_bytes"] = _run_child(plate, args.well, args.field, args.backend,
                                                    True, tree=t)["peak_bytes"]  # fmt: skip
        diff = _same_outputs(dumps["base"], dumps["cur"])
        # each side imported its own tree
        assert Path(res["base"]["hcsmito"]).resolve() == tree.resolve(), res["base"]["hcsmito"]
        assert Path(res["cur"]["hcsmito"]).resolve() == _HERE.parent, res["cur"]["hcsmito"]
    finally:
        if tree.parent == tmp:
            _drop_tree(tree)
    for r in res.values():
        r.update(backend=args.backend, clock=args.clock,
                 machine=platform.processor() or platform.machine())  # fmt: skip
    print(report_side_by_side(res["base"], res["cur"], name, diff), "\n", flush=True)
    return {"baseline": name, "base": res["base"], "current": res["cur"], "differences": diff}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["40,1024,1024"], help="Z,Y,X per field")
    ap.add_argument("--plate", help="an existing plate instead of generated fields")
    ap.add_argument("--well", default="B/2")
    ap.add_argument("--field", type=int, default=0)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc pass")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--baseline", help="side by side with this git commit or source tree")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side (least kept)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="stage times: wall clock, or the process' CPU time")  # fmt: skip
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    ap.add_argument("--write-plate", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_plate:
        _write_plate(tuple(int(v) for v in args.write_plate[0].split(",")),
                     Path(args.write_plate[1]))  # fmt: skip
        return
    if args.child:
        r = _child(args.child, args.well, args.field, args.backend, args.trace, args.clock,
                   args.dump)  # fmt: skip
        print(json.dumps(r))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plates = (
            [Path(args.plate)]
            if args.plate
            else [_plate_for(tuple(int(v) for v in s.split(",")), Path(tmp)) for s in args.shapes]
        )
        for plate in plates:
            if args.baseline:
                results.append(_side_by_side(plate, args, Path(tmp)))
                continue
            r = _run_child(plate, args.well, args.field, args.backend, trace=False,
                           clock=args.clock)  # fmt: skip
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
