"""Hostile and broken inputs (issue 13): each is refused with a clear error, never a crash.

A small synthetic plate is written once per NGFF version; each case copies it, breaks the
copy (crafted blosc chunks, missing chunks, link loops, NaN voxels, empty or huge axes,
seeded mutations of its metadata, broken plate maps) and checks that hcsmito either reads
it correctly or raises its own error with a message, and that the input is never modified
(every file hashed before and after). Cases that could kill the interpreter if a check
regressed (crafted blosc headers, fuzzed chunk bytes) run in a child process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.storage import LocalStore

from hcsmito.io.plate import PlateError, check_finite, open_plate
from hcsmito.io.writer import create_plate, write_image
from hcsmito.platemap import MAX_PROBLEMS, PlateMapError, validate_plate_map
from hcsmito.synth import write_synth_plate

SHAPE = (14, 32, 32)  # the smallest stack the generator accepts
WELLS = ["B2", "B3"]
CHUNK_NBYTES = SHAPE[0] * SHAPE[1] * SHAPE[2] * 2  # one channel, uint16
IMAGE = "B/02/0"  # the first field's image group
ARRAY = "B/02/0/0"


def _checksums(root: Path) -> dict[str, str]:
    """Every file (and link) under ``root``: its content's hash, or where a link points."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            with open(p, "rb") as fh:  # a sparse terabyte: its size and first MiB
                head = fh.read(2**26)
            size = p.stat().st_size
            out[str(p.relative_to(root))] = f"{size}:{hashlib.sha256(head).hexdigest()}"
    return out


@pytest.fixture(scope="module")
def synth_plates(tmp_path_factory) -> dict[str, Path]:
    """``{"0.5": plate, "0.4": plate}``: two wells of one field, written once."""
    root = tmp_path_factory.mktemp("synth")
    plates = {}
    for version in ("0.5", "0.4"):
        out = root / f"v{version[-1]}" / "s.zarr"
        write_synth_plate(out, wells=WELLS, fields=1, shape=SHAPE, ngff=version, seed=1)
        plates[version] = out
    return plates


@pytest.fixture(scope="module")
def pixels(synth_plates) -> np.ndarray:
    """The first field's pixels, (C, Z, Y, X), read from the intact 0.5 plate."""
    return open_plate(synth_plates["0.5"]).read_field("B2", 0).data.compute()


def _copy(synth_plates, tmp_path: Path, version: str) -> Path:
    dst = tmp_path / "s.zarr"
    shutil.copytree(synth_plates[version], dst, symlinks=True)
    return dst


def _rewrite(path: Path, pixels: np.ndarray, **kwargs) -> None:
    """Replace the first field's level 0 by the same pixels with other codecs / sharding."""
    grp = zarr.open_group(LocalStore(path), mode="r+")[IMAGE]
    arr = grp.create_array(
        "0",
        shape=pixels.shape,
        dtype=pixels.dtype,
        dimension_names=list("czyx"),
        overwrite=True,
        **kwargs,
    )
    arr[...] = pixels


def _chunk(path: Path, version: str, c: int = 1) -> Path:
    return path / ARRAY / (f"c/{c}/0/0/0" if version == "0.5" else f"{c}/0/0/0")


@pytest.fixture
def untouched():
    """Call with a plate before the case; the case's end checks that no file changed."""
    seen: list[tuple[Path, dict]] = []

    def watch(path: Path) -> Path:
        seen.append((path, _checksums(path)))
        return path

    yield watch
    for path, before in seen:
        assert _checksums(path) == before, f"{path} was modified"


# --------------------------------------------------------------------------- crafted blosc


def _blosc(flags: int, typesize: int, nbytes: int, blocksize: int, cbytes: int, size=64) -> bytes:
    head = struct.pack("<BBBBIII", 2, 1, flags, typesize, nbytes, blocksize, cbytes)
    return (head + struct.pack("<I", 0x7FFFFFF0) + b"\xff" * size)[:size]


def _crafted(n: int) -> dict[str, tuple[bytes, str]]:
    """Crafted chunks for a chunk of ``n`` decoded bytes: (bytes, what the message says)."""
    return {
        # the SIGSEGV of the issue: a stored (memcpyed) chunk claiming 16 MiB in 64 bytes
        "memcpyed, cbytes lies (SIGSEGV)": (
            _blosc(0x03, 2, 1 << 24, 1 << 24, (1 << 24) + 16),
            "says 16777232 compressed bytes but the chunk holds 64",
        ),
        # reads n bytes past a 64-byte buffer: garbage pixels, exit 0, no word
        "memcpyed, right nbytes, cbytes lies": (
            _blosc(0x03, 2, n, n, n + 16),
            f"says {n + 16} compressed bytes but the chunk holds 64",
        ),
        "cbytes 1 GiB (SIGSEGV)": (_blosc(0x01, 2, n, 64, 1 << 30), "says 1073741824 compressed"),
        "nbytes 1 GiB": (_blosc(0x01, 2, 1 << 30, 4096, 64), "says 1073741824 decoded bytes"),
        "nbytes too small": (
            _blosc(0x01, 2, 16, 16, 64),
            f"16 decoded bytes but the chunk holds {n}",
        ),
        "typesize 0": (_blosc(0x01, 0, n, 64, 64), "typesize is 0"),
        "blocksize 0": (_blosc(0x01, 2, n, 0, 64), "block size 0 is outside"),
        "blocksize > nbytes": (_blosc(0x01, 2, n, n + 1, 64), f"block size {n + 1} is outside"),
        "memcpyed, wrong length": (_blosc(0x02, 2, n, n, 64), f"must be {n + 16} long"),
        "version 0": (b"\x00" + _blosc(0x01, 2, n, 64, 64)[1:], "format version 0"),
        "shorter than a header": (
            _blosc(0x01, 2, n, 64, 10, size=10),
            "shorter than a blosc header",
        ),
        "empty file": (b"", "0 bytes, shorter than a blosc header"),
    }


CRAFTED = sorted(_crafted(1))
INNER = (1, 7, 16, 16)  # inner chunks of the sharded store
KINDS = {"0.5-blosc": CHUNK_NBYTES, "0.4": CHUNK_NBYTES, "0.5-sharded-blosc": 7 * 16 * 16 * 2}

_CHILD = r"""
import json, sys
from hcsmito.io.plate import PlateError, open_plate
out = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        open_plate(path).read_field("B2", 0).data.compute()
        out[name] = ["read", ""]
    except PlateError as exc:
        out[name] = ["PlateError", str(exc)]
    except Exception as exc:
        out[name] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def _read_in_child(plates: dict[str, Path]) -> dict[str, list[str]]:
    """Read the first field of each plate in one child process; a crash fails the test."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps({k: str(v) for k, v in plates.items()})],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"the reader died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.splitlines()[-1])


def _with_inner_chunk(shard: Path, n_inner: int, data: bytes) -> None:
    """Make ``data`` inner chunk 0 of ``shard`` (index at the end, with its crc32c)."""
    import google_crc32c  # zarr's crc32c dependency

    raw = shard.read_bytes()
    size = 16 * n_inner + 4
    index = np.frombuffer(raw[-size:-4], "<u8").reshape(-1, 2).copy()
    body = raw[:-size]
    index[0] = (len(body), len(data))
    idx = index.tobytes()
    shard.write_bytes(body + data + idx + struct.pack("<I", google_crc32c.value(idx)))


@pytest.fixture(scope="module")
def crafted_results(synth_plates, pixels, tmp_path_factory):
    """Every crafted chunk in every kind of store, all read in one child process."""
    root = tmp_path_factory.mktemp("crafted")
    plates, before = {}, {}
    for kind, n in KINDS.items():
        base = root / kind / "s.zarr"
        shutil.copytree(synth_plates[kind[:3]], base)
        if kind == "0.5-blosc":
            _rewrite(base, pixels, chunks=(1, *SHAPE), compressors=BloscCodec(cname="lz4"))
        elif kind == "0.5-sharded-blosc":
            _rewrite(base, pixels, chunks=INNER, shards=(1, *SHAPE),
                     compressors=BloscCodec(cname="zstd"))  # fmt: skip
        for i, (name, (data, _)) in enumerate(_crafted(n).items()):
            path = root / kind / str(i) / "s.zarr"
            shutil.copytree(base, path)
            if kind == "0.5-sharded-blosc":
                _with_inner_chunk(_chunk(path, "0.5"), 8, data)
            else:
                _chunk(path, kind[:3]).write_bytes(data)
            plates[f"{kind}|{name}"] = path
            before[f"{kind}|{name}"] = _checksums(path)
    got = _read_in_child(plates)
    for key, path in plates.items():
        assert _checksums(path) == before[key], f"{path} was modified"
    return {tuple(k.split("|")): v for k, v in got.items()}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_blosc_chunk_fails_the_field_not_the_process(crafted_results, kind, case):
    verdict, msg = crafted_results[(kind, case)]
    assert verdict == "PlateError", msg
    assert msg.startswith("plate s, well B/2, field 0: cannot read chunk 's.zarr/B/02/0/0/")
    assert "c/1/0/0/0" in msg or "1/0/0/0" in msg
    assert _crafted(KINDS[kind])[case][1] in msg
    assert "was not decoded" in msg and "re-export" in msg


_FUZZ_CHILD = r"""
import json, struct, sys, numpy as np
from numcodecs import Blosc
from hcsmito.io._chunks import _blosc_problem
rng = np.random.default_rng(int(sys.argv[1]))
data = rng.integers(0, 3000, int(sys.argv[2]) // 2).astype("<u2")
verdicts = {"refused": 0, "decoded": 0, "error": 0}
for cname in ("lz4", "zstd", "blosclz", "zlib"):
    enc = bytes(Blosc(cname=cname, shuffle=1, blocksize=4096).encode(data))
    for i in range(int(sys.argv[3])):
        b = bytearray(enc)
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(0, min(len(b), 64) if rng.random() < 0.7 else len(b)))
            b[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            b = b[: int(rng.integers(0, len(b)))]
        if _blosc_problem(bytes(b[:16]), len(b), len(data) * 2):
            verdicts["refused"] += 1
            continue
        try:  # what passes the checks goes to the decoder: it may fail, never crash
            Blosc().decode(bytes(b))
            verdicts["decoded"] += 1
        except Exception:
            verdicts["error"] += 1
# the codecs left unchecked bound their reads by the buffer: mutated frames never crash them
from numcodecs import LZ4, Zlib, Zstd
for codec in (LZ4(), Zstd(), Zlib()):
    enc = bytes(codec.encode(data))
    for i in range(int(sys.argv[3])):
        b = bytearray(enc)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, min(len(b), 32)))] = int(rng.integers(0, 256))
        try:
            codec.decode(bytes(b[: int(rng.integers(1, len(b) + 1))]))
        except Exception:
            pass
print(json.dumps(verdicts))
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_blosc_chunks_never_reach_a_crash(seed):
    """Seeded byte mutations of real blosc chunks, checked then decoded in a child process
    (and of lz4 / zstd / zlib frames, decoded unchecked)."""
    proc = subprocess.run(
        [sys.executable, "-c", _FUZZ_CHILD, str(seed), str(CHUNK_NBYTES), "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"decoder crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    verdicts = json.loads(proc.stdout.splitlines()[-1])
    assert sum(verdicts.values()) == 400 and verdicts["refused"] > 0


def test_blosc_wrapped_in_another_codec_is_refused_at_open(synth_plates, pixels, tmp_path):
    path = _copy(synth_plates, tmp_path, "0.5")
    _rewrite(path, pixels, chunks=(1, *SHAPE), compressors=[BloscCodec(), ZstdCodec()])
    with pytest.raises(PlateError, match=r"^s\.zarr/B/02/0/0: the codec chain .* wraps blosc"):
        open_plate(path)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_garbage_behind_a_valid_header_is_named(synth_plates, tmp_path, version, untouched):
    path = _copy(synth_plates, tmp_path, version)
    chunk = _chunk(path, version)
    raw = bytearray(chunk.read_bytes())
    raw[40:] = bytes(len(raw) - 40)  # zeros after the header (and the zstd frame start)
    chunk.write_bytes(bytes(raw))
    untouched(path)
    field = open_plate(path).read_field("B2", 0)
    with pytest.raises(PlateError, match=r"^plate s, well B/2, field 0: cannot read chunk"):
        field.data.compute()


# --------------------------------------------------------------------------- missing chunks


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_missing_chunk_fails_the_field_or_is_filled_and_listed(
    synth_plates, pixels, tmp_path, version, untouched
):
    path = _copy(synth_plates, tmp_path, version)
    _chunk(path, version).unlink()  # the mito channel
    untouched(path)
    plate = open_plate(path)  # metadata is fine
    key = f"s.zarr/{ARRAY}/" + ("c/1/0/0/0" if version == "0.5" else "1/0/0/0")
    with pytest.raises(PlateError) as err:
        plate.read_field("B2", 0).channel(1).compute()
    msg = str(err.value)
    assert msg.startswith(f"plate s, well B/2, field 0: chunk '{key}' is missing from the store")
    assert "missing_chunks='fill'" in msg
    # the other channels still read
    np.testing.assert_array_equal(plate.read_field("B2", 0).channel(0).compute(), pixels[0])
    field = plate.read_field("B2", 0, missing_chunks="fill")
    assert not field.read_channel(1).any()  # the fill value, 0
    assert field.missing_chunks == [key]


def test_missing_inner_chunk_of_a_shard(synth_plates, pixels, tmp_path, untouched):
    path = _copy(synth_plates, tmp_path, "0.5")
    _rewrite(path, pixels, chunks=INNER, shards=(1, *SHAPE))
    shard = _chunk(path, "0.5", c=2)
    import google_crc32c

    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(raw[-(16 * 8 + 4) : -4], "<u8").reshape(-1, 2).copy()
    index[3] = 2**64 - 1  # inner chunk (0, 1, 1) absent
    idx = index.tobytes()
    shard.write_bytes(
        bytes(raw[: -(16 * 8 + 4)]) + idx + struct.pack("<I", google_crc32c.value(idx))
    )
    (_chunk(path, "0.5", c=0)).unlink()  # and a whole shard
    untouched(path)
    plate = open_plate(path)
    with pytest.raises(PlateError, match=r"chunk 's\.zarr/B/02/0/0/c/2/0/0/0 \(inner chunk "
                       r"\(2, 0, 1, 1\)\)' is missing"):  # fmt: skip
        plate.read_field("B2", 0).channel(2).compute()
    with pytest.raises(PlateError, match=r"chunk 's\.zarr/B/02/0/0/c/0/0/0/0' is missing"):
        plate.read_field("B2", 0).channel(0).compute()
    field = plate.read_field("B2", 0, missing_chunks="fill")
    got = field.data.compute()
    expected = pixels.copy()
    expected[0] = 0
    expected[2, :7, 16:, 16:] = 0
    np.testing.assert_array_equal(got, expected)
    assert sorted(field.missing_chunks) == [
        "s.zarr/B/02/0/0/c/0/0/0/0",
        "s.zarr/B/02/0/0/c/2/0/0/0 (inner chunk (2, 0, 1, 1))",
    ]


def test_shard_index_pointing_outside_is_refused(synth_plates, pixels, tmp_path):
    path = _copy(synth_plates, tmp_path, "0.5")
    _rewrite(path, pixels, chunks=(1, 7, 16, 16), shards=(1, *SHAPE))
    shard = _chunk(path, "0.5")
    import google_crc32c

    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(raw[-(16 * 8 + 4) : -4], "<u8").reshape(-1, 2).copy()
    index[0] = (10, 10**9)
    idx = index.tobytes()
    shard.write_bytes(
        bytes(raw[: -(16 * 8 + 4)]) + idx + struct.pack("<I", google_crc32c.value(idx))
    )
    with pytest.raises(PlateError, match=r"shard index entry \(inner chunk \(1, 0, 0, 0\)\) "
                       r"points at bytes 10\.\.1000000010 outside"):  # fmt: skip
        open_plate(path).read_field("B2", 0).data.compute()
    shard.write_bytes(b"\x00" * 20)
    with pytest.raises(PlateError, match=r"a shard of 20 bytes, shorter than its index"):
        open_plate(path).read_field("B2", 0).data.compute()


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("kind", ["loop", "dangling", "directory", "device", "fifo", "sparse"])
def test_bad_chunk_path_is_one_clear_line(synth_plates, tmp_path, version, kind, untouched):
    path = _copy(synth_plates, tmp_path, version)
    chunk = _chunk(path, version)
    chunk.unlink()
    if kind == "loop":
        other = chunk.with_name("loop")
        os.symlink(other.name, chunk)
        os.symlink(chunk.name, other)
    elif kind == "dangling":
        os.symlink("nowhere", chunk)
    elif kind == "directory":
        chunk.mkdir()
    elif kind == "device":
        os.symlink("/dev/zero", chunk)  # zarr would read it for ever
    elif kind == "fifo":
        os.mkfifo(chunk)  # zarr would wait for ever
    else:
        with open(chunk, "wb") as fh:  # 1 TiB on paper, nothing on disk
            fh.truncate(2**40)
    untouched(path)
    with pytest.raises(PlateError) as err:
        open_plate(path).read_field("B2", 0).data.compute()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        "plate s, well B/2, field 0: cannot read chunk 's.zarr"
    )
    want = {
        "loop": "symbolic-link loop",
        "dangling": "link to nothing",
        "directory": "not a regular file",
        "device": "not a regular file",
        "fifo": "not a regular file",
        "sparse": "1099511627776 bytes on disk, more than any codec makes",
    }
    assert want[kind] in msg


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("node", ["", "B/02", IMAGE, ARRAY])
@pytest.mark.parametrize("kind", ["loop", "device", "dangling"])
def test_bad_metadata_file_is_refused_at_open(synth_plates, tmp_path, version, node, kind):
    path = _copy(synth_plates, tmp_path, version)
    name = "zarr.json" if version == "0.5" else (".zarray" if node == ARRAY else ".zattrs")
    f = path / node / name
    f.unlink()
    if kind == "loop":
        os.symlink(name, f)
    elif kind == "device":
        os.symlink("/dev/zero", f)  # zarr reads metadata whole: it would fill the memory
    else:
        os.symlink("gone.json", f)
    want = {"loop": "symbolic-link loop", "device": "not a regular file", "dangling": "to nothing"}
    where = f"s.zarr/{node}" if node else "s.zarr"
    with pytest.raises(PlateError, match=rf"^{re.escape(where)}: {re.escape(name)} .*{want[kind]}"):
        open_plate(path)


# --------------------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_refused_or_replaced(tmp_path, bad, untouched):
    path = tmp_path / "f.zarr"
    create_plate(path, wells=["B3"], fields_per_well=1)
    img = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32) + 1
    img[1, 0, :2, :3] = bad
    write_image(path, "B3", 0, img, axes="czyx", voxel_size={"z": 1, "y": 0.2, "x": 0.2},
                channel_labels=["GFP", "Mito"])  # fmt: skip
    untouched(path)
    field = open_plate(path).read_field("B3", 0)
    np.testing.assert_array_equal(field.read_channel(0), img[0])  # finite: as it is
    with pytest.raises(
        PlateError,
        match=r"^plate f, well B/3, field 0: channel 'Mito' has 6 non-finite voxels \("
        + ("6 NaN, 0 Inf" if np.isnan(bad) else "0 NaN, 6 Inf")
        + r"\) of 192",
    ):
        field.read_channel(1)
    got = field.read_channel(1, nonfinite="replace")
    assert np.isfinite(got).all() and got[0, 0, 0] == img[1][np.isfinite(img[1])].min()
    assert field.nonfinite == {"Mito": 6}


def test_check_finite_leaves_integers_and_clean_floats():
    ints = np.arange(10, dtype=np.uint16)
    assert check_finite(ints, where="w", channel="c") == (ints, 0)
    only_nan = np.full(4, np.nan, np.float32)
    got, n = check_finite(only_nan, where="w", channel="c", nonfinite="replace")
    assert n == 4 and not got.any()
    with pytest.raises(ValueError, match="nonfinite='zero'"):
        check_finite(only_nan, where="w", channel="c", nonfinite="zero")


# --------------------------------------------------------------------------- axes and sizes


def _edit_array_meta(path: Path, version: str, fn) -> None:
    f = path / ARRAY / ("zarr.json" if version == "0.5" else ".zarray")
    meta = json.loads(f.read_text())
    fn(meta)
    f.write_text(json.dumps(meta))


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("axis", [0, 1, 3])
def test_zero_length_axis_is_refused_with_the_node(synth_plates, tmp_path, version, axis):
    path = _copy(synth_plates, tmp_path, version)
    _edit_array_meta(path, version, lambda m: m["shape"].__setitem__(axis, 0))
    with pytest.raises(
        PlateError,
        match=rf"^s\.zarr/B/02/0/0: level 0 has shape .*: axis '{'czyx'[axis]}' has length 0",
    ):
        open_plate(path)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_huge_field_is_refused_by_the_size_check(synth_plates, tmp_path, version):
    path = _copy(synth_plates, tmp_path, version)
    _edit_array_meta(path, version, lambda m: m.update(shape=[3, 10_000, 10_000, 10_000]))
    field = open_plate(path).read_field("B2", 0)  # metadata only: opens
    with pytest.raises(PlateError) as err:
        field.check_memory(64 * 2**30, channels=[0, 1])
    msg = str(err.value)
    assert msg.startswith("plate s, well B/2, field 0: the field ({'c': 3, 'z': 10000")
    assert "needs 3.6 TiB of memory" in msg and "budget of 64.0 GiB" in msg
    small = open_plate(synth_plates[version]).read_field("B2", 0)
    assert small.check_memory(2**20) == 3 * CHUNK_NBYTES
    assert small.check_memory(2**30, channels=[1], bytes_per_voxel=16) == 8 * CHUNK_NBYTES


def test_time_points_each_a_field_or_refused(tmp_path, untouched):
    path = tmp_path / "t.zarr"
    create_plate(path, wells=["B3"], fields_per_well=1, version="0.4")
    img = np.arange(2 * 2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 2, 3, 4, 5)
    write_image(path, "B3", 0, img, axes="tczyx", voxel_size={"z": 1, "y": 0.2, "x": 0.2},
                channel_labels=["GFP", "Mito"])  # fmt: skip
    untouched(path)
    with pytest.raises(PlateError, match=r"well B/3, field 0 has 2 time points.*time_points="):
        open_plate(path, time_points="refuse")
    with pytest.raises(PlateError, match=r"field 0: the field has 2 time points"):
        open_plate(path).read_field("B3", 0).read_channel(1)
    plate = open_plate(path, time_points="fields")
    assert [(r.well, r.field, r.t) for r in plate.fields] == [("B/3", 0, 0), ("B/3", 0, 1)]
    for ref in plate.fields:
        field = plate.read_field(ref.well, ref.field, t=ref.t)
        np.testing.assert_array_equal(field.read_channel(1), img[ref.t, 1])
    with pytest.raises(PlateError, match=r"field 0 has time points 0\.\.1, not 2"):
        plate.read_field("B3", 0, t=2)


# --------------------------------------------------------------------------- fuzzed NGFF


def _meta_file(path: Path, node: str, version: str, array: bool = False) -> Path:
    name = "zarr.json" if version == "0.5" else (".zarray" if array else ".zattrs")
    return path / node / name


_NODES = [("", False), ("B", False), ("B/02", False), (IMAGE, False), (ARRAY, True)]
_JUNK = [None, 0, -1, 1e308, float("nan"), "", "..", "/etc", "B/../..", [], {}, [[]], True,
         "x" * 300, 2**63, -(2**63), "0", "µm", {"type": "scale"}, [0, 0, 0, 0]]  # fmt: skip


def _paths(obj, at=()):
    """Every (container, key) inside a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield obj, k
            yield from _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield obj, i
            yield from _paths(v, (*at, i))


def _mutate(doc, rng: np.random.Generator):
    """One random edit of a JSON document: replace, delete, duplicate or retype a value."""
    doc = copy.deepcopy(doc)
    spots = list(_paths(doc))
    if not spots:
        return doc
    parent, key = spots[int(rng.integers(len(spots)))]
    op = int(rng.integers(4))
    if op == 0:
        parent[key] = copy.deepcopy(_JUNK[int(rng.integers(len(_JUNK)))])
    elif op == 1:
        del parent[key]
    elif op == 2 and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    else:
        v = parent[key]
        parent[key] = str(v) if not isinstance(v, str) else (int(v) if v.isdigit() else [v])
    return doc


FUZZ_SEEDS = range(72)


@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_fuzzed_metadata_opens_or_is_refused(synth_plates, pixels, tmp_path, seed, untouched):
    """A mutated .zattrs / zarr.json either reads the field right or raises PlateError."""
    rng = np.random.default_rng(seed)
    version = "0.5" if seed % 2 == 0 else "0.4"
    path = _copy(synth_plates, tmp_path, version)
    node, is_array = _NODES[seed // 2 % len(_NODES)]
    if version == "0.4" and not is_array and rng.random() < 0.3:
        f = path / node / ".zgroup"
    else:
        f = _meta_file(path, node, version, is_array)
    doc = json.loads(f.read_text())
    for _ in range(int(rng.integers(1, 4))):
        doc = _mutate(doc, rng)
    f.write_text(json.dumps(doc))
    untouched(path)
    try:
        plate = open_plate(path)
        field = plate.read_field("B2", 0)
        got = field.data.compute()
    except PlateError as exc:
        msg = str(exc)
        assert msg and ("s.zarr" in msg or "plate" in msg), msg
        return
    # accepted: then it must read the pixels the plate holds
    if got.shape == pixels.shape:
        np.testing.assert_array_equal(got, pixels)


# --------------------------------------------------------------------------- plate maps


PLATE_WELLS = ["B/02", "B/03", "C/02", "C/03"]


def _map(tmp_path: Path, data: bytes | str, name: str = "map.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


GOOD_MAPS = {
    "comma": "well,condition\nB02,DMSO\nB3,cytD\nC/2,DMSO\n",
    "semicolon": "well;condition;replicate\nB02;DMSO;1\nB3;cytD;1\nC/2;DMSO;2\n",
    "tab": "well\tcondition\nB02\tDMSO\nB3\tcytD\nC/2\tDMSO\n",
    "crlf": "well,condition\r\nB02,DMSO\r\nB3,cytD\r\nC/2,DMSO\r\n",
    "quoted comma": 'well,condition\nB02,"DMSO, 0.1%"\nB3,cytD\nC/2,DMSO\n',
}


@pytest.mark.parametrize("case", sorted(GOOD_MAPS))
def test_plate_map_delimiters(tmp_path, case):
    df = validate_plate_map(_map(tmp_path, GOOD_MAPS[case]), PLATE_WELLS)
    assert list(df["well"]) == ["B/2", "B/3", "C/2"]
    assert df["condition"].iloc[1] == "cytD"
    assert df.attrs["wells_not_in_map"] == ["C/3"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "utf-16"], ids=lambda e: e)
def test_plate_map_encodings(tmp_path, encoding):
    text = "well,condition\nB02,Zellkultur 10 µM\nB3,Kontrolle é\n"
    df = validate_plate_map(_map(tmp_path, text.encode(encoding)), PLATE_WELLS)
    assert list(df["condition"]) == ["Zellkultur 10 µM", "Kontrolle é"]


SPECIALS = ["$\\alpha$-KG 50$", "a_b^c {x} % #", "<b>bold</b> & co", 'say "hi"']


def test_plate_map_conditions_are_returned_verbatim(tmp_path):
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([["well", "condition"], *zip(PLATE_WELLS, SPECIALS, strict=True)])
    df = validate_plate_map(_map(tmp_path, buf.getvalue()), PLATE_WELLS)
    assert list(df["condition"]) == SPECIALS


BAD_MAPS = {
    "empty file": ("", r"is empty: write a header"),
    "blank lines only": ("\n\n  \n", r"is empty"),
    "header only": ("well,condition\n", r"no wells after the header"),
    "no condition column": ("well,treatment\nB2,DMSO\n", r"no 'condition' column"),
    "no well column": ("position,condition\nB2,DMSO\n", r"no 'well' column"),
    "bad well name": (
        "well,condition\nB2,DMSO\nZZ9x,X\n",
        r"line 3: well 'ZZ9x' is not understood",
    ),
    "duplicated well": (
        "well,condition\nB2,DMSO\nB/02,X\n",
        r"line 3: well B/2 is already listed on line 2",
    ),
    "well not in plate": (
        "well,condition\nB2,DMSO\nH12,X\n",
        r"line 3: well H/12 is not in the plate",
    ),
    "empty condition": ("well,condition\nB2,\n", r"line 2: well B/2 has no condition"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"is not a text file"),
    "too many values": ("well,condition\nB2,DMSO,extra\n", r"3 values for 2 columns"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_plate_map_problems_are_named(tmp_path, case, untouched):
    text, pattern = BAD_MAPS[case]
    p = _map(tmp_path, text)
    untouched(tmp_path)
    with pytest.raises(PlateMapError, match=pattern) as err:
        validate_plate_map(p, PLATE_WELLS)
    assert str(p) in str(err.value)


def test_plate_map_missing_or_not_a_file(tmp_path):
    with pytest.raises(PlateMapError, match=r"does not exist: give the path"):
        validate_plate_map(tmp_path / "none.csv", PLATE_WELLS)
    with pytest.raises(PlateMapError, match=r"is not a file"):
        validate_plate_map(tmp_path, PLATE_WELLS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_plate_map_unreadable(tmp_path):
    p = _map(tmp_path, "well,condition\nB2,X\n")
    p.chmod(0)
    with pytest.raises(PlateMapError, match=r"cannot be read"):
        validate_plate_map(p, PLATE_WELLS)


def test_plate_map_lists_at_most_20_problems(tmp_path):
    rows = "".join(f"Q{i},X\n" for i in range(1, 31))  # 30 wells, none in the plate
    with pytest.raises(PlateMapError) as err:
        validate_plate_map(_map(tmp_path, "well,condition\n" + rows), PLATE_WELLS)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("30 problem(s):")
    assert len(lines) == 1 + MAX_PROBLEMS + 1 and lines[-1] == "  and 10 more"


@pytest.mark.parametrize("seed", range(30))
def test_fuzzed_plate_maps_parse_or_are_refused(tmp_path, seed):
    rng = np.random.default_rng(seed)
    raw = bytearray(b"well,condition,replicate,day\nB02,DMSO,1,1\nB3,cytD,1,1\nC/2,DMSO,2,1\n")
    for _ in range(int(rng.integers(1, 6))):
        op = int(rng.integers(3))
        pos = int(rng.integers(len(raw) + 1))
        if op == 0 and raw:
            del raw[min(pos, len(raw) - 1)]
        elif op == 1:
            raw.insert(pos, int(rng.choice(list(b',;\t\n"$/B0 \xe9\xff\x00'))))
        elif raw:
            raw[min(pos, len(raw) - 1)] = int(rng.integers(256))
    p = _map(tmp_path, bytes(raw))
    try:
        df = validate_plate_map(p, PLATE_WELLS)
    except PlateMapError as exc:
        assert str(p) in str(exc)
        return
    assert set(df["well"]) <= {"B/2", "B/3", "C/2", "C/3"} and df["condition"].map(bool).all()


# --------------------------------------------------------------------------- synth leftovers


def test_refused_synth_leaves_nothing_and_names_the_cli_fix(tmp_path):
    out = tmp_path / "p.zarr"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"p\.zarr exists: choose another --out") as err:
        write_synth_plate(out, wells=["B2"], fields=1, shape=SHAPE)
    assert "overwrite=True" not in str(err.value).split("(in Python")[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]
    assert (out / "mine.txt").read_text() == "keep me"
    # a generator refusal after the checks: nothing half-written is left behind
    with pytest.raises(ValueError, match="too short"):
        write_synth_plate(tmp_path / "q.zarr", wells=["B2"], fields=1, shape=(8, 32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]
    with pytest.raises(FileExistsError, match="is not a zarr store"):
        write_synth_plate(out, wells=["B2"], fields=1, shape=SHAPE, overwrite=True)
    assert (out / "mine.txt").read_text() == "keep me"


def test_memory_error_while_reading_is_not_called_corruption(synth_plates, monkeypatch):
    field = open_plate(synth_plates["0.5"]).read_field("B2", 0)

    class Huge:  # the zarr array, failing as a 10^12-voxel read does
        def __getitem__(self, key):
            raise MemoryError("Unable to allocate 1.8 TiB")

    monkeypatch.setattr(field._reader, "root", None)  # no chunk checks: straight to zarr
    monkeypatch.setattr(field._reader, "array", Huge())
    with pytest.raises(PlateError) as err:
        field.read_channel(0)
    msg = str(err.value)
    assert msg.startswith("plate s, well B/2, field 0: not enough memory to read 0.0 GiB of")
    assert "corrupt" not in msg and "more memory" in msg


# --------------------------------------------------------------------------- config values

NON_FINITE = {
    "foci.threshold_k=.inf": "foci.threshold_k",
    "msc.threshold_value=.nan": "msc.threshold_value",
    "jurkat.threshold_value=-.inf": "jurkat.threshold_value",
    "tnt.tube_radius_um=[0.1, .inf]": "tnt.tube_radius_um.1",
    "optics.emission_um.mito=.nan": "optics.emission_um.mito",
    "qc.empty_snr=.inf": "qc.empty_snr",
    "adhesion.min_lift_um=.nan": "adhesion.min_lift_um",
}


@pytest.mark.parametrize("item", sorted(NON_FINITE))
def test_non_finite_config_values_are_one_line_naming_the_key(item):
    """Before: `--set foci.threshold_k=.inf` and a NaN manual threshold ran (0 objects)."""
    from hcsmito.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(overrides=[item])
    msg = str(err.value)
    assert "\n" not in msg and f"{NON_FINITE[item]}: Input should be a finite number" in msg


def test_non_finite_value_in_a_config_file(tmp_path):
    from hcsmito.config import ConfigError, load_config

    conf = tmp_path / "c.yaml"
    conf.write_text("msc:\n  threshold_method: manual\n  threshold_value: .nan\n")
    with pytest.raises(ConfigError, match=r"c\.yaml\): msc\.threshold_value: .*finite"):
        load_config(conf)


# --------------------------------------------------------------------------- listeners


def _listeners() -> set[tuple[int, str]]:
    """(pid, host) of every listening TCP socket of this process and its children."""
    import psutil

    me = psutil.Process()
    out = set()
    for proc in [me, *me.children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                out.add((proc.pid, conn.laddr.ip))
    return out


def test_threads_cluster_listens_on_localhost_only():
    """Before: a `threads` run's worker dashboard listened on 0.0.0.0 (and ::). (The
    ``processes`` cluster binds its scheduler, workers and nannies to 127.0.0.1 too; it
    takes 5 s to start, and passed before: not repeated here.)"""
    from hcsmito.cluster import dask_client

    before = _listeners()
    with dask_client("threads", 1, "cpu", quiet=True) as client:
        assert client.scheduler.address.startswith("inproc://")  # no TCP scheduler port
        opened = _listeners() - before
        assert client.submit(sum, [1, 2]).result() == 3
    assert opened, "the cluster opened no listener (the dashboards at least)"
    assert {host for _, host in opened} == {"127.0.0.1"}, opened


# --------------------------------------------------------------------------- runs: resume, lock


def _cli(argv, capsys) -> tuple[int, str, str]:
    """``hcsmito ARGV`` in-process: exit code, stdout, stderr."""
    from hcsmito.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, command: str = "run") -> str:
    """The single error line of a refused command (no traceback, no second error)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"hcsmito {command}: error")]
    assert len(lines) == 1, err
    return lines[0]


RUN = ["--backend", "cpu", "--no-progress", "--workers", "1"]


@pytest.fixture(scope="module")
def reference_out(synth_plates, tmp_path_factory) -> Path:
    """One finished run of the 0.5 plate (both fields, no report)."""
    from hcsmito.runner import run_plate

    out = tmp_path_factory.mktemp("ref") / "out"
    before = _checksums(synth_plates["0.5"])
    s = run_plate(synth_plates["0.5"], out, backend="cpu", scheduler="threads", workers=1,
                  progress=False, report=False)  # fmt: skip
    assert s.ok and len(s.processed) == 2
    assert _checksums(synth_plates["0.5"]) == before
    return out


def _copy_out(reference_out: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(reference_out, out)
    return out


LEDGER_DAMAGE = {
    "ledger empty": ("ledger/B3_f0.json", b"", "ledger/B3_f0.json is empty"),
    "ledger torn": ("ledger/B3_f0.json", b'{"well": "B/3", "sta', "is not JSON"),
    "ledger a list": ("ledger/B3_f0.json", b"[1, 2]", "is not a ledger entry"),
    "ledger no status": ("ledger/B3_f0.json", b'{"well": "B/3"}', "is not a ledger entry"),
    "part empty": ("tables/parts/foci/B3_f0.parquet", b"", "is empty (0 bytes)"),
    "part not parquet": ("tables/parts/cells/B3_f0.parquet", b"PAR1 no", "is unreadable"),
}


@pytest.mark.parametrize("case", sorted(LEDGER_DAMAGE))
def test_status_names_damaged_fields_as_redone(reference_out, tmp_path, capsys, case):
    """Before: a corrupt ledger entry was left out of `status` (exit 0), a 0-byte part
    file counted as done."""
    out = _copy_out(reference_out, tmp_path)
    rel, data, why = LEDGER_DAMAGE[case]
    (out / rel).write_bytes(data)
    code, text, _ = _cli(["status", out], capsys)
    assert code == 1
    row = next(ln for ln in text.splitlines() if ln.split()[:1] == ["B/3"])
    assert row.split()[2] == "redo" and why in row and "the field will be redone" in row
    assert "1 field (redo) will be processed again by the next run" in text
    assert next(ln for ln in text.splitlines() if ln.split()[:1] == ["B/2"]).split()[2] == "ok"


def test_damaged_out_is_redone_and_a_dead_runs_lock_taken_over(
    synth_plates, reference_out, tmp_path, capsys, caplog, untouched
):
    """Before: a 0-byte part file made the re-run exit 2 after the work; a torn ledger entry
    vanished; a lock file did not exist. Now both fields are redone, exit 0, and the lock a
    killed run left is taken over with a warning."""
    plate = untouched(synth_plates["0.5"])
    out = _copy_out(reference_out, tmp_path)
    (out / "tables/parts/foci/B2_f0.parquet").write_bytes(b"")
    (out / "ledger/B3_f0.json").write_bytes(b'{"well": "B/3", "sta')
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock = {"pid": int(dead.stdout), "host": os.uname().nodename, "started": "earlier"}
    (out / ".hcsmito.lock").write_text(json.dumps(lock))
    with caplog.at_level("WARNING"):
        code, text, err = _cli(["run", "--plate", plate, "--out", out, *RUN], capsys)
    assert code == 0, err
    assert "2 fields processed, 0 up to date, 0 failed" in text
    assert f"took over the stale lock of hcsmito run PID {lock['pid']}" in caplog.text
    assert "well B/2, field 0 is redone: tables/parts/foci/B2_f0.parquet is empty" in caplog.text
    assert "well B/3, field 0 is redone: ledger/B3_f0.json is not JSON" in caplog.text
    assert not (out / ".hcsmito.lock").exists()
    assert _cli(["status", out], capsys)[0] == 0
    import pandas as pd

    cols = ["well", "field", "n_msc", "n_foci", "n_jurkat", "status"]
    got = pd.read_parquet(out / "tables/fields.parquet")[cols]
    want = pd.read_parquet(reference_out / "tables/fields.parquet")[cols]
    pd.testing.assert_frame_equal(got, want)


def test_second_run_into_a_locked_out_is_one_line_naming_the_holder(
    synth_plates, tmp_path, capsys, untouched
):
    """Before: no lock: a second run wrote into the same folder (or was refused for a
    misleading reason)."""
    plate = untouched(synth_plates["0.5"])
    out = tmp_path / "out"
    code = (
        "import sys, time\nfrom hcsmito.io.rundir import RunDir\n"
        "with RunDir(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, _, err = _cli(["run", "--plate", plate, "--out", out, *RUN], capsys)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert rc == 2
    line = _one_error_line(err)
    assert f"is in use by another hcsmito run (PID {holder.pid} on {os.uname().nodename}" in line
    assert sorted(p.name for p in out.iterdir()) == [".hcsmito.lock"]  # nothing else written


def test_report_takes_outs_lock(reference_out, tmp_path, capsys):
    """Before: ``hcsmito report OUT`` took no lock: it rewrote tables/*.parquet, the figures
    and report.html while a run into OUT was writing them."""
    out = tmp_path / "out"
    shutil.copytree(reference_out, out)
    code = (
        "import sys, time\nfrom hcsmito.io.rundir import RunDir\n"
        "with RunDir(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _checksums(out)
        rc, _, err = _cli(["report", out], capsys)
        assert _checksums(out) == before  # nothing written, the holder's lock untouched
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert rc == 2
    line = _one_error_line(err, "report")
    assert f"is in use by another hcsmito run (PID {holder.pid} on {os.uname().nodename}" in line
    assert not (out / "report.html").exists()
    # the holder gone, the report is built, and the lock is released
    rc, stdout, _ = _cli(["report", out], capsys)
    assert rc == 0 and (out / "report.html").is_file()
    assert not (out / ".hcsmito.lock").exists()


def test_run_killed_before_its_first_field_is_resumed(synth_plates, tmp_path, untouched):
    """Before: a run killed before its first field finished left labels.zarr alone, and the
    re-run refused the folder ("not an hcsmito output folder")."""
    from hcsmito.runner import run_plate

    plate = untouched(synth_plates["0.5"])
    out = tmp_path / "out"
    code = (
        "import sys\nfrom hcsmito.runner import run_plate\n"
        "run_plate(sys.argv[1], sys.argv[2], backend='cpu', scheduler='threads', workers=1,"
        " progress=False, report=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(plate), str(out)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:  # killed at its first write into OUT
        deadline = time.monotonic() + 60
        while not (out.is_dir() and any(out.iterdir())) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait()
    assert not list((out / "ledger").glob("*.json")) if (out / "ledger").exists() else True
    s = run_plate(plate, out, wells=["B2"], backend="cpu", scheduler="threads", workers=1,
                  progress=False, report=False)  # fmt: skip
    assert s.ok and s.processed == ["B/2/0"]


# --------------------------------------------------------------------------- runs: input options


def test_missing_chunks_and_nan_fail_their_fields_or_are_flagged(
    synth_plates, tmp_path, capsys, untouched
):
    """Before: the reader's fill / replace options were not reachable from a run (a missing
    chunk or NaN voxel failed its field, with no way to keep it, flagged). A run fails such
    fields by default (tests/test_runner.py runs that for NaN)."""
    plate = _copy(synth_plates, tmp_path, "0.5")
    _chunk(plate, "0.5").unlink()  # B/2: the mito channel's only chunk
    grp = zarr.open_group(LocalStore(plate), mode="r+")["B/03/0"]
    img = grp["0"][...].astype(np.float32)
    img[1, 3, :2, :2] = np.nan  # B/3: 4 NaN voxels in the mito channel
    arr = grp.create_array("0", shape=img.shape, dtype=img.dtype, chunks=img.shape,
                           dimension_names=list("czyx"), overwrite=True)  # fmt: skip
    arr[...] = img
    untouched(plate)
    field = open_plate(plate).read_field("B2", 0)  # by default (a run's too) each fails, named
    with pytest.raises(PlateError, match=r"chunk 's\.zarr/B/02/0/0/c/1/0/0/0' is missing"):
        field.read_channel(1)
    with pytest.raises(PlateError, match=r"channel 'MitoTracker Red' has 4 non-finite voxels"):
        open_plate(plate).read_field("B3", 0).read_channel(1)
    sets = ["--set", "input.missing_chunks=fill", "--set", "input.nonfinite=flag"]
    code, text, err = _cli(["run", "--plate", plate, "--out", tmp_path / "b", *RUN, *sets],
                           capsys)  # fmt: skip
    assert code == 0, err
    assert "missing_chunks 1" in text and "nonfinite_voxels 1" in text
    import pandas as pd

    fields = pd.read_parquet(tmp_path / "b" / "tables" / "fields.parquet")
    flags = dict(zip(fields["well"], fields["qc_flags"].str.split(","), strict=True))
    assert "missing_chunks" in flags["B/2"] and "nonfinite_voxels" not in flags["B/2"]
    assert "nonfinite_voxels" in flags["B/3"] and "missing_chunks" not in flags["B/3"]
    ledger = json.loads((tmp_path / "b" / "ledger" / "B3_f0.json").read_text())
    assert ledger["qc"]["nonfinite_voxels"] == 4 and ledger["qc_flags"][0] == "nonfinite_voxels"


def test_time_points_are_refused_before_any_field_runs(tmp_path, capsys, untouched):
    """Before: a field with a t axis of length 2 was analysed at t = 0 alone, exit 0."""
    path = tmp_path / "t.zarr"
    create_plate(path, wells=["B3"], fields_per_well=1)
    img = np.ones((2, 2, 3, 8, 8), dtype=np.uint16)
    write_image(path, "B3", 0, img, axes="tczyx", voxel_size={"z": 1, "y": 0.2, "x": 0.2},
                channel_labels=["GFP", "Mito"])  # fmt: skip
    untouched(path)
    code, _, err = _cli(["run", "--plate", path, "--out", tmp_path / "o", *RUN], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert "well B/3, field 0 has 2 time points" in line and "time_points='fields'" in line
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- one line per error


def test_out_that_is_a_file_is_one_line(synth_plates, tmp_path, capsys, untouched):
    """Before: a NotADirectoryError traceback."""
    plate = untouched(synth_plates["0.5"])
    out = tmp_path / "out"
    out.write_text("keep me")
    code, _, err = _cli(["run", "--plate", plate, "--out", out, *RUN], capsys)
    assert code == 2 and "is a file, not a folder" in _one_error_line(err)
    assert out.read_text() == "keep me"


def test_read_only_out_is_one_line_before_any_field(synth_plates, tmp_path, capsys, untouched):
    """Before: a PermissionError traceback from the first write. (Root writes through
    permissions: there, a read-only file system stands in for a read-only folder.)"""
    plate = untouched(synth_plates["0.5"])
    if os.geteuid() != 0:
        out = tmp_path / "ro"
        out.mkdir(mode=0o555)
    elif os.path.isdir("/sys") and not os.access("/sys/hcsmito-out", os.F_OK):
        out = Path("/sys/hcsmito-out")  # sysfs: no one creates files there
    else:
        pytest.skip("no read-only place to write to")
    code, _, err = _cli(["run", "--plate", plate, "--out", out, *RUN], capsys)
    assert code == 2 and f"--out {out} is not writable" in _one_error_line(err)


def test_unreachable_scheduler_is_one_line_and_leaves_no_out(
    synth_plates, tmp_path, capsys, untouched
):
    """Before: a traceback after 30 s, and an OUT the retry refused."""
    import socket

    plate = untouched(synth_plates["0.5"])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    t0 = time.monotonic()
    argv = ["run", "--plate", plate, "--out", out, *RUN, "--scheduler", f"tcp://127.0.0.1:{port}"]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and time.monotonic() - t0 < 10
    assert f"no scheduler answers at 127.0.0.1:{port}" in _one_error_line(err)
    assert not out.exists()


def test_scheduler_that_does_not_answer_times_out_in_seconds():
    from hcsmito.cluster import check_scheduler

    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"no scheduler answers at 192\.0\.2\.1:8786"):
        check_scheduler("tcp://192.0.2.1:8786", timeout=0.5)  # TEST-NET-1: no one answers
    assert time.monotonic() - t0 < 3
    with pytest.raises(ValueError, match="not threads, processes, slurm or a scheduler address"):
        check_scheduler("tcp://host:port")


def test_slurm_without_sbatch_is_one_line(synth_plates, tmp_path, capsys, monkeypatch, untouched):
    """Before: a traceback (or a hang waiting for jobs that never start)."""
    plate = untouched(synth_plates["0.5"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    out = tmp_path / "out"
    code, _, err = _cli(["run", "--plate", plate, "--out", out, *RUN, "--scheduler", "slurm"],
                        capsys)  # fmt: skip
    assert code == 2 and "needs sbatch, which is not on PATH" in _one_error_line(err)
    assert not out.exists()


def test_refused_synth_suggests_the_overwrite_flag(tmp_path, capsys):
    """Before: the message suggested `overwrite=True`, which `hcsmito synth` does not take."""
    out = tmp_path / "p.zarr"
    argv = ["synth", "--out", out, "--wells", "B/2", "--fields", "1", "--shape", "14,32,32"]
    assert _cli(argv, capsys)[0] == 0
    code, _, err = _cli(argv, capsys)
    line = _one_error_line(err, "synth")
    assert code == 2 and "pass --overwrite" in line and "overwrite=True" not in line
    code, text, _ = _cli([*argv, "--overwrite", "--seed", "3"], capsys)
    assert code == 0 and "wrote" in text


def test_failed_report_is_a_non_zero_exit(synth_plates, reference_out, tmp_path, capsys, untouched):
    """Before: a run whose report failed exited 0 (the error only logged)."""
    plate = untouched(synth_plates["0.5"])
    out = _copy_out(reference_out, tmp_path)
    (out / "tables" / "wells.parquet").mkdir()  # the report's first table cannot be written
    code, text, err = _cli(["run", "--plate", plate, "--out", out, *RUN], capsys)
    assert code == 1 and "0 fields processed, 2 up to date, 0 failed" in text
    assert "the report could not be built: IsADirectoryError" in _one_error_line(err)
    code, _, err = _cli(["report", out], capsys)
    assert code == 2 and "wells.parquet" in _one_error_line(err, "report")


def test_unexpected_error_is_one_line_and_its_traceback_is_behind_v(tmp_path, capsys):
    """Any exception reaching the command line is one line; -v prints its traceback."""
    bad = tmp_path / "c.yaml"
    bad.write_text("msc: [1, 2]\n")  # validated: one line, not a TypeError deep inside
    code, _, err = _cli(["config", "--config", bad], capsys)
    assert code == 2 and "msc" in _one_error_line(err, "config")
    code, _, err = _cli(["-v", "report", tmp_path / "none"], capsys)
    assert code == 2 and "Traceback" in err and "none" in err
