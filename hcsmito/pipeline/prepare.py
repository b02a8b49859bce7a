"""The first phase of a field: checks, then the detection images (the channels,
deconvolved and background-subtracted in float32 as the config says), on the backend."""

from __future__ import annotations

import math
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from functools import singledispatch
from typing import Any

import numpy as np

from hcsmito import schema
from hcsmito.backend import Backend, get_backend
from hcsmito.config import FieldConfig, NoDeconvolution, Optics, RichardsonLucy


class Timer:
    """Seconds per phase of a field (summed over repeats); with :mod:`tracemalloc` tracing,
    also each phase's peak of host memory above what was allocated when it started (bytes,
    ``peak``: NumPy's arrays included; the benchmarks turn tracing on)."""

    def __init__(self, b: Backend):
        self.b = b
        self.t: dict[str, float] = {}
        self.peak: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str):
        tracing = tracemalloc.is_tracing()
        if tracing:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.b.synchronize()
            self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0
            if tracing:
                peak = tracemalloc.get_traced_memory()[1] - base
                self.peak[name] = max(self.peak.get(name, 0), peak)


def psf_for(dec: RichardsonLucy, optics: Optics, role: str, voxel: tuple[float, ...]) -> np.ndarray:
    """The PSF of channel ``role`` at the field's voxel size: the file of ``dec.psf``, or a
    theoretical one from ``optics``."""
    from hcsmito.stages import psf as psfmod

    if dec.psf.kind == "file":
        return load_psf_file(dec.psf.path, dec.psf.voxel_size_um, voxel)
    wavelength = optics.emission_um.get(role, 0.6)
    sz, sxy = psfmod.gaussian_sigmas(
        na=optics.na,
        wavelength_um=wavelength,
        refractive_index=optics.refractive_index,
        confocal=optics.confocal,
    )
    sig = ((sz,) if len(voxel) == 3 else ()) + (sxy, sxy)
    shape = tuple(2 * max(1, math.ceil(3.0 * s / v)) + 1 for s, v in zip(sig, voxel, strict=True))
    make = psfmod.psf_born_wolf if dec.psf.kind == "born_wolf" else psfmod.psf_gaussian
    return make(
        shape,
        voxel_size=voxel,
        na=optics.na,
        wavelength_um=wavelength,
        refractive_index=optics.refractive_index,
        confocal=optics.confocal,
    )


def load_psf_file(path, file_voxel: tuple[float, ...], voxel: tuple[float, ...]) -> np.ndarray:
    """A measured PSF from .npy or .tif, resampled to the field's voxel size, sum 1."""
    import scipy.ndimage as ndi

    if str(path).lower().endswith((".tif", ".tiff")):
        import tifffile

        psf = tifffile.imread(path)
    else:
        psf = np.load(path)
    psf = np.asarray(psf, np.float32)
    fv = tuple(file_voxel)[-psf.ndim :]
    if psf.ndim != len(voxel):
        raise ValueError(
            f"PSF file {path} is {psf.ndim}-D but the field is {len(voxel)}-D: "
            "give a PSF with the field's axes"
        )
    zoom = [f / v for f, v in zip(fv, voxel, strict=True)]
    if not np.allclose(zoom, 1.0):
        psf = ndi.zoom(psf, zoom, order=1)
    psf = np.clip(psf, 0, None)
    return (psf / psf.sum()).astype(np.float32)


@dataclass
class Prepared:
    """A field ready for the stages: ``raw`` channels by role as given (on the backend);
    ``det`` the detection images, float32 where deconvolved or background-subtracted, else
    the raw channel itself (the stages cast); ``decon`` / ``processed`` the deconvolved
    channels on the backend / the host."""

    b: Backend
    timer: Timer
    notes: list[str]
    ndim: int
    spacing: tuple[float, ...]
    vox: dict[str, float]
    shapes: dict[str, tuple[int, ...]]
    raw: dict[str, Any]
    det: dict[str, Any]
    decon: dict[str, Any]
    processed: dict[str, np.ndarray]
    attenuation: Any = None  # Attenuation: the depth attenuation measured (and corrected)


def prepare(
    channels, voxel_size, config: FieldConfig, backend: Backend | str, where: str
) -> Prepared:
    """Checks, then the detection images: the channels, deconvolved and background-subtracted
    (float32) as the config says (the stages segment these)."""
    from hcsmito.stages.background import subtract_background

    if "mito" not in channels or channels["mito"] is None:
        raise ValueError(f"{where}: no 'mito' channel: set channels.mito in the config")
    shapes = {r: tuple(a.shape) for r, a in channels.items() if a is not None}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{where}: channels differ in shape {shapes}")
    ndim = len(next(iter(shapes.values())))
    if ndim not in (2, 3):
        raise ValueError(f"{where}: channels must be 2-D (Y, X) or 3-D (Z, Y, X), got {shapes}")
    axes = "zyx"[3 - ndim :]
    try:
        spacing = tuple(float(voxel_size[a]) for a in axes)
    except KeyError as exc:
        raise ValueError(f"{where}: voxel_size lacks axis {exc}; has {dict(voxel_size)}") from None
    vox = dict(zip(axes, spacing, strict=True))
    b = backend if isinstance(backend, Backend) else get_backend(backend)
    xp = b.xp
    timer = Timer(b)
    notes: list[str] = []

    with timer("load"):
        raw = {r: b.asarray(a) for r, a in channels.items() if a is not None}  # host→device
    det = detection_channels(raw, config, xp)
    processed: dict[str, np.ndarray] = {}

    decon = deconvolve(config.deconvolution, det, optics=config.optics, spacing=spacing,
                       backend=b, timer=timer, notes=notes)  # fmt: skip
    for role, image in decon.items():
        det[role] = image
        processed[role] = b.to_host(image)  # device→host: output image
    attenuation = None
    if config.attenuation.method != "none" and ndim == 3:
        from hcsmito.stages.attenuation import correct_attenuation

        with timer("attenuation"):
            detection = {r.name: det[r.name] for r in schema.ROLES
                         if not r.marker and r.name in det}  # fmt: skip
            corrected, attenuation = correct_attenuation(
                detection, voxel_size=vox, **config.attenuation.stage_kwargs(exclude=("method",))
            )
            det.update(corrected)
            if attenuation.note():
                notes.append(attenuation.note())
    if config.background.method != "none":
        with timer("background"):
            for role in (r.name for r in schema.ROLES if r.background):
                if role in det:
                    det[role] = subtract_background(
                        det[role], voxel_size=vox, **config.background.stage_kwargs()
                    )

    return Prepared(
        b, timer, notes, ndim, spacing, vox, shapes, raw, det, decon, processed, attenuation
    )


def detection_channels(raw: dict[str, Any], config: FieldConfig, xp: Any) -> dict[str, Any]:
    """The channels the stages read, before deconvolution and background subtraction:
    a float32 copy of each channel that is deconvolved or background-subtracted, the
    others as they are. Every stage casts its channel to float32 itself, a stage or a
    slab at a time (the same numbers as a copy made here): no float32 volume of a channel
    is held for the whole field unless it is processed."""
    changed = set(getattr(config.deconvolution, "channels", ()))
    if config.background.method != "none":
        changed |= {r.name for r in schema.ROLES if r.background}
    return {r: a.astype(xp.float32) if r in changed else a for r, a in raw.items()}


@singledispatch
def deconvolve(options, det: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The deconvolved channels by role, on the device, as the type of ``options`` says
    (one implementation per option of :data:`hcsmito.config.Deconvolution`)."""
    raise TypeError(f"no deconvolution for {type(options).__name__}: register one")


@deconvolve.register(NoDeconvolution)
def _no_deconvolution(options: NoDeconvolution, det: dict[str, Any], **kw: Any) -> dict:
    return {}


@deconvolve.register(RichardsonLucy)
def _richardson_lucy(
    options: RichardsonLucy,
    det: dict[str, Any],
    *,
    optics: Optics,
    spacing: tuple[float, ...],
    backend: Backend,
    timer: Timer,
    notes: list[str],
) -> dict[str, Any]:
    """Richardson-Lucy of the listed roles; in tiles above ``max_voxels``."""
    from hcsmito.stages.deconvolution import richardson_lucy, richardson_lucy_tiled

    dec, out = options, {}
    with timer("deconvolve"):
        for role in dec.channels:
            if role not in det:
                continue
            psf = psf_for(dec, optics, role, spacing)
            kw = dict(
                iterations=dec.iterations, tv=dec.tv, transform=dec.transform, backend=backend
            )
            image = out.get(role, det[role])  # a role listed twice: deconvolved twice
            if dec.max_voxels is not None and image.size > dec.max_voxels:
                if dec.acceleration is not None and not any("tiles" in n for n in notes):
                    notes.append("deconvolution in tiles: acceleration is not applied")
                out[role] = richardson_lucy_tiled(image, psf, max_voxels=dec.max_voxels, **kw)
            else:
                out[role] = richardson_lucy(image, psf, acceleration=dec.acceleration, **kw)
    return out
