"""The Parquet files of OUT/tables: each column's unit is its Arrow field metadata (from
hcsmito.schema), and a table without rows keeps its columns and their types (what
DuckDB-like readers see in the file's schema)."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hcsmito import schema
from hcsmito.aggregate import write_aggregates
from hcsmito.io.rundir import FieldOutcome, RunDir
from hcsmito.report.html import build_report


def _units(path) -> dict[str, str]:
    return {
        f.name: f.metadata[b"unit"].decode()
        for f in pq.read_schema(path)
        if f.metadata and b"unit" in f.metadata
    }


def _assert_declared(path, name: str) -> None:
    """Every declared column is in the file's schema, typed (not null), numbers as numbers."""
    got = pq.read_schema(path)
    for col in schema.TABLES[name].columns:
        assert col.name in got.names, (name, col.name)
        t = got.field(col.name).type
        assert not pa.types.is_null(t), (name, col.name)
        if col.dtype.lower().startswith(("int", "float")):
            assert pa.types.is_integer(t) or pa.types.is_floating(t), (name, col.name, t)


@pytest.mark.parametrize("name", schema.field_tables())
def test_units_are_field_metadata(tmp_path, name):
    rd = RunDir(tmp_path / "out")
    df = schema.empty_table(name, keys=True)
    for path in (rd.write_part(name, "B3_f0", df), rd.write_table(name, df)):
        want = {c: u for c, u in schema.TABLES[name].units.items() if u}
        assert _units(path) == want
        _assert_declared(path, name)
    if name == "foci":
        assert want["z_um"] == "µm" and want["volume_um3"] == "µm³"


def test_empty_run_tables_keep_columns_types_and_units(tmp_path):
    """No field ok: every table a run compacts and the aggregation and report write has
    its declared columns in the Parquet schema (trends.parquet included)."""
    rd = RunDir(tmp_path / "out")
    rd.compact([FieldOutcome("p", "B/2", 0, "failed")])
    for name in schema.field_tables():
        if rd.has_table(name):
            _assert_declared(rd.table(name), name)
    pm = tmp_path / "map.csv"
    pd.DataFrame({"well": ["B/2", "B/3"], "condition": ["DMSO", "X"]}).to_csv(pm, index=False)
    build_report(rd.root, plate_map=pm)
    for name in schema.aggregate_tables():
        assert rd.has_table(name), name
        _assert_declared(rd.table(name), name)
    cond = pq.read_schema(rd.table("conditions"))
    assert pa.types.is_floating(cond.field("mean").type)  # not text
    assert "slope_per_day" in pq.read_schema(rd.table("trends")).names
    units = _units(rd.table("wells"))
    assert units["foci_area_um2"] == units["foci_area_um2_sem"] == "µm²"
    assert units["pct_msc_red_positive"] == "%"
    assert _units(rd.table("fields"))["glass_z_um"] == "µm"


def test_aggregates_of_a_fields_table_without_rows(tmp_path):
    rd = RunDir(tmp_path)
    rd.tables_dir.mkdir(parents=True)
    rd.write_table("fields", schema.empty_table("fields", keys=True))
    res = write_aggregates(tmp_path)
    assert len(res["wells"]) == 0
    for name in schema.aggregate_tables():
        _assert_declared(rd.table(name), name)
    got = pq.read_schema(rd.table("fields"))
    assert pa.types.is_string(got.field("plate").type) or pa.types.is_large_string(
        got.field("plate").type
    )
