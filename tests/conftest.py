"""Shared fixtures: the ``xp`` backend fixture and the real images in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcsmito.backend import get_backend, gpu_available

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _backend_params():
    yield pytest.param("cpu", id="numpy")
    yield pytest.param("gpu", id="cupy", marks=pytest.mark.gpu)


@pytest.fixture(params=list(_backend_params()))
def backend(request):
    """Every backend that runs here: NumPy always, CuPy where a CUDA device is usable."""
    if request.param == "gpu" and not gpu_available():
        pytest.skip("no usable CUDA device (CuPy missing or no GPU)")
    return get_backend(request.param)


@pytest.fixture
def xp(backend):
    """The array module of ``backend`` (numpy or cupy)."""
    return backend.xp


@pytest.fixture
def gpu():
    """The GPU backend, or skip where none is usable."""
    if not gpu_available():
        pytest.skip("no usable CUDA device (CuPy missing or no GPU)")
    return get_backend("gpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project (real images); skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-image folder {SHARED_DATA} is absent (see shared/data/README.md)")
    return SHARED_DATA
