"""The output folder: atomic writes, the ledger, compaction of part files, status."""

import pandas as pd
import pytest

from hcsmito import schema
from hcsmito.io.rundir import FieldOutcome, RunDir, field_stem


def _part(name: str, well: str, field: int, n: int) -> pd.DataFrame:
    df = schema.empty_table(name)
    if n:
        df = pd.DataFrame({c: [0] * n for c in df.columns}).astype(schema.TABLES[name].dtypes)
        if name == "fields":
            df["status"] = "ok"
        if schema.TABLES[name].id_column:
            df[schema.TABLES[name].id_column] = list(range(n, 0, -1))
    df.insert(0, "field", field)
    df.insert(0, "well", well)
    df.insert(0, "plate", "p")
    return df.astype({"field": "int32"})


def test_compaction_sorts_keeps_columns_and_records_failed_fields(tmp_path):
    rd = RunDir(tmp_path / "out")
    fields = [FieldOutcome("p", "B/10", 0, "ok"), FieldOutcome("p", "B/2", 0, "ok"),
              FieldOutcome("p", "B/2", 1, "failed")]  # fmt: skip
    for f in fields[:2]:
        for name in schema.field_tables():
            n = 0 if name in ("tnt", "foci") else (1 if name == "fields" else 2)
            rd.write_part(name, f.stem, _part(name, f.well, f.field, n))
        assert rd.has_parts(f.stem)
    rd.compact(fields)
    for name in schema.field_tables():
        df = rd.read_table(name)
        cols = schema.empty_table(name, keys=True).columns
        assert list(df.columns) == list(cols), name  # empty tables keep their columns
    cells = rd.read_table("cells")
    assert list(zip(cells["well"], cells["cell_id"], strict=True)) == [
        ("B/2", 1), ("B/2", 2), ("B/10", 1), ("B/10", 2)
    ]  # fmt: skip
    got = rd.read_table("fields")
    assert list(got["status"]) == ["ok", "failed", "ok"]
    assert got["n_msc"].isna().tolist() == [False, True, False]
    assert not [p for p in rd.root.rglob("*") if ".tmp" in p.name]


def test_ledger_and_status(tmp_path):
    rd = RunDir(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="hcsmito run"):
        rd.status()
    assert rd.read_ledger(field_stem("B/3", 0)) is None
    rd.write_ledger("B3_f0", {"well": "B/3", "field": 0, "status": "ok", "wall_s": 1.234,
                              "qc_flags": ["saturated"]})  # fmt: skip
    rd.write_ledger("B10_f0", {"well": "B/10", "field": 0, "status": "failed", "error": "x"})
    rd.ledger("B2_f0").write_text("{half")  # a torn entry is no entry
    assert rd.read_ledger("B3_f0")["status"] == "ok" and rd.read_ledger("B2_f0") is None
    st = rd.status()
    assert list(st["well"]) == ["B/3", "B/10"]
    assert list(st["qc_flags"]) == ["saturated", ""] and st["seconds"].iloc[0] == 1.23
    assert rd.is_run_folder()
    rd.write_manifest({"plate": "p"})
    assert rd.read_manifest() == {"plate": "p"}
    rd.clear()
    assert rd.is_empty()


def test_partial_files_of_killed_writers_are_removed(tmp_path):
    """A worker killed while writing leaves ``.NAME.PID.tmp``; the next run removes those
    and nothing else (a user's hidden file stays); no listing of the ledger sees them."""
    rd = RunDir(tmp_path / "out")
    rd.write_ledger("B2_f0", {"status": "ok"})
    rd.write_part("fields", "B2_f0", pd.DataFrame({"a": [1]}))
    left = [
        rd.ledger_dir / ".B2_f1.json.2257.tmp",
        rd.part("fields", "B2_f1").with_name(".B2_f1.parquet.99.tmp"),
        rd.root / ".manifest.json.31.tmp",
    ]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    keep = rd.root / ".hidden_notes.txt"
    keep.write_text("mine")
    assert [e["status"] for e in rd.ledger_entries()] == ["ok"]
    assert sorted(rd.remove_partial()) == sorted(left)
    assert not any(p.exists() for p in left)
    assert keep.exists() and rd.read_ledger("B2_f0") == {"status": "ok"}
    assert rd.part("fields", "B2_f0").exists()
