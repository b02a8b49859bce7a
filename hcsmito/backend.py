"""One code path, two backends.

This is the only module of hcsmito that imports CuPy, and it does so lazily:
``import hcsmito`` works on a machine without CUDA. A backend is resolved once from
``auto | cpu | gpu`` (argument, else the ``HCSMITO_BACKEND`` environment variable, else
``auto``) and handed to the stages as a small namespace:

``xp``
    the array module (:mod:`numpy` or :mod:`cupy`)
``ndi``
    :mod:`scipy.ndimage` or :mod:`cupyx.scipy.ndimage`
``fft``
    :mod:`scipy.fft` or :mod:`cupyx.scipy.fft` (same signatures; plans are cached by CuPy)
``to_host``
    copy an array to a NumPy array (a no-op on the CPU)

Stages are written once against this namespace. ``Backend.of(array)`` finds the backend
of an array, so a pure function called with CuPy arrays runs on the GPU without being told.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "get_backend",
    "gpu_available",
]

log = logging.getLogger(__name__)

BackendName = Literal["auto", "cpu", "gpu"]
_ENV = "HCSMITO_BACKEND"
_lock = threading.Lock()
_cache: dict[str, Backend] = {}
_fallback_reported = False


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine; the message says why and the fix."""


@dataclass(frozen=True)
class Backend:
    """Namespace of array modules for one backend (``cpu`` or ``gpu``)."""

    name: Literal["cpu", "gpu"]
    xp: ModuleType
    ndi: ModuleType
    fft: ModuleType
    device: str

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Array on this backend's device (host→device copy on the GPU)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """NumPy copy of ``a`` (device→host on the GPU; no copy on the CPU)."""
        if self.name == "gpu" and hasattr(a, "get"):
            return a.get()  # device→host
        return np.asarray(a)

    def free_memory(self) -> None:
        """Return cached device memory to the driver (between fields on a GPU worker)."""
        if self.name == "gpu":
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()

    def synchronize(self) -> None:
        """Wait for queued device work (for timings); a no-op on the CPU."""
        if self.name == "gpu":
            self.xp.cuda.Stream.null.synchronize()

    @staticmethod
    def of(*arrays: Any) -> Backend:
        """The backend that holds ``arrays`` (CuPy arrays → ``gpu``, anything else → ``cpu``)."""
        for a in arrays:
            if type(a).__module__.startswith("cupy"):
                return get_backend("gpu")
        return get_backend("cpu")


def _cpu() -> Backend:
    import scipy.fft
    import scipy.ndimage

    return Backend("cpu", np, scipy.ndimage, scipy.fft, device="cpu")


def _gpu_reason() -> str | None:
    """Why the GPU backend cannot be used, or None when it can."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return (
            "CuPy is not installed: pip install 'hcsmito[gpu]' (CUDA 12) "
            "or 'hcsmito[gpu-cuda13]' (CUDA 13)"
        )
    except Exception as exc:  # a broken CUDA install raises at import
        return f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no usable CUDA driver or device ({type(exc).__name__}: {exc})"
    if n < 1:
        return "CuPy sees no CUDA device (check CUDA_VISIBLE_DEVICES and the driver)"
    try:
        (cupy.arange(4, dtype=cupy.float32) * 2).sum().get()
    except Exception as exc:
        return f"a test kernel failed on the CUDA device ({type(exc).__name__}: {exc})"
    return None


def _gpu() -> Backend:
    reason = _gpu_reason()
    if reason is not None:
        raise BackendUnavailableError(f"backend 'gpu' was requested but cannot run: {reason}")
    import cupy
    import cupyx.scipy.fft
    import cupyx.scipy.ndimage

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Backend(
        "gpu",
        cupy,
        cupyx.scipy.ndimage,
        cupyx.scipy.fft,
        device=f"cuda:{dev.id} {name}",
    )


def gpu_available() -> bool:
    """True when CuPy imports and a CUDA device runs a kernel."""
    try:
        get_backend("gpu")
    except BackendUnavailableError:
        return False
    return True


def get_backend(name: str | None = None) -> Backend:
    """Resolve ``auto | cpu | gpu`` (default: ``$HCSMITO_BACKEND`` or ``auto``) once.

    ``gpu`` without a usable device raises :class:`BackendUnavailableError` saying why;
    ``auto`` takes the GPU when it is usable and otherwise falls back to the CPU, logging
    the reason once per process.
    """
    global _fallback_reported
    requested = (name or os.environ.get(_ENV) or "auto").strip().lower()
    if requested not in ("auto", "cpu", "gpu"):
        raise ValueError(
            f"unknown backend {requested!r} (from {'argument' if name else _ENV}): "
            "use one of auto, cpu, gpu"
        )
    with _lock:
        if requested in _cache:
            return _cache[requested]
        if requested == "cpu":
            backend = _cpu()
        elif requested == "gpu":
            backend = _gpu()
        else:
            reason = _gpu_reason()
            if reason is None:
                backend = _gpu()
            else:
                backend = _cpu()
                if not _fallback_reported:
                    log.warning("backend 'auto': running on the CPU because %s", reason)
                    _fallback_reported = True
        _cache[requested] = backend
        _cache.setdefault(backend.name, backend)
        return backend
