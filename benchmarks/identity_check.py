"""Outputs before and after a refactor, compared exactly (issue 12's "done when").

    python benchmarks/identity_check.py plates DIR     # demo layout + a plate per variation
    PYTHONPATH=OLD_TREE python benchmarks/identity_check.py run DIR REF_OUT
    python benchmarks/identity_check.py run DIR NEW_OUT
    python benchmarks/identity_check.py compare REF_OUT NEW_OUT

``plates`` writes a small demo-layout plate (10 wells, 1 field, 16x160x160) and, for each
entry of ``hcsmito.synth.VARIATIONS``, a two-well plate of that variation. ``run`` processes
each plate into ``OUT/<stem>`` (threads, one worker, CPU). ``compare`` checks every Parquet
table with ``assert_frame_equal(check_exact=True)`` and every array of ``labels.zarr`` for
equality (timings and the manifest are not compared). Run the reference from a checkout of
the old commit (``git archive OLD | tar -x -C OLD_TREE``) so that nobody's later commits
enter the comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def write_plates(root: Path) -> None:
    from hcsmito.synth import VARIATIONS, SynthParams, variation_params, write_synth_plate

    root.mkdir(parents=True, exist_ok=True)
    base = SynthParams(shape=(16, 160, 160))
    write_synth_plate(root / "demo.zarr", seed=0, fields=1, params=base, overwrite=True)
    for i, name in enumerate(VARIATIONS):
        if name == "default":
            continue
        stem = "v_" + "".join(c if c.isalnum() else "_" for c in name)
        wells = {"B/2": "DMSO", "B/3": "MTX"}
        params = variation_params(name, base)
        write_synth_plate(root / f"{stem}.zarr", seed=i, wells=wells, fields=1, params=params,
                          overwrite=True)  # fmt: skip


def run_plates(plates: Path, out_root: Path) -> None:
    from hcsmito.config import load_config
    from hcsmito.runner import run_plate

    for p in sorted(plates.glob("*.zarr")):
        stem = p.name[: -len(".zarr")]
        s = run_plate(p, out_root / stem, config=load_config(),
                      plate_map=plates / f"{stem}_platemap.csv", scheduler="threads", workers=1,
                      backend="cpu", overwrite=True, progress=False)  # fmt: skip
        print(stem, "failed:", s.failed or "none", f"{s.wall_s:.1f} s")


def _arrays(group) -> dict:
    import zarr

    return {k: v for k, v in group.members(max_depth=None) if isinstance(v, zarr.Array)}


def compare(a: Path, b: Path) -> int:
    import zarr
    from pandas.testing import assert_frame_equal

    bad = n = 0
    for outa in sorted(p for p in a.iterdir() if p.is_dir()):
        outb = b / outa.name
        names = sorted(p.name for p in (outa / "tables").glob("*.parquet"))
        names_b = sorted(p.name for p in (outb / "tables").glob("*.parquet"))
        # a table declared since (e.g. nuclei, issue 15) is no difference while it is empty
        gained = [x for x in names_b if x not in names]
        new_rows = [x for x in gained if len(pd.read_parquet(outb / "tables" / x))]
        for x in sorted(set(gained) - set(new_rows)):
            print(outa.name, x, "new table, empty")
        if new_rows or any(x not in names_b for x in names):
            bad += 1
            print(outa.name, "the sets of tables differ", new_rows)
        for name in names:
            if not (outb / "tables" / name).exists():
                continue
            n += 1
            ta, tb = (pd.read_parquet(o / "tables" / name) for o in (outa, outb))
            if ta.shape == (0, 0) and len(tb) == 0 and len(tb.columns):
                print(outa.name, name, "empty: gained its declared columns")  # issue 12
                continue
            try:
                assert_frame_equal(ta, tb, check_exact=True)
            except AssertionError as exc:
                bad += 1
                print(outa.name, name, str(exc)[:300])
        za = zarr.open_group(str(outa / "labels.zarr"), mode="r")
        zb = zarr.open_group(str(outb / "labels.zarr"), mode="r")
        for key, arr in _arrays(za).items():
            n += 1
            try:
                other = zb[key]
            except KeyError:
                bad += 1
                print(outa.name, "labels.zarr", key, "missing")
                continue
            if arr.dtype != other.dtype or not np.array_equal(arr[...], other[...]):
                bad += 1
                print(outa.name, "labels.zarr", key, "differs")
    print(f"compared {n} tables and arrays: {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "plates":
        write_plates(Path(args[0]))
    elif cmd == "run":
        run_plates(Path(args[0]), Path(args[1]))
    elif cmd == "compare":
        sys.exit(compare(Path(args[0]), Path(args[1])))
    else:
        sys.exit(__doc__)
