"""The output folder: atomic writes, the ledger, compaction of part files, status."""

import json
import logging
import os
import platform
import subprocess
import sys

import pandas as pd
import pytest

from hcsmito import schema
from hcsmito.io.rundir import FieldOutcome, RunDir, RunDirLocked, field_stem


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
    for name in schema.field_tables():
        rd.write_part(name, "B3_f0", _part(name, "B/3", 0, 1))
    rd.write_ledger("B10_f0", {"well": "B/10", "field": 0, "status": "failed", "error": "x"})
    rd.ledger("B2_f0").write_text("{half")  # a torn entry is no entry: the field is redone
    assert rd.read_ledger("B3_f0")["status"] == "ok" and rd.read_ledger("B2_f0") is None
    assert rd.ledger_problem("B2_f0").startswith("ledger/B2_f0.json is not JSON")
    st = rd.status()
    assert list(st["well"]) == ["B/2", "B/3", "B/10"]
    assert list(st["status"]) == ["redo", "ok", "failed"]
    assert st["error"].iloc[0].endswith(": the field will be redone")
    assert list(st["qc_flags"]) == ["", "saturated", ""] and st["seconds"].iloc[1] == 1.23
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


# --------------------------------------------------------------------------- lock, target


def _holder(out) -> subprocess.Popen:
    """Another process that takes OUT's lock, says so, and holds it until killed."""
    code = (
        "import sys, time\n"
        "from hcsmito.io.rundir import RunDir\n"
        "with RunDir(sys.argv[1]).lock():\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_run_and_takes_over_a_dead_ones(tmp_path, caplog):
    """Before: no lock; a second run into OUT ran beside the first (or was refused for a
    misleading reason). A live holder is named by PID and host; a dead one's lock is
    stale: taken over, with a warning that says so."""
    rd = RunDir(tmp_path / "out")
    proc = _holder(rd.root)
    try:
        with pytest.raises(RunDirLocked) as err, rd.lock():
            pass
        msg = str(err.value)
        assert f"is in use by another hcsmito run (PID {proc.pid} on {platform.node()}" in msg
        assert "\n" not in msg
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert json.loads(rd.lock_path.read_text())["pid"] == proc.pid  # left behind: stale
    with caplog.at_level(logging.WARNING), rd.lock() as previous:
        assert previous["pid"] == proc.pid
        assert json.loads(rd.lock_path.read_text())["pid"] == os.getpid()
    assert f"took over the stale lock of hcsmito run PID {proc.pid}" in caplog.text
    assert not rd.lock_path.exists()  # released
    with rd.lock() as previous:  # free: nothing to take over
        assert previous == {}


def test_run_folder_is_recognised_from_its_first_write(tmp_path):
    """Before: a run killed before its first field left labels.zarr alone, and the re-run
    refused the folder as "not an hcsmito output folder"."""
    rd = RunDir(tmp_path / "out")
    rd.check_target()
    assert rd.root.is_dir() and rd.is_empty() and not list(rd.root.iterdir())
    with rd.lock():  # what a run killed right now leaves: a lock (stale once it is dead)
        assert rd.is_run_folder()
    rd.mark("/some/plate.zarr")
    (rd.labels / "B").mkdir(parents=True)  # the label plate, half created
    assert rd.is_run_folder() and rd.plate_path() == "/some/plate.zarr"
    rd.check_target()  # accepted again
    foreign = RunDir(tmp_path / "theirs")
    foreign.root.mkdir()
    (foreign.root / "data.csv").write_text("x")
    with pytest.raises(FileExistsError, match="is not an hcsmito output folder"):
        foreign.check_target()


def test_target_that_is_a_file_or_not_writable_is_one_line(tmp_path):
    """Before: tracebacks (NotADirectoryError / PermissionError from deep in the writer)."""
    f = tmp_path / "out"
    f.write_text("mine")
    with pytest.raises(FileExistsError, match=r"^--out .*out is a file, not a folder"):
        RunDir(f).check_target(overwrite=True)
    with pytest.raises(FileExistsError, match="is a file"):  # a file above OUT
        RunDir(f / "sub").check_target()
    assert f.read_text() == "mine"
    if os.geteuid() != 0:  # root writes anywhere but on read-only file systems
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(PermissionError, match=r"^--out .*ro is not writable"):
            RunDir(ro).check_target()
    elif not os.access("/sys", os.W_OK) or _read_only("/sys"):
        with pytest.raises(PermissionError, match=r"^--out /sys/hcsmito-out is not writable"):
            RunDir("/sys/hcsmito-out").check_target()


def _read_only(path: str) -> bool:
    try:
        os.mkdir(os.path.join(path, f"hcsmito-probe-{os.getpid()}"))
    except OSError:
        return True
    os.rmdir(os.path.join(path, f"hcsmito-probe-{os.getpid()}"))
    return False


@pytest.mark.parametrize("damage", ["empty", "torn", "not parquet", "missing"])
def test_damaged_part_is_named(tmp_path, damage):
    """Before: a 0-byte part counted as written; the re-run's compaction then failed
    (exit 2) instead of redoing the field."""
    rd = RunDir(tmp_path / "out")
    for name in schema.field_tables():
        rd.write_part(name, "B3_f0", _part(name, "B/3", 0, 2))
    assert rd.parts_problem("B3_f0") is None and rd.has_parts("B3_f0")
    p = rd.part("cells", "B3_f0")
    if damage == "empty":
        p.write_bytes(b"")
    elif damage == "torn":
        p.write_bytes(p.read_bytes()[:-20])
    elif damage == "not parquet":
        p.write_text("well,field\nB/3,0\n")
    else:
        p.unlink()
    why = {"empty": "is empty (0 bytes)", "missing": "is missing"}.get(damage, "is unreadable")
    assert rd.parts_problem("B3_f0").startswith(f"tables/parts/cells/B3_f0.parquet {why}")
    assert not rd.has_parts("B3_f0")
