"""Reading plates and images: real fixtures, well names, lazy chunks, channel roles, read-only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from hcsmito.io.plate import (
    FieldRef,
    PlateError,
    open_image,
    open_plate,
    resolve_channel_roles,
)
from hcsmito.io.writer import create_plate, write_image

LABELS = ["GFP", "MitoTracker Red", "Phalloidin"]
VOXEL = {"z": 0.5, "y": 0.2, "x": 0.2}


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _small_plate(tmp_path: Path, version: str = "0.5") -> tuple[Path, np.ndarray]:
    path = tmp_path / "small.zarr"
    create_plate(path, wells=["B03", "C04"], fields_per_well=1, version=version)
    img = np.random.default_rng(0).integers(0, 1000, (3, 4, 30, 40)).astype(np.uint16)
    for well in ("B03", "C04"):
        write_image(
            path, well, 0, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS,
            chunks=(1, 2, 16, 16),
        )  # fmt: skip
    return path, img


# --------------------------------------------------------------------------- real fixtures


def test_plate_ones_v04(shared_data):
    path = shared_data / "ngff" / "plate_ones.zarr"
    before = _checksums(path)
    plate = open_plate(path)
    assert plate.version == "0.4"
    assert plate.name == "plate_ones"
    assert plate.wells == ["B/03"]
    assert plate.fields == [FieldRef(well="B/3", well_path="B/03", field=0, path="B/03/0")]
    img = plate.read_field("B/3", 0)
    assert img.axes == "czyx"
    assert img.data.shape == (2, 3, 1080, 1280)
    assert img.data.dtype == np.uint16
    assert img.channel_labels == ["some-label-1", "some-label-2"]
    assert img.voxel_size == {"z": 1.0, "y": 0.1625, "x": 0.1625}
    # a small slice, against zarr reading the level-0 array directly
    direct = zarr.open_array(LocalStore(path, read_only=True), path="B/03/0/0", mode="r")
    np.testing.assert_array_equal(
        img.data[1, 2, 530:550, 630:650].compute(), direct[1, 2, 530:550, 630:650]
    )
    assert _checksums(path) == before


def test_sharded_v05_image(shared_data):
    path = shared_data / "ngff" / "6001240_labels_v0.5.zarr"
    img = open_image(path)
    assert img.axes == "czyx"
    assert img.data.shape == (2, 236, 68, 67)
    assert img.data.dtype == np.uint16
    assert img.channel_labels == ["LaminB1", "Dapi"]
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert img.voxel_size == {"z": scale[1], "y": scale[2], "x": scale[3]}
    assert img.voxel_size["z"] == pytest.approx(0.50020255)
    assert img.voxel_size["y"] == pytest.approx(1.44159261)
    direct = zarr.open_array(LocalStore(path, read_only=True), path="2", mode="r")
    assert direct.shards is not None  # the fixture is sharded
    np.testing.assert_array_equal(img.data[:, 100:110].compute(), direct[:, 100:110])
    with pytest.raises(PlateError, match="not an OME-NGFF HCS plate"):
        open_plate(path)


def test_valid_examples_are_accepted(shared_data):
    root = shared_data / "ngff" / "ome-zarr-examples" / "valid"
    images = sorted(root.glob("image-*.zarr"))
    assert len(images) == 4
    for path in images:
        img = open_image(path)
        assert img.axes in ("yx", "zyx")
        assert img.channel_labels == ["c0"]
        assert set(img.voxel_size) == set(img.axes)
    # rowIndex/columnIndex of this plate disagree with the well paths: wells go by path
    plate = open_plate(root / "plate-01.zarr")
    assert plate.name == "my_wonderful_plate"
    assert plate.wells == ["A/1", "A/2", "B/1", "B/2"]
    assert [f.path for f in plate.fields] == ["A/1/0", "A/2/0", "B/1/0", "B/2/0"]
    # the example holds metadata only: its chunks are missing, an error unless told to fill
    with pytest.raises(PlateError, match=r"chunk 'plate-01\.zarr/A/2/0/0/0/0' is missing"):
        plate.read_field("A2", 0).channel(0)[:3, :3].compute()
    field = plate.read_field("A2", 0, missing_chunks="fill")
    assert field.axes == "yx"
    assert field.data.shape == (1000, 1000)
    np.testing.assert_array_equal(field.channel(0)[:3, :3].compute(), np.zeros((3, 3)))
    assert "plate-01.zarr/A/2/0/0/0/0" in field.missing_chunks


def test_reading_never_modifies_the_store(tmp_path):
    path, img = _small_plate(tmp_path, "0.4")
    before = _checksums(path)
    plate = open_plate(path)
    for ref in plate.fields:
        np.testing.assert_array_equal(plate.read_field(ref.well, ref.field).data.compute(), img)
    assert _checksums(path) == before


# --------------------------------------------------------------------------- plates


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_well_name_forms_resolve_to_the_same_field(tmp_path, version):
    path, img = _small_plate(tmp_path, version)
    plate = open_plate(path)
    for name in ("B/3", "B03", "B/03", "B3", "b3"):
        assert plate.well_path(name) == "B/03"
        got = plate.read_field(name, 0)
        assert (got.plate, got.well, got.field) == ("small", "B/3", 0)
    with pytest.raises(PlateError, match=r"no well 'D05'; the plate has \['B/03', 'C/04'\]"):
        plate.read_field("D05", 0)
    with pytest.raises(PlateError, match=r"fields 0\.\.0, not 1"):
        plate.read_field("B3", 1)


def test_dask_blocks_align_with_storage_chunks(tmp_path):
    path, img = _small_plate(tmp_path)
    data = open_plate(path).read_field("C4", 0).data
    assert isinstance(data, da.Array)
    storage = (1, 2, 16, 16)
    for dim_chunks, c, n in zip(data.chunks, storage, img.shape, strict=True):
        edges = np.cumsum((0, *dim_chunks))
        assert all(e % c == 0 or e == n for e in edges)
    assert data.chunks[0] == (1, 1, 1)  # one channel per block
    np.testing.assert_array_equal(data[:, 1:3, 5:25, 7:33].compute(), img[:, 1:3, 5:25, 7:33])


def test_channel_helper_and_2d_t_axes(tmp_path):
    path = tmp_path / "t.zarr"
    create_plate(path, wells=["A1"], fields_per_well=1)
    img = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6)
    write_image(path, "A1", 0, img, axes="tcyx", voxel_size=VOXEL, channel_labels=LABELS)
    # two time points: read with an explicit t, never t = 0 alone without a word ...
    stacked = open_plate(path).read_field("A1", 0)
    np.testing.assert_array_equal(stacked.channel(2, t=1).compute(), img[1, 2])
    with pytest.raises(PlateError, match=r"^plate t, well A/1, field 0: the field has 2 time"):
        stacked.channel(2)
    # ... refused up front on request ...
    with pytest.raises(PlateError, match=r"^t\.zarr/A/01/0: well A/1, field 0 has 2 time points"):
        open_plate(path, time_points="refuse")
    # ... or each time point is a field of its own
    plate = open_plate(path, time_points="fields")
    assert [(r.field, r.t) for r in plate.fields] == [(0, 0), (0, 1)]
    field = plate.read_field("A1", 0, t=1)
    assert not field.is_3d
    assert field.voxel_size == {"y": 0.2, "x": 0.2}
    assert field.t == 1 and field.describe().endswith("field 0, time point 1")
    np.testing.assert_array_equal(field.channel(2).compute(), img[1, 2])
    np.testing.assert_array_equal(plate.read_field("A1", 0).channel(2).compute(), img[0, 2])
    with pytest.raises(IndexError):
        field.channel(3)


def test_units_are_converted_to_micrometres(tmp_path):
    path, _ = _small_plate(tmp_path)
    meta_path = path / "B/03/0/zarr.json"
    meta = json.loads(meta_path.read_text())
    ms = meta["attributes"]["ome"]["multiscales"][0]
    for ax in ms["axes"]:
        if ax["name"] == "z":
            ax["unit"] = "millimeter"
        elif ax["name"] in "yx":
            ax["unit"] = "nanometer"
    ms["datasets"][0]["coordinateTransformations"][0]["scale"] = [1, 0.0005, 200.0, 200.0]
    ms["coordinateTransformations"] = [{"type": "scale", "scale": [1, 2.0, 1.0, 1.0]}]
    meta_path.write_text(json.dumps(meta))
    vs = open_plate(path).read_field("B3", 0).voxel_size
    assert vs == pytest.approx({"z": 1.0, "y": 0.2, "x": 0.2})


# --------------------------------------------------------------------------- channel roles


def test_channel_roles_defaults_and_explicit():
    labels = ["GFP", "MitoTracker Red", "Phalloidin-647"]
    assert resolve_channel_roles(labels, {"msc": None, "mito": None, "actin": None}) == {
        "msc": 0,
        "mito": 1,
        "actin": 2,
    }
    # every declared role: those no label matches are None
    absent = {"nuclei": None, "annexin": None, "pi": None}
    assert resolve_channel_roles(labels) == {"msc": 0, "mito": 1, "actin": 2, **absent}
    two = ["EGFP", "MitoTracker"]
    assert resolve_channel_roles(two) == {"msc": 0, "mito": 1, "actin": None, **absent}
    odd = ["ch488", "ch561", "F-ACTIN"]
    assert resolve_channel_roles(odd, {"msc": "CH488", "mito": 1, "actin": None}) == {
        "msc": 0,
        "mito": 1,
        "actin": 2,
    }


def test_channel_roles_errors_name_labels_and_fix():
    with pytest.raises(PlateError) as e:
        resolve_channel_roles(["DAPI", "GFP"], where="plate p, well B/3, field 0")
    msg = str(e.value)
    assert "plate p, well B/3, field 0" in msg
    assert "'mito'" in msg and "['DAPI', 'GFP']" in msg and "channels.mito" in msg
    with pytest.raises(PlateError, match="matches no channel label"):
        resolve_channel_roles(["GFP", "Mito"], {"mito": "TMRM"})
    with pytest.raises(PlateError, match="out of range"):
        resolve_channel_roles(["GFP", "Mito"], {"mito": 2})
    with pytest.raises(PlateError, match="all match"):
        resolve_channel_roles(["Mito 1", "Mito 2"], {"mito": None})
    with pytest.raises(PlateError, match="both resolve to channel 1"):
        resolve_channel_roles(["GFP", "Mito"], {"msc": 1, "mito": None})
    with pytest.raises(PlateError, match="no default label pattern"):
        resolve_channel_roles(["GFP", "Mito"], {"caspase": None})
