"""Lazy pixels: a zarr array as a Dask array whose blocks are whole storage chunks.

Nothing is read until the Dask array is computed; a chunk that cannot be decoded then
raises a :class:`~hcsmito.io.errors.PlateError` naming the field and the chunk's key.
"""

from __future__ import annotations

from itertools import product

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from hcsmito.io.errors import PlateError

__all__ = ["ChunkReader", "lazy_array"]

_DASK_BLOCK_LIMIT = 64 * 2**20  # bytes: dask blocks are whole storage chunks up to this size


class ChunkReader:
    """Array-like handed to :func:`dask.array.from_array`: reads a region, names bad chunks."""

    def __init__(self, array: zarr.Array, where: str, context: str):
        self.array = array
        self.where = where  # "plate.zarr/B/03/0/0"
        self.context = context  # "plate plate.zarr, well B/3, field 0"
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.storage_chunks = array.shards or array.chunks

    def __getitem__(self, key):
        try:
            return self.array[key]
        except Exception as exc:  # a codec / IO error: find the culprit chunk
            raise self._error(key, exc) from exc

    def _error(self, key, exc: Exception) -> PlateError:
        bad, cause = None, exc
        ranges = []
        for sl, c, n in zip(key, self.storage_chunks, self.shape, strict=True):
            start, stop, _ = sl.indices(n)
            ranges.append(range(start // c, max(start // c + 1, -(-stop // c))))
        for coords in product(*ranges):
            region = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(coords, self.storage_chunks, self.shape, strict=True)
            )
            try:
                self.array[region]
            except Exception as e:
                bad, cause = coords, e
                break
        chunk = (
            f"chunk '{self.where}/{self.array.metadata.encode_chunk_key(bad)}'"
            if bad is not None
            else f"region {key} of '{self.where}'"
        )
        return PlateError(
            f"{self.context}: cannot read {chunk}: {type(cause).__name__}: {cause}. The chunk "
            "file is corrupt or truncated: copy it again from the source, re-export the field, "
            "or leave this well out."
        )


def lazy_array(array: zarr.Array, axes: str, where: str, context: str, token: str) -> da.Array:
    """``array`` as a Dask array read on ``compute()``, one block per storage chunk or more.

    ``t`` and ``c`` blocks are one plane thick; the others grow from the storage chunks up
    to ``_DASK_BLOCK_LIMIT`` bytes. ``where`` and ``context`` name the array in errors;
    ``token`` (unique per array) names the Dask graph.
    """
    reader = ChunkReader(array, where, context)
    storage = reader.storage_chunks
    wanted = tuple(1 if ax in "tc" else "auto" for ax in axes)
    chunks = da.core.normalize_chunks(
        wanted,
        shape=array.shape,
        dtype=array.dtype,
        previous_chunks=storage,
        limit=_DASK_BLOCK_LIMIT,
    )
    return da.from_array(
        reader,
        chunks=chunks,
        name=f"hcsmito-read-{tokenize(token, array.shape, str(array.dtype))}",
        asarray=False,
        fancy=False,
        lock=False,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )
