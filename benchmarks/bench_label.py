"""Connected-component labelling: which implementation is fastest on foci-like masks?

    python benchmarks/bench_label.py [--quick] [--gpu] [--json OUT]

Compares, in one run on the same masks (2-D 2048², 3-D 64×1024×1024 of sparse blobs):
``scipy.ndimage.label``, ``skimage.measure.label``, ``cc3d.connected_components``
(connected-components-3d, when installed) and, with ``--gpu``,
``cupyx.scipy.ndimage.label`` (absolute times with the card name). Each result is checked
against ``skimage.measure.label`` up to renumbering. Times are the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from bench_morphometry import best_of  # same folder: run as python benchmarks/bench_label.py
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def blob_mask(shape, n_objects, seed=0, radius=2.0):
    """Sparse mask of ~n_objects small blobs (foci-like): random points grown by a ball."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    idx = tuple(rng.integers(0, s, n_objects) for s in shape)
    mask[idx] = True
    return ndi.distance_transform_edt(~mask) <= radius if mask.size <= 1 << 23 else _grow(mask)


def _grow(mask):
    # big 3-D images: a small binary dilation is cheaper than an exact distance transform
    return ndi.binary_dilation(mask, ndi.generate_binary_structure(mask.ndim, 1), iterations=2)


def same_partition(a, b) -> bool:
    if not np.array_equal(a == 0, b == 0):
        return False
    fg = a != 0
    pairs = np.unique(np.stack([a[fg].astype(np.int64), b[fg].astype(np.int64)]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller 3-D image (16 planes)")
    ap.add_argument("--gpu", action="store_true", help="also time cupyx.scipy.ndimage.label")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    import skimage.measure as skm

    try:
        import cc3d
    except ImportError:
        cc3d = None
    cases = [("2d", (2048, 2048), 20_000), ("3d", (16 if args.quick else 64, 1024, 1024), 50_000)]
    results = {"machine": platform.processor() or platform.machine(), "cases": []}
    gpu = None
    if args.gpu:
        from hcsmito.backend import get_backend

        try:
            gpu = get_backend("gpu")
            results["gpu"] = gpu.device
        except Exception as exc:  # keep the CPU numbers
            results["gpu_error"] = str(exc)
    for name, shape, n in cases:
        mask = blob_mask(shape, n)
        conn = len(shape)
        ref = skm.label(mask, connectivity=conn)
        row = {"case": name, "shape": shape, "n_labels": int(ref.max()), "seconds": {}}
        structure = ndi.generate_binary_structure(len(shape), conn)
        impls = {
            "scipy.ndimage.label": lambda m=mask, s=structure: ndi.label(
                m, structure=s, output=np.int32
            )[0],
            "skimage.measure.label": lambda m=mask, c=conn: skm.label(m, connectivity=c),
        }
        if cc3d is not None:
            cc_conn = 8 if len(shape) == 2 else 26
            impls["cc3d.connected_components"] = lambda m=mask, c=cc_conn: (
                cc3d.connected_components(m, connectivity=c)
            )
        for impl, fn in impls.items():
            t, out = best_of(fn, args.repeat)
            assert same_partition(out, ref), impl
            row["seconds"][impl] = t
        if gpu is not None:
            from cupyx.scipy import ndimage as cndi

            dmask = gpu.asarray(mask)
            t, out = best_of(
                lambda d=dmask, s=structure: cndi.label(d, structure=s)[0],
                args.repeat,
                gpu.synchronize,
            )
            assert same_partition(gpu.to_host(out), ref)  # device->host: check only
            row["seconds"]["cupyx.scipy.ndimage.label"] = t
        results["cases"].append(row)
        print(f"{name} {shape} labels={row['n_labels']}")
        for impl, t in row["seconds"].items():
            print(f"  {impl:32s} {t * 1e3:9.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
