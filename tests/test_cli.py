"""The command line, as users call it (in-process through ``main``, and one real console run)."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from hcsmito.cli import main
from hcsmito.config import Config, load_config


def test_config_prints_effective_config(capsys):
    assert main(["config", "--set", "foci.threshold_k=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert Config.model_validate(printed) == load_config(overrides=["foci.threshold_k=4"])


def test_config_schema_is_json_schema(capsys):
    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "foci" in schema["properties"] and schema["additionalProperties"] is False


def test_bad_config_key_is_one_clear_line(capsys):
    assert main(["config", "--set", "foci.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "foci.nope: unknown key" in err and "Traceback" not in err


def test_run_on_missing_plate_says_so(tmp_path, capsys):
    code = main(["run", "--plate", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "none.zarr" in capsys.readouterr().err


def test_synth_run_status_end_to_end(tmp_path, capsys):
    plate = tmp_path / "s.zarr"
    args = ["synth", "--out", str(plate), "--wells", "B/2", "--fields", "1", "--shape", "16,96,96"]
    assert main(args) == 0
    assert (tmp_path / "s_platemap.csv").exists() and (tmp_path / "s_truth").is_dir()
    out = tmp_path / "out"
    run = ["run", "--plate", str(plate), "--out", str(out), "--backend", "cpu", "--no-progress"]
    assert main([*run, "--workers", "1"]) == 0
    assert "1 field processed, 0 up to date, 0 failed" in capsys.readouterr().out
    assert main(["status", str(out)]) == 0
    assert "1 ok" in capsys.readouterr().out
    # a corrupt field: exit code 1 and the field named
    bad = tmp_path / "bad.zarr"
    shutil.copytree(plate, bad)
    chunk = next(
        p
        for p in sorted((bad / "B" / "02" / "0" / "0").rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"not a chunk")
    code = main(
        [
            "run",
            "--plate",
            str(bad),
            "--out",
            str(tmp_path / "o2"),
            "--backend",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 1
    assert "B/2/0" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "o2")]) == 1


def test_console_script_installed():
    exe = shutil.which("hcsmito")
    if exe is None:
        pytest.skip("the hcsmito console script is not on PATH (package not installed)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hcsmito ")


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "hcsmito.cli", "info", "--backend", "cpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "backend: cpu" in out.stdout


def test_slurm_job_script_from_config():
    pytest.importorskip("dask_jobqueue")
    from hcsmito.cluster import slurm_cluster

    cfg = load_config(
        overrides=[
            "resources.slurm.queue=gpu",
            "resources.slurm.gpus=2",
            "resources.slurm.cores=16",
            "resources.slurm.memory=64GB",
            "resources.slurm.walltime=04:30:00",
            "resources.slurm.account=lab42",
        ]
    )
    cluster = slurm_cluster(cfg.resources.slurm)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH -t 04:30:00",
        "#SBATCH --gres=gpu:2",
        "#SBATCH -A lab42",
    ):
        assert line in script, (line, script)
    assert "#SBATCH --mem=60G" in script
    assert "dask_worker" in script or "dask-worker" in script


def test_import_cli(tmp_path, capsys):
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    rows = []
    for ch in ("GFP", "MitoTracker"):
        a = rng.integers(0, 4000, (4, 32, 32), dtype=np.uint16)
        tifffile.imwrite(
            tmp_path / f"{ch}.tif",
            a,
            imagej=True,
            resolution=(10, 10),
            metadata={"spacing": 0.5, "unit": "um", "axes": "ZYX"},
        )
        rows.append({"file": f"{ch}.tif", "well": "C3", "field": 0, "channel": ch})
    pd.DataFrame(rows).to_csv(tmp_path / "files.csv", index=False)
    out = tmp_path / "imp.zarr"
    assert main(["import", str(tmp_path / "files.csv"), "--out", str(out)]) == 0
    from hcsmito.io.plate import open_plate

    img = open_plate(out).read_field("C/3", 0)
    assert img.channel_labels == ["GFP", "MitoTracker"]
    assert img.voxel_size == pytest.approx({"z": 0.5, "y": 0.1, "x": 0.1})


def test_config_documents_the_qc_thresholds_and_checks_flag_codes(capsys):
    from hcsmito.config import QualityControl, default_config_text

    text = default_config_text()
    section = text.split("\nqc:", 1)[1].split("\n\n", 1)[0]
    for key, info in QualityControl.model_fields.items():
        line = next(ln for ln in section.splitlines() if ln.strip().startswith(f"{key}:"))
        assert "#" in line, key  # value with its meaning
        assert yaml.safe_load(line.split("#")[0])[key] == info.default
    assert main(["config", "--set", "statistics.exclude_flags=[saturated, nope]"]) == 2
    err = capsys.readouterr().err
    assert "statistics.exclude_flags" in err and "nope" in err and "out_of_focus" in err
