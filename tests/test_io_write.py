"""Writing plates: round trips through the reader, NGFF validity (ome-zarr-models), chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from skimage.measure import block_reduce
from zarr.storage import LocalStore

from hcsmito.io.plate import PlateError, open_plate
from hcsmito.io.writer import create_plate, default_chunks, write_image, write_labels

LABELS = ["GFP", "MitoTracker Red", "Phalloidin"]
VOXEL = {"z": 0.4, "y": 0.108, "x": 0.108}


def _image(axes: str, dtype=np.uint16, seed=0) -> np.ndarray:
    sizes = {"t": 2, "c": 3, "z": 4, "y": 33, "x": 47}
    shape = tuple(sizes[a] for a in axes)
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 4096, shape).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("axes", ["czyx", "cyx", "tczyx", "tcyx"])
def test_round_trip_pixels_labels_voxel_size(tmp_path, version, axes):
    path = tmp_path / "rt.zarr"
    create_plate(path, wells=["B03", "C4"], fields_per_well=2, version=version)
    data = {
        ("B03", 0): _image(axes, seed=1),
        ("B/3", 1): _image(axes, np.float32, seed=2),
        ("C/04", 1): _image(axes, seed=3),
        ("C4", 0): _image(axes, np.uint8, seed=4),
    }
    for (well, field), img in data.items():
        write_image(path, well, field, img, axes=axes, voxel_size=VOXEL, channel_labels=LABELS)
    plate = open_plate(path)
    assert plate.version == version
    assert plate.name == "rt"
    assert plate.wells == ["B/03", "C/04"]
    expected_vs = {k: v for k, v in VOXEL.items() if k in axes}
    for (well, field), img in data.items():
        got = plate.read_field(well, field)
        assert got.axes == axes
        assert got.channel_labels == LABELS
        assert got.voxel_size == expected_vs
        assert got.data.dtype == img.dtype
        np.testing.assert_array_equal(got.data.compute(), img)


def test_fields_listed_but_unwritten_are_refused(tmp_path):
    path = tmp_path / "partial.zarr"
    create_plate(path, wells=["B03"], fields_per_well=2)
    write_image(path, "B03", 0, _image("cyx"), axes="cyx", voxel_size=VOXEL, channel_labels=LABELS)
    with pytest.raises(PlateError, match=r"partial.zarr/B/03/1: the image group"):
        open_plate(path)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_levels_are_2x2_means_with_doubled_scale(tmp_path, version):
    path = tmp_path / "lv.zarr"
    create_plate(path, wells=["A1"], fields_per_well=1, version=version)
    img = _image("czyx", np.float32)
    write_image(path, "A1", 0, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS, levels=3)
    root = zarr.open_group(LocalStore(path, read_only=True), mode="r")
    attrs = dict(root["A/01/0"].attrs)
    ms = (attrs["ome"] if version == "0.5" else attrs)["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    expected = img
    for k in range(3):
        level = root[f"A/01/0/{k}"][...]
        if k:
            ny, nx = expected.shape[2] // 2 * 2, expected.shape[3] // 2 * 2
            expected = block_reduce(expected[..., :ny, :nx], (1, 1, 2, 2), np.mean)
        np.testing.assert_allclose(level, expected, rtol=1e-6)
        scale = ms["datasets"][k]["coordinateTransformations"][0]["scale"]
        np.testing.assert_allclose(scale, [1, 0.4, 0.108 * 2**k, 0.108 * 2**k])


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_labels_round_trip_and_listing(tmp_path, version):
    path = tmp_path / "lab.zarr"
    create_plate(path, wells=["B03"], fields_per_well=1, version=version)
    img = _image("czyx")
    write_image(path, "B3", 0, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS)
    rng = np.random.default_rng(5)
    msc = rng.integers(0, 9, (4, 33, 47)).astype(np.int32)
    foci = rng.integers(0, 3, (4, 33, 47)).astype(np.uint16)
    write_labels(path, "B3", 0, "msc", msc, axes="zyx", voxel_size=VOXEL)
    write_labels(
        path, "B/3", 0, "foci", foci, axes="zyx", voxel_size=VOXEL, colors={1: (255, 0, 0, 255)}
    )
    write_labels(path, "B03", 0, "msc", msc + 1, axes="zyx", voxel_size=VOXEL)  # rewrite
    root = zarr.open_group(LocalStore(path, read_only=True), mode="r")
    np.testing.assert_array_equal(root["B/03/0/labels/msc/0"][...], msc + 1)
    np.testing.assert_array_equal(root["B/03/0/labels/foci/0"][...], foci)
    listing = dict(root["B/03/0/labels"].attrs)
    listing = listing["ome"] if version == "0.5" else listing
    assert listing["labels"] == ["msc", "foci"]
    # the image is untouched by label writes and still reads back
    np.testing.assert_array_equal(open_plate(path).read_field("B3", 0).data.compute(), img)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_written_plate_is_valid_for_ome_zarr_models(tmp_path, version):
    models = pytest.importorskip("ome_zarr_models")
    del models
    if version == "0.5":
        from ome_zarr_models.v05.hcs import HCS
        from ome_zarr_models.v05.image import Image
        from ome_zarr_models.v05.image_label import ImageLabel
    else:
        from ome_zarr_models.v04.hcs import HCS
        from ome_zarr_models.v04.image import Image
        from ome_zarr_models.v04.image_label import ImageLabel
    path = tmp_path / "valid.zarr"
    create_plate(path, wells=["B03", "C04"], fields_per_well={"B3": 1, "C4": 2}, version=version)
    for well, field in (("B3", 0), ("C4", 0), ("C4", 1)):
        img = _image("czyx", seed=field)
        write_image(
            path, well, field, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS, levels=2
        )
    write_labels(path, "C4", 1, "msc", np.ones((4, 33, 47), np.int32), axes="zyx", voxel_size=VOXEL)
    root = zarr.open_group(LocalStore(path, read_only=True), mode="r")
    hcs = HCS.from_zarr(root)
    assert [w.path for w in hcs.ome_attributes.plate.wells] == ["B/03", "C/04"]
    Image.from_zarr(root["C/04/1"])
    ImageLabel.from_zarr(root["C/04/1/labels/msc"])


def test_default_chunks_whole_planes_about_8_mib():
    ch = default_chunks((3, 60, 2048, 2048), "czyx", 2)
    assert ch == (1, 4, 1024, 1024)
    assert default_chunks((2, 3, 5, 100, 80), "tczyx", 2) == (1, 1, 5, 100, 80)
    assert default_chunks((2, 100, 80), "cyx", 4) == (1, 100, 80)


def test_create_plate_layout_and_overwrite(tmp_path):
    path = tmp_path / "p.zarr"
    create_plate(path, wells=["B3", "b/11", "AA02"], fields_per_well=3, name="screen 1")
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    plate = attrs["plate"]
    assert attrs["version"] == "0.5"
    assert [r["name"] for r in plate["rows"]] == ["B", "AA"]
    assert [c["name"] for c in plate["columns"]] == ["02", "03", "11"]
    assert [w["path"] for w in plate["wells"]] == ["B/03", "B/11", "AA/02"]
    for w in plate["wells"]:
        row, col = w["path"].split("/")
        assert plate["rows"][w["rowIndex"]]["name"] == row
        assert plate["columns"][w["columnIndex"]]["name"] == col
    assert plate["name"] == "screen 1"
    well = json.loads((path / "B/11/zarr.json").read_text())["attributes"]["ome"]["well"]
    assert [im["path"] for im in well["images"]] == ["0", "1", "2"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        create_plate(path, wells=["B3"], fields_per_well=1)
    create_plate(path, wells=["C5"], fields_per_well=1, overwrite=True, version="0.4")
    assert not (path / "B").exists()
    assert json.loads((path / ".zattrs").read_text())["plate"]["wells"][0]["path"] == "C/05"


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_create_plate_keeps_given_well_and_field_paths(tmp_path, version):
    """Issue 14.3: a plate that mirrors another's paths (labels.zarr): before, every well
    became ``B/02`` and every field was renamed by its index."""
    models = pytest.importorskip("ome_zarr_models")
    del models
    if version == "0.5":
        from ome_zarr_models.v05.hcs import HCS
        from ome_zarr_models.v05.image_label import ImageLabel
    else:
        from ome_zarr_models.v04.hcs import HCS
        from ome_zarr_models.v04.image_label import ImageLabel
    path = tmp_path / "mirror.zarr"
    images = {"B/2": ["f1", "f7"], "B/10": ["0"], "C/02": ["A3"]}
    create_plate(path, wells=list(images), fields_per_well=images, version=version, pad=None)
    root = zarr.open_group(LocalStore(path, read_only=True), mode="r")
    plate = HCS.from_zarr(root).ome_attributes.plate
    assert [w.path for w in plate.wells] == ["B/2", "B/10", "C/02"]
    assert [c.name for c in plate.columns] == ["02", "2", "10"]
    assert plate.field_count == 2
    img = _image("czyx")
    write_image(path, "B/2", 1, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS)
    write_labels(path, "B/2", 1, "msc", np.ones((4, 33, 47), np.int32), axes="zyx",
                 voxel_size=VOXEL)  # fmt: skip
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["B/2/f7/0"][...], img)
    ImageLabel.from_zarr(
        zarr.open_group(LocalStore(path, read_only=True), mode="r")["B/2/f7/labels/msc"]
    )
    write_image(path, "C/02", 0, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS)
    assert (path / "C" / "02" / "A3").is_dir()
    with pytest.raises(PlateError, match="field path"):
        create_plate(tmp_path / "x.zarr", wells=["B/2"], fields_per_well={"B/2": ["a/b"]},
                     pad=None)  # fmt: skip
    with pytest.raises(PlateError, match="distinct field paths"):
        create_plate(tmp_path / "y.zarr", wells=["B/2"], fields_per_well={"B/2": ["a", "a"]},
                     pad=None)  # fmt: skip


@pytest.mark.parametrize("well", ["../B03", "B/../03", "/B03", "B\\03", "B 03x", "B-3"])
def test_create_plate_refuses_bad_well_names_before_writing(tmp_path, well):
    path = tmp_path / "bad.zarr"
    with pytest.raises(PlateError, match="well name"):
        create_plate(path, wells=[well], fields_per_well=1)
    assert not path.exists()


def test_create_plate_argument_errors(tmp_path):
    with pytest.raises(PlateError, match="more than once"):
        create_plate(tmp_path / "a.zarr", wells=["B3", "B/03"], fields_per_well=1)
    with pytest.raises(PlateError, match="no count for wells"):
        create_plate(tmp_path / "b.zarr", wells=["B3", "C3"], fields_per_well={"B3": 1})
    with pytest.raises(PlateError, match="number of fields"):
        create_plate(tmp_path / "c.zarr", wells=["B3"], fields_per_well=0)
    with pytest.raises(PlateError, match="version"):
        create_plate(tmp_path / "d.zarr", wells=["B3"], fields_per_well=1, version="0.3")
    (tmp_path / "notzarr").mkdir()
    with pytest.raises(FileExistsError, match="not a zarr store"):
        create_plate(tmp_path / "notzarr", wells=["B3"], fields_per_well=1, overwrite=True)


def test_write_image_argument_errors(tmp_path):
    path = tmp_path / "e.zarr"
    create_plate(path, wells=["B3"], fields_per_well=1)
    img = _image("czyx")
    kw = {"axes": "czyx", "voxel_size": VOXEL, "channel_labels": LABELS}
    with pytest.raises(PlateError, match="not in the plate"):
        write_image(path, "C3", 0, img, **kw)
    with pytest.raises(PlateError, match=r"fields 0\.\.0"):
        write_image(path, "B3", 1, img, **kw)
    with pytest.raises(PlateError, match="not a valid image layout"):
        write_image(path, "B3", 0, img, **{**kw, "axes": "zcyx"})
    with pytest.raises(PlateError, match="does not match axes"):
        write_image(path, "B3", 0, img[0], **kw)
    with pytest.raises(PlateError, match="2 channel labels for 3"):
        write_image(path, "B3", 0, img, **{**kw, "channel_labels": LABELS[:2]})
    for bad in (0.0, -1.0, float("nan"), None):
        with pytest.raises(PlateError, match=r"voxel_size\['z'\]"):
            write_image(path, "B3", 0, img, **{**kw, "voxel_size": {**VOXEL, "z": bad}})
    with pytest.raises(PlateError, match="integer array"):
        write_labels(path, "B3", 0, "msc", img[0].astype(float), axes="zyx", voxel_size=VOXEL)
    with pytest.raises(PlateError, match="label name"):
        write_labels(path, "B3", 0, "../x", img[0], axes="zyx", voxel_size=VOXEL)
    assert not (path / "B/03/0/zarr.json").exists()  # nothing was written


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_rewriting_a_field_keeps_labels_and_drops_stale_levels(tmp_path, version):
    path = tmp_path / "re.zarr"
    create_plate(path, wells=["B03"], fields_per_well=1, version=version)
    kw = {"axes": "czyx", "voxel_size": VOXEL, "channel_labels": LABELS}
    write_image(path, "B3", 0, _image("czyx", seed=1), levels=3, **kw)
    msc = np.arange(4 * 33 * 47, dtype=np.int32).reshape(4, 33, 47)
    write_labels(path, "B3", 0, "msc", msc, axes="zyx", voxel_size=VOXEL)  # 3 levels, as image
    assert (path / "B/03/0/labels/msc/2").is_dir()
    new = _image("czyx", seed=2)
    write_image(path, "B3", 0, new, levels=1, **kw)
    assert not (path / "B/03/0/1").exists() and not (path / "B/03/0/2").exists()
    np.testing.assert_array_equal(open_plate(path).read_field("B3", 0).data.compute(), new)
    root = zarr.open_group(LocalStore(path, read_only=True), mode="r")
    np.testing.assert_array_equal(root["B/03/0/labels/msc/0"][...], msc)
    np.testing.assert_array_equal(root["B/03/0/labels/msc/1"][...], msc[:, ::2, ::2])


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_all_zero_chunks_of_an_image_are_written(tmp_path, version):
    """zarr leaves chunks equal to the fill value out by default; the reader takes a
    missing chunk for a lost one and fails the field. An image written here with a plane
    of zeros (padding, a masked region) reads back whole."""
    path = tmp_path / "z.zarr"
    create_plate(path, wells=["B03"], fields_per_well=1, version=version)
    img = _image("czyx", seed=5)
    img[:, 1] = 0  # a whole plane of zeros: chunks of its own
    write_image(
        path, "B03", 0, img, axes="czyx", voxel_size=VOXEL, channel_labels=LABELS,
        chunks=(1, 1, *img.shape[2:]),
    )  # fmt: skip
    got = open_plate(path).read_field("B03", 0)
    np.testing.assert_array_equal(got.data.compute(), img)
