import subprocess
import sys

import numpy as np
import pytest

from hcsmito import backend as bk


def test_cpu_backend_namespace():
    b = bk.get_backend("cpu")
    assert b.name == "cpu" and b.xp is np
    import scipy.fft
    import scipy.ndimage

    assert b.ndi is scipy.ndimage and b.fft is scipy.fft
    a = np.arange(5)
    assert b.to_host(a) is a


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="auto, cpu, gpu"):
        bk.get_backend("tpu")


def test_env_variable_selects_backend(monkeypatch):
    monkeypatch.setenv("HCSMITO_BACKEND", "cpu")
    assert bk.get_backend().name == "cpu"


def test_import_does_not_import_cupy():
    code = "import sys, hcsmito, hcsmito.backend; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gpu_request_without_device_says_why():
    if bk.gpu_available():
        pytest.skip("a GPU is usable here")
    with pytest.raises(bk.BackendUnavailableError, match="gpu.*cannot run"):
        bk.get_backend("gpu")
    assert bk.get_backend("auto").name == "cpu"


def test_of_finds_backend_from_arrays(backend):
    a = backend.xp.zeros(3)
    assert bk.Backend.of(a).name == backend.name
    np.testing.assert_array_equal(backend.to_host(a), np.zeros(3))
