"""TIFF / OME-TIFF stacks + CSV -> NGFF plate: pixels, channel order, voxel sizes, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from hcsmito.io.plate import PlateError, open_plate
from hcsmito.io.tiff_import import import_tiffs

RNG = np.random.default_rng(0)


def _stack(shape=(3, 16, 20), dtype=np.uint16) -> np.ndarray:
    return RNG.integers(0, 4000, shape).astype(dtype)


def _imagej(path: Path, data: np.ndarray, *, dz=0.5, dxy=0.1, unit="um", axes="ZYX") -> Path:
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / dxy, 1 / dxy),
        metadata={"spacing": dz, "unit": unit, "axes": axes},
    )
    return path


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_one_file_per_channel_imagej(tmp_path):
    channels = ["GFP", "MitoTracker Red", "Phalloidin"]
    truth: dict[tuple[str, int], np.ndarray] = {}
    rows = []
    for well in ("B03", "C4"):
        for field in (1, 2):  # 1-based in the CSV: fields 0, 1 in the plate
            stacks = [_stack() for _ in channels]
            truth[(well, field - 1)] = np.stack(stacks)
            for ch, st in zip(channels[::-1], stacks[::-1], strict=True):  # CSV order shuffled
                name = f"{well}_f{field}_{ch.replace(' ', '')}.tif"
                _imagej(tmp_path / name, st, dz=0.4, dxy=0.108)
                rows.append(f"{name}, {well}, {field}, {ch}")
    csv = _csv(tmp_path / "files.csv", "file, well, field, channel", rows)
    out = import_tiffs(csv, tmp_path / "imp.zarr", channel_labels=channels)
    plate = open_plate(out)
    assert plate.wells == ["B/03", "C/04"]
    assert len(plate.fields) == 4
    for (well, field), expected in truth.items():
        img = plate.read_field(well, field)
        assert img.axes == "czyx"
        assert img.channel_labels == channels
        assert img.voxel_size == pytest.approx({"z": 0.4, "y": 0.108, "x": 0.108})
        np.testing.assert_array_equal(img.data.compute(), expected)


def test_multichannel_ome_tiff_with_units(tmp_path):
    data = _stack((2, 4, 16, 20))
    tifffile.imwrite(
        tmp_path / "f.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 108.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 108.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.3,
            "Channel": {"Name": ["GFP", "Mito"]},
        },
    )
    csv = _csv(tmp_path / "f.csv", "file,well,field", ["f.ome.tif,D/7,0"])
    out = import_tiffs(csv, tmp_path / "ome.zarr", version="0.4")
    plate = open_plate(out)
    assert plate.version == "0.4"
    img = plate.read_field("D7", 0)
    assert img.channel_labels == ["GFP", "Mito"]
    assert img.voxel_size == pytest.approx({"z": 0.3, "y": 0.108, "x": 0.108})
    np.testing.assert_array_equal(img.data.compute(), data)


def test_imagej_hyperstack_zcyx_is_reordered(tmp_path):
    czyx = _stack((2, 3, 16, 20))
    _imagej(tmp_path / "h.tif", czyx.transpose(1, 0, 2, 3), axes="ZCYX", unit="micron")
    csv = _csv(tmp_path / "h.csv", "file,well,field", ["h.tif,A1,0"])
    out = import_tiffs(csv, tmp_path / "h.zarr", channel_labels=["GFP", "Mito"])
    img = open_plate(out).read_field("A1", 0)
    np.testing.assert_array_equal(img.data.compute(), czyx)
    assert img.voxel_size == pytest.approx({"z": 0.5, "y": 0.1, "x": 0.1})


def test_plain_tiffs_need_voxel_size(tmp_path):
    planes = [_stack((16, 20)) for _ in range(2)]
    for i, p in enumerate(planes):
        tifffile.imwrite(tmp_path / f"p{i}.tif", p, photometric="minisblack")
    csv = _csv(tmp_path / "p.csv", "file,well,field,channel", ["p0.tif,B2,0,0", "p1.tif,B2,0,1"])
    with pytest.raises(PlateError, match=r"p0\.tif: no voxel size for \['y', 'x'\].*voxel_size"):
        import_tiffs(csv, tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists()
    out = import_tiffs(csv, tmp_path / "p.zarr", voxel_size=(0.2, 0.2))
    img = open_plate(out).read_field("B2", 0)
    assert img.axes == "cyx"
    assert img.channel_labels == ["c0", "c1"]
    assert img.voxel_size == {"y": 0.2, "x": 0.2}
    np.testing.assert_array_equal(img.data.compute(), np.stack(planes))


def test_voxel_size_argument_overrides_metadata(tmp_path):
    st = _stack()
    _imagej(tmp_path / "a.tif", st, dz=0.5, dxy=0.1)
    csv = _csv(tmp_path / "a.csv", "file,well,field,channel", ["a.tif,B2,0,Mito"])
    out = import_tiffs(csv, tmp_path / "a.zarr", voxel_size={"z": 1.0})
    assert open_plate(out).read_field("B2", 0).voxel_size == pytest.approx(
        {"z": 1.0, "y": 0.1, "x": 0.1}
    )


def test_real_bead_stack_voxel_size(shared_data, tmp_path):
    bead = shared_data / "beads" / "Bead_Image1_crop.tif"
    csv = _csv(tmp_path / "b.csv", "file,well,field,channel", [f"{bead},A1,0,beads"])
    img = open_plate(import_tiffs(csv, tmp_path / "b.zarr")).read_field("A1", 0)
    assert img.data.shape == (1, 41, 150, 150)
    assert img.voxel_size["z"] == pytest.approx(0.125)
    assert img.voxel_size["x"] == pytest.approx(1 / 44.46, rel=1e-3)  # 44.46 px/µm
    np.testing.assert_array_equal(img.data[0, 20].compute(), tifffile.imread(bead)[20])


def test_refusals_name_the_file(tmp_path):
    _imagej(tmp_path / "a.tif", _stack())
    _imagej(tmp_path / "b.tif", _stack((3, 16, 21)))
    _imagej(tmp_path / "c.tif", _stack(), dz=0.6)
    _imagej(tmp_path / "d.tif", _stack().astype(np.uint8))
    header = "file,well,field,channel"
    cases = {
        "shape": (["a.tif,B2,0,x", "b.tif,B2,0,y"], r"b\.tif: stack of shape .* disagrees"),
        "voxel": (["a.tif,B2,0,x", "c.tif,B2,0,y"], r"c\.tif: voxel size .* disagrees"),
        "dtype": (["a.tif,B2,0,x", "d.tif,B2,0,y"], r"d\.tif: pixel type uint8 disagrees"),
        "missing": (["a.tif,B2,0,x", "nope.tif,B2,0,y"], r"line 3: file .*nope\.tif does not"),
        "channel": (["a.tif,B2,0,x", "a.tif,B2,1,y"], r"well B/02 field 0 has no file for"),
        "duplicate": (["a.tif,B2,0,x", "c.tif,B2,0,x"], r"lines \[2, 3\] give the same"),
        "well": (["a.tif,../B2,0,x"], r"well name '\.\./B2' is not understood"),
    }
    for name, (rows, pattern) in cases.items():
        csv = _csv(tmp_path / f"{name}.csv", header, rows)
        with pytest.raises(PlateError, match=pattern):
            import_tiffs(csv, tmp_path / f"{name}.zarr")
        assert not (tmp_path / f"{name}.zarr").exists(), name
    csv = _csv(tmp_path / "cols.csv", "path,well", ["a.tif,B2"])
    with pytest.raises(PlateError, match=r"missing column\(s\) \['field', 'file'\]"):
        import_tiffs(csv, tmp_path / "cols.zarr")
    _imagej(tmp_path / "m.tif", _stack((3, 2, 16, 20)), axes="ZCYX")
    csv = _csv(tmp_path / "m.csv", header, ["m.tif,B2,0,x"])
    with pytest.raises(PlateError, match=r"m\.tif: holds 2 channels"):
        import_tiffs(csv, tmp_path / "m.zarr")


# ------------------------------------------------------------- issue 14.2: what Fiji users have


def test_imagej_hyperstack_labels_become_channel_labels(tmp_path, caplog):
    """Before: an ImageJ hyperstack's channel names (its ``Labels``) were dropped, the
    channels became c0, c1, c2 without a word, and every field then failed at run time."""
    names = ["GFP", "MitoTracker Red", "Phalloidin"]
    zcyx = _stack((4, 3, 16, 20))
    for name, labels in (("per_channel", names), ("per_plane", names * 4)):
        tifffile.imwrite(tmp_path / f"{name}.tif", zcyx, imagej=True, resolution=(10, 10),
                         metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um",
                                   "Labels": labels})  # fmt: skip
    csv = _csv(
        tmp_path / "h.csv", "file,well,field", ["per_channel.tif,B2,0", "per_plane.tif,B2,1"]
    )
    plate = open_plate(import_tiffs(csv, tmp_path / "h.zarr"))
    for field in (0, 1):
        img = plate.read_field("B2", field)
        assert img.channel_labels == names
        np.testing.assert_array_equal(img.data.compute(), zcyx.transpose(1, 0, 2, 3))
    assert img.resolve_roles()["mito"] == 1
    # no names anywhere: c0, c1, c2 still, but said, with the fix
    _imagej(tmp_path / "bare.tif", zcyx, axes="ZCYX")
    csv = _csv(tmp_path / "b.csv", "file,well,field", ["bare.tif,B2,0"])
    with caplog.at_level("WARNING", logger="hcsmito.io.tiff_import"):
        plate = open_plate(import_tiffs(csv, tmp_path / "b.zarr"))
    assert plate.read_field("B2", 0).channel_labels == ["c0", "c1", "c2"]
    assert "bare.tif: no channel names" in caplog.text and "--channel-labels" in caplog.text


def test_plain_4d_tiff_imports_with_axes(tmp_path):
    """Before: a TIFF without metadata read as one sequence of planes (IYX) or unnamed axes
    (QQYX) and could not be imported."""
    czyx = _stack((3, 5, 16, 20))
    tifffile.imwrite(tmp_path / "flat.tif", czyx, metadata=None)  # 15 planes, axes IYX
    tifffile.imwrite(tmp_path / "shaped.tif", czyx)  # tifffile's own shape: QQYX
    labels = ["GFP", "Mito", "Phalloidin"]
    csv = _csv(tmp_path / "p.csv", "file,well,field", ["flat.tif,C3,0", "shaped.tif,C3,1"])
    with pytest.raises(PlateError, match="cannot be imported|no voxel size"):
        import_tiffs(csv, tmp_path / "none.zarr", voxel_size=(0.5, 0.1, 0.1))
    out = import_tiffs(csv, tmp_path / "p.zarr", axes="CZYX", channel_labels=labels,
                       voxel_size=(0.5, 0.1, 0.1))  # fmt: skip
    plate = open_plate(out)
    for field in (0, 1):
        img = plate.read_field("C3", field)
        assert img.axes == "czyx" and img.channel_labels == labels
        np.testing.assert_array_equal(img.data.compute(), czyx)
    # one flat sequence needs the number of channels
    csv = _csv(tmp_path / "f.csv", "file,well,field", ["flat.tif,C3,0"])
    with pytest.raises(PlateError, match=r"flat\.tif: holds 15 planes .*--channel-labels"):
        import_tiffs(csv, tmp_path / "f.zarr", axes="CZYX", voxel_size=(0.5, 0.1, 0.1))
    with pytest.raises(PlateError, match="axes 'CZQX'"):
        import_tiffs(csv, tmp_path / "f.zarr", axes="CZQX", voxel_size=(0.5, 0.1, 0.1))
    # the command line
    from hcsmito.cli import main

    csv = _csv(tmp_path / "s.csv", "file,well,field", ["shaped.tif,C3,0"])
    args = ["--axes", "CZYX", "--voxel-size", "0.5,0.1,0.1", "--channel-labels", "G,M,P"]
    rc = main(["import", str(csv), "--out", str(tmp_path / "cli.zarr"), *args])
    assert rc == 0
    img = open_plate(tmp_path / "cli.zarr").read_field("C3", 0)
    np.testing.assert_array_equal(img.data.compute(), czyx)


def test_single_channel_stacks_need_no_channel_column(tmp_path):
    """Before: without a 'channel' column every file had to hold a C axis."""
    a, b = _stack((3, 16, 20)), _stack((3, 16, 20))
    tifffile.imwrite(tmp_path / "a.tif", a, imagej=True, resolution=(10, 10),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um",
                               "Labels": ["MitoTracker"] * 3})  # fmt: skip
    _imagej(tmp_path / "b.tif", b)
    csv = _csv(tmp_path / "s.csv", "file,well,field", ["a.tif,B2,0", "b.tif,B2,1"])
    plate = open_plate(import_tiffs(csv, tmp_path / "s.zarr"))
    img = plate.read_field("B2", 0)
    assert img.axes == "czyx" and img.channel_labels == ["MitoTracker"]
    np.testing.assert_array_equal(img.data.compute(), a[np.newaxis])
    np.testing.assert_array_equal(plate.read_field("B2", 1).data.compute(), b[np.newaxis])


def test_fields_of_different_depth_make_one_plate(tmp_path):
    """Before: every stack had to have the shape of the first (z-depth included)."""
    stacks = {0: _stack((2, 3, 16, 20)), 1: _stack((2, 7, 16, 20))}
    rows = []
    for field, czyx in stacks.items():
        for c, ch in enumerate(("GFP", "Mito")):
            _imagej(tmp_path / f"f{field}_{ch}.tif", czyx[c])
            rows.append(f"f{field}_{ch}.tif,B2,{field},{ch}")
    csv = _csv(tmp_path / "d.csv", "file,well,field,channel", rows)
    plate = open_plate(import_tiffs(csv, tmp_path / "d.zarr"))
    for field, czyx in stacks.items():
        np.testing.assert_array_equal(plate.read_field("B2", field).data.compute(), czyx)
    # the channels of one field still share their planes
    _imagej(tmp_path / "deep.tif", _stack((7, 16, 20)))
    rows = ["f0_GFP.tif,B2,0,GFP", "deep.tif,B2,0,Mito"]
    csv = _csv(tmp_path / "bad.csv", "file,well,field,channel", rows)
    with pytest.raises(PlateError, match=r"well B/02 field 0: its channels' stacks differ"):
        import_tiffs(csv, tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


# ---------------------------------------------- issue 14: Fiji's Info (the microscope's metadata)


def _bioformats_info(voxel_um, names, name="a.czi #1") -> str:
    """The ``Info`` Fiji keeps of a Zeiss CZI opened with Bio-Formats (its original
    metadata, one ``key = value`` per line, sorted; the core values first, with a leading
    space): CZI scaling in metres, with its axis ids, and the channels' names."""
    lines = {" BitsPerPixel": "16", " DimensionOrder": "XYCZT", " Series 0 Name": name,
             "Information|Image|SizeC #1": str(len(names)),
             "Experiment|AcquisitionBlock|AcquisitionModeSetup|ScalingX #1": "9e-08"}  # fmt: skip
    for k, (ax, v) in enumerate(zip("XYZ", voxel_um[::-1], strict=True), start=1):
        lines[f"Scaling|Distance|Id #{k}"] = ax
        lines[f"Scaling|Distance|Value #{k}"] = f"{v * 1e-6!r}".upper()
        lines[f"Scaling|Distance|DefaultUnitFormat #{k}"] = "µm"
    for k, n in enumerate(names, start=1):
        lines[f"Information|Image|Channel|Name #{k}"] = n
    return "".join(f"{key} = {lines[key]}\n" for key in sorted(lines))


def _ome_info(voxel_um, names) -> str:
    """The ``Info`` ImageJ's own TIFF reader keeps of an OME-TIFF: its OME-XML description."""
    dz, dy, dx = voxel_um
    chans = "".join(f'<Channel ID="Channel:0:{i}" Name="{n}"/>' for i, n in enumerate(names))
    return (
        'ImageDescription: <?xml version="1.0" encoding="UTF-8"?><OME '
        'xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
        f'<Pixels ID="Pixels:0" DimensionOrder="XYCZT" PhysicalSizeX="{dx * 1000}" '
        f'PhysicalSizeXUnit="nm" PhysicalSizeY="{dy * 1000}" PhysicalSizeYUnit="nm" '
        f'PhysicalSizeZ="{dz}" Type="uint16">{chans}</Pixels></Image></OME>\n'
    )


def _fiji(path: Path, zcyx: np.ndarray, *, info: str, labels=None, dxy=None, dz=None) -> Path:
    """An ImageJ hyperstack as Fiji saves it: calibrated (``unit``, resolution, ``spacing``)
    only where given, ``Info`` and slice ``Labels`` when given."""
    meta = {"axes": "ZCYX", "Info": info}
    if labels is not None:
        meta["Labels"] = labels
    if dxy is not None:
        meta["unit"] = "micron"
    if dz is not None:
        meta["spacing"] = dz
    res = (1 / dxy, 1 / dxy) if dxy is not None else None
    tifffile.imwrite(path, zcyx, imagej=True, resolution=res, metadata=meta)
    return path


def test_imagej_info_gives_what_the_calibration_lacks(tmp_path, caplog):
    """Before: Fiji's Info was not read. A hyperstack saved without calibration was refused
    for want of a voxel size, and Bio-Formats' slice labels ('c:1/3; z:1/4 - a.czi #1')
    became the channel names, which no role finds."""
    names, voxel = ["EGFP", "MitoTracker Red", "Phalloidin"], (0.4, 0.1035, 0.1035)
    zcyx = _stack((4, 3, 16, 20))
    plane_labels = [f"c:{c + 1}/3; z:{z + 1}/4 - a.czi #1" for z in range(4) for c in range(3)]
    # no calibration at all: voxel size and names from Bio-Formats' CZI metadata
    _fiji(tmp_path / "bf.tif", zcyx, info=_bioformats_info(voxel, names), labels=plane_labels)
    # x, y calibrated, z not (ImageJ's opener of an OME-TIFF): z from the OME-XML in Info
    _fiji(tmp_path / "ome.tif", zcyx, info=_ome_info(voxel, names), dxy=0.1035)
    csv = _csv(tmp_path / "f.csv", "file,well,field", ["bf.tif,B2,0", "ome.tif,B2,1"])
    with caplog.at_level("WARNING", logger="hcsmito.io.tiff_import"):
        plate = open_plate(import_tiffs(csv, tmp_path / "f.zarr"))
    assert not caplog.records  # the Info agrees with what calibration there is
    for field in (0, 1):
        img = plate.read_field("B2", field)
        assert img.channel_labels == names
        assert img.voxel_size == pytest.approx(dict(zip("zyx", voxel, strict=True)), rel=1e-6)
        np.testing.assert_array_equal(img.data.compute(), zcyx.transpose(1, 0, 2, 3))
    roles = img.resolve_roles()
    assert (roles["msc"], roles["mito"], roles["actin"]) == (0, 1, 2)


def test_imagej_calibration_and_info_that_disagree_are_named(tmp_path, caplog):
    """Fiji's calibration wins (it follows Fiji's binning and scaling, the Info does not),
    and the disagreement is said, with both values and the flag that overrides them."""
    zcyx = _stack((4, 2, 16, 20))
    info = _bioformats_info((0.4, 0.1, 0.1), ["EGFP", "MitoTracker Red"])
    _fiji(tmp_path / "b.tif", zcyx, info=info, labels=["GFP", "Mito"], dxy=0.2, dz=0.4)
    csv = _csv(tmp_path / "f.csv", "file,well,field", ["b.tif,B2,0"])
    with caplog.at_level("WARNING", logger="hcsmito.io.tiff_import"):
        plate = open_plate(import_tiffs(csv, tmp_path / "f.zarr"))
    img = plate.read_field("B2", 0)
    assert img.voxel_size == pytest.approx({"z": 0.4, "y": 0.2, "x": 0.2})
    assert img.channel_labels == ["GFP", "Mito"]
    text = caplog.text
    assert "b.tif" in text and "--voxel-size" in text and "--channel-labels" in text
    assert "0.2" in text and "0.1" in text and "EGFP" in text
    assert len(caplog.records) == 2  # one line for the voxel size, one for the names
