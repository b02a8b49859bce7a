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


@pytest.fixture(scope="session")
def fate_field():
    """One generated 3-D ara-C field with its Hoechst and annexin V channels, and the
    pipeline's result on it (shared by the nuclei and marker tests: ~25 s once)."""
    from hcsmito.config import Config
    from hcsmito.pipeline import process_field
    from hcsmito.synth import SynthParams, generate_field

    f = generate_field(SynthParams(nuclear_channel=True, annexin_channel=True), "ara-C", seed=1)
    names = [c.lower() for c in f.channel_labels]
    ch = {"msc": f.image[0], "mito": f.image[1], "actin": f.image[2],
          "nuclei": f.image[names.index("hoechst")],
          "annexin": f.image[names.index("annexin v")]}  # fmt: skip
    return f, process_field(ch, voxel_size=f.voxel_size, config=Config(), backend="cpu")
