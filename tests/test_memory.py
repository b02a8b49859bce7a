"""Issue 16: a field's expected peak memory, and no more fields at once than memory holds
(real Dask clusters, a real synthetic plate)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hcsmito.cluster import (
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
    # bench_field's field: 3 x 40 x 1024^2 uint16 peaked at 4.43 GiB (113 B per field voxel)
    peak = field_peak_bytes((3, 40, 1024, 1024), np.uint16)
    assert peak == 3 * 40 * 1024**2 * 38
    assert 4.43 * GIB <= peak <= 4.5 * GIB
    assert peak / (40 * 1024**2) == pytest.approx(114)  # per field voxel (measured: 113)
    # a 2048^2 field: four times as much; float32 stored voxels add 2 bytes each
    assert field_peak_bytes((3, 40, 2048, 2048), "uint16") == 4 * peak
    assert field_peak_bytes((1, 2, 3, 4), np.float32) == 24 * (PEAK_WORKING_BYTES + 4)
    # 2-D fields, a time axis, no channel axis
    assert field_peak_bytes((2, 10, 10), "uint8", "cyx") == 200 * 37
    assert field_peak_bytes((1, 2, 5, 10, 10), "uint16", "tczyx") == 1000 * 38
    assert field_peak_bytes((10, 10), "uint16", "yx") == 100 * 38
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
