"""Fused CuPy kernels of :mod:`hcsmito.measure.morphometry` (compiled only on the GPU path).

CuPy comes from :mod:`hcsmito.backend` (``backend.xp``); kernels come from memoised
factories whose names record their specialisation (label type, channel types, ndim, lookup).

``_morpho_kernel``: each thread walks a segment of ``K`` voxels of one image row, keeps the
current run of one label in registers (count, Σx, per channel Σw, Σw², Σw·x, min, max) and
flushes it with atomics into that label's accumulator row when the label changes: one
atomic per run and field instead of one per voxel. Coordinate sums are 64-bit integer
atomics (exact), intensity sums double atomics, intensity min/max integer atomics on an
order-preserving encoding of float32.

``_projection_kernel``: one thread per (y, x) column walks z and counts each label once per
column (a label re-entering a column is found by scanning the column above), which gives
the area of the z-projection without materialising (label, y, x) pairs.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from hcsmito.backend import Backend
from hcsmito.measure._moments import Moments, empty_moments, pairs, parent_overlaps

_CTYPES = {
    np.dtype(np.bool_): "bool",
    np.dtype(np.int8): "signed char",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int16): "short",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int64): "long long",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}

_CTYPES_NAMES = {d.name for d in _CTYPES}
_SEGMENT = 32  # voxels of a row per thread
_LUT_MAX = 1 << 26  # dense lookup table up to this label value (else binary search),
_LUT_MIN = 1 << 20  # and at least up to this one, whatever the image size

_COMMON = r"""
#define FINF __int_as_float(0x7f800000)
__device__ __forceinline__ int f2ord(float f) {
    int i = __float_as_int(f);
    return i < 0 ? i ^ 0x7FFFFFFF : i;
}

__device__ __forceinline__ long long lookup(const LT v, const IT* lut, long long n_lut) {
#if USE_LUT
    return (long long)lut[(long long)v];
#else
    long long lo = 0, hi = n_lut - 1;
    while (lo < hi) {
        long long mid = (lo + hi) >> 1;
        if (lut[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
#endif
}
"""


def n_int_fields(ndim: int) -> int:
    """Integer accumulator fields per label: n, Σc_a, Σc_a·c_b."""
    return 1 + ndim + len(pairs(ndim))


@cache
def _morpho_kernel(label_dtype: str, channel_dtypes: tuple[str, ...], ndim: int, use_lut: bool):
    cp = _cupy()
    lt = _CTYPES[np.dtype(label_dtype)]
    it = lt if not use_lut else "int"
    C = len(channel_dtypes)
    ni = n_int_fields(ndim)
    nd_fields = 2 + ndim
    ch_params = "".join(
        f"const {_CTYPES[np.dtype(t)]}* __restrict__ ch{c}, " for c, t in enumerate(channel_dtypes)
    )
    decl = "".join(
        f"double sw{c} = 0, sww{c} = 0, swx{c} = 0; float mn{c} = 0, mx{c} = 0;\n" for c in range(C)
    )
    reset = "".join(
        f"sw{c} = 0; sww{c} = 0; swx{c} = 0; mn{c} = FINF; mx{c} = -FINF;\n" for c in range(C)
    )
    accum = "".join(
        f"""{{ float w = (float)ch{c}[base + x]; double wd = (double)ch{c}[base + x];
              sw{c} += wd; sww{c} += wd * wd; swx{c} += wd * x;
              mn{c} = fminf(mn{c}, w); mx{c} = fmaxf(mx{c}, w); }}
"""
        for c in range(C)
    )
    rowc = ["z", "y"] if ndim == 3 else ["y"]
    # integer fields: n, Σ per axis, Σ products per pair
    s1 = [f"(unsigned long long)n * {r}" for r in rowc] + ["sx"]
    s2 = []
    for a, b in pairs(ndim):
        if b < ndim - 1:
            s2.append(f"(unsigned long long)n * {rowc[a]} * {rowc[b]}")
        elif a < ndim - 1:
            s2.append(f"(unsigned long long){rowc[a]} * sx")
        else:
            s2.append("sxx")
    ints = ["(unsigned long long)n", *s1, *s2]
    flush_int = "".join(f"atomicAdd(&iacc[cur * {ni} + {k}], {v});\n" for k, v in enumerate(ints))
    lo = [*rowc, "x0"]
    hi = [*rowc, "x0 + n - 1"]
    flush_c = "".join(
        f"atomicMin(&cmin[cur * {ndim} + {a}], (int)({lo[a]}));\n"
        f"atomicMax(&cmax[cur * {ndim} + {a}], (int)({hi[a]}));\n"
        for a in range(ndim)
    )
    flush_w = ""
    for c in range(C):
        o = f"cur * {C * nd_fields} + {c * nd_fields}"
        flush_w += f"atomicAdd(&dacc[{o}], sw{c}); atomicAdd(&dacc[{o} + 1], sww{c});\n"
        for a, r in enumerate(rowc):
            flush_w += f"atomicAdd(&dacc[{o} + {2 + a}], (double){r} * sw{c});\n"
        flush_w += f"atomicAdd(&dacc[{o} + {2 + ndim - 1}], swx{c});\n"
        flush_w += (
            f"atomicMin(&wmin[cur * {C} + {c}], f2ord(mn{c})); "
            f"atomicMax(&wmax[cur * {C} + {c}], f2ord(mx{c}));\n"
        )
    flush = f"""{{
        const long long n = cnt;
        const unsigned long long sx = (unsigned long long)(n * x0 + n * (n - 1) / 2);
        const unsigned long long sxx = (unsigned long long)(n * x0 * x0 + x0 * n * (n - 1)
                                       + (n - 1) * n * (2 * n - 1) / 6);
        {flush_int}{flush_c}{flush_w}
    }}"""
    zy = (
        "const long long z = r / Y; const long long y = r - z * Y;"
        if ndim == 3
        else ("const long long y = r;")
    )
    src = f"""
#define USE_LUT {int(use_lut)}
typedef {lt} LT;
typedef {it} IT;
{_COMMON}
extern "C" __global__ void morpho(const LT* __restrict__ lab, {ch_params}
        const IT* __restrict__ lut, const long long n_lut,
        const long long R, const long long Y, const long long X, const long long segs,
        unsigned long long* iacc, int* cmin, int* cmax, double* dacc, int* wmin, int* wmax) {{
    const long long total = R * segs;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {{
        const long long r = t / segs;
        const long long xs = (t - r * segs) * {_SEGMENT};
        const long long xe = min(X, xs + {_SEGMENT});
        const long long base = r * X;
        {zy}
        long long cur = -1, x0 = 0, cnt = 0;
        {decl}
        for (long long x = xs; x < xe; ++x) {{
            const LT v = lab[base + x];
            const long long d = v ? lookup(v, lut, n_lut) : -1;
            if (d != cur) {{
                if (cur >= 0) {flush}
                cur = d; x0 = x; cnt = 0;
                {reset}
            }}
            if (d >= 0) {{
                ++cnt;
                {accum}
            }}
        }}
        if (cur >= 0) {flush}
    }}
}}
"""
    return cp.RawKernel(src, "morpho")


@cache
def _projection_kernel(label_dtype: str, use_lut: bool):
    cp = _cupy()
    lt = _CTYPES[np.dtype(label_dtype)]
    it = lt if not use_lut else "int"
    src = f"""
#define USE_LUT {int(use_lut)}
typedef {lt} LT;
typedef {it} IT;
{_COMMON}
extern "C" __global__ void project(const LT* __restrict__ lab, const IT* __restrict__ lut,
        const long long n_lut, const long long Z, const long long plane,
        unsigned long long* proj) {{
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < plane;
         p += (long long)blockDim.x * gridDim.x) {{
        LT prev = 0;
        for (long long z = 0; z < Z; ++z) {{
            const LT v = lab[z * plane + p];
            if (v && v != prev) {{
                bool seen = false;
                for (long long zz = 0; zz + 1 < z; ++zz) {{
                    if (lab[zz * plane + p] == v) {{ seen = true; break; }}
                }}
                if (!seen) atomicAdd(&proj[lookup(v, lut, n_lut)], 1ULL);
            }}
            prev = v;
        }}
    }}
}}
"""
    return cp.RawKernel(src, "project")


@cache
def _mark_kernel(label_dtype: str):
    cp = _cupy()
    lt = _CTYPES[np.dtype(label_dtype)]
    neg = "if (v < 0) { *bad = 1; continue; }" if np.dtype(label_dtype).kind == "i" else ""
    src = f"""
extern "C" __global__ void mark(const {lt}* __restrict__ lab, const long long size, int* flags,
                                int* bad) {{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)blockDim.x * gridDim.x) {{
        const {lt} v = lab[i];
        {neg}
        if (v) flags[(long long)v] = 1;
    }}
}}
"""
    return cp.RawKernel(src, "mark")


@cache
def _compact_kernel():
    return _cupy().ElementwiseKernel(
        "int32 flag, int32 csum",
        "raw int64 uniq",
        "if (flag) uniq[csum - 1] = i;",
        "hcsmito_compact_labels",
    )


def _cupy():
    from hcsmito.backend import get_backend

    return get_backend("gpu").xp


def _grid(n: int, threads: int = 256) -> tuple[tuple[int], tuple[int]]:
    return (max(1, min((n + threads - 1) // threads, 65535 * 8)),), (threads,)


def dense_lookup(labels, b: Backend):
    """Label values present (ascending, device) and the lookup used by the kernels.

    Returns ``(uniq, lut, use_lut)``: with ``use_lut`` the lut maps a label value to its row
    (int32, size max+1); otherwise ``lut`` is ``uniq`` itself, searched by bisection.
    Two host syncs: the maximum label, then (number of labels, any negative label).
    """
    xp = b.xp
    flat = labels.reshape(-1)
    top = int(flat.max()) if flat.size else 0  # device->host: one scalar
    if top < max(_LUT_MIN, min(_LUT_MAX, flat.size // 4)):
        flags = xp.zeros(max(top, 0) + 1, dtype=np.int32)
        bad = xp.zeros(1, dtype=np.int32)
        _mark_kernel(labels.dtype.name)(*_grid(flat.size), (flat, np.int64(flat.size), flags, bad))
        csum = xp.cumsum(flags, dtype=np.int32)
        both = b.to_host(xp.stack([csum[-1], bad[0]]))  # device->host: two scalars, one sync
        n_labels, negative = int(both[0]), int(both[1])
        if negative:
            raise ValueError("labels must be non-negative (0 = background)")
        uniq = xp.empty(n_labels, dtype=np.int64)
        _compact_kernel()(flags, csum, uniq)
        return uniq.astype(labels.dtype), csum - 1, True
    if labels.dtype.kind == "i" and int(flat.min()) < 0:  # device->host: one scalar
        raise ValueError("labels must be non-negative (0 = background)")
    uniq = xp.unique(flat[flat != 0])
    return uniq, uniq, False


def moments_gpu(labels, channels, parents, b: Backend):
    """Fill :class:`~hcsmito.measure._moments.Moments` with the fused kernels."""
    xp = b.xp
    labels = xp.ascontiguousarray(labels)
    channels = [
        xp.ascontiguousarray(c if c.dtype.name in _CTYPES_NAMES else c.astype(np.float32))
        for c in channels
    ]
    ndim = labels.ndim
    C = len(channels)
    uniq, lut, use_lut = dense_lookup(labels, b)
    L = int(uniq.size)
    if L == 0:
        return empty_moments(np.dtype(labels.dtype), ndim, C, list(parents), xp)
    ni = n_int_fields(ndim)
    iacc = xp.zeros((L, ni), dtype=np.uint64)
    cmin = xp.full((L, ndim), np.iinfo(np.int32).max, dtype=np.int32)
    cmax = xp.full((L, ndim), -1, dtype=np.int32)
    dacc = xp.zeros((L, C, 2 + ndim), dtype=np.float64)
    wmin = xp.full((L, max(C, 1)), int(_ord(np.inf)), dtype=np.int32)
    wmax = xp.full((L, max(C, 1)), int(_ord(-np.inf)), dtype=np.int32)
    X = labels.shape[-1]
    Y = labels.shape[-2]
    R = labels.size // X
    segs = (X + _SEGMENT - 1) // _SEGMENT
    k = _morpho_kernel(labels.dtype.name, tuple(c.dtype.name for c in channels), ndim, use_lut)
    k(
        *_grid(R * segs),
        (
            labels,
            *channels,
            lut,
            np.int64(lut.size),
            np.int64(R),
            np.int64(Y),
            np.int64(X),
            np.int64(segs),
            iacc,
            cmin,
            cmax,
            dacc,
            wmin,
            wmax,
        ),
    )
    projected = None
    if ndim == 3:
        proj = xp.zeros(L, dtype=np.uint64)
        plane = Y * X
        _projection_kernel(labels.dtype.name, use_lut)(
            *_grid(plane),
            (labels, lut, np.int64(lut.size), np.int64(labels.shape[0]), np.int64(plane), proj),
        )
        projected = proj.astype(np.int64)
    par = {k2: parent_overlaps(b, labels, p, uniq, L) for k2, p in parents.items()}
    ia = iacc.astype(np.int64)  # sums stay on the device: the table is finished there
    return Moments(
        labels=uniq,
        n=ia[:, 0],
        s1=ia[:, 1 : 1 + ndim],
        s2=ia[:, 1 + ndim :],
        cmin=cmin.astype(np.int64),
        cmax=cmax.astype(np.int64),
        sw=dacc[:, :, 0],
        sww=dacc[:, :, 1],
        wmin=_unord(wmin, xp)[:, :C],
        wmax=_unord(wmax, xp)[:, :C],
        swc=dacc[:, :, 2:],
        projected=projected,
        parents=par,
    )


def _ord(f) -> np.int32:
    i = np.asarray(f, np.float32).view(np.int32)
    return np.where(i < 0, i ^ np.int32(0x7FFFFFFF), i).astype(np.int32)


def _unord(i, xp):
    """Decode :func:`_ord` (any xp): int32 keys back to float64 values."""
    i = i.astype(np.int32)
    return (
        xp.where(i < 0, i ^ np.int32(0x7FFFFFFF), i)
        .astype(np.int32)
        .view(np.float32)
        .astype(np.float64)
    )


# eigenvalues of a symmetric matrix held in m[][] -> l1 >= l2 (>= l3), shared by kernels
_EIG2 = """
        const double mid = 0.5 * (m[0][0] + m[1][1]);
        const double rad = hypot(0.5 * (m[0][0] - m[1][1]), m[0][1]);
        const double l1 = mid + rad, l2 = mid - rad;
"""
# cyclic Jacobi: converges quadratically, exact at double eigenvalues (where the
# trigonometric closed form loses half the digits)
_EIG3 = """
        for (int sweep = 0; sweep < 10; ++sweep) {
            for (int p = 0; p < 2; ++p) {
                for (int q = p + 1; q < 3; ++q) {
                    const double apq = m[p][q];
                    if (apq == 0.0) continue;
                    const double theta = (m[q][q] - m[p][p]) / (2.0 * apq);
                    const double t = (theta >= 0.0 ? 1.0 : -1.0)
                                     / (fabs(theta) + sqrt(theta * theta + 1.0));
                    const double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
                    m[p][p] -= t * apq;
                    m[q][q] += t * apq;
                    m[p][q] = 0.0;
                    m[q][p] = 0.0;
                    const int r = 3 - p - q;
                    const double arp = m[r][p], arq = m[r][q];
                    m[r][p] = m[p][r] = cs * arp - sn * arq;
                    m[r][q] = m[q][r] = sn * arp + cs * arq;
                }
            }
        }
        double l1 = m[0][0], l2 = m[1][1], l3 = m[2][2], tmp;
        if (l1 < l2) { tmp = l1; l1 = l2; l2 = tmp; }
        if (l2 < l3) { tmp = l2; l2 = l3; l3 = tmp; }
        if (l1 < l2) { tmp = l1; l1 = l2; l2 = tmp; }
"""


@cache
def _eig_kernel(n: int):
    cp = _cupy()
    if n == 2:
        return cp.ElementwiseKernel(
            "float64 a, float64 b, float64 d",
            "float64 e1, float64 e2",
            "double m[2][2] = {{a, b}, {b, d}};" + _EIG2 + "e1 = l1; e2 = l2;",
            "hcsmito_eigvalsh_sym2",
        )
    return cp.ElementwiseKernel(
        "float64 a, float64 b, float64 c, float64 d, float64 e, float64 f",
        "float64 e1, float64 e2, float64 e3",
        "double m[3][3] = {{a, b, c}, {b, d, e}, {c, e, f}};"
        + _EIG3
        + "e1 = l1; e2 = l2; e3 = l3;",
        "hcsmito_eigvalsh_sym3",
    )


@cache
def _axes_kernel(ndim: int):
    """Inertia tensor (scikit-image's, with spacing) -> axis_major/minor_length, fused."""
    cp = _cupy()
    axis_pairs = pairs(ndim)
    np_ = len(axis_pairs)
    body = [
        f"double m[{ndim}][{ndim}]; double cov[{ndim}][{ndim}];",
        "const double nn = (double)cnt;",
        "const bool exact = cnt < limit;  // n*s2 - s1*s1 exact in int64",
    ]
    for k, (a, b) in enumerate(axis_pairs):
        sa, sb, s2 = f"s1[i * {ndim} + {a}]", f"s1[i * {ndim} + {b}]", f"s2[i * {np_} + {k}]"
        num = (
            f"(exact ? (double)(cnt * {s2} - {sa} * {sb})"
            f" : (nn * (double){s2} - (double){sa} * (double){sb}))"
        )
        body.append(f"cov[{a}][{b}] = {num} / (nn * nn) * (sp[{a}] * sp[{b}]);")
        if a != b:
            body.append(f"cov[{b}][{a}] = cov[{a}][{b}];")
    body.append(f"double tr = 0; for (int a = 0; a < {ndim}; ++a) tr += cov[a][a];")
    body.append(
        f"for (int a = 0; a < {ndim}; ++a) for (int b = 0; b < {ndim}; ++b) "
        "m[a][b] = (a == b) ? tr - cov[a][a] : -cov[a][b];"
    )
    if ndim == 2:
        body.append(_EIG2)
        body.append("major = 4.0 * sqrt(fmax(l1, 0.0)); minor = 4.0 * sqrt(fmax(l2, 0.0));")
    else:
        body.append(_EIG3)
        body.append(
            "l1 = fmax(l1, 0.0); l2 = fmax(l2, 0.0); l3 = fmax(l3, 0.0);"
            "major = sqrt(fmax(0.0, 10.0 * (l1 + l2 - l3)));"
            "minor = sqrt(fmax(0.0, 10.0 * (-l1 + l2 + l3)));"
        )
    return cp.ElementwiseKernel(
        "int64 cnt, raw int64 s1, raw int64 s2, raw float64 sp, int64 limit",
        "float64 major, float64 minor",
        "\n".join(body),
        f"hcsmito_axis_lengths_{ndim}d",
    )


def axis_lengths(n, s1, s2, spacing, exact_limit: int):
    """axis_major_length, axis_minor_length per label (device), one fused kernel.

    Objects with fewer than ``exact_limit`` voxels get exact integer inertia numerators.
    """
    cp = _cupy()
    ndim = s1.shape[1]
    if n.size == 0:
        return cp.zeros(0), cp.zeros(0)
    sp = cp.asarray(spacing, dtype=np.float64)
    return _axes_kernel(ndim)(
        n, cp.ascontiguousarray(s1), cp.ascontiguousarray(s2), sp, np.int64(exact_limit)
    )


def eigvalsh_sym(T):
    """Eigenvalues, descending, of a stack of symmetric 2x2 or 3x3 matrices (L, n, n)."""
    cp = _cupy()
    n = T.shape[1]
    if T.shape[0] == 0:
        return cp.zeros((0, n))
    if n == 2:
        out = _eig_kernel(2)(T[:, 0, 0], T[:, 0, 1], T[:, 1, 1])
    else:
        out = _eig_kernel(3)(T[:, 0, 0], T[:, 0, 1], T[:, 0, 2], T[:, 1, 1], T[:, 1, 2], T[:, 2, 2])
    return cp.stack(out, axis=1)
