"""Issue 16: a field's expected peak memory, and no more fields at once than memory holds
(real Dask clusters, a real synthetic plate)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hcsmito.cluster import (
    PEAK_FIXED_BYTES,
    PEAK_NUCLEI_BYTES,
    PEAK_WORKING_BYTES,
    field_peak_bytes,
    fields_at_once,
    plan_fields,
)
from hcsmito.config import Config, load_config
from hcsmito.io.plate import open_plate
from hcsmito.runner import run_plate
from hcsmito.synth import SynthParams, write_synth_plate

GIB = 2**30


def test_estimate_from_shape_and_dtype():
    # bench_field's field: 3 x 40 x 1024^2 uint16 peaked at 40.2 B of RSS per field voxel
    # (1.57 GiB): the estimate is above it, by the stated margin and the fixed part at most
    field = 40 * 1024**2
    peak = field_peak_bytes((3, 40, 1024, 1024), np.uint16)
    assert peak == PEAK_FIXED_BYTES + field * (PEAK_WORKING_BYTES + 3 * 2)
    assert 40.2 * field <= peak <= 1.2 * 40.2 * field
    # a 2048^2 field: four times the voxels; float32 stored voxels add 2 bytes per channel
    assert field_peak_bytes((3, 40, 2048, 2048), "uint16") - PEAK_FIXED_BYTES == 4 * (
        peak - PEAK_FIXED_BYTES
    )
    assert field_peak_bytes((1, 2, 3, 4), np.float32) == PEAK_FIXED_BYTES + 24 * (
        PEAK_WORKING_BYTES + 4
    )
    # 2-D fields, a time axis, no channel axis
    w = PEAK_WORKING_BYTES
    assert field_peak_bytes((2, 10, 10), "uint8", "cyx") == PEAK_FIXED_BYTES + 100 * (w + 2)
    assert field_peak_bytes((1, 2, 5, 10, 10), "uint16", "tczyx") == PEAK_FIXED_BYTES + 500 * (
        w + 4
    )
    assert field_peak_bytes((10, 10), "uint16", "yx") == PEAK_FIXED_BYTES + 100 * (w + 2)
    # a nuclei channel: its stage's working bytes on top
    assert field_peak_bytes((4, 40, 1024, 1024), "uint16", nuclei=True) == (
        PEAK_FIXED_BYTES + field * (PEAK_WORKING_BYTES + PEAK_NUCLEI_BYTES + 4 * 2)
    )
    with pytest.raises(ValueError, match="does not match axes"):
        field_peak_bytes((3, 10, 10), "uint16")


def test_fields_at_once():
    assert fields_at_once(4, 4 * GIB, 9 * GIB) == 2
    assert fields_at_once(4, 4 * GIB, 100 * GIB) == 4
    assert fields_at_once(4, 4 * GIB, 3 * GIB) == 1  # never 0: check_memory refuses it
    assert fields_at_once(4, None, 3 * GIB) == 4 and fields_at_once(4, GIB, None) == 4


@pytest.mark.parametrize(
    ("given", "expected"),
    [("6GiB", 6 * GIB), ("6 GB", 6 * 10**9), ("1.5e9", 1_500_000_000), (4096, 4096), (None, None)],
)
def test_memory_per_field_parsed(given, expected):
    cfg = Config.model_validate({"resources": {"memory_per_field": given}})
    assert cfg.resources.memory_per_field == expected
    assert load_config().resources.memory_per_field is None  # default: estimated


@pytest.mark.parametrize("bad", ["lots", "0GB", 0, -5, "-1GiB", 1.5, True])
def test_memory_per_field_validated(bad):
    with pytest.raises(ValueError, match="memory_per_field"):
        Config.model_validate({"resources": {"memory_per_field": bad}})


def test_check_memory_takes_the_same_peak(plate):
    img = open_plate(plate).read_field("B/2", 0)
    peak = field_peak_bytes(img.data.shape, img.data.dtype, img.axes)
    assert img.check_memory(peak, peak_bytes=peak) == peak
    with pytest.raises(Exception, match=r"needs .* of memory at its expected peak, more than"):
        img.check_memory(peak - 1, peak_bytes=peak)


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    params = SynthParams().model_copy(update={"n_msc": 2, "n_jurkat": 2})
    return write_synth_plate(
        tmp_path_factory.mktemp("mem") / "p.zarr",
        seed=5,
        wells={"B/2": "DMSO"},
        fields=3,
        shape=(14, 96, 96),
        params=params,
    )


def _intervals(out: Path) -> list[tuple[float, float]]:
    """(start, end) of each field's run: the ledger entry's mtime less its wall time."""
    spans = []
    for p in (out / "ledger").glob("*.json"):
        end = p.stat().st_mtime
        spans.append((end - json.loads(p.read_text())["wall_s"], end))
    return sorted(spans)


def _available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def test_only_one_field_fits_so_one_runs_at_a_time(plate, tmp_path, caplog):
    # a per-field peak over half the available memory: two threads asked for, one used
    per_field = _available() * 2 // 3
    cfg = Config.model_validate({"resources": {"memory_per_field": per_field}})
    with caplog.at_level(logging.WARNING, logger="hcsmito.cluster"):
        s = run_plate(
            plate,
            tmp_path / "out",
            config=cfg,
            scheduler="threads",
            workers=2,
            backend="cpu",
            progress=False,
            report=False,
        )
    assert s.ok and len(s.processed) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "hcsmito.cluster"]
    assert len(lines) == 1, lines
    assert "(resources.memory_per_field)" in lines[0]
    assert "1 field at a time instead of 2" in lines[0] and "is available" in lines[0]
    spans = _intervals(tmp_path / "out")
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.05  # one after the other, never two at once


def test_a_field_that_cannot_fit_fails_by_name_before_it_is_read(plate, tmp_path):
    cfg = Config.model_validate({"resources": {"memory_per_field": _available() * 4}})
    s = run_plate(
        plate,
        tmp_path / "out",
        config=cfg,
        scheduler="threads",
        workers=2,
        backend="cpu",
        progress=False,
        report=False,
    )
    assert len(s.failed) == 3
    msg = s.failed["B/2/0"]
    assert msg.startswith("PlateError: plate p, well B/2, field 0: the field")
    assert "at its expected peak, more than the budget of" in msg


def test_estimated_peaks_leave_small_fields_alone(plate, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hcsmito.cluster"):
        s = run_plate(
            plate,
            tmp_path / "out",
            scheduler="threads",
            workers=2,
            backend="cpu",
            progress=False,
            report=False,
        )
    assert s.ok
    assert not [r for r in caplog.records if r.name == "hcsmito.cluster"]


def test_external_workers_memory_limits_bound_the_fields_in_flight(caplog):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=False,
            memory_limit="1GiB",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
        caplog.at_level(logging.WARNING, logger="hcsmito.cluster"),
    ):
        slots = plan_fields(cluster.scheduler_address, None, [600 * 2**20], client=client)
        assert slots.at_once == 2 and slots.memory == GIB and slots.resources is None
        assert "2 fields at a time instead of 4" in caplog.text
        assert "memory limits add up to 2.00 GiB" in caplog.text
        # a field over a worker's limit is left to check_memory: the others set the bound
        slots = plan_fields("tcp://x", None, [300 * 2**20, 5 * GIB], client=client)
        assert slots.at_once == 4


def test_external_workers_memory_resource_is_asked_for():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=3,
            processes=False,
            resources={"memory": 2 * GIB},
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        slots = plan_fields("tcp://x", None, [GIB], client=client)
        assert slots.resources == {"memory": GIB} and slots.at_once is None
        assert slots.memory == 2 * GIB


def test_slurm_workers_share_of_the_job_memory(caplog):
    from hcsmito.config import Slurm

    slurm = Slurm(memory="32GB", cores=8, processes=2, jobs=3)
    with caplog.at_level(logging.WARNING, logger="hcsmito.cluster"):
        slots = plan_fields("slurm", None, [10 * GIB], slurm=slurm)
    assert slots.memory == 16 * 10**9 and slots.at_once == 1 * 2 * 3
    assert "1 field at a time per worker instead of 4" in caplog.text


# -- what a field holds (issue 16): labels in uint16, no float32 copies of raw channels ------


@pytest.fixture(scope="module")
def fate_channels():
    """A small generated 3-D field with every role (nuclei and annexin V too): the nuclei
    seed the cells, so every stage and phase of the chain runs."""
    from hcsmito.synth import generate_field

    p = SynthParams(shape=(16, 256, 256), n_msc=3, n_jurkat=6, nuclear_channel=True,
                    annexin_channel=True)  # fmt: skip
    f = generate_field(p, "ara-C", seed=1)
    names = [c.lower() for c in f.channel_labels]
    roles = {"msc": 0, "mito": 1, "actin": 2, "nuclei": names.index("hoechst"),
             "annexin": names.index("annexin v")}  # fmt: skip
    return {r: f.image[i] for r, i in roles.items()}, f.voxel_size


def _run(channels, voxel_size):
    from hcsmito.pipeline import process_field

    return process_field(channels, voxel_size=voxel_size, config=Config(), backend="cpu")


def test_held_labels_and_uncast_channels_change_no_output(fate_channels, monkeypatch):
    import hcsmito.pipeline.field as field_mod
    import hcsmito.pipeline.prepare as prepare_mod

    channels, vox = fate_channels
    new = _run(channels, vox)
    # as before: a float32 copy of every channel for the whole field, int32 labels held
    monkeypatch.setattr(
        prepare_mod,
        "detection_channels",
        lambda raw, config, xp: {r: a.astype(np.float32) for r, a in raw.items()},
    )
    monkeypatch.setattr(field_mod, "_held", lambda prep, result: result)  # fmt: skip
    old = _run(channels, vox)
    assert len(new.tables["nuclei"]) and len(new.tables["foci"]) and len(new.tables["jurkat"])
    assert list(new.tables) == list(old.tables)
    for name, want in old.tables.items():
        pd.testing.assert_frame_equal(new.tables[name], want, check_exact=True, obj=name)
    assert list(new.labels) == list(old.labels) == ["msc", "jurkat", "foci", "tnt", "nuclei"]
    for name, want in old.labels.items():
        assert want.dtype == new.labels[name].dtype == np.int32, name
        np.testing.assert_array_equal(new.labels[name], want, err_msg=name)


def test_held_labels_take_the_smallest_dtype_that_holds_them():
    from dataclasses import dataclass

    from hcsmito.backend import get_backend
    from hcsmito.pipeline.field import _held

    @dataclass(frozen=True)
    class R:
        labels: np.ndarray

    class P:
        b = get_backend("cpu")

    small = np.array([[0, 3], [65535, 1]], np.int32)
    got = _held(P, R(small)).labels
    assert got.dtype == np.uint16 and np.array_equal(got, small)
    for keep in (np.array([0, 65536], np.int32), np.array([-1, 2], np.int32),
                 np.array([0.0, 1.0], np.float32)):  # fmt: skip
        assert _held(P, R(keep)).labels is keep
    empty = np.zeros((0, 4), np.int32)
    assert _held(P, R(empty)).labels.dtype == np.uint16


def test_estimate_covers_the_measured_peak(fate_channels, monkeypatch):
    import tracemalloc

    channels, vox = fate_channels
    _run(channels, vox)  # imports and first-call caches are not the field's
    # the whole field's peak (the stages' timer resets the peak for its per-stage figures)
    monkeypatch.setattr(tracemalloc, "reset_peak", lambda: None)
    tracemalloc.start()
    try:
        stored = {r: a.copy() for r, a in channels.items()}  # the field as read
        _run(stored, vox)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    shape = (len(channels), *channels["mito"].shape)
    est = field_peak_bytes(shape, np.uint16, nuclei=True)
    assert peak <= est <= 2 * peak, (peak, est)


def _contacts_whole_volume(jur, msc, dz, contact_distance_um, min_lift_um):
    """The adhesion stage's contact voxels as it found them on whole int32 volumes (before
    issue 16's plane-by-plane reading): the reference."""
    import math

    jur, msc = jur.astype(np.int32), msc.astype(np.int32)
    planes = max(int(math.floor(contact_distance_um / dz + 1e-9)), 1)
    below = np.zeros_like(jur)
    below[1:] = jur[:-1]
    bottom = (jur > 0) & (below != jur)
    under = msc.copy()
    for k in range(1, planes + 1):
        shifted = np.zeros_like(msc)
        shifted[k:] = msc[:-k]
        under = np.where(under > 0, under, shifted)
    contact = bottom & (under > 0)
    if min_lift_um > 0:
        z = np.arange(jur.shape[0], dtype=np.int32)[:, None, None]
        base = np.where(msc > 0, z, jur.shape[0]).min(axis=0)
        contact &= (z - base[None]).astype(np.float32) * np.float32(dz) >= min_lift_um
    return jur[contact], under[contact]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_adhesion_contacts_plane_by_plane_equal_the_whole_volume(dtype):
    from hcsmito.backend import get_backend
    from hcsmito.stages.adhesion import _contacts

    # blocky random cells: MSCs in the lower planes, Jurkat cells above and among them
    rng = np.random.default_rng(4)
    up = np.ones((2, 3, 3), dtype)
    msc = np.kron(rng.integers(0, 4, (10, 12, 12)), up).astype(dtype)
    msc[10:] = 0
    msc[:, :6] = 0  # columns without MSC: the lift rule's "no base"
    jur = np.kron(rng.integers(0, 5, (10, 12, 12)) * (rng.random((10, 12, 12)) < 0.3), up)
    jur = jur.astype(dtype)
    sp = (0.4, 0.2, 0.2)
    seen = set()
    for distance, lift in ((1.0, 3.0), (1.0, 0.0), (0.8, 1.2), (0.0, 0.0)):
        j, m = _contacts(get_backend("cpu"), jur, msc, sp, distance, lift)
        j0, m0 = _contacts_whole_volume(jur, msc, sp[0], distance, lift)
        np.testing.assert_array_equal(j, j0)
        np.testing.assert_array_equal(m, m0)
        seen.add(len(j0))
    assert len(seen) >= 3 and min(seen) > 0  # the distance and the lift rule change it


def test_the_runners_estimate_counts_a_nuclei_channel(plate, tmp_path):
    from hcsmito.cluster import with_peak_bytes
    from hcsmito.runner import FieldTask

    def peak(path, memory_per_field=None) -> tuple[int, object]:
        p = open_plate(path)
        task = FieldTask(str(path), "p", "B/2", "B/2", 0, "out", "k",
                         Config().model_dump(mode="json"), "cpu")  # fmt: skip
        return with_peak_bytes(p, task, memory_per_field).peak_bytes, p.read_field("B/2", 0)

    plain, img = peak(plate)
    assert plain == field_peak_bytes(img.data.shape, img.data.dtype, img.axes)
    # a plate with a Hoechst channel: the nuclei stage's bytes are counted
    params = SynthParams(shape=(14, 48, 48), n_msc=1, n_jurkat=1, nuclear_channel=True)
    fate = write_synth_plate(tmp_path / "n.zarr", seed=1, wells={"B/2": "DMSO"}, fields=1,
                             params=params)  # fmt: skip
    got, img = peak(fate)
    assert got == field_peak_bytes(img.data.shape, img.data.dtype, img.axes, nuclei=True)
    assert got - field_peak_bytes(img.data.shape, img.data.dtype, img.axes) == (
        PEAK_NUCLEI_BYTES * img.data[0].size
    )
    assert peak(fate, 12345)[0] == 12345
