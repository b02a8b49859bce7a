"""Richardson-Lucy per iteration: hcsmito vs scikit-image (CPU) and cuCIM (GPU).

Usage::

    python benchmarks/bench_rl.py [--quick] [--gpu] [--json OUT] [--iterations N]

Same volume (float32, generated: points blurred by the PSF plus Poisson noise), same PSF
(scalar Born & Wolf confocal, 15 x 21 x 21 at 0.3 x 0.1 x 0.1 µm, NA 1.4, 0.52 µm), same
number of iterations, for every contender. Times are whole calls divided by the iteration
count (set-up included: scikit-image transforms the PSF on every convolution, ours once per
call). ``ours (OTF reused)`` times the iterations only, with an :class:`RLDeconvolver` built
beforehand, as the pipeline uses it for several channels of one field. Results of the
contenders are also compared (interior, away from the borders where the padding differs).

On a GPU, also cuCIM's ``richardson_lucy`` when ``cucim`` imports, absolute ms per
iteration with the card's name, and the fraction of the memory-bandwidth floor reached.
The floor counts the bytes an ideal implementation must move per iteration on the padded
grid of G voxels: four real FFTs, each reading and writing its array once (4 x 8 G bytes:
a float32 array and its half complex64 spectrum are both ~4 G bytes), plus reading the
observed image, the OTF twice and reading and writing the estimate (5 x 4 G), i.e. 52 G
bytes, divided by the peak HBM bandwidth from the device properties (2 x memory clock x
bus width).

The PSF is mirror-symmetric, so ``richardson_lucy`` takes the DCT transform (mirror
borders, transforms on the 32 x 256 x 256 image grid); ``with padded FFTs`` times
``transform="fft"`` (48 x 288 x 288 grid), the path for asymmetric (bead) PSFs.

Measured 2026-11-26, default volume 32 x 256 x 256 float32, 10 iterations, PSF 15 x 21 x 21,
best of 3:

  CPU, this project's 2-core development machine (load 0.7), DCT transform, parent commit
  ``142c6b8``:
    skimage float32 240.9 ms/it, skimage uint16 397.2 ms/it
    ours 60.2 ms/it (OTF reused 51.8; 1 FFT thread 81.9)
        -> 4.0x vs skimage float32 (1 thread 2.9x), 6.6x vs skimage on uint16
    ours with padded FFTs 104.2 ms/it -> 2.3x
  Earlier, padded FFTs only (before the DCT transform), same volume:
  CPU, the 16-core host of the H100 machine (``--gpu`` run):
    skimage.restoration.richardson_lucy on the float32 volume   282.6 ms/it
    skimage on the same volume as uint16 (float64 inside)       360.9 ms/it
    hcsmito richardson_lucy (scipy.fft, all cores)               29.4 ms/it
        -> 9.6x vs skimage float32, 12.3x vs skimage on uint16 (first run: 7.4x / 12.7x)
    hcsmito, 1 FFT thread (like for like with skimage)          111.8 ms/it -> 2.5x
  The single-thread gain of the FFT path is bounded by the FFT count: scikit-image
  transforms the PSF again in each of its two convolutions (6 real FFTs per iteration,
  ours 4) and, for integer input, works in float64. The DCT path also halves the grid.

  GPU, NVIDIA H100 80GB HBM3 (CuPy 14.2, cuCIM 26.10), padded FFTs (before the DCT):
    32 x 256 x 256:   ours 0.50 ms/it (OTF reused 0.42), cuCIM 1.17 ms/it -> 2.4x;
                      floor 0.062 ms/it -> 15 % of the bandwidth floor reached;
                      GPU vs CPU max difference 5e-7 of the maximum
    64 x 1024 x 1024: ours 9.92 ms/it (OTF reused 9.65), cuCIM 13.31 ms/it -> 1.3x;
                      floor 1.447 ms/it -> 15 % reached (unfused element-wise passes and
                      multi-pass cuFFT are the gap: a fused ratio/multiply kernel and
                      cuFFT callbacks are the next step)
    Options, 64 x 1024 x 1024 (grid 80 x 1080 x 1080), OTF reused: plain 9.6 ms/it,
    acceleration="biggs" 13.3 ms/it, tv=0.002 23.6 ms/it; 5.8 GiB in CuPy's pool.
  GPU parity tests (pytest -m gpu, tests/test_psf.py, tests/test_deconvolution.py): 2 passed
  on the H100.
  The cuCIM "interior diff" is not reported for this volume: it is too thin in z for the
  exact domain of dependence (2 x iterations x PSF half-width from each border).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hcsmito.stages.deconvolution import RLDeconvolver, richardson_lucy  # noqa: E402
from hcsmito.stages.psf import psf_born_wolf  # noqa: E402


def make_volume(shape, psf, seed=0):
    from scipy import signal

    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.float32)
    n = int(np.prod(shape) // 2000)
    truth[tuple(rng.integers(0, s, n) for s in shape)] = rng.uniform(200, 2000, n)
    blurred = signal.fftconvolve(truth, psf, mode="same") + 10.0
    return rng.poisson(np.clip(blurred, 0, None)).astype(np.float32)


def timed(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def exact_margin(psf_shape, shape, iterations):
    """Voxels from each border beyond which the results must agree exactly (the domain of
    dependence of the border handling), or None when the volume is too small for it."""
    margin = [2 * iterations * (s // 2) for s in psf_shape]
    return margin if all(2 * m < n for m, n in zip(margin, shape, strict=True)) else None


def interior_rel_diff(a, b, margin):
    if margin is None:
        return None
    sl = tuple(slice(m, n - m) for m, n in zip(margin, a.shape, strict=True))
    a, b = np.asarray(a)[sl], np.asarray(b)[sl]
    return float(np.abs(a - b).max() / np.abs(b).max())


def bench_cpu(volume, psf, iterations, repeat):
    from skimage.restoration import richardson_lucy as sk_rl

    out = {"cores": os.cpu_count(), "shape": list(volume.shape), "iterations": iterations}
    res = {}

    def run_sk():
        res["sk"] = sk_rl(volume, psf, num_iter=iterations, clip=False)

    counts = volume.astype(np.uint16)  # the raw data a user passes: skimage goes float64

    def run_sk_u16():
        sk_rl(counts, psf, num_iter=iterations, clip=False)

    def run_ours():
        res["ours"] = richardson_lucy(volume, psf, iterations=iterations, eps=1e-12)

    def run_fft():
        richardson_lucy(volume, psf, iterations=iterations, eps=1e-12, transform="fft")

    rl1 = RLDeconvolver(psf, volume.shape, workers=1)

    def run_ours_1():
        rl1(volume, iterations=iterations, eps=1e-12)

    rl = RLDeconvolver(psf, volume.shape)

    def run_reused():
        rl(volume, iterations=iterations, eps=1e-12)

    t_sk = timed(run_sk, repeat)
    t_sk16 = timed(run_sk_u16, repeat)
    t_ours = timed(run_ours, repeat)
    t_ours1 = timed(run_ours_1, repeat)
    t_fft = timed(run_fft, repeat)
    t_reused = timed(run_reused, repeat)
    margin = exact_margin(psf.shape, volume.shape, iterations)
    out.update(
        skimage_s_per_iter=t_sk / iterations,
        skimage_uint16_s_per_iter=t_sk16 / iterations,
        ratio_vs_skimage_uint16=t_sk16 / t_ours,
        ours_s_per_iter=t_ours / iterations,
        ours_1thread_s_per_iter=t_ours1 / iterations,
        ours_transform=rl.transform,
        ours_fft_s_per_iter=t_fft / iterations,
        ratio_fft=t_sk / t_fft,
        ours_otf_reused_s_per_iter=t_reused / iterations,
        ratio=t_sk / t_ours,
        ratio_1thread=t_sk / t_ours1,
        skimage_dtype=str(res["sk"].dtype),
        interior_max_rel_diff=interior_rel_diff(res["ours"], res["sk"], margin),
    )
    return out


def bench_gpu(volume, psf, iterations, repeat):
    from hcsmito.backend import get_backend

    b = get_backend("gpu")
    cp = b.xp
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    bandwidth = 2.0 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8.0  # B/s
    vol = cp.asarray(volume)
    kern = cp.asarray(psf)
    out = {"card": name, "peak_bandwidth_GBps": bandwidth / 1e9}

    def sync_timed(fn):
        fn()  # warm-up: plans, kernels
        b.synchronize()
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            b.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    res = {}

    def ours():
        res["ours"] = richardson_lucy(vol, kern, iterations=iterations, eps=1e-12)

    rl = RLDeconvolver(kern, volume.shape)

    def reused():
        rl(vol, iterations=iterations, eps=1e-12)

    def ours_fft():
        richardson_lucy(vol, kern, iterations=iterations, eps=1e-12, transform="fft")

    t_ours = sync_timed(ours)
    t_reused = sync_timed(reused)
    t_fft = sync_timed(ours_fft)
    grid = int(np.prod(rl.grid_shape))
    floor_s = 52.0 * grid / bandwidth
    out.update(
        grid_shape=list(rl.grid_shape),
        ours_ms_per_iter=1e3 * t_ours / iterations,
        ours_otf_reused_ms_per_iter=1e3 * t_reused / iterations,
        ours_transform=rl.transform,
        ours_fft_ms_per_iter=1e3 * t_fft / iterations,
        floor_ms_per_iter=1e3 * floor_s,
        floor_fraction=floor_s / (t_reused / iterations),
    )
    if volume.size <= 2**23:  # the CPU reference only where it takes seconds
        cpu = richardson_lucy(volume, psf, iterations=iterations, eps=1e-12)
        out["gpu_vs_cpu_max_rel_diff"] = float(
            np.abs(b.to_host(res["ours"]) - cpu).max() / np.abs(cpu).max()  # device->host
        )
    try:
        from cucim.skimage.restoration import richardson_lucy as cu_rl
    except ImportError as exc:
        out["cucim"] = f"not importable: {exc}"
        return out

    def cucim():
        res["cucim"] = cu_rl(vol, kern, num_iter=iterations, clip=False)

    t_cu = sync_timed(cucim)
    margin = exact_margin(psf.shape, volume.shape, iterations)
    out.update(
        cucim_ms_per_iter=1e3 * t_cu / iterations,
        ratio_vs_cucim=t_cu / t_ours,
        cucim_interior_max_rel_diff=interior_rel_diff(
            b.to_host(res["ours"]),
            b.to_host(res["cucim"]),
            margin,  # device->host
        ),
    )
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="16 x 128 x 128, 5 iterations")
    p.add_argument("--gpu", action="store_true", help="also time the GPU (CuPy, cuCIM)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--iterations", type=int)
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="volume shape")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    args = p.parse_args(argv)
    shape = tuple(args.shape) if args.shape else (16, 128, 128) if args.quick else (32, 256, 256)
    iterations = args.iterations or (5 if args.quick else 10)
    psf = psf_born_wolf(
        (15, 21, 21), voxel_size=(0.3, 0.1, 0.1), na=1.4, wavelength_um=0.52, refractive_index=1.518
    )
    volume = make_volume(shape, psf)
    results = {"shape": list(shape), "iterations": iterations, "psf_shape": list(psf.shape)}
    if not args.no_cpu:
        results["cpu"] = bench_cpu(volume, psf, iterations, args.repeat)
        c = results["cpu"]
        print(
            f"CPU ({c['cores']} cores) {shape} x {iterations} it: skimage "
            f"{c['skimage_s_per_iter'] * 1e3:.1f} ms/it on float32 (on uint16, float64 inside: "
            f"{c['skimage_uint16_s_per_iter'] * 1e3:.1f} ms/it, ratio "
            f"{c['ratio_vs_skimage_uint16']:.1f}x), ours {c['ours_s_per_iter'] * 1e3:.1f} "
            f"ms/it (1 thread {c['ours_1thread_s_per_iter'] * 1e3:.1f}, OTF reused "
            f"{c['ours_otf_reused_s_per_iter'] * 1e3:.1f}; transform {c['ours_transform']}); "
            f"ratio {c['ratio']:.1f}x (1 thread {c['ratio_1thread']:.1f}x); with padded FFTs "
            f"{c['ours_fft_s_per_iter'] * 1e3:.1f} ms/it, ratio {c['ratio_fft']:.1f}x; "
            f"interior max rel diff {c['interior_max_rel_diff']}"
        )
    if args.gpu:
        results["gpu"] = g = bench_gpu(volume, psf, iterations, args.repeat)
        print(
            f"GPU {g['card']}: ours {g['ours_ms_per_iter']:.2f} ms/it (OTF reused "
            f"{g['ours_otf_reused_ms_per_iter']:.2f}; {g['ours_transform']}; padded FFTs "
            f"{g['ours_fft_ms_per_iter']:.2f}), floor {g['floor_ms_per_iter']:.3f} ms/it "
            f"= {100 * g['floor_fraction']:.0f}% reached; "
            f"GPU vs CPU {g.get('gpu_vs_cpu_max_rel_diff')}"
        )
        if "cucim_ms_per_iter" in g:
            print(
                f"    cuCIM {g['cucim_ms_per_iter']:.2f} ms/it, ratio {g['ratio_vs_cucim']:.1f}x, "
                f"interior diff {g['cucim_interior_max_rel_diff']} (cuCIM flips 2 axes)"
            )
        else:
            print(f"    cuCIM: {g['cucim']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
