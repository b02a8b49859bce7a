"""hcsmito: GPU-accelerated batch processing of high-content confocal co-culture plates.

Dask schedules the fields of OME-Zarr HCS plates onto CuPy/cuCIM kernels (or NumPy/SciPy/
scikit-image without a GPU, through the same code): deconvolution, segmentation of MSCs and
donor cells, detection of transferred mitochondria and their morphometry.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hcsmito")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
