"""Morphometry: hcsmito's regionprops_table vs scikit-image (CPU) and cuCIM (GPU).

    python benchmarks/bench_morphometry.py [--quick] [--gpu] [--no-cpu] [--json OUT]

One run, the same data and the same property set for every implementation: foci-like
blobs (radius 2 voxels, labelled, one uint16 channel) in a 2-D 2048² field and a 3-D
64×1024×1024 stack, 10³, 10⁴ and 10⁵ objects. Every table is checked against the
reference (scikit-image on the CPU, our CPU table on the GPU, rtol 1e-5) before it is timed.

CPU: ours vs ``skimage.measure.regionprops_table``; the ratio is the headline number. Ours
is warmed up once and timed ``--repeat`` times (best kept); scikit-image, which takes seconds
to minutes, is timed once.
Peak extra memory of ours (tracemalloc) is reported as a multiple of the label image.
``--quick`` uses 16 planes instead of 64 in 3-D and drops the 10⁵-object cases; what was
run is written into the results.

GPU (``--gpu``): ours on CuPy arrays (table back on the host included) vs cuCIM's
``regionprops_table`` when cuCIM is importable; absolute times with the card name, peak
extra device memory (CuPy memory pool) and the fraction of the memory-bandwidth floor,
(bytes of labels + channel read once) / (memoryClockRate × busWidth × 2).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hcsmito.measure import label, regionprops_table  # noqa: E402

PROPS_SKIMAGE = [
    "label",
    "area",
    "centroid",
    "bbox",
    "equivalent_diameter_area",
    "axis_major_length",
    "axis_minor_length",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
    "intensity_std",
    "centroid_weighted",
]
ATOL = {"axis_major_length": 1e-6, "axis_minor_length": 1e-6}


def make_case(shape, n_objects, seed=0, radius=2):
    """Labels of ~n_objects random balls (foci) and a uint16 channel, bright in the foci."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    r = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(*([r] * ndim), indexing="ij"), -1).reshape(-1, ndim)
    ball = grid[(grid**2).sum(1) <= radius * radius]
    centres = np.stack([rng.integers(0, s, n_objects) for s in shape], 1)
    pts = (centres[:, None, :] + ball[None]).reshape(-1, ndim)
    pts = pts[np.all((pts >= 0) & (pts < np.asarray(shape)), axis=1)]
    mask = np.zeros(shape, bool)
    mask[tuple(pts.T)] = True
    labels = label(mask)
    channel = rng.poisson(100, size=shape).astype(np.uint16)
    channel[mask] += rng.integers(200, 3000, size=int(mask.sum())).astype(np.uint16)
    return labels, channel


def best_of(fn, repeat, sync=lambda: None):
    times, out = [], None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), out


def check(got, want, what):
    for k, v in want.items():
        np.testing.assert_allclose(
            np.asarray(got[k], float),
            np.asarray(v, float),
            rtol=1e-5,
            atol=ATOL.get(k, 0),
            err_msg=f"{what}: {k}",
        )


def cpu_case(labels, channel, spacing, repeat, skimage_repeat):
    import skimage.measure as skm

    def ours():
        return regionprops_table(labels, channel, spacing=spacing, properties=PROPS_SKIMAGE)

    ours()  # warm-up (page faults, caches); then the best of the timed runs
    t_ours, table = best_of(ours, repeat)
    t_sk, ref = best_of(
        lambda: skm.regionprops_table(labels, channel, spacing=spacing, properties=PROPS_SKIMAGE),
        skimage_repeat,
    )
    check(table, ref, "ours vs skimage")
    t_all, _ = best_of(lambda: regionprops_table(labels, channel, spacing=spacing), repeat)
    tracemalloc.start()
    ours()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "ours_s": t_ours,
        "ours_all_properties_s": t_all,
        "skimage_s": t_sk,
        "ratio": t_sk / t_ours,
        "peak_extra_bytes": peak,
        "peak_extra_over_labels": peak / labels.nbytes,
    }, table


def gpu_bandwidth(cp):
    """Card name and peak memory bandwidth (B/s) from the device properties."""
    dev = cp.cuda.Device().id
    props = cp.cuda.runtime.getDeviceProperties(dev)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    clock = props.get("memoryClockRate")  # kHz (dropped from cudaDeviceProp in CUDA 13)
    bus = props.get("memoryBusWidth")  # bits
    if not clock:
        clock = cp.cuda.runtime.deviceGetAttribute(36, dev)  # cudaDevAttrMemoryClockRate
    if not bus:
        bus = cp.cuda.runtime.deviceGetAttribute(37, dev)  # cudaDevAttrGlobalMemoryBusWidth
    return name, clock * 1e3 * (bus / 8) * 2  # ×2: double data rate


def gpu_case(labels, channel, spacing, cpu_table, repeat, b):
    cp = b.xp
    out = {}
    pool = cp.get_default_memory_pool()
    d_lab = cp.asarray(labels)
    d_ch = cp.asarray(channel)
    b.synchronize()

    def ours():
        return regionprops_table(d_lab, d_ch, spacing=spacing, properties=PROPS_SKIMAGE)

    table = ours()  # compiles the kernels
    check(table, cpu_table, "GPU vs CPU")
    pool.free_all_blocks()
    base = pool.total_bytes()
    ours()
    out["peak_extra_bytes"] = int(pool.total_bytes() - base)
    out["peak_extra_over_labels"] = out["peak_extra_bytes"] / labels.nbytes
    out["ours_s"], _ = best_of(ours, repeat, b.synchronize)
    from hcsmito.measure._kernels import moments_gpu  # the fused kernels alone

    out["ours_kernels_s"], _ = best_of(
        lambda: moments_gpu(d_lab, [d_ch], {}, b), repeat, b.synchronize
    )
    name, bw = gpu_bandwidth(cp)
    floor = (labels.nbytes + channel.nbytes) / bw
    out.update(
        card=name, bandwidth_GBps=bw / 1e9, floor_s=floor, floor_fraction=floor / out["ours_s"]
    )
    try:
        from cucim.skimage.measure import regionprops_table as cu_rpt
    except Exception as exc:  # cuCIM absent: still report ours
        out["cucim"] = f"not importable ({type(exc).__name__}: {exc})"
        return out

    def cucim():
        try:
            return cu_rpt(
                d_lab, d_ch, spacing=spacing, properties=PROPS_SKIMAGE, batch_processing=True
            )
        except TypeError:  # older cuCIM: no batch_processing switch
            return cu_rpt(d_lab, d_ch, spacing=spacing, properties=PROPS_SKIMAGE)

    try:
        cu = cucim()  # warm-up: cuCIM compiles its kernels on the first call
        bad = []  # cuCIM's answer is checked, and timed even where it differs
        for k, v in cpu_table.items():
            got = np.asarray(b.to_host(cu[k]), float) if k in cu else None
            if got is None or not np.allclose(got, v, rtol=1e-5, atol=ATOL.get(k, 0)):
                bad.append(k)
        if bad:
            out["cucim_mismatch"] = bad
        t0 = time.perf_counter()
        cucim()
        b.synchronize()
        first = time.perf_counter() - t0
        if first > 10:  # slow: one run is all we can afford
            out["cucim_s"], out["cucim_note"] = first, "single run"
        else:
            out["cucim_s"], _ = best_of(cucim, repeat, b.synchronize)
        out["ratio_vs_cucim"] = out["cucim_s"] / out["ours_s"]
    except Exception as exc:
        out["cucim"] = f"failed ({type(exc).__name__}: {exc})"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="also time the GPU (CuPy) path")
    ap.add_argument("--no-cpu", action="store_true", help="skip the scikit-image timings")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of ours (best is kept)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    z = 16 if args.quick else 64
    counts = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    cases = [("2d", (2048, 2048), n, (0.1, 0.1)) for n in counts]
    cases += [("3d", (z, 1024, 1024), n, (0.5, 0.1, 0.1)) for n in counts]
    cpu_model = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln),
        platform.processor(),
    )
    import os

    results = {
        "quick": args.quick,
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "properties": PROPS_SKIMAGE,
        "cases": [],
    }
    b = None
    if args.gpu:
        from hcsmito.backend import get_backend

        try:
            b = get_backend("gpu")
            results["gpu"] = b.device
        except Exception as exc:
            results["gpu_error"] = f"{type(exc).__name__}: {exc}"
            print("GPU unavailable:", results["gpu_error"])
    for name, shape, n, spacing in cases:
        labels, channel = make_case(shape, n)
        row = {
            "case": name,
            "shape": list(shape),
            "n_objects": int(labels.max()),
            "foreground_fraction": float((labels > 0).mean()),
        }
        print(
            f"{name} {shape} objects={row['n_objects']} fg={row['foreground_fraction']:.3f}",
            flush=True,
        )
        if args.no_cpu:  # reference for the GPU check: our CPU table (tested vs skimage)
            cpu_table = (
                regionprops_table(labels, channel, spacing=spacing, properties=PROPS_SKIMAGE)
                if b
                else None
            )
        else:
            row["cpu"], cpu_table = cpu_case(labels, channel, spacing, args.repeat, 1)
            c = row["cpu"]
            print(
                f"  CPU ours {c['ours_s']:.3f}s (all props {c['ours_all_properties_s']:.3f}s) "
                f"skimage {c['skimage_s']:.2f}s ratio {c['ratio']:.1f}x "
                f"peak extra {c['peak_extra_over_labels']:.2f}x labels",
                flush=True,
            )
        if b is not None:
            try:
                row["gpu"] = g = gpu_case(labels, channel, spacing, cpu_table, args.repeat, b)
                print(
                    f"  GPU ours {g['ours_s'] * 1e3:.2f} ms on {g['card']}: "
                    f"{g['floor_fraction']:.1%} of the bandwidth floor "
                    f"({g['floor_s'] * 1e3:.3f} ms), peak extra "
                    f"{g['peak_extra_over_labels']:.2f}x labels; cuCIM "
                    f"{g.get('cucim_s', g.get('cucim'))} ratio {g.get('ratio_vs_cucim')} "
                    f"(kernels alone {g['ours_kernels_s'] * 1e3:.2f} ms; cuCIM differs in "
                    f"{g.get('cucim_mismatch')})",
                    flush=True,
                )
            except Exception as exc:
                row["gpu_error"] = f"{type(exc).__name__}: {exc}"
                print("  GPU failed:", row["gpu_error"], flush=True)
            b.free_memory()
        results["cases"].append(row)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
