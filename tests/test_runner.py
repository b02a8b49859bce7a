"""The batch runner on a real synthetic plate, real zarr stores and real Dask clusters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hcsmito.config import load_config
from hcsmito.io.plate import open_plate
from hcsmito.pipeline import process_field
from hcsmito.runner import field_status, run_plate
from hcsmito.schema import field_tables
from hcsmito.synth import SynthParams, write_synth_plate

WELLS = {"B/2": "DMSO", "B/3": "cytochalasin D"}
FIELDS = 2
SHAPE = (16, 128, 128)


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plate")
    params = SynthParams().model_copy(update={"n_msc": 3, "n_jurkat": 3})
    return write_synth_plate(
        root / "p.zarr", seed=3, wells=WELLS, fields=FIELDS, shape=SHAPE, params=params
    )


@pytest.fixture(scope="module")
def reference(plate, tmp_path_factory) -> Path:
    """One uninterrupted run with threads: the reference every other run must equal."""
    out = tmp_path_factory.mktemp("ref") / "out"
    plate_map = plate.parent / "p_platemap.csv"
    s = run_plate(
        plate,
        out,
        plate_map=plate_map,
        scheduler="threads",
        workers=2,
        backend="cpu",
        progress=False,
    )
    assert s.ok and len(s.processed) == len(WELLS) * FIELDS
    return out


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(out / "tables" / f"{t}.parquet") for t in field_tables()}


def _assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    for name in field_tables():
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=False, rtol=1e-6)


def _no_partial_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_outputs_complete_and_equal_direct_stage_calls(plate, reference):
    out = reference
    for name in ("labels.zarr", "manifest.json", "tables", "qc", "ledger"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "cpu" and manifest["plate"] == "p"
    assert {f["status"] for f in manifest["fields"]} == {"ok"}
    assert all("segment_msc" in f["timings"] for f in manifest["fields"])
    assert len(list((out / "qc").glob("*.png"))) == len(WELLS) * FIELDS
    assert not _no_partial_files(out)

    # every field exactly once in the fields table, in plate order
    fields = pd.read_parquet(out / "tables" / "fields.parquet")
    assert list(zip(fields["well"], fields["field"], strict=True)) == [
        (w, f) for w in WELLS for f in range(FIELDS)
    ]

    # the tables of one field equal the stages called directly on that field, exactly:
    # every declared table, every column and dtype (the runner only adds plate, well, field)
    img = open_plate(plate).read_field("B/3", 1)
    roles = img.resolve_roles()
    channels = {r: np.asarray(img.channel(i)) for r, i in roles.items() if i is not None}
    direct = process_field(channels, voxel_size=img.voxel_size, config=load_config(), backend="cpu")
    assert list(direct.tables) == list(field_tables())
    for name in field_tables():
        got = pd.read_parquet(out / "tables" / f"{name}.parquet")
        assert list(got.columns[:3]) == ["plate", "well", "field"], name
        got = got[(got["well"] == "B/3") & (got["field"] == 1)]
        got = got.drop(columns=["plate", "well", "field"]).reset_index(drop=True)
        want = direct.tables[name]
        if not len(want):  # the plate's table holds the other fields' extra columns too
            got = got[list(want.columns)]
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)

    # labels.zarr is a valid NGFF 0.5 plate that our reader opens, holding the same labels
    lp = open_plate(out / "labels.zarr")
    assert lp.version == "0.5"
    assert [r.well for r in lp.fields] == [r.well for r in open_plate(plate).fields]
    import zarr

    grp = zarr.open_group(out / "labels.zarr" / "B" / "03" / "1" / "labels", mode="r")
    for name, lab in direct.labels.items():
        np.testing.assert_array_equal(grp[name]["0"][...], lab)
    labelled = lp.read_field("B/3", 1)
    assert labelled.channel_labels[:2] == ["GFP", "MitoTracker Red"]


def test_report_written_at_the_end_of_a_run(reference):
    import pandas as pd

    html = (reference / "report.html").read_text()
    assert "<html" in html.lower() and "DMSO" in html and "cytochalasin D" in html
    conditions = pd.read_parquet(reference / "tables" / "conditions.parquet")
    assert set(conditions["condition"]) == set(WELLS.values())
    assert (reference / "platemap.csv").exists()


def test_validates_with_ome_zarr_models(reference):
    models = pytest.importorskip("ome_zarr_models")
    import zarr
    from ome_zarr_models import open_ome_zarr

    grp = zarr.open_group(reference / "labels.zarr", mode="r")
    assert type(open_ome_zarr(grp)).__name__ == "HCS"
    assert models is not None


def test_rerun_processes_nothing_and_changes_redo(plate, reference, tmp_path):
    s = run_plate(
        plate,
        reference,
        scheduler="threads",
        workers=2,
        backend="cpu",
        progress=False,
        report=False,
    )
    assert s.processed == [] and len(s.skipped) == len(WELLS) * FIELDS
    # a changed option changes the key of every field
    cfg = load_config(overrides=["foci.threshold_k=7"])
    out = tmp_path / "out"
    run_plate(
        plate, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    s2 = run_plate(
        plate, out, config=cfg, scheduler="threads", workers=2, backend="cpu", progress=False
    )
    assert len(s2.processed) == len(WELLS) * FIELDS


def test_input_plate_is_never_modified(plate, reference):
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in plate.rglob("*")}
    run_plate(
        plate,
        reference,
        scheduler="threads",
        workers=1,
        backend="cpu",
        progress=False,
        report=False,
    )
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in plate.rglob("*")}
    assert before == after


def test_bad_field_is_recorded_and_others_finish(plate, reference, tmp_path):
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(plate, bad)
    chunk = next(p for p in sorted((bad / "B" / "02" / "1" / "0" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(b"\x00garbage" * 3)
    out = tmp_path / "out"
    s = run_plate(
        bad, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    assert list(s.failed) == ["B/2/1"]
    err = s.failed["B/2/1"]
    assert "bad" in err and "B/2" in err and "field 1" in err
    st = field_status(out)
    assert st["status"].tolist().count("ok") == len(WELLS) * FIELDS - 1
    fields = pd.read_parquet(out / "tables" / "fields.parquet")
    assert fields.loc[(fields["well"] == "B/2") & (fields["field"] == 1), "status"].item() == (
        "failed"
    )
    # the good fields equal the reference run's
    ref = pd.read_parquet(reference / "tables" / "foci.parquet")
    got = pd.read_parquet(out / "tables" / "foci.parquet")
    keep = ~((ref["well"] == "B/2") & (ref["field"] == 1))
    ref = ref[keep].drop(columns="plate").reset_index(drop=True)
    pd.testing.assert_frame_equal(got.drop(columns="plate"), ref)

    # repaired input: a re-run processes the failed field only, and then equals the reference
    shutil.copy2(plate / chunk.relative_to(bad), chunk)
    s2 = run_plate(
        bad, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    assert s2.processed == ["B/2/1"] and s2.ok
    ref_all = pd.read_parquet(reference / "tables" / "foci.parquet").drop(columns="plate")
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "tables" / "foci.parquet").drop(columns="plate"), ref_all
    )


def test_changed_field_is_processed_again(plate, tmp_path):
    import shutil

    copy = tmp_path / "c.zarr"
    shutil.copytree(plate, copy)
    out = tmp_path / "out"
    run = dict(
        wells=["B/3"], scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    assert len(run_plate(copy, out, **run).processed) == FIELDS
    chunk = next(
        p
        for p in sorted((copy / "B" / "03" / "0" / "0").rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    )
    st = chunk.stat()
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-acquired field
    s = run_plate(copy, out, **run)
    assert s.processed == ["B/3/0"] and s.skipped == ["B/3/1"]


def test_processes_equal_threads_and_survive_a_killed_worker(plate, reference, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "out"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        killed: list[int] = []

        def kill_one_worker_when_a_field_is_done():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                if list((out / "ledger").glob("*.json")):
                    pids = [
                        w.process.process.pid
                        for w in cluster.workers.values()
                        if getattr(w, "process", None) and w.process.process
                    ]
                    if pids:
                        os.kill(pids[0], signal.SIGKILL)
                        killed.append(pids[0])
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one_worker_when_a_field_is_done, daemon=True)
        killer.start()
        s = run_plate(
            plate,
            out,
            scheduler=cluster.scheduler_address,
            backend="cpu",
            progress=False,
            report=False,
        )
        killer.join(timeout=5)
    assert killed, "no worker was killed: the test did not exercise a failure"
    # the killed worker's task is retried by the scheduler, or left for the re-run
    if not s.ok:
        s = run_plate(
            plate, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
        )
    assert s.ok
    s2 = run_plate(
        plate, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    assert s2.processed == []
    _assert_same_tables(out, reference)
    assert not _no_partial_files(out)


def test_interrupted_driver_resumes_remaining_fields(plate, reference, tmp_path):
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        from hcsmito.runner import run_plate
        run_plate({str(plate)!r}, {str(out)!r}, scheduler="threads", workers=1,
                  backend="cpu", progress=False, report=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if list((out / "ledger").glob("*.json")) or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(list((out / "ledger").glob("*.json")))
    assert 1 <= done_before < len(WELLS) * FIELDS, "the driver was not stopped mid-plate"
    s = run_plate(
        plate, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    assert len(s.processed) == len(WELLS) * FIELDS - done_before
    assert len(s.skipped) == done_before
    _assert_same_tables(out, reference)
    assert not _no_partial_files(out)


def test_output_folder_of_another_plate_is_refused(plate, reference, tmp_path):
    other = write_synth_plate(
        tmp_path / "q.zarr", seed=1, wells={"B/2": "DMSO"}, fields=1, shape=(14, 64, 64)
    )
    with pytest.raises(FileExistsError, match="another plate"):
        run_plate(
            other, reference, scheduler="threads", backend="cpu", progress=False, report=False
        )


def test_unknown_well_named(plate, tmp_path):
    with pytest.raises(ValueError, match=r"Z/9.*not in the plate"):
        run_plate(plate, tmp_path / "o", wells=["Z/9"], backend="cpu", progress=False, report=False)


def test_plate_threshold_cuts_every_field_alike(plate, tmp_path):
    """plate_threshold: one Otsu threshold per role from fields spread over the whole
    plate (also when a run selects one well), checked against scikit-image's Otsu on the
    pooled smoothed channels of the same fields; every field then runs with it."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    cfg = load_config(
        overrides=[
            "plate_threshold.roles=[msc, jurkat]",
            "plate_threshold.sample_fields=3",
        ]
    )
    out = tmp_path / "out"
    s = run_plate(plate, out, config=cfg, wells=["B/3"], backend="cpu", progress=False)
    assert s.ok and len(s.processed) == FIELDS
    manifest = json.loads((out / "manifest.json").read_text())
    info = manifest["plate_thresholds"]
    assert info["msc"]["fields"] == ["B/2/0", "B/3/0", "B/3/1"]  # 3 of 4, both wells
    for role in ("msc", "jurkat"):
        assert manifest["config"][role]["threshold"] == {
            "method": "manual",
            "value": info[role]["value"],
        }

    p = open_plate(plate)
    refs = {f"{r.well}/{r.field}": r for r in p.fields}
    pooled = {"msc": [], "jurkat": []}
    for key in info["msc"]["fields"]:
        img = p.read_field(refs[key].well_path, refs[key].field)
        vs = img.voxel_size
        gfp = np.asarray(img.channel(0)).astype(np.float64)
        mito = np.asarray(img.channel(1)).astype(np.float64)
        msc_sigma = (0.0, 1.0 / vs["y"], 1.0 / vs["x"])  # msc.smooth_um 1, smooth_z_um 0
        jur_sigma = tuple(1.5 / vs[a] for a in "zyx")  # jurkat.smooth_um 1.5
        pooled["msc"].append(ndi.gaussian_filter(gfp, msc_sigma, mode="nearest", truncate=3))
        pooled["jurkat"].append(ndi.gaussian_filter(mito, jur_sigma, mode="nearest", truncate=3))
    for role, arrays in pooled.items():
        values = np.concatenate([a.ravel() for a in arrays])
        ref = threshold_otsu(values, nbins=1024)
        bin_width = (values.max() - values.min()) / 1024
        assert abs(info[role]["value"] - ref) <= 1.01 * bin_width, role

    # the fields ran at that threshold: a run without the plate step but the same manual
    # thresholds gives the same tables
    manual = load_config(
        overrides=[
            "msc.threshold.method=manual",
            f"msc.threshold.value={info['msc']['value']!r}",
            "jurkat.threshold.method=manual",
            f"jurkat.threshold.value={info['jurkat']['value']!r}",
        ]
    )
    out2 = tmp_path / "manual"
    assert run_plate(plate, out2, config=manual, wells=["B/3"], backend="cpu", progress=False).ok
    _assert_same_tables(out, out2)
    # deterministic: a second run finds every field up to date
    again = run_plate(plate, out, config=cfg, wells=["B/3"], backend="cpu", progress=False)
    assert again.processed == [] and len(again.skipped) == FIELDS


def test_plate_threshold_without_the_channel_names_the_fix(plate, tmp_path):
    cfg = load_config(overrides=["plate_threshold.roles=[msc]", "channels.msc=nope"])
    # refused before the plate-threshold sample, as any channel no field has
    with pytest.raises(ValueError, match=r"'nope' matches no channel label.*channels\.msc"):
        run_plate(plate, tmp_path / "out", config=cfg, backend="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("where", ["itself", "inside", "inside a field", "holds it"])
def test_out_in_or_around_the_plate_is_refused_and_the_plate_untouched(plate, tmp_path, where):
    """Before: `--out plate.zarr/results`, or the plate itself with --overwrite, wrote ~95
    files into the plate and exited 0. Refused before anything is written, checksums equal."""
    before = _tree_digest(plate)
    out = {
        "itself": plate,
        "inside": plate / "results",
        "inside a field": plate / "B" / "2" / "0" / "out",
        "holds it": plate.parent,
    }[where]
    with pytest.raises(ValueError, match="the plate is never written to"):
        run_plate(plate, out, overwrite=True, backend="cpu", progress=False)
    assert _tree_digest(plate) == before
    assert not (plate / "results").exists()


def test_a_bad_plate_map_fails_before_any_field_runs(plate, tmp_path):
    """Before: the plate map was read after every field had run."""
    from hcsmito.platemap import PlateMapError

    bad = tmp_path / "map.csv"
    bad.write_text("well,treatment\nB/2,DMSO\nH/12,DMSO\n")
    out = tmp_path / "out"
    with pytest.raises(PlateMapError, match="condition"):
        run_plate(plate, out, plate_map=bad, backend="cpu", progress=False)
    assert not out.exists()


def test_nan_voxels_fail_their_field_by_name_and_the_others_finish(tmp_path):
    """Before: NaN / Inf voxels of a float field were processed without a word."""
    from hcsmito.io.writer import create_plate, write_image
    from hcsmito.synth import generate_field

    p = SynthParams(shape=(16, 96, 96), n_msc=1, n_jurkat=1)
    plate = tmp_path / "f.zarr"
    create_plate(plate, wells=["B/2"], fields_per_well=2)
    for fi in (0, 1):
        f = generate_field(p, seed=fi)
        img = f.image.astype(np.float32)
        if fi == 1:
            img[1, 5, 10:13, 20] = np.nan
            img[1, 6, 40, 40] = np.inf
        vs = f.voxel_size
        write_image(
            plate, "B/2", fi, img, axes="czyx", voxel_size=vs, channel_labels=f.channel_labels
        )
    s = run_plate(plate, tmp_path / "out", backend="cpu", scheduler="threads", progress=False,
                  report=False)  # fmt: skip
    assert list(s.failed) == ["B/2/1"]
    err = s.failed["B/2/1"]
    assert "MitoTracker" in err and "NaN" in err, err
    assert field_status(tmp_path / "out")["status"].tolist() == ["ok", "failed"]


def test_labels_zarr_mirrors_the_input_paths(plate, tmp_path):
    """Issue 14.3: labels.zarr holds each field at the input's own path. Before, input well
    ``B/2`` became ``B/02`` and fields were renamed by index (``f7`` -> ``1``)."""
    import zarr

    from hcsmito.io.writer import create_plate, write_image

    src = open_plate(plate)
    mine = tmp_path / "mine.zarr"
    images = {"B/2": ["f3", "f7"]}
    create_plate(mine, wells=["B/2"], fields_per_well=images, pad=None)
    for i in range(FIELDS):
        img = src.read_field("B/2", i)
        write_image(mine, "B/2", i, np.asarray(img.data), axes=img.axes,
                    voxel_size=img.voxel_size, channel_labels=img.channel_labels)  # fmt: skip
    out = tmp_path / "out"
    s = run_plate(
        mine, out, scheduler="threads", workers=2, backend="cpu", progress=False, report=False
    )
    assert s.ok and s.processed == ["B/2/0", "B/2/1"]
    lp = open_plate(out / "labels.zarr")
    assert [r.path for r in lp.fields] == [r.path for r in open_plate(mine).fields]
    assert [r.path for r in lp.fields] == ["B/2/f3", "B/2/f7"]
    grp = zarr.open_group(out / "labels.zarr", mode="r")
    for name in ("msc", "jurkat", "foci"):
        assert grp[f"B/2/f7/labels/{name}/0"].shape == SHAPE
    assert not (out / "labels.zarr" / "B" / "02").exists()
    # the tables name the field by its index in the well, as before
    fields = pd.read_parquet(out / "tables" / "fields.parquet")
    assert fields[["well", "field"]].values.tolist() == [["B/2", 0], ["B/2", 1]]


def test_partial_runs_add_up(plate, reference, tmp_path, caplog):
    """Issue 14.4: ``--wells B/3`` then ``--wells B/2`` into one OUT: the tables, manifest
    and report hold every field done so far. Before, only the last run's fields."""
    out = tmp_path / "out"
    run = dict(
        plate_map=plate.parent / "p_platemap.csv",
        scheduler="threads",
        workers=2,
        backend="cpu",
        progress=False,
    )
    first = run_plate(plate, out, wells=["B/3"], **run)
    assert first.ok and first.processed == ["B/3/0", "B/3/1"]
    second = run_plate(plate, out, wells=["B/2"], **run)
    assert second.ok and second.processed == ["B/2/0", "B/2/1"] and second.skipped == []
    _assert_same_tables(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(f["well"], f["field"]) for f in manifest["fields"]] == [
        (w, f) for w in WELLS for f in range(FIELDS)
    ]
    assert manifest["processed_this_run"] == ["B/2/0", "B/2/1"]
    conditions = pd.read_parquet(out / "tables" / "conditions.parquet")
    assert set(conditions["condition"]) == set(WELLS.values())
    html = (out / "report.html").read_text()
    assert "DMSO" in html and "cytochalasin D" in html

    # fields done with another config are left out, by name, not mixed in
    cfg = load_config(overrides=["foci.threshold_k=7"])
    with caplog.at_level("WARNING", logger="hcsmito.runner"):
        third = run_plate(plate, out, config=cfg, wells=["B/2"], report=False,
                          **{k: v for k, v in run.items() if k != "plate_map"})  # fmt: skip
    assert third.processed == ["B/2/0", "B/2/1"]
    fields = pd.read_parquet(out / "tables" / "fields.parquet")
    assert sorted(set(fields["well"])) == ["B/2"]
    assert "well B/3, field 0 is left out of the tables" in caplog.text


def test_qc_pictures_are_readable(reference):
    """Issue 14.8: a 160-voxel field's QC picture is upscaled (640 px wide) and captioned
    with plate, well, field and the plate map's condition (also the PNG's Title)."""
    from PIL import Image

    pic = Image.open(reference / "qc" / "B3_f1.png")
    assert pic.size[0] == SHAPE[2] * 4 and pic.size[1] > SHAPE[1] * 4
    assert pic.text["Title"] == "plate p · well B/3 · field 1 · cytochalasin D"


def test_readme_outputs_section_matches_out(reference):
    """README's outputs contract names every file and folder a run leaves in OUT, and
    every one it names is there (the lock only exists while a run writes)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Outputs (contract)", 1)[1].split("```", 2)[1]
    named = {n.rstrip(",") for n in re.findall(r"^OUT/(\S+)", block, re.M)}
    # 'tables/wells.parquet, conditions.parquet, ...': the rest of that line too
    line = next(ln for ln in block.splitlines() if ln.startswith("OUT/tables/wells.parquet"))
    named |= {f"tables/{n}" for n in re.findall(r"(\w+\.parquet)", line)}
    top = {p.name for p in reference.iterdir()}
    documented_top = {n.split("/")[0] for n in named}
    assert top - {".hcsmito.lock"} == documented_top - {".hcsmito.lock"}
    for n in named - {".hcsmito.lock", "tables/*.parquet", "qc/B3_f0.png"}:
        assert (reference / n.rstrip("/")).exists(), n
    listed = {"foci", "cells", "jurkat", "tnt", "nuclei", "fields"}
    assert set(re.search(r"OUT/tables/\*\.parquet\s+([\w, ]+?)\s{2}", block).group(1)
               .replace(" ", "").split(",")) == listed  # fmt: skip
    tables = {p.name for p in (reference / "tables").iterdir()}
    documented = {f"{t}.parquet" for t in listed} | {
        n.split("/", 1)[1].rstrip("/") for n in named if n.startswith("tables/") and "*" not in n
    }
    assert tables == documented
    assert any(p.name.endswith(".png") for p in (reference / "qc").iterdir())


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_process_workers_keep_glibcs_adaptive_mmap_threshold():
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_ (in their workers and in the process that
    # starts them), which pins glibc's mmap threshold: every array a stage frees is
    # unmapped and the next one faults its pages in again (one field in such a worker:
    # 8.9 s of CPU, 2.9 of them in the kernel, against 5.4 s in the driver). A plain Dask
    # worker gets it; the runner's local process workers do not, even after one did
    from distributed import Client, LocalCluster

    from hcsmito.cluster import dask_client

    with (
        LocalCluster(n_workers=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as plain,
    ):
        assert plain.submit(_trim_threshold, pure=False).result() is not None
    with dask_client("processes", 1, "cpu", quiet=True) as client:
        assert client.submit(_trim_threshold, pure=False).result() is None
