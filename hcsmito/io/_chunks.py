"""Lazy pixels: a zarr array as a Dask array whose blocks are whole storage chunks.

Nothing is read until the Dask array is computed. Before zarr decodes a region, every
storage chunk it covers is checked on disk, so that a hostile or damaged store fails the
field with a :class:`~hcsmito.io.errors.PlateError` naming the field and the chunk's key
instead of killing the process or reading made-up pixels:

- **presence**: a chunk file absent from the store (or an inner chunk absent from a shard's
  index, zarr v3 sharding) is an error by default; with ``missing_chunks="fill"`` it is read
  as the fill value, as zarr does, and its key is recorded (``ChunkReader.missing``) so the
  field can be flagged;
- **links and files**: a chunk path that is a symbolic-link loop, a dangling link, not a
  regular file (a folder, a device such as ``/dev/zero``, a FIFO), or larger than any codec
  makes of the chunk (zarr reads a chunk file whole: a sparse terabyte file fills memory);
- **blosc headers**: the c-blosc decoder trusts the sizes in its 16-byte header; a chunk whose
  header claims more compressed bytes than the file holds makes it read past its buffer
  (a 64-byte crafted chunk kills the process with SIGSEGV). The header's ``cbytes`` must
  equal the bytes on disk, ``nbytes`` the chunk's decoded size (``prod(chunk) × itemsize``
  where no filter stands between), a memcpyed chunk must be ``nbytes + 16`` long, and
  ``typesize`` / ``blocksize`` must be in range. With sizes that agree, c-blosc 1.21 checks
  its own block offsets (seeded fuzzing of the rest of the header and of the body found no
  crash). A chain where blosc is not the outermost codec (e.g. ``zstd`` around ``blosc``)
  cannot be checked without decoding and is refused (:func:`check_codecs`).

Other codecs (zstd, gzip/zlib, lz4, bz2, lzma) bound their reads by the buffer they are
given; they are not checked beyond the chunk's presence. A MemoryError while decoding is
reported as such (the field is too large for memory), not as a corrupt chunk.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from hcsmito.io.errors import PlateError

__all__ = ["MISSING_CHUNKS", "ChunkReader", "check_codecs", "lazy_array"]

_DASK_BLOCK_LIMIT = 64 * 2**20  # bytes: dask blocks are whole storage chunks up to this size
_BLOSC_HEADER = 16
_BLOSC_MEMCPYED = 0x02
_MISSING = 2**64 - 1  # a shard index entry of an absent inner chunk
MISSING_CHUNKS = ("error", "fill")


# --------------------------------------------------------------------------- codec plans


@dataclass(frozen=True)
class _Plan:
    """What to check in a chunk's bytes before zarr decodes them.

    ``blosc``: the outermost codec is blosc (its header starts the chunk's bytes);
    ``exact``: the decoded size of that blosc stream is known (``prod(chunk) × itemsize``);
    ``trailer``: bytes after the blosc stream (a crc32c checksum) to leave out.
    """

    blosc: bool = False
    exact: bool = False
    trailer: int = 0


@dataclass(frozen=True)
class _Sharding:
    inner_shape: tuple[int, ...]
    inner: _Plan
    index_at_end: bool
    index_crc: bool


def _is_blosc(codec) -> bool:
    name = type(codec).__name__.lower()
    return name in ("blosccodec", "blosc") or getattr(codec, "codec_id", None) == "blosc"


def _chain_plan(codecs, where: str) -> _Plan:
    """The plan of a zarr v3 codec chain without sharding (array->array, ->bytes, bytes->bytes)."""
    names = [type(c).__name__ for c in codecs]
    kinds = [_kind(c) for c in codecs]
    ab = [i for i, k in enumerate(kinds) if k == "ab"]
    bb = [c for c, k in zip(codecs, kinds, strict=True) if k == "bb"]
    blosc_at = [i for i, c in enumerate(bb) if _is_blosc(c)]
    if not blosc_at:
        return _Plan()
    last = len(bb) - 1
    trailer = 0
    if blosc_at[-1] != last:
        after = bb[blosc_at[-1] + 1 :]
        if all(type(c).__name__ == "Crc32cCodec" for c in after):
            trailer = 4 * len(after)
        else:
            raise PlateError(
                f"{where}: the codec chain {names} wraps blosc in another codec; hcsmito checks "
                "a blosc chunk's header before decoding it and cannot here. Re-export the "
                "array with blosc as the last codec (or with zstd)."
            )
    if len(blosc_at) > 1:
        raise PlateError(
            f"{where}: the codec chain {names} has blosc twice; re-export the array with one."
        )
    # decoded size is prod(chunk) x itemsize when the blosc stream holds the 'bytes' output
    exact = blosc_at[-1] == 0 and bool(ab) and names[ab[0]] == "BytesCodec"
    exact = exact and all(
        k != "aa" or n == "TransposeCodec" for k, n in zip(kinds, names, strict=True)
    )
    return _Plan(blosc=True, exact=exact, trailer=trailer)


def _kind(codec) -> str:
    from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec

    if isinstance(codec, ArrayArrayCodec):
        return "aa"
    if isinstance(codec, ArrayBytesCodec):
        return "ab"
    if isinstance(codec, BytesBytesCodec):
        return "bb"
    return "?"


def check_codecs(array: zarr.Array, where: str) -> _Plan | _Sharding:
    """How the chunks of ``array`` are checked before decoding; PlateError for a chain that
    cannot be checked (blosc wrapped in another codec, nested sharding, an unusual shard index).
    """
    md = array.metadata
    if md.zarr_format == 2:
        comp, filters = md.compressor, md.filters
        if comp is None or not _is_blosc(comp):
            return _Plan()
        return _Plan(blosc=True, exact=not filters)
    codecs = list(md.codecs)
    shard = [c for c in codecs if type(c).__name__ == "ShardingCodec"]
    if not shard:
        return _chain_plan(codecs, where)
    sc = shard[0]
    if any(type(c).__name__ == "ShardingCodec" for c in sc.codecs) or len(shard) > 1:
        raise PlateError(f"{where}: nested sharding is not read; re-export with one level.")
    if any(_kind(c) == "bb" for c in codecs):
        raise PlateError(
            f"{where}: a codec around the sharding codec ({[type(c).__name__ for c in codecs]}) "
            "is not read; re-export the array with the shards uncompressed as a whole."
        )
    idx = [type(c).__name__ for c in sc.index_codecs]
    little = getattr(sc.index_codecs[0], "endian", None)
    if idx not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]) or (
        little is not None and getattr(little, "value", little) != "little"
    ):
        raise PlateError(
            f"{where}: shard index codecs {idx} are not read (hcsmito reads the default "
            "little-endian 'bytes' index with or without 'crc32c'); re-export the array."
        )
    loc = getattr(sc.index_location, "value", sc.index_location)
    return _Sharding(
        inner_shape=tuple(int(c) for c in sc.chunk_shape),
        inner=_chain_plan(list(sc.codecs), where),
        index_at_end=loc == "end",
        index_crc=len(idx) == 2,
    )


def _blosc_problem(head: bytes, size: int, expected: int | None) -> str | None:
    """Why a blosc stream of ``size`` bytes starting with ``head`` must not be decoded."""
    if size < _BLOSC_HEADER or len(head) < _BLOSC_HEADER:
        return f"{size} bytes, shorter than a blosc header ({_BLOSC_HEADER})"
    version, _vlz, flags, typesize, nbytes, blocksize, cbytes = struct.unpack(
        "<BBBBIII", head[:_BLOSC_HEADER]
    )
    if version == 0 or version > 4:
        return f"blosc format version {version} is unknown"
    if cbytes != size:
        return f"the blosc header says {cbytes} compressed bytes but the chunk holds {size}"
    if expected is not None and nbytes != expected:
        return f"the blosc header says {nbytes} decoded bytes but the chunk holds {expected}"
    if typesize < 1:
        return "the blosc header's typesize is 0"
    if nbytes and not 1 <= blocksize <= max(nbytes, 1):
        return f"the blosc header's block size {blocksize} is outside 1..{nbytes}"
    if flags & _BLOSC_MEMCPYED and cbytes != nbytes + _BLOSC_HEADER:
        return f"a stored (memcpyed) blosc chunk of {nbytes} bytes must be {nbytes + 16} long"
    return None


# --------------------------------------------------------------------------- the reader


class ChunkReader:
    """Array-like handed to :func:`dask.array.from_array`: checks, then reads a region.

    Parameters
    ----------
    array : zarr.Array
        The level-0 array, opened read-only.
    where : str
        ``"plate.zarr/B/03/0/0"``: the array in messages.
    context : str
        ``"plate plate, well B/3, field 0"``: the field in messages.
    root : Path, optional
        The array's directory on disk; without it (not a local store) chunks are not checked.
    missing_chunks : {"error", "fill"}
        An absent chunk fails the read, or is read as the fill value and recorded in
        :attr:`missing`.

    Attributes
    ----------
    missing : list of str
        Keys (``"p.zarr/B/03/0/0/c/1/0/0/0"``) read as the fill value so far.
    """

    def __init__(
        self,
        array: zarr.Array,
        where: str,
        context: str,
        *,
        root: Path | None = None,
        missing_chunks: str = "error",
    ):
        if missing_chunks not in MISSING_CHUNKS:
            raise ValueError(f"missing_chunks={missing_chunks!r}: use one of {MISSING_CHUNKS}")
        self.array = array
        self.where = where  # "plate.zarr/B/03/0/0"
        self.context = context  # "plate plate.zarr, well B/3, field 0"
        self.root = root
        self.missing_chunks = missing_chunks
        self.missing: list[str] = []
        self._checked: set[tuple[int, ...]] = set()
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.storage_chunks = array.shards or array.chunks
        self.plan = check_codecs(array, where)

    # ----------------------------------------------------------------- reading

    def __getitem__(self, key):
        if self.root is not None:
            for coords in self._chunks_of(key):
                if coords not in self._checked:  # a shard may span several Dask blocks
                    self._check_chunk(coords)
                    self._checked.add(coords)
        try:
            return self.array[key]
        except MemoryError as exc:
            voxels = math.prod(_len(sl, n) for sl, n in zip(key, self.shape, strict=True))
            gib = voxels * self.dtype.itemsize / 2**30
            raise PlateError(
                f"{self.context}: not enough memory to read {gib:.1f} "
                f"GiB of '{self.where}'. Process the field on a machine with more memory, "
                "or crop / bin the field first."
            ) from exc
        except PlateError:
            raise
        except Exception as exc:  # a codec / IO error: find the culprit chunk
            raise self._error(key, exc) from exc

    def _chunks_of(self, key):
        ranges = []
        for sl, c, n in zip(key, self.storage_chunks, self.shape, strict=True):
            start, stop, _ = sl.indices(n)
            ranges.append(range(start // c, max(start // c + 1, -(-stop // c))))
        return product(*ranges)

    def _key(self, coords) -> str:
        return f"{self.where}/{self.array.metadata.encode_chunk_key(tuple(coords))}"

    def _fail(self, coords, why: str, fix: str) -> PlateError:
        return PlateError(f"{self.context}: cannot read chunk '{self._key(coords)}': {why}. {fix}")

    def _absent(self, key: str) -> None:
        if self.missing_chunks == "error":
            raise PlateError(
                f"{self.context}: chunk '{key}' is missing from the store, so part of the field "
                "would be read as the fill value. Copy the chunk again from the source or "
                "re-export the field, leave this well out, or read missing chunks as the fill "
                "value with missing_chunks='fill' (the field is then flagged)."
            )
        if key not in self.missing:
            self.missing.append(key)

    def _check_chunk(self, coords) -> None:
        """Presence, links and blosc headers of one storage chunk (a shard, if sharded)."""
        rel = self.array.metadata.encode_chunk_key(tuple(coords))
        path = self.root / rel
        try:
            st = os.stat(path)  # follows links: a loop raises ELOOP
        except FileNotFoundError:
            if os.path.islink(path):
                raise self._fail(
                    coords, "a symbolic link to nothing", "Replace the link by the chunk file."
                ) from None
            self._absent(self._key(coords))
            return
        except OSError as exc:
            why = "a symbolic-link loop" if exc.errno == errno.ELOOP else f"{exc.strerror}"
            raise self._fail(coords, why, "Replace it by the chunk file.") from None
        if not stat.S_ISREG(st.st_mode):
            raise self._fail(
                coords,
                "not a regular file (a folder, device or FIFO)",
                "Replace it by the chunk file.",
            )
        size = st.st_size
        bound = 2 * math.prod(self.storage_chunks) * self.dtype.itemsize + 2**20
        if size > bound:  # zarr would read it whole: a sparse 1 TB file fills the memory
            raise self._fail(
                coords,
                f"{size} bytes on disk, more than any codec makes of a chunk of "
                f"{math.prod(self.storage_chunks) * self.dtype.itemsize} bytes",
                _REPAIR,
            )
        try:
            if isinstance(self.plan, _Sharding):
                self._check_shard(coords, path, size)
            elif self.plan.blosc:
                expected = (
                    self._decoded_size(coords, self.array.chunks) if self.plan.exact else None
                )
                with open(path, "rb") as fh:
                    head = fh.read(_BLOSC_HEADER)
                why = _blosc_problem(head, size - self.plan.trailer, expected)
                if why:
                    raise self._fail(coords, f"not a valid blosc chunk: {why}", _REPAIR)
        except OSError as exc:
            raise self._fail(coords, f"{exc.strerror}", _REPAIR) from None

    def _decoded_size(self, coords, chunk_shape) -> int:
        # zarr stores edge chunks whole (padded), so the decoded size is the full chunk's
        return math.prod(chunk_shape) * self.dtype.itemsize

    def _check_shard(self, coords, path: Path, size: int) -> None:
        plan: _Sharding = self.plan  # type: ignore[assignment]
        grid = [s // c for s, c in zip(self.storage_chunks, plan.inner_shape, strict=True)]
        n_inner = math.prod(grid)
        index_size = 16 * n_inner + (4 if plan.index_crc else 0)
        if size < index_size:
            raise self._fail(
                coords,
                f"a shard of {size} bytes, shorter than its index ({index_size} bytes)",
                _REPAIR,
            )
        with open(path, "rb") as fh:
            fh.seek(size - index_size if plan.index_at_end else 0)
            raw = fh.read(16 * n_inner)
            index = np.frombuffer(raw, dtype="<u8").reshape(n_inner, 2)
            data_lo = 0 if plan.index_at_end else index_size
            data_hi = size - index_size if plan.index_at_end else size
            expected = (
                math.prod(plan.inner_shape) * self.dtype.itemsize if plan.inner.exact else None
            )
            for flat, (offset, nbytes) in enumerate(index.tolist()):
                inner = np.unravel_index(flat, grid)
                full = [int(s) * g + int(i) for s, g, i in zip(coords, grid, inner, strict=True)]
                if offset == _MISSING and nbytes == _MISSING:
                    if all(
                        f * c < n
                        for f, c, n in zip(full, plan.inner_shape, self.shape, strict=True)
                    ):
                        self._absent(f"{self._key(coords)} (inner chunk {tuple(full)})")
                    continue
                if not (data_lo <= offset and offset + nbytes <= data_hi):
                    raise self._fail(
                        coords,
                        f"a shard index entry (inner chunk {tuple(full)}) points at bytes "
                        f"{offset}..{offset + nbytes} outside the shard's {data_lo}..{data_hi}",
                        _REPAIR,
                    )
                if plan.inner.blosc:
                    fh.seek(offset)
                    head = fh.read(_BLOSC_HEADER)
                    why = _blosc_problem(head, nbytes - plan.inner.trailer, expected)
                    if why:
                        raise self._fail(
                            coords,
                            f"invalid blosc inner chunk {tuple(full)}: {why}",
                            _REPAIR,
                        )

    def _error(self, key, exc: Exception) -> PlateError:
        bad, cause = None, exc
        for coords in self._chunks_of(key):
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
            f"chunk '{self._key(bad)}'" if bad is not None else f"region {key} of '{self.where}'"
        )
        return PlateError(
            f"{self.context}: cannot read {chunk}: {type(cause).__name__}: {cause}. The chunk "
            "file is corrupt or truncated: copy it again from the source, re-export the field, "
            "or leave this well out."
        )


_REPAIR = (
    "The chunk is corrupt, truncated or crafted: it was not decoded. Copy it again from the "
    "source, re-export the field, or leave this well out."
)


def _len(sl, n: int) -> int:
    return len(range(*sl.indices(n)))


def lazy_array(
    array: zarr.Array,
    axes: str,
    where: str,
    context: str,
    token: str,
    *,
    root: Path | None = None,
    missing_chunks: str = "error",
) -> tuple[da.Array, ChunkReader]:
    """``array`` as a Dask array read on ``compute()``, one block per storage chunk or more.

    ``t`` and ``c`` blocks are one plane thick; the others grow from the storage chunks up
    to ``_DASK_BLOCK_LIMIT`` bytes. ``where`` and ``context`` name the array in errors;
    ``token`` (unique per array) names the Dask graph; ``root`` (the array's directory) and
    ``missing_chunks`` go to the :class:`ChunkReader`, returned too (its ``missing`` list).
    """
    reader = ChunkReader(array, where, context, root=root, missing_chunks=missing_chunks)
    storage = reader.storage_chunks
    wanted = tuple(1 if ax in "tc" else "auto" for ax in axes)
    chunks = da.core.normalize_chunks(
        wanted,
        shape=array.shape,
        dtype=array.dtype,
        previous_chunks=storage,
        limit=_DASK_BLOCK_LIMIT,
    )
    data = da.from_array(
        reader,
        chunks=chunks,
        name=f"hcsmito-read-{tokenize(token, array.shape, str(array.dtype), missing_chunks)}",
        asarray=False,
        fancy=False,
        lock=False,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )
    return data, reader
