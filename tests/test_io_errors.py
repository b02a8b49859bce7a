"""Bad input is refused with one clear PlateError naming the node and the rule broken.

Bad plates are made by writing a good one in ``tmp_path`` and editing its JSON or bytes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from hcsmito.io.plate import PlateError, open_image, open_plate
from hcsmito.io.writer import create_plate, write_image

LABELS = ["GFP", "MitoTracker Red", "Phalloidin"]
VOXEL = {"z": 0.5, "y": 0.2, "x": 0.2}
IMG = np.random.default_rng(0).integers(0, 1000, (3, 4, 20, 24)).astype(np.uint16)


def _good(tmp_path: Path, version: str = "0.5", labels=LABELS) -> Path:
    path = tmp_path / "p.zarr"
    create_plate(path, wells=["B03", "C04"], fields_per_well=1, version=version)
    for well in ("B03", "C04"):
        write_image(
            path, well, 0, IMG, axes="czyx", voxel_size=VOXEL, channel_labels=labels,
            chunks=(1, 2, 20, 24),
        )  # fmt: skip
    return path


def _edit(path: Path, node: str, version: str, fn: Callable[[dict], None]) -> None:
    """Apply ``fn`` to the NGFF attributes of ``node`` (unwrapping ``ome`` for 0.5)."""
    f = path / node / ("zarr.json" if version == "0.5" else ".zattrs")
    meta = json.loads(f.read_text())
    fn(meta["attributes"]["ome"] if version == "0.5" else meta)
    f.write_text(json.dumps(meta))


def _ms(attrs: dict) -> dict:
    return attrs["multiscales"][0]


# --------------------------------------------------------------------------- fixtures


INVALID = {
    "image-01.zarr": r"^image-01\.zarr: not an OME-NGFF image: the group has no 'multiscales'",
    "image-02.zarr": r"^image-02\.zarr: invalid image metadata at multiscales: List should have "
    r"at least 1 item",
    "image-03.zarr": r"^image-03\.zarr/0: dataset '0' \(level 0\) is listed in the multiscales "
    r"metadata but no zarr array exists there",
    "image-04.zarr": r"^image-04\.zarr/1: level 1 has 2 dimensions but the axes \['z', 'y', "
    r"'x'\] are 3",
}


def test_every_invalid_example_is_refused(shared_data):
    root = shared_data / "ngff" / "ome-zarr-examples" / "invalid"
    stores = sorted(p.name for p in root.iterdir())
    assert stores == sorted(INVALID)
    for name, pattern in INVALID.items():
        with pytest.raises(PlateError, match=pattern):
            open_image(root / name)


def test_verdicts_agree_with_ome_zarr_models(shared_data):
    """Our accept/refuse verdict on every example store matches ome-zarr-models'."""
    pytest.importorskip("ome_zarr_models")
    from ome_zarr_models.v04.hcs import HCS
    from ome_zarr_models.v04.image import Image

    root = shared_data / "ngff" / "ome-zarr-examples"
    stores = sorted(root.glob("*/*.zarr"))
    assert len(stores) == 10
    for store in stores:
        is_plate = store.name.startswith("plate")
        group = zarr.open_group(LocalStore(store, read_only=True), mode="r")
        try:
            (HCS if is_plate else Image).from_zarr(group)
            theirs = True
        except (ValueError, RuntimeError):  # pydantic's ValidationError is a ValueError
            theirs = False
        try:
            (open_plate if is_plate else open_image)(store)
            ours = True
        except PlateError:
            ours = False
        assert ours == theirs == (store.parent.name != "invalid"), store


# --------------------------------------------------------------------------- axes, ndim


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_axes_out_of_order(tmp_path, version):
    path = _good(tmp_path, version)

    def swap(attrs):
        axes = _ms(attrs)["axes"]
        axes[0], axes[1] = axes[1], axes[0]  # z before c

    _edit(path, "C/04/0", version, swap)
    with pytest.raises(
        PlateError,
        match=r"^p\.zarr/C/04/0: invalid image metadata at multiscales\[0\]: axes "
        r"\['z', 'c', 'y', 'x'\] .* out of order: time first, then channel, then space",
    ):
        open_plate(path)


def test_space_axes_not_zyx(tmp_path):
    path = _good(tmp_path)
    _edit(path, "B/03/0", "0.5", lambda a: _ms(a)["axes"][1].update(name="depth"))
    with pytest.raises(PlateError, match=r"^p\.zarr/B/03/0: axes .*\(t,\)c,\(z,\)y,x"):
        open_plate(path)


def test_one_space_axis(tmp_path):
    path = _good(tmp_path)
    _edit(path, "B/03/0", "0.5", lambda a: _ms(a)["axes"][2].update(type="channel"))
    with pytest.raises(PlateError, match="must have 2 or 3 axes of type 'space', not 2|at most"):
        open_plate(path)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_wrong_ndim(tmp_path, version):
    path = _good(tmp_path, version)

    def drop_z(attrs):
        ms = _ms(attrs)
        del ms["axes"][1]
        del ms["datasets"][0]["coordinateTransformations"][0]["scale"][1]

    _edit(path, "B/03/0", version, drop_z)
    with pytest.raises(
        PlateError, match=r"^p\.zarr/B/03/0/0: level 0 has 4 dimensions but the axes"
    ):
        open_plate(path)


def test_scale_length_disagrees_with_axes(tmp_path):
    path = _good(tmp_path)
    _edit(
        path,
        "B/03/0",
        "0.5",
        lambda a: _ms(a)["datasets"][0]["coordinateTransformations"][0]["scale"].pop(),
    )
    with pytest.raises(PlateError, match=r"a scale of length 3 for 4 axes"):
        open_plate(path)


# --------------------------------------------------------------------------- scales, units


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("bad", [0.0, -0.2, float("nan"), float("inf")])
def test_non_positive_or_nan_scale(tmp_path, version, bad):
    path = _good(tmp_path, version)

    def set_scale(attrs):
        _ms(attrs)["datasets"][0]["coordinateTransformations"][0]["scale"][2] = bad

    _edit(path, "C/04/0", version, set_scale)
    with pytest.raises(
        PlateError,
        match=r"^p\.zarr/C/04/0: invalid image metadata at multiscales\[0\]\.datasets\[0\]"
        r"\.coordinateTransformations\[0\]\.scale: scale\[2\] = .* must be a positive finite",
    ):
        open_plate(path)


def test_bad_unit_and_level_order(tmp_path):
    path = _good(tmp_path)
    _edit(path, "B/03/0", "0.5", lambda a: _ms(a)["axes"][3].update(unit="furlong"))
    with pytest.raises(PlateError, match="space unit 'furlong' of axis 'x' is not an NGFF unit"):
        open_plate(path)
    path = _good(tmp_path / "b")

    def finer_second_level(attrs):
        ds = _ms(attrs)["datasets"]
        ds.append(json.loads(json.dumps(ds[0])))
        ds[1]["path"] = "1"
        ds[1]["coordinateTransformations"][0]["scale"][3] = 0.1

    _edit(path, "B/03/0", "0.5", finer_second_level)
    with pytest.raises(PlateError, match=r"datasets\[1\] scale .* is finer than datasets\[0\]"):
        open_plate(path)


def test_omero_channel_count_mismatch(tmp_path):
    path = _good(tmp_path)
    _edit(path, "B/03/0", "0.5", lambda a: a["omero"]["channels"].pop())
    with pytest.raises(PlateError, match=r"^p\.zarr/B/03/0: omero lists 2 channels but the image"):
        open_plate(path)


# --------------------------------------------------------------------------- names


def _plate_edit(fn):
    return lambda attrs: fn(attrs["plate"])


TRAVERSALS = {
    "well path up": (
        "",
        _plate_edit(lambda p: p["wells"][0].update(path="../B/03")),
        r"well path '\.\./B/03' breaks the NGFF rule",
    ),
    "well path inner ..": (
        "",
        _plate_edit(lambda p: p["wells"][0].update(path="B/../03")),
        r"well path 'B/\.\./03' breaks the NGFF rule",
    ),
    "absolute well path": (
        "",
        _plate_edit(lambda p: p["wells"][0].update(path="/tmp/03")),
        r"well path '/tmp/03' breaks the NGFF rule",
    ),
    "row name ..": (
        "",
        _plate_edit(lambda p: (p["rows"][0].update(name=".."), p["wells"][0].update(path="../03"))),
        r"row name '\.\.' breaks the NGFF naming rule",
    ),
    "column with backslash": (
        "",
        _plate_edit(
            lambda p: (p["columns"][0].update(name="0\\3"), p["wells"][0].update(path="B/0\\3"))
        ),
        r"column name '0\\\\3' breaks the NGFF naming rule",
    ),
    "field path ..": (
        "B/03",
        lambda a: a["well"]["images"][0].update(path=".."),
        r"^p\.zarr/B/03: invalid well metadata .*field \(image\) path '\.\.' breaks",
    ),
    "field path nested": (
        "B/03",
        lambda a: a["well"]["images"][0].update(path="0/../../C/04/0"),
        r"field \(image\) path '0/\.\./\.\./C/04/0' breaks",
    ),
    "dataset path up": (
        "B/03/0",
        lambda a: _ms(a)["datasets"][0].update(path="../../C/04/0/0"),
        r"dataset path '\.\./\.\./C/04/0/0' must be a relative path without '\.' or '\.\.'",
    ),
}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("case", sorted(TRAVERSALS))
def test_traversal_names_refused_before_touching_paths(tmp_path, monkeypatch, version, case):
    node, fn, pattern = TRAVERSALS[case]
    path = _good(tmp_path, version)
    _edit(path, node, version, fn)
    opened: list[str] = []
    real_group, real_array = zarr.open_group, zarr.open_array

    def spy_group(*args, **kwargs):
        opened.append(kwargs.get("path", ""))
        return real_group(*args, **kwargs)

    def spy_array(*args, **kwargs):
        opened.append(kwargs.get("path", ""))
        return real_array(*args, **kwargs)

    monkeypatch.setattr(zarr, "open_group", spy_group)
    monkeypatch.setattr(zarr, "open_array", spy_array)
    with pytest.raises(PlateError, match=pattern):
        open_plate(path)
    assert opened, "the spy saw nothing: it is not wired"
    assert not [p for p in opened if ".." in p or "\\" in p or p.startswith("/")]


# --------------------------------------------------------------------------- absent nodes


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_well_listed_but_absent(tmp_path, version):
    path = _good(tmp_path, version)
    shutil.rmtree(path / "C/04")
    with pytest.raises(
        PlateError,
        match=r"^p\.zarr/C/04: well C/04 is listed in the metadata but no zarr group exists",
    ):
        open_plate(path)


def test_field_or_level_listed_but_absent(tmp_path):
    path = _good(tmp_path)
    shutil.rmtree(path / "C/04/0/0")
    with pytest.raises(PlateError, match=r"^p\.zarr/C/04/0/0: dataset '0' \(level 0\) is listed"):
        open_plate(path)
    shutil.rmtree(path / "C/04/0")
    with pytest.raises(PlateError, match=r"^p\.zarr/C/04/0: the image group is listed"):
        open_plate(path)


def test_well_not_in_rows_or_columns(tmp_path):
    path = _good(tmp_path)
    _edit(path, "", "0.5", _plate_edit(lambda p: p["wells"][1].update(path="D/04")))
    with pytest.raises(PlateError, match=r"well 'D/04' names row 'D' / column '04' absent"):
        open_plate(path)


# --------------------------------------------------------------------------- versions


def test_version_mismatches(tmp_path):
    path = _good(tmp_path, "0.5")
    f = path / "zarr.json"
    meta = json.loads(f.read_text())
    meta["attributes"]["ome"]["version"] = "0.4"
    f.write_text(json.dumps(meta))
    with pytest.raises(PlateError, match=r"zarr v3 store must carry NGFF 0\.5 metadata"):
        open_plate(path)
    path = _good(tmp_path / "v2", "0.4")
    _edit(path, "", "0.4", _plate_edit(lambda p: p.update(version="0.3")))
    with pytest.raises(PlateError, match=r"NGFF version '0\.3' on zarr v2 is not supported"):
        open_plate(path)
    with pytest.raises(PlateError, match="no such directory"):
        open_plate(tmp_path / "nothing.zarr")


# --------------------------------------------------------------------------- corrupt chunk


def _make_sharded(path: Path) -> None:
    """Replace B/03/0/0 by a sharded copy of the same pixels (zarr v3)."""
    root = zarr.open_group(LocalStore(path), mode="r+")
    grp = root["B/03/0"]
    data = grp["0"][...]
    arr = grp.create_array(
        "0",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(1, 1, 10, 12),
        shards=(1, 2, 20, 24),
        dimension_names=list("czyx"),
        overwrite=True,
    )
    arr[...] = data


@pytest.mark.parametrize("kind", ["0.5", "0.4", "0.5-sharded"])
def test_corrupt_chunk_is_named(tmp_path, kind):
    version = kind[:3]
    path = _good(tmp_path, version)
    if kind.endswith("sharded"):
        _make_sharded(path)
    array_dir = path / "B/03/0/0"
    meta = {"zarr.json", ".zarray", ".zattrs"}
    chunk_files = sorted(p for p in array_dir.rglob("*") if p.is_file() and p.name not in meta)
    # channel 1, second z-block: the chunk key, written out independently of the reader
    rel = "c/1/1/0/0" if version == "0.5" else "1/1/0/0"
    bad = array_dir / rel
    assert bad in chunk_files
    bad.write_bytes(b"\x00\x01 not a compressed chunk " * 3)

    plate = open_plate(path)  # metadata is fine: opening works
    field = plate.read_field("B3", 0)
    np.testing.assert_array_equal(field.data[0].compute(), IMG[0])  # other chunks still read
    with pytest.raises(PlateError) as err:
        field.data.compute()
    msg = str(err.value)
    assert msg.startswith("plate p, well B/3, field 0: cannot read chunk ")
    assert f"'p.zarr/B/03/0/0/{rel}'" in msg
    assert "corrupt" in msg and "re-export" in msg


# --------------------------------------------------------------------------- channel roles


def test_missing_channel_role_names_plate_labels_and_fix(tmp_path):
    path = _good(tmp_path, labels=["DAPI", "GFP", "Phalloidin"])
    img = open_plate(path).read_field("C/4", 0)
    assert img.resolve_roles({"msc": None, "actin": None}, required=()) == {"msc": 1, "actin": 2}
    with pytest.raises(PlateError) as err:
        img.resolve_roles({"msc": None, "mito": None, "actin": None})
    msg = str(err.value)
    assert msg.startswith("plate p, well C/4, field 0: no channel for the required role 'mito'")
    assert "['DAPI', 'GFP', 'Phalloidin']" in msg
    assert "Set `channels.mito` in the config" in msg


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_unreadable_metadata_json(tmp_path, version):
    path = _good(tmp_path, version)
    (path / "C/04/0" / ("zarr.json" if version == "0.5" else ".zattrs")).write_text("{not json")
    with pytest.raises(PlateError, match=r"^p\.zarr/C/04/0: cannot read the zarr group metadata"):
        open_plate(path)
    path = _good(tmp_path / "b", version)
    (path / "B/03/0/0" / ("zarr.json" if version == "0.5" else ".zarray")).write_text("[1, 2")
    with pytest.raises(PlateError, match=r"^p\.zarr/B/03/0/0: cannot read the zarr array metadata"):
        open_plate(path)
