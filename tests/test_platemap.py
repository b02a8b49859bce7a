"""Plate map parsing: well spellings, optional columns, and every error with line and fix."""

import logging

import pytest

from hcsmito.platemap import PlateMapError, normalize_well, read_plate_map


def _write(tmp_path, text, name="map.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_spellings_and_columns(tmp_path):
    p = _write(
        tmp_path,
        "Well,Condition,replicate,day,drug,inhibitor,operator\n"
        "B03,DMSO,1,1,,,ana\n"
        "c/3,DMSO,1,1,,,ana\n"
        "B/4,cytochalasin D,1,2,,cytochalasin D,bo\n"
        "\n"
        "A12,ara-C,2,3,ara-C,,bo\n",
    )
    df = read_plate_map(p)
    assert list(df["well"]) == ["A/12", "B/3", "B/4", "C/3"]  # sorted row, then column
    assert list(df.columns[:6]) == ["well", "condition", "replicate", "day", "drug", "inhibitor"]
    assert "operator" in df and df.loc[df["well"] == "A/12", "operator"].item() == "bo"
    assert df["replicate"].dtype == "int64" and df["day"].dtype == "float64"
    assert df.loc[df["well"] == "B/4", "day"].item() == 2.0
    assert df.loc[df["well"] == "B/4", "inhibitor"].item() == "cytochalasin D"
    assert [normalize_well(w) for w in ("B03", "B3", "B/3", "b/03")] == ["B/3"] * 4


def test_defaults_without_optional_columns(tmp_path):
    p = _write(tmp_path, "well,condition\nB2,DMSO\nC2,DMSO\nB3,X\n")
    df = read_plate_map(p)
    # each well its own replicate, numbered within the condition in file order
    assert dict(zip(df["well"], df["replicate"], strict=True)) == {"B/2": 1, "B/3": 1, "C/2": 2}
    assert df["day"].isna().all() and (df["drug"] == "").all()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("well,treatment\nB2,DMSO\n", ["line 1", "no 'condition' column"]),
        ("well,condition\nB2,DMSO\nB02,X\n", ["line 3", "already listed on line 2"]),
        ("well,condition\nB2,DMSO\nZZZ9,X\n", ["line 3", "'ZZZ9'", "'B03'"]),
        ("well,condition\nB2,\n", ["line 2", "no condition"]),
        ("well,condition,replicate\nB2,DMSO,1.5\n", ["line 2", "replicate '1.5'", "integer"]),
        ("well,condition,day\nB2,DMSO,two\n", ["line 2", "day 'two'", "number"]),
        ("well,condition,replicate\nB2,DMSO,1\nB3,DMSO,\n", ["replicate is blank"]),
        ("well,condition\nB2,DMSO,extra\n", ["line 2", "3 values for 2 columns"]),
        ("well,condition\n", ["no wells"]),
        ("", ["empty"]),
    ],
)
def test_errors_name_file_line_and_fix(tmp_path, text, needles):
    p = _write(tmp_path, text)
    with pytest.raises(PlateMapError) as exc:
        read_plate_map(p)
    msg = str(exc.value)
    assert str(p) in msg
    for n in needles:
        assert n in msg, msg


def test_all_problems_reported_at_once(tmp_path):
    p = _write(tmp_path, "well,condition\nB2,DMSO\nB2,X\nQ,Y\nC4,\n")
    with pytest.raises(PlateMapError, match="3 problem") as exc:
        read_plate_map(p)
    assert all(f"line {i}" in str(exc.value) for i in (3, 4, 5))


def test_against_plate_wells(tmp_path, caplog):
    p = _write(tmp_path, "well,condition\nB2,DMSO\nB3,X\nH12,Y\n")
    with pytest.raises(PlateMapError, match=r"line 4: well H/12 is not in the plate: remove"):
        read_plate_map(p, plate_wells=["B/02", "B/03", "C/02"])
    with caplog.at_level(logging.WARNING, logger="hcsmito.platemap"):
        df = read_plate_map(p, plate_wells=["B/02", "B/03", "C/02"], on_extra="warn")
    assert df.attrs["wells_not_in_plate"] == ["H/12"]
    assert df.attrs["wells_not_in_map"] == ["C/2"]
    assert "C/2" in caplog.text and "left out of the statistics" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--plate-map"):
        read_plate_map(tmp_path / "nope.csv")
