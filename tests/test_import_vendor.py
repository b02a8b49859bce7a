"""Vendor microscope files (CZI, LIF, ND2) -> NGFF plate through bioio (``hcsmito[formats]``).

The files are written here, by the format's own writer where one exists: CZI by Zeiss'
pylibCZIrw (a dependency of bioio-czi), with the ``S/Scenes`` metadata ZEN writes added
through pylibCZIrw's metadata editor; LIF by :func:`write_lif` below (the LIF v2 layout that
liffile and bioio-lif read: an XML header, then one memory block per image).

ND2 is read through bioio-nd2 and is not tested here. Nothing writes ND2 (the ``nd2``
package only reads), and neither ``nd2``'s nor bioio-nd2's distribution carries a sample.
The one small sample found on PyPI, pims_nd2's ``cluster.nd2`` (0.5 MB), holds 3 time
points, which the import refuses, and its distribution states no licence. So no ND2 file
is added under ``tests/data``.

The ``test`` extra installs bioio with its CZI and LIF plugins, so CI runs these tests (it
fails, rather than skips, without them: ``CI`` set). Elsewhere they skip where bioio or the
format's plugin is missing. The one-line error without them is tested always.
"""

from __future__ import annotations

import importlib
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from hcsmito.io.plate import PlateError, open_plate
from hcsmito.io.tiff_import import import_tiffs
from hcsmito.io.vendor_import import expand_scenes

CHANNELS = ["GFP", "MitoTracker", "Phalloidin"]
VOXEL = (0.5, 0.2, 0.2)  # z, y, x µm
RNG = np.random.default_rng(7)


def _scenes(n=2, shape=(3, 4, 24, 28)) -> list[np.ndarray]:
    return [RNG.integers(0, 4000, shape).astype(np.uint16) for _ in range(n)]


def write_czi(path: Path, scenes, channel_names, voxel_um) -> Path:
    """A CZI of (C, Z, Y, X) uint16 scenes, written by pylibCZIrw."""
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    dz, dy, dx = voxel_um
    with pyczi.create_czi(str(path)) as w:
        for s, data in enumerate(scenes):
            for c in range(data.shape[0]):
                for z in range(data.shape[1]):
                    w.write(data[c, z], plane={"C": c, "Z": z}, scene=s, location=(s * 1000, 0))
        w.write_metadata(
            channel_names=dict(enumerate(channel_names)),
            scale_x=dx * 1e-6,  # metres
            scale_y=dy * 1e-6,
            scale_z=dz * 1e-6,
        )
    names = "".join(f'<Scene Index="{s}" Name="P{s + 1}"/>' for s in range(len(scenes)))
    with pyczi.edit_czi(str(path)) as editor:  # scene names, as ZEN writes them
        meta = editor.create_metadata_builder()
        xml = meta.get_xml()
        meta.set_xml(xml.replace("</Channels>", f"</Channels><S><Scenes>{names}</Scenes></S>"))
        meta.commit()
    return path


def write_lif(path: Path, scenes, channel_names, voxel_um) -> Path:
    """A minimal Leica LIF (version 2): one image per scene, each (C, Z, Y, X) uint16 stored
    as Leica does (Z slowest, then C, Y, X), channel names as LUT names, lengths in m."""
    dz, dy, dx = voxel_um
    elements, blocks = [], [("MemBlock_0", b"")]
    for k, data in enumerate(scenes):
        c, z, y, x = data.shape
        chans = "".join(
            f'<ChannelDescription DataType="0" ChannelTag="0" Resolution="16" '
            f'NameOfMeasuredQuantity="" Min="0" Max="65535" Unit="" LUTName="{name}" '
            f'IsLUTInverted="0" BytesInc="{i * x * y * 2}" BitInc="0"/>'
            for i, name in enumerate(channel_names)
        )
        dims = "".join(
            f'<DimensionDescription DimID="{d}" NumberOfElements="{n}" Origin="0" '
            f'Length="{v * 1e-6 * (n - 1)!r}" Unit="m" BitInc="0" BytesInc="{inc}"/>'
            for d, n, v, inc in ((1, x, dx, 2), (2, y, dy, 2 * x), (3, z, dz, 2 * x * y * c))
        )
        block = f"MemBlock_{k + 1}"
        raw = np.ascontiguousarray(data.transpose(1, 0, 2, 3), dtype="<u2").tobytes()
        blocks.append((block, raw))
        elements.append(
            f'<Element Name="Position{k + 1}"><Data><Image><ImageDescription>'
            f"<Channels>{chans}</Channels><Dimensions>{dims}</Dimensions>"
            f'</ImageDescription></Image></Data><Memory Size="{len(raw)}" '
            f'MemoryBlockID="{block}"/><Children/></Element>'
        )
    xml = (
        '<LMSDataContainerHeader Version="2"><Element Name="project"><Data><Experiment/>'
        '</Data><Memory Size="0" MemoryBlockID="MemBlock_0"/><Children>'
        + "".join(elements)
        + "</Children></Element></LMSDataContainerHeader>"
    )
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IIBI", 0x70, 2 * len(xml) + 5, 0x2A, len(xml)))
        fh.write(xml.encode("utf-16-le"))
        for block, raw in blocks:
            fh.write(struct.pack("<IIBQBI", 0x70, 0, 0x2A, len(raw), 0x2A, len(block)))
            fh.write(block.encode("utf-16-le") + raw)
    return path


def _require(*modules: str) -> None:
    """Skip without these modules, except in CI (``CI`` set), where the ``test`` extra
    installs them: there their absence fails."""
    for module in modules:
        if os.environ.get("CI"):
            importlib.import_module(module)
        else:
            pytest.importorskip(module)


def _needs(fmt: str) -> None:
    _require("bioio", {"czi": "bioio_czi", "lif": "bioio_lif"}[fmt])


WRITERS = {"czi": write_czi, "lif": write_lif}


@pytest.mark.parametrize("fmt", ["czi", "lif"])
def test_scenes_become_fields_with_voxel_size_and_channel_names(fmt, tmp_path):
    _needs(fmt)
    scenes = _scenes(3)
    WRITERS[fmt](tmp_path / f"a.{fmt}", scenes, CHANNELS, VOXEL)
    # a row without scene: every scene, fields 0, 1, 2; a scene by index or by name
    second = "P2" if fmt == "czi" else "Position2"
    csv = tmp_path / "files.csv"
    csv.write_text(f"file,well,field,scene\na.{fmt},B3,0,\na.{fmt},C4,0,{second}\na.{fmt},C4,1,2\n")
    plate = open_plate(import_tiffs(csv, tmp_path / "p.zarr"))
    for well, field, scene in [("B/3", 0, 0), ("B/3", 1, 1), ("B/3", 2, 2), ("C/4", 0, 1),
                               ("C/4", 1, 2)]:  # fmt: skip
        img = plate.read_field(well, field)
        assert img.channel_labels == CHANNELS
        assert img.voxel_size == pytest.approx(dict(zip("zyx", VOXEL, strict=True)), rel=1e-9)
        np.testing.assert_array_equal(np.asarray(img.data), scenes[scene])
    bad = tmp_path / "bad.csv"
    bad.write_text(f"file,well,field,scene\na.{fmt},B3,0,P9\n")
    with pytest.raises(PlateError, match=r"has no scene 'P9'; its scenes are \["):
        import_tiffs(bad, tmp_path / "bad.zarr")


def test_vendor_file_without_bioio_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    """Always runs: bioio (or the plugin) is made unimportable."""
    (tmp_path / "a.czi").write_bytes(b"not read")
    csv = tmp_path / "f.csv"
    csv.write_text("file,well,field\na.czi,B3,0\n")
    monkeypatch.setitem(sys.modules, "bioio", None)
    with pytest.raises(PlateError) as exc:
        import_tiffs(csv, tmp_path / "p.zarr")
    msg = str(exc.value)
    assert "\n" not in msg and "a.czi" in msg and "pip install 'hcsmito[formats]'" in msg
    assert not (tmp_path / "p.zarr").exists()

    monkeypatch.delitem(sys.modules, "bioio")
    pytest.importorskip("bioio")  # and a missing plugin names it
    (tmp_path / "a.nd2").write_bytes(b"not read")
    csv.write_text("file,well,field\na.nd2,B3,0\n")
    monkeypatch.setitem(sys.modules, "bioio_nd2", None)
    with pytest.raises(PlateError, match=r"a\.nd2: .* bioio plugin bioio-nd2.*hcsmito\[formats\]"):
        import_tiffs(csv, tmp_path / "p.zarr")


def test_scene_column_parsing(tmp_path):
    """Without opening any vendor file: TIFF rows get scene -1, rows keep their CSV line,
    and a scene given for a TIFF is refused with the line."""
    table = pd.DataFrame({"file": ["a.tif", "b.tif"], "well": ["B3", "B3"],
                          "field": ["0", "1"], "scene": [np.nan, "0"]})  # fmt: skip
    out = expand_scenes(table, tmp_path, tmp_path / "f.csv")
    assert list(out["scene"]) == [-1, -1] and list(out.index) == [0, 1]
    assert "scene" in expand_scenes(table.drop(columns="scene"), tmp_path, tmp_path).columns
    table.loc[1, "scene"] = "2"
    with pytest.raises(PlateError, match=r"line 3: a scene is given for b\.tif"):
        expand_scenes(table, tmp_path, tmp_path / "f.csv")
    (tmp_path / "x.czi").unlink(missing_ok=True)
    table = pd.DataFrame({"file": ["x.czi"], "well": ["B3"], "field": ["0"]})
    with pytest.raises(PlateError, match=r"line 2: file .*x\.czi does not exist"):
        expand_scenes(table, tmp_path, tmp_path / "f.csv")


# --- run: the same tables as the same pixels imported from TIFF -------------------------


@pytest.fixture(scope="module")
def synth_fields(tmp_path_factory):
    """Two fields of a synthetic co-culture: ((C, Z, Y, X) arrays, labels, voxel z, y, x)."""
    from hcsmito.synth import SynthParams, write_synth_plate

    _require("bioio")  # skipped before the plate is made, not after

    root = tmp_path_factory.mktemp("synth")
    params = SynthParams().model_copy(update={"n_msc": 3, "n_jurkat": 3})
    plate = open_plate(
        write_synth_plate(
            root / "s.zarr",
            seed=5,
            wells={"B/2": "DMSO"},
            fields=2,
            shape=(14, 128, 128),
            params=params,
        )  # fmt: skip
    )
    imgs = [plate.read_field("B/2", f) for f in range(2)]
    voxel = tuple(imgs[0].voxel_size[ax] for ax in "zyx")
    return [np.asarray(i.data) for i in imgs], list(imgs[0].channel_labels), voxel


def _run(plate: Path, out: Path) -> dict[str, pd.DataFrame]:
    from hcsmito.runner import run_plate
    from hcsmito.schema import field_tables

    s = run_plate(plate, out, backend="cpu", scheduler="threads", workers=1, progress=False)
    assert s.ok and len(s.processed) == 2
    return {t: pd.read_parquet(out / "tables" / f"{t}.parquet") for t in field_tables()}


@pytest.fixture(scope="module")
def tiff_tables(synth_fields, tmp_path_factory):
    data, labels, voxel = synth_fields
    root = tmp_path_factory.mktemp("tiff")
    for f, arr in enumerate(data):
        tifffile.imwrite(root / f"f{f}.ome.tif", arr, ome=True, metadata={
            "axes": "CZYX", "Channel": {"Name": labels}, "PhysicalSizeZ": voxel[0],
            "PhysicalSizeY": voxel[1], "PhysicalSizeX": voxel[2]})  # fmt: skip
    csv = root / "f.csv"
    csv.write_text("file,well,field\nf0.ome.tif,B2,0\nf1.ome.tif,B2,1\n")
    plate = import_tiffs(csv, root / "in" / "p.zarr")
    return _run(plate, root / "out")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["czi", "lif"])
def test_run_gives_the_tables_of_the_same_pixels_from_tiff(fmt, synth_fields, tiff_tables,
                                                           tmp_path):  # fmt: skip
    _needs(fmt)
    data, labels, voxel = synth_fields
    WRITERS[fmt](tmp_path / f"a.{fmt}", data, labels, voxel)  # two scenes: fields 0, 1
    csv = tmp_path / "f.csv"
    csv.write_text(f"file,well,field\na.{fmt},B2,0\n")
    plate = import_tiffs(csv, tmp_path / "in" / "p.zarr")
    img = open_plate(plate).read_field("B/2", 1)
    assert img.channel_labels == labels
    assert img.voxel_size == pytest.approx(dict(zip("zyx", voxel, strict=True)), rel=1e-9)
    tables = _run(plate, tmp_path / "out")
    assert len(tables["fields"]) == 2 and tables["fields"]["n_msc"].sum() > 0
    for name, want in tiff_tables.items():
        pd.testing.assert_frame_equal(tables[name], want, check_exact=False, rtol=1e-6)
